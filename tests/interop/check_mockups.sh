#!/usr/bin/env bash
# Serves each vendor mockup with serve_mockup.py, runs the validator against it
# and checks its failures against tests/interop/validator-baseline/<dir>.txt +
# <dir>.trimmed.txt (or rewrites those with --update).
#
#   tests/interop/check_mockups.sh [--update] [DIR...]   # DIR: names under redfish-mockups/
#
# Work files go to ${KILN_INTEROP_OUT:-target/interop}/mockup-<dir>/.
# Exit status: 0 all match; 1 some mockup shows a failure not in its baseline.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
update=0
if [[ ${1:-} == --update ]]; then
    update=1
    shift
fi
if [[ $# -eq 0 ]]; then
    set -- $(cd "$root/redfish-mockups" && for d in */; do echo "${d%/}"; done)
fi
outbase=${KILN_INTEROP_OUT:-$root/target/interop}
case $outbase in /*) ;; *) outbase=$root/$outbase ;; esac
"$here/setup-python.sh" >/dev/null

server_pid=
cleanup() { [[ -n $server_pid ]] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null; true; }
trap cleanup EXIT

status=0
for dir in "$@"; do
    out=$outbase/mockup-$dir
    rm -rf "$out"
    mkdir -p "$out"
    python3 "$here/serve_mockup.py" "$root/redfish-mockups/$dir" --port 0 \
        --port-file "$out/port" >"$out/server.log" 2>&1 &
    server_pid=$!
    for _ in $(seq 100); do
        [[ -s $out/port ]] && break
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.1
    done
    if [[ ! -s $out/port ]]; then
        echo "check_mockups.sh: serve_mockup.py did not start for $dir:" >&2
        cat "$out/server.log" >&2
        exit 2
    fi
    start=$SECONDS
    rc=0
    "$here/run_validator.sh" "https://127.0.0.1:$(cat "$out/port")" admin password "$out" >"$out/run.txt" || rc=$?
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=
    if [[ $rc -ge 2 ]]; then
        echo "check_mockups.sh: validator failed to run for $dir" >&2
        exit 2
    fi
    echo "$dir: $(head -n1 "$out/run.txt") [$((SECONDS - start)) s]"
    if [[ $update == 1 ]]; then
        python3 "$here/make_baseline.py" "$out" "$here/validator-baseline" "$dir"
    else
        python3 "$here/compare_baseline.py" "$out/failures.txt" \
            "$here/validator-baseline/$dir.txt" "$here/validator-baseline/$dir.trimmed.txt" || status=1
    fi
done
exit $status
