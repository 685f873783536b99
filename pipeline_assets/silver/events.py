"""bronze/events (by arrival day) -> silver/events (by event day), plus the quarantine.

For event day D the transform reads the arrival days D-1 .. D+lateness. Each row is decoded with
a Polars schema derived from the contracts, its event time is corrected for client clock skew
(``received_at - (sent_at - occurred_at)``), and duplicates are removed by event_id (the first
copy to arrive is canonical). Every bronze row then lands in exactly one place:

- silver/events of its event day (the canonical copy of a good event);
- silver/events_quarantine of its arrival day, with a reason (future, too late, contract);
- the duplicate count of the partition its canonical copy went to.
"""

from __future__ import annotations

import functools
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pandera.polars as pa
import polars as pl

from pipeline_assets.silver.schema import SilverEvent, event_struct

TS_FORMAT = "%Y-%m-%dT%H:%M:%S%.f%#z"
FUTURE_TOLERANCE = timedelta(hours=1)
BOT_UA = re.compile(r"bot|crawl|spider|scrap|headless|python-requests|curl|wget|httpclient", re.I)
BOT_GAP = timedelta(milliseconds=100)
BOT_MIN_CLICKS = 5
# Decoded bronze batches beyond this many rows go through a temporary file (see below).
SPILL_ROWS = int(os.environ.get("SHOPLAKE_SILVER_SPILL_ROWS", "2000000"))

_CONTEXT = ("platform", "device_type", "user_agent", "ip", "locale", "country", "page_url", "referrer",
            "utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")  # fmt: skip


@dataclass
class SilverEventsResult:
    events: pl.DataFrame
    quarantine: pl.DataFrame
    stats: dict[str, int]


def window_days(day: date, lateness_days: int) -> list[date]:
    """Arrival days that can hold events of ``day``."""
    return [day + timedelta(days=i) for i in range(-1, lateness_days + 1)]


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
        "kafka_partition", "kafka_offset", "kafka_timestamp", "arrival_date", "value",
        pl.col("event_id"),
        pl.col("_e").struct.field("event_type").alias("event_type"),
        *[pl.col("_e").struct.field(f) for f in fields],
        *[pl.col("_e").struct.field("context").struct.field(c).alias(c) for c in _CONTEXT],
    )  # fmt: skip
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


@functools.lru_cache(maxsize=50_000)
def _parse_ua(ua: str) -> tuple[str | None, str | None, str | None]:
    from ua_parser import parse

    r = parse(ua)
    return (
        r.user_agent.family if r.user_agent else None,
        r.os.family if r.os else None,
        r.device.family if r.device else None,
    )


def parse_user_agents(df: pl.DataFrame) -> pl.DataFrame:
    """Browser, OS and device family from the user agent (ua-parser), parsed once per distinct UA."""
    uas = df.select(pl.col("user_agent").drop_nulls().unique()).to_series().to_list()
    parsed = [(ua, *_parse_ua(ua)) for ua in sorted(uas)]
    lookup = pl.DataFrame(
        parsed, schema=["user_agent", "browser", "os", "device_family"], orient="row"
    )
    if lookup.is_empty():
        lookup = pl.DataFrame(
            schema={c: pl.String for c in ("user_agent", "browser", "os", "device_family")}
        )
    return df.join(lookup, on="user_agent", how="left")


def flag_bots(df: pl.DataFrame) -> pl.DataFrame:
    """is_bot: a crawler user agent, or a visitor with >= 5 events less than 100 ms apart."""
    fast = (
        df.select("anonymous_id", "event_at")
        .sort("anonymous_id", "event_at")
        .with_columns(gap=pl.col("event_at").diff().over("anonymous_id"))
        # Strictly positive: equal timestamps usually mean coarse clocks (whole seconds), not a bot.
        .with_columns(
            quick=((pl.col("gap") < BOT_GAP) & (pl.col("gap") > timedelta(0))).fill_null(False)
        )
        .with_columns(run=(~pl.col("quick")).cum_sum().over("anonymous_id"))
        .group_by("anonymous_id", "run")
        .agg(clicks=pl.len())
        .filter(pl.col("clicks") >= BOT_MIN_CLICKS)
        .select("anonymous_id")
        .unique()
        .with_columns(cadence_bot=pl.lit(True))
    )
    return (
        df.join(fast, on="anonymous_id", how="left")
        .with_columns(
            is_bot=pl.col("cadence_bot").fill_null(False)
            | pl.col("user_agent").fill_null("").str.contains(f"(?i){BOT_UA.pattern}")
        )
        .drop("cadence_bot")
    )


# ``read(columns)`` yields the bronze rows of the arrival days ``window_days(day)`` in batches,
# every batch with an ``arrival_date`` column (unless only ``columns`` are asked for), in the
# same order on every call.
BronzeReader = Callable[[list[str] | None], Iterable[pl.DataFrame]]


def build_silver_events(
    bronze: pl.DataFrame, day: date, lateness_days: int = 2
) -> SilverEventsResult:
    """``bronze``: rows of arrival days ``window_days(day)`` with an ``arrival_date`` column."""

    def read(columns: list[str] | None) -> list[pl.DataFrame]:
        return [bronze.select(columns) if columns else bronze]

    return build_silver_events_from(read, day, lateness_days)


