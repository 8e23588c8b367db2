#!/usr/bin/env bash
# Stops the sushy-emulator that start.sh started in WORKDIR:
#
#   tests/interop/sushy/stop.sh WORKDIR
#
# SIGTERM, then SIGKILL after 5 s. Only the pid in WORKDIR/emulator.pid, and
# only if that process still runs with WORKDIR/emulator.conf. Exit 0 when
# nothing was running.
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 WORKDIR" >&2
    exit 2
fi
[[ -d $1 ]] || exit 0
workdir=$(cd "$1" && pwd)
pidfile=$workdir/emulator.pid
[[ -f $pidfile ]] || exit 0
pid=$(cat "$pidfile")

ours() {
    [[ -r /proc/$pid/cmdline ]] &&
        tr '\0' '\n' <"/proc/$pid/cmdline" | grep -qxF "$workdir/emulator.conf"
}
# Running, i.e. neither gone nor a zombie waiting for its (new) parent.
running() {
    local stat
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat%% *} != Z ]]
}

if ours; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do
        running || break
        sleep 0.1
    done
    if running; then
        kill -KILL "$pid" 2>/dev/null || true
        for _ in $(seq 20); do
            running || break
            sleep 0.1
        done
    fi
    if running; then
        echo "sushy stop.sh: pid $pid did not exit" >&2
        exit 1
    fi
fi
rm -f "$pidfile"
