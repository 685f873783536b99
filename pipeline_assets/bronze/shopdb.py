"""Incremental extraction of the shop's order database by ``updated_at``, one day at a time.

The same SQL runs on SQLite and Postgres (timestamps are RFC 3339 text in UTC, which sort as
text). A row lands in the partition of the day it last changed, so a status change on an old
order shows up again on the day it happened. A row created on a day also lands there even if it
changed again since (the database keeps only its current state; extracted after the fact, that
is the best record of the day there is). The first partition also takes everything created
before its end (the initial load). Personal columns are pseudonymized before they reach the lake.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import polars as pl

from shoplake.core.contracts.shopdb import INTEGER, KEYS, NUMERIC, TABLES
from shoplake.core.pii import Pseudonymizer

PERSONAL = {"customers": {"email": "email", "phone": "phone"}}
SHOP_TABLES = tuple(TABLES)


def _bound(day: date) -> str:
    return f"{day.isoformat()}T00:00:00"


def table_schema(table: str) -> dict[str, pl.DataType]:
    schema: dict[str, pl.DataType] = {}
    for col in TABLES[table]:
        if col in NUMERIC:
            schema[col] = pl.Float64()
        elif col in INTEGER:
            schema[col] = pl.Int64()
        else:
            schema[col] = pl.String()
    return schema


def extract_table(
    conn: Any, placeholder: str, table: str, day: date, initial: bool, pii: Pseudonymizer
) -> pl.DataFrame:
    """Rows of ``table`` whose updated_at falls in ``day`` (or before its end when ``initial``)."""
    cols = TABLES[table]
    start, end = _bound(day), _bound(day + timedelta(days=1))
    if initial:
        where, params = f"created_at < {placeholder}", (end,)
    else:
        # Changed on the day, or created on the day (a row created on D and changed again later
        # has only its later version left: without this it would be missing from D entirely).
        where = (
            f"(updated_at >= {placeholder} AND updated_at < {placeholder}) "
            f"OR (created_at >= {placeholder} AND created_at < {placeholder})"
        )
        params = (start, end, start, end)
    order = ", ".join(KEYS[table])
    cur = conn.cursor()
    cur.execute(f"SELECT {', '.join(cols)} FROM {table} WHERE {where} ORDER BY {order}", params)
    rows = cur.fetchall()
    frame = pl.DataFrame(
        [
            [
                float(v) if c in NUMERIC and v is not None else v
                for c, v in zip(cols, r, strict=True)
            ]
            for r in rows
        ],
        schema=table_schema(table),
        orient="row",
    )
    for col, kind in PERSONAL.get(table, {}).items():
        frame = frame.with_columns(
            pl.col(col).map_elements(
                lambda v, kind=kind: pii.token(kind, v), return_dtype=pl.String
            )
        )
    return frame
