#!/usr/bin/env bash
# Starts a rack of real UEFI virtual machines (QEMU under libvirt), each behind
# its own Redfish BMC (sushy-tools' libvirt driver, TLS + basic auth), all on
# loopback:
#
#   scripts/vmrack/up.sh WORKDIR SPEC.json      # prints one JSON line
#   scripts/vmrack/down.sh WORKDIR              # stops and removes all of it
#
# SPEC.json (see README.md):
#   {"prefix": "kiln-t1", "nodes": [{"name": "n1", "disk_gib": 3, "memory_mib": 1024,
#     "vcpus": 2, "nic": true, "ssh_port": 22201, "bmc_ip": "127.201.0.1",
#     "bmc_port": 8443, "mac": "52:54:00:6b:00:01", "media": "ok"}, ...]}
#
# What it does:
#  1. libvirt: if no daemon answers `virsh -c qemu:///system version`, sets
#     user/group "root" and security_driver "none" in /etc/libvirt/qemu.conf
#     and starts virtlogd and libvirtd (-d) itself, noting them in
#     WORKDIR/daemons so that down.sh stops only what this script started.
#     A storage pool named "default" (sushy-tools uploads virtual media into
#     it) is created at WORKDIR/pool if there is none.
#  2. per node: domain PREFIX-NAME with a UUID derived from PREFIX/NAME, a
#     blank qcow2 volume (virtio, serial kiln-NAME) in pool "default", an
#     empty SATA cdrom, OVMF (4M) with its own NVRAM, serial console appended
#     to WORKDIR/NAME-serial.log, QEMU slirp networking with only
#     127.0.0.1:SSH_PORT -> guest :22 (or no NIC at all: "nic": false).
#     Defined, powered off. TCG unless KILN_VM_ACCEL=kvm.
#  3. per node: a sushy-emulator on BMC_IP:BMC_PORT serving only that domain,
#     files in WORKDIR/bmc-NAME/ (emulator.conf, cert.pem, key.pem, htpasswd,
#     state/, tmp/, emulator.log, emulator.pid, fingerprint).
#  4. prints {"accel":"tcg","nodes":[{"name","domain","uuid","bmc_url","system","manager",
#     "username","password","fingerprint","cert","ssh","mac","media",
#     "serial_log","disk","disk_serial"}, ...]}
#
# Exit status: 0 up; 2 something is not installed (the message names it:
# qemu-system-x86_64, qemu-img, OVMF files, libvirtd/virtlogd/virsh, the qemu
# driver of libvirt, the venv's libvirt module; scripts/vmrack/deps.sh
# installs all of it); 1 anything else (bad spec, a daemon or an emulator
# that does not come up, ...) with the relevant log tail on stderr. On
# failure whatever was started is stopped again (down.sh), unless
# KILN_VMRACK_KEEP=1.
#
# Environment: KILN_VM_ACCEL=tcg|kvm (default tcg: /dev/kvm on the CI
# machines is kvm_pvm, which cannot run OVMF), KILN_INTEROP_VENV (the venv,
# as for tests/interop/setup-python.sh).
set -euo pipefail

if [[ $# -ne 2 ]]; then
    echo "usage: $0 WORKDIR SPEC.json" >&2
    exit 1
fi
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
[[ -r $2 ]] || { echo "vmrack up.sh: cannot read spec $2" >&2; exit 1; }
spec=$(cd "$(dirname "$2")" && pwd)/$(basename "$2")
mkdir -p "$1"
workdir=$(cd "$1" && pwd)

URI=qemu:///system
OVMF_FILES=(/usr/share/OVMF/OVMF_CODE_4M.fd /usr/share/OVMF/OVMF_VARS_4M.fd /usr/share/OVMF/OVMF_VARS_4M.ms.fd)
QEMU_CONF=/etc/libvirt/qemu.conf
accel=${KILN_VM_ACCEL:-tcg}
virsh=(virsh -q -c "$URI")

started=0 # set once something was started: a failure then runs down.sh

fail() { # fail MESSAGE [LOGFILE...]
    echo "vmrack up.sh: $1" >&2
    shift
    local f
    for f in "$@"; do
        if [[ -s $f ]]; then
            echo "--- last lines of $f:" >&2
            tail -n 30 "$f" >&2
        fi
    done
    if ((started)) && [[ ${KILN_VMRACK_KEEP:-} != 1 ]]; then
        echo "vmrack up.sh: stopping what was started (down.sh $workdir)" >&2
        "$here/down.sh" "$workdir" >&2 || true
    fi
    exit 1
}
missing() {
    echo "vmrack up.sh: not installed: $1 (scripts/vmrack/deps.sh installs it)" >&2
    exit 2
}

# --- 1. what must be installed -------------------------------------------
case $accel in
tcg | kvm) ;;
*) fail "KILN_VM_ACCEL must be tcg or kvm, not '$accel'" ;;
esac
for b in qemu-system-x86_64 qemu-img virsh openssl curl setsid; do
    command -v "$b" >/dev/null || missing "$b"
