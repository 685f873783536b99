"""Prometheus metrics of the collector (one registry per app, so tests can build several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector


class CollectorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.accepted = Counter(
            "shoplake_collector_events_accepted",
            "Events written to shop.events",
            ["event_type"],
            registry=r,
        )
        self.rejected = Counter(
            "shoplake_collector_events_rejected",
            "Events rejected by contract or size",
            ["reason"],
            registry=r,
        )
        self.dlq = Counter(
            "shoplake_collector_events_dlq", "Records written to the DLQ", registry=r
        )
        self.requests = Counter(
            "shoplake_collector_requests",
            "HTTP requests to /v1/events by status code, 5xx included",
            ["status"],
            registry=r,
        )
        self.latency = Histogram(
            "shoplake_collector_request_duration_seconds",
            "Request latency, receipt to response (includes the Kafka acknowledgement)",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.delivery_errors = Counter(
            "shoplake_collector_kafka_delivery_errors",
            "Requests answered 503 because Kafka did not ack",
            registry=r,
        )
        self.batch_size = Histogram(
            "shoplake_collector_batch_events",
            "Events per request",
            buckets=(1, 10, 50, 100, 250, 500),
            registry=r,
        )
        self.uploads_refused = Counter(
            "shoplake_collector_uploads_refused",
            "Requests answered 503 because too many bodies were being received",
            registry=r,
        )
        self.kafka_up = Gauge(
            "shoplake_collector_kafka_up", "1 if the last health check reached Kafka", registry=r
        )
        ProcessCollector(registry=r)  # process_cpu_seconds_total, process_resident_memory_bytes
