#!/usr/bin/env bash
# What continuous verification ([verify]) costs the database: keys checked per second
# against the CPU time of the MariaDB server process, read from /proc/<pid>/stat.
#
# It starts a private MariaDB (row binlog, its own port and data directory, removed at
# the end) so that other clients of the shared test server do not blur the figures,
# loads one table of $ROWS rows, and for each rate in $RATES runs `cachesync run`
# (binlog strategy, $BIN) with `[verify] rows_per_second = <rate>, interval = 1` — rate 0
# runs it without [verify], the baseline: the tailer idle — and measures, over $WINDOW
# seconds after a warm-up, the keys checked (cachesync_verify_checked_total from
# /metrics) and the CPU ticks of mariadbd and of cachesync. Each rate runs $REPEAT times,
# interleaved; the summary gives medians. Redis is the shared one ($REDIS_URL), under a
# key prefix of its own that is deleted at the end.
#
#   cargo build --release && scripts/verify-cost.sh
#   ROWS=50000 RATES="0 1000 100000" WINDOW=20 REPEAT=5 scripts/verify-cost.sh
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-target/release/cachesync}
ROWS=${ROWS:-5000}
RATES=${RATES:-"0 500 2000 10000 1000000"}
WINDOW=${WINDOW:-30}
WARMUP=${WARMUP:-5}
REPEAT=${REPEAT:-3}
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6380}

[ -x "$BIN" ] || { echo "no $BIN: run cargo build --release first" >&2; exit 1; }
for tool in mariadb-install-db mariadbd mariadb mariadb-admin curl redis-cli awk; do
  command -v "$tool" >/dev/null || { echo "needs $tool on PATH" >&2; exit 1; }
done

work=$(mktemp -d /tmp/vcost.XXXXXX)
port=$(( 20000 + RANDOM % 20000 ))
metrics_port=$(( 40000 + RANDOM % 10000 ))
prefix="vcost$$"
server=""
daemon=""
cleanup() {
  [ -n "$daemon" ] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null || true
  [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null || true
  redis-cli -u "$REDIS_URL" --scan --pattern "$prefix:*" | xargs -r -n 1000 redis-cli -u "$REDIS_URL" unlink >/dev/null || true
  redis-cli -u "$REDIS_URL" --scan --pattern "{$prefix:*" | xargs -r -n 1000 redis-cli -u "$REDIS_URL" unlink >/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# A private MariaDB, as tests/common/mariadb.rs starts one.
user=()
if [ "$(id -u)" = 0 ]; then chown mysql:mysql "$work"; chmod 755 "$work"; user=(--user=mysql); fi
mariadb-install-db --no-defaults --datadir="$work/data" --auth-root-authentication-method=normal \
  --skip-test-db "${user[@]}" >"$work/install.log" 2>&1
mariadbd --no-defaults --datadir="$work/data" --port="$port" --bind-address=127.0.0.1 \
  --socket="$work/sock" --server-id=1 --skip-name-resolve --log-bin="$work/data/binlog" \
  --binlog-format=ROW --binlog-row-image=FULL --binlog-row-metadata=FULL "${user[@]}" \
  >"$work/mariadbd.out" 2>"$work/mariadbd.err" &
server=$!
sql() { mariadb --no-defaults -h127.0.0.1 -P"$port" -uroot "$@"; }
for _ in $(seq 600); do mariadb-admin --no-defaults -h127.0.0.1 -P"$port" -uroot ping >/dev/null 2>&1 && break; sleep 0.1; done
server_pid=$(cat "$(sql -N -e 'SELECT @@pid_file')")

sql -e "CREATE DATABASE vc; CREATE TABLE vc.items (id BIGINT PRIMARY KEY, name VARCHAR(64) NOT NULL,
  balance DECIMAL(12,2) NOT NULL, updated DATETIME(6) NOT NULL, note VARCHAR(255) NULL) ENGINE=InnoDB;
  SET SESSION max_recursive_iterations = 100000000;
  INSERT INTO vc.items WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < $ROWS)
  SELECT i, CONCAT('customer ', i), i * 1.25, '2024-01-01 00:00:00' + INTERVAL i SECOND,
         REPEAT('x', 100) FROM s;"