done
for f in "${OVMF_FILES[@]}"; do
    [[ -r $f ]] || missing "$f (package ovmf)"
done
if [[ $accel == kvm && ! -w /dev/kvm ]]; then
    echo "vmrack up.sh: KILN_VM_ACCEL=kvm but /dev/kvm is not usable" >&2
    exit 2
fi
setup_log=$(mktemp)
trap 'rm -f "$setup_log"' EXIT
venv=$("$root/tests/interop/setup-python.sh" 2>"$setup_log") || {
    cat "$setup_log" >&2
    missing "the interop venv (tests/interop/setup-python.sh failed)"
}
py=$venv/bin/python
"$py" -c 'import libvirt' 2>/dev/null || missing "the libvirt module in $venv (pip package libvirt-python)"
"$py" -c 'import sushy_tools' 2>/dev/null || missing "sushy-tools in $venv"

spec_err=$("$py" "$here/rack.py" check "$spec" 2>&1) || fail "bad spec $spec: $spec_err"

# --- 2. not twice in one WORKDIR ------------------------------------------
if [[ -f $workdir/rack.json ]]; then
    for d in "$workdir"/bmc-*/; do
        [[ -f $d/emulator.pid ]] || continue
        pid=$(cat "$d/emulator.pid")
        if kill -0 "$pid" 2>/dev/null && [[ $(ps -o stat= -p "$pid" 2>/dev/null) != Z* ]]; then
            fail "a rack is already up in $workdir (emulator pid $pid); run scripts/vmrack/down.sh $workdir first"
        fi
    done
fi

# --- 3. libvirt ---------------------------------------------------------
# set_qemu_conf KEY VALUE: make `KEY = VALUE` the only active setting of KEY.
set_qemu_conf() {
    local key=$1 val=$2
    if grep -qE "^[[:space:]]*${key}[[:space:]]*=[[:space:]]*${val}[[:space:]]*(#.*)?$" "$QEMU_CONF" &&
        [[ $(grep -cE "^[[:space:]]*${key}[[:space:]]*=" "$QEMU_CONF") == 1 ]]; then
        return 0
    fi
    [[ -f $QEMU_CONF.kiln-orig ]] || cp -p "$QEMU_CONF" "$QEMU_CONF.kiln-orig"
    sed -i -E "s|^([[:space:]]*${key}[[:space:]]*=.*)$|# \\1   # (kiln vmrack)|" "$QEMU_CONF"
    grep -qxF "# kiln scripts/vmrack/up.sh (libvirtd without systemd, runs QEMU as root):" "$QEMU_CONF" ||
        printf '\n%s\n' "# kiln scripts/vmrack/up.sh (libvirtd without systemd, runs QEMU as root):" >>"$QEMU_CONF"
    echo "$key = $val" >>"$QEMU_CONF"
}