def _prepare(
    batch: pl.DataFrame, first_row: int, lateness_days: int
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """One bronze batch -> typed rows with the row-local verdict, and the raw JSON of the rows
    that verdict already quarantines (the JSON of the others is not kept: it is most of a day's
    memory). ``_src`` numbers the rows across batches."""
    df = decode(batch).with_row_index("_src", offset=first_row)
    df = df.with_columns(
        event_at=pl.col("received_at") - (pl.col("sent_at") - pl.col("occurred_at")),
    ).with_columns(event_date=pl.col("event_at").dt.date())
    unparseable = (
        pl.col("event_type").is_null()
        | pl.col("event_at").is_null()
        | pl.col("anonymous_id").is_null()
    )
    future = pl.col("occurred_at") > pl.col("received_at") + FUTURE_TOLERANCE
    too_late = pl.col("event_date") < pl.col("arrival_date") - pl.duration(days=lateness_days)
    df = df.with_columns(
        reason=pl.when(unparseable).then(pl.lit("unparseable"))
        .when(future).then(pl.lit("future_event"))
        .when(too_late).then(pl.lit("late_beyond_window"))
        .otherwise(None)
    )  # fmt: skip
    raw = df.filter(pl.col("reason").is_not_null()).select("_src", "value")
    return df.drop("value"), raw


def _raw_json(read: BronzeReader, src: pl.Series) -> pl.DataFrame:
    """The raw JSON of rows ``src``, read again from bronze (only the ``value`` column)."""
    wanted = src.sort()
    out, first = [], 0
    for batch in read(["value"]):
        here = wanted.filter((wanted >= first) & (wanted < first + batch.height))
        out.append(pl.DataFrame({"_src": here, "value": batch["value"].gather(here - first)}))
        first += batch.height
    return pl.concat(out) if out else pl.DataFrame(schema={"_src": pl.UInt32, "value": pl.String})


def build_silver_events_from(
    read: BronzeReader, day: date, lateness_days: int = 2
) -> SilverEventsResult:
    """silver/events and its quarantine for ``day``, from bronze read batch by batch (above)."""
    with tempfile.TemporaryDirectory(prefix="shoplake-silver-") as spill:
        parts, raws, rows = [], [], 0
        for batch in read(None):
            part, raw = _prepare(batch, rows, lateness_days)
            rows += batch.height
            raws.append(raw)
            if rows > SPILL_ROWS:
                # Freshly decoded frames hold about 2.5x their size in buffers; read back from
                # disk they are compact. Below SPILL_ROWS the round trip costs more than it saves.
                path = Path(spill) / f"part-{len(parts):05d}.arrow"
                part.write_ipc(path)
                part = path
            parts.append(part)
        df = pl.concat(
            [pl.read_ipc(p) if isinstance(p, Path) else p for p in parts],
            how="vertical_relaxed",
        )
    raw = pl.concat(raws, how="vertical_relaxed")
    del parts, raws

    # Canonical copy per event_id: the first to arrive (sorting only the keys, not the frame).
    order = df.select(
        pl.arg_sort_by("kafka_timestamp", "kafka_partition", "kafka_offset")
    ).to_series()
    first = df.get_column("event_id").gather(order).is_first_distinct()
    canonical = pl.repeat(False, df.height, eager=True).scatter(order, first)
    df = df.with_columns(
        is_canonical=canonical | pl.col("event_id").is_null(),
        bucket=pl.when(pl.col("reason").is_null()).then(pl.col("event_date")).otherwise(pl.col("arrival_date")),
    )  # fmt: skip
    del order, first, canonical
    canon_bucket = df.filter(pl.col("is_canonical") & pl.col("event_id").is_not_null()).select(
        "event_id", pl.col("bucket").alias("canonical_bucket")
    )
    dups = (
        df.filter(~pl.col("is_canonical"))
        .select("event_id")
        .join(canon_bucket, on="event_id", how="left")
    )
    duplicates_removed = dups.filter(pl.col("canonical_bucket") == day).height
    del canon_bucket, dups

    mine = df.filter(pl.col("is_canonical") & (pl.col("bucket") == day))
    del df  # frames are released as soon as they are replaced: a 10M-event day is several GB
    good = mine.filter(pl.col("reason").is_null())
    bad = mine.filter(pl.col("reason").is_not_null())
    input_rows = mine.height + duplicates_removed
    del mine

    good = flag_bots(parse_user_agents(good)).sort("event_at", "event_id")
    good, violations = validate(good)
    bad = bad.join(raw, on="_src", how="left")
    if violations.height:
        violations = violations.join(_raw_json(read, violations["_src"]), on="_src", how="left")
    else:
        violations = violations.with_columns(value=pl.lit(None, pl.String))
    quarantine = pl.concat(
        [quarantine_rows(bad, None), quarantine_rows(violations, "contract_violation")],
        how="diagonal_relaxed",
    ).sort("kafka_partition", "kafka_offset")
    events = good.drop("_src", "reason", "bucket", "is_canonical")
    del good
    events = events.select(sorted(events.columns, key=_column_order))
    stats = {
        "input_rows": input_rows,
        "silver_rows": events.height,
        "quarantined": quarantine.height,
        "duplicates_removed": duplicates_removed,
        "bots": int(events["is_bot"].sum()) if events.height else 0,
    }
    return SilverEventsResult(events, quarantine, stats)


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
    cols: list[Any] = [
        "kafka_partition", "kafka_offset", "kafka_timestamp", "arrival_date", "event_id", "event_type",
        pl.col("value").alias("raw"),
    ]  # fmt: skip
    out = df.select(*cols, pl.col("event_date"))
    out = out.with_columns(reason=pl.lit(reason) if reason else df["reason"])
    detail = (
        df["detail"]
        if "detail" in df.columns
        else pl.Series("detail", [None] * df.height, pl.String)
    )
    return out.with_columns(detail=detail)


_FIRST = ("event_id", "event_type", "schema_version", "event_at", "event_date", "occurred_at", "sent_at",
          "received_at", "anonymous_id", "user_id", "session_id")  # fmt: skip


def _column_order(name: str) -> tuple[int, str]:
    return (_FIRST.index(name), "") if name in _FIRST else (len(_FIRST), name)
