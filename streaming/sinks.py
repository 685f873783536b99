"""Where the speed layer's rows go: Parquet tables in the lake, Postgres, and Kafka topics.

Every writer upserts by the table's natural key (``Row.KEY``): recovery is at-least-once and a
window can be re-emitted with a correction, so the last row written for a key wins.

Parquet layout: ``<lake>/speed/<table>/date=YYYY-MM-DD/part-<ns>-<pid>-<table>-<n>.parquet``.
Each flush adds a part (temp file + rename, so readers never see half a file); once a date holds
``COMPACT_AFTER`` parts they are merged into one, deduplicated by key. Readers must dedupe too:
use :func:`read_table`. Names sort by write time, and a compacted file sorts just before the
newest part it replaced, so "last in name order wins" holds throughout.

Postgres: ``INSERT ... ON CONFLICT (key) DO UPDATE`` into ``realtime.<table>``, created if missing.
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
from bytewax.connectors.kafka import KafkaSinkMessage
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from streaming import prom
from streaming.config import StreamConfig
from streaming.rows import (
    TABLES,
    ActiveSessions,
    Alert,
    Row,
    Session,
    TopProduct,
    WindowMetrics,
    to_dict,
    to_json,
)

COMPACT_AFTER = 32
PG_SCHEMA = "realtime"


# -- column types --------------------------------------------------------------------------------
def _base(tp) -> tuple[type, bool]:
    """(python type, nullable) of a Struct field annotation."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0], True
    return tp, False


def _fields(cls: type[Row]) -> list[tuple[str, type, bool]]:
    hints = typing.get_type_hints(cls)
    return [(f, *_base(hints[f])) for f in cls.__struct_fields__]


_ARROW = {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_(),
          datetime: pa.timestamp("us", tz="UTC"), date: pa.date32()}  # fmt: skip
_PG = {str: "text", int: "bigint", float: "double precision", bool: "boolean",
       datetime: "timestamptz", date: "date"}  # fmt: skip


def arrow_schema(cls: type[Row]) -> pa.Schema:
    return pa.schema(
        [pa.field(f, _ARROW[t], nullable=n or f not in cls.KEY) for f, t, n in _fields(cls)]
    )


def _last_by_key(rows: Iterable[Row]) -> list[Row]:
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
                [to_dict(r) for r in _last_by_key(day_rows)], schema=arrow_schema(cls)
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
            f for f in sorted(root.glob("date=*"))
            if (start is None or f.name[5:] >= start.isoformat()) and (end is None or f.name[5:] <= end.isoformat())
        ]  # fmt: skip
        files = [p for f in folders for p in sorted(f.glob("part-*.parquet"))]
        try:
            return _read_files(files, cls)
        except _Retry:
            continue
    raise RuntimeError(f"{root} kept changing while being read; is a compaction looping?")


# -- Postgres ------------------------------------------------------------------------------------
def pg_ddl(cls: type[Row]) -> str:
    cols = [f"{f} {_PG[t]}{'' if n else ' not null'}" for f, t, n in _fields(cls)]
    return (
        f"create table if not exists {PG_SCHEMA}.{cls.TABLE} "
        f"({', '.join(cols)}, primary key ({', '.join(cls.KEY)}))"
    )


def pg_upsert_sql(cls: type[Row]) -> str:
    fields = list(cls.__struct_fields__)
    updates = ", ".join(f"{f} = excluded.{f}" for f in fields if f not in cls.KEY)
    return (
        f"insert into {PG_SCHEMA}.{cls.TABLE} ({', '.join(fields)}) "
        f"values ({', '.join(['%s'] * len(fields))}) "
        f"on conflict ({', '.join(cls.KEY)}) do update set {updates}"
    )


class PostgresWriter:
    """Upserts rows into ``realtime.<table>`` (one connection, one transaction per flush)."""

    def __init__(self, dsn: str):
        self.dsn = dsn
        self._conn = None

    def _connect(self):
        import psycopg

        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.dsn)
            with self._conn.transaction():
                self._conn.execute(f"create schema if not exists {PG_SCHEMA}")
                for cls in TABLES.values():
                    self._conn.execute(pg_ddl(cls))
        return self._conn

    def upsert(self, table: str, rows: Sequence[Row]) -> None:
        cls = TABLES[table]
        conn = self._connect()
        values = [tuple(getattr(r, f) for f in cls.__struct_fields__) for r in _last_by_key(rows)]
        with conn.transaction(), conn.cursor() as cur:
            cur.executemany(pg_upsert_sql(cls), values)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


# -- the Bytewax sink ----------------------------------------------------------------------------
class _TablePartition(StatefulSinkPartition):
    """Buffers one table's rows within an epoch; writes them when Bytewax snapshots the epoch
    (before it is committed), so a resumed run never misses rows and files stay few."""

    def __init__(self, table: str, writers: Sequence):
        self.table = table
        self.writers = writers
        self.buffer: list[Row] = []

    def write_batch(self, values: list[Row]) -> None:
        self.buffer.extend(values)

    def _flush(self) -> None:
        if not self.buffer:
            return
        for writer in self.writers:
            writer.upsert(self.table, self.buffer)
        prom.ROWS_OUT.labels(self.table).inc(len(self.buffer))
        self.buffer = []

    def snapshot(self) -> None:
        self._flush()
        return None

    def close(self) -> None:
        self._flush()
        for writer in self.writers:
            writer.close()


class TableSink(FixedPartitionedSink):
    """One partition per table, so each table has one writer at a time. Items: ``(table, row)``."""

    def __init__(self, make_writers):
        self.make_writers = make_writers  # called per partition: writers are not shared by threads

    def list_parts(self) -> list[str]:
        return sorted(TABLES)

    def part_fn(self, item_key: str) -> int:
        return sorted(TABLES).index(item_key)

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _TablePartition:
        return _TablePartition(for_part, self.make_writers())


def table_sink(lake_root: Path | None, pg_dsn: str | None) -> TableSink:
    def make_writers() -> list:
        writers: list = []
        if lake_root is not None:
            writers.append(ParquetWriter(lake_root))
        if pg_dsn:
            writers.append(PostgresWriter(pg_dsn))
        return writers

    return TableSink(make_writers)


# -- Kafka ---------------------------------------------------------------------------------------
def kafka_message(row: Row, config: StreamConfig) -> KafkaSinkMessage | None:
    """The topic message for a row (keyed by its natural key), or None if it has no topic."""
    if isinstance(row, WindowMetrics):
        topic = config.metrics_topic_prefix + row.window_size
        key = f"metrics|{row.window_start.isoformat()}|{row.dimension}|{row.dimension_value}"
    elif isinstance(row, TopProduct):
        topic = config.metrics_topic_prefix + "5m"
        key = f"top_products|{row.window_start.isoformat()}|{row.ranking}|{row.rank}"
    elif isinstance(row, ActiveSessions):
        topic = config.metrics_topic_prefix + "1m"
        key = f"active_sessions|{row.window_start.isoformat()}"
    elif isinstance(row, Alert):
        topic, key = config.alerts_topic, row.alert_id
    elif isinstance(row, Session):
        topic, key = config.sessions_topic, row.session_id
    else:
        return None
    return KafkaSinkMessage(key=key.encode(), value=to_json(row), topic=topic,
                            headers=[("table", row.TABLE.encode())])  # fmt: skip
