"""The collector under hostile input, over real HTTP against a real broker: every request gets a
deliberate answer, nothing valid is lost with a bad neighbour, slow clients cannot hold it."""

from __future__ import annotations

import gzip
import json
import socket
import time
import uuid
from collections import Counter

import httpx
import pytest

from bench.kafka_util import consume_all
from tests.conftest import RunningCollector, collector_env

pytestmark = pytest.mark.integration
KEY = {"X-Write-Key": "test-key", "Content-Type": "application/json"}


def event(**overrides) -> dict:
    doc = {
        "event_id": str(uuid.uuid4()),
        "event_type": "page_view",
        "schema_version": "1.0",
        "occurred_at": "2026-11-01T10:00:00Z",
        "sent_at": "2026-11-01T10:00:01Z",
        "anonymous_id": f"anon-{uuid.uuid4().hex[:8]}",
        "context": {"platform": "web"},
    }
    doc.update(overrides)
    return doc


def stored(bootstrap: str, topic: str, ids: set[str]) -> Counter:
    """How many records of these event ids are in ``topic``."""
    out: Counter = Counter()
    for m in consume_all(bootstrap, topic):
        rec = json.loads(m.value())
        if rec.get("event_id") in ids:
            out[rec["event_id"]] += 1
    return out


def status_count(url: str, status: int) -> float:
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith(f'shoplake_collector_requests_total{{status="{status}"}}'):
            return float(line.split()[-1])
    return 0.0


def test_one_undecodable_event_does_not_lose_its_batch(
    collector: RunningCollector, kafka_bootstrap: str
):
    """Guards finding 1: invalid UTF-8 in one event used to make the whole request a 500 with
    nothing stored; so did an event nested ~970 levels deep."""
    good = [event() for _ in range(499)]
    bad_utf8 = json.dumps(event(title="XX")).encode().replace(b"XX", b"\xff")
    bad_id = json.loads(bad_utf8.replace(b"\xff", b"x"))["event_id"]
    body = b"[" + b",".join([*(json.dumps(e).encode() for e in good), bad_utf8]) + b"]"
    before_500 = status_count(collector.url, 500)
    resp = httpx.post(f"{collector.url}/v1/events", content=body, headers=KEY, timeout=30)
    assert resp.status_code == 207, resp.text
    assert (resp.json()["accepted"], resp.json()["rejected"]) == (499, 1)
    assert resp.json()["results"][-1]["reason"] == "invalid_encoding"

    deep = b'{"event_type": "page_view", "x": ' + b"[" * 970 + b"]" * 970 + b"}"
    pair = [event(), event()]
    body = (
        b"["
        + json.dumps(pair[0]).encode()
        + b","
        + deep
        + b","
        + json.dumps(pair[1]).encode()
        + b"]"
    )
    resp = httpx.post(f"{collector.url}/v1/events", content=body, headers=KEY, timeout=30)
    assert resp.status_code == 207, resp.text
    assert [r["status"] for r in resp.json()["results"]] == ["accepted", "rejected", "accepted"]
    assert resp.json()["results"][1]["reason"] == "too_deep"

    ids = {e["event_id"] for e in good + pair}
    assert stored(kafka_bootstrap, "shop.events", ids) == Counter(dict.fromkeys(ids, 1))
    assert stored(kafka_bootstrap, "shop.events.dlq", {bad_id}) == Counter({bad_id: 1})
    assert status_count(collector.url, 500) == before_500 == 0
    assert status_count(collector.url, 207) >= 2  # responses are counted by status


