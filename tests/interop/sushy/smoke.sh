#!/usr/bin/env bash
# Smoke test of the sushy-emulator harness, with curl as the Redfish client:
# start (start.sh), auth, power on/off, one-time boot to Cd, virtual media
# insert/check/eject against a python3 http.server "ISO", stop (stop.sh).
#
#   tests/interop/sushy/smoke.sh        # SUSHY_PORT (8444), ISO_PORT (8081)
#
# KILN_SUSHY_FAST_POWER=1 is passed through to start.sh (power delay <= 1 s
# instead of 1-11 s). Prints one line per step with the elapsed time.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
ip=127.0.0.1
port=${SUSHY_PORT:-8444}
iso_port=${ISO_PORT:-8081}
work=$(mktemp -d "${TMPDIR:-/tmp}/sushy-smoke.XXXXXX")
http_pid=

cleanup() {
    "$here/stop.sh" "$work/sushy" || true
    [[ -n $http_pid ]] && kill "$http_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

t0=$(date +%s%N)
step() { printf '%6.2f s  %s\n' "$((($(date +%s%N) - t0) / 1000000))e-3" "$*"; }
die() {
    echo "FAIL: $*" >&2
    echo "--- emulator log tail:" >&2
    tail -n 20 "$work/sushy/emulator.log" >&2 || true
    exit 1
}
# json FIELD.PATH < body: prints the value (JSON for objects, lower-case bools)
json() {
    python3 -c 'import json, sys
v = json.load(sys.stdin)
for k in sys.argv[1].split("."):
    v = v[k]
print(json.dumps(v) if not isinstance(v, str) else v)' "$1"
}

# --- the "ISO" server
mkdir -p "$work/iso"
head -c 1048576 /dev/zero >"$work/iso/kiln.iso"
python3 -m http.server "$iso_port" --bind "$ip" --directory "$work/iso" \
    >"$work/http.log" 2>&1 </dev/null &
http_pid=$!
for _ in $(seq 50); do
    curl -s -o /dev/null "http://$ip:$iso_port/kiln.iso" && break
    sleep 0.1
done
curl -sf -o /dev/null "http://$ip:$iso_port/kiln.iso" || die "http.server on $iso_port did not come up"
iso_url=http://$ip:$iso_port/kiln.iso
step "http.server serving $iso_url"

# --- the emulator
info=$("$here/start.sh" "$ip" "$port" "$work/sushy") || die "start.sh failed"
step "start.sh: $info"
url=$(json url <<<"$info")
user=$(json username <<<"$info")
pass=$(json password <<<"$info")
cert=$(json cert <<<"$info")
system=$(json system <<<"$info")
fp=$(json fingerprint <<<"$info")
[[ $fp == sha256:$(openssl x509 -in "$cert" -noout -fingerprint -sha256 | sed 's/^.*=//') ]] ||
    die "fingerprint in JSON does not match $cert"

# Every request verifies the server against the generated cert (no -k).
# rf METHOD PATH [JSON]: body on stdout, HTTP status in $code.
rf() {
    local out data=()
    [[ $# -ge 3 ]] && data=(-H 'Content-Type: application/json' -d "$3")
    out=$(curl -sS --max-time 30 --cacert "$cert" -u "$user:$pass" -X "$1" \
        "${data[@]}" -w '\n%{http_code}' "$url$2") || die "curl $1 $2 failed"
    code=${out##*$'\n'}
    body=${out%$'\n'*}
}
expect() { [[ $code == "$1" ]] || die "$2: HTTP $code, wanted $1: $body"; }

code=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$cert" "$url$system")
[[ $code == 401 ]] || die "no credentials: HTTP $code, wanted 401"
code=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$cert" -u "$user:wrong" "$url$system")
[[ $code == 401 ]] || die "wrong password: HTTP $code, wanted 401"
code=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$cert" "$url/redfish/v1/")
[[ $code == 200 ]] || die "service root without credentials: HTTP $code, wanted 200"
step "auth: 401 without/with wrong credentials, service root open"

rf GET "$system"
expect 200 "GET system"
[[ $(json Name <<<"$body") == kiln-node-1 ]] || die "system name: $body"
[[ $(json PowerState <<<"$body") == Off ]] || die "initial PowerState not Off"

# power_wait STATE: poll the system (the fake driver applies a reset 1-11 s later)
power_wait() {
    local i
    for i in $(seq 100); do
        rf GET "$system"
        [[ $(json PowerState <<<"$body") == "$1" ]] && return 0
        sleep 0.2
    done
    die "PowerState never became $1"
}
rf POST "$system/Actions/ComputerSystem.Reset" '{"ResetType":"On"}'
expect 204 "Reset On"
step "Reset On accepted"
power_wait On
step "PowerState On"
rf POST "$system/Actions/ComputerSystem.Reset" '{"ResetType":"ForceOff"}'
expect 204 "Reset ForceOff"
power_wait Off
step "PowerState Off"

rf PATCH "$system" '{"Boot":{"BootSourceOverrideTarget":"Cd","BootSourceOverrideEnabled":"Once"}}'
expect 204 "PATCH Boot"
rf GET "$system"
[[ $(json Boot.BootSourceOverrideTarget <<<"$body") == Cd ]] || die "boot target not Cd: $body"
enabled=$(json Boot.BootSourceOverrideEnabled <<<"$body")
step "boot override Cd (BootSourceOverrideEnabled reads back as $enabled)"

rf GET "$system/VirtualMedia"
expect 200 "GET VirtualMedia"
members=$(json Members <<<"$body")
[[ $members == *"$system/VirtualMedia/Cd"* && $members == *"$system/VirtualMedia/Floppy"* ]] ||
    die "VirtualMedia members: $members"
cd=$system/VirtualMedia/Cd
rf POST "$cd/Actions/VirtualMedia.InsertMedia" "{\"Image\":\"$iso_url\",\"Inserted\":true,\"WriteProtected\":true}"
expect 204 "InsertMedia"
rf GET "$cd"
[[ $(json Inserted <<<"$body") == true ]] || die "Cd not inserted: $body"
[[ $(json Image <<<"$body") == "$iso_url" ]] || die "Cd Image: $body"
[[ $(json ImageName <<<"$body") == kiln.iso ]] || die "Cd ImageName: $body"
grep -q '"GET /kiln.iso HTTP/1.1" 200' "$work/http.log" || die "the emulator did not download the ISO"
step "InsertMedia Cd: Inserted, Image=$iso_url, downloaded"

rf POST "$system/VirtualMedia/Floppy/Actions/VirtualMedia.InsertMedia" "{\"Image\":\"http://$ip:$iso_port/missing.iso\"}"
expect 400 "InsertMedia of a 404 URL"
step "InsertMedia Floppy with a 404 URL: HTTP 400"

rf POST "$cd/Actions/VirtualMedia.EjectMedia" '{}'
expect 204 "EjectMedia"
rf GET "$cd"
[[ $(json Inserted <<<"$body") == false && $(json Image <<<"$body") == "" ]] || die "Cd not ejected: $body"
step "EjectMedia Cd: Inserted false, Image empty"

pid=$(json pid <<<"$info")
"$here/stop.sh" "$work/sushy"
[[ $(ps -o stat= -p "$pid" || true) != [^Z]* ]] || die "emulator pid $pid still running after stop.sh"
! curl -ks -o /dev/null --max-time 2 "$url/redfish/v1/" || die "$url still answers after stop.sh"
[[ ! -e $work/sushy/emulator.pid ]] || die "stop.sh left emulator.pid"
step "stop.sh: emulator gone"
echo "PASS"
