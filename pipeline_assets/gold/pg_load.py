"""Silver Parquet -> Postgres, for the dbt-postgres warehouse.

dbt-duckdb reads the lake in place; Postgres cannot, so before a Postgres build the partitions of
the run's window are copied into schema ``silver`` (the dbt source schema). Daily tables keep one
row set per lake partition (``lake_date``), replaced on each load, so history accumulates like the
lake's ``date=*`` folders and a re-run replaces exactly its days. Snapshot tables hold the state
as of the window's last day, replaced whole. Nested columns (purchase items) become ``jsonb``.
"""

import io
from dataclasses import dataclass
from datetime import date

import polars as pl

from shoplake.core.lake.io import LakePath, lake_location, read_partition

SCHEMA = "silver"
DAILY_TABLES = ("events", "events_quarantine", "sessions")
SNAPSHOT_TABLES = ("orders", "order_items", "payments", "customers", "products")


@dataclass(frozen=True)
class Loaded:
    table: str
    rows: int


def pg_type(dtype: pl.DataType) -> str:
    if isinstance(dtype, pl.List | pl.Struct | pl.Array):
        return "jsonb"
    if isinstance(dtype, pl.Datetime):
        return "timestamptz" if dtype.time_zone else "timestamp"
    if dtype == pl.Boolean:
        return "boolean"
    if dtype == pl.Date:
        return "date"
    if dtype.is_integer():
        return "bigint"
    if dtype.is_float():
        return "double precision"
    if isinstance(dtype, pl.Decimal):
        return "numeric"
    return "text"


def to_copy_frame(frame: pl.DataFrame) -> pl.DataFrame:
    """Nested columns as JSON text, timestamps as ISO strings: what COPY ... CSV reads back."""
    exprs = []
    for name, dtype in frame.schema.items():
        col = pl.col(name)
        if isinstance(dtype, pl.Struct):
            exprs.append(col.struct.json_encode())
        elif isinstance(dtype, pl.List) and isinstance(dtype.inner, pl.Struct):
            items = col.list.eval(pl.element().struct.json_encode()).list.join(",")
            exprs.append(pl.when(col.is_null()).then(None).otherwise("[" + items + "]").alias(name))
        elif isinstance(dtype, pl.List):
            exprs.append(
                pl.when(col.is_null())
                .then(None)
                .otherwise("[" + col.cast(pl.List(pl.String)).list.join(",") + "]")
                .alias(name)
            )
        elif isinstance(dtype, pl.Datetime):
            fmt = "%Y-%m-%dT%H:%M:%S%.6f%:z" if dtype.time_zone else "%Y-%m-%dT%H:%M:%S%.6f"
            exprs.append(col.dt.to_string(fmt))
        else:
            exprs.append(col)
    return frame.select(exprs)


def _ensure_table(cur, table: str, frame: pl.DataFrame, daily: bool) -> None:
    cols = [f'"{n}" {pg_type(t)}' for n, t in frame.schema.items()]
    if daily:
        cols.append("lake_date date not null")
    cur.execute(f'create table if not exists {SCHEMA}."{table}" ({", ".join(cols)})')
    # New optional contract fields add columns; nothing is ever dropped.
    for name, dtype in frame.schema.items():
        cur.execute(
            f'alter table {SCHEMA}."{table}" add column if not exists "{name}" {pg_type(dtype)}'
        )


def _copy(cur, table: str, frame: pl.DataFrame, lake_day: date | None) -> None:
    out = to_copy_frame(frame)
    if lake_day is not None:
        out = out.with_columns(lake_date=pl.lit(lake_day.isoformat()))
    buf = io.BytesIO()
    out.write_csv(buf, include_header=False, null_value="\\N")
    columns = ", ".join(f'"{c}"' for c in out.columns)
    with cur.copy(
        f"copy {SCHEMA}.\"{table}\" ({columns}) from stdin with (format csv, null '\\N')"
    ) as copy:
        copy.write(buf.getvalue())


def load_silver(dsn: str, lake_root: str | LakePath, days: list[date]) -> list[Loaded]:
    """Copy the window's silver partitions into Postgres, in one transaction."""
    import psycopg

    root = (lake_location(lake_root) if isinstance(lake_root, str) else lake_root) / "silver"
    loaded: list[Loaded] = []
    conn = psycopg.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(f"create schema if not exists {SCHEMA}")
            for table in DAILY_TABLES:
                rows = 0
                for day in days:
                    frame = read_partition(root / table, day)
                    if frame is None:
                        continue
                    _ensure_table(cur, table, frame, daily=True)
                    cur.execute(f'delete from {SCHEMA}."{table}" where lake_date = %s', (day,))
                    _copy(cur, table, frame, day)
                    rows += frame.height
                loaded.append(Loaded(table, rows))
            for table in SNAPSHOT_TABLES:
                frame = read_partition(root / table, max(days))
                if frame is None:
                    raise FileNotFoundError(
                        f"no silver/{table} partition for {max(days)}: materialize silver for "
                        "that day before building the Postgres warehouse"
                    )
                _ensure_table(cur, table, frame, daily=False)
                cur.execute(f'truncate {SCHEMA}."{table}"')
                _copy(cur, table, frame, None)
                loaded.append(Loaded(table, frame.height))
        conn.commit()
    finally:
        conn.close()
    return loaded
