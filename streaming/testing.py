"""Hand-made events and an in-memory run of the flow, for tests and notebooks.

rows = run_flow([message(event("page_view", "v1", at(12, 0, 5)))]).rows("window_metrics")
"""

from __future__ import annotations

import uuid
import zlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from types import SimpleNamespace

import msgspec
from bytewax.connectors.kafka import KafkaSinkMessage, KafkaSourceMessage
from bytewax.testing import TestingSink, TestingSource, run_main

from shoplake.core.speed.rows import Row
from shoplake.core.stream_config import StreamConfig
from streaming.events import all_shards, ms
from streaming.flows import Sinks, build_flow

DAY = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday
EVENTS_TOPIC = "shop.events"
DLQ_TOPIC = "shop.events.dlq"
PARTITIONS = 6
DLQ_PARTITIONS = 3


def replay_config(
    config: StreamConfig, partitions: int = PARTITIONS, dlq_partitions: int = DLQ_PARTITIONS
) -> StreamConfig:
    """``config`` as a replay runs it: no wall clock, and every shard awaited before a window
    closes, so the results depend on the input only."""
    shards = all_shards(partitions, config.sub_shards, dlq_partitions)
    return config.with_(idle_advance=False, expected_shards=shards)


TEST_CONFIG = replay_config(StreamConfig(lateness=timedelta(seconds=10)))


def at(hour: int, minute: int = 0, second: float = 0.0, day: datetime = DAY) -> datetime:
    return day + timedelta(hours=hour, minutes=minute, seconds=second)


def iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_EXTRA = {
    "product_view": lambda: {"product_id": "p-1", "price": 10.0},
    "add_to_cart": lambda: {"product_id": "p-1", "quantity": 1, "unit_price": 10.0},
    "remove_from_cart": lambda: {"product_id": "p-1", "quantity": 1, "unit_price": 10.0},
    "begin_checkout": lambda: {"cart_value": 10.0, "items_count": 1},
    "search": lambda: {"query": "shoes", "results_count": 3},
    "purchase": lambda: {
        "order_id": f"o-{uuid.uuid4().hex[:12]}",
        "total": 10.0,
        "currency": "USD",
        "payment_method": "card",
        "items": [{"product_id": "p-1", "quantity": 1, "unit_price": 10.0}],
    },
}


def event(
    event_type: str,
    visitor: str,
    occurred: datetime,
    received: datetime | None = None,
    *,
    event_id: str | None = None,
    platform: str = "web",
    device_type: str | None = "desktop",
    user_agent: str = "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
    skew: timedelta = timedelta(0),
    **fields,
) -> dict:
    """A valid event document whose event time is ``occurred`` (it is sent as it is received, so
    no transit time shifts it). ``received`` defaults to 100 ms later; ``skew`` puts the client's
    clock (occurred_at, sent_at) ahead by that much, which the event time corrects."""
    received = received or occurred + timedelta(milliseconds=100)
    doc = {
        "event_id": event_id or str(uuid.uuid4()),
        "event_type": event_type,
        "schema_version": "1.0",
        "occurred_at": iso(occurred + skew),
        "sent_at": iso(received + skew),
        "received_at": iso(received),
        "anonymous_id": visitor,
        "context": {"platform": platform, "user_agent": user_agent}
        | ({"device_type": device_type} if device_type else {}),
    }
    doc.update(_EXTRA.get(event_type, dict)())
    doc.update(fields)
    return doc


def message(
    doc: dict | bytes,
    *,
    key: str | None = None,
    received: datetime | None = None,
    topic: str = EVENTS_TOPIC,
    partition: int | None = None,
    offset: int = 0,
) -> KafkaSourceMessage:
    """A record as the collector writes it: keyed by visitor, stamped with received_at."""
    if isinstance(doc, dict):
        key = key or doc["anonymous_id"]
        received = received or datetime.fromisoformat(doc["received_at"])
        value = msgspec.json.encode(doc)
    else:
        value = doc
    kb = key.encode() if key else None
    part = partition if partition is not None else (zlib.crc32(kb) % PARTITIONS if kb else 0)
    ts = ms(received) if received else None
    return KafkaSourceMessage(
        key=kb,
        value=value,
        topic=topic,
        partition=part,
        offset=offset,
        timestamp=(1, ts) if ts is not None else (0, -1),
    )


def numbered(messages: Iterable[KafkaSourceMessage]) -> list[KafkaSourceMessage]:
    """The messages with per-partition offsets 0, 1, 2 ... in the order given."""
    counts: dict[tuple[str | None, int | None], int] = defaultdict(int)
    out = []
    for m in messages:
        k = (m.topic, m.partition)
        out.append(
            KafkaSourceMessage(
                key=m.key,
                value=m.value,
                topic=m.topic,
                partition=m.partition,
                offset=counts[k],
                timestamp=m.timestamp,
            )
        )
        counts[k] += 1
    return out


@dataclass
class FlowRun:
    """What one in-memory run wrote: every row in order, and the DLQ messages."""

    emitted: list[tuple[str, Row]] = field(default_factory=list)
    dlq: list[KafkaSinkMessage] = field(default_factory=list)
    topics: list[KafkaSinkMessage] = field(default_factory=list)

    def rows(self, table: str) -> dict[tuple, Row]:
        """The table as an upserting sink ends up: the last row per key."""
        out: dict[tuple, Row] = {}
        for t, row in self.emitted:
            if t == table:
                out[row.key()] = row
        return out

    def tables(self) -> dict[str, dict[tuple, Row]]:
        return {t: self.rows(t) for t in {t for t, _ in self.emitted}}

    def day_totals(self, day: date) -> SimpleNamespace | None:
        """The daily totals of an event day summed over its arrival days, as a reader sees them."""
        rows = [r for (d, _), r in self.rows("daily_totals").items() if d == day]
        if not rows:
            return None
        names = [f for f in rows[0].__struct_fields__ if f not in ("event_date", "arrival_date")]
        return SimpleNamespace(**{f: sum(getattr(r, f) for r in rows) for f in names})


def run_flow(messages: list, config: StreamConfig = TEST_CONFIG, batch_size: int = 100) -> FlowRun:
    result = FlowRun()
    sinks = Sinks(
        tables=TestingSink(result.emitted),
        dlq=TestingSink(result.dlq),
        kafka=TestingSink(result.topics),
    )
    run_main(build_flow(TestingSource(messages, batch_size=batch_size), sinks, config))
    return result
