#!/bin/sh
# PID 1 of the cgroup v2 VM built by scripts/cgroup-v2-vm.sh (busybox sh, Debian kernel).
# Sets up a pure cgroup v2 hierarchy the way systemd lays it out, runs the presize binary in
# it for each scenario, prints "VMRESULT <scenario> PASS|FAIL <detail>" lines, the presize
# output indented under them, and a final "CGROUP-V2-VM-RESULT passed=N failed=M" marker.
export PATH=/bin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs dev /dev
mount -t tmpfs -o mode=1777 tmp /tmp
mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup
CG=/sys/fs/cgroup

# A disk-backed file system for the page-cache scenario (the virtio drivers are modules).
for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk; do
  insmod "/modules/$m.ko" 2>/dev/null
done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
mkdir -p /mnt/disk
mount -t ext4 /dev/vda /mnt/disk || echo "vm: no /dev/vda: the page-cache scenario will fail"
chmod 1777 /mnt/disk 2>/dev/null

echo "vm: kernel $(uname -r), $(nproc) cpus, $(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo) MiB;" \
  "root controllers: $(cat $CG/cgroup.controllers); $(presize --version 2>&1 | head -n 1)"

# What systemd does at boot: controllers enabled down to the slices.
echo "+memory +pids +cpu" >$CG/cgroup.subtree_control
mkdir $CG/system.slice $CG/user.slice
echo "+memory +pids +cpu" >$CG/system.slice/cgroup.subtree_control
echo "+memory +pids +cpu" >$CG/user.slice/cgroup.subtree_control

PASSED=0
FAILED=0
# result NAME OK DETAIL: OK is 0 for pass.
result() {
  read -r up _ </proc/uptime
  if [ "$2" = 0 ]; then
    PASSED=$((PASSED + 1))
    echo "VMRESULT $1 PASS [guest uptime ${up}s] $3"
  else
    FAILED=$((FAILED + 1))
    echo "VMRESULT $1 FAIL [guest uptime ${up}s] $3"
  fi
}
# show FILE: a scenario's output, indented.
show() { sed 's/^/    | /' "$1"; }
# unit NAME: a service cgroup under system.slice, as systemd creates it for Delegate=yes.
unit() {
  mkdir "$CG/system.slice/$1"
  echo "$CG/system.slice/$1"
}
# in_cgroup DIR CMD...: run CMD as a process placed in DIR (like systemd's ExecStart=).
in_cgroup() {
  sh -c 'echo $$ >"$0/cgroup.procs" && exec "$@"' "$@"
}
# fresh NAME: per-scenario database, model dir and config (stdin), exported.
fresh() {
  mkdir -p "/tmp/$1"
  cat >"/tmp/$1/config.toml"
  export PRESIZE_DB="/tmp/$1/db" PRESIZE_MODEL_DIR="/tmp/$1/models" PRESIZE_CONFIG="/tmp/$1/config.toml"
}
# has FILE PATTERN...: every fixed string occurs in FILE.
has() {
  f=$1
  shift
  for p in "$@"; do grep -qF -- "$p" "$f" || { echo "    missing: $p"; return 1; }; done
}
# gone PID: the process no longer exists (or is a zombie waiting for PID 1).
gone() {
  [ ! -e "/proc/$1" ] && return 0
  read -r st <"/proc/$1/stat" 2>/dev/null || return 0
  case "${st##*) }" in Z* | X*) return 0 ;; esac
  return 1
}
# cgroup_of PID: its cgroup v2 path.
cgroup_of() { sed -n 's/^0:://p' "/proc/$1/cgroup" 2>/dev/null; }
# stats_has PATTERN...: `presize stats --json --by backend` on the scenario's database.
stats_has() {
  presize stats --json --by backend >/tmp/stats.json 2>&1 || { cat /tmp/stats.json; return 1; }
  has /tmp/stats.json "$@"
}

# --- 1. cap + OOM kill + escalation, presize alone in a delegated cgroup -----------------
fresh s1 <<'EOF'
[policy]
max_attempts = 2
escalation_factor = 2.0
EOF
d=$(unit s1.service)
in_cgroup "$d" presize run --memory-mb 50 --timeout 120 -- dd if=/dev/zero of=/dev/null bs=70M count=1 >/tmp/s1/out 2>&1
rc=$?
ok=1
has /tmp/s1/out "backend cgroup-v2" "attempt 1: oom_killed — peak 50.0 MB" "(cgroup-v2)" \
  "OOM-killed at 50 MB; retrying with" "attempt 2: ok" &&
  [ $rc = 0 ] && stats_has '"key": "cgroup-v2"' '"oom_killed": 1' '"ok": 1' '"predicted_cap_attempts": 1' && ok=0
