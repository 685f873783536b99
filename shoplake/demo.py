"""``make demo``: the whole platform on this machine, from nothing, with live numbers.

Kafka (provisioned), the collector and the speed layer start; a week of history is simulated
through the collector; the speed layer catches up; Dagster backfills every closed day of the lake
in one run; then the Dagster UI, the dashboards and the metrics exporter serve while live traffic
flows at a steady rate. Ctrl-C stops exactly the processes this run started (by pid).
``--once`` runs a short live period instead, verifies the numbers and exits 0 (or 1).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from shoplake import clock
from shoplake.days import days_between, history_range, last_closed_day
from shoplake.materialize import Materialization, materialize, run_env
from shoplake.platform.kafka import LocalKafka, wait_for_broker
from shoplake.platform.process import (
    ProvisioningError,
    pid_alive,
    read_pid,
    spawn,
    stop_pid,
    tail,
)
from shoplake.platform.topics import DLQ_TOPIC, EVENTS_TOPIC, describe_topics, ensure_topics
from shoplake.settings import ENV_VARS, REPO_ROOT, Settings, get_settings

BIN = Path(sys.executable).parent


def _port(name: str, default: str) -> int:
    return int(os.environ.get(name) or ENV_VARS.get(name) or default)


DAGSTER_PORT = _port("SHOPLAKE_DAGSTER_PORT", "3000")
DASHBOARD_PORT = _port("SHOPLAKE_DASHBOARD_PORT", "8501")
EXPORTER_PORT = _port("SHOPLAKE_DAGSTER_EXPORTER_PORT", "9200")
STREAM_METRICS_PORT = _port("SHOPLAKE_STREAM_METRICS_PORT", "9108")


def start_collector(
    settings: Settings, env: dict[str, str] | None = None, timeout: float = 30, workers: int = 1
) -> int:
    """Start ``shoplake collector`` in the background; wait until /healthz says Kafka is reachable."""
    run = settings.home / "run"
    run.mkdir(parents=True, exist_ok=True)
    pidfile, logfile = run / "collector.pid", run / "collector.log"
    if (pid := read_pid(pidfile, marker="collector")) is not None:
        return pid
    cmd = [sys.executable, "-m", "shoplake.cli", "collector", "--workers", str(workers)]
    pid = spawn(cmd, logfile, pidfile, env=env or dict(os.environ))
    try:
        wait_http(f"{settings.collector_url}/healthz", timeout, logfile)
    except ProvisioningError:
        stop_pid(pid, 5)
        raise
    return pid


def stop_collector(settings: Settings) -> None:
    pidfile = settings.home / "run" / "collector.pid"
    if (pid := read_pid(pidfile, marker="collector")) is not None:
        stop_pid(pid, 10)
    pidfile.unlink(missing_ok=True)


def wait_http(url: str, timeout: float, logfile: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            resp = httpx.get(url, timeout=2)
            if resp.status_code == 200:
                return
            last = f"HTTP {resp.status_code}: {resp.text[:200]}"
        except httpx.TransportError as exc:
            last = str(exc)
        time.sleep(0.5)
    raise ProvisioningError(
        f"{url} did not answer within {timeout:.0f}s ({last})\n{tail(logfile) if logfile else ''}"
    )


def stop_group(pid: int, grace: float = 15) -> None:
    """SIGTERM the process group the demo started (its children too), then SIGKILL."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and pid_alive(pid):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


