"""Live window metrics (10 s, 1 min, 5 min) and the count of late events.

Per shard and window the step keeps counters per slice and the sets of visitors and buyers seen
(so unique counts are exact: shards hold disjoint visitors, and their counts add up). Rejected
records count by their receive time in the ``all`` slice, for the error rate.
"""

from __future__ import annotations

import operator
import pickle
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

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

ALL = ("all", "all")


def slices(event: LiveEvent) -> tuple[tuple[str, str], ...]:
    return (ALL, ("platform", event.platform), ("device_type", event.device_type))


@dataclass(slots=True)
class SliceState:
    """Stage 1: what a shard has counted for one slice of one window. The visitors and buyers are
    sets, so unique counts stay exact when the shards' counts are added."""

    events: int = 0
    page_views: int = 0
    product_views: int = 0
    add_to_carts: int = 0
    checkouts: int = 0
    purchases: int = 0
    revenue_cents: int = 0
    visitors: set[str] = field(default_factory=set)
    buyers: set[str] = field(default_factory=set)
    rejected: int = 0
    future_events: int = 0

    def totals(self) -> SliceTotals:
        return SliceTotals(
            self.events,
            self.page_views,
            self.product_views,
            self.add_to_carts,
            self.checkouts,
            self.purchases,
            self.revenue_cents,
            len(self.visitors),
            len(self.buyers),
            self.rejected,
            self.future_events,
        )


class SliceTotals(NamedTuple):
    """One slice of one window as counts: a shard's share in a :class:`Partial`, and their sum in
    stage 2. Immutable, so the merge replaces a slice's totals instead of changing a partial."""

    events: int = 0
    page_views: int = 0
    product_views: int = 0
    add_to_carts: int = 0
    checkouts: int = 0
    purchases: int = 0
    revenue_cents: int = 0
    visitors: int = 0  # unique visitors
    buyers: int = 0  # unique buyers
    rejected: int = 0
    future_events: int = 0

    def plus(self, other: SliceTotals) -> SliceTotals:
        return SliceTotals._make(map(operator.add, self, other))


@dataclass(slots=True)
class LateCounts:
    """Events that arrived after their window closed (stage 1 per window start, and their sum in
    stage 2 per window). A :class:`Late` carries them as the tuple of :meth:`as_tuple`."""

    events: int = 0
    purchases: int = 0
    revenue_cents: int = 0
    rejected: int = 0

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.events, self.purchases, self.revenue_cents, self.rejected)

    def add(self, values: tuple[int, int, int, int]) -> None:
        events, purchases, revenue_cents, rejected = values
        self.events += events
        self.purchases += purchases
        self.revenue_cents += revenue_cents
        self.rejected += rejected


class WindowMetricsLogic(ShardLogic):
    """Stage 1 of one window length: per-shard partial metrics, emitted when the window closes."""

    def __init__(self, windower: TumblingWindower, config: StreamConfig, resume: bytes | None):
        self.mark_every = windower
        self.windower = windower
        super().__init__(config, resume)

    def initial_state(self) -> dict:
        # windows: start_ms -> {slice: SliceState}; late: start_ms -> LateCounts
        return {"windows": {}, "late": {}}

    def _late(self, start: int, event: LiveEvent | None, wm: int) -> None:
        if start < wm - LATE_HORIZON_MS:
            prom.DROPPED.labels("late_beyond_horizon").inc()
            return
        late = self.s["late"].get(start)
        if late is None:
            late = self.s["late"][start] = LateCounts()
        if event is None:
            late.rejected += 1
            return
        late.events += 1
        if event.event_type == "purchase":
            late.purchases += 1
            late.revenue_cents += event.revenue_cents
        prom.LATE_EVENTS.labels(self.windower.name).inc()

    def on_event(self, event: LiveEvent, wm: int) -> list:
        start = self.windower.start_ms(event.event_ms)
        if start + self.windower.length_ms <= wm:
            self._late(start, event, wm)
            return []
        window = self.s["windows"].get(start)
        if window is None:
            window = self.s["windows"][start] = {}
        kind = event.event_type
        visitor = event.anonymous_id
        for key in slices(event):
            acc = window.get(key)
            if acc is None:
                acc = window[key] = SliceState()
            acc.events += 1
            acc.visitors.add(visitor)
            if kind == "page_view":
                acc.page_views += 1
            elif kind == "product_view":
                acc.product_views += 1
            elif kind == "add_to_cart":
                acc.add_to_carts += 1
            elif kind == "begin_checkout":
                acc.checkouts += 1
            elif kind == "purchase":
                acc.purchases += 1
                acc.revenue_cents += event.revenue_cents
                acc.buyers.add(visitor)
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
            acc = window[ALL] = SliceState()
        if reject.kind == "rejected":
            acc.rejected += 1
        else:
            acc.future_events += 1
        return []

    def flush(self, wm: int) -> list:
        out: list = []
        windows = self.s["windows"]
        length = self.windower.length_ms
        for start in sorted(k for k in windows if k + length <= wm):
            out.append(Partial(start, _partial_values(windows.pop(start))))
        if self.s["late"]:
            name = self.windower.name
            out.extend(
                Late(name, start, late.as_tuple()) for start, late in sorted(self.s["late"].items())
            )
            self.s["late"] = {}
        return out

    def close_all(self) -> list:
        return self.flush(2**62)


