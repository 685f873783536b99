"""Deduplication by event_id: the first copy to arrive is canonical, and every row is settled in
the partition of its canonical copy (its event day if good, its arrival day if quarantined)."""

from __future__ import annotations

from datetime import date

import polars as pl


def resolve(df: pl.DataFrame, day: date) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, int]]:
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
