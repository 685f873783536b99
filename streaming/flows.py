"""The speed layer's dataflow: Kafka records -> live metrics, daily totals, sessions, top products
and alerts.

Shape (see :mod:`streaming.windows` for the two-stage windows):

    records -> decode_event -> key_by_shard -> dedupe_event -> per-shard steps (stage 1)
            -> merge_* steps (stage 2, one key per output) -> rows -> tables / Kafka
    rejects -> DLQ

Nothing is keyed by visitor: per-visitor state lives in dicts inside shard-keyed steps, with
eviction, so the number of Bytewax keys is bounded by partitions x sub-shards.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaSinkMessage
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import Source
from bytewax.outputs import Sink

from shoplake.core.speed.rows import Row, WindowMetrics
from shoplake.core.stream_config import StreamConfig
from streaming import prom
from streaming.alerts import VisitorAlertsLogic, WindowAlertsLogic
from streaming.daily import DailyMergeLogic, DailyTotalsLogic, day_key
from streaming.dedupe import DedupeLogic
from streaming.events import LiveEvent, Reject, decode_message
from streaming.live_metrics import LateMergeLogic, WindowMetricsLogic, finish_metrics, merge_metrics
from streaming.products import TopProductsLogic, finish_top, merge_products
from streaming.sessions import SessionsLogic, finish_active, merge_counts
from streaming.sinks import kafka_message
from streaming.windows import WINDOW_1M, WINDOW_5M, WINDOW_10S, Late, MergeLogic, TumblingWindower


@dataclass(frozen=True)
class Sinks:
    """Outputs of the flow; None skips one. ``tables`` takes ``(table, Row)`` pairs (a
    :class:`streaming.sinks.TableSink` in production); ``kafka`` and ``dlq`` take
    ``KafkaSinkMessage`` (the topic is set on each message)."""

    tables: Sink | None = None
    kafka: Sink | None = None
    dlq: Sink | None = None


_records_in: dict[str, object] = {}


def decode_record(msg, config: StreamConfig) -> LiveEvent | Reject | None:
    if hasattr(msg, "topic"):
        counter = _records_in.get(msg.topic)
        if counter is None:
            counter = _records_in[msg.topic] = prom.RECORDS_IN.labels(msg.topic or "")
        counter.inc()
        if msg.partition is not None and msg.offset is not None:
            prom.positions[(msg.topic or "", msg.partition)] = msg.offset + 1
    item = decode_message(msg, config.sub_shards, config.dlq_topic)
    if type(item) is Reject:
        prom.REJECTED.labels(item.reason).inc()
    return item


def dlq_message(item: LiveEvent | Reject, config: StreamConfig) -> KafkaSinkMessage | None:
    if type(item) is not Reject or item.dlq is None:
        return None
    headers = [("reason", item.reason.encode()), ("source", b"stream")]
    key = item.event_id.encode() if item.event_id else None
    return KafkaSinkMessage(key=key, value=item.dlq, topic=config.dlq_topic, headers=headers)


def merge_windows(
    step_id: str,
    parts: Stream,
    windower: TumblingWindower,
    merge,
    finish,
    config: StreamConfig,
) -> Stream[Row]:
    """Stage 2: route a stage-1 stream of partials and marks to one key and merge it."""
    routed = op.map(f"route_{step_id}", parts, lambda kv: (windower.name, kv[1]))
    merged = op.stateful_batch(
        step_id,
        routed,
        lambda resume: MergeLogic(windower, merge, finish, config, resume),
    )
    return op.key_rm(f"unkey_{step_id}", merged)


def split_rows(step_id: str, up: Stream, kind: type) -> tuple[Stream, Stream]:
    """(items of ``kind`` without their key, everything else still keyed)."""
    split = op.branch(step_id, up, lambda kv: isinstance(kv[1], kind))
    return op.key_rm(f"unkey_{step_id}", split.trues), split.falses


def build_flow(source: Source, sinks: Sinks, config: StreamConfig | None = None) -> Dataflow:
    config = config or StreamConfig()
    flow = Dataflow("shoplake_speed")
    records = op.input("read_records", flow, source)
    decoded = op.filter_map("decode_event", records, partial(decode_record, config=config))
    if sinks.dlq is not None:
        dlq = op.filter_map("format_dlq_record", decoded, partial(dlq_message, config=config))
        op.output("write_dlq", dlq, sinks.dlq)
    by_shard = op.key_on("key_by_shard", decoded, lambda item: item.shard)
    deduped = op.stateful_batch("dedupe_event", by_shard, lambda r: DedupeLogic(config, r))

    # Live metrics: one stage-1 fold and one merge per window length; late counts on the side.
    metric_rows: dict[str, Stream[WindowMetrics]] = {}
    late_parts = []
    for windower in (WINDOW_10S, WINDOW_1M, WINDOW_5M):
        name = windower.name
        folded = op.stateful_batch(
            f"fold_{name}_metrics", deduped, lambda r, w=windower: WindowMetricsLogic(w, config, r)
        )
        late, parts = split_rows(f"split_late_{name}", folded, Late)
        late_parts.append(late)
        metric_rows[name] = merge_windows(
            f"merge_{name}_metrics",
            parts,
            windower,
            merge_metrics,
            finish_metrics(windower),
            config,
        )

    # Daily totals for reconciliation (events too late for them are late_events of size 1d).
    daily = op.stateful_batch("count_daily_totals", deduped, lambda r: DailyTotalsLogic(config, r))
    late_daily, daily_deltas = split_rows("split_late_daily", daily, Late)
    late_parts.append(late_daily)
    by_day = op.map(
        "key_by_event_and_arrival_date", daily_deltas, lambda kv: (day_key(kv[1].key), kv[1])
    )
    daily_rows = op.key_rm(
        "unkey_daily_totals",
        op.stateful_batch("merge_daily_totals", by_day, lambda r: DailyMergeLogic(config, r)),
    )

    all_late = op.merge("collect_late_events", *late_parts)
    late_rows = op.key_rm(
        "unkey_late_events",
        op.stateful_batch(
            "merge_late_events",
            op.key_on("key_late_events", all_late, lambda _: "late"),
            LateMergeLogic,
        ),
    )

    # Sessions, and the active-session count per minute.
    tracked = op.stateful_batch("track_sessions", deduped, lambda r: SessionsLogic(config, r))
    session_rows, active_parts = split_rows("split_sessions", tracked, Row)
    active_rows = merge_windows(
        "merge_active_sessions", active_parts, WINDOW_1M, merge_counts, finish_active, config
    )

    # Top products per 5 minutes.
    product_parts = op.stateful_batch(
        "count_products", deduped, lambda r: TopProductsLogic(config, r)
    )
    top_rows = merge_windows(
        "rank_top_products",
        product_parts,
        WINDOW_5M,
        merge_products,
        finish_top(config.top_n),
        config,
    )

    # Alerts: per visitor in the shards, per window after the merges.
    visitor_alerts = op.key_rm(
        "unkey_visitor_alerts",
        op.stateful_batch(
            "detect_visitor_anomalies", deduped, lambda r: VisitorAlertsLogic(config, r)
        ),
    )
    window_alerts = []
    for windower in (WINDOW_1M, WINDOW_5M):
        name = windower.name
        overall = op.filter(
            f"select_{name}_overall", metric_rows[name], lambda row: row.dimension == "all"
        )
        keyed = op.key_on(f"key_{name}_overall", overall, lambda row: row.window_size)
        judged = op.stateful_batch(
            f"detect_{name}_anomalies",
            keyed,
            lambda r, w=windower: WindowAlertsLogic(w, config.rules, r),
        )
        window_alerts.append(op.key_rm(f"unkey_{name}_alerts", judged))

    rows = op.merge(
        "collect_rows",
        *metric_rows.values(),
        late_rows,
        daily_rows,
        session_rows,
        active_rows,
        top_rows,
        visitor_alerts,
        *window_alerts,
    )
    if sinks.tables is not None:
        op.output(
            "write_tables", op.map("key_by_table", rows, lambda row: (row.TABLE, row)), sinks.tables
        )
    if sinks.kafka is not None:
        messages = op.filter_map(
            "format_kafka_message", rows, partial(kafka_message, config=config)
        )
        op.output("write_topics", messages, sinks.kafka)
    return flow
