#!/usr/bin/env bash
# Starts a throw-away Slurm controller for kiln's handoff tests, all under
# DIR: munged on its own socket, slurmctld (and slurmrestd with JWT auth
# when it runs) on the loopback address ADDR, with fake compute nodes that
# no slurmd backs (they start DOWN, which is what a new rack looks like).
#   tests/interop/slurm-up.sh DIR ADDR PORT NODE...
# Prints `ready` when scontrol answers. Stop with: kill $(cat DIR/*.pid)
set -euo pipefail
dir=$1 addr=$2 port=$3; shift 3
nodes=("$@")
user=$(id -un)
mkdir -p "$dir"/{munge,spool,state,log}
chmod 700 "$dir/munge"
dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$dir/munge/munge.key"
munged --force --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.sock" \
    --pid-file="$dir/munged.pid" --log-file="$dir/log/munged.log" \
    --seed-file="$dir/munge/munged.seed"

# JWT key for slurmrestd's token auth.
dd if=/dev/urandom of="$dir/state/jwt.key" bs=32 count=1 status=none
chmod 600 "$dir/state/jwt.key"

{
    echo "ClusterName=kilntest"
    echo "SlurmctldHost=localhost($addr)"
    echo "SlurmctldPort=$port"
    echo "SlurmdPort=$((port + 1))"
    echo "SlurmUser=$user"
    echo "SlurmdUser=$user"
    echo "AuthType=auth/munge"
    echo "AuthInfo=socket=$dir/munge/munge.sock"
    echo "AuthAltTypes=auth/jwt"
    echo "AuthAltParameters=jwt_key=$dir/state/jwt.key"
    echo "CredType=cred/munge"
    echo "StateSaveLocation=$dir/state"
    echo "SlurmdSpoolDir=$dir/spool"
    echo "SlurmctldPidFile=$dir/slurmctld.pid"
    echo "SlurmctldLogFile=$dir/log/slurmctld.log"
    echo "SlurmctldDebug=info"
    echo "ProctrackType=proctrack/linuxproc"
    echo "TaskPlugin=task/none"
    echo "SchedulerType=sched/builtin"
    echo "SelectType=select/linear"
    echo "ReturnToService=0"
    # No slurmd answers for the fake nodes: never time them out.
    echo "SlurmdTimeout=0"
    echo "MpiDefault=none"
    echo "JobCompType=jobcomp/none"
    echo "AccountingStorageType=accounting_storage/none"
    echo "PluginDir=/usr/lib/x86_64-linux-gnu/slurm-wlm"
    i=0
    for n in "${nodes[@]}"; do
        i=$((i + 1))
        echo "NodeName=$n NodeAddr=127.85.7.$i CPUs=1 RealMemory=100 State=UNKNOWN"
    done
    echo "PartitionName=gpu Nodes=ALL Default=YES MaxTime=INFINITE State=UP"
} > "$dir/slurm.conf"
export SLURM_CONF="$dir/slurm.conf"
slurmctld -c -i -f "$dir/slurm.conf"
for _ in $(seq 1 100); do
    if scontrol ping >/dev/null 2>&1; then
        break
    fi
    sleep 0.1
done
scontrol ping >/dev/null
echo ready
