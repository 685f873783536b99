"""What the speed layer computes on: a slim :class:`LiveEvent` decoded from a Kafka message with
the contracts, or a :class:`Reject` saying why not.

Event time follows silver exactly: both use :mod:`shoplake.core.contracts.event_time`, and a future
event is excluded as silver quarantines it.

Every record is assigned a *shard*: its Kafka partition and a hash of its key (the visitor) into
``sub_shards`` buckets. A shard therefore holds whole visitors and reads one partition in offset
order, so per-shard results do not depend on how partitions interleave.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from functools import lru_cache

import msgspec
from bytewax.connectors.kafka import KafkaError, KafkaSourceMessage

from shoplake.core import clock, rules
from shoplake.core.contracts import ContractViolation, decode_event
from shoplake.core.contracts.event_time import event_time, is_future
from shoplake.core.ingest import MAX_EVENT_BYTES, DlqRecord

FUTURE_EVENT = "future_event"
SOURCE_ERROR = "kafka_source_error"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class LiveEvent(msgspec.Struct, frozen=True, gc=False):
    """One accepted event, reduced to what the live outputs read. Times are tz-aware UTC; the
    ``*_ms`` twins are the same instants in epoch milliseconds for window arithmetic."""

    event_id: str
    event_type: str
    anonymous_id: str
    event_at: datetime
    received_at: datetime
    event_ms: int
    received_ms: int
    platform: str
    device_type: str  # "unknown" when the client did not say, as in gold
    is_bot_ua: bool
    shard: str
    partition: int
    offset: int
    product_id: str | None = None
    order_id: str | None = None
    revenue_cents: int = 0  # purchase total in cents: sums are exact whatever the order

    @property
    def event_date(self):
        return self.event_at.date()


class Reject(msgspec.Struct, frozen=True, gc=False):
    """A record that is not an event for the live outputs. ``dlq`` holds the DlqRecord JSON to
    produce when the stream itself rejected it (not for records already in the DLQ topic, nor
    for future events: they are valid and silver quarantines them)."""

    reason: str
    received_ms: int
    shard: str
    kind: str  # "rejected" (counts toward the error rate) | "future"
    dlq: bytes | None = None
    event_id: str | None = None


_dlq_encoder = msgspec.json.Encoder()
_dlq_decoder = msgspec.json.Decoder(DlqRecord)


def ms(ts: datetime) -> int:
    """Epoch milliseconds of a tz-aware datetime (exact for millisecond timestamps)."""
    delta = ts - EPOCH
    return delta.days * 86_400_000 + delta.seconds * 1000 + delta.microseconds // 1000


def from_ms(value: int) -> datetime:
    return EPOCH + timedelta(milliseconds=value)


def shard_of(partition: int, key: bytes | None, sub_shards: int) -> str:
    """``"<partition>.<bucket>"``: stable across processes and restarts (not hash()).

    The bucket hash must be independent of the producer's partitioner. librdkafka partitions by
    CRC32 % partitions, so a CRC32 bucket would share factors with it (6 partitions x 8 buckets:
    only 24 of the 48 shards ever got a record, and windows waited for the empty ones).
    """
    if not key:
        return f"{partition}.0"
    bucket = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") % sub_shards
    return f"{partition}.{bucket}"


def dlq_shard(partition: int) -> str:
    return f"dlq.{partition}"


def all_shards(partitions: int, sub_shards: int, dlq_partitions: int = 0) -> tuple[str, ...]:
    """Every shard the records of those partitions can land in."""
    events = [f"{p}.{b}" for p in range(partitions) for b in range(sub_shards)]
    return tuple(events + [dlq_shard(p) for p in range(dlq_partitions)])


# The rule is shoplake.core.rules'; a stream sees few distinct user agents, so it is cached.
is_bot_agent = lru_cache(maxsize=20_000)(rules.is_bot_agent)


def _kafka_ms(msg: KafkaSourceMessage) -> int | None:
    ts = msg.timestamp
    return ts[1] if ts and ts[0] != 0 and ts[1] >= 0 else None


def decode_message(
    msg: KafkaSourceMessage | KafkaError, sub_shards: int, dlq_topic: str, now_ms: int | None = None
) -> LiveEvent | Reject | None:
    """A Kafka record of the events topic (or the DLQ topic, or a source error) -> what it is.

    Returns None for the stream's own DLQ records read back from the DLQ topic: they were counted
    when the stream rejected them.
    """
    if isinstance(msg, KafkaError):
        src = msg.msg
        received = _kafka_ms(src) or now_ms or clock.now_ms()
        record = DlqRecord(
            reason=SOURCE_ERROR,
            error=str(msg.err),
            raw="",
            raw_bytes=0,
            received_at=from_ms(received),
            source="stream",
        )
        shard = shard_of(src.partition or 0, src.key, sub_shards)
        return Reject(SOURCE_ERROR, received, shard, "rejected", _dlq_encoder.encode(record))
    received = _kafka_ms(msg) or now_ms or clock.now_ms()
    if msg.topic == dlq_topic:
        try:
            rec = _dlq_decoder.decode(msg.value or b"")
        except (msgspec.DecodeError, msgspec.ValidationError):
            return Reject(
                "unreadable_dlq_record", received, dlq_shard(msg.partition or 0), "rejected"
            )
        if rec.source == "stream":
            return None
        return Reject(
            rec.reason,
            ms(rec.received_at),
            dlq_shard(msg.partition or 0),
            "rejected",
            event_id=rec.event_id,
        )
    shard = shard_of(msg.partition or 0, msg.key, sub_shards)
    raw = msg.value or b""
    try:
        if len(raw) > MAX_EVENT_BYTES:
            raise ContractViolation("event_too_large", f"event is {len(raw)} bytes")
        event = decode_event(raw)
    except ContractViolation as exc:
        # Values in the events topic are already pseudonymized; the raw payload is kept as is.
        record = DlqRecord(
            reason=exc.reason,
            error=str(exc)[:1000],
            raw=raw.decode("utf-8", errors="replace"),
            raw_bytes=len(raw),
            received_at=from_ms(received),
            source="stream",
            event_type=exc.event_type,
            contract_version=exc.version,
        )
        return Reject(exc.reason, received, shard, "rejected", _dlq_encoder.encode(record))
    received_at = event.received_at or from_ms(received)
    received_ms = ms(received_at)
    if is_future(received_at, event.sent_at, event.occurred_at):
        return Reject(FUTURE_EVENT, received_ms, shard, "future", event_id=str(event.event_id))
    event_at = event_time(received_at, event.sent_at, event.occurred_at).astimezone(UTC)
    etype = type(event).__struct_config__.tag
    ctx = event.context
    return LiveEvent(
        event_id=str(event.event_id),
        event_type=etype,
        anonymous_id=event.anonymous_id,
        event_at=event_at,
        received_at=received_at.astimezone(UTC),
        event_ms=ms(event_at),
        received_ms=received_ms,
        platform=ctx.platform,
        device_type=ctx.device_type or "unknown",
        is_bot_ua=is_bot_agent(ctx.user_agent),
        shard=shard,
        partition=msg.partition or 0,
        offset=msg.offset if msg.offset is not None else -1,
        product_id=getattr(event, "product_id", None),
        order_id=getattr(event, "order_id", None),
        revenue_cents=round(event.total * 100) if etype == "purchase" else 0,
    )
