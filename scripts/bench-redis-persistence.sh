#!/usr/bin/env bash
# What a real Redis restart costs write-back, with and without an append-only file.
#
#   scripts/bench-redis-persistence.sh [extra cachesync bench flags]
#
# Starts a private Redis on a side port (data under .services/redis-persistence/),
# runs `cachesync bench --strategies write-back --fault redis-data-loss` against it with
# a --fault-command that kill -9s that Redis and starts it again on the same port and
# data folder — once with `appendonly no` (nothing survives) and once with
# `appendonly yes` + `appendfsync everysec` (the queue survives up to about a second) —
# and prints both reports. MariaDB comes from scripts/services.sh (started if needed).
# The private Redis is stopped on exit, whatever happens.
#
# Environment: CACHESYNC_BIN (default target/release/cachesync, built if missing),
# CACHESYNC_PERSISTENCE_PORT (default 6391).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

port="${CACHESYNC_PERSISTENCE_PORT:-6391}"
dir="$PWD/.services/redis-persistence"
bin="${CACHESYNC_BIN:-target/release/cachesync}"
[ -x "$bin" ] || cargo build --release
eval "$(scripts/services.sh up)"

pidfile="$dir/redis.pid"
start_redis() { # $1: appendonly yes|no
    mkdir -p "$dir"
    redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --daemonize yes \
        --pidfile "$pidfile" --save "" --appendonly "$1" --appendfsync everysec \
        --logfile "$dir/redis.log" >/dev/null
    for _ in $(seq 100); do
        redis-cli -p "$port" ping >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    echo "private Redis on $port did not start; see $dir/redis.log" >&2
    return 1
}
stop_redis() {
    [ -f "$pidfile" ] && kill -9 "$(cat "$pidfile")" 2>/dev/null || true
    rm -f "$pidfile"
}
trap stop_redis EXIT

config="$dir/bench.toml"
mkdir -p "$dir"
cat >"$config" <<EOF
strategy = "binlog"
[mysql]
url = "${CACHESYNC_TEST_MYSQL_URL}"
[redis]
url = "redis://127.0.0.1:$port"
[binlog]
server_id = 4344
[metrics]
listen = "127.0.0.1:0"
[[tables]]
name = "unused.unused"
key = "unused:{id}"
EOF

for appendonly in no yes; do
    stop_redis
    rm -rf "$dir/appendonlydir"
    start_redis "$appendonly"
    echo "== appendonly $appendonly ==" >&2
    # The fault: kill -9, then the same server again on the same data folder.
    restart="kill -9 \$(cat '$pidfile'); sleep 0.2; redis-server --port $port --bind 127.0.0.1 --dir '$dir' --daemonize yes --pidfile '$pidfile' --save '' --appendonly $appendonly --appendfsync everysec --logfile '$dir/redis.log' >/dev/null"
    "$bin" bench --config "$config" --strategies write-back --fault redis-data-loss \
        --fault-command "$restart" --database cachesync_persistence --quiet "$@"
done
