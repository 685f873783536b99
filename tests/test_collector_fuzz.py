"""A short fuzz run of the collector against its own real broker (the long run is
``python -m bench.fuzz_collector``): no 5xx, exactly-once for what a 2xx accepted, every
rejection in the DLQ, no generated personal value raw in any topic."""

from __future__ import annotations

import json
import os
import uuid

import pytest

from bench.fuzz_harness import Ledger, fuzz, verify
from shoplake.core.kafka_io import KafkaWriter, Message
from tests.conftest import RunningCollector, collector_env, start_broker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]
REQUESTS = int(os.environ.get("SHOPLAKE_FUZZ_REQUESTS", "400"))


@pytest.fixture(scope="module")
def own_platform(tmp_path_factory: pytest.TempPathFactory):
    broker = start_broker(tmp_path_factory.mktemp("fuzz-kafka"))
    collector = RunningCollector(collector_env(tmp_path_factory.mktemp("fuzz"), broker.bootstrap))
    yield collector, broker.bootstrap
    collector.stop()
    broker.stop()


def test_generated_requests_keep_every_promise(own_platform):
    collector, bootstrap = own_platform
    ledger = Ledger()
    fuzz(collector.url, REQUESTS, ledger, seed=0)
    assert ledger.requests >= REQUESTS
    assert ledger.statuses[200] and ledger.statuses[207] and ledger.statuses[400]  # it explored
    assert sum(n for s, n in ledger.statuses.items() if s >= 500) == 0
    assert ledger.secrets and ledger.accepted and ledger.rejected
    assert verify(bootstrap, ledger) == []

    # Positive control: the same check sees a leak and a lost event.
    secret = sorted(ledger.secrets)[0]
    writer = KafkaWriter(bootstrap)
    planted = {"event_id": str(uuid.uuid4()), "title": secret}
    writer.send_sync([Message("shop.events", b"k", json.dumps(planted).encode(), None)])
    writer.close()
    problems = verify(bootstrap, ledger)
    assert any("raw personal value" in p for p in problems)
    assert any("differs from what was accepted" in p for p in problems)
