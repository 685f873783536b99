"""The stages put together: silver/events and its quarantine for one day, in memory or out of
core, from bronze read batch by batch."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl

from pipeline_assets.silver.events import spill
from pipeline_assets.silver.events.agents import cadence_bots, flag_agent_bots, parse_user_agents
from pipeline_assets.silver.events.decode import BronzeReader, compact, prepare
from pipeline_assets.silver.events.dedupe import resolve
from pipeline_assets.silver.events.quarantine import KEEP, quarantine, validate


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


@dataclass
class _Settled:
    """What the buckets leave for the rest of the day, one frame per bucket in each list (in
    bucket order), each a compact copy so that a bucket's memory is freed once it is done."""

    keys: list[pl.DataFrame] = field(default_factory=list)
    """anonymous_id, event_at of the good rows: the cadence rule needs all of a visitor's events."""
    flags: list[pl.DataFrame] = field(default_factory=list)
    """anonymous_id, is_bot (by user agent) of the valid rows: for the bot count."""
    bad: list[pl.DataFrame] = field(default_factory=list)
    """Rows the row-local verdict quarantines (columns KEEP)."""
    violations: list[pl.DataFrame] = field(default_factory=list)
    """Rows that fail the contract (columns KEEP and detail)."""
    good: list[pl.DataFrame] = field(default_factory=list)
    """The valid rows; out of core only their empty schema, the rows are in the hourly files."""


def build_silver_events(
    bronze: pl.DataFrame, day: date, lateness_days: int = 2
) -> SilverEventsResult:
    """``bronze``: rows of arrival days ``arrival_window(day)`` with an ``arrival_date`` column.
    The result is held in memory (no temporary files left behind)."""

    def read(columns: list[str] | None) -> list[pl.DataFrame]:
        return [bronze.select(columns) if columns else bronze]

    with build_silver_events_from(read, day, lateness_days) as out:
        return SilverEventsResult([out.events.lazy()], out.quarantine, out.stats)


def build_silver_events_from(
    read: BronzeReader, day: date, lateness_days: int = 2, log: Callable[[str], Any] | None = None
) -> SilverEventsResult:
    """silver/events and its quarantine for ``day``, from bronze read batch by batch (BronzeReader).

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
    folder = tempfile.TemporaryDirectory(prefix="shoplake-silver-")
    try:
        return _build(read, day, lateness_days, folder, log or (lambda _: None))
    except BaseException:
        folder.cleanup()
        raise


def _build(
    read: BronzeReader,
    day: date,
    lateness_days: int,
    tmp: tempfile.TemporaryDirectory,
    log: Callable[[str], Any],
) -> SilverEventsResult:
    folder, started = Path(tmp.name), time.monotonic()
    held: list[pl.DataFrame] = []  # decoded batches, while the day is small
    raws, rows, spilled = [], 0, 0
    for batch in read(None):
        part, raw = prepare(batch, rows, lateness_days)
        rows += batch.height
        raws.append(raw)
        held.append(part)
        if rows > spill.SPILL_ROWS:
            if not spilled:
                log(
                    f"silver/events {day}: more than {spill.SPILL_ROWS:,} bronze rows, out of "
                    f"core in {spill.BUCKETS} buckets under {folder}"
                )
            for frame in held:
                spill.file_by_bucket(frame, folder, spilled)
                spilled += 1
            held = []
    raw = _concat(raws)
    del raws
    log(f"silver/events {day}: {rows:,} bronze rows decoded ({time.monotonic() - started:.0f} s)")

    buckets: Iterable[pl.DataFrame] = spill.read_buckets(folder) if spilled else [_concat(held)]
    del held

    stats = {"input_rows": 0, "duplicates_removed": 0}
    settled = _Settled()
    for n, bucket in enumerate(buckets):
        good, bad, counts = resolve(bucket, day)
        del bucket
        stats = {k: stats[k] + counts[k] for k in stats}
        good = flag_agent_bots(parse_user_agents(good))
        settled.keys.append(compact(good.select("anonymous_id", "event_at")))
        ok, violated = validate(good)
        del good
        settled.flags.append(compact(ok.select("anonymous_id", "is_bot")))
        settled.bad.append(compact(bad.select(KEEP)))
        settled.violations.append(compact(violated.select(*KEEP, "detail")))
        if spilled:
            spill.file_by_hour(ok, folder, n)
            settled.good.append(ok.clear())
            if n % 8 == 7:
                log(
                    f"silver/events {day}: {n + 1} buckets deduplicated and validated "
                    f"({time.monotonic() - started:.0f} s)"
                )
        else:
            settled.good.append(ok)
        del ok

    cadence = cadence_bots(_concat(settled.keys))
    settled.keys.clear()
    parts = [_finish(hour, cadence) for hour in spill.scan_hours(folder)] if spilled else []
    if not parts:
        parts = [_finish(_concat(settled.good).lazy(), cadence)]

    quarantined = quarantine(
        _concat(settled.bad).join(raw, on="_src", how="left"), _concat(settled.violations), read
    )
    flags = _concat(settled.flags).join(cadence, on="anonymous_id", how="left")
    bots = flags.select((pl.col("is_bot") | pl.col("cadence_bot").fill_null(False)).sum()).item()
    stats = {
        "input_rows": stats["input_rows"],
        "silver_rows": flags.height,
        "quarantined": quarantined.height,
        "duplicates_removed": stats["duplicates_removed"],
        "bots": int(bots),
    }
    return SilverEventsResult(parts, quarantined, stats, tmp)


def _concat(frames: list[pl.DataFrame]) -> pl.DataFrame:
    return pl.concat(frames, how="vertical_relaxed")


def _finish(frame: pl.LazyFrame, cadence: pl.DataFrame) -> pl.LazyFrame:
    """Good rows -> silver/events rows: the cadence bot flag, the column order, sorted."""
    out = (
        frame.join(cadence.lazy(), on="anonymous_id", how="left")
        .with_columns(is_bot=pl.col("is_bot") | pl.col("cadence_bot").fill_null(False))
        .drop("cadence_bot", "_src", "reason")
        .sort("event_at", "event_id")
    )
    return out.select(sorted(out.collect_schema().names(), key=_column_order))


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
