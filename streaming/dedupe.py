"""Drop repeats of an event_id: a copy is a repeat when the first copy arrived at most
``dedupe_window`` before the latest arrival the shard has seen (the first copy is kept).

Copies of an event share its visitor, hence its Kafka partition and shard, so a per-shard dict
suffices. Ids leave in arrival order once older than the window, keeping memory bounded.
"""

from __future__ import annotations

import pickle
from collections import deque
from collections.abc import Iterable

from bytewax.operators import StatefulBatchLogic

from shoplake.core.stream_config import StreamConfig
from streaming import prom
from streaming.events import LiveEvent


class DedupeLogic(StatefulBatchLogic):
    def __init__(self, config: StreamConfig, resume: bytes | None):
        self.window_ms = int(config.dedupe_window.total_seconds() * 1000)
        if resume is not None:
            seen, order, self.max_recv = pickle.loads(resume)
            self.seen: dict[str, int] = seen
            self.order: deque[tuple[int, str]] = deque(order)
        else:
            self.seen, self.order, self.max_recv = {}, deque(), 0

    def on_batch(self, values: list) -> tuple[Iterable, bool]:
        out = []
        seen, order = self.seen, self.order
        for item in values:
            if item.received_ms > self.max_recv:
                self.max_recv = item.received_ms
            if type(item) is not LiveEvent:
                out.append(item)
                continue
            horizon = self.max_recv - self.window_ms
            first = seen.get(item.event_id)
            if first is not None and first >= horizon:
                prom.DUPLICATES.inc()
                continue
            seen[item.event_id] = item.received_ms
            order.append((item.received_ms, item.event_id))
            out.append(item)
        # Eviction only frees memory: the check above already ignores ids older than the window.
        horizon = self.max_recv - self.window_ms
        while order and order[0][0] < horizon:
            received, event_id = order.popleft()
            if seen.get(event_id) == received:
                del seen[event_id]
        return out, StatefulBatchLogic.RETAIN

    def snapshot(self) -> bytes:
        return pickle.dumps(
            (self.seen, list(self.order), self.max_recv), protocol=pickle.HIGHEST_PROTOCOL
        )
