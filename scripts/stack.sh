#!/usr/bin/env bash
# Local dev/test stack for paylink: a project-local PostgreSQL cluster and a
# single-node Kafka (KRaft) broker, both bound to 127.0.0.1 only.
#
#   scripts/stack.sh up       start whatever is not running, wait until ready
#   scripts/stack.sh down     stop both (idempotent)
#   scripts/stack.sh status   show state; exit 0 if both up, 3 otherwise
#   scripts/stack.sh env      print `export PAYLINK_...=...` lines for eval
#   scripts/stack.sh kafka-node N   start node N of a cluster again (PAYLINK_KAFKA_NODES=3)
#
# Everything lives in <repo>/.stack/ (git-ignored); see docs/stack.md.
#
# Environment overrides:
#   PAYLINK_PG_PORT                 (default 25432)
#   PAYLINK_KAFKA_PORT              (default 29092)
#   PAYLINK_KAFKA_CONTROLLER_PORT   (default 29093)
#   PAYLINK_DATABASE_URL            if set (to anything but what `env` prints for
#                                   the local cluster): use that server, never
#                                   start/stop the local PostgreSQL
#   PAYLINK_KAFKA_BOOTSTRAP         same for Kafka (anything but 127.0.0.1:<port>)
#   PAYLINK_STACK_TIMEOUT           readiness timeout per service, seconds (default 120)
#   PAYLINK_KAFKA_HEAP              JVM heap flags for the broker (default "-Xmx512m -Xms256m";
#                                   "-Xmx384m -Xms192m" per node of a cluster)
#   PAYLINK_KAFKA_NODES             1 (default) or 3: a KRaft cluster of that many nodes, node i on
#                                   PAYLINK_KAFKA_PORT + 10*(i-1) (controller likewise), topics with
#                                   replication factor 3 and min.insync.replicas=2 (docs/deployment.md)
#   PAYLINK_PG_STANDBY              1: also a streaming-replication standby (pg_basebackup) on
#                                   PAYLINK_PG_STANDBY_PORT (default PAYLINK_PG_PORT + 1); both
#                                   durable, synchronous_commit=on with the standby synchronous
#   PAYLINK_PG_STANDBY_PORT         see above
#   PAYLINK_PG_DURABLE=1            fsync, synchronous_commit and full_page_writes on, as in
#                                   production (default off: a throw-away cluster; make bench sets
#                                   it; a standby pair is always durable)
#   PAYLINK_PG_STATEMENTS=1         preload pg_stat_statements (track_planning on) and let the role
#                                   read and reset it: `make bench` sets it for `--statements`
#                                   (a running cluster keeps its settings until it is restarted)
#   PAYLINK_STACK_SERVICES          what up/down manage: "postgres kafka" (default) or "postgres"
set -euo pipefail

# ---------------------------------------------------------------------------
# Layout and settings
# ---------------------------------------------------------------------------
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
# PAYLINK_STACK_DIR lets a second, independent stack live beside the default one (fault tests
# start and kill their own servers there). The Kafka jar cache is shared with the default stack.
STACK="${PAYLINK_STACK_DIR:-$ROOT/.stack}"
LOGS="$STACK/logs"

PG_PORT="${PAYLINK_PG_PORT:-25432}"
PG_PRIMARY_PORT="$PG_PORT"
PG_STANDBY="${PAYLINK_PG_STANDBY:-0}"
PG_STANDBY_PORT="${PAYLINK_PG_STANDBY_PORT:-$((PG_PORT + 1))}"
KAFKA_PORT="${PAYLINK_KAFKA_PORT:-29092}"
KAFKA_CONTROLLER_PORT="${PAYLINK_KAFKA_CONTROLLER_PORT:-29093}"
TIMEOUT="${PAYLINK_STACK_TIMEOUT:-120}"
HOST=127.0.0.1

# PostgreSQL runs as the `postgres` OS user, which must reach its data folder. A checkout under a
# private folder (e.g. /root, mode 700) is not reachable: then the cluster lives in /var/tmp under a
# name derived from the stack path, so every invocation finds the same one.
pg_locate() {
  PG_HOME="$STACK"
  if [[ $EUID -eq 0 ]] && id -u postgres >/dev/null 2>&1 \
     && ! runuser -u postgres -- test -x "$ROOT" 2>/dev/null; then
    PG_HOME="/var/tmp/paylink-stack-$(printf '%s' "$STACK" | cksum | cut -d' ' -f1)"
  fi
  PG_PRIMARY_DATA="$PG_HOME/pg"
  PG_STANDBY_DATA="$PG_HOME/pg-standby"
  if [[ "${PG_SELECTED:-primary}" == standby ]]; then
    PG_DATA="$PG_STANDBY_DATA" PG_LOG="$PG_HOME/postgres-standby.log"
  else
    PG_DATA="$PG_PRIMARY_DATA" PG_LOG="$PG_HOME/postgres.log"
  fi
}
pg_locate
PG_OS_USER=postgres          # initdb/postgres refuse to run as root
PG_ROLE=paylink PG_PASSWORD=paylink PG_DB=paylink

KAFKA_VERSION=4.1.1          # keep in sync with scripts/kafka-pom.xml
KAFKA_POM="$ROOT/scripts/kafka-pom.xml"
KAFKA_LIBS="${PAYLINK_KAFKA_LIBS:-$ROOT/.stack/kafka-libs}"
KAFKA_NODES="${PAYLINK_KAFKA_NODES:-1}"
KAFKA_NODE_STEP=10           # node i listens on KAFKA_PORT + 10*(i-1), controller likewise
if [[ "$KAFKA_NODES" == 1 ]]; then
  KAFKA_HEAP="${PAYLINK_KAFKA_HEAP:--Xmx512m -Xms256m}"
else
  KAFKA_HEAP="${PAYLINK_KAFKA_HEAP:--Xmx384m -Xms192m}"
fi
KAFKA_CLUSTER_HOME="$STACK/kafka-cluster"