result cap_oom_escalation $ok "exit $rc; 50 MB cap on a 70 MB dd: OOM-killed, retried under the engine's rule ($(grep -o 'retrying with [0-9]* MB' /tmp/s1/out)), ok; stats: backend cgroup-v2, 1 oom_killed + 1 ok row"
show /tmp/s1/out

# --- 2. timeout; a setsid escapee is removed through cgroup.kill ---------------------------
fresh s2 <<'EOF'
[policy]
grace_period_s = 1
EOF
d=$(unit s2.service)
in_cgroup "$d" presize run --memory-mb 100 --timeout 3 -- sh -c \
  'setsid sleep 1001 & e=$!; sleep 0.5; cat /proc/$e/stat > /tmp/s2/escapee; sleep 1002' >/tmp/s2/out 2>&1
rc=$?
set -- $(cat /tmp/s2/escapee 2>/dev/null)
epid=$1 esid=$6
ok=1
[ -n "$epid" ] && [ "$epid" = "$esid" ] && gone "$epid" && [ $rc = 124 ] &&
  has /tmp/s2/out "backend cgroup-v2" "timed_out" && stats_has '"timed_out": 1' && ok=0
result timeout_setsid_escapee $ok "exit $rc; escapee pid ${epid:-?} led its own session ${esid:-?}; after the run: $(gone "${epid:-1}" && echo gone || echo ALIVE); sleeps left: $(pidof sleep || echo none)"
show /tmp/s2/out

# --- 3. fork bomb stopped by pids.max ------------------------------------------------------
fresh s3 <<'EOF'
[executor]
pids_max = 32
EOF
cat >/tmp/s3/bomb.sh <<'EOF'
while read -r l; do case $l in 0::*) cg=/sys/fs/cgroup${l#0::} ;; esac; done </proc/self/cgroup
sh -c 'i=0; while [ $i -lt 200 ]; do sleep 60 & i=$((i + 1)); done' 2>/tmp/s3/bomb.err
read -r max <"$cg/pids.max"
read -r peak <"$cg/pids.peak"
while read -r k v; do [ "$k" = max ] && ev=$v; done <"$cg/pids.events"
echo "pids.max=$max pids.peak=$peak pids.events:max=$ev"
EOF
d=$(unit s3.service)
in_cgroup "$d" presize run --memory-mb 200 --timeout 60 -- sh /tmp/s3/bomb.sh >/tmp/s3/out 2>&1
rc=$?
peak=$(sed -n 's/.*pids.peak=\([0-9]*\).*/\1/p' /tmp/s3/out)
ev=$(sed -n 's/.*pids.events:max=\([0-9]*\).*/\1/p' /tmp/s3/out)
left=$(pidof sleep)
ok=1
[ $rc = 0 ] && [ -n "$peak" ] && [ "$peak" -le 32 ] && [ "${ev:-0}" -gt 0 ] && [ -z "$left" ] &&
  grep -q "can't fork" /tmp/s3/bomb.err && has /tmp/s3/out "backend cgroup-v2" && ok=0
result pids_max_fork_bomb $ok "exit $rc; pids.max 32, pids.peak ${peak:-?}, forks refused ${ev:-?}; first refusal: $(head -n 1 /tmp/s3/bomb.err); sleeps left after the run: ${left:-none}"
show /tmp/s3/out

# --- 4. memory.peak vs the job's own need: a job that writes a file larger than its cap ---
# The page cache of a disk-backed file counts in memory.peak but is reclaimed under
# memory.max: the capped run must finish (not OOM-killed). Printed: what the row records
# (the "peak" of the attempt line) and what the kernel reports at the end of the job.
cat >/tmp/writer.sh <<'EOF'
while read -r l; do case $l in 0::*) cg=/sys/fs/cgroup${l#0::} ;; esac; done </proc/self/cgroup
dd if=/dev/zero of=/mnt/disk/big.$1 bs=1M count=128 2>/dev/null && sync
read -r peak <"$cg/memory.peak"
while read -r k v; do case $k in anon) anon=$v ;; file) file=$v ;; esac; done <"$cg/memory.stat"
echo "memory.peak=$((peak / 1048576)) MiB; at the end: anon=$((anon / 1048576)) MiB file=$((file / 1048576)) MiB"
rm -f /mnt/disk/big.$1
EOF
for cap in 64 400; do
  fresh s4-$cap </dev/null
  d=$(unit s4-$cap.service)
  in_cgroup "$d" presize run --memory-mb $cap --timeout 300 -- sh /tmp/writer.sh $cap >/tmp/s4-$cap/out 2>&1
  rc=$?
  row=$(sed -n 's/.*attempt 1: [a-z_]* — peak \([0-9.]*\) MB.*/\1/p' /tmp/s4-$cap/out)
  kpeak=$(sed -n 's/.*memory.peak=\([0-9]*\) MiB.*/\1/p' /tmp/s4-$cap/out)
  ok=1
  [ $rc = 0 ] && [ -n "$kpeak" ] && [ "$kpeak" -le $cap ] && has /tmp/s4-$cap/out "attempt 1: ok" "(cgroup-v2)" && ok=0
  result page_cache_cap_$cap $ok "exit $rc; 128 MiB written to ext4 under a $cap MB cap: row records peak ${row:-?} MB, kernel memory.peak ${kpeak:-?} MiB"
  show /tmp/s4-$cap/out
