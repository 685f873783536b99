"""The contract check and silver/events_quarantine: rows that fail SilverEvent, and every
quarantined row with its reason, the failed checks and its raw JSON, byte for byte."""

from __future__ import annotations

from typing import Any

import pandera.polars as pa
import polars as pl

from pipeline_assets.silver.events.decode import BronzeReader, raw_json
from pipeline_assets.silver.schema import SilverEvent

# The columns a quarantined row keeps until the quarantine is assembled (its raw JSON is joined
# back by ``_src``).
KEEP = (
    "_src",
    "kafka_partition",
    "kafka_offset",
    "kafka_timestamp",
    "arrival_date",
    "event_id",
    "event_type",
    "event_date",
    "reason",
)


def validate(df: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split rows into those satisfying SilverEvent and those that do not (with the failed check)."""
    if df.is_empty():
        return df, df.with_columns(detail=pl.lit(None, pl.String)).clear()
    indexed = df.with_row_index("_row")
    try:
        SilverEvent.validate(indexed, lazy=True)
        return df, df.with_columns(detail=pl.lit(None, pl.String)).clear()
    except pa.errors.SchemaErrors as err:
        cases = err.failure_cases
        if "index" not in cases.columns or cases["index"].null_count() == cases.height:
            raise  # a table-level failure (a missing column): a bug, not bad rows
        per_row = (
            cases.filter(pl.col("index").is_not_null())
            .group_by("index")
            .agg(detail=(pl.col("column") + ": " + pl.col("check")).str.join("; "))
            .rename({"index": "_row"})
            .with_columns(pl.col("_row").cast(pl.UInt32))
        )
        bad = indexed.join(per_row, on="_row", how="inner").drop("_row")
        ok = indexed.join(per_row, on="_row", how="anti").drop("_row")
        return ok, bad


def quarantine_rows(df: pl.DataFrame, reason: str | None) -> pl.DataFrame:
    """Rows in the quarantine's shape: ``reason`` for all of them, or their own when None."""
    cols: list[Any] = [
        "_src",
        "kafka_partition",
        "kafka_offset",
        "kafka_timestamp",
        "arrival_date",
        "event_id",
        "event_type",
        pl.col("value").alias("raw"),
    ]
    out = df.select(*cols, pl.col("event_date"))
    out = out.with_columns(reason=pl.lit(reason) if reason else df["reason"])
    detail = (
        df["detail"]
        if "detail" in df.columns
        else pl.Series("detail", [None] * df.height, pl.String)
    )
    return out.with_columns(detail=detail)


def quarantine(bad: pl.DataFrame, violations: pl.DataFrame, read: BronzeReader) -> pl.DataFrame:
    """silver/events_quarantine: the rows the row-local verdict rejected (``bad``, with their raw
    JSON) and the contract violations (whose raw JSON is read again from bronze)."""
    if violations.height:
        violations = violations.join(raw_json(read, violations["_src"]), on="_src", how="left")
    else:
        violations = violations.with_columns(value=pl.lit(None, pl.String))
    return (
        pl.concat(
            [quarantine_rows(bad, None), quarantine_rows(violations, "contract_violation")],
            how="diagonal_relaxed",
        )
        # _src breaks ties: imported history has no Kafka offsets, and the bytes must not vary.
        .sort("kafka_partition", "kafka_offset", "_src")
        .drop("_src")
    )
