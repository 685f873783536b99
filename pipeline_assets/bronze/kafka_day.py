"""Exact extraction of one arrival day from a Kafka topic.

A record belongs to day D when its Kafka timestamp (the collector's received_at) falls in D.

Per partition the scan starts at ``offsets_for_times(start of D)``: Kafka answers with the earliest
offset whose timestamp is at or after that time, so no earlier record can belong to D. The scan
ends at the high watermark read when the extraction starts, not at ``offsets_for_times(end of D)``:
timestamps are not monotonic (replayed history can sit after live records), so a record of D can
follow a record of D+1. Every record in that range whose timestamp is in D is kept: exact, and
bounded by the data since D (at most the topic's retention).
"""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import msgspec
import polars as pl
from confluent_kafka import OFFSET_END, Consumer, KafkaError, KafkaException, TopicPartition

from shoplake.core import clock
from shoplake.core.kafka_io import client_config
from shoplake.core.lake.bronze import BRONZE_SCHEMA, DLQ_SCHEMA


class DayOutsideRetention(RuntimeError):
    """Kafka no longer holds all of the requested day."""


class _Peek(msgspec.Struct):
    event_id: str | None = None
    event_type: str | None = None
    reason: str | None = None


_peek = msgspec.json.Decoder(_Peek)


@dataclass
class DayExtract:
    frame: pl.DataFrame
    manifest: dict[str, Any]


def day_bounds_ms(day: date) -> tuple[int, int]:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return int(start.timestamp() * 1000), int((start + timedelta(days=1)).timestamp() * 1000)


def _consumer(bootstrap: str) -> Consumer:
    return Consumer(
        {
            **client_config(bootstrap),
            "group.id": f"shoplake-bronze-{uuid.uuid4().hex}",  # offsets are never committed
            "enable.auto.commit": False,
            "enable.partition.eof": False,
            "auto.offset.reset": "earliest",
            "fetch.max.bytes": 64 * 1024 * 1024,
            "max.partition.fetch.bytes": 16 * 1024 * 1024,
        }
    )


def _first_timestamp(consumer: Consumer, tp: TopicPartition, timeout: float) -> int | None:
    consumer.assign([tp])
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error():
                return msg.timestamp()[1]
        return None
    finally:
        consumer.unassign()


def _retention_ms(bootstrap: str, topic: str, timeout: float) -> int:
    from confluent_kafka.admin import AdminClient, ConfigResource

    admin = AdminClient(client_config(bootstrap))
    res = ConfigResource(ConfigResource.Type.TOPIC, topic)
    configs = admin.describe_configs([res], request_timeout=timeout)[res].result(timeout=timeout)
    return int(configs["retention.ms"].value)


def beyond_retention(day: date, retention_ms: int, now_ms: int) -> bool:
    """Whether time-based retention may have removed records of ``day``: its start is older than
    ``retention_ms`` before now. Unlimited retention (-1) removes nothing by time, so an empty
    partition under it was emptied some other way and counts as beyond retention too."""
    start_ms, _ = day_bounds_ms(day)
    return retention_ms < 0 or start_ms < now_ms - retention_ms


def _guard_retention(
    consumer: Consumer,
    bootstrap: str,
    topic: str,
    partition: int,
    low: int,
    high: int,
    day: date,
    start_ms: int,
    timeout: float,
) -> None:
    """Raise DayOutsideRetention when records of ``day`` may have been deleted from this partition."""
    where = f"{topic} partition {partition}"
    if low < high:
        first_ts = _first_timestamp(
            consumer, TopicPartition(topic, partition, low), min(timeout, 10)
        )
        if first_ts is not None and first_ts > start_ms:
            kept = datetime.fromtimestamp(first_ts / 1000, UTC).isoformat()
            raise DayOutsideRetention(
                f"{where} now starts at {kept}: Kafka has removed part of {day}. "
                "Land that history with 'shoplake import' instead."
            )
        return
    # Every record ever written here is gone. Time-based retention only removes days older than
    # retention.ms; anything else (retention -1, explicit deletes) cannot be told apart: refuse.
    if beyond_retention(day, _retention_ms(bootstrap, topic, timeout), clock.now_ms()):
        raise DayOutsideRetention(
            f"{where} holds no records any more ({low} were removed) and {day} is outside its "
            f"retention: Kafka no longer has that day. Land it with 'shoplake import' instead."
        )


def retrying(call, timeout: float):
    """``call()``, retried with backoff while Kafka says the error is retriable (a leader not
    elected yet on a new topic, a leader moving): an extraction should not fail on those."""
    deadline = time.monotonic() + timeout
    delay = 0.1
    while True:
        try:
            return call()
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            retriable = isinstance(err, KafkaError) and (
                err.retriable() or err.code() == KafkaError.NOT_LEADER_FOR_PARTITION
            )
            if not retriable or time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


