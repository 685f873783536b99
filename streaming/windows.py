"""Event-time machinery shared by the live outputs: windowers, the per-shard watermark, and the
two-stage aggregation that turns per-shard partials into one row per window.

Stage 1 runs per shard (a Kafka partition x a visitor bucket). Its watermark is the latest
``received_at`` it has read minus the allowed lateness: an event whose window ends at or before
the watermark is *late* (counted in ``late_events``, not in the window). When the watermark
passes a window's end the shard emits a :class:`Partial` for it, then a :class:`Mark` with its
watermark. Because a shard reads one partition in offset order, its decisions do not depend on
how partitions interleave.

Stage 2 (:class:`MergeLogic`) sums the partials of a window and emits the window once every shard
it waits for has marked past the window's end. A partial arriving after that (a shard seen for
the first time in a live run) re-emits the corrected row; sinks upsert by key, so the last row
wins.
"""

from __future__ import annotations

import math
import pickle
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bytewax.operators import StatefulBatchLogic

from shoplake.core import clock
from shoplake.core.stream_config import StreamConfig
from streaming import prom
from streaming.events import EPOCH, LiveEvent, Reject, from_ms

ALIGN_TO = EPOCH  # windows start at whole multiples of their length since 1970-01-01T00:00Z
NEVER = -(2**62)
FOREVER = 2**62
# Late counts are kept for windows up to a week (Kafka's retention) behind the shard's watermark;
# older ones are only counted in Prometheus (shoplake_stream_dropped_total).
LATE_HORIZON_MS = 7 * 86_400_000


@dataclass(frozen=True)
class TumblingWindower:
    """Fixed, aligned, non-overlapping event-time windows."""

    name: str
    length: timedelta
    align_to: datetime = ALIGN_TO
    length_ms: int = field(init=False)
    offset_ms: int = field(init=False)  # align_to modulo length

    def __post_init__(self) -> None:
        if self.align_to.tzinfo is None or self.align_to.utcoffset() != timedelta(0):
            raise ValueError("align_to must be a tz-aware UTC datetime")
        length_ms = int(self.length.total_seconds() * 1000)
        object.__setattr__(self, "length_ms", length_ms)
        object.__setattr__(
            self, "offset_ms", int((self.align_to - EPOCH).total_seconds() * 1000) % length_ms
        )

    def start_ms(self, t_ms: int) -> int:
        return t_ms - (t_ms - self.offset_ms) % self.length_ms

    def index(self, t_ms: int) -> int:
        """Number of window ends at or before ``t_ms`` (monotone; for boundary crossing)."""
        return (t_ms - self.offset_ms) // self.length_ms


WINDOW_10S = TumblingWindower("10s", timedelta(seconds=10))
WINDOW_1M = TumblingWindower("1m", timedelta(minutes=1))
WINDOW_5M = TumblingWindower("5m", timedelta(minutes=5))
WINDOWERS = (WINDOW_10S, WINDOW_1M, WINDOW_5M)


# -- messages between the stages -----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Partial:
    """A shard's contribution to one window (``values`` depend on the output)."""

    window_start_ms: int
    values: Any


@dataclass(frozen=True, slots=True)
class Mark:
    """The shard will send no more partials for windows ending at or before ``watermark_ms``."""

    shard: str
    watermark_ms: int


@dataclass(frozen=True, slots=True)
class Delta:
    """An additive update of a running total that stage 2 applies and upserts (daily totals)."""

    key: Any
    values: Any  # what stage 2 adds to its running total (streaming.daily.DailyCounts)


@dataclass(frozen=True, slots=True)
class Late:
    """Counts of events that arrived after their window closed: events, purchases, revenue
    cents, rejected records. Only for windows within ``LATE_HORIZON_MS`` of the watermark."""

    window_size: str
    window_start_ms: int
    values: tuple


