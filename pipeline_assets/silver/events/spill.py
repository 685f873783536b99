"""Out of core: a day too big for memory goes through temporary Arrow files, first in BUCKETS
buckets by a hash of event_id (every copy of an event in one bucket), then by hour of event_at.

SPILL_ROWS and BUCKETS are read from this module when a day is built: patch them here.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import polars as pl

from shoplake.core.settings import get_settings

# Past this many bronze rows a day is processed out of core (build_silver_events_from), in
# BUCKETS pieces by a hash of event_id.
SPILL_ROWS = get_settings().silver_spill_rows
BUCKETS = get_settings().silver_buckets


def file_by_bucket(frame: pl.DataFrame, folder: Path, seq: int) -> None:
    """Decoded rows -> one file per bucket of event_id (``seq`` numbers the batch)."""
    bucket = (pl.col("event_id").hash(seed=0) % BUCKETS).alias("_bucket")
    for (b,), piece in frame.with_columns(bucket).partition_by("_bucket", as_dict=True).items():
        piece.drop("_bucket").write_ipc(folder / f"b{b:03d}-{seq:05d}.arrow", compression="lz4")


def read_buckets(folder: Path) -> Iterator[pl.DataFrame]:
    """Each bucket's rows, in file order; its files are removed once read (disk is finite too)."""
    for b in range(BUCKETS):
        files = sorted(folder.glob(f"b{b:03d}-*.arrow"))
        if not files:
            continue
        frame = pl.concat([pl.read_ipc(p) for p in files], how="vertical_relaxed")
        for p in files:
            p.unlink()
        yield frame


def file_by_hour(frame: pl.DataFrame, folder: Path, bucket: int) -> None:
    """A bucket's good rows -> one file per hour of event_at."""
    hour = pl.col("event_at").dt.hour().alias("_hour")
    for (h,), piece in frame.with_columns(hour).partition_by("_hour", as_dict=True).items():
        piece.drop("_hour").write_ipc(folder / f"h{h:02d}-b{bucket:03d}.arrow", compression="lz4")


def scan_hours(folder: Path) -> list[pl.LazyFrame]:
    """The good rows filed by ``file_by_hour``, one lazy frame per hour that has any, in order."""
    hours = sorted({p.name[:3] for p in folder.glob("h*-b*.arrow")})
    return [
        pl.concat(
            [pl.scan_ipc(p) for p in sorted(folder.glob(f"{h}-b*.arrow"))],
            how="vertical_relaxed",
        )
        for h in hours
    ]
