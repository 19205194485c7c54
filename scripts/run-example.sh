#!/usr/bin/env bash
# The main job on a fresh machine: start the local services, load the demo schema,
# check the setup with `cachesync doctor`, then run the daemon on the example config
# until Ctrl-C.
#
#   scripts/run-example.sh [extra args for `cachesync run`]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

eval "$(scripts/services.sh up)"
port="${CACHESYNC_MYSQL_PORT:-3307}"
echo "[example] loading config/demo.sql into 127.0.0.1:$port" >&2
mariadb --protocol=tcp -h127.0.0.1 -P"$port" -uroot <config/demo.sql

cargo build --release --quiet
./target/release/cachesync doctor --config config/cachesync.toml
exec ./target/release/cachesync run --config config/cachesync.toml "$@"
