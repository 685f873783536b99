"""The input: one simulated day written through the collector's ingest path into two bench
topics shaped like shop.events (6 partitions) and its DLQ (3)."""

from __future__ import annotations

import heapq
import itertools
import struct
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

from confluent_kafka import Producer

from shoplake.core.kafka_io import producer_config
from shoplake.core.platform.topics import TopicSpec, ensure_topics
from shoplake.simulator import FaultRates, SimConfig, simulate
from shoplake.simulator.sinks import Sink
from streaming.reference import kafka_messages

EVENT_PARTITIONS, DLQ_PARTITIONS = 6, 3
CHUNK_USERS = 250_000


def create_topics(bootstrap: str, events_topic: str, dlq_topic: str) -> None:
    """The two bench topics, partitioned as shop.events and its DLQ, kept until deleted."""
    ensure_topics(
        bootstrap,
        {
            events_topic: TopicSpec(events_topic, EVENT_PARTITIONS, -1, "delete"),
            dlq_topic: TopicSpec(dlq_topic, DLQ_PARTITIONS, -1, "delete"),
        },
    )


class BenchTopicsSink(Sink):
    """Simulator records through the collector's ingest path (validation, pseudonymization) into
    the bench topics, partitioned as the collector's producer does."""

    def __init__(self, ingestor, bootstrap: str, events_topic: str, dlq_topic: str) -> None:
        super().__init__()
        self.ingestor, self.events_topic, self.dlq_topic = ingestor, events_topic, dlq_topic
        self.producer = Producer(producer_config(bootstrap, 60_000))
        self.visitors: set[int] = set()
        self.counts: Counter[str] = Counter()

    def write(self, records) -> None:
        for m in kafka_messages(
            records,
            self.ingestor,
            self.events_topic,
            self.dlq_topic,
            EVENT_PARTITIONS,
            DLQ_PARTITIONS,
        ):
            while True:
                try:
                    self.producer.produce(
                        m.topic, m.value, m.key, partition=m.partition, timestamp=m.timestamp[1]
                    )
                    break
                except BufferError:
                    self.producer.poll(0.05)
            self.counts[m.topic] += 1
            if m.topic == self.events_topic:
                self.visitors.add(hash(m.key))
        self.producer.poll(0)

    def close(self) -> None:
        if self.producer.flush(120):
            raise RuntimeError("the bench topics did not take every record within 120 s")


class SpoolSink(Sink):
    """Records to a file, (receive time, payload) framed, for merging big simulations by time."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self.file = open(path, "wb")  # noqa: SIM115 (closed by close())

    def write(self, records) -> None:
        for r in records:
            self.file.write(struct.pack("<dI", r.received, len(r.payload)) + r.payload)

    def close(self) -> None:
        self.file.close()


def spooled(path: Path) -> Iterator[SimpleNamespace]:
    with open(path, "rb") as f:
        while head := f.read(12):
            received, n = struct.unpack("<dI", head)
            yield SimpleNamespace(received=received, payload=f.read(n))


def simulate_day(day, users: int, sink: BenchTopicsSink, tmp: Path) -> None:
    """One simulated day (faults on). The simulator holds a day in memory (about 9 KB per user),
    so big populations are simulated in slices of CHUNK_USERS, spooled to disk and merged by
    receive time."""
    if users <= CHUNK_USERS:
        simulate(
            SimConfig(start=day, users=users, faults=FaultRates()), sink, None, show_progress=False
        )
        return
    paths = []
    for k, start in enumerate(range(0, users, CHUNK_USERS)):
        paths.append(tmp / f"day-{k}.spool")
        cfg = SimConfig(
            start=day, users=min(CHUNK_USERS, users - start), seed=42 + k, faults=FaultRates()
        )
        simulate(cfg, SpoolSink(paths[-1]), None, show_progress=False)
    merged = heapq.merge(*(spooled(p) for p in paths), key=lambda r: r.received)
    while batch := list(itertools.islice(merged, 20_000)):
        sink.write(batch)
    sink.close()
    for p in paths:
        p.unlink()
