"""Where the speed layer's rows go: Parquet tables in the lake, Postgres, and Kafka topics.

Every writer upserts by the table's natural key (``Row.KEY``): recovery is at-least-once and a
window can be re-emitted with a correction, so the last row written for a key wins.

Parquet: :class:`shoplake.core.speed.tables.ParquetWriter` (the layout is described there; readers
use :func:`shoplake.core.speed.tables.read_table`).

Postgres: ``INSERT ... ON CONFLICT (key) DO UPDATE`` into ``realtime.<table>``, created if missing.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from pathlib import Path

from bytewax.connectors.kafka import KafkaSinkMessage
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from shoplake.core.speed.rows import (
    TABLES,
    ActiveSessions,
    Alert,
    Row,
    Session,
    TopProduct,
    WindowMetrics,
    to_json,
)
from shoplake.core.speed.tables import ParquetWriter, columns, last_by_key
from shoplake.core.stream_config import StreamConfig
from streaming import prom

PG_SCHEMA = "realtime"
_PG = {
    str: "text",
    int: "bigint",
    float: "double precision",
    bool: "boolean",
    datetime: "timestamptz",
    date: "date",
}


# -- Postgres ------------------------------------------------------------------------------------
def pg_ddl(cls: type[Row]) -> str:
    cols = [f"{f} {_PG[t]}{'' if n else ' not null'}" for f, t, n in columns(cls)]
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
        values = [tuple(getattr(r, f) for f in cls.__struct_fields__) for r in last_by_key(rows)]
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
    return KafkaSinkMessage(
        key=key.encode(), value=to_json(row), topic=topic, headers=[("table", row.TABLE.encode())]
    )
