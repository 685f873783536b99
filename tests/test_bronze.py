"""Bronze extraction against a real broker: exact day bounds, stable bytes, retention guard."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from confluent_kafka import Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from pipeline_assets.bronze import kafka_day
from pipeline_assets.bronze.kafka_day import DayOutsideRetention, day_bounds_ms, extract_day
from shoplake.core.lake.io import DATA_FILE, MANIFEST, partition_dir, write_partition
from shoplake.core.platform.topics import TopicSpec, ensure_topics
from tests.conftest import TODAY

pytestmark = pytest.mark.integration
# Recent enough that the topics' retention keeps it for the test's duration.
DAY = TODAY - timedelta(days=2)


def produce(bootstrap: str, topic: str, rows: list[tuple[int, dict]]) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for ts, doc in rows:
        p.produce(
            topic, json.dumps(doc).encode(), doc.get("anonymous_id", "k").encode(), timestamp=ts
        )
    assert p.flush(30) == 0


def fresh_topic(bootstrap: str, partitions: int = 2) -> str:
    name = f"t.{uuid.uuid4().hex[:8]}"
    ensure_topics(bootstrap, {name: TopicSpec(name, partitions, 30 * 86_400_000, "delete")})
    return name


def test_exactly_the_records_of_the_day(kafka_bootstrap: str, tmp_path):
    topic = fresh_topic(kafka_bootstrap)
    start, end = day_bounds_ms(DAY)
    stamps = {
        "before": start - 1,
        "first": start,
        "noon": start + 12 * 3_600_000,
        "last": end - 1,
        "after": end,
        "a_day_later": end + 86_400_000,  # e.g. live traffic, before replayed history
    }
    rows = [
        (ts, {"event_id": name, "event_type": "page_view", "anonymous_id": "a"})
        for name, ts in stamps.items()
    ]
    rows.append(
        (start + 5000, {"event_id": "out_of_order", "event_type": "search", "anonymous_id": "a"})
    )
    produce(
        kafka_bootstrap, topic, rows
    )  # one key: one partition, "out_of_order" written after "after"

    x = extract_day(kafka_bootstrap, topic, DAY)
    assert sorted(x.frame["event_id"].to_list()) == ["first", "last", "noon", "out_of_order"]
    assert x.frame["kafka_offset"].is_sorted()
    assert (
        x.manifest["event_id_checksum"]
        == hashlib.sha256(b"first\nlast\nnoon\nout_of_order").hexdigest()
    )
    assert sum(p["rows"] for p in x.manifest["partitions"].values()) == 4

    # Written twice: the same bytes; the partition is replaced, not appended to.
    table = tmp_path / "bronze" / "events"
    first = write_partition(table, DAY, x.frame, x.manifest)
    digest = hashlib.sha256(
        (first.path / DATA_FILE).read_bytes() + (first.path / MANIFEST).read_bytes()
    ).hexdigest()
    again = write_partition(table, DAY, extract_day(kafka_bootstrap, topic, DAY).frame, x.manifest)
    assert (
        hashlib.sha256(
            (again.path / DATA_FILE).read_bytes() + (again.path / MANIFEST).read_bytes()
        ).hexdigest()
        == digest
    )
    assert [p.name for p in table.iterdir()] == [
        partition_dir(table, DAY).name
    ]  # no temp dirs left


def test_a_day_read_in_chunks_is_the_same_frame(kafka_bootstrap: str, monkeypatch):
    """Large days are accumulated in chunks (bounded Python lists); the result must not change."""
    topic = fresh_topic(kafka_bootstrap, partitions=3)
    start, _ = day_bounds_ms(DAY)
    produce(
        kafka_bootstrap,
        topic,
        [
            (
                start + 1000 * i,
                {"event_id": f"e{i:03d}", "event_type": "page_view", "anonymous_id": f"a{i % 7}"},
            )
            for i in range(60)
        ],
    )
    whole = extract_day(kafka_bootstrap, topic, DAY)
    monkeypatch.setattr(kafka_day, "CHUNK", 7)
    chunked = extract_day(kafka_bootstrap, topic, DAY)
    assert whole.frame.height == 60
    assert chunked.frame.equals(whole.frame)
    assert chunked.manifest == whole.manifest


def test_an_empty_day_is_an_empty_partition(kafka_bootstrap: str):
    topic = fresh_topic(kafka_bootstrap)
    x = extract_day(kafka_bootstrap, topic, DAY)
    assert x.frame.height == 0 and "event_id" in x.frame.columns


def test_a_day_past_retention_with_nothing_left_fails_fast(kafka_bootstrap: str):
    topic = fresh_topic(kafka_bootstrap, partitions=1)
    start, _ = day_bounds_ms(DAY)
    produce(kafka_bootstrap, topic, [(start + 1000, {"event_id": "gone"})])
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    for f in admin.delete_records([TopicPartition(topic, 0, 1)]).values():
        f.result(timeout=30)
    t = time.monotonic()
    old_day = DAY - timedelta(days=40)  # older than the topic's 30-day retention
    with pytest.raises(DayOutsideRetention, match="shoplake import"):
        extract_day(kafka_bootstrap, topic, old_day)
    assert time.monotonic() - t < 10
    assert (
        extract_day(kafka_bootstrap, topic, DAY + timedelta(days=1)).frame.height == 0
    )  # recent: fine


def test_a_day_kafka_no_longer_holds_fails_and_points_to_the_importer(kafka_bootstrap: str):
    topic = fresh_topic(kafka_bootstrap, partitions=1)
    start, _ = day_bounds_ms(DAY)
    produce(kafka_bootstrap, topic, [(start + i * 60_000, {"event_id": f"e{i}"}) for i in range(5)])
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    futures = admin.delete_records([TopicPartition(topic, 0, 3)])  # retention removed e0..e2
    for f in futures.values():
        f.result(timeout=30)
    time.sleep(0.5)
    with pytest.raises(DayOutsideRetention, match="shoplake import"):
        extract_day(kafka_bootstrap, topic, DAY)
    # The next day starts after the kept data: nothing was lost for it.
    assert extract_day(kafka_bootstrap, topic, DAY + timedelta(days=1)).frame.height == 0
    assert datetime.fromtimestamp(start / 1000, UTC).date() == DAY


def test_retriable_kafka_errors_are_retried_and_others_are_not():
    from confluent_kafka import KafkaError, KafkaException

    from pipeline_assets.bronze.kafka_day import retrying

    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise KafkaException(KafkaError(KafkaError.NOT_LEADER_FOR_PARTITION))
        return "offsets"

    assert retrying(flaky, timeout=10) == "offsets" and len(calls) == 3
    with pytest.raises(KafkaException):
        retrying(
            lambda: (_ for _ in ()).throw(
                KafkaException(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED))
            ),
            10,
        )