def _partial_values(window: dict[tuple[str, str], SliceState]) -> dict:
    return {key: acc.totals() for key, acc in window.items()}


def merge_metrics(
    acc: dict[tuple[str, str], SliceTotals] | None, values: dict[tuple[str, str], SliceTotals]
) -> dict[tuple[str, str], SliceTotals]:
    if acc is None:
        return dict(values)
    for key, totals in values.items():
        old = acc.get(key)
        acc[key] = totals if old is None else old.plus(totals)
    return acc


def finish_metrics(windower: TumblingWindower):
    def finish(start_ms: int, acc: dict) -> Iterable[WindowMetrics]:
        start, end = window_bounds(windower, start_ms)
        return [
            metrics_row(windower.name, start, end, key, vals) for key, vals in sorted(acc.items())
        ]

    return finish


def metrics_row(size: str, start, end, key: tuple[str, str], v: SliceTotals) -> WindowMetrics:
    total = v.events + v.rejected
    return WindowMetrics(
        window_size=size,
        window_start=start,
        window_end=end,
        dimension=key[0],
        dimension_value=key[1],
        events=v.events,
        unique_visitors=v.visitors,
        page_views=v.page_views,
        product_views=v.product_views,
        add_to_carts=v.add_to_carts,
        checkouts=v.checkouts,
        purchases=v.purchases,
        buyers=v.buyers,
        revenue=v.revenue_cents / 100,
        conversion_rate=round(v.buyers / v.visitors, 6) if v.visitors else None,
        rejected=v.rejected,
        future_events=v.future_events,
        error_rate=round(v.rejected / total, 6) if total else None,
    )


class LateMergeLogic(StatefulBatchLogic):
    """Stage 2 of late counts (one key): adds the shards' counts and upserts the touched windows.

    Shards only send counts for windows within a week of their watermark, so a window 30 days
    older than the newest one seen gets no more counts and is forgotten.
    """

    KEEP_MS = 30 * 86_400_000

    def __init__(self, resume: bytes | None):
        self.totals: dict[tuple[str, int], LateCounts] = pickle.loads(resume) if resume else {}

    def on_batch(self, values: list[Late]) -> tuple[Iterable, bool]:
        touched = {}
        for late in values:
            key = (late.window_size, late.window_start_ms)
            acc = self.totals.get(key)
            if acc is None:
                acc = self.totals[key] = LateCounts()
            acc.add(late.values)
            touched[key] = acc
        newest = max(start for _, start in self.totals) if self.totals else 0
        for key in [k for k in self.totals if k[1] < newest - self.KEEP_MS]:
            del self.totals[key]
        return [late_row(size, start, acc) for (size, start), acc in sorted(touched.items())], False

    def snapshot(self) -> bytes:
        return pickle.dumps(self.totals, protocol=pickle.HIGHEST_PROTOCOL)


def late_row(size: str, start_ms: int, counts: LateCounts) -> LateEvents:
    return LateEvents(
        window_size=size,
        window_start=from_ms(start_ms),
        events=counts.events,
        purchases=counts.purchases,
        revenue=counts.revenue_cents / 100,
        rejected=counts.rejected,
    )
