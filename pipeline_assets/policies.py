"""Shared asset policies: retries for IO-bound assets, metadata helpers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date

import dagster as dg
import polars as pl

from shoplake.core.platform.kafka import KafkaUnavailable
from shoplake.core.settings import ConfigError

# IO-bound assets (Kafka, databases, files) retry with exponential backoff and full jitter.
IO_RETRY = dg.RetryPolicy(
    max_retries=3, delay=2, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.FULL
)
# Errors a retry cannot fix: a missing broker or database, a wrong setting.
NOT_RETRYABLE = (ConfigError, KafkaUnavailable, FileNotFoundError)


@contextmanager
def fail_without_retry() -> Iterator[None]:
    """Turns an error a retry cannot fix into a Dagster failure that is not retried, whose
    description is the error's own message (which says what to run)."""
    try:
        yield
    except NOT_RETRYABLE as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from exc


_POLARS_TO_TYPE = {
    pl.String: "string",
    pl.Int32: "int",
    pl.Int64: "bigint",
    pl.Float64: "double",
    pl.Boolean: "boolean",
    pl.Date: "date",
}


def column_schema(frame: pl.DataFrame | pl.Schema) -> dg.TableSchema:
    cols = []
    for name, dtype in (frame if isinstance(frame, pl.Schema) else frame.schema).items():
        base = dtype.base_type() if hasattr(dtype, "base_type") else dtype
        cols.append(dg.TableColumn(name, _POLARS_TO_TYPE.get(base, str(dtype).lower())))
    return dg.TableSchema(columns=cols)


def partition_metadata(per_day: dict[str, int], frame: pl.DataFrame | None) -> dict:
    """Row counts (total and per partition) and the column schema of the last frame written."""
    metadata: dict = {"dagster/row_count": sum(per_day.values()), "partitions": per_day}
    if frame is not None:
        metadata["dagster/column_schema"] = column_schema(frame)
    return metadata


def partition_days(context: dg.AssetExecutionContext) -> list[date]:
    """The days this run materializes (one, or a range under a single-run backfill)."""
    return [date.fromisoformat(k) for k in context.partition_keys]
