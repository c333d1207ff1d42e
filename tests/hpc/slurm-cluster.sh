#!/usr/bin/env bash
# A one-node SLURM cluster on localhost for the HPC tests (make test-hpc), entirely under DIR:
# its own munge key and socket, slurm.conf, state, spool and logs; nothing in /etc is used or
# changed, so it can run beside a real installation. Needs root (slurmd launches jobs).
#
#   slurm-cluster.sh start DIR    start munged, slurmctld and slurmd; wait until the node is idle;
#                                 print `export SLURM_CONF=...` for the caller to eval
#   slurm-cluster.sh stop DIR     stop the daemons started by `start`
#
# Two partitions share the node: `low` (PriorityTier 1) and `high` (PriorityTier 2); a job in
# `high` preempts one in `low` by requeueing it (PreemptMode=REQUEUE), as a cluster's
# preemptible partition does. Time limits are enforced at 1-minute resolution; OverTimeLimit=0.
set -euo pipefail
cmd=${1:?start|stop}; dir=$(realpath -m "${2:?directory}")
host=$(hostname -s)

stop() {
    for d in slurmd slurmctld munged; do
        if [ -f "$dir/$d.pid" ]; then kill "$(cat "$dir/$d.pid")" 2>/dev/null || true; fi
    done
    sleep 1
    for d in slurmd slurmctld munged; do
        if [ -f "$dir/$d.pid" ]; then kill -9 "$(cat "$dir/$d.pid")" 2>/dev/null || true; rm -f "$dir/$d.pid"; fi
    done
}

case "$cmd" in
stop) stop; exit 0 ;;
start) ;;
*) echo "slurm-cluster.sh: unknown command $cmd (start|stop)" >&2; exit 2 ;;
esac

command -v slurmctld >/dev/null || { echo "slurm-cluster.sh: slurmctld not found (apt-get install slurm-wlm munge)" >&2; exit 3; }
mkdir -p "$dir"/{state,spool,log}
chmod 755 "$dir"
# munge: a fresh key, a private socket.
dd if=/dev/urandom of="$dir/munge.key" bs=1 count=1024 status=none
chmod 400 "$dir/munge.key"
munged --force --key-file="$dir/munge.key" --socket="$dir/munge.sock" \
    --pid-file="$dir/munged.pid" --log-file="$dir/log/munged.log" --seed-file="$dir/munge.seed"

cpus=$(nproc)
mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
cat > "$dir/slurm.conf" <<CONF
ClusterName=ctpipe-test
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge.sock
SlurmctldPort=$(( 16817 + RANDOM % 1000 ))
SlurmdPort=$(( 17818 + RANDOM % 1000 ))
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
JobRequeue=1
OverTimeLimit=0
KillWait=30
MinJobAge=600
InactiveLimit=0
MessageTimeout=10
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=low Nodes=$host Default=YES MaxTime=INFINITE State=UP PriorityTier=1 PreemptMode=REQUEUE OverSubscribe=NO
PartitionName=high Nodes=$host MaxTime=INFINITE State=UP PriorityTier=2 PreemptMode=OFF OverSubscribe=NO
CONF
export SLURM_CONF=$dir/slurm.conf
slurmctld -c -f "$SLURM_CONF" -i
slurmd -f "$SLURM_CONF"
for _ in $(seq 1 60); do
    if sinfo -h -o '%t' 2>/dev/null | grep -E '^idle' >/dev/null; then
        echo "export SLURM_CONF=$SLURM_CONF"
        exit 0
    fi
    sleep 1
done
echo "slurm-cluster.sh: the node did not become idle in 60 s; logs in $dir/log" >&2
sinfo >&2 || true
tail -20 "$dir/log/slurmctld.log" "$dir/log/slurmd.log" >&2 || true
stop
exit 1
