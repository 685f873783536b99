"""``make demo``: the whole platform on this machine, from nothing, with live numbers.

Kafka (provisioned), the collector and the speed layer start; a week of history is simulated
through the collector; the speed layer catches up; Dagster backfills every closed day of the lake
in one run; then the Dagster UI, the dashboards and the metrics exporter serve while live traffic
flows at a steady rate. Ctrl-C stops exactly the processes this run started (by pid).
``--once`` runs a short live period instead, verifies the numbers and exits 0 (or 1).
"""

from __future__ import annotations

import signal
import sys
import time
from datetime import date
from pathlib import Path

from rich.console import Console
from rich.table import Table

from shoplake.collector.process import start_collector
from shoplake.core import clock
from shoplake.core.days import history_range
from shoplake.core.platform.kafka import LocalKafka, wait_for_broker
from shoplake.core.platform.process import ProvisioningError, tail
from shoplake.core.platform.topics import ensure_topics
from shoplake.core.settings import REPO_ROOT, Settings, get_settings
from shoplake.demo.readback import summary, verify, wait_for_rows, wait_for_stream
from shoplake.demo.services import Demo
from shoplake.demo.traffic import LiveTraffic
from shoplake.materialize import Materialization, materialize, run_env
from shoplake.simulator import SimConfig, SimReport, simulate
from shoplake.simulator.report import report_table
from shoplake.simulator.shopdb import ShopDB
from shoplake.simulator.sinks import HttpSink

BIN = Path(sys.executable).parent


def demo_env(settings: Settings, days: int) -> dict[str, str]:
    first, _ = history_range(days, clock.today())
    env = run_env(settings, first)
    env.setdefault("SHOPLAKE_PARTITIONS_START", first.isoformat())
    return env


def backfill(demo: Demo, first: date, last: date) -> None:
    """One Dagster run over every closed day (single-run backfill policy), recorded in the UI."""
    logfile = demo.run_dir / "backfill.log"
    demo.console.print(f"backfilling {first}..{last} through Dagster (log {logfile}) ...")
    t = time.perf_counter()
    with demo.console.status("Dagster: bronze -> silver -> gold ..."):
        code = materialize(Materialization(first, last), demo.env, logfile)
    if code != 0:
        raise ProvisioningError(f"the Dagster backfill failed:\n{tail(logfile, 40)}")
    demo.console.print(f"backfill done in {time.perf_counter() - t:.0f}s")


def start_platform(demo: Demo) -> None:
    """Stage 1: Kafka (provisioned unless one is configured), the topics, collector, stream."""
    settings, console = demo.settings, demo.console
    if settings.kafka_provisioned:
        broker = LocalKafka.from_settings(settings)
        demo.started_kafka = not broker.running()
        if not broker.installed():
            console.print("resolving Apache Kafka with Maven (first time only, about a minute) ...")
        console.print(broker.start())
    else:
        wait_for_broker(settings.bootstrap_servers, timeout=30)
    for change in ensure_topics(settings.bootstrap_servers):
        console.print(f"  {change}")
    if settings.pg_dsn:
        console.print(f"  shop database: Postgres at {settings.pg_dsn.rsplit('@', 1)[-1]}")
    demo.started.append(("collector", start_collector(settings, env=demo.env)))
    console.print(f"  collector: {settings.collector_url}")
    port = str(demo.stream_metrics_port)
    stream = [sys.executable, "-m", "shoplake.cli", "stream", "--metrics-port", port]
    demo.service("stream", stream, None)


def load_history(demo: Demo, first: date, days: int, users: int) -> SimReport:
    """Stage 2: days of simulated history through the collector; the speed layer catches up."""
    settings = demo.settings
    config = SimConfig(start=first, days=days, users=users)
    sink = HttpSink(settings.collector_url, settings.client_key(True))
    history = simulate(config, sink, ShopDB.from_settings(settings))
    demo.console.print(report_table(history, "collector"))
    wait_for_stream(settings, demo.console, timeout=600)
    return history


