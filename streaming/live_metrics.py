"""Live window metrics (10 s, 1 min, 5 min) and the count of late events.

Per shard and window the step keeps counters per slice and the sets of visitors and buyers seen
(so unique counts are exact: shards hold disjoint visitors, and their counts add up). Rejected
records count by their receive time in the ``all`` slice, for the error rate.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable

from bytewax.operators import StatefulBatchLogic

from shoplake.core.speed.rows import LateEvents, WindowMetrics
from shoplake.core.stream_config import StreamConfig
from streaming import prom
from streaming.events import LiveEvent, Reject, from_ms
from streaming.windows import (
    LATE_HORIZON_MS,
    Late,
    Partial,
    ShardLogic,
    TumblingWindower,
    window_bounds,
)

# Counter positions in a slice accumulator.
EVENTS, PAGE_VIEWS, PRODUCT_VIEWS, ADD_TO_CARTS, CHECKOUTS, PURCHASES, CENTS = range(7)
VISITORS, BUYERS = 7, 8  # sets in stage 1, counts in partials
REJECTED, FUTURE = 9, 10
N_VALUES = 11
TYPE_COUNTER = {
    "page_view": PAGE_VIEWS,
    "product_view": PRODUCT_VIEWS,
    "add_to_cart": ADD_TO_CARTS,
    "begin_checkout": CHECKOUTS,
    "purchase": PURCHASES,
}
ALL = ("all", "all")


def slices(event: LiveEvent) -> tuple[tuple[str, str], ...]:
    return (ALL, ("platform", event.platform), ("device_type", event.device_type))


def _new_slice() -> list:
    return [0, 0, 0, 0, 0, 0, 0, set(), set(), 0, 0]


class WindowMetricsLogic(ShardLogic):
    """Stage 1 of one window length: per-shard partial metrics, emitted when the window closes."""

    def __init__(self, windower: TumblingWindower, config: StreamConfig, resume: bytes | None):
        self.mark_every = windower
        self.windower = windower
        super().__init__(config, resume)

    def initial_state(self) -> dict:
        # windows: start_ms -> {slice: accumulator}; late: start_ms -> [events, purchases, cents, rejected]
        return {"windows": {}, "late": {}}

    def _late(self, start: int, event: LiveEvent | None, wm: int) -> None:
        if start < wm - LATE_HORIZON_MS:
            prom.DROPPED.labels("late_beyond_horizon").inc()
            return
        acc = self.s["late"].setdefault(start, [0, 0, 0, 0])
        if event is None:
            acc[3] += 1
            return
        acc[0] += 1
        if event.event_type == "purchase":
            acc[1] += 1
            acc[2] += event.revenue_cents
        prom.LATE_EVENTS.labels(self.windower.name).inc()

    def on_event(self, event: LiveEvent, wm: int) -> list:
        start = self.windower.start_ms(event.event_ms)
        if start + self.windower.length_ms <= wm:
            self._late(start, event, wm)
            return []
        window = self.s["windows"].get(start)
        if window is None:
            window = self.s["windows"][start] = {}
        counter = TYPE_COUNTER.get(event.event_type)
        for key in slices(event):
            acc = window.get(key)
            if acc is None:
                acc = window[key] = _new_slice()
            acc[EVENTS] += 1
            acc[VISITORS].add(event.anonymous_id)
            if counter is not None:
                acc[counter] += 1
                if counter == PURCHASES:
                    acc[CENTS] += event.revenue_cents
                    acc[BUYERS].add(event.anonymous_id)
        return []

    def on_reject(self, reject: Reject, wm: int) -> list:
        start = self.windower.start_ms(reject.received_ms)
        if start + self.windower.length_ms <= wm:
            if reject.kind == "rejected":
                self._late(start, None, wm)
            return []
        window = self.s["windows"].setdefault(start, {})
        acc = window.get(ALL)
        if acc is None:
            acc = window[ALL] = _new_slice()
        acc[REJECTED if reject.kind == "rejected" else FUTURE] += 1
        return []

    def flush(self, wm: int) -> list:
        out: list = []
        windows = self.s["windows"]
        length = self.windower.length_ms
        for start in sorted(k for k in windows if k + length <= wm):
            out.append(Partial(start, _partial_values(windows.pop(start))))
        if self.s["late"]:
            name = self.windower.name
            out.extend(Late(name, start, tuple(v)) for start, v in sorted(self.s["late"].items()))
            self.s["late"] = {}
        return out

    def close_all(self) -> list:
        return self.flush(2**62)


def _partial_values(window: dict) -> dict:
    return {
        key: (*acc[:VISITORS], len(acc[VISITORS]), len(acc[BUYERS]), acc[REJECTED], acc[FUTURE])
        for key, acc in window.items()
    }


def merge_metrics(acc: dict | None, values: dict) -> dict:
    if acc is None:
        return {key: list(vals) for key, vals in values.items()}
    for key, vals in values.items():
        old = acc.get(key)
        if old is None:
            acc[key] = list(vals)
        else:
            for i, v in enumerate(vals):
                old[i] += v
    return acc


def finish_metrics(windower: TumblingWindower):
    def finish(start_ms: int, acc: dict) -> Iterable[WindowMetrics]:
        start, end = window_bounds(windower, start_ms)
        return [
            metrics_row(windower.name, start, end, key, vals) for key, vals in sorted(acc.items())
        ]

    return finish


def metrics_row(size: str, start, end, key: tuple[str, str], v: tuple) -> WindowMetrics:
    total = v[EVENTS] + v[REJECTED]
    return WindowMetrics(
        window_size=size,
        window_start=start,
        window_end=end,
        dimension=key[0],
        dimension_value=key[1],
        events=v[EVENTS],
        unique_visitors=v[VISITORS],
        page_views=v[PAGE_VIEWS],
        product_views=v[PRODUCT_VIEWS],
        add_to_carts=v[ADD_TO_CARTS],
        checkouts=v[CHECKOUTS],
        purchases=v[PURCHASES],
        buyers=v[BUYERS],
        revenue=v[CENTS] / 100,
        conversion_rate=round(v[BUYERS] / v[VISITORS], 6) if v[VISITORS] else None,
        rejected=v[REJECTED],
        future_events=v[FUTURE],
        error_rate=round(v[REJECTED] / total, 6) if total else None,
    )


class LateMergeLogic(StatefulBatchLogic):
    """Stage 2 of late counts (one key): adds the shards' counts and upserts the touched windows.

    Shards only send counts for windows within a week of their watermark, so a window 30 days
    older than the newest one seen gets no more counts and is forgotten.
    """

    KEEP_MS = 30 * 86_400_000

    def __init__(self, resume: bytes | None):
        self.totals: dict[tuple[str, int], list[int]] = pickle.loads(resume) if resume else {}

    def on_batch(self, values: list[Late]) -> tuple[Iterable, bool]:
        touched = {}
        for late in values:
            key = (late.window_size, late.window_start_ms)
            acc = self.totals.get(key)
            if acc is None:
                acc = self.totals[key] = [0, 0, 0, 0]
            for i, v in enumerate(late.values):
                acc[i] += v
            touched[key] = acc
        newest = max(start for _, start in self.totals) if self.totals else 0
        for key in [k for k in self.totals if k[1] < newest - self.KEEP_MS]:
            del self.totals[key]
        return [late_row(size, start, acc) for (size, start), acc in sorted(touched.items())], False

    def snapshot(self) -> bytes:
        return pickle.dumps(self.totals, protocol=pickle.HIGHEST_PROTOCOL)


def late_row(size: str, start_ms: int, v: list[int]) -> LateEvents:
    return LateEvents(
        window_size=size,
        window_start=from_ms(start_ms),
        events=v[0],
        purchases=v[1],
        revenue=v[2] / 100,
        rejected=v[3],
    )
