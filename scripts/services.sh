#!/usr/bin/env bash
# Local services for cachesync's integration tests and benchmark.
#
#   scripts/services.sh up             start (or reuse) MariaDB, Redis, RabbitMQ; print URLs
#   scripts/services.sh down           stop what this script started
#   scripts/services.sh env            print the export lines only (starts nothing)
#   scripts/services.sh status         one line per service
#   scripts/services.sh restart-redis  stop + start the dedicated Redis (fault tests)
#
# MariaDB and Redis are *dedicated* instances on side ports with their data in
# the git-ignored .services/ folder, so tests never touch (and never depend on)
# a system MariaDB on 3306 or Redis on 6379. RabbitMQ is shared: whatever
# already answers on 127.0.0.1:5672 is reused.
#
# Progress goes to stderr and only the export lines go to stdout, so
#   eval "$(scripts/services.sh up)"   and   eval "$(scripts/services.sh env)"
# both work.
#
# Environment overrides:
#   CACHESYNC_MYSQL_PORT   dedicated MariaDB port (default 3307)
#   CACHESYNC_REDIS_PORT   dedicated Redis port   (default 6380)

set -euo pipefail

# ---------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------

# Resolve the repo root from the script's own location so the script works
# from any cwd (cargo test, CI, a subdirectory...).
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd -P)"
SERVICES_DIR="$REPO_ROOT/.services"

MYSQL_PORT="${CACHESYNC_MYSQL_PORT:-3307}"
REDIS_PORT="${CACHESYNC_REDIS_PORT:-6380}"
AMQP_PORT=5672 # shared RabbitMQ, deliberately not configurable

# Everything mariadbd writes (datadir, log, pid, socket) lives in MARIADB_DIR,
# which must therefore be owned by the user mariadbd runs as.
MARIADB_DIR="$SERVICES_DIR/mariadb-$MYSQL_PORT"
MARIADB_DATA="$MARIADB_DIR/data"
MARIADB_LOG="$MARIADB_DIR/mariadb.err"
MARIADB_OUT="$MARIADB_DIR/mariadbd.out" # stdout/stderr of the detached process
MARIADB_PID="$MARIADB_DIR/mariadb.pid"
MARIADB_INIT_MARKER="$MARIADB_DIR/.initialized"
MARIADB_INIT_LOG="$MARIADB_DIR/install-db.log"

REDIS_DIR="$SERVICES_DIR/redis-$REDIS_PORT"
REDIS_LOG="$REDIS_DIR/redis.log"
REDIS_PID="$REDIS_DIR/redis.pid"

# Present only while a RabbitMQ started *by this script* is running, so that
# `down` never stops a broker somebody else owns.
RABBIT_MARKER="$SERVICES_DIR/rabbitmq.started-by-us"
RABBIT_START_LOG="$SERVICES_DIR/rabbitmq-start.log"
RABBIT_LOG_HINT="$RABBIT_START_LOG and /var/log/rabbitmq/"

MYSQL_WAIT_SECS=60
REDIS_WAIT_SECS=30
RABBIT_WAIT_SECS=120

IS_ROOT=0
[[ "$(id -u)" == 0 ]] && IS_ROOT=1

# ---------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------

log() { printf '[services] %s\n' "$*" >&2; }
die() {
    printf '[services] ERROR: %s\n' "$*" >&2
    exit 1
}

usage() {
    cat <<EOF
usage: $(basename "$0") up|down|env|status|restart-redis|--help

  up             start (idempotently) the dedicated MariaDB (port $MYSQL_PORT), the
                 dedicated Redis (port $REDIS_PORT) and RabbitMQ (port $AMQP_PORT, reused
                 if already running), wait until each answers, print export lines
  down           stop the dedicated MariaDB and Redis; stop RabbitMQ only if this
                 script started it
  env            print the export lines (stdout) without starting anything
  status         one line per service: up/down, port, pid
  restart-redis  stop and start the dedicated Redis (used by fault tests)

Data lives in $SERVICES_DIR (git-ignored).
Overrides: CACHESYNC_MYSQL_PORT (default 3307), CACHESYNC_REDIS_PORT (default 6380).
EOF
}

