"""Event time under retries, slow networks and skewed client clocks, through the real collector.

Event time is ``received_at - (sent_at - occurred_at)``; it holds only if clients stamp
``sent_at`` on every attempt. A retry 60 s or 10 minutes later is played by a collector whose
clock is that far ahead, receiving the batch re-stamped as the client re-sends it.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import polars as pl
import pytest

from bench.kafka_util import consume_all
from pipeline_assets.silver.events import build_silver_events
from shoplake.core import clock
from shoplake.core.contracts.event_time import event_time, is_future
from shoplake.simulator.sinks import HttpSink, restamp_sent_at
from streaming.events import LiveEvent, decode_message
from streaming.testing import message
from tests.conftest import RunningCollector, collector_env

KEY = {"X-Write-Key": "test-key", "Content-Type": "application/json"}


def iso(t: datetime) -> str:
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def batch(occurred: list[datetime], client_clock: timedelta = timedelta(0)) -> list[dict]:
    """Events as a client whose clock is ``client_clock`` off sends them now."""
    sent = clock.now() + client_clock
    return [
        {
            "event_id": str(uuid.uuid4()),
            "event_type": "page_view",
            "schema_version": "1.0",
            "occurred_at": iso(t + client_clock),
            "sent_at": iso(sent),
            "anonymous_id": f"anon-{uuid.uuid4().hex[:8]}",
            "context": {"platform": "web"},
            "page_type": "home",
        }
        for t in occurred
    ]


def stored(bootstrap: str, ids: set[str]) -> list[dict]:
    """Every copy of these events in shop.events, as the collector wrote them."""
    return [
        json.loads(m.value())
        for m in consume_all(bootstrap, "shop.events")
        if json.loads(m.value())["event_id"] in ids
    ]


def speed_event_time(doc: dict) -> datetime:
    live = decode_message(message(doc), 8, "shop.events.dlq")
    assert isinstance(live, LiveEvent), live
    return live.event_at


def silver_event_time(docs: list[dict]) -> dict[str, datetime]:
    """Silver's event time for each document (the one formula, through silver's own code)."""
    rows = [
        {
            "kafka_partition": 0,
            "kafka_offset": i,
            "key": d["anonymous_id"],
            "event_id": d["event_id"],
            "event_type": d["event_type"],
            "value": json.dumps(d),
            "kafka_timestamp": datetime.fromisoformat(d["received_at"]),
            "arrival_date": datetime.fromisoformat(d["received_at"]).date(),
        }
        for i, d in enumerate(docs)
    ]
    bronze = pl.DataFrame(rows).with_columns(pl.col("kafka_timestamp").dt.cast_time_unit("ms"))
    out: dict[str, datetime] = {}
    for arrival in {r["arrival_date"] for r in rows}:
        for day in (arrival - timedelta(days=1), arrival):  # an event day can precede its arrival
            events = build_silver_events(bronze, day).events
            out |= dict(zip(events["event_id"], events["event_at"], strict=True))
    return out


@pytest.fixture(scope="module")
def collectors_ahead(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory):
    """Collectors whose clocks are 60 s and 10 minutes ahead of the session's."""
    running = {}
    for ahead in (60, 600):
        at = clock.now() + timedelta(seconds=ahead)
        env = collector_env(
            tmp_path_factory.mktemp(f"ahead{ahead}"),
            kafka_bootstrap,
            SHOPLAKE_CLOCK=clock.env_value(at),
        )
        running[ahead] = RunningCollector(env)
    yield running
    for c in running.values():
        c.stop()