# Select which broker the kafka_* functions act on (1-based). A single node keeps the historical
# layout (.stack/kafka); the nodes of a cluster live in .stack/kafka-cluster/node<i>.
kafka_node() {
  NODE="$1"
  NODE_PORT=$((KAFKA_PORT + KAFKA_NODE_STEP * (NODE - 1)))
  NODE_CONTROLLER_PORT=$((KAFKA_CONTROLLER_PORT + KAFKA_NODE_STEP * (NODE - 1)))
  if [[ "$KAFKA_NODES" == 1 ]]; then
    KAFKA_HOME="$STACK/kafka"
    KAFKA_OUT="$LOGS/kafka.out"      # JVM stdout/stderr (crashes, bad flags)
    KAFKA_LOG="$LOGS/kafka.log"      # broker log written by log4j2
    KAFKA_ID_FILE="$KAFKA_HOME/cluster.id"
  else
    KAFKA_HOME="$KAFKA_CLUSTER_HOME/node$NODE"
    KAFKA_OUT="$LOGS/kafka-node$NODE.out"
    KAFKA_LOG="$LOGS/kafka-node$NODE.log"
    KAFKA_ID_FILE="$KAFKA_CLUSTER_HOME/cluster.id"
  fi
  KAFKA_DATA="$KAFKA_HOME/data"
  KAFKA_PID="$KAFKA_HOME/kafka.pid"
}
kafka_node 1

PG_REPL_ROLE=replicator PG_REPL_PASSWORD=replicator
PG_STANDBY_NAME=paylink_standby   # application_name of the standby = synchronous_standby_names
if [[ "$PG_STANDBY" == 1 ]]; then
  # Both servers; asyncpg and libpq try them in order and keep the one that accepts writes.
  DEFAULT_DATABASE_URL="postgresql://$PG_ROLE:$PG_PASSWORD@$HOST:$PG_PORT,$HOST:$PG_STANDBY_PORT/$PG_DB?target_session_attrs=read-write"
else
  DEFAULT_DATABASE_URL="postgresql://$PG_ROLE:$PG_PASSWORD@$HOST:$PG_PORT/$PG_DB"
fi
DEFAULT_KAFKA_BOOTSTRAP="$HOST:$KAFKA_PORT"
for ((n = 2; n <= KAFKA_NODES; n++)); do
  DEFAULT_KAFKA_BOOTSTRAP+=",$HOST:$((KAFKA_PORT + KAFKA_NODE_STEP * (n - 1)))"
done

# "External" means the caller points us at a server we do not manage. A value
# equal to what `env` prints is our own stack (typical after
# `eval "$(scripts/stack.sh env)"`), so up/down/status still manage it.
pg_external()    { [[ -n "${PAYLINK_DATABASE_URL:-}" && "$PAYLINK_DATABASE_URL" != "$DEFAULT_DATABASE_URL" ]]; }
kafka_external() { [[ -n "${PAYLINK_KAFKA_BOOTSTRAP:-}" && "$PAYLINK_KAFKA_BOOTSTRAP" != "$DEFAULT_KAFKA_BOOTSTRAP" ]]; }

# ---------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------
log()  { printf '[stack] %s\n' "$*" >&2; }
die()  { printf '[stack] ERROR: %s\n' "$*" >&2; exit 1; }

# Size of a file in bytes (0 if missing): remembered before a start so that a
# failure shows only what this start wrote to an appended log.
file_size() { stat -c %s "$1" 2>/dev/null || echo 0; }

# Print the last lines of a log file to stderr (used on every failure path);
# with a byte offset, only what was written after it.
tail_log() {
  local f="$1" n="${2:-40}" from="${3:-0}"
  if [[ -s "$f" ]]; then
    printf '[stack] ---- last %s lines of %s ----\n' "$n" "$f" >&2
    tail -c "+$((from + 1))" "$f" | tail -n "$n" >&2 || true
    printf '[stack] ---- end of %s ----\n' "$f" >&2
  else
    printf '[stack] (log %s is empty or missing)\n' "$f" >&2
  fi
}

# True when something accepts TCP connections on 127.0.0.1:$1.
port_open() {
  timeout 2 bash -c "exec 3<>/dev/tcp/$HOST/$1" 2>/dev/null
}

