"""Where simulated events go: the HTTP collector, Kafka directly, or JSON Lines files by day."""

from __future__ import annotations

import random
import re
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from shoplake.core.contracts.http import REPLAY_HEADER, REPLAY_TIME_HEADER
from shoplake.core.ingest import Accepted, Ingestor
from shoplake.core.kafka_io import KafkaWriter, Message
from shoplake.core.platform.topics import DLQ_TOPIC, EVENTS_TOPIC
from shoplake.simulator.faults import Record


class SinkError(RuntimeError):
    pass


class Sink:
    """Receives records in receive-time order. ``results`` counts what the destination said."""

    def __init__(self) -> None:
        self.results: Counter[str] = Counter()

    def write(self, records: Sequence[Record]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class MemorySink(Sink):
    """Keeps the records in memory (tests and benchmarks)."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[Record] = []

    def write(self, records: Sequence[Record]) -> None:
        self.records.extend(records)

    @property
    def payloads(self) -> list[bytes]:
        return [r.payload for r in self.records]


class FilesSink(Sink):
    """``<out>/date=YYYY-MM-DD/events.jsonl`` by arrival day, one payload per line as sent."""

    def __init__(self, out: Path):
        super().__init__()
        self.out = out
        self._files: dict[str, object] = {}

    def write(self, records: Sequence[Record]) -> None:
        for rec in records:
            day = datetime.fromtimestamp(rec.received, UTC).date().isoformat()
            fh = self._files.get(day)
            if fh is None:
                path = self.out / f"date={day}" / "events.jsonl"
                path.parent.mkdir(parents=True, exist_ok=True)
                fh = self._files[day] = open(path, "wb")  # noqa: SIM115
            fh.write(rec.payload.replace(b"\n", b" ") + b"\n")  # type: ignore[attr-defined]
            self.results["written"] += 1

    def close(self) -> None:
        for fh in self._files.values():
            fh.close()  # type: ignore[attr-defined]


class KafkaSink(Sink):
    """Straight to the topics for load, through the same validation and PII path as the collector."""

    def __init__(self, ingestor: Ingestor, bootstrap: str, chunk: int = 20_000):
        super().__init__()
        self.ingestor = ingestor
        self.writer = KafkaWriter(bootstrap, delivery_timeout_ms=60_000)
        self.chunk = chunk

    def write(self, records: Sequence[Record]) -> None:
        for i in range(0, len(records), self.chunk):
            messages = []
            for rec in records[i : i + self.chunk]:
                received = datetime.fromtimestamp(rec.received, UTC)
                res = self.ingestor.accept(rec.payload, received, replay=True)
                if isinstance(res, Accepted):
                    messages.append(
                        Message(
                            EVENTS_TOPIC,
                            res.key,
                            res.value,
                            res.timestamp_ms,
                            [("event_type", res.event_type.encode())],
                        )
                    )
                    self.results["accepted"] += 1
                else:
                    value = self.ingestor.dlq_value(res, received, "simulator")
                    messages.append(
                        Message(
                            DLQ_TOPIC,
                            (res.event_id or "").encode() or None,
                            value,
                            int(rec.received * 1000),
                            [("reason", res.reason.encode())],
                        )
                    )
                    self.results["rejected"] += 1
                    self.results[f"rejected:{res.reason}"] += 1
            self.writer.send_sync(messages)

    def close(self) -> None:
        self.writer.close()


_SENT_AT = re.compile(rb'("sent_at"\s*:\s*")([^"]{10,40})(")')


def restamp_sent_at(body: bytes, elapsed_s: float) -> bytes:
    """``body`` with every event's ``sent_at`` moved ``elapsed_s`` later: what the client's clock
    says now, ``elapsed_s`` after the events were first ready to send. Event time subtracts
    ``sent_at`` from the collector's receive time, so a retry keeps every event's time."""
    if elapsed_s < 0.001:
        return body
    shift = timedelta(seconds=elapsed_s)

    def moved(m: re.Match) -> bytes:
        try:
            sent = datetime.fromisoformat(m.group(2).decode())
        except ValueError:
            return m.group(0)  # not a timestamp: the contract check will say so
        stamp = (sent + shift).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return m.group(1) + stamp.encode() + m.group(3)

    return _SENT_AT.sub(moved, body)


class HttpSink(Sink):
    """POSTs batches to the collector; retries 429/503/connection errors with backoff and jitter.

    Like the Segment and RudderStack SDKs, it stamps ``sent_at`` on every attempt (live traffic;
    replayed history keeps its recorded times), so a retry does not move event time.
    """

    def __init__(
        self,
        url: str,
        write_key: str,
        batch_size: int = 100,
        concurrency: int = 4,
        replay: bool = True,
        max_attempts: int = 12,
        unreachable_after: float = 30.0,
    ):
        super().__init__()
        self.base = url.rstrip("/")
        self.url = self.base + "/v1/events"
        self.headers = {"X-Write-Key": write_key, "Content-Type": "application/json"}
        if replay:
            self.headers[REPLAY_HEADER] = "1"
        self.replay = replay
        self.batch_size = batch_size
        self.max_attempts = max_attempts
        self.unreachable_after = unreachable_after  # seconds of connection errors before giving up
        self.client = httpx.Client(timeout=30, limits=httpx.Limits(max_connections=concurrency))
        self.pool = ThreadPoolExecutor(max_workers=concurrency)
        self.retries = 0
        self.failed: SinkError | None = None  # the first batch that could not be delivered

    def check(self, timeout: float = 5.0) -> None:
        """Fail at once, with the fix, when no collector answers (before anything is generated)."""
        try:
            self.client.get(self.base + "/livez", timeout=timeout)
        except httpx.TransportError:
            raise SinkError(
                f"no collector answered at {self.base}: start one with 'shoplake collector' "
                "(it needs Kafka: 'shoplake kafka start'), or set SHOPLAKE_COLLECTOR_URL"
            ) from None

    def _bodies(self, records: Sequence[Record]) -> Iterator[tuple[bytes, float]]:
        """(body, receive time of its last record): malformed records go alone, the rest batched."""
        batch: list[Record] = []
        for rec in records:
            if rec.alone:
                yield rec.payload, rec.received
                continue
            batch.append(rec)
            if len(batch) >= self.batch_size:
                yield b"[" + b",".join(r.payload for r in batch) + b"]", batch[-1].received
                batch = []
        if batch:
            yield b"[" + b",".join(r.payload for r in batch) + b"]", batch[-1].received

    def _post(self, item: tuple[bytes, float, float]) -> dict:
        body, received, ready = item
        headers = self.headers
        if self.replay:
            headers = {
                **headers,
                REPLAY_TIME_HEADER: datetime.fromtimestamp(received, UTC).isoformat(),
            }
        delay = 0.2
        unreachable_since = None
        for attempt in range(1, self.max_attempts + 1):
            if self.failed is not None:
                raise self.failed  # another batch already gave up: stop, do not keep retrying
            sending = body if self.replay else restamp_sent_at(body, time.monotonic() - ready)
            try:
                resp = self.client.post(self.url, content=sending, headers=headers)
            except httpx.TransportError as exc:
                status, retry_after, detail = None, None, str(exc)
                unreachable_since = unreachable_since or time.monotonic()
                if time.monotonic() - unreachable_since > self.unreachable_after:
                    break
            else:
                unreachable_since = None
                status, retry_after, detail = (
                    resp.status_code,
                    resp.headers.get("retry-after"),
                    resp.text[:300],
                )
                if status in (200, 207, 400, 413):
                    return {"status": status, **resp.json()}
                if status in (401, 403):
                    error = SinkError(f"the collector refused the key ({status}): {detail}")
                    raise self._give_up(error)
            if attempt == self.max_attempts:
                break
            self.retries += 1
            wait = float(retry_after) if retry_after else delay
            time.sleep(min(wait + random.uniform(0, delay), 10.0))  # jitter
            delay = min(delay * 2, 10.0)
        last = f"{status} {detail[:200]}" if status else "no connection"
        error = SinkError(
            f"the collector at {self.base} did not accept a batch (last answer: {last}). "
            "Is it running? Start it with 'shoplake collector'."
        )
        raise self._give_up(error)

    def _give_up(self, error: SinkError) -> SinkError:
        self.failed = self.failed or error
        return self.failed

    def write(self, records: Sequence[Record]) -> None:
        ready = time.monotonic()
        bodies = ((body, received, ready) for body, received in self._bodies(records))
        for result in self.pool.map(self._post, bodies):
            self.results[f"http_{result['status']}"] += 1
            self.results["accepted"] += result.get("accepted", 0)
            self.results["rejected"] += result.get("rejected", 0)
            for r in result.get("results", []):
                if r["status"] == "rejected":
                    self.results[f"rejected:{r['reason']}"] += 1

    def close(self) -> None:
        self.pool.shutdown()
        self.client.close()
