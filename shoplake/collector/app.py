"""Starlette + msgspec collector.

Chosen over FastAPI because the hot path is one endpoint whose body is parsed by msgspec anyway:
pydantic request models and dependency injection would only add per-request cost.
Served by uvicorn (uvloop + httptools).

Answers:
- 200: every event was accepted and acknowledged by Kafka.
- 207: a batch in which some events were rejected; the rejected ones are in the DLQ with a reason.
- 400: unparseable body, or a single invalid event (both kept in the DLQ).
- 401 bad or missing write key; 413 request > 1 MiB or a single event > 32 KiB; 429 rate limit.
- 503 (Retry-After): Kafka did not acknowledge; nothing was promised, retry the same request
  (event_id makes retries safe downstream).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import msgspec
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from shoplake import clock
from shoplake.collector.limits import TokenBucket, match_key
from shoplake.collector.metrics import CollectorMetrics
from shoplake.contracts.decode import EVENT_TOO_LARGE, MALFORMED_JSON
from shoplake.ingest import Accepted, Ingestor, Rejected, key_id
from shoplake.kafka_io import DeliveryFailed, KafkaWriter, Message
from shoplake.platform.topics import DLQ_TOPIC, EVENTS_TOPIC
from shoplake.settings import Settings

MAX_REQUEST_BYTES = 1024 * 1024
MAX_BATCH_EVENTS = 500
REPLAY_HEADER = "x-shoplake-replay"
REPLAY_TIME_HEADER = "x-shoplake-replay-time"  # receive time of a replayed request (RFC 3339)


class _Batch(msgspec.Struct):
    batch: list[msgspec.Raw] | None = None


_batch_decoder = msgspec.json.Decoder(_Batch)
_list_decoder = msgspec.json.Decoder(list[msgspec.Raw])
_encoder = msgspec.json.Encoder()


def split_body(body: bytes) -> list[bytes] | None:
    """The raw events in a body: a JSON array, ``{"batch": [...]}``, or one object. None: unparseable."""
    start = body.lstrip()[:1]
    try:
        if start == b"[":
            return [bytes(r) for r in _list_decoder.decode(body)]
        if start == b"{":
            envelope = _batch_decoder.decode(body)
            if envelope.batch is not None:
                return [bytes(r) for r in envelope.batch]
            return [body]
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    return None


def _json(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(
        _encoder.encode(payload), status_code=status, media_type="application/json", headers=headers
    )


class Collector:
    def __init__(self, settings: Settings, writer: KafkaWriter | None = None):
        self.settings = settings
        self.ingestor = Ingestor.from_settings(settings)
        self.metrics = CollectorMetrics()
        self.buckets = TokenBucket(settings.rate_limit, settings.rate_burst)
        self.allow_replay = settings.env != "prod"
        self._writer = writer

    @property
    def writer(self) -> KafkaWriter:
        if self._writer is None:
            self._writer = KafkaWriter(
                self.settings.bootstrap_servers, self.settings.delivery_timeout_ms
            )
        return self._writer

    # -- routes --------------------------------------------------------------------------------
    async def events(self, request: Request) -> Response:
        started = time.perf_counter()
        response = await self._events(request)
        self.metrics.requests.labels(str(response.status_code)).inc()
        self.metrics.latency.observe(time.perf_counter() - started)
        return response

    async def _events(self, request: Request) -> Response:
        supplied = request.headers.get("x-write-key") or _bearer(
            request.headers.get("authorization")
        )
        write_key = match_key(supplied, self.settings.write_keys) if supplied else None
        if write_key is None:
            return _json(
                401, {"error": "missing or unknown write key: send it in the X-Write-Key header"}
            )

        wait = self.buckets.take(write_key)
        if wait > 0:
            retry = max(1, math.ceil(wait))
            return _json(
                429,
                {"error": f"rate limit for this write key; retry in {retry}s"},
                {"Retry-After": str(retry)},
            )

        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > MAX_REQUEST_BYTES:
            return _json(
                413, {"error": f"request is {length} bytes; the limit is {MAX_REQUEST_BYTES}"}
            )
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_REQUEST_BYTES:
                return _json(413, {"error": f"request exceeds {MAX_REQUEST_BYTES} bytes"})
        body = bytes(body)

        received_at = clock.now()
        wkid = key_id(write_key)
        replay = self.allow_replay and request.headers.get(REPLAY_HEADER) == "1"
        if replay and (stamp := request.headers.get(REPLAY_TIME_HEADER)):
            # Replayed history: rejected events are stamped with the request's original receive
            # time (never in the future), so the DLQ lands on the same arrival day as the events.
            with contextlib.suppress(ValueError):
                received_at = min(datetime.fromisoformat(stamp.replace("Z", "+00:00")), received_at)
        raws = split_body(body)
        if raws is None:
            rejected = Rejected(MALFORMED_JSON, "the request body is not valid JSON", body)
            return await self._store(
                [], [(0, rejected)], received_at, wkid,
                status=400, error="the body is not valid JSON; it was kept in the DLQ",
            )  # fmt: skip
        if len(raws) > MAX_BATCH_EVENTS:
            return _json(
                413,
                {"error": f"{len(raws)} events in one request; the limit is {MAX_BATCH_EVENTS}"},
            )
        self.metrics.batch_size.observe(len(raws))

        accepted: list[tuple[int, Accepted]] = []
        rejected: list[tuple[int, Rejected]] = []
        for i, raw in enumerate(raws):
            result = self.ingestor.accept(raw, received_at, replay)
            (accepted if isinstance(result, Accepted) else rejected).append((i, result))  # type: ignore[arg-type]

        single = len(raws) == 1 and body.lstrip()[:1] == b"{" and b'"batch"' not in body[:64]
        status = 200
        if rejected and single:
            status = 413 if rejected[0][1].reason == EVENT_TOO_LARGE else 400
        elif rejected:
            status = 207
        return await self._store(accepted, rejected, received_at, wkid, status=status)

    async def _store(
        self,
        accepted: list[tuple[int, Accepted]],
        rejected: list[tuple[int, Rejected]],
        received_at: Any,
        wkid: str,
        status: int,
        error: str | None = None,
    ) -> Response:
        messages = [
            Message(
                EVENTS_TOPIC,
                a.key,
                a.value,
                a.timestamp_ms,
                [("event_type", a.event_type.encode())],
            )
            for _, a in accepted
        ]
        ts = int(received_at.timestamp() * 1000)
        for _, r in rejected:
            value = self.ingestor.dlq_value(r, received_at, "collector", wkid)
            messages.append(
                Message(
                    DLQ_TOPIC,
                    (r.event_id or "").encode() or None,
                    value,
                    ts,
                    [("reason", r.reason.encode())],
                )
            )
        try:
            await self.writer.send(messages)
        except DeliveryFailed as exc:
            self.metrics.delivery_errors.inc()
            return _json(
                503,
                {"error": f"events were not stored: {exc}. Retry the same request later."},
                {"Retry-After": "2"},
            )
        for _, a in accepted:
            self.metrics.accepted.labels(a.event_type).inc()
        for _, r in rejected:
            self.metrics.rejected.labels(r.reason).inc()
        self.metrics.dlq.inc(len(rejected))

        results: list[dict[str, Any]] = [
            {"index": i, "status": "accepted", "event_id": a.event_id} for i, a in accepted
        ]
        results += [
            {
                "index": i,
                "status": "rejected",
                "reason": r.reason,
                "error": r.error,
                "event_id": r.event_id,
            }
            for i, r in rejected
        ]
        results.sort(key=lambda r: r["index"])
        payload: dict[str, Any] = {
            "accepted": len(accepted),
            "rejected": len(rejected),
            "results": results,
        }
        if error:
            payload["error"] = error
        return _json(status, payload)

    async def healthz(self, request: Request) -> Response:
        ok, detail = await asyncio.to_thread(self._kafka_ok)
        self.metrics.kafka_up.set(1 if ok else 0)
        if ok:
            return _json(200, {"status": "ok", "kafka": self.settings.bootstrap_servers})
        return _json(
            503,
            {"status": "unavailable", "kafka": self.settings.bootstrap_servers, "error": detail},
            {"Retry-After": "5"},
        )

    def _kafka_ok(self) -> tuple[bool, str]:
        try:
            md = self.writer.list_topics(EVENTS_TOPIC, timeout=2)
        except Exception as exc:
            return False, f"Kafka unreachable: {exc}"
        topic = md.topics.get(EVENTS_TOPIC)
        if topic is None or topic.error is not None:
            return False, f"topic {EVENTS_TOPIC} missing: run 'shoplake kafka topics'"
        return True, ""

    async def livez(self, request: Request) -> Response:
        return _json(200, {"status": "alive"})

    async def metrics_endpoint(self, request: Request) -> Response:
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def _bearer(value: str | None) -> str | None:
    if value and value.lower().startswith("bearer "):
        return value[7:].strip()
    return None


def create_app(settings: Settings, writer: KafkaWriter | None = None) -> Starlette:
    collector = Collector(settings, writer)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield
        collector.close()

    app = Starlette(
        routes=[
            Route("/v1/events", collector.events, methods=["POST"]),
            Route("/healthz", collector.healthz, methods=["GET"]),
            Route("/livez", collector.livez, methods=["GET"]),
            Route("/metrics", collector.metrics_endpoint, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.collector = collector
    return app


def app_from_env() -> Starlette:
    """Factory for ``uvicorn --factory`` (used with several worker processes)."""
    from shoplake.settings import get_settings

    return create_app(get_settings())
