"""The Bytewax side: the repo's steps wired as in streaming.flows, one flow per stage, read from
Kafka as streaming.run reads it."""

from __future__ import annotations

from functools import partial

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaSource
from bytewax.dataflow import Dataflow
from confluent_kafka import OFFSET_BEGINNING

from bench.stream.tally import TallySink
from shoplake.core.speed.rows import Row
from shoplake.core.stream_config import StreamConfig
from streaming.dedupe import DedupeLogic
from streaming.flows import decode_record, merge_windows, split_rows
from streaming.live_metrics import WindowMetricsLogic, finish_metrics, merge_metrics
from streaming.sessions import SessionsLogic, finish_active, merge_counts
from streaming.windows import WINDOW_1M, Late


def kafka_source(bootstrap: str, topics: list[str]) -> KafkaSource:
    """As streaming.run builds it, read to EOF."""
    return KafkaSource(
        [bootstrap],
        topics,
        tail=False,
        starting_offset=OFFSET_BEGINNING,
        batch_size=2000,
        raise_on_errors=False,
    )


def _decoded(flow: Dataflow, source: KafkaSource, config: StreamConfig):
    records = op.input("read_records", flow, source)
    return op.filter_map("decode_event", records, partial(decode_record, config=config))


def _deduped(flow: Dataflow, source: KafkaSource, config: StreamConfig):
    by_shard = op.key_on("key_by_shard", _decoded(flow, source, config), lambda item: item.shard)
    return op.stateful_batch("dedupe_event", by_shard, lambda r: DedupeLogic(config, r))


def decode_flow(source: KafkaSource, sink: TallySink, config: StreamConfig) -> Dataflow:
    flow = Dataflow("bench_decode")
    op.output("tally", _decoded(flow, source, config), sink)
    return flow


def metrics_1m_flow(source: KafkaSource, sink: TallySink, config: StreamConfig) -> Dataflow:
    flow = Dataflow("bench_metrics_1m")
    deduped = _deduped(flow, source, config)
    folded = op.stateful_batch(
        "fold_1m_metrics", deduped, lambda r: WindowMetricsLogic(WINDOW_1M, config, r)
    )
    late, parts = split_rows("split_late_1m", folded, Late)
    rows = merge_windows(
        "merge_1m_metrics", parts, WINDOW_1M, merge_metrics, finish_metrics(WINDOW_1M), config
    )
    op.output("tally", op.merge("collect_rows", rows, late), sink)
    return flow


def sessions_flow(source: KafkaSource, sink: TallySink, config: StreamConfig) -> Dataflow:
    flow = Dataflow("bench_sessions")
    tracked = op.stateful_batch(
        "track_sessions", _deduped(flow, source, config), lambda r: SessionsLogic(config, r)
    )
    session_rows, active_parts = split_rows("split_sessions", tracked, Row)
    active_rows = merge_windows(
        "merge_active_sessions", active_parts, WINDOW_1M, merge_counts, finish_active, config
    )
    op.output("tally", op.merge("collect_rows", session_rows, active_rows), sink)
    return flow


FLOWS = {"decode": decode_flow, "1m": metrics_1m_flow, "sessions": sessions_flow}
