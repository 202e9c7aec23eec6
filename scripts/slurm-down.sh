#!/usr/bin/env bash
# Stop the test cluster of slurm-up.sh: cancel its jobs, stop every daemon by the pid in its
# pid file, kill the job step daemons that cluster started, remove the cgroups it created.
# Exits non-zero if a process or a cgroup directory of the cluster is left behind.
set -uo pipefail

D=${PRESIZE_SLURM_DIR:-/tmp/presize-slurm}
export SLURM_CONF="$D/etc/slurm.conf"
log() { echo "slurm-down: $*" >&2; }
[ -d "$D" ] || { log "nothing to do ($D does not exist)"; exit 0; }

alive_pid() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }
pid_of() { [ -s "$D/run/$1.pid" ] && cat "$D/run/$1.pid"; }

# The cgroup directories this cluster created (not ones that existed before it started).
our_cgroups() {
  local cg
  for cg in /sys/fs/cgroup/*/slurm*; do
    [ -d "$cg" ] || continue
    grep -qx "$cg" "$D/run/cgroups-before" 2>/dev/null && continue
    echo "$cg"
  done
}

# Processes of this cluster left behind: step daemons (`slurmstepd` whose environment names
# this cluster's config) and every task still in one of this cluster's cgroups. Nothing
# else: other processes that merely have SLURM_CONF set (the shell running the tests) are
# not ours to kill.
ours() {
  local p pid cg
  {
    for p in /proc/[0-9]*; do
      pid=${p#/proc/}
      [ "$(cat "$p/comm" 2>/dev/null)" = slurmstepd ] || continue
      tr '\0' '\n' < "$p/environ" 2>/dev/null | grep -qx "SLURM_CONF=$SLURM_CONF" && echo "$pid"
    done
    for cg in $(our_cgroups); do
      find "$cg" -name tasks -exec cat {} + 2>/dev/null
    done
  } 2>/dev/null | sort -un | grep -vx -e "$$" -e "$BASHPID" || true
}

# 1. Cancel the jobs while the controller still runs.
if alive_pid "$(pid_of slurmctld)"; then
  jobs=$(timeout 10 squeue -h -o %i 2>/dev/null || true)
  if [ -n "$jobs" ]; then
    log "cancelling jobs: $(echo $jobs)"
    # shellcheck disable=SC2086
    timeout 10 scancel $jobs 2>/dev/null || true
    for _ in $(seq 50); do
      [ -z "$(timeout 5 squeue -h -o %i 2>/dev/null)" ] && break
      sleep 0.2
    done
  fi
fi

# 2. Daemons, newest first, by pid: TERM, then KILL after 10 s.
stop() {
  local name=$1 pid
  pid=$(pid_of "$name") || return 0
  alive_pid "$pid" || { rm -f "$D/run/$name.pid"; return 0; }
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 50); do alive_pid "$pid" || break; sleep 0.2; done
  alive_pid "$pid" && { log "$name ($pid) ignored TERM; killing"; kill -KILL "$pid" 2>/dev/null; sleep 0.2; }
  rm -f "$D/run/$name.pid"
  log "stopped $name ($pid)"
}
stop slurmd
stop slurmctld
stop slurmdbd
stop mariadbd
stop munged

# 3. Anything left that carries this cluster's config (slurmstepd, job processes), by pid.
left=$(ours)
if [ -n "$left" ]; then
  log "killing leftover processes: $(echo $left)"
  # shellcheck disable=SC2086
  kill -KILL $left 2>/dev/null
  sleep 0.5
fi

# 4. Cgroups: the `slurm*` directories this cluster created, deepest first.
for cg in $(our_cgroups); do
  find "$cg" -depth -type d -exec rmdir {} \; 2>/dev/null
done

status=0
left=$(ours)
if [ -n "$left" ]; then log "still running: $left"; status=1; fi
for cg in $(our_cgroups); do
  log "cgroup left: $cg"; status=1
done
[ $status = 0 ] && rm -f "$D/run/cgroups-before" && log "cluster stopped; state kept in $D (remove it for a clean start)"
exit $status
