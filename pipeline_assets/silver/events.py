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
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pandera.polars as pa
import polars as pl

from pipeline_assets.silver.schema import SilverEvent, event_struct
from shoplake.core.contracts.event_time import event_time, is_future
from shoplake.core.rules import BOT_GAP, BOT_MIN_CLICKS, BOT_USER_AGENT
from shoplake.core.settings import get_settings

TS_FORMAT = "%Y-%m-%dT%H:%M:%S%.f%#z"
# Past this many bronze rows a day is processed out of core (build_silver_events_from), in
# BUCKETS pieces by a hash of event_id.
SPILL_ROWS = get_settings().silver_spill_rows
BUCKETS = get_settings().silver_buckets

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


def cadence_bots(keys: pl.DataFrame) -> pl.DataFrame:
    """Visitors with >= 5 events less than 100 ms apart (``keys``: anonymous_id, event_at), with
    ``cadence_bot`` true. Crawler user agents are the other bot rule (``BOT_USER_AGENT``)."""
    return (
        keys.sort("anonymous_id", "event_at")
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
        .sort("anonymous_id")
        .with_columns(cadence_bot=pl.lit(True))
    )


# ``read(columns)`` yields the bronze rows of the arrival days ``arrival_window(day)`` in batches,
# every batch with an ``arrival_date`` column (unless only ``columns`` are asked for), in the
# same order on every call.
BronzeReader = Callable[[list[str] | None], Iterable[pl.DataFrame]]


@dataclass
class SilverEventsResult:
    """silver/events of one day as ``parts`` (in order: one frame, or one per hour of a day
    processed out of core, read from temporary files), its quarantine and its figures.

    Use it as a context manager, or call ``close()``: it removes the temporary files.
    """

    parts: list[pl.LazyFrame]
    quarantine: pl.DataFrame
    stats: dict[str, int]
    spill: tempfile.TemporaryDirectory | None = field(default=None, repr=False)

    @property
    def schema(self) -> pl.Schema:
        return self.parts[0].collect_schema()

    @property
    def events(self) -> pl.DataFrame:
        """The whole partition as one frame (for small days and tests)."""
        return pl.concat([p.collect() for p in self.parts])

    def close(self) -> None:
        if self.spill is not None:
            self.spill.cleanup()

    def __enter__(self) -> SilverEventsResult:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def build_silver_events(
    bronze: pl.DataFrame, day: date, lateness_days: int = 2
) -> SilverEventsResult:
    """``bronze``: rows of arrival days ``arrival_window(day)`` with an ``arrival_date`` column.
    The result is held in memory (no temporary files left behind)."""

    def read(columns: list[str] | None) -> list[pl.DataFrame]:
        return [bronze.select(columns) if columns else bronze]

    with build_silver_events_from(read, day, lateness_days) as out:
        return SilverEventsResult([out.events.lazy()], out.quarantine, out.stats)