# True when $1 is a live process whose command line contains $2.
# (Guards against stale pid files whose pid was reused after a reboot.)
pid_matches() {
  local pid="$1" needle="$2"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [[ -r "/proc/$pid/cmdline" ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$needle"
}

is_root() { [[ "$(id -u)" == 0 ]]; }

have_apt() { is_root && command -v apt-get >/dev/null 2>&1; }

apt_install() {
  log "installing Debian packages: $* (apt-get, may take a minute)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq "$@" >&2
}

find_python() {
  command -v python3 || command -v python || die "python3 not found (needed for the Kafka readiness check)"
}

# Serialise concurrent `up`/`down` calls (e.g. two test runners at once).
# The lock is held on fd 9; every long-lived server is started with `9>&-`
# so it does not inherit (and keep holding) the lock after we exit.
take_lock() {
  mkdir -p "$STACK"
  exec 9>"$STACK/stack.lock"
  if ! flock -w "$((TIMEOUT + 60))" 9; then
    die "another scripts/stack.sh is still running (lock $STACK/stack.lock)"
  fi
}

check_port_number() {
  if ! [[ "$2" =~ ^[0-9]+$ ]] || (( $2 < 1 || $2 > 65535 )); then
    die "$1 must be a TCP port number, got '$2'"
  fi
}

# ---------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------
PG_BIN=""

# Locate a directory holding initdb + pg_ctl + postgres: PATH first, then
# Debian's /usr/lib/postgresql/<ver>/bin (newest version wins).
find_pg_bin() {
  local d initdb
  if initdb="$(command -v initdb 2>/dev/null)" && command -v pg_ctl >/dev/null 2>&1; then
    d="$(dirname "$(readlink -f "$initdb")")"   # /usr/local/bin/initdb may be a symlink
    if [[ -x "$d/pg_ctl" && -x "$d/postgres" ]]; then PG_BIN="$d"; return 0; fi
  fi
  for d in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V -r); do
    if [[ -x "$d/initdb" && -x "$d/pg_ctl" && -x "$d/postgres" ]]; then PG_BIN="$d"; return 0; fi
  done
  return 1
}

ensure_pg_bin() {
  find_pg_bin && return 0
  if have_apt; then
    # Note: Debian's package also creates and starts its own "main" cluster on
    # port 5432; it is unrelated to ours and does not conflict.
    apt_install postgresql
    find_pg_bin && return 0
  fi
  die "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found in PATH or /usr/lib/postgresql/*/bin; install them (Debian: apt-get install -y postgresql) or set PAYLINK_DATABASE_URL to use an existing server"
}

# Run a PostgreSQL server binary as the postgres OS user when we are root.
pg_as_owner() {
  if is_root; then
    runuser -u "$PG_OS_USER" -- "$@"
  else
    "$@"
  fi
}

pg_tool() {  # client tools: prefer the server's bin dir, fall back to PATH
  local t="$1"; shift
  if [[ -n "$PG_BIN" && -x "$PG_BIN/$t" ]]; then "$PG_BIN/$t" "$@"; else "$t" "$@"; fi
}

# Unix socket directory: inside .stack/, unless the path would exceed the
# ~107-byte limit of a unix socket path (very deep checkouts).
pg_socket_dir() {
  local d="$PG_HOME/run"
  if (( ${#d} + 20 > 100 )); then
    d="/tmp/paylink-pg-$(printf '%s' "$ROOT" | cksum | cut -d' ' -f1)"
  fi
  printf '%s\n' "$d"
}

pg_pid() { head -n1 "$PG_DATA/postmaster.pid" 2>/dev/null || true; }

pg_running() {
  local pid; pid="$(pg_pid)"
  [[ -n "$pid" ]] && pid_matches "$pid" "$PG_DATA"
}

pg_ready() {
  pg_tool pg_isready -q -h "$HOST" -p "$PG_PORT" -t 2 >/dev/null 2>&1
}

# Make the postgres OS user exist and own what the server writes to.
pg_prepare_dirs() {
  pg_locate  # again: installing PostgreSQL may have just created the postgres user
  local sock; sock="$(pg_socket_dir)"
  mkdir -p "$STACK" "$LOGS" "$PG_HOME" "$PG_DATA" "$sock"
  if [[ "$PG_HOME" != "$STACK" ]]; then
    log "postgres: $ROOT is not reachable by the postgres user; cluster data in $PG_HOME"
    chmod 755 "$PG_HOME"
  fi
  touch "$PG_LOG"
  if is_root; then
    if ! id -u "$PG_OS_USER" >/dev/null 2>&1; then
      log "creating system user '$PG_OS_USER'"
      useradd --system --home-dir /var/lib/postgresql --shell /bin/bash "$PG_OS_USER"
    fi
    chown "$PG_OS_USER:" "$PG_DATA" "$sock" "$PG_LOG"
    chmod 700 "$PG_DATA"
    # The server must be able to reach .stack/pg: every parent dir needs +x for it.
    if ! runuser -u "$PG_OS_USER" -- test -w "$PG_DATA"; then
      die "OS user '$PG_OS_USER' cannot access $PG_DATA (a parent directory of the checkout is not world-traversable, e.g. /root); clone the repo under a world-readable path such as /work or /tmp, or set PAYLINK_DATABASE_URL"
    fi
  fi
}

pg_init() {
  [[ -s "$PG_DATA/PG_VERSION" ]] && return 0
  log "initialising PostgreSQL cluster in $PG_DATA ($("$PG_BIN/postgres" --version))"
  # A half-initialised folder (initdb interrupted) makes initdb refuse: clear it.
  find "$PG_DATA" -mindepth 1 -delete
  local pwfile; pwfile="$(mktemp)"
  printf '%s\n' "$PG_PASSWORD" >"$pwfile"
  is_root && chown "$PG_OS_USER:" "$pwfile"
  # Superuser "postgres" (trust over the unix socket only, which lives in
  # .stack/); every TCP login needs a password (scram-sha-256).
  if ! pg_as_owner "$PG_BIN/initdb" -D "$PG_DATA" -U postgres --pwfile="$pwfile" \
        -E UTF8 --no-locale --auth-local=trust --auth-host=scram-sha-256 \
        >>"$LOGS/initdb.log" 2>&1; then
    rm -f "$pwfile"
    tail_log "$LOGS/initdb.log"
    die "initdb failed (full log: $LOGS/initdb.log)"
  fi
  rm -f "$pwfile"
  printf "\n# Added by scripts/stack.sh: per-start settings (port, socket dir) live here.\ninclude_if_exists = 'paylink.conf'\n" \
    | pg_as_owner tee -a "$PG_DATA/postgresql.conf" >/dev/null
}

# Select which server the pg_* functions act on: the primary (default) or the standby.
pg_select() {
  PG_SELECTED="$1"
  pg_locate
  if [[ "$1" == standby ]]; then PG_PORT="$PG_STANDBY_PORT"; else PG_PORT="$PG_PRIMARY_PORT"; fi
}

pg_durability() {
  if [[ "${PAYLINK_PG_DURABLE:-0}" == 1 ]]; then
    printf '%s\n' "# Durable like production (PAYLINK_PG_DURABLE=1)." \
      "fsync = on" "synchronous_commit = on" "full_page_writes = on"
  else
    printf '%s\n' "# DEV/TEST CLUSTER ONLY: durability is traded for speed. A crash of the" \
      "# machine can lose or corrupt this cluster's data; never copy these settings" \
      "# to a real deployment." "fsync = off" "synchronous_commit = off" "full_page_writes = off"
  fi
}

# Rewritten on every start so port / socket overrides take effect.
#   pg_write_conf              the single cluster (durability per PAYLINK_PG_DURABLE, default off)
#   pg_write_conf primary S    the primary of a standby pair; S = synchronous_standby_names
#   pg_write_conf standby      the standby (streams from the primary)
pg_write_conf() {
  local role="${1:-single}" sync="${2:-}" sock durability
  sock="$(pg_socket_dir)"
  if [[ "$role" == single ]]; then
    durability="$(pg_durability)"
  else
    # A primary/standby pair: durable, and a commit is acknowledged only once the standby has
    # flushed it (synchronous_commit = on with the standby in synchronous_standby_names), so a
    # failover to the standby loses no acknowledged change. The standby itself names no
    # synchronous standby: once promoted it must accept commits on its own.
    durability="fsync = on
full_page_writes = on
synchronous_commit = on
wal_level = replica
max_wal_senders = 10
wal_keep_size = '256MB'
hot_standby = on
wal_receiver_status_interval = 1s
synchronous_standby_names = '$sync'"
    if [[ "$role" == standby ]]; then
      durability+="
primary_conninfo = 'host=$HOST port=$PG_PRIMARY_PORT user=$PG_REPL_ROLE password=$PG_REPL_PASSWORD application_name=$PG_STANDBY_NAME'"
    fi
  fi
  pg_as_owner tee "$PG_DATA/paylink.conf" >/dev/null <<EOF
# Generated by scripts/stack.sh on each 'up' -- do not edit.
listen_addresses = '$HOST'
port = $PG_PORT
unix_socket_directories = '$sock'
max_connections = 200
$durability
$(pg_statements_conf)
# Logging goes to $PG_LOG (pg_ctl -l).
log_line_prefix = '%m [%p] %q%u@%d '
EOF
}

# pg_stat_statements for the benchmarks' per-statement counts (PAYLINK_PG_STATEMENTS=1).
pg_statements_conf() {
  if [[ "${PAYLINK_PG_STATEMENTS:-0}" == 1 ]]; then
    printf '%s\n' "shared_preload_libraries = 'pg_stat_statements'" "pg_stat_statements.track_planning = on"
  fi
}

# Remove leftovers of a server that did not shut down cleanly (machine
# restart, kill -9): postgres refuses to start if postmaster.pid names a pid
# that now belongs to another live process.
pg_clear_stale() {
  local sock pid; sock="$(pg_socket_dir)"; pid="$(pg_pid)"
  if [[ -e "$PG_DATA/postmaster.pid" ]] && ! pg_running; then
    log "removing stale $PG_DATA/postmaster.pid (pid ${pid:-?} is not our postgres)"
    rm -f "$PG_DATA/postmaster.pid"
  fi
  if [[ -e "$sock/.s.PGSQL.$PG_PORT.lock" ]]; then
    pid="$(head -n1 "$sock/.s.PGSQL.$PG_PORT.lock" 2>/dev/null || true)"
    if ! pid_matches "$pid" postgres; then
      rm -f "$sock/.s.PGSQL.$PG_PORT.lock" "$sock/.s.PGSQL.$PG_PORT"
    fi
  fi
}

# psql as the superuser over the private unix socket.
pg_admin_psql() {
  pg_tool psql -X -q -v ON_ERROR_STOP=1 -h "$(pg_socket_dir)" -p "$PG_PORT" -U postgres -d postgres "$@"
}

# With PAYLINK_PG_STATEMENTS=1: the extension in every database (template1 too, for the databases
# a benchmark creates) and the role allowed to read every statement and to reset the counts.
pg_statements_grants() {
  if [[ "${PAYLINK_PG_STATEMENTS:-0}" == 1 ]]; then
    local db
    for db in template1 postgres "$PG_DB"; do
      printf '%s\n' "\\connect $db" "CREATE EXTENSION IF NOT EXISTS pg_stat_statements;" \
        "GRANT EXECUTE ON FUNCTION pg_stat_statements_reset TO $PG_ROLE;"
    done
    printf '%s\n' "GRANT pg_read_all_stats TO $PG_ROLE;"
  fi
}

# Idempotently create role paylink (LOGIN, CREATEDB) and database paylink.
pg_bootstrap_role() {
  if ! pg_admin_psql -f - >>"$LOGS/pg-bootstrap.log" 2>&1 <<EOF
SELECT 'CREATE ROLE $PG_ROLE LOGIN CREATEDB'
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_ROLE') \gexec
ALTER ROLE $PG_ROLE WITH LOGIN CREATEDB PASSWORD '$PG_PASSWORD';
SELECT 'CREATE DATABASE $PG_DB OWNER $PG_ROLE'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$PG_DB') \gexec
$(pg_statements_grants)
EOF
  then
    tail_log "$LOGS/pg-bootstrap.log"
    die "could not create role/database '$PG_ROLE' in PostgreSQL"
  fi
}

# Starts the selected server (pg_select) unless it runs, and waits until it accepts connections.
#   pg_start_selected NAME CONF_ARGS...   (CONF_ARGS go to pg_write_conf)
pg_start_selected() {
  local name="$1"; shift
  local log_from=0
  if pg_running && pg_ready; then
    log "$name: already running on $HOST:$PG_PORT (pid $(pg_pid))"
    return 0
  fi
  if pg_running; then
    # Our postmaster exists but is not accepting yet (just started, recovering).
    log "$name: process $(pg_pid) exists, waiting for it"
  else
    pg_clear_stale
    if port_open "$PG_PORT"; then
      die "$name: port $HOST:$PG_PORT is already in use by another process; stop it or pick another port with PAYLINK_PG_PORT / PAYLINK_PG_STANDBY_PORT"
    fi
    pg_prepare_dirs
    [[ "$PG_SELECTED" == standby ]] || pg_init   # a standby is made by pg_basebackup
    pg_write_conf "$@"
    log "$name: starting on $HOST:$PG_PORT (log $PG_LOG)"
    log_from="$(file_size "$PG_LOG")"
    # -W: don't wait here; we poll pg_isready below with our own timeout.
    # setsid: detach from the caller's session/process group so the server
    # survives the calling shell.
    if ! pg_as_owner setsid "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -W start \
          </dev/null >>"$LOGS/pg_ctl.log" 2>&1 9>&-; then
      tail_log "$LOGS/pg_ctl.log" 20
      tail_log "$PG_LOG" 40 "$log_from"
      die "$name: pg_ctl start failed"
    fi
  fi
  local deadline=$((SECONDS + TIMEOUT))
  until pg_ready; do
    if (( SECONDS >= deadline )); then
      tail_log "$PG_LOG" 40 "$log_from"
      die "$name: not ready on $HOST:$PG_PORT after ${TIMEOUT}s"
    fi
    # The postmaster writes its pid file within a second; if it is gone after
    # that, the server died (bad config, port taken, ...).
    if (( SECONDS > deadline - TIMEOUT + 3 )) && ! pg_running; then
      tail_log "$PG_LOG" 40 "$log_from"
      die "$name: server exited during startup"
    fi
    sleep 0.2
  done
  log "$name: ready on $HOST:$PG_PORT (pid $(pg_pid))"
}

# The standby was promoted (a failover happened): its data has no standby.signal any more.
pg_standby_promoted() {
  [[ -s "$PG_STANDBY_DATA/PG_VERSION" && ! -e "$PG_STANDBY_DATA/standby.signal" ]]
}

# A fresh standby: role `replicator` on the primary, then pg_basebackup into an empty folder.
pg_make_standby() {
  pg_select primary
  if ! pg_admin_psql -f - >>"$LOGS/pg-bootstrap.log" 2>&1 <<EOF
SELECT 'CREATE ROLE $PG_REPL_ROLE LOGIN REPLICATION'
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_REPL_ROLE') \gexec
ALTER ROLE $PG_REPL_ROLE WITH LOGIN REPLICATION PASSWORD '$PG_REPL_PASSWORD';
EOF
  then
    tail_log "$LOGS/pg-bootstrap.log"
    die "could not create the replication role in PostgreSQL"
  fi
  pg_select standby
  pg_prepare_dirs
  find "$PG_DATA" -mindepth 1 -delete
  log "postgres-standby: pg_basebackup from $HOST:$PG_PRIMARY_PORT into $PG_DATA"
  if ! pg_as_owner env PGPASSWORD="$PG_REPL_PASSWORD" "$PG_BIN/pg_basebackup" -D "$PG_DATA" \
        -h "$HOST" -p "$PG_PRIMARY_PORT" -U "$PG_REPL_ROLE" -X stream -c fast \
        >>"$LOGS/pg_basebackup.log" 2>&1; then
    tail_log "$LOGS/pg_basebackup.log"
    die "postgres-standby: pg_basebackup failed"
  fi
  pg_as_owner touch "$PG_DATA/standby.signal"
}

pg_up() {
  if pg_external; then
    log "postgres: PAYLINK_DATABASE_URL points elsewhere, not starting a local cluster"
    return 0
  fi
  check_port_number PAYLINK_PG_PORT "$PG_PRIMARY_PORT"
  pg_select primary
  if [[ "$PG_STANDBY" != 1 ]]; then
    if ! { pg_running && pg_ready; }; then ensure_pg_bin; fi
    pg_start_selected postgres single
    pg_bootstrap_role
    return 0
  fi
  check_port_number PAYLINK_PG_STANDBY_PORT "$PG_STANDBY_PORT"
  ensure_pg_bin
  if pg_standby_promoted; then
    die "postgres-standby in $PG_STANDBY_DATA was promoted (a failover): the old primary is out of date and is not started again; start afresh with 'scripts/stack.sh down' and removing $PG_HOME"
  fi
  local have_standby=0
  [[ -s "$PG_STANDBY_DATA/PG_VERSION" ]] && have_standby=1
  if (( have_standby )); then
    pg_start_selected postgres primary "$PG_STANDBY_NAME"
  else
    # First start: no synchronous standby yet (commits would wait for it), then make it.
    pg_start_selected postgres primary ""
    pg_bootstrap_role
    pg_make_standby
  fi
  pg_select standby
  pg_start_selected postgres-standby standby ""
  pg_select primary
  if (( ! have_standby )); then
    pg_write_conf primary "$PG_STANDBY_NAME"
    pg_as_owner "$PG_BIN/pg_ctl" -D "$PG_DATA" reload >>"$LOGS/pg_ctl.log" 2>&1 || die "postgres: reload failed"
  fi
  local deadline=$((SECONDS + TIMEOUT)) state=""
  until [[ "$state" == sync ]]; do
    state="$(pg_admin_psql -tA -c "SELECT sync_state FROM pg_stat_replication WHERE application_name = '$PG_STANDBY_NAME'" 2>/dev/null || true)"
    if (( SECONDS >= deadline )); then
      tail_log "$PG_HOME/postgres-standby.log" 40
      die "postgres-standby: not streaming synchronously after ${TIMEOUT}s (state '$state')"
    fi
    [[ "$state" == sync ]] || sleep 0.2
  done
  pg_bootstrap_role
  log "postgres: primary $HOST:$PG_PRIMARY_PORT, synchronous standby $HOST:$PG_STANDBY_PORT"
}

# Stops the selected server if it runs.
pg_stop_selected() {
  local name="$1"
  if ! pg_running; then
    pg_clear_stale 2>/dev/null || true
    return 1
  fi
  find_pg_bin || die "$name is running (pid $(pg_pid)) but pg_ctl cannot be found"
  log "$name: stopping (pid $(pg_pid))"
  if ! pg_as_owner "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w -t 60 stop >>"$LOGS/pg_ctl.log" 2>&1; then
    tail_log "$LOGS/pg_ctl.log" 20
    die "$name: pg_ctl stop failed"
  fi
  log "$name: stopped"
}

pg_down() {
  pg_external && { log "postgres: external (PAYLINK_DATABASE_URL), nothing to stop"; return 0; }
  # The primary first (a standby stopped first would leave its synchronous commits waiting), then
  # the standby, whether or not PAYLINK_PG_STANDBY is set now.
  pg_select primary
  pg_stop_selected postgres || log "postgres: not running"
  pg_select standby
  if [[ -e "$PG_DATA/postmaster.pid" ]]; then
    pg_stop_selected postgres-standby || true
  fi
  pg_select primary
}

# ---------------------------------------------------------------------------
# Kafka (single node, KRaft: combined broker + controller)
# ---------------------------------------------------------------------------
kafka_pid() { cat "$KAFKA_PID" 2>/dev/null || true; }

kafka_running() {
  local pid; pid="$(kafka_pid)"
  [[ -n "$pid" ]] && pid_matches "$pid" "$KAFKA_HOME/server.properties"
}

# Real readiness: send a Kafka Metadata request (v4; supported by brokers
# 1.0 .. 4.x) using only the Python stdlib, and require at least one broker
# in the answer. A broker that accepts TCP but has not finished starting
# does not answer, so this is stricter than a port check.
kafka_metadata_ok() {
  local bootstrap="$1" want="${2:-1}" py
  py="$(find_python)"
  "$py" - "$bootstrap" "$want" <<'PY' 2>/dev/null
import socket, struct, sys

def main(bootstrap, want):
    last = None
    for hp in bootstrap.split(","):
        host, _, port = hp.strip().rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=3) as s:
                s.settimeout(3)
                client = b"paylink-stack"
                # header v1: api_key=3 (Metadata), api_version=4, correlation id, client id
                req = struct.pack(">hhih", 3, 4, 42, len(client)) + client
                # body v4: topics = [] (none, we only want brokers), allow_auto_topic_creation=false
                req += struct.pack(">ib", 0, 0)
                s.sendall(struct.pack(">i", len(req)) + req)
                size = struct.unpack(">i", recv_exact(s, 4))[0]
                data = recv_exact(s, size)
            corr, _throttle, nbrokers = struct.unpack_from(">iii", data, 0)
            if corr == 42 and nbrokers >= want:
                return 0
            last = f"{nbrokers} brokers in metadata, want {want}"
        except Exception as e:  # noqa: BLE001 - any failure means "not ready"
            last = repr(e)
    print(last, file=sys.stderr)
    return 1

def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed")
        buf += chunk
    return buf

sys.exit(main(sys.argv[1], int(sys.argv[2])))
PY
}

ensure_java() {
  command -v java >/dev/null 2>&1 && return 0
  have_apt && apt_install openjdk-17-jre-headless && command -v java >/dev/null 2>&1 && return 0
  die "java not found (Kafka needs Java 17+; Debian: apt-get install -y openjdk-17-jre-headless) -- or set PAYLINK_KAFKA_BOOTSTRAP to use an existing broker"
}

# Download the broker jars once into .stack/kafka-libs (Maven local repo
# stays ~/.m2, so other checkouts on this machine reuse the download).
ensure_kafka_libs() {
  local marker="$KAFKA_LIBS/.complete-$KAFKA_VERSION"
  [[ -f "$marker" ]] && return 0
  if ! command -v mvn >/dev/null 2>&1; then
    have_apt && apt_install maven
    command -v mvn >/dev/null 2>&1 || die "mvn (Maven) not found; it is needed once to fetch Kafka $KAFKA_VERSION from Maven Central (Debian: apt-get install -y maven)"
  fi
  [[ -f "$KAFKA_POM" ]] || die "missing $KAFKA_POM"
  mkdir -p "$STACK" "$LOGS"
  local tmp="$STACK/kafka-libs.tmp"
  rm -rf "$tmp"
  log "kafka: fetching org.apache.kafka:kafka_2.13:$KAFKA_VERSION jars via Maven (first run only)"
  if ! mvn -B -q -Dstyle.color=never -f "$KAFKA_POM" dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$tmp" >"$LOGS/kafka-mvn.log" 2>&1; then
    tail_log "$LOGS/kafka-mvn.log"
    die "kafka: Maven could not download the broker jars (full log: $LOGS/kafka-mvn.log)"
  fi
  compgen -G "$tmp/kafka_2.13-$KAFKA_VERSION.jar" >/dev/null || die "kafka: Maven finished but kafka_2.13-$KAFKA_VERSION.jar is not in $tmp"
  rm -rf "$KAFKA_LIBS"
  mkdir -p "$(dirname "$KAFKA_LIBS")"
  mv "$tmp" "$KAFKA_LIBS"
  touch "$marker"
}

kafka_write_config() {
  mkdir -p "$KAFKA_HOME" "$KAFKA_DATA" "$LOGS"
  # Regenerated on every start so that port overrides take effect. A static
  # controller quorum (controller.quorum.voters) keeps the formatted data
  # independent of the controller port.
  local voters="" replication n
  for ((n = 1; n <= KAFKA_NODES; n++)); do
    voters+="${voters:+,}$n@$HOST:$((KAFKA_CONTROLLER_PORT + KAFKA_NODE_STEP * (n - 1)))"
  done
  if [[ "$KAFKA_NODES" == 1 ]]; then
    replication="# Dev/test defaults: one node, so every internal topic has replication 1.
default.replication.factor=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1"
  else
    # What paylink relies on in production (docs/deployment.md): every topic on 3 brokers, a write
    # acknowledged (acks=all) only once 2 of them have it, and no unclean leader election.
    replication="# A cluster: topics on 3 replicas, acks=all needs 2 in sync, no unclean election.
default.replication.factor=3
min.insync.replicas=2
unclean.leader.election.enable=false
offsets.topic.replication.factor=3
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
share.coordinator.state.topic.replication.factor=3
share.coordinator.state.topic.min.isr=2"
  fi
  cat >"$KAFKA_HOME/server.properties" <<EOF
# Generated by scripts/stack.sh on each 'up' -- do not edit.
process.roles=broker,controller
node.id=$NODE
controller.quorum.voters=$voters
listeners=PLAINTEXT://$HOST:$NODE_PORT,CONTROLLER://$HOST:$NODE_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$NODE_PORT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$KAFKA_DATA

auto.create.topics.enable=true
num.partitions=3
$replication
group.initial.rebalance.delay.ms=0
log.retention.hours=24

# Small footprint for a 2-core dev machine.
num.network.threads=2
num.io.threads=4
EOF
  cat >"$KAFKA_HOME/log4j2.properties" <<EOF
# Generated by scripts/stack.sh -- broker log goes to $KAFKA_LOG
status = warn
appender.file.type = RollingFile
appender.file.name = FILE
appender.file.fileName = $KAFKA_LOG
appender.file.filePattern = $KAFKA_LOG.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 20MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 2
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
# Quieter noisy loggers.
logger.kafka-request.name = kafka.request.logger
logger.kafka-request.level = WARN
logger.state-change.name = state.change.logger
logger.state-change.level = WARN
EOF
}

# The java command line for a Kafka main class, in the array KJAVA.
kafka_java_cmd() {
  # shellcheck disable=SC2206  # KAFKA_HEAP is intentionally word-split
  KJAVA=(java $KAFKA_HEAP -XX:+UseG1GC -Djava.awt.headless=true
    -Dlog4j2.configurationFile="$KAFKA_HOME/log4j2.properties"
    -Dkafka.logs.dir="$LOGS"
    -cp "$KAFKA_LIBS/*" "$@")
}

kafka_java() { kafka_java_cmd "$@"; "${KJAVA[@]}"; }

# Format the storage once; the cluster id is generated once and kept.
kafka_format() {
  [[ -f "$KAFKA_DATA/meta.properties" ]] && return 0
  if [[ ! -s "$KAFKA_ID_FILE" ]]; then
    kafka_java kafka.tools.StorageTool random-uuid 2>>"$KAFKA_OUT" | tail -n1 >"$KAFKA_ID_FILE.tmp"
    [[ -s "$KAFKA_ID_FILE.tmp" ]] || { tail_log "$KAFKA_OUT"; die "kafka: StorageTool random-uuid failed"; }
    mv "$KAFKA_ID_FILE.tmp" "$KAFKA_ID_FILE"
  fi
  log "kafka: formatting $KAFKA_DATA (cluster id $(cat "$KAFKA_ID_FILE"))"
  # Clear a half-formatted data dir (e.g. format interrupted).
  find "$KAFKA_DATA" -mindepth 1 -delete
  if ! kafka_java kafka.tools.StorageTool format -t "$(cat "$KAFKA_ID_FILE")" \
        -c "$KAFKA_HOME/server.properties" >>"$LOGS/kafka-format.log" 2>&1; then
    tail_log "$LOGS/kafka-format.log"
    die "kafka: storage format failed"
  fi
}

# Starts the selected node (kafka_node) unless it runs; does not wait. Sets KAFKA_LOG_FROM.
kafka_start_node() {
  KAFKA_LOG_FROM="$(file_size "$KAFKA_LOG")"
  if kafka_running; then
    log "kafka: node $NODE process $(kafka_pid) exists"
    return 0
  fi
  [[ -e "$KAFKA_PID" ]] && { log "kafka: removing stale pid file (pid $(kafka_pid) is not our broker)"; rm -f "$KAFKA_PID"; }
  local p
  for p in "$NODE_PORT" "$NODE_CONTROLLER_PORT"; do
    port_open "$p" && die "kafka: port $HOST:$p is already in use by another process; stop it or pick other ports with PAYLINK_KAFKA_PORT / PAYLINK_KAFKA_CONTROLLER_PORT"
  done
  kafka_write_config
  kafka_format
  log "kafka: starting node $NODE on $HOST:$NODE_PORT (controller $NODE_CONTROLLER_PORT; log $KAFKA_LOG)"
  : >"$KAFKA_OUT"
  # setsid + nohup: fully detached from the caller; stdin from /dev/null so
  # `$(scripts/stack.sh ...)` or CI with no stdin never hang on it.
  # (A script's background job is not a process-group leader, so setsid and
  # nohup exec in place and $! is the JVM's pid.)
  kafka_java_cmd kafka.Kafka "$KAFKA_HOME/server.properties"
  setsid nohup "${KJAVA[@]}" </dev/null >>"$KAFKA_OUT" 2>&1 9>&- &
  echo $! >"$KAFKA_PID"
}

kafka_up() {
  if kafka_external; then
    log "kafka: PAYLINK_KAFKA_BOOTSTRAP points elsewhere, not starting a local broker"
    return 0
  fi
  [[ "$KAFKA_NODES" =~ ^[1-5]$ ]] || die "PAYLINK_KAFKA_NODES must be 1 to 5 (3 for a replicated cluster), got '$KAFKA_NODES'"
  check_port_number PAYLINK_KAFKA_PORT "$KAFKA_PORT"
  check_port_number PAYLINK_KAFKA_CONTROLLER_PORT "$KAFKA_CONTROLLER_PORT"
  local n all_ready=1
  for ((n = 1; n <= KAFKA_NODES; n++)); do
    kafka_node "$n"
    if ! { kafka_running && kafka_metadata_ok "$HOST:$NODE_PORT" "$KAFKA_NODES"; }; then all_ready=0; fi
  done
  if (( all_ready )); then
    log "kafka: already running on $DEFAULT_KAFKA_BOOTSTRAP"
    return 0
  fi
  local -a log_from=()
  ensure_java
  ensure_kafka_libs
  # Start every node first: a cluster's controllers need a quorum before any broker is ready.
  for ((n = 1; n <= KAFKA_NODES; n++)); do
    kafka_node "$n"
    kafka_start_node
    log_from[n]="$KAFKA_LOG_FROM"
  done
  local deadline=$((SECONDS + TIMEOUT))
  for ((n = 1; n <= KAFKA_NODES; n++)); do
    kafka_node "$n"
    until kafka_metadata_ok "$HOST:$NODE_PORT" "$KAFKA_NODES"; do
      if ! kafka_running; then
        tail_log "$KAFKA_OUT" 20
        tail_log "$KAFKA_LOG" 40 "${log_from[n]:-0}"
        rm -f "$KAFKA_PID"
        die "kafka: broker process (node $NODE) exited during startup"
      fi
      if (( SECONDS >= deadline )); then
        tail_log "$KAFKA_LOG" 40 "${log_from[n]:-0}"
        die "kafka: node $NODE not ready on $HOST:$NODE_PORT after ${TIMEOUT}s (process $(kafka_pid) still running; 'scripts/stack.sh down' stops it)"
      fi
      sleep 0.5
    done
    log "kafka: node $NODE ready on $HOST:$NODE_PORT (pid $(kafka_pid))"
  done
}

# Every broker pid file of this stack, single node and cluster alike (down stops them all,
# whatever PAYLINK_KAFKA_NODES says now).
kafka_pid_files() {
  local f
  for f in "$STACK/kafka/kafka.pid" "$KAFKA_CLUSTER_HOME"/node*/kafka.pid; do
    [[ -e "$f" ]] && printf '%s\n' "$f"
  done
  return 0
}

kafka_down() {
  kafka_external && { log "kafka: external (PAYLINK_KAFKA_BOOTSTRAP), nothing to stop"; return 0; }
  local f pid i alive
  local -a pids=()
  while read -r f; do
    pid="$(cat "$f" 2>/dev/null || true)"
    if pid_matches "$pid" "$(dirname "$f")/server.properties"; then
      pids+=("$pid")
    fi
    rm -f "$f"
  done < <(kafka_pid_files)
  if (( ${#pids[@]} == 0 )); then
    log "kafka: not running"
    return 0
  fi
  log "kafka: stopping (pid ${pids[*]})"
  kill -TERM "${pids[@]}" 2>/dev/null || true
  # Controlled shutdown of a node normally takes a few seconds.
  for ((i = 0; i < 300; i++)); do
    alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    (( alive )) || break
    sleep 0.2
  done
  for pid in "${pids[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      log "kafka: $pid still alive after 60s, sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.5
    fi
  done
  log "kafka: stopped"
}

# ---------------------------------------------------------------------------
# Subcommands
# ---------------------------------------------------------------------------
cmd_up() {
  take_lock
  local t0=$SECONDS
  pg_up
  if with_kafka; then kafka_up; fi
  log "stack up in $((SECONDS - t0))s; use: eval \"\$(scripts/stack.sh env)\""
}

with_kafka() { [[ " ${PAYLINK_STACK_SERVICES:-postgres kafka} " == *" kafka "* ]]; }

# Starts one node of a cluster (after it was stopped or killed) and waits until it answers.
cmd_kafka_node() {
  local n="${1:-}"
  [[ "$n" =~ ^[0-9]+$ ]] && (( n >= 1 && n <= KAFKA_NODES )) || die "usage: scripts/stack.sh kafka-node N (1..$KAFKA_NODES; set PAYLINK_KAFKA_NODES)"
  take_lock
  ensure_java
  ensure_kafka_libs
  kafka_node "$n"
  kafka_start_node
  local deadline=$((SECONDS + TIMEOUT))
  until kafka_metadata_ok "$HOST:$NODE_PORT"; do
    kafka_running || { tail_log "$KAFKA_LOG" 40 "$KAFKA_LOG_FROM"; die "kafka: node $n exited during startup"; }
    (( SECONDS < deadline )) || die "kafka: node $n not ready after ${TIMEOUT}s"
    sleep 0.5
  done
  log "kafka: node $n ready on $HOST:$NODE_PORT (pid $(kafka_pid))"
}

cmd_down() {
  take_lock
  local rc=0
  if with_kafka; then kafka_down || rc=1; fi
  pg_down || rc=1
  return "$rc"
}

# Hide the password of a URL in status output.
mask_url() { sed -E 's#(//[^:/@]*):[^@/]*@#\1:***@#' <<<"$1"; }

cmd_status() {
  local ok=0
  if pg_external; then
    if command -v pg_isready >/dev/null 2>&1 && pg_isready -q -d "$PAYLINK_DATABASE_URL" -t 3; then
      echo "postgres: external, reachable ($(mask_url "$PAYLINK_DATABASE_URL"))"
    else
      echo "postgres: external, NOT reachable ($(mask_url "$PAYLINK_DATABASE_URL"))"; ok=3
    fi
  else
    pg_select primary
    if pg_running && { find_pg_bin || true; pg_ready; }; then
      echo "postgres: up    $HOST:$PG_PORT pid $(pg_pid) data $PG_DATA"
    elif pg_running; then
      echo "postgres: starting/not accepting  $HOST:$PG_PORT pid $(pg_pid)"; ok=3
    else
      echo "postgres: down  (port $PG_PORT)"; ok=3
    fi
    pg_select standby
    if [[ "$PG_STANDBY" == 1 || -e "$PG_DATA/postmaster.pid" ]]; then
      local what=standby
      pg_standby_promoted && what=promoted
      if pg_running && { find_pg_bin || true; pg_ready; }; then
        echo "standby:  up    $HOST:$PG_PORT pid $(pg_pid) data $PG_DATA ($what)"
      else
        echo "standby:  down  (port $PG_PORT, data $PG_DATA, $what)"; ok=3
      fi
    fi
    pg_select primary
  fi

  if kafka_external; then
    if kafka_metadata_ok "$PAYLINK_KAFKA_BOOTSTRAP"; then
      echo "kafka:    external, reachable ($PAYLINK_KAFKA_BOOTSTRAP)"
    else
      echo "kafka:    external, NOT reachable ($PAYLINK_KAFKA_BOOTSTRAP)"; ok=3
    fi
  else
    local n label
    for ((n = 1; n <= KAFKA_NODES; n++)); do
      kafka_node "$n"
      label="kafka:   "
      [[ "$KAFKA_NODES" == 1 ]] || label="kafka-$n: "
      if kafka_running && kafka_metadata_ok "$HOST:$NODE_PORT"; then
        echo "$label up    $HOST:$NODE_PORT (controller $NODE_CONTROLLER_PORT) pid $(kafka_pid) data $KAFKA_DATA"
      elif kafka_running; then
        echo "$label starting/not answering  $HOST:$NODE_PORT pid $(kafka_pid)"; ok=3
      else
        echo "$label down  (port $NODE_PORT)"; ok=3
      fi
    done
  fi
  return "$ok"
}

cmd_env() {
  printf 'export PAYLINK_DATABASE_URL=%q\n' "${PAYLINK_DATABASE_URL:-$DEFAULT_DATABASE_URL}"
  printf 'export PAYLINK_KAFKA_BOOTSTRAP=%q\n' "${PAYLINK_KAFKA_BOOTSTRAP:-$DEFAULT_KAFKA_BOOTSTRAP}"
}

usage() {  # the comment block at the top of this file
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | grep '^#' | sed 's/^# \{0,1\}//'
}

case "${1:-}" in
  up)     cmd_up ;;
  down)   cmd_down ;;
  status) cmd_status ;;
  env)    cmd_env ;;
  kafka-node) cmd_kafka_node "${2:-}" ;;
  -h|--help|help) usage ;;
  *)      usage >&2; exit 2 ;;
esac
