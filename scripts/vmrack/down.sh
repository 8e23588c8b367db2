#!/usr/bin/env bash
# Stops and removes what scripts/vmrack/up.sh started in WORKDIR:
#
#   scripts/vmrack/down.sh WORKDIR
#
#  1. the BMCs (sushy-emulator): SIGTERM, SIGKILL after 5 s, only the pid in
#     WORKDIR/bmc-NAME/emulator.pid and only if it still runs that config
#     (tests/interop/sushy/stop.sh does it);
#  2. the domains: destroy, undefine --nvram; their disk volumes and the
#     volumes sushy-tools uploaded for them into pool "default"
#     (*-UUID.img, e.g. deploy-iso-UUID.img); if libvirt does not answer, a
#     QEMU process still running one of the domains is killed by pid;
#  3. the pool "default", if up.sh created it and it is now empty;
#  4. libvirtd and virtlogd, if up.sh started them (WORKDIR/daemons) and no
#     other domain is defined.
# Idempotent: whatever is already gone is skipped; exit 0 unless something
# could not be stopped. WORKDIR itself (logs, serial logs) is kept.
set -uo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 WORKDIR" >&2
    exit 1
fi
[[ -d $1 ]] || exit 0
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
workdir=$(cd "$1" && pwd)
URI=qemu:///system
virsh=(virsh -q -c "$URI")
status=0

warn() { echo "vmrack down.sh: $*" >&2; }

# Running, i.e. neither gone nor a zombie (PID 1 here does not reap).
running() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat%% *} != Z ]]
}
# stop_pid PID COMM: SIGTERM, then SIGKILL after 10 s, if PID still is COMM.
stop_pid() {
    local pid=$1 comm=$2
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$comm" ]] || return 0
    running "$pid" || return 0
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 100); do
        running "$pid" || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null
    for _ in $(seq 30); do
        running "$pid" || return 0
        sleep 0.1
    done
    warn "$comm (pid $pid) did not exit"
    status=1
}

libvirt_up() { command -v virsh >/dev/null && "${virsh[@]}" version >/dev/null 2>&1; }

# --- 1. the BMCs ------------------------------------------------------------
for d in "$workdir"/bmc-*/; do
    [[ -d $d ]] || continue
    "$root/tests/interop/sushy/stop.sh" "${d%/}" || status=1
done

# --- 2. the domains and their volumes -----------------------------------------
domains=() uuids=() disks=()
if [[ -f $workdir/rack.json ]]; then
    mapfile -t domains < <(python3 "$here/rack.py" field "$workdir" domain)
    mapfile -t uuids < <(python3 "$here/rack.py" field "$workdir" uuid)
    mapfile -t disks < <(python3 "$here/rack.py" field "$workdir" disk)
fi
if ((${#domains[@]})); then
    if libvirt_up; then
        for dom in "${domains[@]}"; do
            "${virsh[@]}" dominfo "$dom" >/dev/null 2>&1 || continue
            if [[ $("${virsh[@]}" domstate "$dom" 2>/dev/null) != "shut off" ]]; then
                "${virsh[@]}" destroy "$dom" >/dev/null 2>&1 || true
            fi
            out=$("${virsh[@]}" undefine --nvram "$dom" 2>&1) || {
                warn "virsh undefine --nvram $dom: $out"
                status=1
            }
        done
        if "${virsh[@]}" pool-info default >/dev/null 2>&1; then
            "${virsh[@]}" pool-refresh default >/dev/null 2>&1 || true
            while read -r vol path; do
                [[ -n $vol ]] || continue
                ours=0
                for u in "${uuids[@]}"; do
                    [[ $vol == *-"$u".img ]] && ours=1
                done
                for p in "${disks[@]}"; do
                    [[ $path == "$p" ]] && ours=1
                done
                ((ours)) || continue
                out=$("${virsh[@]}" vol-delete --pool default "$vol" 2>&1) || {
                    warn "virsh vol-delete --pool default $vol: $out"
                    status=1
                }
            done < <("${virsh[@]}" vol-list default 2>/dev/null)
        fi
    else
        # No libvirt: a QEMU that still runs one of our domains is an orphan.
        for pid in $(pgrep -f '^/usr/bin/qemu-system-x86_64 ' 2>/dev/null); do
            cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || continue
            for u in "${uuids[@]}"; do
                [[ $cmd == *"-uuid $u "* ]] && stop_pid "$pid" qemu-system-x86
            done
        done
    fi
    # Disks left in a directory without libvirt (pool already gone).
    for p in "${disks[@]}"; do
        [[ $p == "$workdir"/* ]] && rm -f "$p"
    done
    for u in "${uuids[@]}"; do
        [[ -f $workdir/pool-created ]] && rm -f "$(cat "$workdir/pool-created")"/*-"$u".img
    done
fi

# --- 3. the pool, if ours and empty ----------------------------------------
if [[ -f $workdir/pool-created ]]; then
    if libvirt_up && "${virsh[@]}" pool-info default >/dev/null 2>&1; then
        target=$("${virsh[@]}" pool-dumpxml default 2>/dev/null | sed -n 's|.*<path>\(.*\)</path>.*|\1|p' | head -1)
        if [[ $target == "$(cat "$workdir/pool-created")" ]]; then
            "${virsh[@]}" pool-refresh default >/dev/null 2>&1 || true
            vols=$("${virsh[@]}" vol-list default 2>&1) || vols="? $vols"
            if [[ -z ${vols//[[:space:]]/} ]]; then
                "${virsh[@]}" pool-destroy default >/dev/null 2>&1 || true
                "${virsh[@]}" pool-undefine default >/dev/null 2>&1 || true
                rm -f "$workdir/pool-created"
            else
                warn "pool 'default' in $target still has volumes of others; left as it is"
            fi
        else
            rm -f "$workdir/pool-created"
        fi
    elif ! libvirt_up && [[ -f $workdir/daemons ]]; then
        : # our libvirtd is gone, and with it the (non-persistent-running) pool
    else
        rm -f "$workdir/pool-created"
    fi
fi

# --- 4. the daemons, if ours ------------------------------------------------
if [[ -s $workdir/daemons ]]; then
    others=
    if libvirt_up; then
        others=$("${virsh[@]}" list --all --name 2>/dev/null | tr -s '[:space:]' ' ')
    fi
    if [[ -n ${others// /} ]]; then
        warn "libvirtd (started by up.sh) keeps running: other domains are defined ($others)"
    else
        # libvirtd first (it holds virtlogd's sockets), then virtlogd.
        for comm in libvirtd virtlogd; do
            pid=$(awk -v c="$comm" '$1 == c { print $2 }' "$workdir/daemons" | tail -1)
            [[ -n $pid ]] && stop_pid "$pid" "$comm"
        done
        ((status)) || rm -f "$workdir/daemons" "$workdir/pool-created"
    fi
fi
exit "$status"
