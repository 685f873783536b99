"""The sensor on Kafka lag: how far the speed layer is behind shop.events, and whether it runs.

Lag is measured from the offsets in Bytewax's recovery store (what a restart resumes from)
against the topic's high watermarks. Each tick records an observation on the topic and on every
speed table (lag, state, rows, last write), so the UI shows it; crossing the lag threshold or the
stream going quiet sends one notification per change of state.
"""

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from pipeline_assets.sources.kafka_topics import topic_key
from pipeline_assets.speed.assets import speed_key
from resources import KafkaResource, LakeResource, NotifierResource
from shoplake.core import clock
from shoplake.core.notify import Notification
from shoplake.core.platform.topics import EVENTS_TOPIC
from shoplake.core.settings import get_settings
from shoplake.core.speed.progress import consumer_lag, read_offsets
from shoplake.core.speed.rows import TABLES
from shoplake.core.stream_config import runtime_from_env

LAG_THRESHOLD = get_settings().stream_lag_alert
DOWN_AFTER_SECONDS = 60.0  # no snapshot this long (it snapshots every 5 s) and lag > 0: down


@dataclass
class SpeedStatus:
    state: str  # running | lagging | down | never_started
    total_lag: int = 0
    lag: dict[str, int] = field(default_factory=dict)
    snapshot_age_seconds: float | None = None

    def describe(self, threshold: int) -> str:
        age = (
            ""
            if self.snapshot_age_seconds is None
            else f", last snapshot {self.snapshot_age_seconds:.0f}s ago"
        )
        return {
            "running": f"speed layer running, lag {self.total_lag:,} messages{age}",
            "lagging": f"speed layer lag {self.total_lag:,} messages is above {threshold:,}{age}",
            "down": f"speed layer is DOWN: no progress{age} with {self.total_lag:,} messages waiting. Start it with `shoplake stream`.",
            "never_started": "speed layer has never run here (no recovery store): start it with `shoplake stream`.",
        }[self.state]


def speed_status(
    recovery: Path,
    bootstrap: str,
    topic: str = EVENTS_TOPIC,
    threshold: int = LAG_THRESHOLD,
    down_after: float = DOWN_AFTER_SECONDS,
    now: float | None = None,
) -> SpeedStatus:
    parts = sorted(Path(recovery).glob("part-*.sqlite3*"))
    if not parts:
        return SpeedStatus("never_started")
    now = time.time() if now is None else now
    age = now - max(p.stat().st_mtime for p in parts)
    offsets = {k: v for k, v in read_offsets(recovery).items() if k[0] == topic}
    lag = consumer_lag(bootstrap, offsets) if offsets else {}
    total = sum(lag.values())
    state = "running"
    if age > down_after and total > 0:
        state = "down"
    elif total > threshold:
        state = "lagging"
    return SpeedStatus(state, total, {f"{t}/{p}": n for (t, p), n in sorted(lag.items())}, age)


def input_topic() -> str:
    """The events topic the stream reads (the first of SHOPLAKE_STREAM_TOPICS)."""
    return runtime_from_env().topics[0]


def table_observation(lake_root: str, table: str) -> dg.AssetObservation:
    """Rows written today and the age of the newest file: freshness without reading the data."""

    folder = Path(lake_root) / "speed" / table
    files = list(folder.glob("date=*/part-*.parquet"))
    today = clock.today().isoformat()
    metadata: dict = {"files": len(files)}
    if files:
        newest = max(f.stat().st_mtime for f in files)
        metadata["last_write"] = dg.MetadataValue.timestamp(newest)
        metadata["last_write_age_seconds"] = round(time.time() - newest, 1)
        metadata["files_today"] = len(list(folder.glob(f"date={today}/part-*.parquet")))
    return dg.AssetObservation(asset_key=speed_key(table), metadata=metadata)


@dg.sensor(
    name="speed_layer_sensor",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Kafka lag of the speed layer from its recovery offsets; alerts when it lags or stops.",
)
def speed_layer_sensor(
    context: dg.SensorEvaluationContext,
    kafka: KafkaResource,
    lake: LakeResource,
    notifier: NotifierResource,
):
    status = speed_status(
        get_settings().stream_recovery_dir, kafka.bootstrap_servers, input_topic(), LAG_THRESHOLD
    )
    message = status.describe(LAG_THRESHOLD)
    events = [
        dg.AssetObservation(
            asset_key=topic_key(EVENTS_TOPIC),
            metadata={
                "speed_layer": status.state,
                "speed_layer_lag": status.total_lag,
                "lag_by_partition": dg.MetadataValue.json(status.lag),
            },
        ),
        *(table_observation(lake.speed_lake_root, t) for t in TABLES),
    ]
    previous = json.loads(context.cursor) if context.cursor else {}
    if status.state != previous.get("state") and (status.state in ("lagging", "down") or previous):
        severity = {"down": "critical", "lagging": "warning"}.get(status.state, "info")
        notifier.send(
            Notification(
                title=f"Speed layer: {status.state.replace('_', ' ')}",
                text=message,
                severity=severity,
                source="speed_layer_sensor",
                fields={"lag": f"{status.total_lag:,}", "threshold": f"{LAG_THRESHOLD:,}"},
            )
        )
    if status.state in ("lagging", "down"):
        context.log.warning(message)
    context.update_cursor(json.dumps({"state": status.state, "lag": status.total_lag}))
    return dg.SensorResult(asset_events=events, skip_reason=message)


MAX_ALERTS_PER_TICK = 20


@dg.sensor(
    name="notify_speed_alerts",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Posts the speed layer's new anomaly alerts (bots, large purchases, spikes, drops, errors).",
)
def notify_speed_alerts(
    context: dg.SensorEvaluationContext, lake: LakeResource, notifier: NotifierResource
):
    from datetime import timedelta

    from shoplake.core.speed.tables import read_table

    since = clock.today() - timedelta(days=1)
    alerts = read_table("alerts", lake.speed_lake_root, start=since).sort(
        "window_start", "alert_id"
    )
    seen = set(json.loads(context.cursor)) if context.cursor else set()
    new = [a for a in alerts.to_dicts() if a["alert_id"] not in seen]
    for alert in new[:MAX_ALERTS_PER_TICK]:
        evidence = json.loads(alert["evidence"]) if alert["evidence"] else {}
        notifier.send(
            Notification(
                title=f"Anomaly: {alert['rule'].replace('_', ' ')}",
                text=f"{alert['subject']} in the window starting {alert['window_start']:%Y-%m-%d %H:%M:%S} UTC",
                severity=alert["severity"],
                source="speed_layer",
                fields={k: v for k, v in list(evidence.items())[:8]},
            )
        )
    if len(new) > MAX_ALERTS_PER_TICK:
        notifier.send(
            Notification(
                title=f"{len(new) - MAX_ALERTS_PER_TICK} more anomaly alerts",
                text="See the Live dashboard or the speed/alerts table.",
                severity="warning",
                source="speed_layer",
            )
        )
    # Remember the ids still in the window read, so the cursor stays bounded.
    context.update_cursor(json.dumps(sorted(set(alerts["alert_id"].to_list()))))
    return dg.SkipReason(f"{len(new)} new alert(s)")


defs = dg.Definitions(sensors=[speed_layer_sensor, notify_speed_alerts])
