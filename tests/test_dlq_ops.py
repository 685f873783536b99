"""DLQ retry against a real broker: what now passes is replayed once; the rest backs off."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import polars as pl
import pytest

from bench.kafka_util import consume_all
from pipeline_assets.ops.dlq import BASE_BACKOFF, MAX_ATTEMPTS, dlq_size, load_history, retry_dlq
from shoplake.core import clock
from shoplake.core.ingest import Ingestor, Rejected
from shoplake.core.kafka_io import KafkaWriter, Message
from shoplake.core.pii import Pseudonymizer
from shoplake.core.platform.topics import TopicSpec, ensure_topics

pytestmark = pytest.mark.integration


def test_retry_replays_what_now_passes_and_backs_off_the_rest(kafka_bootstrap: str, tmp_path):
    dlq, events = f"t.dlq.{uuid.uuid4().hex[:6]}", f"t.ev.{uuid.uuid4().hex[:6]}"
    ensure_topics(kafka_bootstrap, {t: TopicSpec(t, 1, -1, "delete") for t in (dlq, events)})
    ingestor = Ingestor(Pseudonymizer(b"k", "k1"))
    received = clock.now() - timedelta(hours=1)
    good_id = str(uuid.uuid4())
    now_valid = json.dumps(
        {
            "event_id": good_id,
            "event_type": "page_view",
            "schema_version": "1.0",
            "occurred_at": "2026-11-20T10:00:00Z",
            "sent_at": "2026-11-20T10:00:01Z",
            "anonymous_id": "a1",
            "context": {"platform": "web", "ip": "81.2.69.142"},
        }
    ).encode()
    # Rejected in the past (say a contract version this collector did not know yet); valid today.
    old_reject = Rejected(
        "unsupported_schema_version",
        "page_view has no contract for 1.x",
        now_valid,
        "page_view",
        good_id,
    )
    broken = Rejected("malformed_json", "malformed JSON", b'{"event_type": "page_vi')
    writer = KafkaWriter(kafka_bootstrap)
    writer.send_sync(
        [
            Message(
                dlq,
                None,
                ingestor.dlq_value(r, received, "collector"),
                int(received.timestamp() * 1000),
            )
            for r in (old_reject, broken, old_reject)  # the first one was dead-lettered twice
        ]
    )
    writer.close()
    assert dlq_size(kafka_bootstrap, dlq) == 3

    history = tmp_path / "history"
    t0 = clock.now()
    first = retry_dlq(kafka_bootstrap, ingestor, history, t0, dlq, events)
    assert (first.read, first.replayed, first.still_rejected) == (3, 1, 1)
    replayed = consume_all(kafka_bootstrap, events)
    assert [json.loads(m.value())["event_id"] for m in replayed] == [good_id]
    assert replayed[0].timestamp()[1] == int(received.timestamp() * 1000)  # keeps its arrival time
    assert b"81.2.69.142" not in replayed[0].value()

    again = retry_dlq(kafka_bootstrap, ingestor, history, t0 + timedelta(minutes=1), dlq, events)
    assert (again.replayed, again.not_due) == (0, 1)  # nothing replayed twice; backoff respected
    assert len(consume_all(kafka_bootstrap, events)) == 1

    # The broken record is retried exactly on its backoff schedule: 15 min x 2^(n-1) after the
    # n-th attempt, never a second early, and given up after MAX_ATTEMPTS.
    def broken_row():
        h = load_history(history)
        return h.filter(pl.col("reason") == "malformed_json").row(0, named=True)

    due = t0
    for n in range(2, MAX_ATTEMPTS + 1):
        due = due + BASE_BACKOFF * 2 ** (n - 2)
        early = retry_dlq(
            kafka_bootstrap, ingestor, history, due - timedelta(seconds=1), dlq, events
        )
        assert early.not_due == 1 and broken_row()["attempts"] == n - 1
        retry_dlq(kafka_bootstrap, ingestor, history, due, dlq, events)
        row = broken_row()
        assert row["attempts"] == n and row["last_attempt_at"] == due
        if n < MAX_ATTEMPTS:
            assert row["status"] == "rejected"
            assert row["next_attempt_at"] - row["last_attempt_at"] == BASE_BACKOFF * 2 ** (n - 1)
    assert broken_row()["status"] == "gave_up"
    h = load_history(history).sort("status")
    assert h["status"].to_list() == ["gave_up", "replayed"]
    assert len(consume_all(kafka_bootstrap, events)) == 1  # the good one, still exactly once
