"""What the demo reads back: the speed layer catching up, counts per layer, and --once's checks."""

from __future__ import annotations

import json
import time
from datetime import date
from pathlib import Path

from rich.console import Console
from rich.table import Table

from pipeline_assets.speed.assets import reconcile_day
from resources import resources_for
from shoplake.core.days import days_between
from shoplake.core.platform.process import ProvisioningError
from shoplake.core.platform.topics import DLQ_TOPIC, EVENTS_TOPIC, describe_topics
from shoplake.core.settings import Settings
from shoplake.core.speed.progress import consumer_lag, read_offsets
from shoplake.core.speed.tables import read_table
from shoplake.dashboards import data
from shoplake.demo.services import Demo
from shoplake.demo.traffic import LiveTraffic


def wait_for_stream(settings: Settings, console: Console, timeout: float) -> dict:
    """Until the speed layer's durable offsets reach the high watermarks of shop.events."""
    recovery = settings.stream_recovery_dir
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
    deadline = time.monotonic() + timeout
    with console.status(f"waiting for the speed layer's {table} ..."):
        while time.monotonic() < deadline:
            if read_table(table, lake).height:
                return
            time.sleep(3)


def summary(demo: Demo, first: date, last: date, history, live: LiveTraffic | None) -> dict:
    """Counts per layer, read back from where they landed."""
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
    for mart in (
        "mart_daily_kpis",
        "fct_events",
        "fct_sessions",
        "fct_orders",
        "mart_daily_ctr",
        "mart_product_performance",
        "mart_rfm_segments",
    ):
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
        "ml user_daily_features": rows("ml", "user_daily_features"),
        "ml product_daily_features": rows("ml", "product_daily_features"),
        "ml user_anomalies": rows("ml", "user_anomalies"),
        "ml customer_segments": rows("ml", "customer_segments"),
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
    problems = []
    days = (last - first).days + 1
    if counts["gold mart_daily_kpis"] < days:
        problems.append(
            f"gold.mart_daily_kpis has {counts['gold mart_daily_kpis']} rows, expected {days}"
        )
    for key in (
        "bronze events",
        "silver events",
        "silver sessions",
        "speed window_metrics",
        "ml user_daily_features",
        "ml user_anomalies",
    ):
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