def _prepare(
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
    raw = _compact(df.filter(pl.col("reason").is_not_null()).select("_src", "value"))
    return df.drop("value"), raw


def _compact(df: pl.DataFrame) -> pl.DataFrame:
    """A copy that owns its strings. A filtered Polars string column shares the buffers of the
    column it came from: a few kept rows would hold a whole batch's JSON in memory."""
    return pl.from_arrow(df.to_arrow())  # type: ignore[return-value]


def _raw_json(read: BronzeReader, src: pl.Series) -> pl.DataFrame:
    """The raw JSON of rows ``src``, read again from bronze (only the ``value`` column)."""
    wanted = src.sort()
    out, first = [], 0
    for batch in read(["value"]):
        here = wanted.filter((wanted >= first) & (wanted < first + batch.height))
        out.append(pl.DataFrame({"_src": here, "value": batch["value"].gather(here - first)}))
        first += batch.height
    return pl.concat(out) if out else pl.DataFrame(schema={"_src": pl.UInt32, "value": pl.String})


_QUARANTINE_KEEP = (
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


def build_silver_events_from(
    read: BronzeReader, day: date, lateness_days: int = 2, log: Callable[[str], Any] | None = None
) -> SilverEventsResult:
    """silver/events and its quarantine for ``day``, from bronze read batch by batch (above).

    Up to SPILL_ROWS bronze rows the day is held in memory. Past that it is processed out of
    core, in three passes over temporary files (under TMPDIR):

    1. decoded rows go to BUCKETS files by a hash of event_id, so every copy of an event lands in
       the same bucket;
    2. each bucket is deduplicated, parsed and validated on its own, and its good rows are filed
       again by hour of event_at;
    3. the bot cadence rule (which needs all of a visitor's events) runs on two columns of the
       whole day, and the events are sorted hour by hour as they are written.

    Memory then holds one batch, one bucket or one hour, never the arrival window. The result is
    the same either way: the output order is (event_at, event_id), unique after deduplication.
    """
    spill = tempfile.TemporaryDirectory(prefix="shoplake-silver-")
    try:
        return _build(read, day, lateness_days, spill, log or (lambda _: None))
    except BaseException:
        spill.cleanup()
        raise


def _build(
    read: BronzeReader,
    day: date,
    lateness_days: int,
    spill: tempfile.TemporaryDirectory,
    log: Callable[[str], Any],
) -> SilverEventsResult:
    folder, started = Path(spill.name), time.monotonic()
    held: list[pl.DataFrame] = []  # decoded batches, while the day is small
    raws, rows, spilled = [], 0, 0
    for batch in read(None):
        part, raw = _prepare(batch, rows, lateness_days)
        rows += batch.height
        raws.append(raw)
        held.append(part)
        if rows > SPILL_ROWS:
            if not spilled:
                log(
                    f"silver/events {day}: more than {SPILL_ROWS:,} bronze rows, out of core in "
                    f"{BUCKETS} buckets under {folder}"
                )
            for frame in held:
                _file_by_bucket(frame, folder, spilled)
                spilled += 1
            held = []
    raw = pl.concat(raws, how="vertical_relaxed")
    del raws
    log(f"silver/events {day}: {rows:,} bronze rows decoded ({time.monotonic() - started:.0f} s)")

    if spilled:
        buckets: Iterable[pl.DataFrame] = _read_buckets(folder)
    else:
        buckets = [pl.concat(held, how="vertical_relaxed")]
    del held

    stats = {"input_rows": 0, "duplicates_removed": 0}
    keys, flags, bads, violations, oks = [], [], [], [], []
    for n, bucket in enumerate(buckets):
        good, bad, counts = _resolve(bucket, day)
        del bucket
        stats = {k: stats[k] + counts[k] for k in stats}
        good = parse_user_agents(good).with_columns(
            is_bot=pl.col("user_agent").fill_null("").str.contains(f"(?i){BOT_USER_AGENT.pattern}")
        )
        keys.append(_compact(good.select("anonymous_id", "event_at")))
        ok, violated = validate(good)
        del good
        flags.append(_compact(ok.select("anonymous_id", "is_bot")))
        bads.append(_compact(bad.select(_QUARANTINE_KEEP)))
        violations.append(_compact(violated.select(*_QUARANTINE_KEEP, "detail")))
        if spilled:
            _file_by_hour(ok, folder, n)
            oks.append(ok.clear())
            if n % 8 == 7:
                log(
                    f"silver/events {day}: {n + 1} buckets deduplicated and validated "
                    f"({time.monotonic() - started:.0f} s)"
                )
        else:
            oks.append(ok)
        del ok

    cadence = cadence_bots(pl.concat(keys, how="vertical_relaxed"))
    del keys
    if spilled:
        hours = sorted({p.name[:3] for p in folder.glob("h*-b*.arrow")})
        parts = [
            _finish(
                pl.concat(
                    [pl.scan_ipc(p) for p in sorted(folder.glob(f"{h}-b*.arrow"))],
                    how="vertical_relaxed",
                ),
                cadence,
            )
            for h in hours
        ]
    else:
        parts = []
    if not parts:
        parts = [_finish(pl.concat(oks, how="vertical_relaxed").lazy(), cadence)]

    quarantine = _quarantine(
        pl.concat(bads, how="vertical_relaxed").join(raw, on="_src", how="left"),
        pl.concat(violations, how="vertical_relaxed"),
        read,
    )
    flags = pl.concat(flags, how="vertical_relaxed").join(cadence, on="anonymous_id", how="left")
    bots = flags.select((pl.col("is_bot") | pl.col("cadence_bot").fill_null(False)).sum()).item()
    stats = {
        "input_rows": stats["input_rows"],
        "silver_rows": flags.height,
        "quarantined": quarantine.height,
        "duplicates_removed": stats["duplicates_removed"],
        "bots": int(bots),
    }
    return SilverEventsResult(parts, quarantine, stats, spill)


def _file_by_bucket(frame: pl.DataFrame, folder: Path, seq: int) -> None:
    bucket = (pl.col("event_id").hash(seed=0) % BUCKETS).alias("_bucket")
    for (b,), piece in frame.with_columns(bucket).partition_by("_bucket", as_dict=True).items():
        piece.drop("_bucket").write_ipc(folder / f"b{b:03d}-{seq:05d}.arrow", compression="lz4")


def _read_buckets(folder: Path) -> Iterator[pl.DataFrame]:
    """Each bucket's rows, in file order; its files are removed once read (disk is finite too)."""
    for b in range(BUCKETS):
        files = sorted(folder.glob(f"b{b:03d}-*.arrow"))
        if not files:
            continue
        frame = pl.concat([pl.read_ipc(p) for p in files], how="vertical_relaxed")
        for p in files:
            p.unlink()
        yield frame


def _file_by_hour(frame: pl.DataFrame, folder: Path, bucket: int) -> None:
    hour = pl.col("event_at").dt.hour().alias("_hour")
    for (h,), piece in frame.with_columns(hour).partition_by("_hour", as_dict=True).items():
        piece.drop("_hour").write_ipc(folder / f"h{h:02d}-b{bucket:03d}.arrow", compression="lz4")


def _resolve(df: pl.DataFrame, day: date) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, int]]:
    """Rows holding every copy of their event_ids -> the good and the quarantined rows of ``day``,
    and how many rows came in and how many duplicates were dropped for it."""
    # Canonical copy per event_id: the first to arrive (sorting only the keys, not the frame).
    order = df.select(
        pl.arg_sort_by("kafka_timestamp", "kafka_partition", "kafka_offset")
    ).to_series()
    first = df.get_column("event_id").gather(order).is_first_distinct()
    canonical = pl.repeat(False, df.height, eager=True).scatter(order, first)
    df = df.with_columns(
        is_canonical=canonical | pl.col("event_id").is_null(),
        bucket=pl.when(pl.col("reason").is_null())
        .then(pl.col("event_date"))
        .otherwise(pl.col("arrival_date")),
    )
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
    del df  # frames are released as soon as they are replaced: a bucket can be GBs
    good = mine.filter(pl.col("reason").is_null()).drop("bucket", "is_canonical")
    bad = mine.filter(pl.col("reason").is_not_null())
    counts = {
        "input_rows": mine.height + duplicates_removed,
        "duplicates_removed": duplicates_removed,
    }
    return good, bad, counts


def _finish(frame: pl.LazyFrame, cadence: pl.DataFrame) -> pl.LazyFrame:
    """Good rows -> silver/events rows: the cadence bot flag, the column order, sorted."""
    out = (
        frame.join(cadence.lazy(), on="anonymous_id", how="left")
        .with_columns(is_bot=pl.col("is_bot") | pl.col("cadence_bot").fill_null(False))
        .drop("cadence_bot", "_src", "reason")
        .sort("event_at", "event_id")
    )
    return out.select(sorted(out.collect_schema().names(), key=_column_order))


def _quarantine(bad: pl.DataFrame, violations: pl.DataFrame, read: BronzeReader) -> pl.DataFrame:
    if violations.height:
        violations = violations.join(_raw_json(read, violations["_src"]), on="_src", how="left")
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


_FIRST = (
    "event_id",
    "event_type",
    "schema_version",
    "event_at",
    "event_date",
    "occurred_at",
    "sent_at",
    "received_at",
    "anonymous_id",
    "user_id",
    "session_id",
)


def _column_order(name: str) -> tuple[int, str]:
    return (_FIRST.index(name), "") if name in _FIRST else (len(_FIRST), name)