@dataclass
class Demo:
    settings: Settings
    console: Console
    env: dict[str, str]
    started: list[tuple[str, int]] = field(default_factory=list)
    started_kafka: bool = False

    @property
    def run_dir(self) -> Path:
        return self.settings.home / "run"

    def service(self, name: str, cmd: list[str], health: str | None, timeout: float = 90) -> int:
        """Start ``cmd`` detached unless a previous one still runs (then it is not ours to stop)."""
        pidfile, logfile = self.run_dir / f"{name}.pid", self.run_dir / f"{name}.log"
        marker = next((c for c in cmd if "." in c and "/" not in c), Path(cmd[0]).name)
        if (pid := read_pid(pidfile, marker=marker)) is not None:
            self.console.print(f"  {name}: already running (pid {pid}), left as it is")
            return pid
        pid = spawn(cmd, logfile, pidfile, env=self.env)
        self.started.append((name, pid))
        if health:
            wait_http(health, timeout, logfile)
        self.console.print(f"  {name}: pid {pid} (log {logfile})")
        return pid

    def stop_all(self) -> None:
        """Stop what this run started, newest first. A second Ctrl-C must not leave orphans, so
        interrupts are ignored until every process is down."""
        previous = {
            sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            for name, pid in reversed(self.started):
                try:
                    if name == "collector":
                        stop_pid(pid, 10)
                    else:
                        stop_group(pid)
                except Exception as exc:  # keep stopping the others
                    self.console.print(f"  [red]could not stop {name} (pid {pid}): {exc}[/]")
                    continue
                (self.run_dir / f"{name}.pid").unlink(missing_ok=True)
                self.console.print(f"  stopped {name} (pid {pid})")
            self.started.clear()
            if self.started_kafka:
                self.console.print(f"  {LocalKafka.from_settings(self.settings).stop()}")
                self.started_kafka = False
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def demo_env(settings: Settings, days: int) -> dict[str, str]:
    first, _ = history_range(days, clock.today())
    env = run_env(settings, first)
    env.setdefault("SHOPLAKE_PARTITIONS_START", first.isoformat())
    return env


def wait_for_stream(settings: Settings, console: Console, timeout: float) -> dict:
    """Until the speed layer's durable offsets reach the high watermarks of shop.events."""
    from streaming.progress import consumer_lag, read_offsets

    recovery = settings.home / "stream" / "recovery"
    deadline = time.monotonic() + timeout
    lag: dict = {}
    with console.status("speed layer catching up ...") as status:
        while time.monotonic() < deadline:
            offsets = {k: v for k, v in read_offsets(recovery).items() if k[0] == EVENTS_TOPIC}
            if offsets:
                lag = consumer_lag(settings.bootstrap_servers, offsets)
                total = sum(lag.values())
                status.update(f"speed layer catching up: lag {total:,} messages")
                if total == 0:
                    return lag
            time.sleep(2)
    raise ProvisioningError(
        f"the speed layer did not catch up within {timeout:.0f}s (lag {lag}); see "
        f"{settings.home / 'run' / 'stream.log'}"
    )


def wait_for_rows(lake: Path, table: str, console: Console, timeout: float) -> None:
    from streaming.sinks import read_table

    deadline = time.monotonic() + timeout
    with console.status(f"waiting for the speed layer's {table} ..."):
        while time.monotonic() < deadline:
            if read_table(table, lake).height:
                return
            time.sleep(3)


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


class LiveTraffic(threading.Thread):
    """Steady live traffic: yesterday's simulated day replayed at ``rate`` events/s, stamped now."""

    def __init__(self, settings: Settings, users: int, rate: float):
        super().__init__(daemon=True, name="live-traffic")
        self.settings, self.users, self.rate = settings, users, rate
        self.stop_event = threading.Event()
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        from shoplake.simulator import SimConfig, simulate
        from shoplake.simulator.sinks import HttpSink

        seed = 1000
        try:
            while not self.stop_event.is_set():
                sink = StoppableSink(
                    HttpSink(
                        self.settings.collector_url, self.settings.client_key(False), replay=False
                    ),
                    self.stop_event,
                    self,
                )
                day = last_closed_day(clock.today())
                config = SimConfig(start=day, days=1, users=self.users, seed=seed, rate=self.rate)
                simulate(config, sink, None, show_progress=False)
                seed += 1  # new event ids each lap: the same ids would be dropped as duplicates
        except StopTraffic:
            pass
        except BaseException as exc:  # reported by the summary, never silently
            self.error = exc

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=30)


class StopTraffic(Exception):
    pass


