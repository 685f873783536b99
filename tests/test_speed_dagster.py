"""The speed layer seen from Dagster: the lag sensor against a real stream on the real broker."""

from __future__ import annotations

import json
import time
import uuid

import dagster as dg
import pytest

from pipeline_assets.speed.sensors import speed_layer_sensor, speed_status
from resources import KafkaResource, LakeResource, NotifierResource
from shoplake.core import clock
from shoplake.core.ingest import Ingestor
from shoplake.core.kafka_io import KafkaWriter, Message
from shoplake.core.notify import read_log
from shoplake.core.pii import Pseudonymizer
from shoplake.core.platform.topics import TopicSpec, ensure_topics
from shoplake.simulator import SimConfig, simulate
from shoplake.simulator.sinks import KafkaSink
from streaming.launch import Launch, start, wait
from tests.conftest import REPLAY_DAY, clean_env
from tests.test_notify import Receiver

pytestmark = pytest.mark.integration


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def test_lag_sensor_sees_progress_lag_and_a_stopped_stream(
    kafka_bootstrap, tmp_path, monkeypatch, receiver
):
    tag = uuid.uuid4().hex[:8]
    topic, dlq = f"lag-{tag}.events", f"lag-{tag}.dlq"
    ensure_topics(
        kafka_bootstrap,
        {topic: TopicSpec(topic, 3, -1, "delete"), dlq: TopicSpec(dlq, 1, -1, "delete")},
    )
    monkeypatch.setattr("shoplake.simulator.sinks.EVENTS_TOPIC", topic)
    monkeypatch.setattr("shoplake.simulator.sinks.DLQ_TOPIC", dlq)
    simulate(
        SimConfig(start=REPLAY_DAY, days=1, users=300, seed=5),
        KafkaSink(Ingestor(Pseudonymizer(b"k", "k1")), kafka_bootstrap),
        None,
        show_progress=False,
    )
    home = tmp_path / "home"
    recovery = home / "stream" / "recovery"
    env = clean_env()
    env.update(
        SHOPLAKE_HOME=str(home),
        SHOPLAKE_KAFKA_BOOTSTRAP=kafka_bootstrap,
        SHOPLAKE_STREAM_TOPICS=f"{topic},{dlq}",
        SHOPLAKE_STREAM_DLQ_TOPIC=dlq,
        SHOPLAKE_STREAM_SINKS="parquet",
        SHOPLAKE_STREAM_METRICS_PORT="0",
    )
    assert speed_status(recovery, kafka_bootstrap, topic).state == "never_started"
    assert wait(start(Launch(recovery_dir=recovery, snapshot_seconds=1, eof=True), env), 300) == 0

    caught_up = speed_status(recovery, kafka_bootstrap, topic, threshold=10)
    assert (caught_up.state, caught_up.total_lag) == ("running", 0)
    assert set(caught_up.lag) == {f"{topic}/{p}" for p in range(3)}

    writer = KafkaWriter(kafka_bootstrap)  # 40 more records the stream has not read
    writer.send_sync([Message(topic, f"v{i}".encode(), b"{}", clock.now_ms()) for i in range(40)])
    writer.close()
    behind = speed_status(recovery, kafka_bootstrap, topic, threshold=10)
    assert (behind.state, behind.total_lag) == ("lagging", 40)
    stopped = speed_status(recovery, kafka_bootstrap, topic, threshold=10, now=time.time() + 600)
    assert stopped.state == "down" and "shoplake stream" in stopped.describe(10)

    # The sensor: observations every tick, one notification per change of state.
    monkeypatch.setenv("SHOPLAKE_HOME", str(home))
    monkeypatch.setenv("SHOPLAKE_STREAM_TOPICS", f"{topic},{dlq}")
    monkeypatch.setattr("pipeline_assets.speed.sensors.LAG_THRESHOLD", 10)
    resources = {
        "kafka": KafkaResource(bootstrap_servers=kafka_bootstrap),
        "lake": LakeResource(root=str(home / "lake")),
        "notifier": NotifierResource(home=str(home), webhook_url=receiver.url),
    }
    context = dg.build_sensor_context(resources=resources)
    result = speed_layer_sensor(context)
    observed = {e.asset_key.to_user_string(): e.metadata for e in result.asset_events}
    assert observed["kafka/shop_events"]["speed_layer_lag"].value == 40
    assert observed["speed/window_metrics"]["files"].value > 0
    assert "lag 40 messages is above 10" in result.skip_reason.skip_message
    assert [b["text"].split("\n")[0] for b in receiver.bodies] == [
        ":warning: *Speed layer: lagging*"
    ]
    again = dg.build_sensor_context(resources=resources, cursor=context.cursor)
    speed_layer_sensor(again)
    assert len(receiver.bodies) == 1  # same state: no second message
    assert read_log(home)[0]["slack"] == "delivered"


def test_speed_alerts_are_posted_once_each(tmp_path, receiver):
    from pipeline_assets.speed.sensors import notify_speed_alerts
    from shoplake.core.speed.rows import Alert, alert_id
    from shoplake.core.speed.tables import ParquetWriter

    now = clock.now().replace(microsecond=0)
    lake = tmp_path / "lake"
    writer = ParquetWriter(lake)
    first = Alert(
        alert_id=alert_id("large_purchase", "v1", now),
        rule="large_purchase",
        severity="warning",
        window_start=now,
        subject="visitor v1",
        evidence=json.dumps({"order_total": 990.0, "average": 41.5}),
    )
    writer.upsert("alerts", [first, first])  # at-least-once: the same alert twice
    resources = {
        "lake": LakeResource(root=str(lake)),
        "notifier": NotifierResource(home=str(tmp_path), webhook_url=receiver.url),
    }
    context = dg.build_sensor_context(resources=resources)
    notify_speed_alerts(context)
    (body,) = receiver.bodies
    assert "Anomaly: large purchase" in body["text"] and "990.0" in json.dumps(body["blocks"])
    second = Alert(
        alert_id=alert_id("traffic_spike", "1m", now),
        rule="traffic_spike",
        severity="warning",
        window_start=now,
        subject="1m all",
        evidence=json.dumps({"events": 900, "previous": 100}),
    )
    writer.upsert("alerts", [first, second])
    notify_speed_alerts(dg.build_sensor_context(resources=resources, cursor=context.cursor))
    assert [b["text"].split("*")[1] for b in receiver.bodies] == [
        "Anomaly: large purchase",
        "Anomaly: traffic spike",
    ]
