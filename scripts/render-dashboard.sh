#!/usr/bin/env bash
# Renders docs/dashboard.png: the Grafana dashboard (docker/grafana/dashboards/
# cachesync.json) drawn from real data, for the README. Grafana is not installable here,
# so scripts/render-dashboard.py plays its part: a local Prometheus scrapes three
# `cachesync run` daemons (dual-write, mq, binlog) under a load written through their
# write APIs (plus `cachesync bench` when the binary has it), and every panel is drawn
# from Prometheus' answers to the dashboard's own PromQL expressions.
#
#   scripts/render-dashboard.sh [--out FILE] [--phases 60:50,60:150,30:50] [--keys N]
#
# Installs what is missing (as root: Debian's prometheus, python3-venv; matplotlib and
# requests into the git-ignored .services/render-venv), starts the test services
# (scripts/services.sh up), builds the release binary, and takes about 3-4 minutes.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"
log() { printf '[render] %s\n' "$*" >&2; }

need_apt=()
command -v prometheus >/dev/null || need_apt+=(prometheus)
command -v redis-cli >/dev/null || need_apt+=(redis-tools)
python3 -c 'import ensurepip, venv' 2>/dev/null || need_apt+=(python3-venv)
if ((${#need_apt[@]})); then
    [[ "$(id -u)" == 0 ]] || {
        log "install ${need_apt[*]} (apt-get, as root) first"
        exit 1
    }
    log "installing ${need_apt[*]}"
    apt-get update -q >/dev/null
    # The prometheus package's own service is not started in a container (policy-rc.d);
    # this script runs its own Prometheus on 127.0.0.1:19090 only.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need_apt[@]}" >/dev/null
fi

VENV="$ROOT/.services/render-venv"
if ! "$VENV/bin/python" -c 'import matplotlib, requests' 2>/dev/null; then
    log "installing matplotlib and requests into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q matplotlib requests
fi

eval "$(scripts/services.sh up)"
log "building the release binary"
cargo build --release --quiet --bin cachesync
exec "$VENV/bin/python" scripts/render-dashboard.py --binary "$ROOT/target/release/cachesync" "$@"
