"""The speed tables in the lake: Parquet parts upserted by key, compacted, and read back deduplicated.

Layout: ``<lake>/speed/<table>/date=YYYY-MM-DD/part-<ns>-<pid>-<table>-<n>.parquet``. Each flush
adds a part (temp file + rename, so readers never see half a file); once a date holds
``COMPACT_AFTER`` parts they are merged into one, deduplicated by key. Readers must dedupe too:
use :func:`read_table`. Names sort by write time, and a compacted file sorts just before the
newest part it replaced, so "last in name order wins" holds throughout.
"""

from __future__ import annotations

import os
import time
import types
import typing
import uuid
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from shoplake.core.speed.rows import TABLES, Row, to_dict

COMPACT_AFTER = 32


# -- column types --------------------------------------------------------------------------------
def _base(tp) -> tuple[type, bool]:
    """(python type, nullable) of a Struct field annotation."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0], True
    return tp, False


def columns(cls: type[Row]) -> list[tuple[str, type, bool]]:
    hints = typing.get_type_hints(cls)
    return [(f, *_base(hints[f])) for f in cls.__struct_fields__]


_ARROW = {
    str: pa.string(),
    int: pa.int64(),
    float: pa.float64(),
    bool: pa.bool_(),
    datetime: pa.timestamp("us", tz="UTC"),
    date: pa.date32(),
}


def arrow_schema(cls: type[Row]) -> pa.Schema:
    return pa.schema(
        [pa.field(f, _ARROW[t], nullable=n or f not in cls.KEY) for f, t, n in columns(cls)]
    )


def last_by_key(rows: Iterable[Row]) -> list[Row]:
    latest: dict[tuple, Row] = {}
    for row in rows:
        latest.pop(row.key(), None)  # re-insert: the order of last writes is kept
        latest[row.key()] = row
    return list(latest.values())


# -- Parquet -------------------------------------------------------------------------------------
def table_dir(lake_root: Path, table: str) -> Path:
    return Path(lake_root) / "speed" / table


class ParquetWriter:
    """Upserts rows as part files under ``<lake>/speed/<table>/date=.../``."""

    def __init__(self, lake_root: Path, compact_after: int = COMPACT_AFTER):
        self.lake_root = Path(lake_root)
        self.compact_after = compact_after
        self._n = 0

    def upsert(self, table: str, rows: Sequence[Row]) -> None:
        cls = TABLES[table]
        by_date: dict[date, list[Row]] = {}
        for row in rows:
            by_date.setdefault(row.partition_date(), []).append(row)
        for day, day_rows in sorted(by_date.items()):
            folder = table_dir(self.lake_root, table) / f"date={day.isoformat()}"
            folder.mkdir(parents=True, exist_ok=True)
            self._n += 1
            name = f"part-{time.time_ns():020d}-{os.getpid()}-{table}-{self._n:06d}.parquet"
            data = pa.Table.from_pylist(
                [to_dict(r) for r in last_by_key(day_rows)], schema=arrow_schema(cls)
            )
            write_atomic(data, folder / name)
            if len(list(folder.glob("part-*.parquet"))) >= self.compact_after:
                compact_partition(folder, cls)

    def close(self) -> None:
        pass


def write_atomic(data: pa.Table, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        pq.write_table(data, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _read_files(files: list[Path], cls: type[Row]) -> pl.DataFrame:
    frames = []
    for i, f in enumerate(files):
        try:
            frames.append(pl.read_parquet(f).with_columns(pl.lit(i).alias("_file")))
        except FileNotFoundError:
            raise _Retry from None
    schema = pl.DataFrame(pa.Table.from_pylist([], schema=arrow_schema(cls))).schema
    if not frames:
        return pl.DataFrame(schema=schema)
    df = pl.concat(frames, how="diagonal_relaxed").with_row_index("_row")
    df = df.unique(subset=list(cls.KEY), keep="last", maintain_order=True)
    return df.drop("_file", "_row").select(list(schema))


class _Retry(Exception):
    """A part vanished while being read (compaction replaced it): list the files again."""


def compact_partition(folder: Path, cls: type[Row]) -> Path | None:
    """Merge a date's parts into one file deduplicated by key; the parts are then deleted."""
    parts = sorted(folder.glob("part-*.parquet"))
    if len(parts) < 2:
        return None
    merged = _read_files(parts, cls)
    target = parts[-1].with_name(parts[-1].stem + "-c.parquet")
    write_atomic(merged.to_arrow().cast(arrow_schema(cls)), target)
    for p in parts:
        p.unlink(missing_ok=True)
    return target


def compact_table(table: str, lake_root: Path) -> int:
    """Compact every date of a table (for a maintenance job); returns the dates compacted."""
    cls = TABLES[table]
    done = 0
    for folder in sorted(table_dir(lake_root, table).glob("date=*")):
        done += compact_partition(folder, cls) is not None
    return done


def read_table(
    table: str, lake_root: Path, start: date | None = None, end: date | None = None
) -> pl.DataFrame:
    """A speed table from Parquet, one row per key (the last written), optionally for a date range."""
    cls = TABLES[table]
    root = table_dir(lake_root, table)
    for _ in range(5):
        folders = [
            f
            for f in sorted(root.glob("date=*"))
            if (start is None or f.name[5:] >= start.isoformat())
            and (end is None or f.name[5:] <= end.isoformat())
        ]
        files = [p for f in folders for p in sorted(f.glob("part-*.parquet"))]
        try:
            return _read_files(files, cls)
        except _Retry:
            continue
    raise RuntimeError(f"{root} kept changing while being read; is a compaction looping?")
