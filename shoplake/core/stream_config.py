"""Settings of the speed layer, read from ``SHOPLAKE_STREAM_*`` variables with documented defaults.

Shared settings (home, Kafka bootstrap, Postgres DSN) come from :mod:`shoplake.core.settings`; only what
is specific to the stream lives here. :data:`ENV_DEFAULTS` lists every variable this module reads.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path

from shoplake.core.platform.topics import ALERTS_TOPIC, DLQ_TOPIC, EVENTS_TOPIC
from shoplake.core.rules import BOT_GAP, BOT_MIN_CLICKS
from shoplake.core.settings import ConfigError, get_settings

# Every variable read here, with its default ("" = unset / derived).
ENV_DEFAULTS: dict[str, str] = {
    "SHOPLAKE_STREAM_TOPICS": f"{EVENTS_TOPIC},{DLQ_TOPIC}",  # inputs: events first; the DLQ feeds the error rate
    "SHOPLAKE_STREAM_DLQ_TOPIC": DLQ_TOPIC,  # where stream rejects go; read as the DLQ if in TOPICS
    "SHOPLAKE_STREAM_SUB_SHARDS": "8",  # shards per Kafka partition (state keys = partitions x this)
    "SHOPLAKE_STREAM_LATENESS_SECONDS": "30",  # allowed lateness of the event-time windows
    "SHOPLAKE_STREAM_DEDUPE_MINUTES": "10",  # how long an event_id is remembered
    "SHOPLAKE_STREAM_SESSION_GAP_MINUTES": "30",
    "SHOPLAKE_STREAM_DAILY_LATENESS_DAYS": "3",  # daily totals take events up to this many days late
    "SHOPLAKE_STREAM_DAILY_EMIT_SECONDS": "10",  # wall-clock interval of daily-total upserts
    "SHOPLAKE_STREAM_IDLE_SECONDS": "30",  # a shard without input this long is advanced by the clock
    "SHOPLAKE_STREAM_EOF": "0",  # 1: stop at the end of the topics (backfills, tests)
    "SHOPLAKE_STREAM_START": "beginning",  # first start without recovery: beginning | end
    "SHOPLAKE_STREAM_SINKS": "",  # parquet,kafka (+postgres when SHOPLAKE_PG_DSN is set)
    "SHOPLAKE_STREAM_METRICS_PORT": "9108",  # Prometheus; 0 disables; + process id when several
    "SHOPLAKE_STREAM_PROCESS_ID": "0",  # set by 'shoplake stream' for each local process
    "SHOPLAKE_STREAM_TOP_N": "20",
    "SHOPLAKE_STREAM_VISITOR_TTL_DAYS": "30",  # a buyer's running order value is kept this long
}


@dataclass(frozen=True)
class AlertRules:
    """Thresholds of the anomaly rules. Minimum baselines keep quiet windows from alerting."""

    bot_min_clicks: int = BOT_MIN_CLICKS  # this many events in a row ... (shoplake.core.rules)
    bot_gap: timedelta = BOT_GAP  # ... each less than this after the previous
    big_purchase_factor: float = 5.0  # purchase > factor x the visitor's average order value
    big_purchase_min_orders: int = 1  # prior orders needed before a visitor has an average
    spike_ratio: float = 3.0  # 1-min events > 3x the previous minute (+200 %)
    spike_min_events: int = 30  # the previous minute must have at least this many events
    drop_ratio: float = 0.5  # 5-min revenue < 50 % of the previous 5 minutes
    drop_min_purchases: int = 5  # the previous 5 minutes must have at least this many purchases
    error_rate: float = 0.01  # rejected / (accepted + rejected) in a minute above 1 %
    error_min_total: int = 100  # only judged over at least this many records


@dataclass(frozen=True)
class StreamConfig:
    """Everything :func:`streaming.flows.build_flow` and its sinks need; tests build it directly."""

    events_topic: str = EVENTS_TOPIC
    dlq_topic: str = DLQ_TOPIC
    alerts_topic: str = ALERTS_TOPIC
    sessions_topic: str = "shop.sessions"
    metrics_topic_prefix: str = "shop.metrics."  # + 10s | 1m | 5m
    sub_shards: int = 8
    lateness: timedelta = timedelta(seconds=30)
    dedupe_window: timedelta = timedelta(minutes=10)
    session_gap: timedelta = timedelta(minutes=30)
    daily_lateness_days: int = 3
    daily_emit_interval: timedelta = timedelta(seconds=10)
    # Live runs advance an idle shard's watermark with the wall clock; replays to EOF do not, so
    # their results depend only on the input (what the tests and backfills need).
    idle_advance: bool = True
    idle_timeout: timedelta = timedelta(seconds=30)
    # The shards whose marks close a window. None: the shards seen so far (live); a tuple: wait
    # for all of them, so results do not depend on which partition is read first (replays).
    expected_shards: tuple[str, ...] | None = None
    top_n: int = 20
    visitor_ttl: timedelta = timedelta(days=30)
    rules: AlertRules = field(default_factory=AlertRules)

    def with_(self, **changes) -> StreamConfig:
        return replace(self, **changes)


@dataclass(frozen=True)
class RuntimeConfig:
    """How ``streaming.run`` connects: inputs, outputs, where the lake is, when to stop."""

    stream: StreamConfig
    bootstrap: str
    topics: tuple[str, ...]
    lake_root: Path
    pg_dsn: str | None
    sinks: tuple[str, ...]
    eof: bool
    start: str
    metrics_port: int
    process_id: int


def _env(env: dict[str, str], name: str) -> str:
    value = env.get(name)
    return ENV_DEFAULTS[name] if value is None or value == "" else value


def _number(env: dict[str, str], name: str, kind: type = int):
    raw = _env(env, name)
    try:
        return kind(raw)
    except ValueError:
        raise ConfigError(
            f"{name}={raw!r} is not a number; unset it for the default {ENV_DEFAULTS[name]}"
        ) from None


def runtime_from_env(env: dict[str, str] | None = None) -> RuntimeConfig:
    """The configuration of a ``python -m bytewax.run streaming.run:flow`` process."""
    env = dict(os.environ if env is None else env)
    settings = get_settings(env)
    eof = _env(env, "SHOPLAKE_STREAM_EOF").lower() in ("1", "true", "yes")
    start = _env(env, "SHOPLAKE_STREAM_START")
    if start not in ("beginning", "end"):
        raise ConfigError(f"SHOPLAKE_STREAM_START={start!r}: use 'beginning' or 'end'")
    topics = tuple(t.strip() for t in _env(env, "SHOPLAKE_STREAM_TOPICS").split(",") if t.strip())
    if not topics:
        raise ConfigError("SHOPLAKE_STREAM_TOPICS is empty: give at least the events topic")
    sinks_raw = _env(env, "SHOPLAKE_STREAM_SINKS")
    if sinks_raw:
        sinks = tuple(s.strip() for s in sinks_raw.split(",") if s.strip())
    else:
        sinks = ("parquet", "kafka") + (("postgres",) if settings.pg_dsn else ())
    unknown = set(sinks) - {"parquet", "kafka", "postgres"}
    if unknown:
        raise ConfigError(
            f"SHOPLAKE_STREAM_SINKS: unknown sink(s) {sorted(unknown)}; use parquet, kafka, postgres"
        )
    if "postgres" in sinks and not settings.pg_dsn:
        raise ConfigError("SHOPLAKE_STREAM_SINKS names postgres but SHOPLAKE_PG_DSN is not set")
    stream = StreamConfig(
        events_topic=topics[0],
        dlq_topic=_env(env, "SHOPLAKE_STREAM_DLQ_TOPIC"),
        sub_shards=_number(env, "SHOPLAKE_STREAM_SUB_SHARDS"),
        lateness=timedelta(seconds=_number(env, "SHOPLAKE_STREAM_LATENESS_SECONDS", float)),
        dedupe_window=timedelta(minutes=_number(env, "SHOPLAKE_STREAM_DEDUPE_MINUTES", float)),
        session_gap=timedelta(minutes=_number(env, "SHOPLAKE_STREAM_SESSION_GAP_MINUTES", float)),
        daily_lateness_days=_number(env, "SHOPLAKE_STREAM_DAILY_LATENESS_DAYS"),
        daily_emit_interval=timedelta(
            seconds=_number(env, "SHOPLAKE_STREAM_DAILY_EMIT_SECONDS", float)
        ),
        idle_advance=not eof,
        idle_timeout=timedelta(seconds=_number(env, "SHOPLAKE_STREAM_IDLE_SECONDS", float)),
        top_n=_number(env, "SHOPLAKE_STREAM_TOP_N"),
        visitor_ttl=timedelta(days=_number(env, "SHOPLAKE_STREAM_VISITOR_TTL_DAYS", float)),
    )
    return RuntimeConfig(
        stream=stream,
        bootstrap=settings.bootstrap_servers,
        topics=topics,
        lake_root=settings.speed_lake_root,
        pg_dsn=settings.pg_dsn,
        sinks=sinks,
        eof=eof,
        start=start,
        metrics_port=_number(env, "SHOPLAKE_STREAM_METRICS_PORT"),
        process_id=_number(env, "SHOPLAKE_STREAM_PROCESS_ID"),
    )
