#!/usr/bin/env python3
"""Renders docs/dashboard.png: the Grafana dashboard's panels, drawn from real data.

Run by scripts/render-dashboard.sh (which installs Prometheus, matplotlib and requests and
builds cachesync). Grafana itself cannot be installed here, so this script stands in for
it: it starts a local Prometheus scraping three `cachesync run` daemons (dual-write, mq,
binlog, each with the write API on), drives a load through their APIs (and, when the
binary has it, runs `cachesync bench` meanwhile for the benchmark-only panels), then asks
Prometheus' HTTP API for every panel's PromQL expression exactly as the dashboard JSON
holds it (Grafana's variables substituted as Grafana would: $strategy = All = `.*`,
$__rate_interval = 4 scrape intervals) and draws the panels in the dashboard's grid.

Everything it creates is named `cs_render_*` / `cachesync.render.*`, uses Redis database
9 of the test Redis, and is removed at the end (the RabbitMQ queues are reused by the
next run).
"""

import argparse
import datetime as dt
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import requests  # noqa: E402
from PIL import Image  # noqa: E402  (installed with matplotlib)

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "docker/grafana/dashboards/cachesync.json"
STRATEGIES = ["dual-write", "mq", "binlog"]
SCRAPE_INTERVAL_S = 2
RATE_INTERVAL = f"{4 * SCRAPE_INTERVAL_S}s"
REDIS_DB = 9
PROM_PORT = 19090
METRICS_PORTS = {"dual-write": 19464, "mq": 19465, "binlog": 19466}
BENCH_METRICS_PORT = 19467
API_PORTS = {"dual-write": 18481, "mq": 18482, "binlog": 18483}
COLORS = {"dual-write": "#5794f2", "mq": "#ff9830", "binlog": "#73bf69"}


def log(*args):
    print("[render]", *args, file=sys.stderr, flush=True)


def env(name, default):
    return os.environ.get(name, default)


MYSQL_URL = env("CACHESYNC_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3307")
REDIS_URL = env("CACHESYNC_TEST_REDIS_URL", "redis://127.0.0.1:6380")
AMQP_URL = env("CACHESYNC_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")


def mysql_args():
    # mysql://user[:password]@host:port
    rest = MYSQL_URL.split("://", 1)[1]
    creds, host = rest.rsplit("@", 1)
    user, _, password = creds.partition(":")
    host, _, port = host.partition(":")
    args = ["mariadb", "--no-defaults", "--protocol=tcp", f"-h{host}", f"-P{port or 3306}", f"-u{user}"]
    if password:
        args.append(f"-p{password}")
    return args


def sql(statement):
    subprocess.run(mysql_args() + ["-e", statement], check=True)


def redis_cli(*args):
    rest = REDIS_URL.split("://", 1)[1].split("/")[0]
    host, _, port = rest.rpartition("@")[2].partition(":")
    subprocess.run(["redis-cli", "-h", host, "-p", port or "6379", "-n", str(REDIS_DB), *args],
                   check=True, stdout=subprocess.DEVNULL)


def database(strategy):
    return "cs_render_" + strategy.replace("-", "")


def daemon_config(strategy):
    db = database(strategy)
    text = f"""strategy = "{strategy}"
[mysql]
url = "{MYSQL_URL}"
[redis]
url = "{REDIS_URL.rstrip('/')}/{REDIS_DB}"
[metrics]
listen = "127.0.0.1:{METRICS_PORTS[strategy]}"
[api]
listen = "127.0.0.1:{API_PORTS[strategy]}"
[[tables]]
name = "{db}.users"
key = "render:{strategy}:user:{{id}}"
version_column = "version"
"""
    if strategy == "binlog":
        text += f"""[binlog]
server_id = 4343
checkpoint_key = "render:binlog:checkpoint"
heartbeat_table = "{db}.heartbeat"
heartbeat_interval_ms = 100
"""
    if strategy == "mq":
        text += f"""[amqp]
url = "{AMQP_URL}"
exchange = "cachesync.render.x"
queue = "cachesync.render.q"
dead_letter_queue = "cachesync.render.dead"
outbox_table = "{db}.outbox"
publish = "outbox"
"""
    return text