CHUNK = 200_000


def _frame(cols: dict[str, list], schema: dict[str, Any]) -> pl.DataFrame:
    """The accumulated column lists as a typed frame; the lists are emptied."""
    frame = pl.DataFrame(
        {
            k: pl.Series(k, v, dtype=pl.Int64 if k == "kafka_timestamp" else schema[k])
            for k, v in cols.items()
        }
    ).with_columns(pl.col("kafka_timestamp").cast(pl.Datetime("ms", "UTC")))
    for v in cols.values():
        v.clear()
    return frame


def extract_day(
    bootstrap: str,
    topic: str,
    day: date,
    timeout: float = 30.0,
    dlq: bool = False,
) -> DayExtract:
    """Every record of ``topic`` whose timestamp falls in ``day``, sorted by (partition, offset)."""
    start_ms, end_ms = day_bounds_ms(day)
    consumer = _consumer(bootstrap)
    try:
        md = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        if md is None or md.error is not None:
            raise RuntimeError(
                f"topic {topic} not found at {bootstrap}: run 'shoplake kafka topics'"
            )
        parts = sorted(md.partitions)
        ranges: dict[int, tuple[int, int]] = {}
        begins = retrying(
            lambda: consumer.offsets_for_times(
                [TopicPartition(topic, p, start_ms) for p in parts], timeout=timeout
            ),
            timeout,
        )
        for b in begins:
            low, high = retrying(
                lambda b=b: consumer.get_watermark_offsets(
                    TopicPartition(topic, b.partition), timeout=timeout
                ),
                timeout,
            )
            if low > 0:
                _guard_retention(
                    consumer, bootstrap, topic, b.partition, low, high, day, start_ms, timeout
                )
            begin = high if b.offset in (-1, OFFSET_END) else max(b.offset, low)
            if high > begin:
                ranges[b.partition] = (begin, high)

        schema = DLQ_SCHEMA if dlq else BRONZE_SCHEMA
        cols: dict[str, list] = {k: [] for k in schema}
        chunks: list[pl.DataFrame] = []  # Python lists are flushed to Arrow every CHUNK rows
        stats: dict[int, dict[str, int]] = {}
        if ranges:
            consumer.assign([TopicPartition(topic, p, b) for p, (b, _) in ranges.items()])
            remaining = dict(ranges)
            deadline = time.monotonic() + max(timeout, 60)
            while remaining:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"reading {topic} for {day} stalled; partitions left: {sorted(remaining)}"
                    )
                batch = consumer.consume(num_messages=5000, timeout=1.0)
                if batch:
                    deadline = time.monotonic() + max(timeout, 60)
                for msg in batch:
                    err = msg.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            continue
                        raise RuntimeError(f"reading {topic}: {err}")
                    p, off = msg.partition(), msg.offset()
                    if p not in remaining or off >= remaining[p][1]:
                        continue
                    if off + 1 >= remaining[p][1]:
                        del remaining[p]
                        consumer.incremental_unassign([TopicPartition(topic, p)])
                    ts = msg.timestamp()[1]
                    if not (start_ms <= ts < end_ms):
                        continue
                    value = msg.value() or b""
                    try:
                        peek = _peek.decode(value)
                    except (msgspec.DecodeError, msgspec.ValidationError):
                        peek = _Peek()
                    key = msg.key()
                    cols["kafka_partition"].append(p)
                    cols["kafka_offset"].append(off)
                    cols["kafka_timestamp"].append(ts)
                    cols["key"].append(key.decode(errors="replace") if key else None)
                    cols["event_id"].append(peek.event_id)
                    cols["event_type"].append(peek.event_type)
                    cols["value"].append(value.decode(errors="replace"))
                    if dlq:
                        cols["reason"].append(peek.reason)
                    s = stats.setdefault(p, {"first_offset": off, "last_offset": off, "rows": 0})
                    s["first_offset"] = min(s["first_offset"], off)
                    s["last_offset"] = max(s["last_offset"], off)
                    s["rows"] += 1
                    if len(cols["value"]) >= CHUNK:
                        chunks.append(_frame(cols, schema))
    finally:
        consumer.close()

    chunks.append(_frame(cols, schema))
    frame = pl.concat(chunks, rechunk=True).sort("kafka_partition", "kafka_offset")
    ids = sorted(i for i in frame["event_id"].to_list() if i)
    manifest = {
        "topic": topic,
        "date": day.isoformat(),
        "partitions": {str(p): stats[p] for p in sorted(stats)},
        "scan": {str(p): {"from": b, "to": e} for p, (b, e) in sorted(ranges.items())},
        "event_id_checksum": hashlib.sha256("\n".join(ids).encode()).hexdigest(),
    }
    return DayExtract(frame, manifest)
