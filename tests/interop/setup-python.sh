#!/usr/bin/env bash
# Creates (or reuses) the Python venv for the Redfish interop tests, with
# pinned versions of DMTF's redfish-service-validator, DMTF's
# redfish-protocol-validator and sushy-tools from PyPI.
#
#   tests/interop/setup-python.sh            # venv at target/interop-venv
#   KILN_INTEROP_VENV=/tmp/v tests/interop/setup-python.sh
#
# Every other package is pinned by tests/interop/constraints.txt.
# Idempotent: a venv whose pins already match is left alone (no network).
# Prints the venv path on stdout; anything pip says goes to stderr only when
# it fails.
set -euo pipefail

RSV_VERSION=3.1.8
SUSHY_TOOLS_VERSION=2.2.0
RPV_VERSION=1.3.2

root=$(cd "$(dirname "$0")/../.." && pwd)
venv=${KILN_INTEROP_VENV:-target/interop-venv}
case $venv in /*) ;; *) venv=$root/$venv ;; esac

python=${PYTHON:-python3}
constraints=$root/tests/interop/constraints.txt
stamp=$venv/.kiln-pins
want="redfish-service-validator==$RSV_VERSION sushy-tools==$SUSHY_TOOLS_VERSION redfish-protocol-validator==$RPV_VERSION"
stamp_text="$want $(cksum <"$constraints")"

if [[ -x $venv/bin/python && -f $stamp && $(cat "$stamp") == "$stamp_text" ]] &&
    "$venv/bin/python" -c 'import redfish_service_validator, sushy_tools, redfish_protocol_validator' 2>/dev/null; then
    echo "$venv"
    exit 0
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT

fail() {
    echo "setup-python.sh: $1 failed:" >&2
    cat "$log" >&2
    exit 1
}

if [[ ! -x $venv/bin/python ]]; then
    rm -rf "$venv"
    "$python" -m venv "$venv" >"$log" 2>&1 ||
        fail "$python -m venv $venv (on Debian's own python3: apt-get install python3-venv)"
fi

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
# shellcheck disable=SC2086
"$venv/bin/python" -m pip install --quiet -c "$constraints" $want >"$log" 2>&1 ||
    fail "pip install $want"
"$venv/bin/python" -c 'import redfish_service_validator, sushy_tools, redfish_protocol_validator' >"$log" 2>&1 ||
    fail "import check"

echo "$stamp_text" >"$stamp"
echo "$venv"
