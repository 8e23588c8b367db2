#!/usr/bin/env bash
# Starts OpenStack's sushy-emulator (sushy-tools, pinned by ../setup-python.sh)
# in the background with the fake driver, TLS and HTTP basic auth:
#
#   tests/interop/sushy/start.sh IP PORT WORKDIR
#
# WORKDIR gets: emulator.conf (the config), cert.pem + key.pem (self-signed,
# made with openssl; reused if both exist, so the fingerprint survives a
# restart), htpasswd (bcrypt), state/ (the emulator's sqlite state, wiped at
# every start), tmp/ (TMPDIR: virtual media downloads land here),
# emulator.log, emulator.pid.
#
# Waits (30 s at most) until GET https://IP:PORT/redfish/v1/ answers, then
# prints one JSON line:
#   {"url":"https://IP:PORT","username":"admin","password":"sushy-pass","pid":N,
#    "cert":"WORKDIR/cert.pem","system":"/redfish/v1/Systems/<uuid>",
#    "manager":"/redfish/v1/Managers/<uuid>","fingerprint":"sha256:AB:CD:..."}
# On failure: exit 1 with the emulator's log tail on stderr.
#
# Environment:
#   KILN_SUSHY_FAST_POWER=1  patch the fake driver's power delay from a random
#                            1-11 s down to at most 1 s (see README.md)
#   KILN_INTEROP_VENV        venv location, as for ../setup-python.sh
# Stop it with: tests/interop/sushy/stop.sh WORKDIR
set -euo pipefail