daemons=$workdir/daemons
lv_log=$workdir/libvirtd.log
if ! "${virsh[@]}" version >/dev/null 2>&1; then
    for b in libvirtd virtlogd; do
        command -v "$b" >/dev/null || missing "$b (package libvirt-daemon-system)"
    done
    [[ -f $QEMU_CONF ]] || missing "$QEMU_CONF (package libvirt-daemon-driver-qemu)"
    set_qemu_conf user '"root"'
    set_qemu_conf group '"root"'
    set_qemu_conf security_driver '"none"'
    mkdir -p /run/libvirt
    : >"$lv_log"
    started=1
    : >>"$daemons"
    # virtlogd may survive a libvirtd that stopped; start it only if none runs.
    if ! [[ -S /run/libvirt/virtlogd-sock ]] || ! pgrep -x virtlogd >/dev/null; then
        rm -f "$workdir/virtlogd.pid"
        LIBVIRT_LOG_OUTPUTS="3:file:$lv_log" virtlogd -d -p "$workdir/virtlogd.pid" 2>>"$lv_log" ||
            fail "virtlogd -d failed" "$lv_log"
        echo "virtlogd $(cat "$workdir/virtlogd.pid")" >>"$daemons"
    fi
    rm -f "$workdir/libvirtd.pid"
    LIBVIRT_LOG_OUTPUTS="3:file:$lv_log" libvirtd -d -p "$workdir/libvirtd.pid" 2>>"$lv_log" ||
        fail "libvirtd -d failed" "$lv_log"
    echo "libvirtd $(cat "$workdir/libvirtd.pid")" >>"$daemons"
    deadline=$((SECONDS + 30))
    until "${virsh[@]}" version >/dev/null 2>&1; do
        ((SECONDS < deadline)) || fail "libvirtd started but $URI does not answer within 30 s" "$lv_log"
        sleep 0.2
    done
fi
version=$("${virsh[@]}" version 2>&1) || {
    if grep -q "no connection driver" <<<"$version"; then
        missing "the QEMU driver of libvirt (package libvirt-daemon-driver-qemu): $version"
    fi
    fail "virsh -c $URI version: $version" "$lv_log"
}

pool_log=$workdir/pool.log
if ! "${virsh[@]}" pool-info default >/dev/null 2>&1; then
    started=1
    mkdir -p "$workdir/pool"
    {
        "${virsh[@]}" pool-define-as default dir --target "$workdir/pool" &&
            echo "$workdir/pool" >"$workdir/pool-created" &&
            "${virsh[@]}" pool-start default
    } >"$pool_log" 2>&1 || fail "could not create the storage pool 'default' in $workdir/pool" "$pool_log"
elif ! [[ $("${virsh[@]}" pool-info default 2>/dev/null) =~ State:[[:space:]]+running ]]; then
    "${virsh[@]}" pool-start default >"$pool_log" 2>&1 || fail "could not start the storage pool 'default'" "$pool_log"
