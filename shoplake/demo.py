"""``make demo``: the foundation's main job, end to end on this machine."""

from __future__ import annotations

import os
import sys
import time
from datetime import UTC, datetime, timedelta

import httpx
from rich.console import Console
from rich.table import Table

from shoplake.platform.kafka import LocalKafka, wait_for_broker
from shoplake.platform.process import ProvisioningError, read_pid, spawn, stop_pid, tail
from shoplake.platform.topics import describe_topics, ensure_topics
from shoplake.settings import Settings, get_settings


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
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            resp = httpx.get(f"{settings.collector_url}/healthz", timeout=2)
            if resp.status_code == 200:
                return pid
            last = resp.text
        except httpx.TransportError as exc:
            last = str(exc)
        time.sleep(0.3)
    stop_pid(pid, 5)
    raise ProvisioningError(f"the collector did not become healthy ({last})\n{tail(logfile)}")


def stop_collector(settings: Settings) -> None:
    pidfile = settings.home / "run" / "collector.pid"
    if (pid := read_pid(pidfile, marker="collector")) is not None:
        stop_pid(pid, 10)
    pidfile.unlink(missing_ok=True)


def run_demo(days: int, users: int, keep_running: bool, console: Console) -> None:
    from shoplake.cli import _make_shopdb, print_report
    from shoplake.simulator import SimConfig, simulate
    from shoplake.simulator.sinks import HttpSink

    settings = get_settings()
    started_kafka = False
    if settings.kafka_provisioned:
        broker = LocalKafka.from_settings(settings)
        started_kafka = not broker.running()
        if not broker.installed():
            console.print("resolving Apache Kafka with Maven (first time only, ~1 min) ...")
        console.print(broker.start())
    else:
        wait_for_broker(settings.bootstrap_servers, timeout=30)
    for change in ensure_topics(settings.bootstrap_servers):
        console.print(f"  {change}")
    before = describe_topics(settings.bootstrap_servers)
    collector_pid = start_collector(settings)
    console.print(f"collector running (pid {collector_pid}) at {settings.collector_url}")
    try:
        start = datetime.now(UTC).date() - timedelta(days=days)
        config = SimConfig(start=start, days=days, users=users)
        sink = HttpSink(settings.collector_url, settings.write_keys[0])
        report = simulate(config, sink, _make_shopdb(settings))
        print_report(report, "collector")
        after = describe_topics(settings.bootstrap_servers)
        table = Table(
            "topic", "partitions", "landed this run", "total held", title="what landed in Kafka"
        )
        for name, info in after.items():
            added = info["messages"] - before.get(name, {}).get("messages", 0)
            table.add_row(name, str(info["partitions"]), str(added), str(info["messages"]))
        console.print(table)
        landed = after["shop.events"]["messages"] - before.get("shop.events", {}).get("messages", 0)
        dlq = after["shop.events.dlq"]["messages"] - before.get("shop.events.dlq", {}).get(
            "messages", 0
        )
        ok = landed == report.expected_accepted and dlq == report.expected_rejected
        verdict = "[green]matches[/]" if ok else "[red]DOES NOT match[/]"
        console.print(f"shop.events +{landed} / DLQ +{dlq} vs simulator's expectation "
                      f"{report.expected_accepted} / {report.expected_rejected}: {verdict}")  # fmt: skip
        if not ok:
            raise RuntimeError("what landed in Kafka differs from what the simulator sent")
    finally:
        if keep_running:
            console.print(
                "left running: 'shoplake kafka stop' and kill the collector pid to stop them"
            )
        else:
            stop_collector(settings)
            if started_kafka:
                console.print(LocalKafka.from_settings(settings).stop())
