"""Live sessions: 30-minute inactivity sessions per visitor, emitted when they close.

A shard keeps its visitors' open sessions in a dict. An event joins a session when it is at most
``session_gap`` from it (either side; a late event can bridge two sessions, which then merge); a
session closes once ``last event + gap`` is behind the shard's watermark, and its state is freed,
so memory follows the visitors active in the last half hour. Sessions therefore close by event
time, and all close at EOF.

Active sessions at a minute's end are the sessions with an event in the half hour up to it;
they are counted when the watermark passes the minute and summed over shards.
"""

from __future__ import annotations

from dataclasses import dataclass

from shoplake.core.speed.rows import ActiveSessions, Session, session_id
from shoplake.core.stream_config import StreamConfig
from streaming import prom
from streaming.events import LiveEvent, from_ms
from streaming.windows import WINDOW_1M, Partial, ShardLogic, TumblingWindower, window_bounds

_COUNTED = {
    "page_view": "page_views",
    "product_view": "product_views",
    "add_to_cart": "add_to_carts",
    "begin_checkout": "checkouts",
    "purchase": "purchases",
}
_SUMMED = (  # what merging two sessions adds up
    "events",
    "page_views",
    "product_views",
    "add_to_carts",
    "checkouts",
    "purchases",
    "revenue_cents",
)


@dataclass(slots=True)
class OpenSession:
    """A visitor's open session (stage 1; slots, as a shard holds one per active visitor)."""

    anonymous_id: str
    first_ms: int
    first_id: str
    last_ms: int
    platform: str
    device_type: str
    events: int = 0
    page_views: int = 0
    product_views: int = 0
    add_to_carts: int = 0
    checkouts: int = 0
    purchases: int = 0
    revenue_cents: int = 0
    bot_ua: bool = False
    prev_ms: int = 0  # previous event in arrival order, for the click-cadence run
    run: int = 0
    max_run: int = 0

    def add(self, e: LiveEvent, bot_gap_ms: int) -> None:
        if (e.event_ms, e.event_id) < (self.first_ms, self.first_id):
            self.first_ms, self.first_id = e.event_ms, e.event_id
            self.platform, self.device_type = e.platform, e.device_type
        if e.event_ms > self.last_ms:
            self.last_ms = e.event_ms
        self.events += 1
        field = _COUNTED.get(e.event_type)
        if field is not None:
            setattr(self, field, getattr(self, field) + 1)
            if field == "purchases":
                self.revenue_cents += e.revenue_cents
        self.bot_ua |= e.is_bot_ua
        gap = e.event_ms - self.prev_ms
        self.run = self.run + 1 if self.events > 1 and 0 < gap < bot_gap_ms else 1
        self.max_run = max(self.max_run, self.run)
        self.prev_ms = e.event_ms

    def absorb(self, other: OpenSession) -> None:
        """Merge a session that a late event bridged to this one."""
        if (other.first_ms, other.first_id) < (self.first_ms, self.first_id):
            self.first_ms, self.first_id = other.first_ms, other.first_id
            self.platform, self.device_type = other.platform, other.device_type
        self.last_ms = max(self.last_ms, other.last_ms)
        for f in _SUMMED:
            setattr(self, f, getattr(self, f) + getattr(other, f))
        self.bot_ua |= other.bot_ua
        self.max_run = max(self.max_run, other.max_run)


def new_session(e: LiveEvent) -> OpenSession:
    return OpenSession(
        e.anonymous_id, e.event_ms, e.event_id, e.event_ms, e.platform, e.device_type
    )


def place_event(
    sessions: list[OpenSession],
    e: LiveEvent,
    wm: int,
    gap_ms: int,
    bot_gap_ms: int,
    bot_min_clicks: int,
) -> tuple[list[OpenSession], list[Session]]:
    """The session rule for one event of a visitor: (sessions still open, rows of closed ones).

    Sessions the watermark has passed close; the event joins the open session within ``gap_ms``
    on either side (merging any others it bridges) or starts a new one. The flow, the reference
    and the benchmark's plain loop all place events with this one function.
    """
    keep: list[OpenSession] = []
    closed: list[Session] = []
    joined: OpenSession | None = None
    for s in sessions:
        if s.last_ms + gap_ms < wm:
            closed.append(session_row(s, bot_min_clicks))
        elif e.event_ms - s.last_ms <= gap_ms and s.first_ms - e.event_ms <= gap_ms:
            if joined is None:
                joined = s
                keep.append(s)
            else:
                joined.absorb(s)
        else:
            keep.append(s)
    if joined is None:
        joined = new_session(e)
        keep.append(joined)
    joined.add(e, bot_gap_ms)
    return keep, closed