fi
pool_path=$("${virsh[@]}" pool-dumpxml default |
    "$py" -c 'import sys, xml.etree.ElementTree as ET
p = ET.fromstring(sys.stdin.read()).find("target/path")
print(p.text if p is not None else "")')
[[ -n $pool_path && -d $pool_path ]] || fail "storage pool 'default' has no usable target path ('$pool_path')"

# --- 4. the plan ----------------------------------------------------------
plan_err=$workdir/plan.log
plan=$("$py" "$here/rack.py" plan "$workdir" "$spec" "$pool_path" "$accel" 2>"$plan_err") || {
    cat "$plan_err" >&2
    fail "bad spec $spec"
}
mapfile -t lines <<<"$plan"
names=() uuids=() ips=() ports=() users=() passwords=()
for line in "${lines[@]}"; do
    IFS=$'\t' read -r name domain uuid ip port disk gib user pass <<<"$line"
    names+=("$name") uuids+=("$uuid") ips+=("$ip") ports+=("$port") users+=("$user") passwords+=("$pass")
    if "${virsh[@]}" dominfo "$domain" >/dev/null 2>&1; then
        fail "domain $domain already exists (another rack with prefix ${domain%-"$name"}?); down.sh its WORKDIR, or: virsh -c $URI undefine --nvram $domain"
    fi
    if curl -ks -o /dev/null --max-time 2 "https://$ip:$port/"; then
        fail "something already answers on https://$ip:$port"
    fi
done

# --- 5. the domains -------------------------------------------------------
started=1
dom_log=$workdir/define.log
: >"$dom_log"
for i in "${!names[@]}"; do
    IFS=$'\t' read -r name domain uuid ip port disk gib _ <<<"${lines[$i]}"
    vol=$(basename "$disk")
    if "${virsh[@]}" vol-info --pool default "$vol" >/dev/null 2>&1; then
        "${virsh[@]}" vol-delete --pool default "$vol" >>"$dom_log" 2>&1 || true
    fi
    "${virsh[@]}" vol-create-as default "$vol" "${gib}G" --format qcow2 >>"$dom_log" 2>&1 ||
        fail "could not create volume $vol in pool default" "$dom_log"
    cp /usr/share/OVMF/OVMF_VARS_4M.fd "$workdir/nvram/${domain}_VARS.nosecboot.fd"
    : >"$workdir/$name-serial.log"
    "${virsh[@]}" define --validate "$workdir/$name.xml" >>"$dom_log" 2>&1 ||
        fail "could not define domain $domain from $workdir/$name.xml" "$dom_log"
done

# --- 6. the BMCs ----------------------------------------------------------
for i in "${!names[@]}"; do
    name=${names[$i]} ip=${ips[$i]}
    d=$workdir/bmc-$name
    rm -rf "$d/state" "$d/tmp" "$d/emulator.log" "$d/emulator.pid"
    mkdir -p "$d/state" "$d/tmp"
    # Self-signed EC P-256, SAN IP; reused if present (same fingerprint).
    if [[ ! -s $d/cert.pem || ! -s $d/key.pem ]]; then
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -keyout "$d/key.pem" -out "$d/cert.pem" -days 365 -subj "/CN=kiln-vmrack-$name" \
            -addext "subjectAltName=IP:$ip,DNS:localhost" >"$d/openssl.log" 2>&1 ||
            fail "openssl could not make a certificate for $name" "$d/openssl.log"
    fi
    echo "sha256:$(openssl x509 -in "$d/cert.pem" -noout -fingerprint -sha256 | sed 's/^.*=//')" >"$d/fingerprint"
    # bcrypt cost 4: the emulator checks the password on every request.
    "$py" -c 'import bcrypt, sys
print("%s:%s" % (sys.argv[1], bcrypt.hashpw(sys.argv[2].encode(), bcrypt.gensalt(rounds=4)).decode()))' \
        "${users[$i]}" "${passwords[$i]}" >"$d/htpasswd"
    (cd "$d" && TMPDIR=$d/tmp exec setsid "$venv/bin/sushy-emulator" \
        --config "$d/emulator.conf" >"$d/emulator.log" 2>&1 </dev/null) &
    echo "$!" >"$d/emulator.pid"
done

deadline=$((SECONDS + 60))
for i in "${!names[@]}"; do
    name=${names[$i]} url="https://${ips[$i]}:${ports[$i]}" d=$workdir/bmc-${names[$i]}
    pid=$(cat "$d/emulator.pid")
    until curl -ks -o /dev/null --max-time 2 "$url/redfish/v1/"; do
        kill -0 "$pid" 2>/dev/null || fail "the BMC of $name exited before answering on $url" "$d/emulator.log"
        ((SECONDS < deadline)) || fail "the BMC of $name does not answer on $url/redfish/v1/ within 60 s" "$d/emulator.log"
        sleep 0.2
    done
done
# Each BMC must see its domain through libvirt (first request loads the driver).
for i in "${!names[@]}"; do
    name=${names[$i]} url="https://${ips[$i]}:${ports[$i]}" d=$workdir/bmc-${names[$i]}
    body=$(curl -sS --max-time 20 --cacert "$d/cert.pem" -u "${users[$i]}:${passwords[$i]}" \
        -w '\n%{http_code}' "$url/redfish/v1/Systems/${uuids[$i]}" 2>&1) || true
    code=${body##*$'\n'}
    if [[ $code != 200 ]] || ! grep -q '"PowerState": "Off"' <<<"$body"; then
        echo "GET $url/redfish/v1/Systems/${uuids[$i]} -> ${body:0:2000}" >>"$d/emulator.log"
        fail "the BMC of $name does not serve its powered-off system (HTTP $code)" "$d/emulator.log"
    fi
done

"$py" "$here/rack.py" output "$workdir"
