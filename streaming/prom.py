"""Prometheus metrics of the speed layer (served by ``streaming.run`` on SHOPLAKE_STREAM_METRICS_PORT).

Bytewax's own ``bytewax_kafka_consumer_lag`` gauge is in the same default registry, so it is
served too; :data:`CONSUMER_LAG` is ours, computed from the broker's high watermarks.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECORDS_IN = Counter(
    "shoplake_stream_records_in_total", "Kafka records read by the speed layer", ["topic"]
)
REJECTED = Counter(
    "shoplake_stream_rejected_total",
    "Records that are not live events (stream rejects, DLQ records read, future events)",
    ["reason"],
)
DUPLICATES = Counter("shoplake_stream_duplicates_total", "Events dropped as repeats of an event_id")
LATE_EVENTS = Counter(
    "shoplake_stream_late_events_total",
    "Events that arrived after their window closed (counted in late_events)",
    ["window_size"],
)
DROPPED = Counter(
    "shoplake_stream_dropped_total", "Updates that could not be applied any more", ["reason"]
)
ROWS_OUT = Counter("shoplake_stream_rows_out_total", "Rows written to the speed tables", ["table"])
WINDOW_EMIT_DELAY = Histogram(
    "shoplake_stream_window_emit_delay_seconds",
    "Wall-clock time from a window's end to its emission",
    ["window_size"],
    buckets=(1, 5, 10, 20, 30, 45, 60, 90, 120, 300, 600, 1800, 3600, float("inf")),
)
ACTIVE_SESSIONS = Gauge(
    "shoplake_stream_active_sessions", "Open sessions held by this process", multiprocess_mode="sum"
)
CONSUMER_LAG = Gauge(
    "shoplake_stream_consumer_lag_messages",
    "High watermark minus the next offset to read, per input partition",
    ["topic", "partition"],
)

# Open sessions per shard in this process (several workers are threads of one process).
_open_sessions: dict[str, int] = {}
ACTIVE_SESSIONS.set_function(lambda: sum(_open_sessions.values()))


def set_open_sessions(shard: str, n: int) -> None:
    _open_sessions[shard] = n


# Next offset to read per (topic, partition), recorded by the decode step for the lag gauge.
positions: dict[tuple[str, int], int] = {}
