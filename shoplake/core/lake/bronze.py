"""The bronze tables' columns: one row per Kafka record, its value kept as the raw JSON text."""

from __future__ import annotations

import polars as pl

BRONZE_SCHEMA = {
    "kafka_partition": pl.Int32,
    "kafka_offset": pl.Int64,
    "kafka_timestamp": pl.Datetime("ms", "UTC"),
    "key": pl.String,
    "event_id": pl.String,
    "event_type": pl.String,
    "value": pl.String,
}
DLQ_SCHEMA = {**BRONZE_SCHEMA, "reason": pl.String}