print_env() {
    printf '%s\n' \
        "export CACHESYNC_TEST_MYSQL_URL=mysql://root@127.0.0.1:$MYSQL_PORT" \
        "export CACHESYNC_TEST_REDIS_URL=redis://127.0.0.1:$REDIS_PORT" \
        "export CACHESYNC_TEST_AMQP_URL=amqp://guest:guest@127.0.0.1:$AMQP_PORT/%2f"
}

# True if something accepts TCP connections on 127.0.0.1:$1.
# Uses bash's /dev/tcp so we need neither nc nor ss.
port_open() {
    timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

# True if pid $1 exists and is not a zombie. kill -0 alone is not enough:
# daemonised servers get reparented to PID 1, and an init that reaps lazily
# (seen in this VM: ~1 s) leaves them as zombies after they have exited.
# Also kill -0 fails (EPERM) for other users' processes, e.g. when a
# non-root user asks for the status of services root started.
pid_alive() {
    if [[ -d /proc/self ]]; then
        local stat="/proc/$1/stat" state
        [[ -r "$stat" ]] || return 1
        # Field 3 of /proc/PID/stat, after the ")" that ends the command name.
        state="$(sed 's/^.*) //' "$stat" 2>/dev/null | cut -d' ' -f1)" || return 1
        [[ -n "$state" && "$state" != Z ]]
    else
        kill -0 "$1" 2>/dev/null
    fi
}

# Prints the pid stored in file $1 if that process is alive and its command
# name is $2 (guards against stale pid files whose pid got reused).
live_pid() {
    local file=$1 comm=$2 pid
    [[ -s "$file" && -r "$file" ]] || return 1
    pid="$(tr -dc '0-9' <"$file")"
    [[ -n "$pid" ]] || return 1
    pid_alive "$pid" || return 1
    if [[ -r "/proc/$pid/comm" ]] && [[ "$(cat "/proc/$pid/comm")" != "$comm" ]]; then
        return 1
    fi
    printf '%s\n' "$pid"
}

# Runs CMD... with every inherited file descriptor above 2 closed (our lock
# fd 9, pipes leaked by whatever called us). A long-lived daemon holding such
# an fd would keep the lock taken forever or make a caller that reads the
# pipe until EOF hang. Callers redirect 0-2 themselves.
exec_without_extra_fds() {
    local fd
    local -a fds=()
    for fd in "/proc/$BASHPID/fd"/*; do
        fd=${fd##*/}
        [[ "$fd" =~ ^[0-9]+$ ]] && ((fd > 2)) && fds+=("$fd")
    done
    for fd in "${fds[@]}"; do
        # The listing itself showed a transient fd that is already closed.
        [[ -e "/proc/$BASHPID/fd/$fd" ]] && exec {fd}>&-
    done
    exec "$@"
}

# wait_until SECONDS CMD...: polls CMD every 0.25 s; fails after SECONDS.
wait_until() {
    local secs=$1
    shift
    local deadline=$((SECONDS + secs))
    until "$@"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.25
    done
}

# Waits for pid $1 to exit, up to $2 seconds.
wait_pid_gone() {
    local pid=$1 secs=$2
    local deadline=$((SECONDS + secs))
    while pid_alive "$pid"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.25
    done
}

# Pid of whatever listens on 127.0.0.1:$1 (best effort, needs ss; "-" if unknown).
listener_pid() {
    local pid=""
    if command -v ss >/dev/null 2>&1; then
        pid="$(ss -Hltnp "sport = :$1" 2>/dev/null | grep -o 'pid=[0-9]*' | head -n1 | cut -d= -f2 || true)"
    fi
    printf '%s\n' "${pid:--}"
}

validate_port() {
    if [[ ! "$2" =~ ^[0-9]+$ ]] || (($2 < 1 || $2 > 65535)); then
        die "$1 must be a TCP port number, got '$2'"
    fi
}

# ---------------------------------------------------------------------------
# Prerequisites: install missing Debian packages (root) or say how (non-root)
# ---------------------------------------------------------------------------

