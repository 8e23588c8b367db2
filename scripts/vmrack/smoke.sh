#!/usr/bin/env bash
# Self-test of up.sh/down.sh with real UEFI boots, curl only on the Redfish side:
#
#   scripts/vmrack/smoke.sh [WORKDIR]     # default target/vm-dev-rack/smoke
#
# Builds a ~30 MB EFI-only ISO (grub-mkrescue; its grub.cfg prints a marker
# on the serial console and halts), serves it with python3 -m http.server on
# 127.0.0.1, brings up a rack of 5 nodes:
#   n1, n2   NIC, media ok     InsertMedia, boot Cd once, On: GRUB of the ISO
#   hang     "nic": false      runs and halts; then EjectMedia, Hdd, On: OVMF
#                              tries the (blank) disk; ForceOff
#   refuse   "media": "refuse" InsertMedia -> 400
#   broken   "media": "fail"   InsertMedia -> 500, VirtualMedia still reads Inserted
# and checks every answer, then runs down.sh and checks that nothing is left.
# Prints one JSON line of timings; exit 0 when every check passed, 1 when one
# failed (message on stderr), 2 when something is not installed
# (scripts/vmrack/deps.sh --smoke installs all of it).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
mkdir -p "${1:-$root/target/vm-dev-rack/smoke}"
work=$(cd "${1:-$root/target/vm-dev-rack/smoke}" && pwd)
rack=$work/rack

for b in grub-mkrescue xorriso mformat curl python3; do
    command -v "$b" >/dev/null || {
        echo "vmrack smoke.sh: not installed: $b (scripts/vmrack/deps.sh --smoke installs it)" >&2
        exit 2
    }
done
[[ -d /usr/lib/grub/x86_64-efi ]] || {
    echo "vmrack smoke.sh: not installed: grub-efi-amd64-bin" >&2
    exit 2
}

http_pid=
cleanup() {
    [[ -n $http_pid ]] && kill "$http_pid" 2>/dev/null
    "$here/down.sh" "$rack" >/dev/null 2>&1 || true
}
trap cleanup EXIT
fail() {
    echo "vmrack smoke.sh: FAILED: $*" >&2
    exit 1
}
now() { date +%s.%N; }
since() { python3 -c 'import sys; print(round(float(sys.argv[2]) - float(sys.argv[1]), 2))' "$1" "$(now)"; }

# --- the ISO and its web server -------------------------------------------------
rm -rf "$work/iso" "$work/www" "$rack"
mkdir -p "$work/iso/boot/grub" "$work/www"
cat >"$work/iso/boot/grub/grub.cfg" <<'EOF'
serial --unit=0 --speed=115200
terminal_input serial
terminal_output serial
echo "KILN-VMRACK-SMOKE: GRUB from the inserted ISO ran"
sleep 1
halt
EOF
# Random padding so that the ISO is ~30 MB, like a small deploy ISO.
head -c 17M /dev/urandom >"$work/iso/pad.bin"
grub-mkrescue -o "$work/www/smoke.iso" "$work/iso" >"$work/grub-mkrescue.log" 2>&1 ||
    { cat "$work/grub-mkrescue.log" >&2; fail "grub-mkrescue"; }
rm -f "$work/iso/pad.bin"
iso_bytes=$(stat -c %s "$work/www/smoke.iso")
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
(cd "$work/www" && exec setsid python3 -m http.server --bind 127.0.0.1 "$port" >"$work/http.log" 2>&1 </dev/null) &
http_pid=$!
image=http://127.0.0.1:$port/smoke.iso
for _ in $(seq 50); do
    curl -sf -o /dev/null -I "$image" && break
    sleep 0.1
done

# --- the rack ---------------------------------------------------------------------
cat >"$work/spec.json" <<'EOF'
{"prefix": "kiln-smoke", "nodes": [
 {"name": "n1", "disk_gib": 3, "memory_mib": 1024, "vcpus": 2, "nic": true, "ssh_port": 22291,
  "bmc_ip": "127.209.0.1", "bmc_port": 8443, "mac": "52:54:00:6b:09:01"},
 {"name": "n2", "disk_gib": 3, "memory_mib": 1024, "vcpus": 2, "nic": true, "ssh_port": 22292,
  "bmc_ip": "127.209.0.2", "bmc_port": 8443, "mac": "52:54:00:6b:09:02"},
 {"name": "hang", "disk_gib": 2, "memory_mib": 512, "vcpus": 1, "nic": false,
  "bmc_ip": "127.209.0.3", "bmc_port": 8443},
 {"name": "refuse", "disk_gib": 1, "memory_mib": 512, "vcpus": 1, "ssh_port": 22294,
  "bmc_ip": "127.209.0.4", "bmc_port": 8443, "media": "refuse"},
 {"name": "broken", "disk_gib": 1, "memory_mib": 512, "vcpus": 1, "ssh_port": 22295,
  "bmc_ip": "127.209.0.5", "bmc_port": 8443, "media": "fail"}
]}
EOF
t=$(now)
"$here/up.sh" "$rack" "$work/spec.json" >"$work/up.json"
t_up=$(since "$t")

