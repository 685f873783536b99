"""Producing to Kafka with the guarantees the collector promises: idempotent, acks=all, and an
answer only once every message of a request has been acknowledged (or has definitely failed)."""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, Producer


class DeliveryFailed(RuntimeError):
    """Kafka did not acknowledge every message; the caller must answer 503 / retry."""


@dataclass(slots=True)
class Message:
    topic: str
    key: bytes | None
    value: bytes
    timestamp_ms: int | None = None
    headers: list[tuple[str, bytes]] | None = None


class _OncePerCause(logging.Filter):
    """Passes a Kafka client log line once per cause (the text without numbers) a minute: a
    broker that is down makes librdkafka say "Connection refused" several times a second."""

    def __init__(self, every_s: float = 60.0):
        super().__init__()
        self.every_s = every_s
        self.seen: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        cause = re.sub(r"\d+", "#", record.getMessage())
        now = time.monotonic()
        if now - self.seen.get(cause, -self.every_s) < self.every_s:
            return False
        if len(self.seen) > 1000:
            self.seen.clear()
        self.seen[cause] = now
        return True


KAFKA_LOG = logging.getLogger("shoplake.kafka")
KAFKA_LOG.addFilter(_OncePerCause())


def client_config(bootstrap: str, **extra: Any) -> dict[str, Any]:
    """The settings every Kafka client of shoplake shares: its bootstrap servers and a log that
    reports each cause once a minute instead of every reconnect."""
    return {"bootstrap.servers": bootstrap, "logger": KAFKA_LOG, **extra}


def producer_config(
    bootstrap: str, delivery_timeout_ms: int = 10_000, **extra: Any
) -> dict[str, Any]:
    conf: dict[str, Any] = {
        **client_config(bootstrap),
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "batch.num.messages": 10_000,
        "compression.type": "lz4",
        "delivery.timeout.ms": delivery_timeout_ms,
        "queue.buffering.max.messages": 500_000,
        "queue.buffering.max.kbytes": 512 * 1024,
        "message.max.bytes": 2 * 1024 * 1024,
        "socket.keepalive.enable": True,
        "reconnect.backoff.max.ms": 1000,
    }
    conf.update(extra)
    return conf


class _Pending:
    """Counts outstanding acknowledgements of one request; resolved from the poll thread."""

    __slots__ = ("error", "future", "loop", "remaining")

    def __init__(self, n: int, loop: asyncio.AbstractEventLoop | None):
        self.remaining = n
        self.error: KafkaError | None = None
        self.loop = loop
        self.future: asyncio.Future | None = loop.create_future() if loop else None

    def callback(self, err: KafkaError | None, _msg: Any) -> None:
        if err is not None and self.error is None:
            self.error = err
        self.remaining -= 1
        if self.remaining == 0 and self.loop is not None:
            self.loop.call_soon_threadsafe(self._resolve)

    def _resolve(self) -> None:
        if self.future is not None and not self.future.done():
            self.future.set_result(self.error)


class KafkaWriter:
    """A producer with a background poll thread. Callbacks run only on that thread."""

    def __init__(self, bootstrap: str, delivery_timeout_ms: int = 10_000, **extra: Any):
        self.bootstrap = bootstrap
        self.delivery_timeout_ms = delivery_timeout_ms
        self.delivery_errors = 0
        self.last_error: str | None = None
        self._conf = producer_config(
            bootstrap, delivery_timeout_ms, error_cb=self._on_error, **extra
        )
        self._producer = Producer(self._conf)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll_loop, name="kafka-poll", daemon=True)
        self._thread.start()

    def _on_error(self, err: KafkaError) -> None:
        self.last_error = str(err)
        if err.fatal():
            # An idempotent producer that hit a fatal error cannot go on: replace it.
            with self._lock:
                old = self._producer
                self._producer = Producer(self._conf)
            old.flush(0)

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)

    def _produce(self, messages: Iterable[Message], on_delivery: Any, deadline: float) -> None:
        for m in messages:
            while True:
                try:
                    self._producer.produce(
                        m.topic,
                        m.value,
                        m.key,
                        on_delivery=on_delivery,
                        timestamp=m.timestamp_ms or 0,
                        headers=m.headers,
                    )
                    break
                except BufferError:
                    if time.monotonic() > deadline:
                        raise DeliveryFailed(
                            "the producer queue is full; Kafka is not keeping up"
                        ) from None
                    time.sleep(0.005)

    async def send(self, messages: list[Message]) -> None:
        """Produce ``messages``; return when all are acknowledged, raise DeliveryFailed otherwise."""
        if not messages:
            return
        loop = asyncio.get_running_loop()
        pending = _Pending(len(messages), loop)
        timeout = self.delivery_timeout_ms / 1000
        self._produce(messages, pending.callback, time.monotonic() + timeout)
        try:
            error = await asyncio.wait_for(asyncio.shield(pending.future), timeout + 2)  # type: ignore[arg-type]
        except TimeoutError:
            self.delivery_errors += 1
            raise DeliveryFailed(
                f"no acknowledgement from Kafka within {timeout + 2:.0f}s"
            ) from None
        if error is not None:
            self.delivery_errors += 1
            raise DeliveryFailed(f"Kafka delivery failed: {error}")

    def send_sync(self, messages: list[Message]) -> None:
        """Blocking variant for scripts: produce and wait for every acknowledgement."""
        if not messages:
            return
        done = threading.Event()
        pending = _Pending(len(messages), None)
        original = pending.callback

        def callback(err: KafkaError | None, msg: Any) -> None:
            original(err, msg)
            if pending.remaining == 0:
                done.set()

        timeout = self.delivery_timeout_ms / 1000
        self._produce(messages, callback, time.monotonic() + timeout)
        if not done.wait(timeout + 2):
            raise DeliveryFailed(f"no acknowledgement from Kafka within {timeout + 2:.0f}s")
        if pending.error is not None:
            raise DeliveryFailed(f"Kafka delivery failed: {pending.error}")

    def list_topics(self, topic: str | None = None, timeout: float = 2) -> Any:
        return self._producer.list_topics(topic, timeout=timeout)

    def close(self, timeout: float = 10) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._producer.flush(timeout)