def serve(demo: Demo) -> None:
    """Stage 4: the Dagster UI and daemon, Dagster's metrics exporter, the dashboards and, for the
    local tracking store, the MLflow UI."""
    settings = demo.settings
    workspace = str(REPO_ROOT / "workspace.yaml")
    dagster = f"http://127.0.0.1:{settings.dagster_port}"
    exporter = f"http://127.0.0.1:{settings.dagster_exporter_port}"
    dashboards = f"http://127.0.0.1:{settings.dashboard_port}"
    webserver = [str(BIN / "dagster-webserver"), "-h", "127.0.0.1"]
    webserver += ["-p", str(settings.dagster_port), "-w", workspace]
    demo.service("dagster-webserver", webserver, f"{dagster}/server_info", timeout=180)
    demo.service("dagster-daemon", [str(BIN / "dagster-daemon"), "run", "-w", workspace], None)
    export = [sys.executable, "-m", "pipeline_assets.ops.exporter"]
    demo.service(
        "dagster-exporter",
        [*export, "--port", str(settings.dagster_exporter_port)],
        f"{exporter}/metrics",
    )
    app = str(REPO_ROOT / "shoplake/dashboards/app.py")
    streamlit = [str(BIN / "streamlit"), "run", app, "--server.headless", "true"]
    streamlit += ["--server.port", str(settings.dashboard_port)]
    streamlit += ["--browser.gatherUsageStats", "false"]
    demo.service("dashboards", streamlit, f"{dashboards}/_stcore/health")
    if settings.mlflow_tracking_uri is None:
        mlflow_ui = [str(BIN / "mlflow"), "ui", "--backend-store-uri", settings.tracking_uri]
        mlflow_ui += ["--host", "127.0.0.1", "--port", str(settings.mlflow_port), "--workers", "1"]
        demo.service("mlflow-ui", mlflow_ui, f"{mlflow_url(settings)}/health", timeout=120)


def mlflow_url(settings) -> str:
    """The MLflow UI: the one the demo serves, or the configured tracking server."""
    if settings.mlflow_tracking_uri and settings.mlflow_tracking_uri.startswith("http"):
        return settings.mlflow_tracking_uri
    return f"http://127.0.0.1:{settings.mlflow_port}"


def print_urls(demo: Demo) -> None:
    settings = demo.settings
    urls = Table("what", "where", title="open these")
    urls.add_row(
        "Dagster (lineage, partitions, checks)", f"http://127.0.0.1:{settings.dagster_port}"
    )
    urls.add_row(
        "Dashboards (Live, Commerce, Ads, Models, Data health)",
        f"http://127.0.0.1:{settings.dashboard_port}",
    )
    urls.add_row("MLflow (training runs, registered models)", mlflow_url(settings))
    urls.add_row("Prometheus: collector", f"{settings.collector_url}/metrics")
    urls.add_row("Prometheus: speed layer", f"http://127.0.0.1:{demo.stream_metrics_port}/metrics")
    urls.add_row(
        "Prometheus: Dagster", f"http://127.0.0.1:{settings.dagster_exporter_port}/metrics"
    )
    demo.console.print(urls)


def run_live(demo: Demo, live: LiveTraffic, wait: float | None, rate: float) -> None:
    """Stage 5: live traffic, for ``wait`` seconds or until Ctrl-C."""
    live.start()
    until = f"running {wait:.0f}s" if wait else "Ctrl-C stops everything this demo started"
    demo.console.print(f"live traffic at {rate:.0f} events/s; {until}")
    deadline = None if wait is None else time.monotonic() + wait
    while deadline is None or time.monotonic() < deadline:
        time.sleep(1)
        if live.error is not None:
            raise live.error
    live.stop()


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def run_demo(
    days: int, users: int, once: bool, duration: float | None, rate: float, console: Console
) -> int:
    settings = get_settings()
    demo = Demo(settings, console, demo_env(settings, days))
    signal.signal(signal.SIGTERM, _interrupt)  # `kill <pid>` stops the demo like Ctrl-C
    live: LiveTraffic | None = None
    first, last = history_range(days, clock.today())
    try:
        console.rule("1. platform")
        start_platform(demo)
        console.rule(f"2. {days} days of history through the collector ({first} .. today)")
        history = load_history(demo, first, days, users)
        console.rule("3. the lake, through Dagster")
        backfill(demo, first, last)
        console.rule("4. serving")
        serve(demo)
        print_urls(demo)
        live = LiveTraffic(settings, users, rate)
        run_live(demo, live, duration if duration is not None else (60 if once else None), rate)
        if once:
            # Windows leave the stream once every shard has passed them (or gone quiet for 90 s).
            wait_for_rows(settings.home / "lake", "window_metrics", console, timeout=240)
        counts = summary(demo, first, last, history, live)
        if not once:
            return 0
        problems = verify(demo, first, last, counts)
        for p in problems:
            console.print(f"[red]problem:[/] {p}")
        console.print(
            "[green]demo verified[/]" if not problems else "[red]demo FAILED verification[/]"
        )
        return 1 if problems else 0
    except KeyboardInterrupt:
        console.print("stopping ...")
        return 0
    finally:
        if live is not None and live.is_alive():
            live.stop()
        demo.stop_all()