if [[ $# -ne 3 ]]; then
    echo "usage: $0 IP PORT WORKDIR" >&2
    exit 2
fi
ip=$1 port=$2
[[ $port =~ ^[0-9]+$ ]] || { echo "$0: PORT must be a number" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$3"
workdir=$(cd "$3" && pwd)

USERNAME=admin
PASSWORD=sushy-pass
SYSTEM_UUID=6b696c6e-0000-4000-8000-000000000001 # "kiln" in hex
SYSTEM_NAME=kiln-node-1
url="https://$ip:$port"
log=$workdir/emulator.log
pidfile=$workdir/emulator.pid

venv=$("$here/../setup-python.sh")
py=$venv/bin/python

fail() {
    echo "sushy start.sh: $1" >&2
    if [[ -f $log ]]; then
        echo "--- last lines of $log:" >&2
        tail -n 30 "$log" >&2
    fi
    exit 1
}

# Refuse to start twice in one WORKDIR, or on a port someone already serves.
if [[ -f $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    fail "already running in $workdir (pid $(cat "$pidfile")); run stop.sh $workdir first"
fi
if curl -ks -o /dev/null --max-time 2 "$url/"; then
    fail "something already answers on $url"
fi

rm -rf "$workdir/state" "$workdir/tmp" "$log" "$pidfile"
mkdir -p "$workdir/state" "$workdir/tmp"

# TLS: self-signed EC P-256 certificate, valid for IP (and localhost).
cert=$workdir/cert.pem key=$workdir/key.pem
if [[ ! -s $cert || ! -s $key ]]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$key" -out "$cert" -days 365 -subj "/CN=sushy-emulator" \
        -addext "subjectAltName=IP:$ip,DNS:localhost" >"$workdir/openssl.log" 2>&1 ||
        { cat "$workdir/openssl.log" >&2; fail "openssl could not make a certificate"; }
fi
fingerprint=sha256:$(openssl x509 -in "$cert" -noout -fingerprint -sha256 | sed 's/^.*=//')

# Basic auth: sushy-tools reads an Apache htpasswd file and accepts bcrypt
# entries only ($2y$/$2a$/$2b$). bcrypt (pinned in ../constraints.txt) comes
# with sushy-tools. Cost 4 (the minimum): the emulator runs bcrypt.checkpw on
# every request, at cost 12 that is ~0.25 s of CPU per request.
"$py" -c 'import bcrypt, sys
print("%s:%s" % (sys.argv[1], bcrypt.hashpw(sys.argv[2].encode(), bcrypt.gensalt(rounds=4)).decode()))' \
    "$USERNAME" "$PASSWORD" >"$workdir/htpasswd"

# The config is a Python file (flask config.from_pyfile).
cat >"$workdir/emulator.conf" <<EOF
# Written by tests/interop/sushy/start.sh
SUSHY_EMULATOR_LISTEN_IP = '$ip'
SUSHY_EMULATOR_LISTEN_PORT = $port
SUSHY_EMULATOR_SSL_CERT = '$cert'
SUSHY_EMULATOR_SSL_KEY = '$key'
SUSHY_EMULATOR_AUTH_FILE = '$workdir/htpasswd'
SUSHY_EMULATOR_STATE_DIR = '$workdir/state'
SUSHY_EMULATOR_FEATURE_SET = 'full'
SUSHY_EMULATOR_FAKE_DRIVER = True
SUSHY_EMULATOR_FAKE_SYSTEMS = [
    {
        'uuid': '$SYSTEM_UUID',
        'name': '$SYSTEM_NAME',
        'power_state': 'Off',
        'boot_device': 'Hdd',
        'boot_mode': 'UEFI',
        'external_notifier': False,
        'nics': [{'mac': '52:54:00:6b:69:01', 'ip': '$ip'}],
    },
]
SUSHY_EMULATOR_VMEDIA_DEVICES = {
    'Cd': {'Name': 'Virtual CD', 'MediaTypes': ['CD', 'DVD']},
    'Floppy': {'Name': 'Virtual Removable Media', 'MediaTypes': ['Floppy', 'USBStick']},
}
SUSHY_EMULATOR_VMEDIA_VERIFY_SSL = False
EOF

launcher=("$venv/bin/sushy-emulator")
if [[ ${KILN_SUSHY_FAST_POWER:-} == 1 ]]; then
    # fakedriver.set_power_state uses random.randint(1, 11); make it 1.
    launcher=("$py" -c 'import sys, types
from sushy_tools.emulator.resources.systems import fakedriver
fakedriver.random = types.SimpleNamespace(randint=lambda a, b: a)
from sushy_tools.emulator import main
sys.exit(main.main())')
fi

# Own session (setsid) so that the caller's Ctrl-C or job control does not hit
# it; stdout/stderr to the log so that $(start.sh ...) returns.
(cd "$workdir" && TMPDIR=$workdir/tmp exec setsid "${launcher[@]}" \
    --config "$workdir/emulator.conf" >"$log" 2>&1 </dev/null) &
pid=$!
echo "$pid" >"$pidfile"

deadline=$((SECONDS + 30))
until curl -ks -o /dev/null --max-time 2 "$url/redfish/v1/"; do
    if ! kill -0 "$pid" 2>/dev/null; then
        rm -f "$pidfile"
        fail "sushy-emulator exited before answering on $url"
    fi
    if ((SECONDS >= deadline)); then
        kill "$pid" 2>/dev/null || true
        rm -f "$pidfile"
        fail "no answer on $url/redfish/v1/ within 30 s"
    fi
    sleep 0.2
done
kill -0 "$pid" 2>/dev/null || fail "sushy-emulator exited (another server on $url?)"

first_member() {
    curl -sS --fail --max-time 10 --cacert "$cert" -u "$USERNAME:$PASSWORD" "$url$1" |
        "$py" -c 'import json, sys; print(json.load(sys.stdin)["Members"][0]["@odata.id"].rstrip("/"))'
}
system=$(first_member /redfish/v1/Systems) || fail "GET /redfish/v1/Systems failed"
manager=$(first_member /redfish/v1/Managers) || fail "GET /redfish/v1/Managers failed"

"$py" -c 'import json, sys
k = ["url", "username", "password", "pid", "cert", "system", "manager", "fingerprint"]
v = sys.argv[1:]
v[3] = int(v[3])
print(json.dumps(dict(zip(k, v)), separators=(",", ":")))' \
    "$url" "$USERNAME" "$PASSWORD" "$pid" "$cert" "$system" "$manager" "$fingerprint"