# -- stage 1 -------------------------------------------------------------------------------------
class ShardLogic(StatefulBatchLogic):
    """Base of the per-shard steps: keeps the watermark and calls the hooks in a fixed order.

    For each item: the watermark advances to ``received - lateness``; :meth:`on_advance` sees the
    old and new watermark (before the item is applied); :meth:`on_event` or :meth:`on_reject`
    apply it. After the batch, :meth:`flush` emits what the watermark has closed. All decisions
    depend only on the shard's items in order, never on how they were batched.

    Subclasses keep their state in ``self.s`` (a dict), which is what gets snapshotted.
    """

    mark_every: TumblingWindower | None = None  # emit a Mark when the watermark crosses these

    def __init__(self, config: StreamConfig, resume: bytes | None):
        self.config = config
        self.lateness_ms = int(config.lateness.total_seconds() * 1000)
        self.idle_ms = int(config.idle_timeout.total_seconds() * 1000)
        if resume is not None:
            self.s = pickle.loads(resume)
        else:
            self.s = {"shard": None, "max_recv": NEVER, "wm": NEVER, "marked": None}
            self.s.update(self.initial_state())
        self._last_input_wall = time.time()

    # hooks
    def initial_state(self) -> dict:
        return {}

    def on_advance(self, old_wm: int, new_wm: int) -> list:
        return []

    def on_event(self, event: LiveEvent, wm: int) -> list:
        return []

    def on_reject(self, reject: Reject, wm: int) -> list:
        return []

    def flush(self, wm: int) -> list:
        return []

    def close_all(self) -> list:
        """At EOF: emit whatever is still open."""
        return []

    # driver
    def _advance(self, received_ms: int, out: list) -> int:
        s = self.s
        if received_ms > s["max_recv"]:
            s["max_recv"] = received_ms
            wm = received_ms - self.lateness_ms
            if wm > s["wm"]:
                old = s["wm"]
                s["wm"] = wm
                if old != NEVER:
                    out.extend(self.on_advance(old, wm))
        return s["wm"]

    def _marks(self, out: list) -> None:
        s = self.s
        if self.mark_every is None or s["wm"] == NEVER:
            return
        idx = self.mark_every.index(s["wm"])
        if s["marked"] is None or idx > s["marked"]:
            s["marked"] = idx
            out.append(Mark(s["shard"], s["wm"]))

    def on_batch(self, values: list) -> tuple[Iterable, bool]:
        out: list = []
        s = self.s
        for item in values:
            if s["shard"] is None:
                s["shard"] = item.shard
            wm = self._advance(item.received_ms, out)
            if type(item) is LiveEvent:
                out.extend(self.on_event(item, wm))
            else:
                out.extend(self.on_reject(item, wm))
        self._last_input_wall = time.time()
        out.extend(self.flush(s["wm"]))
        self._marks(out)
        return out, StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        if not self.config.idle_advance or self.s["wm"] == NEVER:
            return None
        return datetime.fromtimestamp(self._last_input_wall + self.idle_ms / 1000, UTC)

    def on_notify(self) -> tuple[Iterable, bool]:
        """Idle for ``idle_timeout``: the partition is at its end, so what arrives next will have
        been received about now. Advance the watermark to the wall clock minus lateness and idle."""
        out: list = []
        now_ms = clock.now_ms()
        target = now_ms - self.idle_ms
        if target > self.s["max_recv"]:
            self._advance(target, out)
            out.extend(self.flush(self.s["wm"]))
            self._marks(out)
        self._last_input_wall = time.time()
        return out, StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[Iterable, bool]:
        out = self.close_all()
        if self.mark_every is not None and self.s["shard"] is not None:
            out.append(Mark(self.s["shard"], FOREVER))
            self.s["marked"] = None  # a continuation's first batch marks the real watermark again
        return out, StatefulBatchLogic.RETAIN

    def snapshot(self) -> bytes:
        # Pickled here, so the snapshot is an immutable copy at the cost of one pass.
        return pickle.dumps(self.s, protocol=pickle.HIGHEST_PROTOCOL)