ensure_packages() {
    local -a pkgs=()
    local cmd
    for cmd in mariadbd mariadb-install-db; do
        command -v "$cmd" >/dev/null 2>&1 || { pkgs+=(mariadb-server); break; }
    done
    for cmd in mariadb mariadb-admin; do
        command -v "$cmd" >/dev/null 2>&1 || { pkgs+=(mariadb-client); break; }
    done
    command -v redis-server >/dev/null 2>&1 || pkgs+=(redis-server)
    command -v redis-cli >/dev/null 2>&1 || pkgs+=(redis-tools)
    # RabbitMQ binaries are only needed if nothing already answers on 5672.
    if ! port_open "$AMQP_PORT"; then
        for cmd in rabbitmq-server rabbitmqctl; do
            command -v "$cmd" >/dev/null 2>&1 || { pkgs+=(rabbitmq-server); break; }
        done
    fi
    ((${#pkgs[@]} > 0)) || return 0

    local install="DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${pkgs[*]}"
    if ((IS_ROOT)); then
        log "installing missing packages: ${pkgs[*]}"
        # Installing may auto-start system instances (policy-rc.d permitting);
        # harmless: we use side ports, and a system RabbitMQ on 5672 gets reused.
        apt-get update >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${pkgs[@]}" >&2
        hash -r
    else
        die "missing packages: ${pkgs[*]}; run as root:  apt-get update && $install"
    fi
}

# ---------------------------------------------------------------------------
# MariaDB (dedicated, row binlog, side port)
# ---------------------------------------------------------------------------

# Unix sockets are limited to ~108 bytes (sun_path), so with a deep repo path
# fall back to /tmp. The socket is only used by this script for admin work.
mariadb_socket() {
    local sock="$MARIADB_DIR/mariadb.sock"
    if ((${#sock} >= 100)); then
        sock="/tmp/cachesync-mariadb-$MYSQL_PORT.sock"
    fi
    printf '%s\n' "$sock"
}

# --no-defaults everywhere: a system /etc/mysql/my.cnf or ~/.my.cnf must not
# change which server we talk to or which credentials we use.
#
# `ping` exits 0 whenever the server answers, even with "access denied" or
# "host not allowed" -- but only without TLS: with TLS (the client default
# here) such an error packet arrives before the handshake completes and ping
# reports failure, so a server lacking root@127.0.0.1 would look dead.
mariadb_ping() {
    mariadb-admin --no-defaults --protocol=tcp -h127.0.0.1 -P"$MYSQL_PORT" -uroot \
        --skip-ssl --connect-timeout=2 ping >/dev/null 2>&1
}

mariadb_tcp() {
    mariadb --no-defaults --protocol=tcp -h127.0.0.1 -P"$MYSQL_PORT" -uroot \
        --connect-timeout=5 -N -B "$@"
}

mariadb_socket_client() {
    mariadb --no-defaults --protocol=socket --socket="$(mariadb_socket)" -uroot \
        --connect-timeout=5 -N -B "$@"
}

mariadb_fail() {
    local msg=$1
    {
        printf '[services] ERROR: MariaDB (port %s): %s\n' "$MYSQL_PORT" "$msg"
        printf '[services] log file: %s (also %s)\n' "$MARIADB_LOG" "$MARIADB_OUT"
        if [[ -r "$MARIADB_LOG" ]]; then
            printf '[services] last lines of %s:\n' "$MARIADB_LOG"
            tail -n 20 "$MARIADB_LOG" | sed 's/^/    /'
        fi
    } >&2
    exit 1
}

# Creates MARIADB_DIR owned by the user mariadbd will run as.
mariadb_prepare_dir() {
    mkdir -p "$MARIADB_DIR"
    if ((IS_ROOT)); then
        id mysql >/dev/null 2>&1 || die "user 'mysql' does not exist (is mariadb-server installed?)"
        chown mysql:mysql "$MARIADB_DIR"
        # mariadbd drops to 'mysql', which must be able to reach the folder.
        if command -v runuser >/dev/null 2>&1 && ! runuser -u mysql -- test -w "$MARIADB_DIR"; then
            die "user 'mysql' cannot write $MARIADB_DIR (a parent folder of the repo is not traversable?)"
        fi
    fi
}

# First-time initialisation of the data folder. The marker is written only
# after a successful install, so an interrupted init is redone from scratch.
mariadb_init() {
    [[ -f "$MARIADB_INIT_MARKER" ]] && return 0
    if [[ -e "$MARIADB_DATA" ]]; then
        log "mariadb: removing incomplete data folder from an interrupted init"
        rm -rf "$MARIADB_DATA"
    fi
    log "mariadb: initialising data folder $MARIADB_DATA"
    local -a args=(--no-defaults --datadir="$MARIADB_DATA"
        --auth-root-authentication-method=normal --skip-test-db)
    ((IS_ROOT)) && args+=(--user=mysql)
    if ! mariadb-install-db "${args[@]}" >"$MARIADB_INIT_LOG" 2>&1; then
        tail -n 20 "$MARIADB_INIT_LOG" | sed 's/^/    /' >&2
        die "mariadb: mariadb-install-db failed, see $MARIADB_INIT_LOG"
    fi
    ((IS_ROOT)) && chown -R mysql:mysql "$MARIADB_DATA"
    touch "$MARIADB_INIT_MARKER"
}

mariadb_start_process() {
    local sock
    sock="$(mariadb_socket)"
    rm -f "$sock" # stale socket from a crash would make mariadbd refuse to start
    local -a args=(
        --no-defaults
        --datadir="$MARIADB_DATA"
        --port="$MYSQL_PORT"
        --bind-address=127.0.0.1
        --socket="$sock"
        --pid-file="$MARIADB_PID"
        --log-error="$MARIADB_LOG"
        # Row-based binlog with full images + metadata: what the CDC reader needs.
        --server-id=1
        --log-bin="$MARIADB_DATA/binlog"
        --binlog-format=ROW
        --binlog-row-image=FULL
        --binlog-row-metadata=FULL
        --binlog-cache-size=1M
        # Per-user statement counters (information_schema.USER_STATISTICS): the read-path
        # tests and the read-storm scenario count MySQL queries on MySQL's side.
        --userstat=1
        # Don't let benchmark binlogs fill the disk forever.
        --binlog-expire-logs-seconds=172800
        # Test/bench settings: durability traded for speed, room for big rows
        # and many parallel test connections.
        --max-connections=500
        --innodb-flush-log-at-trx-commit=2
        --sync-binlog=0
        --innodb-buffer-pool-size=512M
        --max-allowed-packet=256M
        --character-set-server=utf8mb4
        --collation-server=utf8mb4_unicode_ci
        # No reverse DNS on connect: faster, and 127.0.0.1 always matches
        # root@127.0.0.1 (never root@localhost via a resolver).
        --skip-name-resolve
    )
    ((IS_ROOT)) && args+=(--user=mysql)
    # setsid + nohup + redirects: fully detached, survives this script and
    # the terminal; --no-defaults must be mariadbd's first argument.
    (exec_without_extra_fds setsid nohup mariadbd "${args[@]}") </dev/null >>"$MARIADB_OUT" 2>&1 &
    MARIADB_LAUNCH_PID=$!
}

# Makes sure root@127.0.0.1 with an empty password works over TCP (that is
# what CACHESYNC_TEST_MYSQL_URL uses); creates it through the socket if not.
mariadb_ensure_root_tcp() {
    mariadb_tcp -e 'SELECT 1' >/dev/null 2>&1 && return 0
    log "mariadb: root@127.0.0.1 cannot log in over TCP; creating it via the socket"
    mariadb_socket_client -e "
        CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY '';
        ALTER USER 'root'@'127.0.0.1' IDENTIFIED BY '';
        GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
        FLUSH PRIVILEGES;" >&2 ||
        mariadb_fail "could not create root@127.0.0.1 through socket $(mariadb_socket)"
    mariadb_tcp -e 'SELECT 1' >/dev/null 2>&1 ||
        mariadb_fail "root@127.0.0.1 with empty password still cannot connect over TCP"
}

mariadb_verify_binlog() {
    local got
    got="$(mariadb_tcp -e 'SELECT @@log_bin, @@binlog_format' 2>&1)" ||
        mariadb_fail "query failed: $got"
    got="$(printf '%s' "$got" | tr -s '[:space:]' ' ' | sed 's/ *$//')"
    [[ "$got" == "1 ROW" ]] || mariadb_fail "expected log_bin=1 binlog_format=ROW, got '$got'"
}

mariadb_up() {
    local pid
    if pid="$(live_pid "$MARIADB_PID" mariadbd)" && mariadb_ping; then
        mariadb_ensure_root_tcp # cheap when fine; repairs a dropped root@127.0.0.1
        log "mariadb: already running (port $MYSQL_PORT, pid $pid)"
        return 0
    fi
    if [[ -z "${pid:-}" ]] && port_open "$MYSQL_PORT"; then
        # Another checkout's instance (e.g. CI's fresh clone next to a developer's tree)
        # is as good as ours if it answers as root and logs row events.
        if mariadb_ping && mariadb_tcp -e 'SELECT 1' >/dev/null 2>&1 &&
            [[ "$(mariadb_tcp -e 'SELECT @@log_bin, @@binlog_format' 2>/dev/null | tr -s '[:space:]' ' ' | sed 's/ *$//')" == "1 ROW" ]]; then
            log "mariadb: reusing the server already on port $MYSQL_PORT (not started from this checkout; row binlog is on)"
            return 0
        fi
        die "mariadb: port $MYSQL_PORT is in use by something that is not a row-binlog MariaDB with passwordless root; stop it or set CACHESYNC_MYSQL_PORT"
    fi
    if [[ -n "${pid:-}" ]]; then
        # Our process is alive but not answering yet (e.g. still in crash
        # recovery): just wait for it below instead of starting a second one.
        log "mariadb: pid $pid exists but does not answer yet; waiting"
        MARIADB_LAUNCH_PID=$pid
    else
        mariadb_prepare_dir
        mariadb_init
        log "mariadb: starting on 127.0.0.1:$MYSQL_PORT (data $MARIADB_DATA)"
        mariadb_start_process
    fi

    # Wait until it answers; bail out early if the process died.
    local deadline=$((SECONDS + MYSQL_WAIT_SECS))
    until mariadb_ping; do
        pid_alive "$MARIADB_LAUNCH_PID" || mariadb_fail "mariadbd exited during startup"
        ((SECONDS < deadline)) || mariadb_fail "did not answer ping within ${MYSQL_WAIT_SECS}s"
        sleep 0.25
    done
    mariadb_ensure_root_tcp
    mariadb_verify_binlog
    log "mariadb: up (port $MYSQL_PORT, pid $(live_pid "$MARIADB_PID" mariadbd || echo '?'), row binlog on)"
}

mariadb_down() {
    local pid
    if ! pid="$(live_pid "$MARIADB_PID" mariadbd)"; then
        if port_open "$MYSQL_PORT"; then
            log "mariadb: port $MYSQL_PORT answers but not with a server started by this script; leaving it alone"
        else
            log "mariadb: not running"
        fi
        return 0
    fi
    log "mariadb: stopping pid $pid"
    # Clean shutdown first (flushes InnoDB), SIGTERM as a fallback (mariadbd
    # treats it as a normal shutdown too), SIGKILL only as a last resort.
    mariadb-admin --no-defaults --protocol=tcp -h127.0.0.1 -P"$MYSQL_PORT" -uroot \
        --connect-timeout=5 shutdown >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null || true
    if ! wait_pid_gone "$pid" 60; then
        log "mariadb: still running after 60s; sending SIGTERM"
        kill -TERM "$pid" 2>/dev/null || true
        wait_pid_gone "$pid" 30 || { kill -KILL "$pid" 2>/dev/null || true; wait_pid_gone "$pid" 10 || true; }
    fi
    log "mariadb: stopped"
}

mariadb_status() {
    local pid
    if pid="$(live_pid "$MARIADB_PID" mariadbd)" && mariadb_ping; then
        printf '%-9s up    port=%-5s pid=%s  data=%s\n' mariadb "$MYSQL_PORT" "$pid" "$MARIADB_DATA"
    elif [[ -z "${pid:-}" ]] && mariadb_ping; then
        # Answers, but our pid file is missing/unreadable (e.g. run as non-root).
        printf '%-9s up    port=%-5s pid=%s  (not started by this script, or pid file unreadable)\n' mariadb "$MYSQL_PORT" "$(listener_pid "$MYSQL_PORT")"
    elif [[ -n "${pid:-}" ]]; then
        printf '%-9s down  port=%-5s pid=%s  (process alive but not answering)\n' mariadb "$MYSQL_PORT" "$pid"
    else
        printf '%-9s down  port=%-5s pid=-\n' mariadb "$MYSQL_PORT"
    fi
}

# ---------------------------------------------------------------------------
# Redis (dedicated, side port, no persistence)
# ---------------------------------------------------------------------------

redis_ping() {
    [[ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" == PONG ]]
}

redis_fail() {
    {
        printf '[services] ERROR: Redis (port %s): %s\n' "$REDIS_PORT" "$1"
        printf '[services] log file: %s\n' "$REDIS_LOG"
        if [[ -r "$REDIS_LOG" ]]; then
            tail -n 20 "$REDIS_LOG" | sed 's/^/    /'
        fi
    } >&2
    exit 1
}

redis_start_process() {
    mkdir -p "$REDIS_DIR"
    # Daemonizes itself (and then points its stdio at /dev/null).
    # No RDB/AOF: tests want a blank Redis after every (re)start, which is
    # also what the fault tests expect from restart-redis.
    (exec_without_extra_fds redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --daemonize yes \
        --save "" --appendonly no --dir "$REDIS_DIR" \
        --pidfile "$REDIS_PID" --logfile "$REDIS_LOG") </dev/null >&2 ||
        redis_fail "redis-server failed to start"
    wait_until "$REDIS_WAIT_SECS" redis_ping || redis_fail "did not answer PING within ${REDIS_WAIT_SECS}s"
}

redis_up() {
    local pid
    if pid="$(live_pid "$REDIS_PID" redis-server)" && redis_ping; then
        log "redis: already running (port $REDIS_PORT, pid $pid)"
        return 0
    fi
    if [[ -z "${pid:-}" ]] && port_open "$REDIS_PORT"; then
        if redis_ping; then
            log "redis: reusing the server already on port $REDIS_PORT (not started from this checkout)"
            return 0
        fi
        die "redis: port $REDIS_PORT is in use by something that does not answer PING; stop it or set CACHESYNC_REDIS_PORT"
    fi
    if [[ -n "${pid:-}" ]]; then
        log "redis: pid $pid exists but does not answer yet; waiting"
        wait_until "$REDIS_WAIT_SECS" redis_ping || redis_fail "did not answer PING within ${REDIS_WAIT_SECS}s"
    else
        log "redis: starting on 127.0.0.1:$REDIS_PORT"
        redis_start_process
    fi
    log "redis: up (port $REDIS_PORT, pid $(live_pid "$REDIS_PID" redis-server || echo '?'))"
}

redis_down() {
    local pid
    if ! pid="$(live_pid "$REDIS_PID" redis-server)"; then
        if port_open "$REDIS_PORT"; then
            log "redis: port $REDIS_PORT answers but not with a server started by this script; leaving it alone"
        else
            log "redis: not running"
        fi
        return 0
    fi
    log "redis: stopping pid $pid"
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
    if ! wait_pid_gone "$pid" 15; then
        kill -TERM "$pid" 2>/dev/null || true
        wait_pid_gone "$pid" 10 || { kill -KILL "$pid" 2>/dev/null || true; wait_pid_gone "$pid" 5 || true; }
    fi
    rm -f "$REDIS_PID"
    log "redis: stopped"
}

redis_restart() {
    redis_down
    log "redis: starting on 127.0.0.1:$REDIS_PORT"
    redis_start_process
    log "redis: up (port $REDIS_PORT, pid $(live_pid "$REDIS_PID" redis-server || echo '?'))"
}

redis_status() {
    local pid
    if pid="$(live_pid "$REDIS_PID" redis-server)" && redis_ping; then
        printf '%-9s up    port=%-5s pid=%s\n' redis "$REDIS_PORT" "$pid"
    elif [[ -z "${pid:-}" ]] && redis_ping; then
        printf '%-9s up    port=%-5s pid=%s  (not started by this script, or pid file unreadable)\n' redis "$REDIS_PORT" "$(listener_pid "$REDIS_PORT")"
    else
        printf '%-9s down  port=%-5s pid=%s\n' redis "$REDIS_PORT" "${pid:--}"
    fi
}

# ---------------------------------------------------------------------------
# RabbitMQ (shared: reuse whatever listens on 5672)
# ---------------------------------------------------------------------------

rabbit_fail() {
    printf '[services] ERROR: RabbitMQ (port %s): %s\n[services] log files: %s\n' \
        "$AMQP_PORT" "$1" "$RABBIT_LOG_HINT" >&2
    exit 1
}

rabbit_up() {
    if port_open "$AMQP_PORT"; then
        if [[ -f "$RABBIT_MARKER" ]]; then
            log "rabbitmq: already running (port $AMQP_PORT, started by this script)"
        else
            log "rabbitmq: already running (port $AMQP_PORT, not managed by this script; reusing it)"
        fi
        return 0
    fi
    rm -f "$RABBIT_MARKER"
    log "rabbitmq: starting rabbitmq-server -detached (can take a while)"
    # Output to a file, not our stderr: a detached node holding our stderr
    # would hang callers that capture it.
    (exec_without_extra_fds rabbitmq-server -detached) </dev/null >"$RABBIT_START_LOG" 2>&1 ||
        rabbit_fail "rabbitmq-server -detached failed (see $RABBIT_START_LOG)"
    # Written right away so `down` can clean up even if the wait below fails.
    date -u +%FT%TZ >"$RABBIT_MARKER"
    # await_startup fails fast while the Erlang node is still booting, so poll
    # it; the AMQP port opening is the final criterion.
    local deadline=$((SECONDS + RABBIT_WAIT_SECS))
    until rabbitmqctl -q await_startup >/dev/null 2>&1 && port_open "$AMQP_PORT"; do
        ((SECONDS < deadline)) || rabbit_fail "did not start within ${RABBIT_WAIT_SECS}s"
        sleep 1
    done
    log "rabbitmq: up (port $AMQP_PORT, started by this script)"
}

rabbit_down() {
    if [[ ! -f "$RABBIT_MARKER" ]]; then
        if port_open "$AMQP_PORT"; then
            log "rabbitmq: not started by this script; leaving it running"
        else
            log "rabbitmq: not running"
        fi
        return 0
    fi
    log "rabbitmq: stopping (started by this script)"
    rabbitmqctl -q stop >&2 || log "rabbitmq: 'rabbitmqctl stop' failed (already stopped?)"
    rm -f "$RABBIT_MARKER"
    log "rabbitmq: stopped"
}

rabbit_status() {
    local managed="not managed by this script"
    [[ -f "$RABBIT_MARKER" ]] && managed="started by this script"
    if port_open "$AMQP_PORT"; then
        printf '%-9s up    port=%-5s pid=%s  (%s)\n' rabbitmq "$AMQP_PORT" "$(listener_pid "$AMQP_PORT")" "$managed"
    else
        printf '%-9s down  port=%-5s pid=-\n' rabbitmq "$AMQP_PORT"
    fi
}

# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------

# Serialise concurrent invocations (e.g. several test binaries calling `up`)
# so they don't race on init or start two servers.
take_lock() {
    mkdir -p "$SERVICES_DIR"
    if command -v flock >/dev/null 2>&1; then
        exec 9>"$SERVICES_DIR/.lock"
        flock -w 300 9 || die "could not lock $SERVICES_DIR/.lock within 300s"
    fi
}

main() {
    (($# == 1)) || { usage >&2; exit 2; }
    validate_port CACHESYNC_MYSQL_PORT "$MYSQL_PORT"
    validate_port CACHESYNC_REDIS_PORT "$REDIS_PORT"
    case "$1" in
    up)
        ensure_packages
        take_lock
        mariadb_up
        redis_up
        rabbit_up
        print_env
        ;;
    down)
        take_lock
        mariadb_down
        redis_down
        rabbit_down
        ;;
    env)
        print_env
        ;;
    status)
        mariadb_status
        redis_status
        rabbit_status
        ;;
    restart-redis)
        take_lock
        redis_restart
        ;;
    -h | --help | help)
        usage
        ;;
    *)
        usage >&2
        exit 2
        ;;
    esac
}

main "$@"