def test_small_defects_get_deliberate_answers(collector: RunningCollector, kafka_bootstrap: str):
    """Guards finding 6."""
    url = f"{collector.url}/v1/events"
    with httpx.Client(timeout=30) as client:
        # a body with "batch" twice: refused, not half-stored
        twice = json.dumps({"batch": [event()]})[:-1] + ', "batch": ' + json.dumps([event()]) + "}"
        resp = client.post(url, content=twice, headers=KEY)
        assert resp.status_code == 400 and "batch" in resp.json()["error"]
        # integers within int64, no control characters in ids
        big = client.post(
            url, json=event(event_type="search", query="q", results_count=10**30), headers=KEY
        )
        assert big.status_code == 400 and big.json()["results"][0]["reason"] == "invalid_value"
        nul = client.post(url, json=event(anonymous_id="a\u0000b"), headers=KEY)
        assert nul.status_code == 400
        # gzip is inflated; other encodings get a clear 415; a broken gzip a 400
        batch = [event(), event()]
        zipped = gzip.compress(json.dumps(batch).encode())
        resp = client.post(url, content=zipped, headers={**KEY, "Content-Encoding": "gzip"})
        assert resp.status_code == 200 and resp.json()["accepted"] == 2
        resp = client.post(url, content=zipped, headers={**KEY, "Content-Encoding": "br"})
        assert resp.status_code == 415 and "gzip" in resp.json()["error"]
        resp = client.post(url, content=zipped[:20], headers={**KEY, "Content-Encoding": "gzip"})
        assert resp.status_code == 400 and resp.json()["results"][0]["reason"] == "malformed_gzip"
        # replay only with a replay key
        replay = {"X-Shoplake-Replay": "1", "X-Shoplake-Replay-Time": "1971-01-01T00:00:00Z"}
        resp = client.post(url, json=event(), headers={**KEY, **replay})
        assert resp.status_code == 403 and "SHOPLAKE_REPLAY_KEYS" in resp.json()["error"]
        resp = client.post(
            url, json=event(), headers={**KEY, **replay, "X-Write-Key": "test-replay-key"}
        )
        assert resp.status_code == 200
    landed = stored(kafka_bootstrap, "shop.events", {e["event_id"] for e in batch})
    assert sum(landed.values()) == 2


@pytest.fixture(scope="module")
def strict_collector(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory):
    env = collector_env(
        tmp_path_factory.mktemp("strict"),
        kafka_bootstrap,
        SHOPLAKE_COLLECTOR_HEADER_TIMEOUT="2",
        SHOPLAKE_COLLECTOR_BODY_TIMEOUT="2",
        SHOPLAKE_COLLECTOR_MAX_UPLOADS="20",
    )
    c = RunningCollector(env)
    yield c
    c.stop()


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def test_a_stalled_upload_gets_408_and_slow_headers_are_cut(strict_collector: RunningCollector):
    """Guards finding 4: a request that announced 1 MiB and sent 300 bytes held its connection
    with no answer; so did one that never finished its headers."""
    stalled = _connect(strict_collector.url)
    stalled.sendall(
        b"POST /v1/events HTTP/1.1\r\nHost: x\r\nX-Write-Key: test-key\r\n"
        b"Content-Length: 1048576\r\n\r\n" + b"[" + b" " * 299
    )
    t = time.monotonic()
    answer = stalled.recv(4096)
    assert answer.startswith(b"HTTP/1.1 408") and time.monotonic() - t < 6
    stalled.close()

    slow = _connect(strict_collector.url)
    slow.sendall(b"POST /v1/events HTTP/1.1\r\nHost: x\r\n")  # and never the rest
    t = time.monotonic()
    assert slow.recv(4096) == b""  # closed by the server
    assert time.monotonic() - t < 6
    slow.close()


def test_uploads_in_progress_are_capped(strict_collector: RunningCollector):
    held = []
    for _ in range(20):
        s = _connect(strict_collector.url)
        s.sendall(
            b"POST /v1/events HTTP/1.1\r\nHost: x\r\nX-Write-Key: test-key\r\n"
            b"Content-Length: 1000\r\n\r\n["
        )
        held.append(s)
    time.sleep(0.5)
    resp = httpx.post(f"{strict_collector.url}/v1/events", json=event(), headers=KEY, timeout=10)
    assert resp.status_code == 503 and resp.headers["retry-after"] == "1"
    for s in held:
        s.close()
    time.sleep(2.5)  # the held uploads time out and free their places
    resp = httpx.post(f"{strict_collector.url}/v1/events", json=event(), headers=KEY, timeout=10)
    assert resp.status_code == 200