config() { # $1: rate (0: no [verify])
  cat <<EOF
strategy = "binlog"
[mysql]
url = "mysql://root@127.0.0.1:$port"
[redis]
url = "$REDIS_URL"
[metrics]
listen = "127.0.0.1:$metrics_port"
[binlog]
server_id = 77
checkpoint_key = "$prefix:checkpoint"
[[tables]]
name = "vc.items"
key = "$prefix:item:{id}"
EOF
  if [ "$1" != 0 ]; then
    printf '[verify]\ninterval = 1\nrows_per_second = %s\nbatch = 100\n' "$1"
  fi
}

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
checked() {
  curl -s "http://127.0.0.1:$metrics_port/metrics" |
    awk '/^cachesync_verify_checked_total\{/ {s += $NF} END {print s + 0}'
}
hz=$(getconf CLK_TCK)

echo "rows=$ROWS window=${WINDOW}s warmup=${WARMUP}s repeat=$REPEAT mariadbd pid=$server_pid" >&2
results="$work/results"
for round in $(seq "$REPEAT"); do
  for rate in $RATES; do
    config "$rate" >"$work/cachesync.toml"
    RUST_LOG=warn "$BIN" run --config "$work/cachesync.toml" 2>"$work/daemon.err" >/dev/null &
    daemon=$!
    # The first start loads the table (snapshot); later ones resume from the checkpoint.
    for _ in $(seq 1200); do
      [ "$(redis-cli -u "$REDIS_URL" exists "$prefix:checkpoint")" = 1 ] && break
      sleep 0.1
    done
    sleep "$WARMUP"
    db0=$(ticks "$server_pid"); cs0=$(ticks "$daemon"); k0=$(checked); t0=$(date +%s.%N)
    sleep "$WINDOW"
    db1=$(ticks "$server_pid"); cs1=$(ticks "$daemon"); k1=$(checked); t1=$(date +%s.%N)
    kill "$daemon"; wait "$daemon" 2>/dev/null || true; daemon=""
    awk -v r="$rate" -v k="$((k1 - k0))" -v db="$((db1 - db0))" -v cs="$((cs1 - cs0))" \
        -v t0="$t0" -v t1="$t1" -v hz="$hz" -v round="$round" 'BEGIN {
      s = t1 - t0
      printf "round %d  limit %8s  checked %9.0f keys/s  mariadbd %6.1f%% of a core  cachesync %6.1f%%\n",
        round, r, k / s, 100 * db / hz / s, 100 * cs / hz / s > "/dev/stderr"
      printf "%s %f %f %f\n", r, k / s, 100 * db / hz / s, 100 * cs / hz / s
    }' >>"$results"
  done
done

echo
echo "| rows_per_second limit | keys checked/s (median) | mariadbd CPU, % of a core (median) | over the idle baseline | mariadbd CPU-ms per 1000 keys | cachesync CPU, % of a core |"
echo "|---|---|---|---|---|---|"
median() { sort -g | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
base=$(awk '$1 == 0 {print $3}' "$results" | median)
for rate in $RATES; do
  keys=$(awk -v r="$rate" '$1 == r {print $2}' "$results" | median)
  db=$(awk -v r="$rate" '$1 == r {print $3}' "$results" | median)
  cs=$(awk -v r="$rate" '$1 == r {print $4}' "$results" | median)
  awk -v r="$rate" -v k="$keys" -v db="$db" -v base="$base" -v cs="$cs" 'BEGIN {
    label = (r == 0) ? "off (baseline)" : r
    extra = db - base
    # extra % of a core = extra * 10 CPU-ms per second, spread over k keys a second.
    per = (k > 0) ? sprintf("%.1f", extra * 10 * 1000 / k) : "—"
    printf "| %s | %.0f | %.1f | %+.1f | %s | %.1f |\n", label, k, db, extra, per, cs
  }'
done