class StoppableSink:
    """Ends the simulation at the next batch once the demo stops; counts what it sent."""

    def __init__(self, inner, stop: threading.Event, counter: LiveTraffic):
        self.inner, self.stop, self.counter = inner, stop, counter
        self.results = inner.results

    def write(self, records) -> None:
        if self.stop.is_set():
            raise StopTraffic
        self.inner.write(records)
        self.counter.sent += len(records)

    def close(self) -> None:
        self.inner.close()


def summary(demo: Demo, first: date, last: date, history, live: LiveTraffic | None) -> dict:
    """Counts per layer, read back from where they landed."""
    from shoplake.dashboards import data
    from streaming.sinks import read_table

    src = data.Sources.from_settings(demo.settings)
    lake = demo.settings.home / "lake"
    topics = describe_topics(demo.settings.bootstrap_servers)

    def rows(layer: str, table: str) -> int:
        total = 0
        for m in (lake / layer / table).glob("date=*/_manifest.json"):
            if first.isoformat() <= m.parent.name[5:] <= last.isoformat():
                total += json.loads(m.read_text()).get("rows", 0)
        return total

    marts = {}
    for mart in ("mart_daily_kpis", "fct_events", "fct_sessions", "fct_orders", "mart_daily_ctr",
                 "mart_product_performance", "mart_rfm_segments"):  # fmt: skip
        marts[mart] = data.gold(src, f"select count(*) as n from gold.{mart}")["n"][0]
    speed = {
        t: read_table(t, lake).height
        for t in ("window_metrics", "daily_totals", "sessions", "alerts")
    }
    out = {
        "kafka shop.events": topics[EVENTS_TOPIC]["messages"],
        "kafka shop.events.dlq": topics[DLQ_TOPIC]["messages"],
        "simulated history (accepted / rejected)": f"{history.expected_accepted:,} / {history.expected_rejected:,}",
        "bronze events": rows("bronze", "events"),
        "bronze DLQ": rows("bronze", "dlq_events"),
        "silver events": rows("silver", "events"),
        "silver quarantined": rows("silver", "events_quarantine"),
        "silver sessions": rows("silver", "sessions"),
        **{f"gold {k}": v for k, v in marts.items()},
        **{f"speed {k}": v for k, v in speed.items()},
        "live events sent": live.sent if live else 0,
    }
    alerts = read_table("alerts", lake)
    if not alerts.is_empty():
        for rule, n in alerts.group_by("rule").len().sort("rule").iter_rows():
            out[f"  alerts: {rule}"] = n
    table = Table("what", "count", title="shoplake demo")
    for k, v in out.items():
        table.add_row(k, f"{v:,}" if isinstance(v, int) else str(v))
    demo.console.print(table)
    return out


