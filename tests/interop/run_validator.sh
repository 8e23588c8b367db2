#!/usr/bin/env bash
# Runs DMTF's redfish-service-validator offline against a Redfish service and
# writes a normalised failure list.
#
#   tests/interop/run_validator.sh URL USER PASS OUTDIR
#   e.g. tests/interop/run_validator.sh https://127.0.0.1:8443 root calvin /tmp/rsv
#
# Uses the venv from setup-python.sh ($KILN_INTEROP_VENV, default
# target/interop-venv; created if missing) and the DMTF CSDL schemas in
# tests/interop/csdl (--skipschema: nothing is downloaded). Basic auth; the
# certificate is never checked (the validator's HTTP client does not verify).
#
# Writes into OUTDIR:
#   failures.txt   normalised FAIL lines: URI<TAB>PROP<TAB>KIND (sorted, unique)
#   warnings.txt   the same for WARN
#   results.json   counts overall and per resource, raw FAIL/WARN messages
#   validator.log  the validator's console output
#   report/<YYYY-MM-DD-HHMMSS>/  its HTML + Excel reports and debug log
# and prints a one-line summary and failures.txt on stdout.
#
# Exit status: 0 no failure; 1 failures (listed); 2 the validator could not
# run (service unreachable, no service root, bad arguments).
set -euo pipefail

if [[ $# -ne 4 ]]; then
    echo "usage: $0 URL USER PASS OUTDIR" >&2
    exit 2
fi
url=$1 user=$2 pass=$3 out=$4
here=$(cd "$(dirname "$0")" && pwd)

venv=$("$here/setup-python.sh")
mkdir -p "$out"
rm -rf "$out/report" "$out/failures.txt" "$out/warnings.txt" "$out/results.json"

rc=0
"$venv/bin/python" "$here/rsv_run.py" --out "$out" -- \
    --config "$out/no-config.ini" \
    --rhost "$url" --user "$user" --password "$pass" --authtype Basic \
    --schema_directory "$here/csdl" --skipschema \
    --logdir "$out/report" --timeout "${KILN_RSV_TIMEOUT:-30}" \
    >"$out/validator.log" 2>&1 || rc=$?

if [[ $rc -ge 2 || ! -f $out/results.json ]]; then
    echo "run_validator.sh: the validator could not run against $url (exit $rc); last lines of $out/validator.log:" >&2
    tail -n 20 "$out/validator.log" >&2
    exit 2
fi

"$venv/bin/python" - "$out/results.json" <<'EOF'
import json, sys
c = json.load(open(sys.argv[1]))["counts"]
print("validator: {resources} resources, {pass} pass, {warn} warn, {fail} fail "
      "({unique_failures} unique failures), {skip} not tested".format(**c))
EOF
cat "$out/failures.txt"
exit "$rc"