# -- stage 2 -------------------------------------------------------------------------------------
class MergeLogic(StatefulBatchLogic):
    """Sums partials per window and emits a window when every awaited shard has marked past it.

    ``merge(acc, values)`` folds a partial into the accumulator (``acc`` None at first) and
    returns it; ``finish(window_start_ms, acc)`` turns a complete window into output rows.

    The awaited shards are ``config.expected_shards`` (or, if None, those seen so far). In a live
    run (``idle_advance``) a shard whose mark has not moved for three idle timeouts of wall
    clock, such as one no record has ever hashed to, stops holding windows back until it marks
    again. Emitted windows are kept for ``retain`` of watermark so a straggler can correct them.
    """

    def __init__(
        self,
        windower: TumblingWindower,
        merge: Callable[[Any, Any], Any],
        finish: Callable[[int, Any], list],
        config: StreamConfig,
        resume: bytes | None,
        retain: timedelta = timedelta(hours=1),
        clock: Callable[[], float] = time.time,
    ):
        self.windower = windower
        self.merge = merge
        self.finish = finish
        self.retain_ms = int(retain.total_seconds() * 1000)
        self.clock = clock
        self.idle_s = 3 * config.idle_timeout.total_seconds() if config.idle_advance else None
        if resume is not None:
            self.s = pickle.loads(resume)
        else:
            expected = config.expected_shards or ()
            self.s = {
                "marks": dict.fromkeys(expected, NEVER),
                "open": {},
                "done": {},
                "horizon": NEVER,
            }
        now = clock()
        self.moved = dict.fromkeys(self.s["marks"], now)  # wall time a shard's mark last moved

    def _frontier(self) -> int:
        marks = self.s["marks"]
        if not marks:
            return NEVER
        if self.idle_s is None:
            return min(marks.values())
        now = self.clock()
        live = [wm for shard, wm in marks.items() if now - self.moved.get(shard, now) < self.idle_s]
        return min(live) if live else max(marks.values())

    def notify_at(self) -> datetime | None:
        if self.idle_s is None or not self.s["open"]:
            return None
        return datetime.fromtimestamp(self.clock() + self.idle_s / 3, UTC)

    def on_notify(self) -> tuple[Iterable, bool]:
        return self._close(self._frontier()), StatefulBatchLogic.RETAIN

    def on_batch(self, values: list) -> tuple[Iterable, bool]:
        s = self.s
        out: list = []
        length = self.windower.length_ms
        frontier = self._frontier()
        for item in values:
            if type(item) is Mark:
                if s["marks"].get(item.shard) != item.watermark_ms:
                    s["marks"][item.shard] = item.watermark_ms
                    self.moved[item.shard] = self.clock()
                new = self._frontier()
                if new > frontier:
                    out.extend(self._close(new))
                frontier = new
                continue
            start = item.window_start_ms
            if start in s["open"] or start + length > frontier:
                s["open"][start] = self.merge(s["open"].get(start), item.values)
            elif start in s["done"]:  # a straggler (a shard seen late): correct the window
                s["done"][start] = self.merge(s["done"][start], item.values)
                out.extend(self._emit(start, s["done"][start], late=True))
            elif start + length <= s["horizon"]:
                # Emitted and forgotten: a row from this partial alone would overwrite the
                # complete one, so it is dropped (and counted).
                prom.DROPPED.labels(f"straggler_{self.windower.name}").inc()
            else:  # closed before any shard had data for it
                s["done"][start] = self.merge(None, item.values)
                out.extend(self._emit(start, s["done"][start], late=True))
        return out, StatefulBatchLogic.RETAIN

    def _close(self, frontier: int) -> list:
        s = self.s
        length = self.windower.length_ms
        out: list = []
        for start in sorted(k for k in s["open"] if k + length <= frontier):
            acc = s["open"].pop(start)
            s["done"][start] = acc
            out.extend(self._emit(start, acc, late=False))
        if frontier < FOREVER and frontier - self.retain_ms > s["horizon"]:
            s["horizon"] = frontier - self.retain_ms
            for start in [k for k in s["done"] if k + length <= s["horizon"]]:
                del s["done"][start]
        return out

    def _emit(self, start: int, acc: Any, late: bool) -> list:
        rows = self.finish(start, acc)
        if not late:
            end_s = (start + self.windower.length_ms) / 1000
            prom.WINDOW_EMIT_DELAY.labels(self.windower.name).observe(
                max(0.0, clock.now_s() - end_s)
            )
        return rows

    def on_eof(self) -> tuple[Iterable, bool]:
        out = self._close(FOREVER)
        done = self.s["done"]
        if done:  # keep only the recent windows a continuation could still correct
            horizon = max(done) - self.retain_ms
            if horizon > self.s["horizon"]:
                self.s["horizon"] = horizon
                for start in [k for k in done if k + self.windower.length_ms <= horizon]:
                    del done[start]
        return out, StatefulBatchLogic.RETAIN

    def snapshot(self) -> bytes:
        return pickle.dumps(self.s, protocol=pickle.HIGHEST_PROTOCOL)


def window_bounds(windower: TumblingWindower, start_ms: int) -> tuple[datetime, datetime]:
    return from_ms(start_ms), from_ms(start_ms + windower.length_ms)


def ratio(num: float, den: float, places: int = 6) -> float | None:
    return None if not den else round(num / den, places)


def finite(x: float) -> float:
    return x if math.isfinite(x) else 0.0