done

# --- 5. shared cgroup: a worker daemon (+ a forking peer) calls presize -------------------
fresh s5 <<'EOF'
[policy]
max_attempts = 1
EOF
cat >/tmp/s5/worker.sh <<'EOF'
sleep 1003 & echo $! >/tmp/s5/sleeper
(while :; do /bin/true; done) & echo $! >/tmp/s5/forker
sleep 0.2
echo "worker: in $(sed -n 's/^0:://p' /proc/self/cgroup) with $(wc -l < /sys/fs/cgroup$(sed -n 's/^0:://p' /proc/self/cgroup)/cgroup.procs) processes"
presize run --memory-mb 50 --timeout 60 -- dd if=/dev/zero of=/dev/null bs=100M count=1
echo "worker: presize exit $?; worker now in $(sed -n 's/^0:://p' /proc/self/cgroup)"
kill $(cat /tmp/s5/sleeper) $(cat /tmp/s5/forker)
EOF
d=$(unit worker.service)
vmtool setxattr "$d" trusted.delegate 1
in_cgroup "$d" sh /tmp/s5/worker.sh >/tmp/s5/out 2>&1
ok=1
has /tmp/s5/out "backend cgroup-v2" "attempt 1: oom_killed — peak 50.0 MB" "presize exit 137" \
  "worker now in /system.slice/worker.service/supervisor" &&
  [ -z "$(cat $d/cgroup.procs)" ] && grep -q memory "$d/cgroup.subtree_control" && ok=0
result shared_cgroup_marked $ok "worker shell + sleeper + forking loop in a Delegate=yes (trusted.delegate) cgroup: moved into supervisor, 50 MB cap enforced (OOM kill, exit 137)"
show /tmp/s5/out

# The same without systemd's delegation mark: auto refuses, presize runs unenforced and says so.
fresh s5b <<'EOF'
[policy]
max_attempts = 1
EOF
d=$(unit plain.service)
in_cgroup "$d" sh -c 'sleep 1004 & s=$!; presize run --memory-mb 50 --timeout 60 -- true; echo "presize exit $?"; echo "sleeper in $(sed -n "s/^0:://p" /proc/$s/cgroup)"; kill $s' >/tmp/s5b/out 2>&1
ok=1
has /tmp/s5b/out "not marked delegated" "backend none" "presize exit 0" "sleeper in /system.slice/plain.service" && ok=0
result shared_cgroup_unmarked $ok "same layout without the mark: nothing moved, none backend with the reason"
show /tmp/s5b/out

