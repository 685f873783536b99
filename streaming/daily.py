"""Daily totals by event day and arrival day, for reconciliation with batch gold.

Each row holds the events of one event day that arrived (Kafka timestamp, UTC) on one day: the
same cut as bronze's arrival-day partitions, so the reconciliation check can sum exactly the
arrival days silver read and compare like with like. Events count in their event day when they arrive at most ``daily_lateness_days`` days after it
(the arrival day minus the event day, in whole UTC days, as silver's ``late_beyond_window``);
later ones are counted in ``late_events`` with window size ``1d``. Each shard sends additive
deltas (unique visitors and orders are exact: shards hold disjoint visitors); the merge step
upserts a day's running totals every ``daily_emit_interval`` and at EOF.
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Iterable
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime, timedelta

from bytewax.operators import StatefulBatchLogic

from shoplake.core.speed.rows import DailyTotals
from shoplake.core.stream_config import StreamConfig
from streaming import prom
from streaming.events import LiveEvent
from streaming.windows import LATE_HORIZON_MS, WINDOW_1M, Delta, Late, ShardLogic

DAY_MS = 86_400_000


@dataclass(slots=True)
class DailyCounts:
    """What one shard saw of an (event day, arrival day), or the running totals of one."""

    events: int = 0
    bot_events: int = 0
    purchases: int = 0
    bot_purchases: int = 0
    revenue_cents: int = 0
    bot_revenue_cents: int = 0
    new_visitors: int = 0  # visitors first seen on the event day, counted on this arrival day
    new_orders: int = 0  # orders first seen on the event day, counted on this arrival day

    def add(self, other: DailyCounts) -> None:
        for name in COUNT_FIELDS:
            setattr(self, name, getattr(self, name) + getattr(other, name))


COUNT_FIELDS = tuple(f.name for f in fields(DailyCounts))


class DailyTotalsLogic(ShardLogic):
    """Stage 1: per-shard counts of each event day; deltas leave once a minute of watermark."""

    def initial_state(self) -> dict:
        # days: day -> {"visitors": set, "orders": set}; pending: (day, arrival) -> DailyCounts;
        # flushed: minute; forgotten_before: days before it are forgotten
        return {"days": {}, "pending": {}, "flushed": None, "forgotten_before": None}

    def on_event(self, event: LiveEvent, wm: int) -> list:
        day = event.event_ms // DAY_MS
        arrival = event.received_ms // DAY_MS
        forgotten = self.s.get("forgotten_before")
        # Too late for its day, or its day's visitors and orders are forgotten (a replay with its
        # original receive time): counting it again could count a visitor twice.
        if day < arrival - self.config.daily_lateness_days or (
            forgotten is not None and day < forgotten
        ):
            if day * DAY_MS < wm - LATE_HORIZON_MS:
                prom.DROPPED.labels("late_beyond_horizon").inc()
                return []
            c = 1 if event.event_type == "purchase" else 0
            prom.LATE_EVENTS.labels("1d").inc()
            return [Late("1d", day * DAY_MS, (1, c, event.revenue_cents, 0))]
        s = self.s
        known = s["days"].get(day)
        if known is None:
            known = s["days"][day] = {"visitors": set(), "orders": set()}
        d = s["pending"].get((day, arrival))
        if d is None:
            d = s["pending"][(day, arrival)] = DailyCounts()
        bot = event.is_bot_ua
        d.events += 1
        d.bot_events += bot
        if event.event_type == "purchase":
            d.purchases += 1
            d.bot_purchases += bot
            d.revenue_cents += event.revenue_cents
            d.bot_revenue_cents += event.revenue_cents if bot else 0
            if event.order_id is not None and event.order_id not in known["orders"]:
                known["orders"].add(event.order_id)
                d.new_orders += 1  # counted on the arrival day it was first seen
        if event.anonymous_id not in known["visitors"]:
            known["visitors"].add(event.anonymous_id)
            d.new_visitors += 1
        return []

    def on_advance(self, old_wm: int, new_wm: int) -> list:
        """Forget days no event may still count in (one day of slack for out-of-order arrivals),
        item by item, so what is forgotten never depends on batching."""
        s = self.s
        oldest = new_wm // DAY_MS - self.config.daily_lateness_days - 1
        if s.get("forgotten_before") is None or oldest > s["forgotten_before"]:
            s["forgotten_before"] = oldest
            for day in [d for d in s["days"] if d < oldest]:
                del s["days"][day]
        return []

    def flush(self, wm: int) -> list:
        s = self.s
        minute = WINDOW_1M.index(wm)
        if s["flushed"] is not None and minute <= s["flushed"]:
            return []
        s["flushed"] = minute
        return self.close_all()

    def close_all(self) -> list:
        out = [Delta(days, counts) for days, counts in sorted(self.s["pending"].items())]
        self.s["pending"] = {}
        return out


def day_key(days: tuple[int, int]) -> str:
    """The merge step's key: event day and arrival day."""
    return "/".join((date(1970, 1, 1) + timedelta(days=d)).isoformat() for d in days)


class DailyMergeLogic(StatefulBatchLogic):
    """Stage 2, one key per (event day, arrival day): adds the shards' deltas, upserts the
    running totals."""

    def __init__(self, config: StreamConfig, resume: bytes | None):
        self.interval = config.daily_emit_interval.total_seconds()
        self.s = (
            pickle.loads(resume) if resume is not None else {"day": None, "totals": DailyCounts()}
        )
        # Resumed totals may never have been upserted before the crash: upsert them again.
        self.dirty = resume is not None
        self.next_emit = time.time() + self.interval

    def on_batch(self, values: list) -> tuple[Iterable, bool]:
        totals = self.s["totals"]
        for delta in values:
            self.s["day"] = delta.key
            totals.add(delta.values)
        self.dirty = True
        return [], StatefulBatchLogic.RETAIN

    def row(self) -> DailyTotals:
        t = self.s["totals"]
        day, arrival = self.s["day"]
        return DailyTotals(
            event_date=date(1970, 1, 1) + timedelta(days=day),
            arrival_date=date(1970, 1, 1) + timedelta(days=arrival),
            events=t.events,
            bot_events=t.bot_events,
            purchases=t.purchases,
            orders=t.new_orders,
            revenue=t.revenue_cents / 100,
            bot_revenue=t.bot_revenue_cents / 100,
            unique_visitors=t.new_visitors,
        )

    def _emit(self) -> list:
        self.next_emit = time.time() + self.interval
        if not self.dirty:
            return []
        self.dirty = False
        return [self.row()]

    def notify_at(self) -> datetime | None:
        return datetime.fromtimestamp(self.next_emit, UTC) if self.dirty else None

    def on_notify(self) -> tuple[Iterable, bool]:
        return self._emit(), StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[Iterable, bool]:
        return self._emit(), StatefulBatchLogic.RETAIN

    def snapshot(self) -> bytes:
        return pickle.dumps(self.s, protocol=pickle.HIGHEST_PROTOCOL)