@pytest.mark.integration
def test_a_batch_resent_60_s_and_10_minutes_later_keeps_its_event_time(
    collector: RunningCollector, collectors_ahead: dict, kafka_bootstrap: str
):
    now = clock.now()
    docs = batch([now - timedelta(seconds=30), now - timedelta(seconds=5)])
    body = json.dumps(docs).encode()
    ready = time.monotonic()
    assert httpx.post(f"{collector.url}/v1/events", content=body, headers=KEY).status_code == 200
    for ahead, later in collectors_ahead.items():
        # The client re-sends `ahead` seconds (plus the real time since) after the first attempt.
        again = restamp_sent_at(body, ahead + time.monotonic() - ready)
        assert again != body
        resp = httpx.post(f"{later.url}/v1/events", content=again, headers=KEY)
        assert resp.status_code == 200, resp.text

    copies = stored(kafka_bootstrap, {d["event_id"] for d in docs})
    assert len(copies) == 3 * len(docs)
    for d in docs:
        mine = [c for c in copies if c["event_id"] == d["event_id"]]
        received = sorted(datetime.fromisoformat(c["received_at"]) for c in mine)
        assert received[-1] - received[0] > timedelta(seconds=590)  # three receipts, 10 min apart
        truth = datetime.fromisoformat(d["occurred_at"])
        speed = [speed_event_time(c) for c in mine]
        silver = [t for c in mine for t in silver_event_time([c]).values()]
        assert len(silver) == 3
        for t in speed + silver:  # one formula in both layers, and every copy agrees
            assert abs(t - truth) < timedelta(milliseconds=500), (t, truth)


@pytest.mark.integration
@pytest.mark.parametrize("off", [timedelta(hours=2), timedelta(hours=-2)])
def test_a_client_whose_clock_is_2_hours_off_is_corrected(
    collector: RunningCollector, kafka_bootstrap: str, off: timedelta
):
    now = clock.now()
    docs = batch([now - timedelta(seconds=10)], client_clock=off)
    resp = httpx.post(f"{collector.url}/v1/events", json=docs, headers=KEY)
    assert resp.status_code == 200, resp.text
    (copy,) = stored(kafka_bootstrap, {docs[0]["event_id"]})
    truth = now - timedelta(seconds=10)
    assert abs(speed_event_time(copy) - truth) < timedelta(seconds=2)  # not 2 h off, not "future"
    (silver,) = silver_event_time([copy]).values()
    assert abs(silver - truth) < timedelta(seconds=2)


def test_a_future_event_is_one_that_happened_after_it_was_sent():
    t = datetime(2026, 12, 31, 23, 0, tzinfo=UTC)
    hour, minute = timedelta(hours=1), timedelta(minutes=1)
    assert not is_future(t, t + 2 * hour, t + 2 * hour - minute)  # skewed clock: fine
    assert is_future(t, t, t + 2 * hour)  # happened 2 h after it was sent
    assert not is_future(t, t, t + hour)  # within the tolerance
    assert event_time(t, t + 2 * hour, t + 2 * hour - minute) == t - minute


class _FlakyCollector(BaseHTTPRequestHandler):
    """Answers 503 to the first two attempts; records each attempt's body and arrival time."""

    attempts: list[tuple[float, bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.attempts.append((time.monotonic(), body))
        ok = len(self.attempts) > 2
        payload = json.dumps({"accepted": 1, "rejected": 0} if ok else {"error": "retry"}).encode()
        self.send_response(200 if ok else 503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args) -> None:
        pass


def test_the_http_client_stamps_sent_at_on_every_attempt():
    from shoplake.simulator.faults import Record

    server = ThreadingHTTPServer(("127.0.0.1", 0), _FlakyCollector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        (doc,) = batch([clock.now()])
        sink = HttpSink(f"http://127.0.0.1:{server.server_port}", "k", replay=False)
        sink.write([Record(clock.now_s(), json.dumps(doc).encode(), None, "page_view", True)])
        sink.close()
    finally:
        server.shutdown()
    attempts = _FlakyCollector.attempts
    assert len(attempts) == 3 and sink.retries == 2
    sent = [datetime.fromisoformat(json.loads(b)[0]["sent_at"]) for _, b in attempts]
    for (t, _), s in zip(attempts[1:], sent[1:], strict=True):
        waited = timedelta(seconds=t - attempts[0][0])
        assert waited > timedelta(milliseconds=100)  # the backoff really waited
        assert abs((s - sent[0]) - waited) < timedelta(milliseconds=50)