def prometheus_config(with_bench):
    targets = [f"127.0.0.1:{METRICS_PORTS[s]}" for s in STRATEGIES]
    text = f"""global:
  scrape_interval: {SCRAPE_INTERVAL_S}s
scrape_configs:
  - job_name: cachesync
    static_configs:
      - targets: {json.dumps(targets)}
"""
    if with_bench:
        # As docker/prometheus/prometheus.yml: the bench's series are told apart from
        # the daemons' by a `bench/` prefix on their strategy label.
        text += f"""  - job_name: cachesync-bench
    static_configs:
      - targets: ["127.0.0.1:{BENCH_METRICS_PORT}"]
    metric_relabel_configs:
      - source_labels: [strategy]
        regex: (.+)
        target_label: strategy
        replacement: bench/$1
"""
    return text


class Processes:
    """Children this script started; stopped by their own ids at the end."""

    def __init__(self):
        self.children = []

    def start(self, name, args, workdir):
        out = open(workdir / f"{name}.log", "w")
        child = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.children.append((name, child))
        return child

    def stop_all(self):
        for name, child in reversed(self.children):
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for name, child in reversed(self.children):
            try:
                child.wait(timeout=40)
            except subprocess.TimeoutExpired:
                log(f"{name} did not stop on SIGTERM; killing pid {child.pid}")
                child.kill()
                child.wait()


