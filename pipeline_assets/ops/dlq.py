"""Dead-letter queue operations: retry what now passes the contracts, alert when the DLQ grows."""

from __future__ import annotations

import base64
import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import msgspec
import polars as pl
from confluent_kafka import Consumer, TopicPartition

from shoplake.core import clock
from shoplake.core.ingest import Accepted, DlqRecord, Ingestor
from shoplake.core.kafka_io import KafkaWriter, Message, client_config
from shoplake.core.lake.io import LakePath, read_partition, stored_days, write_partition
from shoplake.core.platform.topics import DLQ_TOPIC, EVENTS_TOPIC

MAX_ATTEMPTS = 5
BASE_BACKOFF = timedelta(minutes=15)
HISTORY_SCHEMA = {
    "retry_key": pl.String,
    "event_id": pl.String,
    "reason": pl.String,
    "attempts": pl.Int64,
    "status": pl.String,  # replayed | rejected | gave_up
    "last_error": pl.String,
    "last_attempt_at": pl.Datetime("us", "UTC"),
    "next_attempt_at": pl.Datetime("us", "UTC"),
}
_dlq = msgspec.json.Decoder(DlqRecord)


@dataclass
class RetryReport:
    read: int = 0
    replayed: int = 0
    still_rejected: int = 0
    not_due: int = 0
    gave_up: int = 0


def read_dlq(bootstrap: str, topic: str = DLQ_TOPIC, timeout: float = 30) -> list[DlqRecord]:
    """Every record the DLQ holds now (assign + seek; no consumer-group state)."""
    group = f"shoplake-dlq-{uuid.uuid4().hex}"
    consumer = Consumer(
        client_config(bootstrap, **{"group.id": group, "enable.auto.commit": False})
    )
    try:
        parts = consumer.list_topics(topic, timeout=timeout).topics[topic].partitions
        ends, assign = {}, []
        for p in parts:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
            if high > low:
                ends[p] = high
                assign.append(TopicPartition(topic, p, low))
        out: list[DlqRecord] = []
        if assign:
            consumer.assign(assign)
            while ends:
                for msg in consumer.consume(1000, timeout=2):
                    if msg.error() or msg.partition() not in ends:
                        continue
                    out.append(_dlq.decode(msg.value()))
                    if msg.offset() + 1 >= ends[msg.partition()]:
                        del ends[msg.partition()]
        return out
    finally:
        consumer.close()


def raw_bytes(rec: DlqRecord) -> bytes:
    return base64.b64decode(rec.raw) if rec.raw_encoding == "base64" else rec.raw.encode()


def retry_key(rec: DlqRecord) -> str:
    return rec.event_id or hashlib.sha256(raw_bytes(rec)).hexdigest()[:32]


def load_history(path: LakePath) -> pl.DataFrame:
    days = stored_days(path)
    latest = read_partition(path, days[-1]) if days else None
    return pl.DataFrame(schema=HISTORY_SCHEMA) if latest is None else latest


def retry_dlq(
    bootstrap: str,
    ingestor: Ingestor,
    history_dir: LakePath,
    now: datetime | None = None,
    dlq_topic: str = DLQ_TOPIC,
    events_topic: str = EVENTS_TOPIC,
) -> RetryReport:
    """Re-validate due DLQ records; re-produce those that pass; record every attempt with backoff."""
    now = now or clock.now()
    history = {r["retry_key"]: r for r in load_history(history_dir).to_dicts()}
    report = RetryReport()
    replays: list[Message] = []
    seen: set[str] = set()
    for rec in read_dlq(bootstrap, dlq_topic):
        report.read += 1
        key = retry_key(rec)
        if key in seen:
            continue
        seen.add(key)
        past = history.get(key)
        if past and (past["status"] in ("replayed", "gave_up") or past["next_attempt_at"] > now):
            report.not_due += past["status"] == "rejected"
            continue
        attempts = (past["attempts"] if past else 0) + 1
        # stamped with the original receipt time: it lands on the arrival day it first had
        result = ingestor.accept(raw_bytes(rec), rec.received_at, trusted_tokens=True)
        if isinstance(result, Accepted):
            replays.append(
                Message(
                    events_topic,
                    result.key,
                    result.value,
                    result.timestamp_ms,
                    [("event_type", result.event_type.encode()), ("replayed_from", b"dlq")],
                )
            )
            status, error, report.replayed = "replayed", None, report.replayed + 1
        elif attempts >= MAX_ATTEMPTS:
            status, error, report.gave_up = "gave_up", result.error, report.gave_up + 1
        else:
            status, error, report.still_rejected = (
                "rejected",
                result.error,
                report.still_rejected + 1,
            )
        history[key] = {
            "retry_key": key,
            "event_id": rec.event_id,
            "reason": rec.reason,
            "attempts": attempts,
            "status": status,
            "last_error": error,
            "last_attempt_at": now,
            "next_attempt_at": now + BASE_BACKOFF * (2 ** (attempts - 1)),
        }
    if replays:
        writer = KafkaWriter(bootstrap, delivery_timeout_ms=30_000)
        try:
            writer.send_sync(replays)
        finally:
            writer.close()
    frame = pl.DataFrame(list(history.values()), schema=HISTORY_SCHEMA).sort("retry_key")
    write_partition(history_dir, now.date(), frame, {"as_of": now.isoformat(), **report.__dict__})
    return report


def dlq_size(bootstrap: str, topic: str = DLQ_TOPIC, timeout: float = 10) -> int:
    """Records the DLQ has received in all (sum of high watermarks)."""
    consumer = Consumer(client_config(bootstrap, **{"group.id": "shoplake-dlq-size"}))
    try:
        parts = consumer.list_topics(topic, timeout=timeout).topics[topic].partitions
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)[1]
            for p in parts
        )
    finally:
        consumer.close()
