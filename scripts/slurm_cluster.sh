#!/usr/bin/env bash
# A real one-node SLURM cluster on this machine, for tests and CI (root, Debian).
#
#   scripts/slurm_cluster.sh start    # install slurmctld/slurmd/munge if missing, configure, start, wait for idle
#   scripts/slurm_cluster.sh status   # daemons and sinfo
#   scripts/slurm_cluster.sh stop     # stop exactly the daemons this script started (by their recorded PIDs)
#
# Everything lives under $TK_SLURM_DIR (default /tmp/tk-slurm): slurm.conf, munge key and socket, state,
# spool, logs, PID files. `start` prints the line to use:  export SLURM_CONF=/tmp/tk-slurm/slurm.conf
# Idempotent: `start` on a running cluster only waits for it; `stop` on a stopped one does nothing.
set -euo pipefail

STATE="${TK_SLURM_DIR:-/tmp/tk-slurm}"
CONF="$STATE/slurm.conf"
MUNGE_SOCKET="$STATE/munge/munge.socket.2"
export SLURM_CONF="$CONF"

log() { echo "slurm_cluster: $*" >&2; }

alive() {  # alive NAME: the PID recorded for NAME runs
  local f="$STATE/pids/$1.pid"
  [[ -s "$f" ]] && kill -0 "$(cat "$f")" 2>/dev/null
}

install() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null \
     && command -v sbatch >/dev/null; then
    return
  fi
  log "installing slurmctld slurmd munge (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
}

write_conf() {
  local host cpus mem
  host="$(hostname -s)"
  cpus="$(nproc --all)"
  mem="$(free -m | awk '/^Mem:/ {print $2}')"
  mem=$(( mem - (mem / 10 > 1024 ? mem / 10 : 1024) ))  # leave the OS 10% (at least 1 GiB)
  (( mem < 512 )) && mem=512
  # Two free ports, so a cluster left over elsewhere on this machine (another state dir) cannot collide.
  local ports
  ports="$(python3 -c 'import socket
s = [socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.0.1", 0))
print(*[x.getsockname()[1] for x in s])')"
  mkdir -p "$STATE"/{state,spool,log,pids,munge}
  cat >"$CONF.tmp" <<EOF
# Written by scripts/slurm_cluster.sh: a one-node test cluster.
ClusterName=tkci
SlurmctldHost=$host
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
SlurmUser=root
SlurmdUser=root
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
PreemptType=preempt/none
MaxArraySize=1001
MinJobAge=300
ReturnToService=2
KillWait=30
SlurmctldPort=${ports% *}
SlurmdPort=${ports#* }
StateSaveLocation=$STATE/state
SlurmdSpoolDir=$STATE/spool/slurmd-%n
SlurmctldPidFile=$STATE/pids/slurmctld.pid
SlurmdPidFile=$STATE/pids/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
  mv "$CONF.tmp" "$CONF"
}

start_munge() {
  alive munged && return
  if [[ ! -s "$STATE/munge/munge.key" ]]; then
    dd if=/dev/urandom of="$STATE/munge/munge.key" bs=1 count=1024 status=none
  fi
  chmod 700 "$STATE/munge"
  chmod 400 "$STATE/munge/munge.key"
  rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock"
  munged --force --socket="$MUNGE_SOCKET" --key-file="$STATE/munge/munge.key" \
    --pid-file="$STATE/pids/munged.pid" --log-file="$STATE/log/munged.log" --seed-file="$STATE/munge/munge.seed"
  for _ in $(seq 50); do [[ -S "$MUNGE_SOCKET" ]] && break; sleep 0.1; done
}

wait_pidfile() {  # wait_pidfile NAME: the daemon wrote its PID file and runs
  for _ in $(seq 100); do alive "$1" && return 0; sleep 0.1; done
  log "$1 did not start; see $STATE/log/$1.log"; tail -n 20 "$STATE/log/$1.log" >&2 || true
  return 1
}

wait_idle() {
  local state=""
  for _ in $(seq 120); do
    state="$(sinfo -h -N -o '%t' 2>/dev/null | head -n1 || true)"
    case "$state" in
      idle|mix|alloc) return 0 ;;
      down*|drain*|fail*) scontrol update NodeName="$(hostname -s)" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    sleep 0.5
  done
  log "node not idle after 60s (state: '${state:-none}'); logs in $STATE/log"
  return 1
}

start() {
  install
  if alive slurmctld && alive slurmd && alive munged; then
    wait_idle
  else
    stop_daemons quiet
    write_conf
    start_munge
    wait_pidfile munged
    slurmctld -f "$CONF"
    wait_pidfile slurmctld
    slurmd -f "$CONF"
    wait_pidfile slurmd
    wait_idle
  fi
  log "cluster tkci is up ($(sinfo -h -N -o '%N %t %c CPUs %m MB' | head -n1))"
  echo "export SLURM_CONF=$CONF"
}

stop_daemons() {
  local name pid
  for name in slurmd slurmctld munged; do
    local f="$STATE/pids/$name.pid"
    [[ -s "$f" ]] || continue
    pid="$(cat "$f")"
    if kill -0 "$pid" 2>/dev/null; then
      [[ "${1:-}" == quiet ]] || log "stopping $name (pid $pid)"
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$f"
  done
}

status() {
  local name rc=0
  for name in munged slurmctld slurmd; do
    if alive "$name"; then echo "$name: running (pid $(cat "$STATE/pids/$name.pid"))"; else echo "$name: stopped"; rc=1; fi
  done
  if (( rc == 0 )); then sinfo; squeue; echo "export SLURM_CONF=$CONF"; fi
  return $rc
}

case "${1:-}" in
  start) start ;;
  stop) stop_daemons; log "stopped" ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
