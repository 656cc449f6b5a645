#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, for trying the slurm profile and for CI.
#   scripts/slurm-cluster.sh start   install (Debian's slurmctld, slurmd, slurm-client, munge) if
#                                    needed, configure this host as the one node, start the daemons
#   scripts/slurm-cluster.sh stop    cancel running jobs, stop every daemon this script started
#                                    (by the pid it recorded), leaving no process behind
#   scripts/slurm-cluster.sh status  sinfo and the pids of the daemons it started
# Needs root: it writes /etc/slurm/slurm.conf (refusing to overwrite one it did not write) and runs
# slurmctld and slurmd as root. A munged that already works (a system service) is reused and left
# running. No accounting database: Snakemake's plugin must poll squeue
# (`--slurm-status-command squeue --slurm-no-account`).
set -euo pipefail

STATE=${REPROPIPE_SLURM_STATE:-/var/lib/repropipe-slurm}
CONF=/etc/slurm/slurm.conf
MARK="# written by repropipe scripts/slurm-cluster.sh"
MUNGE_SOCKET=/run/munge/munge.socket.2
MUNGE_PID=/run/munge/munged.pid

log() { echo "slurm-cluster: $*" >&2; }
need_root() { [ "$(id -u)" = 0 ] || { log "must run as root"; exit 1; }; }

install() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
     && command -v munged >/dev/null; then
    return
  fi
  command -v apt-get >/dev/null || { log "slurm and munge are missing and apt-get is not available"; exit 1; }
  log "installing slurmctld slurmd slurm-client munge (Debian packages)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    slurmctld slurmd slurm-client munge >/dev/null
}

configure() {
  local host cpus mem
  host=$(hostname -s)
  cpus=$(nproc)
  mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
  [ "$mem" -gt 500 ] || mem=500
  if [ -s "$CONF" ] && ! head -n 1 "$CONF" | grep -qF "$MARK"; then
    log "$CONF exists and was not written by this script; not touching a real cluster's configuration"
    exit 1
  fi
  mkdir -p /etc/slurm "$STATE/ctld" "$STATE/d" "$STATE/log"
  # NodeAddr/SlurmctldHost addresses: the loopback, so nothing depends on DNS for this host name.
  cat > "$CONF" <<CONF
${MARK}: one node (this host), no accounting
ClusterName=repropipe
SlurmctldHost=${host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SlurmctldPidFile=${STATE}/slurmctld.pid
SlurmdPidFile=${STATE}/slurmd.pid
StateSaveLocation=${STATE}/ctld
SlurmdSpoolDir=${STATE}/d
SlurmctldLogFile=${STATE}/log/slurmctld.log
SlurmdLogFile=${STATE}/log/slurmd.log
# finished jobs stay visible to squeue (the plugin's status poll) for this many seconds
MinJobAge=600
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName=${host} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=${mem} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
}

munge_works() { munge -n --socket="$MUNGE_SOCKET" 2>/dev/null | unmunge --socket="$MUNGE_SOCKET" >/dev/null 2>&1; }

alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

start_munge() {
  if munge_works; then
    log "reusing the munged already running"
    return
  fi
  # Debian's package creates the munge user and its key; munged runs as that user.
  mkdir -p /run/munge /var/lib/munge /var/log/munge /etc/munge
  [ -s /etc/munge/munge.key ] || dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
  chown munge:munge /run/munge /var/lib/munge /var/log/munge /etc/munge /etc/munge/munge.key
  chmod 0700 /etc/munge; chmod 0400 /etc/munge/munge.key; chmod 0755 /run/munge
  runuser -u munge -- munged --pid-file="$MUNGE_PID" --socket="$MUNGE_SOCKET"
  cp "$MUNGE_PID" "$STATE/munged.pid"  # ours to stop
  for _ in $(seq 1 40); do munge_works && return; sleep 0.25; done
  log "munged did not answer"; exit 1
}

start() {
  need_root; install; configure
  start_munge
  alive "$STATE/slurmctld.pid" || slurmctld -c
  alive "$STATE/slurmd.pid" || slurmd -c
  for _ in $(seq 1 120); do
    if sinfo -h -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
      log "up ($(sinfo -h -o '%N %c CPUs %m MB %T'))"
      return 0
    fi
    sleep 0.5
  done
  log "the node did not come up; logs:"
  tail -n 20 "$STATE/log/slurmctld.log" "$STATE/log/slurmd.log" >&2 || true
  exit 1
}

# Wait up to $2 quarter-seconds for the pid in file $1 to exit; SIGKILL it after that.
stop_pid() {
  local file=$1 pid
  [ -s "$file" ] || return 0
  pid=$(cat "$file")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 "$2"); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    if kill -0 "$pid" 2>/dev/null; then
      log "pid $pid ($(basename "$file" .pid)) ignored SIGTERM; killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$file"
}

stop() {
  need_root
  # Jobs first: slurmd's step daemons (slurmstepd) exit once their jobs end.
  if alive "$STATE/slurmctld.pid"; then
    scancel --state=PENDING 2>/dev/null || true
    squeue -h -t running,completing,suspended -o %i 2>/dev/null | xargs -r scancel 2>/dev/null || true
    for _ in $(seq 1 40); do
      [ -z "$(squeue -h -t running,completing,suspended -o %i 2>/dev/null)" ] && break
      sleep 0.25
    done
  fi
  stop_pid "$STATE/slurmd.pid" 40
  stop_pid "$STATE/slurmctld.pid" 40
  stop_pid "$STATE/munged.pid" 40
  log "stopped"
}

status() {
  sinfo || true
  for d in slurmctld slurmd munged; do
    if alive "$STATE/$d.pid"; then echo "$d pid $(cat "$STATE/$d.pid")"; else echo "$d not running (not started here)"; fi
  done
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