# ... and with v2_move_peers = "always" (manual delegation, no systemd): moved, enforced.
fresh s5c <<'EOF'
[policy]
max_attempts = 1
[executor]
v2_move_peers = "always"
EOF
d=$(unit plain2.service)
in_cgroup "$d" sh -c 'sleep 1006 & s=$!; presize run --memory-mb 50 --timeout 60 -- dd if=/dev/zero of=/dev/null bs=100M count=1; echo "presize exit $?"; echo "sleeper in $(sed -n "s/^0:://p" /proc/$s/cgroup)"; kill $s' >/tmp/s5c/out 2>&1
ok=1
has /tmp/s5c/out "backend cgroup-v2" "presize exit 137" "sleeper in /system.slice/plain2.service/supervisor" && ok=0
result shared_cgroup_always $ok "unmarked cgroup, v2_move_peers = \"always\": peer moved, 50 MB cap enforced"
show /tmp/s5c/out

# --- 6. a user without root in a cgroup delegated to them ---------------------------------
# systemd: user-1000.slice/user@1000.service is chowned to the user (Delegate=yes); the user
# manager creates app.slice/run-u1.scope for `systemd-run --user --scope -p Delegate=yes`.
U=1000
echo "u1000:x:$U:$U::/tmp/s6:/bin/sh" >>/etc/passwd
mkdir "$CG/user.slice/user-$U.slice"
echo "+memory +pids +cpu" >"$CG/user.slice/user-$U.slice/cgroup.subtree_control"
m="$CG/user.slice/user-$U.slice/user@$U.service"
mkdir "$m"
chown $U:$U "$m" "$m/cgroup.procs" "$m/cgroup.subtree_control" "$m/cgroup.threads"
vmtool runas $U $U sh -c "mkdir $m/app.slice && echo '+memory +pids' >$m/cgroup.subtree_control &&
  echo '+memory +pids' >$m/app.slice/cgroup.subtree_control && mkdir $m/app.slice/run-u1.scope $m/app.slice/run-u2.scope $m/app.slice/run-u3.scope"
mkdir -p /tmp/s6 && chown $U:$U /tmp/s6
fresh s6 <<'EOF'
[policy]
max_attempts = 1
EOF
chown -R $U:$U /tmp/s6
# Alone in the scope (what systemd-run --scope gives), then with a peer (the user's shell).
in_cgroup "$m/app.slice/run-u1.scope" vmtool runas $U $U presize run --memory-mb 50 --timeout 60 -- \
  dd if=/dev/zero of=/dev/null bs=100M count=1 >/tmp/s6/out 2>&1
rc=$?
ok=1
has /tmp/s6/out "backend cgroup-v2" "attempt 1: oom_killed — peak 50.0 MB" && [ $rc = 137 ] &&
  [ "$(stat -c %u "$m/app.slice/run-u1.scope/supervisor")" = $U ] && ok=0
result unprivileged_delegated $ok "uid $(id -u u1000 2>/dev/null || echo $U) in a scope it owns: exit $rc, 50 MB cap enforced; supervisor owned by uid $(stat -c %u "$m/app.slice/run-u1.scope/supervisor" 2>/dev/null)"
show /tmp/s6/out
in_cgroup "$m/app.slice/run-u2.scope" vmtool runas $U $U sh -c \
  'sleep 1005 & s=$!; presize run --memory-mb 50 --timeout 60 -- dd if=/dev/zero of=/dev/null bs=100M count=1; echo "presize exit $?"; echo "peer in $(sed -n "s/^0:://p" /proc/$s/cgroup)"; kill $s' >/tmp/s6/out2 2>&1
ok=1
has /tmp/s6/out2 "backend cgroup-v2" "presize exit 137" "peer in /user.slice/user-$U.slice/user@$U.service/app.slice/run-u2.scope/supervisor" && ok=0
result unprivileged_shared $ok "uid $U with its own shell in the scope: peer moved (the user owns the cgroup), cap enforced"
show /tmp/s6/out2
# A user outside their delegated subtree (e.g. a login session scope owned by root) gets the
# none backend and the command that fixes it.
mkdir "$CG/user.slice/user-$U.slice/session-1.scope"
in_cgroup "$CG/user.slice/user-$U.slice/session-1.scope" vmtool runas $U $U presize run --memory-mb 50 --timeout 60 -- true >/tmp/s6/out3 2>&1
rc=$?
# Why presize cannot simply use the user's subtree from there: the kernel refuses the move
# (it needs write access to cgroup.procs of the common ancestor, user-1000.slice, root's).
in_cgroup "$CG/user.slice/user-$U.slice/session-1.scope" vmtool runas $U $U sh -c \
  "echo \$\$ >$m/app.slice/run-u3.scope/cgroup.procs" >/tmp/s6/move 2>&1 && echo "moved: UNEXPECTED" >>/tmp/s6/move
