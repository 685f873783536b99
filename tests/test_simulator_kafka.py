"""``shoplake simulate --to kafka`` goes through the same contract and PII path as the collector."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from bench.kafka_util import consume_all
from shoplake.core.ingest import Ingestor
from shoplake.core.pii import Pseudonymizer
from shoplake.core.platform.topics import TopicSpec, ensure_topics
from shoplake.simulator import FaultRates, SimConfig, simulate
from shoplake.simulator.run import world
from shoplake.simulator.sinks import KafkaSink, MemorySink
from tests.conftest import REPLAY_DAY

pytestmark = pytest.mark.integration


def test_direct_kafka_sink_validates_and_pseudonymizes(kafka_bootstrap: str, monkeypatch):
    # Separate topics so counts are exact whatever else the session wrote.
    monkeypatch.setattr("shoplake.simulator.sinks.EVENTS_TOPIC", "sim.events")
    monkeypatch.setattr("shoplake.simulator.sinks.DLQ_TOPIC", "sim.dlq")
    ensure_topics(
        kafka_bootstrap,
        {t: TopicSpec(t, 3, -1, "delete") for t in ("sim.events", "sim.dlq")},
    )
    rates = FaultRates(malformed_json=0.01, wrong_type=0.01, missing_field=0.01)
    cfg = SimConfig(start=REPLAY_DAY, days=1, users=300, seed=5, faults=rates)
    sink = KafkaSink(Ingestor(Pseudonymizer(b"k", "k1")), kafka_bootstrap)
    report = simulate(cfg, sink, None, show_progress=False)

    events = consume_all(kafka_bootstrap, "sim.events")
    dlq = consume_all(kafka_bootstrap, "sim.dlq")
    assert len(events) == report.expected_accepted == sink.results["accepted"]
    assert Counter(json.loads(m.value())["reason"] for m in dlq) == report.expected_reasons
    # Kafka timestamps are the simulated receive times (history lands on its own days).
    first = json.loads(events[0].value())
    assert first["received_at"].startswith(REPLAY_DAY.isoformat())

    # The people the simulation used (its own world, not a copy of its recipe): none of their
    # personal values is in either topic, although the simulated events carried them.
    _, population = world(cfg)
    personal = [v for u in population.users for v in (u.email, u.phone, u.ip)]
    assert len(personal) == 3 * cfg.users
    blob = b"".join(m.value() for m in events + dlq)
    assert not [v for v in personal if v.encode() in blob]
    # Positive control: the same check finds them in what the simulator sent before the ingest path.
    sent = MemorySink()
    simulate(cfg, sent, None, show_progress=False)
    raw = b"".join(sent.payloads)
    assert sum(v.encode() in raw for v in personal) > cfg.users // 10
