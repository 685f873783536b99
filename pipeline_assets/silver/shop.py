"""bronze/shop_* (changes by day) -> silver shop tables as of the end of a day.

orders, order_items, payments and inventory_movements: current state (the latest version of
each key). products and customers: SCD2 history of price and segment, with ``valid_from``,
``valid_to`` and ``is_current``, so a mart can ask "what did it cost then?".
"""

from __future__ import annotations

from datetime import date

import polars as pl

from pipeline_assets.bronze.shopdb import table_schema
from shoplake.core.contracts.shopdb import KEYS
from shoplake.core.lake.io import LakePath, read_partitions, stored_days

SCD2_TRACKED = {"products": "price", "customers": "segment"}


def history_until(bronze_dir: LakePath, table: str, day: date) -> pl.DataFrame:
    """Every bronze version of ``table`` extracted on or before ``day``."""
    frames = read_partitions(bronze_dir, [d for d in stored_days(bronze_dir) if d <= day])
    if not frames:
        return pl.DataFrame(schema=table_schema(table))
    return pl.concat(frames, how="vertical_relaxed")


def current_state(history: pl.DataFrame, table: str) -> pl.DataFrame:
    keys = list(KEYS[table])
    return (
        history.sort([*keys, "updated_at"])
        .unique(subset=keys, keep="last", maintain_order=True)
        .sort(keys)
    )


def scd2(history: pl.DataFrame, table: str) -> pl.DataFrame:
    """One row per version of the tracked attribute: valid_from <= t < valid_to (null = open)."""
    keys = list(KEYS[table])
    tracked = SCD2_TRACKED[table]
    versions = (
        history.sort([*keys, "updated_at"])
        .unique(subset=[*keys, "updated_at"], keep="last", maintain_order=True)
        .with_columns(
            changed=(pl.col(tracked) != pl.col(tracked).shift(1).over(keys)).fill_null(True)
        )
        .filter(pl.col("changed"))
        .drop("changed")
    )
    # The first version is valid from creation; later ones from the change.
    versions = versions.with_columns(
        valid_from=pl.when(pl.col("updated_at") == pl.col("updated_at").min().over(keys))
        .then(pl.col("created_at"))
        .otherwise(pl.col("updated_at"))
    )
    versions = versions.with_columns(
        valid_to=pl.col("valid_from").shift(-1).over(keys)
    ).with_columns(is_current=pl.col("valid_to").is_null())
    # Attributes other than the tracked one come from the latest version of the key.
    latest = current_state(history, table).drop(tracked, "created_at", "updated_at")
    return (
        versions.select(
            [*keys, tracked, "created_at", "updated_at", "valid_from", "valid_to", "is_current"]
        )
        .join(latest, on=keys, how="left")
        .sort([*keys, "valid_from"])
    )