ok=1
has /tmp/s6/out3 "backend none" "systemd-run --user --scope -p Delegate=yes presize run" && [ $rc = 0 ] &&
  grep -q "Permission denied" /tmp/s6/move && ok=0
result unprivileged_session_hint $ok "uid $U in a root-owned session scope: none backend, names the systemd-run command; moving itself into its own subtree from there: $(tr -d '\n' </tmp/s6/move)"
show /tmp/s6/out3

# --- 7. (--bench only) fixed cost of `presize run -q -- /bin/true` over a bare spawn --------
# Paired and alternating, 100 ms apart (vmtool pairs: the protocol of scripts/bench-pairs.py),
# presize alone in a delegated cgroup: with clone3(CLONE_INTO_CGROUP), and with it turned off
# (PRESIZE_SPAWN_CLONE3=0: the child joins through cgroup.procs). Numbers only, no verdict.
if grep -q presize_bench=1 /proc/cmdline; then
  n=$(sed -n 's/.*presize_bench_pairs=\([0-9]*\).*/\1/p' /proc/cmdline)
  n=${n:-60}
  fresh s7 </dev/null
  d=$(unit bench.service)
  # The timing loop (vmtool) runs in supervisor, where a worker would be after presize
  # moved it: presize then finds <base> empty and every run is placed under cgroup v2.
  mkdir "$d/supervisor"
  in_cgroup "$d/supervisor" sh -c "
    echo '== A: presize run -q -- /bin/true (clone3)  B: /bin/true'
    vmtool pairs $n 100 presize run -q -- /bin/true ::: /bin/true
    echo '== A: PRESIZE_SPAWN_CLONE3=0 presize run -q -- /bin/true (cgroup.procs)  B: /bin/true'
    vmtool pairs $n 100 env PRESIZE_SPAWN_CLONE3=0 presize run -q -- /bin/true ::: /bin/true
    echo '== A: PRESIZE_SPAWN_CLONE3=0 presize run (cgroup.procs)  B: presize run (clone3)'
    vmtool pairs $n 100 env PRESIZE_SPAWN_CLONE3=0 presize run -q -- /bin/true ::: presize run -q -- /bin/true
    echo '== A: presize predict -- /bin/true  B: /bin/true'
    vmtool pairs $n 100 presize predict -- /bin/true ::: /bin/true
  " >/tmp/s7/out 2>&1
  rc=$?
  # favordynmods (a host setting): does a cgroup v1 hierarchy accept it on this kernel, and
  # what does it do to the cgroup.procs path? The lock is global: a named v1 hierarchy
  # without controllers mounted with the option switches it for every hierarchy.
  mkdir -p /mnt/fdm
  if mount -t cgroup -o none,name=fdm,favordynmods cgroup /mnt/fdm 2>/tmp/s7/fdm.err; then
    echo "== cgroup v1 mount with favordynmods: accepted ($(grep ' /mnt/fdm ' /proc/mounts))" >>/tmp/s7/out
    in_cgroup "$d/supervisor" sh -c "
      echo '== favordynmods on: A: PRESIZE_SPAWN_CLONE3=0 presize run (cgroup.procs)  B: presize run (clone3)'
      vmtool pairs $n 100 env PRESIZE_SPAWN_CLONE3=0 presize run -q -- /bin/true ::: presize run -q -- /bin/true
    " >>/tmp/s7/out 2>&1 || rc=1
    umount /mnt/fdm
  else
    echo "== cgroup v1 mount with favordynmods: refused: $(cat /tmp/s7/fdm.err)" >>/tmp/s7/out
  fi
  ok=1
  [ $rc = 0 ] && [ "$(grep -c '^A-B ms' /tmp/s7/out)" -ge 4 ] &&
    PRESIZE_DB=/tmp/s7/db presize stats --json --by backend >/tmp/s7/stats.json 2>&1 &&
    has /tmp/s7/stats.json '"key": "cgroup-v2"' && ok=0
  result bench_fixed_cost $ok "$n pairs each, 100 ms apart, presize in a delegated cgroup (numbers below)"
  show /tmp/s7/out
fi

echo "CGROUP-V2-VM-RESULT passed=$PASSED failed=$FAILED"
sync
poweroff -f