def wait_http(url, what, child, timeout=120, headers=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if child is not None and child.poll() is not None:
            raise SystemExit(f"{what} exited with {child.returncode}; see its log")
        try:
            if requests.get(url, timeout=2, headers=headers).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{what}: {url} did not answer 200 within {timeout}s")


class Load:
    """Upserts of `users` rows through each daemon's write API at a target rate."""

    def __init__(self, phases, keys):
        self.phases = phases  # [(seconds, writes/s per daemon)]
        self.keys = keys
        self.stop = threading.Event()
        self.errors = {s: 0 for s in STRATEGIES}
        self.writes = {s: 0 for s in STRATEGIES}
        self.version = int(time.time() * 1000)
        self.lock = threading.Lock()

    def next_version(self):
        with self.lock:
            self.version += 1
            return self.version

    def rate_at(self, elapsed):
        for seconds, rate in self.phases:
            if elapsed < seconds:
                return rate
            elapsed -= seconds
        return 0

    def worker(self, strategy, index, workers, started):
        session = requests.Session()
        url = f"http://127.0.0.1:{API_PORTS[strategy]}/v1/tables/{database(strategy)}.users/rows"
        rng = random.Random(f"{strategy}-{index}")
        next_at = time.time()
        while not self.stop.is_set():
            rate = self.rate_at(time.time() - started) / workers
            if rate <= 0:
                return
            next_at += 1 / rate
            delay = next_at - time.time()
            if delay > 0:
                time.sleep(delay)
            row_id = rng.randint(1, self.keys)
            version = self.next_version()
            body = {"id": row_id, "email": f"user{row_id}@example.com",
                    "balance": f"{version % 100000}.25", "version": version}
            try:
                answer = session.put(url, json=body, timeout=10)
                ok = answer.status_code == 200
            except requests.RequestException:
                ok = False
            with self.lock:
                self.writes[strategy] += 1
                if not ok:
                    self.errors[strategy] += 1

    def run(self, workers=8):
        started = time.time()
        threads = [threading.Thread(target=self.worker, args=(s, i, workers, started), daemon=True)
                   for s in STRATEGIES for i in range(workers)]
        for t in threads:
            t.start()
        return threads


def prom_query_range(expr, start, end):
    answer = requests.get(f"http://127.0.0.1:{PROM_PORT}/api/v1/query_range",
                          params={"query": expr, "start": start, "end": end, "step": SCRAPE_INTERVAL_S},
                          timeout=30)
    answer.raise_for_status()
    body = answer.json()
    if body["status"] != "success":
        raise SystemExit(f"Prometheus refused {expr}: {body}")
    return body["data"]["result"]


def grafana_expr(expr):
    """The expression as Grafana sends it with $strategy = All and $__rate_interval."""
    return expr.replace('"$strategy"', '".*"').replace("$strategy", ".*").replace(
        "$__rate_interval", RATE_INTERVAL)


def legend(fmt, labels):
    out = fmt
    for key, value in labels.items():
        out = out.replace("{{" + key + "}}", value)
    return out


def color_of(name):
    base = name.split(" ")[0]
    bench = base.startswith("bench/")
    base = base.removeprefix("bench/").split(":")[0]
    return COLORS.get(base, "#b877d9"), bench


def draw(dashboard, start, end, out, subtitle):
    panels = dashboard["panels"]
    cols = 24 // panels[0]["gridPos"]["w"]
    rows = max(p["gridPos"]["y"] for p in panels) // panels[0]["gridPos"]["h"] + 1
    plt.rcParams.update({
        "figure.facecolor": "#111217", "axes.facecolor": "#181b1f", "axes.edgecolor": "#2c3235",
        "axes.labelcolor": "#ccccdc", "text.color": "#ccccdc", "xtick.color": "#8e8e9e",
        "ytick.color": "#8e8e9e", "grid.color": "#2c3235", "font.size": 9,
        # `$strategy` in the subtitle is text, not TeX math.
        "text.parse_math": False,
    })
    fig, axes = plt.subplots(rows, cols, figsize=(7 * cols, 3.6 * rows), squeeze=False)
    fig.suptitle(dashboard["title"], fontsize=16, x=0.01, ha="left", y=0.995)
    subtitle = "\n".join(textwrap.fill(line, 200) for line in subtitle.split("\n"))
    fig.text(0.01, 0.972, subtitle, fontsize=9, color="#8e8e9e", ha="left", va="top")
    for panel in panels:
        grid = panel["gridPos"]
        ax = axes[grid["y"] // grid["h"]][grid["x"] // grid["w"]]
        unit = panel["fieldConfig"]["defaults"].get("unit", "short")
        scale, ylabel = {"s": (1000, "ms"), "percentunit": (100, "%"), "ops": (1, "per second")}.get(
            unit, (1, ""))
        drawn = 0
        top = 0.0
        for target in panel["targets"]:
            for series in prom_query_range(grafana_expr(target["expr"]), start, end):
                name = legend(target.get("legendFormat", ""), series["metric"]) or json.dumps(series["metric"])
                points = [(dt.datetime.fromtimestamp(float(t)), float(v) * scale)
                          for t, v in series["values"] if v not in ("NaN", "+Inf", "-Inf")]
                if not points:
                    continue
                color, bench = color_of(name)
                style = ":" if "dead-lettered" in name else ("--" if bench else "-")
                ax.plot([p[0] for p in points], [p[1] for p in points], style, color=color,
                        linewidth=1.6, label=name)
                drawn += 1
                top = max(top, max(p[1] for p in points))
        ax.set_title(panel["title"], loc="left", fontsize=10.5, color="#d8d9da")
        ax.grid(True, linewidth=0.6)
        ax.set_ylabel(ylabel)
        ax.set_xlim(dt.datetime.fromtimestamp(start), dt.datetime.fromtimestamp(end))
        ax.xaxis.set_major_locator(mdates.SecondLocator(bysecond=[0, 30]))
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
        # Room above the data for the legend, as Grafana keeps it below the graph.
        ax.set_ylim(0, top * 1.35 if top > 0 else 1)
        if not drawn:
            ax.text(0.5, 0.5, "No data", transform=ax.transAxes, ha="center", va="center",
                    fontsize=12, color="#8e8e9e")
            continue
        ax.legend(loc="upper left", fontsize=7.5, frameon=False, ncol=3)
        if top == 0:
            # Overlapping lines at 0 would hide all but the last one drawn.
            ax.text(0.5, 0.45, "0 for every series above, the whole run", transform=ax.transAxes,
                    ha="center", va="center", fontsize=11, color="#8e8e9e")
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    # A palette of 96 colours keeps the lines' anti-aliasing and a third of the bytes.
    Image.open(out).convert("RGB").quantize(colors=96, method=Image.Quantize.MEDIANCUT).save(
        out, optimize=True)
    log(f"wrote {out}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--binary", required=True, help="the cachesync binary")
    parser.add_argument("--out", default=str(ROOT / "docs/dashboard.png"))
    parser.add_argument("--keys", type=int, default=1000, help="rows per strategy's table")
    parser.add_argument("--phases", default="60:50,60:150,30:50",
                        help="load phases SECONDS:WRITES_PER_SECOND per daemon, comma-separated")
    parser.add_argument("--bench-duration", default="20s",
                        help="cachesync bench --duration per strategy (bench runs after the first phase)")
    args = parser.parse_args()
    phases = [tuple(float(x) for x in p.split(":")) for p in args.phases.split(",")]
    dashboard = json.loads(DASHBOARD.read_text())
    has_bench = subprocess.run([args.binary, "bench", "--help"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL).returncode == 0
    if not has_bench:
        log("this cachesync has no `bench` command: the benchmark-only panels will show No data")

    workdir = Path(tempfile.mkdtemp(prefix="cachesync-render-"))
    procs = Processes()
    done = False
    try:
        log("fresh databases and Redis database", REDIS_DB)
        for s in STRATEGIES:
            db = database(s)
            sql(f"DROP DATABASE IF EXISTS {db}; CREATE DATABASE {db}; "
                f"CREATE TABLE {db}.users (id BIGINT UNSIGNED NOT NULL PRIMARY KEY, "
                "email VARCHAR(255) NOT NULL, name VARCHAR(255) NULL, balance DECIMAL(18, 4) NOT NULL DEFAULT 0, "
                "created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6), "
                "version BIGINT UNSIGNED NOT NULL DEFAULT 1)")
        redis_cli("FLUSHDB")

        (workdir / "prometheus.yml").write_text(prometheus_config(has_bench))
        prometheus = procs.start("prometheus", [
            "prometheus", f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'prom-data'}", f"--web.listen-address=127.0.0.1:{PROM_PORT}",
        ], workdir)
        wait_http(f"http://127.0.0.1:{PROM_PORT}/-/ready", "prometheus", prometheus)

        for s in STRATEGIES:
            (workdir / f"{s}.toml").write_text(daemon_config(s))
            child = procs.start(s, [args.binary, "run", "--config", str(workdir / f"{s}.toml")], workdir)
            wait_http(f"http://127.0.0.1:{API_PORTS[s]}/readyz", f"cachesync run ({s})", child)
        log("daemons ready; load phases (s, writes/s per daemon):", phases)

        start = time.time() - 5
        load = Load(phases, args.keys)
        threads = load.run()
        bench = None
        if has_bench:
            time.sleep(phases[0][0])
            (workdir / "bench.toml").write_text(
                f"""strategy = "binlog"
[mysql]
url = "{MYSQL_URL}"
[redis]
url = "{REDIS_URL.rstrip('/')}/{REDIS_DB}"
[amqp]
url = "{AMQP_URL}"
[binlog]
server_id = 4344
[metrics]
listen = "127.0.0.1:{BENCH_METRICS_PORT}"
[[tables]]
name = "cs_render_bench.unused"
key = "unused:{{id}}"
""")
            bench = procs.start("bench", [
                args.binary, "bench", "--config", str(workdir / "bench.toml"),
                "--strategies", ",".join(STRATEGIES), "--duration", args.bench_duration,
                "--keys", str(args.keys), "--rate", "300", "--readers", "4", "--read-rate", "1000",
                "--database", "cs_render_bench", "--key-prefix", "render:bench", "--quiet",
            ], workdir)
        for t in threads:
            t.join()
        if bench is not None:
            bench.wait(timeout=600)
            log("bench exited with", bench.returncode)
        # Let the last changes propagate and be scraped.
        time.sleep(4 * SCRAPE_INTERVAL_S)
        end = time.time()
        log("writes per daemon:", load.writes, "failed:", load.errors)

        total = sum(s for s, _ in phases)
        load_text = ", then ".join(f"{r:g}/s for {s:g} s" for s, r in phases)
        bench_text = (f"; `cachesync bench --strategies {','.join(STRATEGIES)} --duration {args.bench_duration}` "
                      "ran meanwhile (dashed; strategy label prefixed bench/)") if has_bench else \
            "; no `cachesync bench` in this build: benchmark-only panels empty"
        subtitle = (
            f"Rendered {dt.datetime.now().strftime('%Y-%m-%d %H:%M')} from a local Prometheus with the PromQL of "
            "docker/grafana/dashboards/cachesync.json (Grafana not available here; $strategy = All, "
            f"$__rate_interval = {RATE_INTERVAL}).\n"
            f"Three `cachesync run` daemons (solid lines; release build) on one 2-core machine with MariaDB 10.11, Redis, "
            f"RabbitMQ; upserts of {args.keys} rows through each daemon's write API: {load_text} "
            f"({total:g} s){bench_text}. scripts/render-dashboard.sh")
        draw(dashboard, start, end, args.out, subtitle)
        done = True
    finally:
        procs.stop_all()
        for s in STRATEGIES:
            try:
                sql(f"DROP DATABASE IF EXISTS {database(s)}")
            except subprocess.CalledProcessError:
                pass
        try:
            redis_cli("FLUSHDB")
        except subprocess.CalledProcessError:
            pass
        if done:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log(f"logs kept in {workdir}")


if __name__ == "__main__":
    main()