field() { # field NODE KEY
    python3 -c 'import json, sys
for n in json.load(open(sys.argv[1]))["nodes"]:
    if n["name"] == sys.argv[2]:
        v = n[sys.argv[3]]
        print("" if v is None else v)' "$work/up.json" "$1" "$2"
}
# rf NODE METHOD PATH [JSON]: PATH relative to the node's system unless it
# starts with /. Body to $work/last-NODE.body, prints the HTTP status.
rf() {
    local node=$1 method=$2 path=$3 data=${4:-}
    local url sys cert auth
    url=$(field "$node" bmc_url) sys=$(field "$node" system) cert=$(field "$node" cert)
    auth="$(field "$node" username):$(field "$node" password)"
    [[ $path == /* ]] || path=$sys${path:+/$path}
    local args=(-sS --max-time 120 --cacert "$cert" -u "$auth" -X "$method" -o "$work/last-$node.body" -w '%{http_code}')
    [[ -n $data ]] && args+=(-H 'Content-Type: application/json' -d "$data")
    curl "${args[@]}" "$url$path"
}
expect() { # expect NODE WANT_STATUS METHOD PATH [JSON]
    local node=$1 want=$2 got
    shift 2
    got=$(rf "$node" "$@") || fail "$node: curl $*"
    [[ $got == "$want" ]] || fail "$node: $1 $2 answered $got, expected $want: $(head -c 600 "$work/last-$node.body")"
}
jget() { # jget NODE PATH PYEXPR  (PYEXPR over d, the JSON body)
    [[ $(rf "$1" GET "$2") == 200 ]] || fail "$1: GET $2"
    python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$work/last-$1.body" "$3"
}
power() { jget "$1" "" 'd["PowerState"]'; }
boot() { jget "$1" "" '"%s/%s/%s" % (d["Boot"]["BootSourceOverrideTarget"], d["Boot"]["BootSourceOverrideEnabled"], d["Boot"]["BootSourceOverrideMode"])'; }
serial_has() { grep -q "$2" "$(field "$1" serial_log)"; }

# One system per BMC.
for n in n1 n2 hang refuse broken; do
    [[ $(jget "$n" /redfish/v1/Systems 'd["Members@odata.count"]') == 1 ]] || fail "$n: Systems has not exactly 1 member"
    [[ $(power "$n") == Off ]] || fail "$n: not Off after up.sh"
done

# --- a: insert, boot Cd once, On, guest halts, eject, Hdd, On ---------------------
boot_nodes=(n1 n2 hang)
insert='{"Image":"'$image'","Inserted":true,"WriteProtected":true}'
declare -A t_insert=() t_off=()
t=$(now)
pids=()
for n in "${boot_nodes[@]}"; do
    (
        t0=$(now)
        expect "$n" 204 POST VirtualMedia/Cd/Actions/VirtualMedia.InsertMedia "$insert"
        since "$t0" >"$work/insert-$n.s"
    ) &
    pids+=($!)
done
for p in "${pids[@]}"; do
    wait "$p" || fail "InsertMedia (see above)"
done
t_insert_all=$(since "$t")
for n in "${boot_nodes[@]}"; do
    t_insert[$n]=$(cat "$work/insert-$n.s")
    [[ $(jget "$n" VirtualMedia/Cd 'd["Inserted"]') == True ]] || fail "$n: VirtualMedia/Cd not Inserted"
    expect "$n" 204 PATCH "" '{"Boot":{"BootSourceOverrideTarget":"Cd","BootSourceOverrideEnabled":"Once","BootSourceOverrideMode":"UEFI"}}'
    b=$(boot "$n")
    [[ $b == Cd/Continuous/UEFI ]] || fail "$n: boot reads $b after PATCH Cd/Once/UEFI"
done
t_on=$(now)
for n in "${boot_nodes[@]}"; do
    expect "$n" 204 POST Actions/ComputerSystem.Reset '{"ResetType":"On"}'
done
deadline=$((SECONDS + 300))
while ((${#t_off[@]} < ${#boot_nodes[@]})); do
    for n in "${boot_nodes[@]}"; do
        [[ -z ${t_off[$n]:-} && $(power "$n") == Off ]] && t_off[$n]=$(since "$t_on")
    done
    ((SECONDS < deadline)) || fail "not all of ${boot_nodes[*]} powered themselves off within 300 s"
    sleep 0.5
done
for n in "${boot_nodes[@]}"; do
    serial_has "$n" "KILN-VMRACK-SMOKE: GRUB from the inserted ISO ran" || fail "$n: the ISO's GRUB did not run (serial log)"
    b=$(boot "$n")
    [[ $b == Cd/Continuous/UEFI ]] || fail "$n: boot reads $b after the guest powered off"
    expect "$n" 204 POST VirtualMedia/Cd/Actions/VirtualMedia.EjectMedia '{}'
    [[ $(jget "$n" VirtualMedia/Cd 'd["Inserted"]') == False ]] || fail "$n: still Inserted after EjectMedia"
    b=$(boot "$n")
    [[ $b == Hdd/Continuous/UEFI ]] || fail "$n: boot reads $b after EjectMedia"
done
# Boot Cd with no media: the libvirt driver removed the cdrom on eject.
expect n1 500 PATCH "" '{"Boot":{"BootSourceOverrideTarget":"Cd","BootSourceOverrideEnabled":"Once"}}'
# Hdd + On: OVMF tries the blank disk; then ForceOff.
expect hang 204 PATCH "" '{"Boot":{"BootSourceOverrideTarget":"Hdd","BootSourceOverrideEnabled":"Continuous","BootSourceOverrideMode":"UEFI"}}'
log=$(field hang serial_log)
lines_before=$(wc -l <"$log")
expect hang 204 POST Actions/ComputerSystem.Reset '{"ResetType":"On"}'
t=$(now)
until tail -n +"$((lines_before + 1))" "$log" | grep -q 'UEFI Misc Device'; do
    (($(date +%s) - ${t%.*} < 120)) || fail "hang: OVMF did not try the disk within 120 s of On (Hdd)"
    sleep 0.5
done
t_hdd=$(since "$t")
qpid=$(cat /run/libvirt/qemu/kiln-smoke-hang.pid 2>/dev/null || true)
rss_kib=$(ps -o rss= -p "${qpid:-0}" 2>/dev/null || true)
t=$(now)
expect hang 204 POST Actions/ComputerSystem.Reset '{"ResetType":"ForceOff"}'
t_forceoff=$(since "$t")
[[ $(power hang) == Off ]] || fail "hang: not Off after ForceOff"

# --- b: the BMCs that refuse virtual media ----------------------------------------
expect refuse 400 POST VirtualMedia/Cd/Actions/VirtualMedia.InsertMedia "$insert"
grep -q "IPv6 address required but got IPv4 address: 127.0.0.1" "$work/last-refuse.body" ||
    fail "refuse: unexpected body $(cat "$work/last-refuse.body")"
[[ $(jget refuse VirtualMedia/Cd 'd["Inserted"]') == False ]] || fail "refuse: reads Inserted"
expect broken 500 POST VirtualMedia/Cd/Actions/VirtualMedia.InsertMedia "$insert"
grep -q "Storage pool not found" "$work/last-broken.body" ||
    fail "broken: unexpected body $(cat "$work/last-broken.body")"
[[ $(jget broken VirtualMedia/Cd 'd["Inserted"]') == True ]] || fail "broken: expected the (false) Inserted: true"

# --- down ---------------------------------------------------------------------------
t=$(now)
"$here/down.sh" "$rack" || fail "down.sh"
t_down=$(since "$t")
left=$(virsh -q -c qemu:///system list --all --name 2>/dev/null | grep '^kiln-smoke-' || true)
[[ -z $left ]] || fail "domains left: $left"
for d in "$rack"/bmc-*/; do
    [[ ! -f $d/emulator.pid ]] || fail "emulator.pid left in $d"
done
if virsh -q -c qemu:///system pool-info default >/dev/null 2>&1; then
    vols=$(virsh -q -c qemu:///system vol-list default | grep -E 'kiln-smoke-|-iso-' || true)
    [[ -z $vols ]] || fail "volumes left: $vols"
fi

python3 -c 'import json, sys
k = sys.argv[1::2]; v = [json.loads(x) if x else None for x in sys.argv[2::2]]
print(json.dumps(dict(zip(k, v)), separators=(",", ":")))' \
    ok true iso_bytes "$iso_bytes" up_s "$t_up" \
    insert_parallel_3_s "$t_insert_all" insert_n1_s "${t_insert[n1]}" insert_n2_s "${t_insert[n2]}" insert_hang_s "${t_insert[hang]}" \
    on_to_off_n1_s "${t_off[n1]}" on_to_off_n2_s "${t_off[n2]}" on_to_off_hang_s "${t_off[hang]}" \
    on_hdd_to_disk_try_s "$t_hdd" forceoff_s "$t_forceoff" hang_qemu_rss_kib_at_disk_try "${rss_kib// /}" down_s "$t_down"
