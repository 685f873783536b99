"""Read-only queries on the warehouse: the DuckDB file, or Postgres when a DSN is given.

One place for the discipline every reader follows (dashboards, notification sensors, the
reconciliation check): open read-only, run, close at once. DuckDB allows a single writer, and a
reader holding the file would block the next dbt build; a writer holding it makes a reader retry
briefly, then raise :class:`WarehouseBusy`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import polars as pl


class WarehouseBusy(RuntimeError):
    """The DuckDB file is locked by a writer (a dbt build is running); retry in a moment."""


def query(
    sql: str,
    params: dict[str, Any] | None = None,
    path: str | Path | None = None,
    dsn: str | None = None,
) -> pl.DataFrame:
    """Run ``sql`` read-only. Named parameters are written ``$name`` for both engines."""
    params = params or {}
    if dsn:
        import psycopg

        pg_sql = sql
        for name in sorted(params, key=len, reverse=True):
            pg_sql = pg_sql.replace(f"${name}", f"%({name})s")
        with psycopg.connect(dsn) as conn:  # psycopg 3 closes the connection on exit
            cur = conn.execute(pg_sql, params)
            cols = [d.name for d in cur.description]
            return pl.DataFrame(cur.fetchall(), schema=cols, orient="row")
    import duckdb

    if path is None or not Path(path).exists():
        return pl.DataFrame()
    for attempt in range(5):
        try:
            con = duckdb.connect(str(path), read_only=True)
            break
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or attempt == 4:
                raise WarehouseBusy(
                    f"the warehouse is being written ({exc}); retry in a moment"
                ) from exc
            time.sleep(0.2 * (attempt + 1))
    try:
        return pl.from_arrow(con.sql(sql, params=params).to_arrow_table())
    finally:
        con.close()
