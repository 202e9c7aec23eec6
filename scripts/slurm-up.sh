#!/usr/bin/env bash
# Start a real single-node SLURM cluster with accounting for presize's tests.
#
# Everything (configs, munge key and socket, MariaDB data, state, spool, logs, pid files)
# lives under one directory, $PRESIZE_SLURM_DIR (default /tmp/presize-slurm). Needs root.
# Idempotent: daemons already running from that directory are reused. Installs the Debian
# packages when missing. Prints `export SLURM_CONF=...` on stdout; stop with slurm-down.sh.
# Recipe and quirks: see the README section "Running on a SLURM cluster".
set -euo pipefail

D=${PRESIZE_SLURM_DIR:-/tmp/presize-slurm}
CTLD_PORT=${PRESIZE_SLURM_PORT_BASE:-16817}
SLURMD_PORT=$((CTLD_PORT + 1))
DBD_PORT=$((CTLD_PORT + 2))
DB_PORT=$((CTLD_PORT + 3))

log() { echo "slurm-up: $*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (the daemons run as root)"

PKGS="slurmctld slurmd slurm-client munge slurmdbd slurm-wlm-mysql-plugin mariadb-server-core mariadb-client-core"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  log "installing:$missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $missing >&2
fi

HOST=$(hostname -s)
mkdir -p "$D"/{etc,munge,mysql,state,spool,log,run}
chmod 755 "$D" "$D/munge"
export SLURM_CONF="$D/etc/slurm.conf"
SOCK="$D/munge/munge.socket"

alive() { # pidfile -> true when the process it names is alive
  [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}
wait_for() { # seconds, description, command...
  local t=$1 what=$2; shift 2
  local end=$((SECONDS + t))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $end ] || die "timed out waiting for $what (logs in $D/log)"
    sleep 0.2
  done
}

# --- configuration (rewritten every time: cheap, and keeps it in step with this script)
MEM_KB=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
REAL_MB=$(( MEM_KB / 1024 - 1024 ))
# More CPUs than the machine has (config_overrides): the tests run short jobs side by side,
# and one job sleeping into its time limit must not hold up the others.
CPUS=${PRESIZE_SLURM_CPUS:-16}
SWAP=no
[ -e /sys/fs/cgroup/memory/memory.memsw.limit_in_bytes ] && SWAP=yes

cat > "$D/etc/slurm.conf" <<EOF
ClusterName=presize
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$SOCK
CredType=cred/munge
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool
SlurmctldPidFile=$D/run/slurmctld.pid
SlurmdPidFile=$D/run/slurmd.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd.log
ProctrackType=proctrack/cgroup
TaskPlugin=task/cgroup
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=1
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
AccountingStoragePass=$SOCK
MpiDefault=none
ReturnToService=2
KillWait=5
MinJobAge=60
InactiveLimit=0
SlurmdParameters=config_overrides
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$REAL_MB State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
cat > "$D/etc/cgroup.conf" <<EOF
CgroupPlugin=cgroup/v1
CgroupAutomount=no
ConstrainRAMSpace=yes
ConstrainSwapSpace=$SWAP
AllowedSwapSpace=0
EOF
DB_PASS=presize-test
cat > "$D/etc/slurmdbd.conf" <<EOF
AuthType=auth/munge
AuthInfo=socket=$SOCK
DbdAddr=127.0.0.1
DbdHost=localhost
DbdPort=$DBD_PORT
SlurmUser=root
PidFile=$D/run/slurmdbd.pid
LogFile=$D/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
chmod 600 "$D/etc/slurmdbd.conf"

# Record which cgroup directories existed before, so slurm-down removes only ours.
if [ ! -e "$D/run/cgroups-before" ]; then
  ls -d /sys/fs/cgroup/*/slurm* 2>/dev/null > "$D/run/cgroups-before" || true
fi

# --- munge
if ! alive "$D/run/munged.pid"; then
  [ -s "$D/munge/munge.key" ] || dd if=/dev/urandom of="$D/munge/munge.key" bs=1024 count=1 status=none
  chmod 400 "$D/munge/munge.key"
  munged --force --socket="$SOCK" --key-file="$D/munge/munge.key" \
    --pid-file="$D/run/munged.pid" --log-file="$D/log/munged.log" \
    --seed-file="$D/munge/munge.seed" >&2
  wait_for 10 munged test -S "$SOCK"
fi

# --- MariaDB
if ! alive "$D/run/mariadbd.pid"; then
  if [ ! -d "$D/mysql/mysql" ]; then
    mariadb-install-db --no-defaults --datadir="$D/mysql" --user=root \
      --auth-root-authentication-method=normal --skip-test-db >"$D/log/mariadb-install.log" 2>&1 \
      || die "mariadb-install-db failed (see $D/log/mariadb-install.log)"
  fi
  mariadbd --no-defaults --user=root --datadir="$D/mysql" --bind-address=127.0.0.1 \
    --port="$DB_PORT" --socket="$D/run/mysqld.sock" --pid-file="$D/run/mariadbd.pid" \
    --log-error="$D/log/mariadbd.log" --skip-name-resolve \
    --innodb-buffer-pool-size=32M --innodb-log-file-size=8M >/dev/null 2>&1 &
  wait_for 30 MariaDB mariadb --no-defaults -uroot --socket="$D/run/mysqld.sock" -e 'SELECT 1'
  mariadb --no-defaults -uroot --socket="$D/run/mysqld.sock" -e "
    CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
fi

# --- slurmdbd, slurmctld, slurmd
if ! alive "$D/run/slurmdbd.pid"; then
  slurmdbd >&2
  wait_for 30 slurmdbd sacctmgr -n show cluster
fi
if ! alive "$D/run/slurmctld.pid"; then
  slurmctld >&2
  wait_for 30 slurmctld scontrol ping
fi
if ! alive "$D/run/slurmd.pid"; then
  slurmd >&2
fi
wait_for 60 "the node to be idle" sh -c "sinfo -h -n $HOST -o %t | grep -qx idle"
# Accounting must know the cluster before the first job ends.
wait_for 30 "the cluster in accounting" sh -c "sacctmgr -n -P show cluster format=cluster | grep -qx presize"

log "cluster up in $D (node $HOST, $CPUS CPUs, ${REAL_MB} MB)"
echo "export SLURM_CONF=$SLURM_CONF"