def session_row(s: OpenSession, bot_min_clicks: int) -> Session:
    started, ended = from_ms(s.first_ms), from_ms(s.last_ms)
    return Session(
        session_id=session_id(s.anonymous_id, s.first_id),
        session_date=started.date(),
        anonymous_id=s.anonymous_id,
        started_at=started,
        ended_at=ended,
        duration_seconds=(s.last_ms - s.first_ms) / 1000,
        n_events=s.events,
        n_page_views=s.page_views,
        n_product_views=s.product_views,
        n_add_to_carts=s.add_to_carts,
        n_checkouts=s.checkouts,
        n_purchases=s.purchases,
        is_converted=s.purchases > 0,
        revenue=s.revenue_cents / 100,
        platform=s.platform,
        device_type=s.device_type,
        is_bot=s.bot_ua or s.max_run >= bot_min_clicks,
    )


class SessionsLogic(ShardLogic):
    """Stage 1: open sessions of a shard's visitors; closed sessions leave as rows."""

    mark_every: TumblingWindower = WINDOW_1M

    def __init__(self, config: StreamConfig, resume: bytes | None):
        super().__init__(config, resume)
        self.gap_ms = int(config.session_gap.total_seconds() * 1000)
        self.bot_gap_ms = int(config.rules.bot_gap.total_seconds() * 1000)
        self.bot_min_clicks = config.rules.bot_min_clicks

    def initial_state(self) -> dict:
        return {"open": {}, "swept": None}

    def on_advance(self, old_wm: int, new_wm: int) -> list:
        """Count active sessions at each minute end the watermark passes (before this item)."""
        step = WINDOW_1M.length_ms
        first = WINDOW_1M.start_ms(old_wm) + step
        if first > new_wm or not self.s["open"]:
            return []
        sessions = [s for lst in self.s["open"].values() for s in lst]
        last = min(new_wm, max(s.last_ms for s in sessions) + self.gap_ms)
        out = []
        for end in range(first, last + 1, step):
            n = sum(1 for s in sessions if s.first_ms <= end and s.last_ms > end - self.gap_ms)
            if n:
                out.append(Partial(end - step, n))
        return out

    def on_event(self, e: LiveEvent, wm: int) -> list:
        keep, closed = place_event(
            self.s["open"].get(e.anonymous_id, []),
            e,
            wm,
            self.gap_ms,
            self.bot_gap_ms,
            self.bot_min_clicks,
        )
        self.s["open"][e.anonymous_id] = keep
        return closed

    def flush(self, wm: int) -> list:
        """Free closed sessions once per minute of watermark (closing itself is exact per event)."""
        minute = WINDOW_1M.index(wm)
        if self.s["swept"] is not None and minute <= self.s["swept"]:
            return []
        self.s["swept"] = minute
        out = []
        still: dict[str, list[OpenSession]] = {}
        for anon, sessions in self.s["open"].items():
            keep = []
            for s in sessions:
                if s.last_ms + self.gap_ms < wm:
                    out.append(session_row(s, self.bot_min_clicks))
                else:
                    keep.append(s)
            if keep:
                still[anon] = keep
        self.s["open"] = still
        prom.set_open_sessions(self.s["shard"], sum(len(v) for v in still.values()))
        return out

    def close_all(self) -> list:
        out = [session_row(s, self.bot_min_clicks) for v in self.s["open"].values() for s in v]
        self.s["open"] = {}
        prom.set_open_sessions(self.s["shard"] or "", 0)
        return out


def merge_counts(acc: int | None, value: int) -> int:
    return value if acc is None else acc + value


def finish_active(start_ms: int, total: int) -> list[ActiveSessions]:
    start, end = window_bounds(WINDOW_1M, start_ms)
    return [ActiveSessions(window_start=start, window_end=end, active_sessions=total)]