def verify(demo: Demo, first: date, last: date, counts: dict) -> list[str]:
    """What --once checks before exiting 0. Each line is a problem; empty means all good.

    Speed vs gold runs the platform's own check (speed_layer_reconciliation) for every day, on
    the same input: the speed totals of the Kafka arrival days silver read for that day. Live
    traffic keeps delivering late events for closed days, which gold gets at the next daily run;
    they arrive today, so they do not count on either side here.
    """
    from pipeline_assets.speed.assets import reconcile_day
    from resources import resources_for

    problems = []
    days = (last - first).days + 1
    if counts["gold mart_daily_kpis"] < days:
        problems.append(
            f"gold.mart_daily_kpis has {counts['gold mart_daily_kpis']} rows, expected {days}"
        )
    for key in ("bronze events", "silver events", "silver sessions", "speed window_metrics"):
        if not counts[key]:
            problems.append(f"{key} is empty")
    resources = resources_for(demo.settings)
    worst = 0.0
    for day in days_between(first, last):
        result = reconcile_day(resources["lake"], resources["warehouse"], day)
        diffs = [v.value for k, v in result.metadata.items() if k.endswith("_rel_diff")]
        worst = max([worst, *diffs])
        if not result.passed:
            problems.append(f"{day}: {result.description}")
    demo.console.print(f"speed vs gold, largest relative difference over {days} days: {worst:.4%}")
    return problems


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def run_demo(days: int, users: int, once: bool, duration: float | None, rate: float,
             console: Console) -> int:  # fmt: skip
    from shoplake.cli import _make_shopdb, print_report
    from shoplake.simulator import SimConfig, simulate
    from shoplake.simulator.sinks import HttpSink

    settings = get_settings()
    demo = Demo(settings, console, demo_env(settings, days))
    signal.signal(signal.SIGTERM, _interrupt)  # `kill <pid>` stops the demo like Ctrl-C
    live: LiveTraffic | None = None
    first, last = history_range(days, clock.today())
    try:
        console.rule("1. platform")
        if settings.kafka_provisioned:
            broker = LocalKafka.from_settings(settings)
            demo.started_kafka = not broker.running()
            if not broker.installed():
                console.print(
                    "resolving Apache Kafka with Maven (first time only, about a minute) ..."
                )
            console.print(broker.start())
        else:
            wait_for_broker(settings.bootstrap_servers, timeout=30)
        for change in ensure_topics(settings.bootstrap_servers):
            console.print(f"  {change}")
        if settings.pg_dsn:
            console.print(f"  shop database: Postgres at {settings.pg_dsn.rsplit('@', 1)[-1]}")
        demo.started.append(("collector", start_collector(settings, env=demo.env)))
        console.print(f"  collector: {settings.collector_url}")
        demo.service("stream", [sys.executable, "-m", "shoplake.cli", "stream",
                                "--metrics-port", str(STREAM_METRICS_PORT)], None)  # fmt: skip

        console.rule(f"2. {days} days of history through the collector ({first} .. today)")
        config = SimConfig(start=first, days=days, users=users)
        history = simulate(config, HttpSink(settings.collector_url, settings.client_key(True)),
                           _make_shopdb(settings))  # fmt: skip
        print_report(history, "collector")
        wait_for_stream(settings, console, timeout=600)

        console.rule("3. the lake, through Dagster")
        backfill(demo, first, last)

        console.rule("4. serving")
        demo.service("dagster-webserver", [str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p",
                     str(DAGSTER_PORT), "-w", str(REPO_ROOT / "workspace.yaml")],
                     f"http://127.0.0.1:{DAGSTER_PORT}/server_info", timeout=180)  # fmt: skip
        demo.service("dagster-daemon", [str(BIN / "dagster-daemon"), "run", "-w",
                     str(REPO_ROOT / "workspace.yaml")], None)  # fmt: skip
        demo.service("dagster-exporter", [sys.executable, "-m", "pipeline_assets.ops.exporter",
                     "--port", str(EXPORTER_PORT)], f"http://127.0.0.1:{EXPORTER_PORT}/metrics")  # fmt: skip
        demo.service("dashboards", [str(BIN / "streamlit"), "run",
                     str(REPO_ROOT / "shoplake/dashboards/app.py"), "--server.headless", "true",
                     "--server.port", str(DASHBOARD_PORT), "--browser.gatherUsageStats", "false"],
                     f"http://127.0.0.1:{DASHBOARD_PORT}/_stcore/health")  # fmt: skip
        live = LiveTraffic(settings, users, rate)
        live.start()
        urls = Table("what", "where", title="open these")
        urls.add_row("Dagster (lineage, partitions, checks)", f"http://127.0.0.1:{DAGSTER_PORT}")
        urls.add_row(
            "Dashboards (Live, Commerce, Ads, Data health)", f"http://127.0.0.1:{DASHBOARD_PORT}"
        )
        urls.add_row("Prometheus: collector", f"{settings.collector_url}/metrics")
        urls.add_row("Prometheus: speed layer", f"http://127.0.0.1:{STREAM_METRICS_PORT}/metrics")
        urls.add_row("Prometheus: Dagster", f"http://127.0.0.1:{EXPORTER_PORT}/metrics")
        console.print(urls)

        wait = duration if duration is not None else (60 if once else None)
        console.print(f"live traffic at {rate:.0f} events/s; "
                      + (f"running {wait:.0f}s" if wait else "Ctrl-C stops everything this demo started"))  # fmt: skip
        deadline = None if wait is None else time.monotonic() + wait
        while deadline is None or time.monotonic() < deadline:
            time.sleep(1)
            if live.error is not None:
                raise live.error
        live.stop()
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
