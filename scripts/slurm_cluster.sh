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
# TK_SLURM_NODES=N (N > 1) starts N virtual nodes n1..nN on this machine instead (one slurmd each, `slurmd -N`,
# own port, NodeAddr 127.0.0.1, the CPUs shared out), so multi-node jobs run for real on one machine.
# Every node also has TK_SLURM_GPUS (default 8) stand-in GPUs, GRES `gpu`, so jobs asking --gpus-per-node=N
# schedule as on a GPU cluster and their ranks fall back to CPU (gloo). Their gres.conf "device files" are empty
# placeholder files under $TK_SLURM_DIR/gpus: slurmd 22.05 drops GPUs without File= ("Removing file-less GPU"),
# and with task/none nothing opens or fences them; SLURM still sets CUDA_VISIBLE_DEVICES for each job.
set -euo pipefail

STATE="${TK_SLURM_DIR:-/tmp/tk-slurm}"
NODES="${TK_SLURM_NODES:-1}"
if ! [[ "$NODES" =~ ^[1-9][0-9]*$ ]]; then
  echo "slurm_cluster: TK_SLURM_NODES must be a whole number of nodes, 1 or more (got '$NODES'). For example: TK_SLURM_NODES=2" >&2
  exit 2
fi
GPUS="${TK_SLURM_GPUS:-8}"
if ! [[ "$GPUS" =~ ^[0-9]+$ ]]; then
  echo "slurm_cluster: TK_SLURM_GPUS must be a whole number of GPUs per node, 0 or more (got '$GPUS'). For example: TK_SLURM_GPUS=8" >&2
  exit 2
fi
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
  # Free ports (slurmctld, then one per slurmd), so a cluster left over elsewhere on this machine cannot collide.
  local ports
  ports="$(python3 -c 'import socket, sys
s = [socket.socket() for _ in range(int(sys.argv[1]) + 1)]
for x in s: x.bind(("127.0.0.1", 0))
print(*[x.getsockname()[1] for x in s])' "$NODES")"
  read -r -a ports <<<"$ports"
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
SlurmctldPort=${ports[0]}
SlurmdPort=${ports[1]}
StateSaveLocation=$STATE/state
SlurmdSpoolDir=$STATE/spool/slurmd-%n
SlurmctldPidFile=$STATE/pids/slurmctld.pid
SlurmdPidFile=$STATE/pids/slurmd-%n.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
GresTypes=gpu
EOF
  local gres=""
  (( GPUS > 0 )) && gres=" Gres=gpu:$GPUS"
  if (( NODES == 1 )); then
    echo "NodeName=$host CPUs=$cpus RealMemory=$mem$gres State=UNKNOWN" >>"$CONF.tmp"
    echo "$host" >"$STATE/nodes"
  else
    local i per_cpu=$(( cpus / NODES > 1 ? cpus / NODES : 1 )) per_mem=$(( mem / NODES ))
    : >"$STATE/nodes"
    for (( i = 1; i <= NODES; i++ )); do
      echo "NodeName=n$i NodeHostname=$host NodeAddr=127.0.0.1 Port=${ports[i]} CPUs=$per_cpu RealMemory=$per_mem$gres State=UNKNOWN" >>"$CONF.tmp"
      echo "n$i" >>"$STATE/nodes"
    done
  fi
  echo "PartitionName=debug Nodes=$(paste -sd, "$STATE/nodes") Default=YES MaxTime=INFINITE State=UP" >>"$CONF.tmp"
  : >"$STATE/gres.conf.tmp"
  if (( GPUS > 0 )); then  # placeholders, not devices: the ranks run on CPU
    local n g
    for n in $(node_names); do
      mkdir -p "$STATE/gpus/$n"
      for (( g = 0; g < GPUS; g++ )); do : >"$STATE/gpus/$n/gpu$g"; done
      echo "NodeName=$n Name=gpu File=$STATE/gpus/$n/gpu[0-$(( GPUS - 1 ))]" >>"$STATE/gres.conf.tmp"
    done
  fi
  mv "$STATE/gres.conf.tmp" "$STATE/gres.conf"  # next to slurm.conf, where the daemons read it
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

node_names() { cat "$STATE/nodes" 2>/dev/null || true; }

slurmds_alive() {  # every node's slurmd runs
  local n found=0
  for n in $(node_names); do alive "slurmd-$n" || return 1; found=1; done
  (( found ))
}

wait_idle() {  # every node idle (a node down from an earlier life is resumed)
  local node state busy
  for _ in $(seq 120); do
    busy=0
    while read -r node state; do
      case "$state" in
        idle|mix|alloc) ;;
        down*|drain*|fail*) busy=1; scontrol update NodeName="$node" State=RESUME >/dev/null 2>&1 || true ;;
        *) busy=1 ;;
      esac
    done < <(sinfo -h -N -o '%N %t' 2>/dev/null || echo "none none")
    (( busy == 0 )) && return 0
    sleep 0.5
  done
  log "nodes not idle after 60s ($(sinfo -h -N -o '%N %t' 2>/dev/null | paste -sd' ')); logs in $STATE/log"
  return 1
}

start() {
  install
  if alive slurmctld && slurmds_alive && alive munged; then
    wait_idle
  else
    stop_daemons quiet
    write_conf
    start_munge
    wait_pidfile munged
    slurmctld -f "$CONF"
    wait_pidfile slurmctld
    local n
    for n in $(node_names); do
      if (( NODES == 1 )); then slurmd -f "$CONF"; else slurmd -f "$CONF" -N "$n"; fi
      wait_pidfile "slurmd-$n"
    done
    wait_idle
  fi
  log "cluster tkci is up ($(sinfo -h -N -o '%N %t %c CPUs %m MB' | paste -sd, -))"
  echo "export SLURM_CONF=$CONF"
}

stop_daemons() {
  local name pid
  for name in $(for n in $(node_names); do echo "slurmd-$n"; done) slurmctld munged; do
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
  for name in munged slurmctld $(for n in $(node_names); do echo "slurmd-$n"; done); do
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
