"""Starlette + msgspec collector.

Chosen over FastAPI because the hot path is one endpoint whose body is parsed by msgspec anyway:
pydantic request models and dependency injection would only add per-request cost.
Served by uvicorn (uvloop + httptools), with header, body and idle timeouts
(:mod:`shoplake.collector.server`).

Every request gets a deliberate answer; no input makes it answer 5xx, except a storage outage:
- 200: every event was accepted and acknowledged by Kafka.
- 207: a batch in which some events were rejected; the rejected ones are in the DLQ with a reason.
- 400: a body that cannot be split into events (not JSON, a repeated key, bad gzip), or a single
  invalid event; either way it is kept in the DLQ.
- 401 bad or missing write key; 403 replay asked with a key that may not replay; 408 the body did
  not arrive in time; 413 request > 1 MiB (also once inflated) or a single event > 32 KiB;
  415 a content encoding other than gzip; 429 rate limit (requests or events).
- 503 (Retry-After): Kafka did not acknowledge, or too many uploads are in progress; nothing was
  promised, retry the same request (event_id makes retries safe downstream).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import msgspec
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from shoplake.collector.body import BodyError, gunzip, split_body
from shoplake.collector.limits import RateLimits, match_key
from shoplake.collector.metrics import CollectorMetrics
from shoplake.core import clock
from shoplake.core.contracts.decode import EVENT_TOO_LARGE, MALFORMED_GZIP, TOO_DEEP
from shoplake.core.contracts.http import REPLAY_HEADER, REPLAY_TIME_HEADER
from shoplake.core.ingest import Accepted, Ingestor, Rejected, key_id
from shoplake.core.kafka_io import DeliveryFailed, KafkaWriter, Message
from shoplake.core.platform.topics import DLQ_TOPIC, EVENTS_TOPIC
from shoplake.core.settings import Settings

MAX_REQUEST_BYTES = 1024 * 1024
MAX_BATCH_EVENTS = 500
log = logging.getLogger("shoplake.collector")
_encoder = msgspec.json.Encoder()


def _json(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(
        _encoder.encode(payload), status_code=status, media_type="application/json", headers=headers
    )


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """An answer that says what went wrong and what to do about it."""
    return _json(status, {"error": message}, headers)


class _Refused(Exception):
    """A request answered before its events are looked at (limits, timeouts, encodings)."""

    def __init__(self, response: Response):
        self.response = response


class Collector:
    def __init__(self, settings: Settings, writer: KafkaWriter | None = None):
        self.settings = settings
        self.ingestor = Ingestor.from_settings(settings)
        self.metrics = CollectorMetrics()
        self.limits = RateLimits(
            settings.rate_limit,
            settings.rate_burst,
            settings.rate_limit_events,
            settings.rate_client_share,
        )
        self.keys = tuple(dict.fromkeys((*settings.write_keys, *settings.replay_keys)))
        self.uploads = 0  # bodies being received now
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
        try:
            response = await self._events(request)
        except _Refused as refused:
            response = refused.response
        except Exception:  # a bug: counted as a 5xx and logged, never a silent loss
            log.exception("unexpected error in POST /v1/events")
            response = _error(500, "internal error; nothing was stored, retry later")
        self.metrics.requests.labels(str(response.status_code)).inc()
        self.metrics.latency.observe(time.perf_counter() - started)
        return response

    async def _events(self, request: Request) -> Response:
        supplied = request.headers.get("x-write-key") or _bearer(
            request.headers.get("authorization")
        )
        write_key = match_key(supplied, self.keys) if supplied else None
        if write_key is None:
            return _error(401, "missing or unknown write key: send it in the X-Write-Key header")
        replay = request.headers.get(REPLAY_HEADER) == "1"
        if replay and write_key not in self.settings.replay_keys:
            message = "this write key may not replay history; use one of SHOPLAKE_REPLAY_KEYS"
            return _error(403, message)

        _too_fast(self.limits.take_request(write_key), "requests")
        body = await self._read_body(request, key_id(write_key))

        received_at = clock.now()
        wkid = key_id(write_key)
        if replay and (stamp := request.headers.get(REPLAY_TIME_HEADER)):
            # Replayed history: rejected events are stamped with the request's original receive
            # time (never in the future), so the DLQ lands on the same arrival day as the events.
            with contextlib.suppress(ValueError):
                received_at = min(datetime.fromisoformat(stamp.replace("Z", "+00:00")), received_at)
        try:
            split = split_body(body)
        except BodyError as exc:
            rejected = Rejected(exc.reason, str(exc), body)
            return await self._store(
                [],
                [(0, rejected)],
                received_at,
                wkid,
                status=400,
                error=f"{exc}; the body was kept in the DLQ",
            )
        raws = split.events
        if len(raws) > MAX_BATCH_EVENTS:
            message = f"{len(raws)} events in one request; the limit is {MAX_BATCH_EVENTS}"
            return _error(413, message)
        client = request.client.host if request.client else "-"
        _too_fast(self.limits.take_events(write_key, client, len(raws)), "events")
        self.metrics.batch_size.observe(len(raws))

        accepted: list[tuple[int, Accepted]] = []
        rejected: list[tuple[int, Rejected]] = []
        for i, raw in enumerate(raws):
            if i in split.too_deep:
                result: Accepted | Rejected = Rejected(
                    TOO_DEEP, "the event is nested too deeply", raw
                )
            else:
                result = self.ingestor.accept(raw, received_at, replay)
            if isinstance(result, Accepted):
                accepted.append((i, result))
            else:
                rejected.append((i, result))

        status = 200
        if rejected and split.single:
            status = 413 if rejected[0][1].reason == EVENT_TOO_LARGE else 400
        elif rejected:
            status = 207
        return await self._store(accepted, rejected, received_at, wkid, status=status)

    async def _read_body(self, request: Request, wkid: str) -> bytes:
        """The body, within the size limit, the body timeout and the cap on uploads in
        progress; gzip is inflated (up to the same limit)."""
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("identity", "gzip", ""):
            message = f"Content-Encoding {encoding!r} is not supported: send plain or gzip"
            raise _Refused(_error(415, message))
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > MAX_REQUEST_BYTES:
            raise _Refused(
                _error(413, f"request is {length} bytes; the limit is {MAX_REQUEST_BYTES}")
            )
        if self.uploads >= self.settings.max_uploads:
            self.metrics.uploads_refused.inc()
            message = "too many uploads in progress; retry shortly"
            raise _Refused(_error(503, message, {"Retry-After": "1"}))
        self.uploads += 1
        body = bytearray()
        try:
            async with asyncio.timeout(self.settings.body_timeout_s):
                async for chunk in request.stream():
                    body += chunk
                    if len(body) > MAX_REQUEST_BYTES:
                        raise _Refused(_error(413, f"request exceeds {MAX_REQUEST_BYTES} bytes"))
        except TimeoutError:
            message = f"the body did not arrive within {self.settings.body_timeout_s:g}s"
            raise _Refused(_error(408, message, {"Connection": "close"})) from None
        except ClientDisconnect:
            raise _Refused(Response(status_code=400)) from None  # nobody is listening
        finally:
            self.uploads -= 1
        if encoding != "gzip":
            return bytes(body)
        try:
            return gunzip(bytes(body), MAX_REQUEST_BYTES)
        except OverflowError:
            raise _Refused(
                _error(413, f"the body inflates past {MAX_REQUEST_BYTES} bytes")
            ) from None
        except BodyError as exc:
            # Compressed bytes cannot be scrubbed: the DLQ keeps the reason and size, not them.
            error = f"{exc} ({len(body)} bytes)"
            rejected = Rejected(MALFORMED_GZIP, error, b"")
            stored = await self._store(
                [], [(0, rejected)], clock.now(), wkid, 400, f"{error}; its reason is in the DLQ"
            )
            raise _Refused(stored) from None

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
            log.warning("Kafka did not acknowledge a request: %s", exc)
            message = "the events were not stored: storage is unavailable; retry the same request"
            return _error(503, message, {"Retry-After": "2"})
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


def _too_fast(wait: float, what: str) -> None:
    if wait > 0:
        retry = max(1, math.ceil(wait)) if math.isfinite(wait) else 60
        message = f"rate limit ({what}) for this write key; retry in {retry}s"
        raise _Refused(_error(429, message, {"Retry-After": str(retry)}))


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
    from shoplake.core.settings import get_settings

    return create_app(get_settings())
