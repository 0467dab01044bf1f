#!/usr/bin/env bash
# A real single-node SLURM cluster on this (Debian) machine, with accounting,
# for trying and testing the cluster profile. Needs root.
#
#   scripts/local_slurm.sh install   # Debian packages: slurm-wlm, munge, slurmdbd, mariadb-server
#   scripts/local_slurm.sh up        # configure and start the daemons, wait until the node is idle
#   scripts/local_slurm.sh down      # stop them (by the PIDs in their pid files) and put slurm.conf away
#
# State, logs and pid files live in $LOCAL_SLURM_DIR (default /var/tmp/local-slurm).
set -euo pipefail

DIR=${LOCAL_SLURM_DIR:-/var/tmp/local-slurm}
CONF=/etc/slurm/slurm.conf
DBD_CONF=/etc/slurm/slurmdbd.conf
DB_PORT=3307
DB_PASS=local-slurm-only

log() { echo "local_slurm: $*" >&2; }

wait_for() { # seconds, description, command...
    local seconds=$1 what=$2
    shift 2
    for _ in $(seq "$((seconds * 4))"); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.25
    done
    log "gave up waiting for $what; logs are in $DIR"
    return 1
}

install() {
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        slurm-wlm munge slurmdbd mariadb-server >/dev/null
}

write_configs() {
    local host memory node
    host=$(hostname -s)
    # Below physical memory, and the same on every run (a change would rewrite the config).
    memory=$(awk '/MemTotal/ {print int($2 / 1048576 * 0.85) * 1024}' /proc/meminfo)
    node=$(slurmd -C | head -n 1 | sed -E "s/RealMemory=[0-9]+/RealMemory=$memory/")
    mkdir -p "$DIR/state" "$DIR/spool" /etc/slurm
    cat >"$CONF.new" <<EOF
ClusterName=local
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MpiDefault=none
MailProg=/bin/true
MinJobAge=600
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoreFlags=job_comment
JobAcctGatherType=jobacct_gather/none
$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=main Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    cat >"$DBD_CONF" <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=slurm
PidFile=$DIR/slurmdbd.pid
LogFile=$DIR/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
    chown slurm:slurm "$DBD_CONF"
    chmod 600 "$DBD_CONF"
    touch "$DIR/slurmdbd.log" "$DIR/slurmdbd.pid"
    chown slurm:slurm "$DIR/slurmdbd.log" "$DIR/slurmdbd.pid"
}

start_munge() {
    mkdir -p /run/munge
    chown munge:munge /run/munge
    if ! munge -n >/dev/null 2>&1; then
        runuser -u munge -- /usr/sbin/munged
    fi
    wait_for 10 munged munge -n
}

start_mariadb() {
    local data=$DIR/mysql
    mkdir -p "$DIR/mysql-log" "$DIR/mysql-run"  # written by the mysql user
    chown mysql:mysql "$DIR/mysql-log" "$DIR/mysql-run"
    if [ ! -d "$data/mysql" ]; then
        mariadb-install-db --datadir="$data" --user=mysql --auth-root-authentication-method=socket >/dev/null
    fi
    if ! mariadb-admin --socket="$DIR/mysql-run/mysql.sock" ping >/dev/null 2>&1; then
        setsid -f mariadbd --datadir="$data" --user=mysql --bind-address=127.0.0.1 --port=$DB_PORT \
            --socket="$DIR/mysql-run/mysql.sock" --pid-file="$DIR/mysql-run/mariadb.pid" \
            --log-error="$DIR/mysql-log/error.log" </dev/null >/dev/null 2>&1
    fi
    wait_for 30 mariadb mariadb-admin --socket="$DIR/mysql-run/mysql.sock" ping
    mariadb --socket="$DIR/mysql-run/mysql.sock" -e "
        CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
        CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
}

node_idle() { [ "$(sinfo -h -N -o %t 2>/dev/null | head -n 1)" = "idle" ]; }

# A node drained by an earlier run (say "Kill task failed", kept in the saved
# state) would never become idle: this throwaway cluster takes it back.
resume_node() {
    case "$(sinfo -h -N -o %t 2>/dev/null | head -n 1)" in
        drain* | drng | down* | fail*) scontrol update nodename="$(hostname -s)" state=resume 2>/dev/null || true ;;
    esac
    node_idle
}

up() {
    write_configs
    if cmp -s "$CONF.new" "$CONF" && scontrol ping 2>/dev/null | grep -q UP && node_idle; then
        rm "$CONF.new"
        log "already up"
        return 0
    fi
    stop_daemons  # whatever runs with another configuration
    mv "$CONF.new" "$CONF"
    start_munge
    start_mariadb
    pgrep -F "$DIR/slurmdbd.pid" >/dev/null 2>&1 || /usr/sbin/slurmdbd
    wait_for 30 slurmdbd sacctmgr -n list cluster
    pgrep -F "$DIR/slurmctld.pid" >/dev/null 2>&1 || /usr/sbin/slurmctld
    wait_for 30 slurmctld scontrol ping
    pgrep -F "$DIR/slurmd.pid" >/dev/null 2>&1 || /usr/sbin/slurmd
    wait_for 30 "the node to be idle" resume_node
    # slurmctld registers the cluster itself; wait for that before adding the account.
    wait_for 30 "the cluster's registration" sh -c "sacctmgr -n -P list cluster format=cluster | grep -qx local"
    sacctmgr -i add account ci Description=ci Organization=ci >/dev/null 2>&1 || true
    sacctmgr -i add user root Account=ci DefaultAccount=ci >/dev/null 2>&1 || true
    srun -t 1 hostname >/dev/null
    log "up: partition main, account ci ($(sinfo -h -o '%D node(s), %c CPUs, %m MB'))"
}

stop_pid() { # name, pid file
    local pid
    if [ -s "$2" ] && pid=$(cat "$2") && kill -0 "$pid" 2>/dev/null; then
        kill "$pid"
        for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.25; done
        log "$1 ($pid) did not stop; killing it"
        kill -9 "$pid" 2>/dev/null || true
    fi
}

stop_daemons() {
    stop_pid slurmd "$DIR/slurmd.pid"
    stop_pid slurmctld "$DIR/slurmctld.pid"
    stop_pid slurmdbd "$DIR/slurmdbd.pid"
    stop_pid mariadbd "$DIR/mysql-run/mariadb.pid"
    stop_pid munged /run/munge/munged.pid
}

down() {
    stop_daemons
    # With slurm.conf present but no slurmctld, every SLURM client call (and so
    # every snakemake start, through the executor plugin) waits ~10 s.
    [ -f "$CONF" ] && mv "$CONF" "$CONF.down"
    log "down"
}

case "${1:-}" in
    install) install ;;
    up) up ;;
    down) down ;;
    *) echo "usage: $0 install|up|down" >&2; exit 2 ;;
esac
