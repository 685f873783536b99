"""The speed layer's output tables: one msgspec Struct per table, with its natural key.

Sinks are idempotent on ``KEY`` (recovery is at-least-once, and windows may be corrected), and
lay tables out by the date in ``DATE_COLUMN``. The same rows go to Parquet, Postgres and Kafka.
"""

from __future__ import annotations

import hashlib
from datetime import date, datetime
from typing import ClassVar

import msgspec


class Row(msgspec.Struct, frozen=True, kw_only=True):
    TABLE: ClassVar[str]
    KEY: ClassVar[tuple[str, ...]]
    DATE_COLUMN: ClassVar[str]

    def key(self) -> tuple:
        return tuple(getattr(self, k) for k in self.KEY)

    def partition_date(self) -> date:
        value = getattr(self, self.DATE_COLUMN)
        return value.date() if isinstance(value, datetime) else value


class WindowMetrics(Row, frozen=True, kw_only=True):
    """Live metrics of one event-time window for one slice (``all``, a platform, a device type).

    ``rejected`` and ``future_events`` are only counted in the ``all`` slice (by receive time).
    """

    TABLE = "window_metrics"
    KEY = ("window_size", "window_start", "dimension", "dimension_value")
    DATE_COLUMN = "window_start"

    window_size: str  # 10s | 1m | 5m
    window_start: datetime
    window_end: datetime
    dimension: str  # all | platform | device_type
    dimension_value: str
    events: int
    unique_visitors: int
    page_views: int
    product_views: int
    add_to_carts: int
    checkouts: int
    purchases: int
    buyers: int  # visitors with a purchase
    revenue: float
    conversion_rate: float | None  # buyers / unique_visitors
    rejected: int
    future_events: int
    error_rate: float | None  # rejected / (events + rejected)


class LateEvents(Row, frozen=True, kw_only=True):
    """Events that arrived after their window closed, by the window they belonged to.

    ``window_size`` 1d counts events too late for the daily totals (beyond the daily lateness).
    """

    TABLE = "late_events"
    KEY = ("window_size", "window_start")
    DATE_COLUMN = "window_start"

    window_size: str
    window_start: datetime
    events: int
    purchases: int
    revenue: float
    rejected: int


class DailyTotals(Row, frozen=True, kw_only=True):
    """Running totals of the events of an event day that arrived on one day, for reconciliation
    with batch gold (upserted as they grow). A day's totals are the sum over its arrival days;
    ``unique_visitors`` and ``orders`` count each on the arrival day it was first seen, so they
    add up too.

    Gold's revenue excludes bots: compare it with ``revenue - bot_revenue``. The stream flags bots
    by user agent only; the click-cadence rule raises alerts instead.
    """

    TABLE = "daily_totals"
    KEY = ("event_date", "arrival_date")
    DATE_COLUMN = "event_date"

    event_date: date
    arrival_date: date  # the Kafka timestamp's UTC day: bronze's partition
    events: int
    bot_events: int
    purchases: int
    orders: int  # distinct order ids
    revenue: float
    bot_revenue: float
    unique_visitors: int


class Session(Row, frozen=True, kw_only=True):
    """A 30-minute inactivity session, emitted once it has closed. ``session_id`` is silver's:
    a hash of the visitor and the session's first event, stable across re-runs."""

    TABLE = "sessions"
    KEY = ("session_id",)
    DATE_COLUMN = "session_date"

    session_id: str
    session_date: date  # the day it started, as in silver
    anonymous_id: str
    started_at: datetime
    ended_at: datetime
    duration_seconds: float
    n_events: int
    n_page_views: int
    n_product_views: int
    n_add_to_carts: int
    n_checkouts: int
    n_purchases: int
    is_converted: bool
    revenue: float
    platform: str
    device_type: str
    is_bot: bool


class ActiveSessions(Row, frozen=True, kw_only=True):
    """Sessions with an event in the 30 minutes up to ``window_end`` (open at that moment)."""

    TABLE = "active_sessions"
    KEY = ("window_start",)
    DATE_COLUMN = "window_start"

    window_start: datetime
    window_end: datetime
    active_sessions: int


class TopProduct(Row, frozen=True, kw_only=True):
    """Rank of a product by views or by cart adds in a 5-minute window (ties by product id)."""

    TABLE = "top_products"
    KEY = ("window_start", "ranking", "rank")
    DATE_COLUMN = "window_start"

    window_start: datetime
    window_end: datetime
    ranking: str  # views | add_to_carts
    rank: int
    product_id: str
    count: int


class Alert(Row, frozen=True, kw_only=True):
    """An anomaly. ``alert_id`` hashes the rule and what it fired on, so a condition alerts once."""

    TABLE = "alerts"
    KEY = ("alert_id",)
    DATE_COLUMN = "window_start"

    alert_id: str
    rule: str  # bot_click_cadence | large_purchase | traffic_spike | revenue_drop | error_rate
    severity: str  # warning | critical
    window_start: datetime
    subject: str  # the visitor, or the window size and slice
    evidence: str  # JSON object


TABLES: dict[str, type[Row]] = {
    cls.TABLE: cls
    for cls in (WindowMetrics, LateEvents, DailyTotals, Session, ActiveSessions, TopProduct, Alert)
}


def alert_id(rule: str, *parts: object) -> str:
    return hashlib.sha256("|".join([rule, *map(str, parts)]).encode()).hexdigest()[:24]


def session_id(anonymous_id: str, first_event_id: str) -> str:
    """silver/sessions' id: sha256 of ``anonymous_id|first_event_id``, 24 hex."""
    return hashlib.sha256(f"{anonymous_id}|{first_event_id}".encode()).hexdigest()[:24]


_encoder = msgspec.json.Encoder()


def to_json(row: Row) -> bytes:
    return _encoder.encode(row)


def to_dict(row: Row) -> dict:
    return {f: getattr(row, f) for f in row.__struct_fields__}
