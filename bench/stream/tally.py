"""What a measured run produced, reduced to counts and an order-independent digest, and the
Bytewax sink that feeds it; both engines' outputs are compared through it."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable

from bytewax.outputs import DynamicSink, StatelessSinkPartition

from shoplake.core.speed.rows import Row, Session, to_json
from streaming.events import LiveEvent, Reject
from streaming.windows import Late

MASK = (1 << 64) - 1


def _h(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


class Tally:
    """A run's output reduced to counts and an order-independent digest, so memory stays flat.
    Small keyed tables (window rows, active sessions) keep the last row per key, as sinks upsert."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.digest = 0
        self.keyed: dict[tuple, Row] = {}

    def take(self, item) -> None:
        kind = type(item)
        if kind is LiveEvent:
            self.counts["events"] += 1
        elif kind is Reject:
            self.counts["rejects"] += 1
        elif kind is Late:
            self.counts["late_events"] += item.values[0]
            self.counts["late_rejected"] += item.values[3]
        elif kind is Session:
            self.counts["sessions"] += 1
            self.digest = (self.digest + _h(to_json(item))) & MASK
        else:
            self.keyed[(item.TABLE, item.key())] = item

    def summary(self) -> dict:
        digest = self.digest
        for row in self.keyed.values():
            digest = (digest + _h(to_json(row))) & MASK
        counts = {k: v for k, v in self.counts.items() if v} | Counter(t for t, _ in self.keyed)
        return {"counts": counts, "digest": f"{digest:016x}"}


class _TallyPartition(StatelessSinkPartition):
    def __init__(self, take: Callable, on_close: Callable) -> None:
        self.take, self.on_close = take, on_close

    def write_batch(self, items: list) -> None:
        for item in items:
            self.take(item)

    def close(self) -> None:
        self.on_close()


class TallySink(DynamicSink):
    """Feeds the tally; ``on_close`` runs at the end of the input, while the flow's state lives."""

    def __init__(self, tally: Tally, on_close: Callable[[], None]) -> None:
        self.tally, self.on_close = tally, on_close

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _TallyPartition:
        return _TallyPartition(self.tally.take, self.on_close)
