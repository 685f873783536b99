"""Bronze rows -> typed rows: the JSON decoded against the contracts, the event time corrected for
client clock skew, and the verdicts a row earns on its own (unparseable, future, too late)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

import duckdb
import polars as pl

from pipeline_assets.silver.schema import event_struct
from shoplake.core.contracts.event_time import event_time, is_future

TS_FORMAT = "%Y-%m-%dT%H:%M:%S%.f%#z"

# ``read(columns)`` yields the bronze rows of the arrival days ``arrival_window(day)`` in batches,
# every batch with an ``arrival_date`` column (unless only ``columns`` are asked for), in the
# same order on every call.
BronzeReader = Callable[[list[str] | None], Iterable[pl.DataFrame]]

_CONTEXT = (
    "platform",
    "device_type",
    "user_agent",
    "ip",
    "locale",
    "country",
    "page_url",
    "referrer",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_term",
    "utm_content",
)


def decode(bronze: pl.DataFrame) -> pl.DataFrame:
    """Bronze rows -> one typed, flat row per record.

    The JSON is parsed by DuckDB (``json_transform`` into the contracts' struct, on all cores):
    it is the single biggest cost of the batch layer, and DuckDB does it in half the CPU of
    Polars' ``json_decode``. A record that is not valid JSON decodes to nulls (it is then
    quarantined as ``unparseable``) instead of failing the whole partition.
    """
    struct = event_struct()
    con = duckdb.connect()
    try:
        con.register("bronze", bronze.select("value"))
        decoded = con.sql(
            "select case when json_valid(value) then json_transform(value, "
            f"'{json.dumps(_duckdb_type(struct))}') end as _e from bronze"
        ).pl()
    finally:
        con.close()
    df = bronze.with_columns(decoded["_e"].cast(struct))
    fields = [
        f for f in struct.to_schema() if f not in ("context", "traits", "event_id", "event_type")
    ]
    df = df.select(
        "kafka_partition",
        "kafka_offset",
        "kafka_timestamp",
        "arrival_date",
        "value",
        pl.col("event_id"),
        pl.col("_e").struct.field("event_type").alias("event_type"),
        *[pl.col("_e").struct.field(f) for f in fields],
        *[pl.col("_e").struct.field("context").struct.field(c).alias(c) for c in _CONTEXT],
    )
    df = df.rename({"ip": "ip_token"}).drop("pii_key_id")
    return df.with_columns(
        pl.col(c).str.to_datetime(TS_FORMAT, time_zone="UTC", strict=False)
        for c in ("occurred_at", "sent_at", "received_at")
    )


_DUCKDB_SCALARS = {
    pl.String: "VARCHAR",
    pl.Int64: "BIGINT",
    pl.Float64: "DOUBLE",
    pl.Boolean: "BOOLEAN",
}


def _duckdb_type(dtype: pl.DataType) -> Any:
    """A Polars type as a DuckDB ``json_transform`` structure."""
    if isinstance(dtype, pl.Struct):
        return {f.name: _duckdb_type(f.dtype) for f in dtype.fields}
    if isinstance(dtype, pl.List):
        return [_duckdb_type(dtype.inner)]
    return _DUCKDB_SCALARS[dtype.base_type()]


def prepare(
    batch: pl.DataFrame, first_row: int, lateness_days: int
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """One bronze batch -> typed rows with the row-local verdict, and the raw JSON of the rows
    that verdict already quarantines (the JSON of the others is not kept: it is most of a day's
    memory). ``_src`` numbers the rows across batches."""
    df = decode(batch).with_row_index("_src", offset=first_row)
    df = df.with_columns(
        event_at=event_time(pl.col("received_at"), pl.col("sent_at"), pl.col("occurred_at")),
    ).with_columns(event_date=pl.col("event_at").dt.date())
    unparseable = (
        pl.col("event_type").is_null()
        | pl.col("event_at").is_null()
        | pl.col("anonymous_id").is_null()
    )
    future = is_future(pl.col("received_at"), pl.col("sent_at"), pl.col("occurred_at"))
    too_late = pl.col("event_date") < pl.col("arrival_date") - pl.duration(days=lateness_days)
    df = df.with_columns(
        reason=pl.when(unparseable)
        .then(pl.lit("unparseable"))
        .when(future)
        .then(pl.lit("future_event"))
        .when(too_late)
        .then(pl.lit("late_beyond_window"))
        .otherwise(None)
    )
    raw = compact(df.filter(pl.col("reason").is_not_null()).select("_src", "value"))
    return df.drop("value"), raw


def compact(df: pl.DataFrame) -> pl.DataFrame:
    """A copy that owns its strings. A filtered Polars string column shares the buffers of the
    column it came from: a few kept rows would hold a whole batch's JSON in memory."""
    return pl.from_arrow(df.to_arrow())  # type: ignore[return-value]


def raw_json(read: BronzeReader, src: pl.Series) -> pl.DataFrame:
    """The raw JSON of rows ``src``, read again from bronze (only the ``value`` column)."""
    wanted = src.sort()
    out, first = [], 0
    for batch in read(["value"]):
        here = wanted.filter((wanted >= first) & (wanted < first + batch.height))
        out.append(pl.DataFrame({"_src": here, "value": batch["value"].gather(here - first)}))
        first += batch.height
    return pl.concat(out) if out else pl.DataFrame(schema={"_src": pl.UInt32, "value": pl.String})
