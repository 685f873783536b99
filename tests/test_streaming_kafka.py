"""The speed layer end to end on the real Kafka broker: `shoplake stream`'s processes with recovery,
killed with SIGKILL twice, end with exactly the tables the reference computes from the topic."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from dataclasses import replace
from datetime import date

import msgspec
import pytest
from bytewax.connectors.kafka import KafkaSourceMessage

from bench.kafka_util import consume_all
from shoplake.core.ingest import Ingestor
from shoplake.core.kafka_io import KafkaWriter, Message
from shoplake.core.pii import Pseudonymizer
from shoplake.core.platform.topics import TopicSpec, ensure_topics
from shoplake.core.speed.progress import consumer_lag, read_offsets
from shoplake.core.speed.rows import TABLES
from shoplake.core.speed.tables import read_table
from shoplake.core.stream_config import StreamConfig
from shoplake.simulator import FaultRates, SimConfig, simulate
from shoplake.simulator.sinks import KafkaSink
from streaming import reference
from streaming.launch import Launch, start, wait
from streaming.testing import replay_config
from tests.conftest import REPLAY_DAY, clean_env

pytestmark = pytest.mark.integration


def as_source_messages(records) -> list[KafkaSourceMessage]:
    return [
        KafkaSourceMessage(
            key=m.key(),
            value=m.value(),
            topic=m.topic(),
            partition=m.partition(),
            offset=m.offset(),
            timestamp=m.timestamp(),
        )
        for m in records
    ]


def committed(recovery) -> int:
    return sum(read_offsets(recovery).values())


def test_stream_survives_two_kills_without_loss_or_duplicates(
    kafka_bootstrap, tmp_path, monkeypatch
):
    tag = uuid.uuid4().hex[:8]
    events_topic, dlq_topic = f"stream-{tag}.events", f"stream-{tag}.dlq"
    ensure_topics(
        kafka_bootstrap,
        {
            events_topic: TopicSpec(events_topic, 6, -1, "delete"),
            dlq_topic: TopicSpec(dlq_topic, 3, -1, "delete"),
        },
    )
    monkeypatch.setattr("shoplake.simulator.sinks.EVENTS_TOPIC", events_topic)
    monkeypatch.setattr("shoplake.simulator.sinks.DLQ_TOPIC", dlq_topic)
    faults = FaultRates(duplicate=0.01, late=0.01, bot_burst=0.02, malformed_json=0.003)
    sim = SimConfig(start=REPLAY_DAY, days=2, users=24_000, seed=21, faults=faults)
    simulate(
        sim,
        KafkaSink(Ingestor(Pseudonymizer(b"k", "k1")), kafka_bootstrap),
        None,
        show_progress=False,
    )
    writer = KafkaWriter(kafka_bootstrap)  # two records only the stream can reject
    writer.send_sync(
        [
            Message(events_topic, b"visitor-x", b'{"event_type": "page_view"', 1_700_000_000_000),
            Message(events_topic, b"visitor-y", b"[1, 2]", 1_700_000_000_001),
        ]
    )
    writer.close()
    inputs = consume_all(kafka_bootstrap, events_topic, timeout=60) + consume_all(
        kafka_bootstrap, dlq_topic
    )
    total = len(inputs)
    assert total > 100_000

    home, recovery = tmp_path / "home", tmp_path / "recovery"
    env = clean_env()
    env.update(
        SHOPLAKE_HOME=str(home),
        SHOPLAKE_KAFKA_BOOTSTRAP=kafka_bootstrap,
        SHOPLAKE_STREAM_TOPICS=f"{events_topic},{dlq_topic}",
        SHOPLAKE_STREAM_DLQ_TOPIC=dlq_topic,
        SHOPLAKE_STREAM_SINKS="parquet",
        SHOPLAKE_STREAM_METRICS_PORT="0",
        SHOPLAKE_STREAM_DAILY_EMIT_SECONDS="1",
    )
    launch = Launch(recovery_dir=recovery, snapshot_seconds=1, eof=True)

    # Killed at about 30 % and 60 % of the input; resumed with another worker count each time.
    at_kill = []
    for fraction, workers in ((0.3, 1), (0.6, 2)):
        (proc,) = start(replace(launch, workers=workers), env)
        deadline = time.monotonic() + 180
        while (
            proc.poll() is None
            and committed(recovery) < fraction * total
            and time.monotonic() < deadline
        ):
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL, "the stream finished before it could be killed"
        at_kill.append(committed(recovery) / total)
    assert 0.3 <= at_kill[0] < at_kill[1] < 1, at_kill
    # Recovery time: from the restart until the resumed process commits progress past the kill.
    before = committed(recovery)
    t0 = time.monotonic()
    procs = start(replace(launch, workers=2), env)
    while committed(recovery) <= before and time.monotonic() - t0 < 120:
        time.sleep(0.05)
    recovery_s = time.monotonic() - t0
    print(f"\nrecovery after SIGKILL: progress resumed {recovery_s:.1f}s after restart")
    assert recovery_s < 60
    assert wait(procs, timeout=300) == 0

    # Every event was read, and the recovery state says so (the DLQ topic may have gained the
    # stream's own records after it was read).
    offsets = read_offsets(recovery)
    assert sum(offsets.values()) >= total
    lag = consumer_lag(kafka_bootstrap, offsets)
    assert {lag[(events_topic, p)] for p in range(6)} == {0}

    expected = reference.compute(
        as_source_messages(inputs), replay_config(StreamConfig(dlq_topic=dlq_topic))
    )
    lake = home / "lake"
    for table, cls in TABLES.items():
        got = {
            row.key(): row
            for row in (msgspec.convert(r, cls) for r in read_table(table, lake).to_dicts())
        }
        assert got == expected.tables.get(table, {}), table
    assert len(expected.tables["sessions"]) > 1000 and expected.tables["late_events"]
    assert any(r.rejected for r in expected.tables["window_metrics"].values())

    # The stream's own rejects reached the DLQ (at least once: the DLQ is consumed by key).
    own = [json.loads(m.value()) for m in consume_all(kafka_bootstrap, dlq_topic)]
    own = {(r["reason"], r["raw"]) for r in own if r["source"] == "stream"}
    assert own == {("malformed_json", '{"event_type": "page_view"'), ("not_an_object", "[1, 2]")}
    assert date.fromisoformat(REPLAY_DAY.isoformat()) in {
        k[0] for k in expected.tables["daily_totals"]
    }
