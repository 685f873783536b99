"""The plain-loop peers: one confluent_kafka consumer over the same partitions, the same work
without Bytewax, so each Bytewax figure has a peer measured in the same run.

Why a peer and not the reference: ``streaming/reference.py`` is the independent oracle of the
rules (the tests compare the flow with it); it computes every output at once and keeps all state,
so it is not the same work. These loops instead call the flow's own step logic (decode_message,
DedupeLogic, WindowMetricsLogic, SessionsLogic, MergeLogic) from one loop, per shard, as
``stateful_batch`` keys it: the ratio is then what Bytewax's runtime costs (its Kafka source,
operators, keying and routing between steps), and equal digests show the wiring loses nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.operators import StatefulBatchLogic
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from bench.stream.tally import Tally
from shoplake.core.contracts import ContractViolation, decode_event
from shoplake.core.speed.rows import Row
from shoplake.core.stream_config import StreamConfig
from streaming.dedupe import DedupeLogic
from streaming.events import LiveEvent, Reject, decode_message
from streaming.live_metrics import WindowMetricsLogic, finish_metrics, merge_metrics
from streaming.sessions import SessionsLogic, finish_active, merge_counts
from streaming.windows import WINDOW_1M, Late, MergeLogic


def consume(
    bootstrap: str, topics: list[str], progress: list[int], on_end: Callable[[], None]
) -> Iterator[list]:
    """Batches of messages of every partition of ``topics`` from the beginning to EOF, with the
    consumer settings KafkaSource uses (one consumer for all partitions instead of one each)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "BYTEWAX_IGNORED",
            "enable.auto.commit": "false",
            "enable.partition.eof": "true",
        }
    )
    md = consumer.list_topics(timeout=10).topics
    parts = [TopicPartition(t, p, OFFSET_BEGINNING) for t in topics for p in md[t].partitions]
    consumer.assign(parts)
    remaining = len(parts)
    try:
        while remaining:
            batch = []
            for m in consumer.consume(2000, 0.1):
                err = m.error()
                if err is None:
                    batch.append(m)
                elif err.code() == KafkaError._PARTITION_EOF:
                    remaining -= 1
                else:
                    raise RuntimeError(f"consuming {m.topic()}: {err}")
            progress[0] += len(batch)
            yield batch
        on_end()
    finally:
        consumer.close()


def source_message(m) -> KafkaSourceMessage:
    """The message KafkaSource hands to the flow (the same fields, built the same way)."""
    return KafkaSourceMessage(
        key=m.key(),
        value=m.value(),
        topic=m.topic(),
        headers=m.headers() or [],
        latency=m.latency(),
        offset=m.offset(),
        partition=m.partition(),
        timestamp=m.timestamp(),
    )


def peer_decode_event(batches: Iterator[list], config: StreamConfig, tally: Tally) -> None:
    """decode_event on each value (the contracts only)."""
    counts = tally.counts
    for batch in batches:
        for m in batch:
            try:
                decode_event(m.value())
                counts["valid"] += 1
            except ContractViolation:
                counts["violations"] += 1


def peer_decode(batches: Iterator[list], config: StreamConfig, tally: Tally) -> None:
    """decode_message: what the flow's decode_event step does to each record."""
    sub, dlq, take = config.sub_shards, config.dlq_topic, tally.take
    for batch in batches:
        for m in batch:
            item = decode_message(source_message(m), sub, dlq)
            if item is not None:
                take(item)


class ShardSteps:
    """The flow's per-shard steps as ``stateful_batch`` keeps them: for each shard its own
    DedupeLogic, then its own ``step``. A batch is split by shard, in arrival order within one."""

    def __init__(self, config: StreamConfig, step: Callable[[], StatefulBatchLogic]) -> None:
        self.config, self.step = config, step
        self.chains: dict[str, tuple[DedupeLogic, StatefulBatchLogic]] = {}

    def on_batch(self, items: list[LiveEvent | Reject]) -> list:
        groups: dict[str, list] = {}
        for item in items:
            group = groups.get(item.shard)
            if group is None:
                group = groups[item.shard] = []
            group.append(item)
        out: list = []
        for shard, group in groups.items():
            chain = self.chains.get(shard)
            if chain is None:
                chain = self.chains[shard] = (DedupeLogic(self.config, None), self.step())
            kept, _ = chain[0].on_batch(group)
            if kept:
                emitted, _ = chain[1].on_batch(kept)
                out.extend(emitted)
        return out

    def on_eof(self) -> list:
        out: list = []
        for _, step in self.chains.values():
            emitted, _ = step.on_eof()
            out.extend(emitted)
        return out


def run_steps(
    batches: Iterator[list],
    config: StreamConfig,
    tally: Tally,
    steps: ShardSteps,
    merge: MergeLogic,
    output: type,
) -> None:
    """decode -> key by shard -> ``steps`` -> items of type ``output`` to the tally, the rest
    (partials and marks) through ``merge`` (stage 2) to the tally: a stage of streaming.flows."""
    sub, dlq, take = config.sub_shards, config.dlq_topic, tally.take

    def emit(items: list) -> None:
        parts = []
        for item in items:
            if isinstance(item, output):
                take(item)
            else:
                parts.append(item)
        if parts:
            rows, _ = merge.on_batch(parts)
            for row in rows:
                take(row)

    for batch in batches:
        items = []
        for m in batch:
            item = decode_message(source_message(m), sub, dlq)
            if item is not None:
                items.append(item)
        emit(steps.on_batch(items))
    emit(steps.on_eof())
    rows, _ = merge.on_eof()
    for row in rows:
        take(row)


def peer_metrics_1m(batches: Iterator[list], config: StreamConfig, tally: Tally) -> None:
    """1-minute window metrics: per-shard dedupe and fold (watermark, late counts), then the
    merge that emits a window once every shard's watermark passed its end."""
    steps = ShardSteps(config, lambda: WindowMetricsLogic(WINDOW_1M, config, None))
    merge = MergeLogic(WINDOW_1M, merge_metrics, finish_metrics(WINDOW_1M), config, None)
    run_steps(batches, config, tally, steps, merge, Late)


def peer_sessions(batches: Iterator[list], config: StreamConfig, tally: Tally) -> None:
    """30-minute sessions per visitor in per-shard dicts (closed and freed by the shard's
    watermark); active sessions counted at each minute end and summed over shards."""
    steps = ShardSteps(config, lambda: SessionsLogic(config, None))
    merge = MergeLogic(WINDOW_1M, merge_counts, finish_active, config, None)
    run_steps(batches, config, tally, steps, merge, Row)


PEERS = {
    ("decode", "decode_event"): peer_decode_event,
    ("decode", "loop"): peer_decode,
    ("1m", "loop"): peer_metrics_1m,
    ("sessions", "loop"): peer_sessions,
}
