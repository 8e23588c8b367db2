#!/usr/bin/env bash
# Runs DMTF's Redfish Protocol Validator against a Redfish service and writes
# a normalised failure list.
#
#   tests/interop/run_protocol_validator.sh URL USER PASS OUTDIR
#   e.g. tests/interop/run_protocol_validator.sh https://127.88.1.1:8443 admin test /tmp/rpv
#
# Uses the venv from setup-python.sh ($KILN_INTEROP_VENV, default
# target/interop-venv; created if missing). The validator checks the
# service's certificate, and its requests Sessions ignore --no-cert-check, so
# the service's own certificate is fetched and trusted both through
# --ca-bundle and REQUESTS_CA_BUNDLE.
#
# Writes into OUTDIR:
#   cert.pem       the certificate the service presented
#   failures.txt   normalised FAIL lines: ASSERTION<TAB>METHOD<TAB>URI (sorted, unique)
#   validator.log  the validator's console output
#   report/        its TSV report
# and prints a one-line summary and failures.txt on stdout.
#
# Exit status: 0 no failure; 1 failures (listed); 2 the validator could not
# run (service unreachable, no certificate, bad arguments).
set -euo pipefail

if [[ $# -ne 4 ]]; then
    echo "usage: $0 URL USER PASS OUTDIR" >&2
    exit 2
fi
url=${1%/} user=$2 pass=$3 out=$4
here=$(cd "$(dirname "$0")" && pwd)

venv=$("$here/setup-python.sh")
mkdir -p "$out"
rm -rf "$out/report" "$out/failures.txt" "$out/cert.pem"

hostport=${url#https://}
hostport=${hostport%%/*}
if ! openssl s_client -connect "$hostport" </dev/null 2>/dev/null |
    openssl x509 >"$out/cert.pem" 2>/dev/null || [[ ! -s $out/cert.pem ]]; then
    echo "run_protocol_validator.sh: no TLS certificate from $hostport" >&2
    exit 2
fi

mkdir -p "$out/report"
rc=0
REQUESTS_CA_BUNDLE=$out/cert.pem "$venv/bin/rf_protocol_validator" \
    -u "$user" -p "$pass" -r "$url" --ca-bundle "$out/cert.pem" \
    --report-dir "$out/report" --report-type tsv \
    >"$out/validator.log" 2>&1 || rc=$?

tsv=$(find "$out/report" -name '*.tsv' | sort | tail -n 1)
if [[ -z $tsv ]]; then
    echo "run_protocol_validator.sh: the validator could not run against $url (exit $rc); last lines of $out/validator.log:" >&2
    tail -n 20 "$out/validator.log" >&2
    exit 2
fi

# Columns: Assertion, Method, Status code, URI, Result, Message, Requirement.
"$venv/bin/python" - "$tsv" "$out/failures.txt" <<'PY'
import csv, sys
from collections import Counter
rows = list(csv.DictReader(open(sys.argv[1], newline=""), delimiter="\t"))
counts = Counter(r["Result"] for r in rows)
fails = sorted({f'{r["Assertion"]}\t{r["Method"]}\t{r["URI"]}'
                for r in rows if r["Result"] == "FAIL"})
with open(sys.argv[2], "w") as f:
    f.writelines(line + "\n" for line in fails)
print("protocol validator: " + ", ".join(f"{n} {k.lower()}" for k, n in sorted(counts.items()))
      + f" ({len(fails)} unique failures)")
PY
cat "$out/failures.txt"
[[ -s $out/failures.txt ]] && exit 1
exit 0
