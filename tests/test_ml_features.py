"""The ML feature tables on a simulated lake: checks pass, rolling sums see nothing after their
day, a day recomputed later gives the same bytes, and the features carry the simulator's truth."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import dagster as dg
import duckdb
import polars as pl
import pytest

from bench.sim_lake import graph_part, materialize_range
from shoplake.core.lake.io import DATA_FILE, partition_dir, read_partition, read_partitions
from shoplake.core.ml import features as F

pytestmark = pytest.mark.integration

USER = ("ml", "user_daily_features")
PRODUCT = ("ml", "product_daily_features")


def table(ml_lake, key: tuple[str, str]):
    return ml_lake.resources["lake"].table_dir(*key)


def digest(ml_lake, key, day) -> str:
    return hashlib.sha256(
        (partition_dir(table(ml_lake, key), day) / DATA_FILE).read_bytes()
    ).hexdigest()


def test_the_feature_checks_pass_on_every_day(ml_lake):
    evaluations = {
        (e.asset_key.to_user_string(), e.check_name): e.passed
        for e in ml_lake.run.get_asset_check_evaluations()
        if e.asset_key.path[0] == "ml" and "features" in e.asset_key.path[1]
    }
    assert set(evaluations) == {
        (f"{'/'.join(k)}", c)
        for k in (USER, PRODUCT)
        for c in ("nulls_and_ranges", "point_in_time")
    }
    assert all(evaluations.values()), evaluations


def test_stored_columns_are_the_declared_schema(ml_lake):
    day = ml_lake.days[-1]
    for key, schema in ((USER, F.USER_SCHEMA), (PRODUCT, F.PRODUCT_SCHEMA)):
        frame = read_partition(table(ml_lake, key), day)
        assert frame is not None and frame.height > 0
        assert dict(frame.schema) == schema


def test_rolling_sums_are_the_daily_rows_of_the_window(ml_lake):
    """7- and 28-day sums equal the sum of the visitor's stored daily rows in the window: the
    row of day D uses D and the days before it, and nothing after."""
    days = ml_lake.days
    everything = pl.concat(read_partitions(table(ml_lake, USER), days))
    day = days[-1]
    today = everything.filter(pl.col("feature_date") == day)
    for width, column in ((7, "n_events_7d"), (28, "n_events_28d")):
        window = everything.filter(pl.col("feature_date") > day - timedelta(days=width))
        expected = window.group_by("visitor_id").agg(pl.col("n_events").sum().alias("want"))
        joined = today.join(expected, on="visitor_id")
        assert joined.height == today.height
        assert (joined[column] == joined["want"]).all(), column
    returning = today.filter(pl.col("active_days_28d") > 1)
    assert returning.height > 0  # the test means something: some visitors come back


def test_a_day_recomputed_after_later_days_exist_gives_the_same_bytes(ml_lake):
    day = ml_lake.days[3]
    before = {key: digest(ml_lake, key, day) for key in (USER, PRODUCT)}
    from pipeline_assets.definitions import defs

    parts = [
        p
        for p in graph_part(defs, ("ml",))
        if isinstance(p, dg.AssetsDefinition) and all("features" in k.path[-1] for k in p.keys)
    ]
    result = materialize_range(parts, ml_lake.resources, day, day)
    assert result.success
    assert {key: digest(ml_lake, key, day) for key in (USER, PRODUCT)} == before


def test_bots_stand_out_in_the_timing_features(ml_lake):
    frame = pl.concat(read_partitions(table(ml_lake, USER), ml_lake.days))
    is_bot = pl.col("visitor_id").is_in(sorted(ml_lake.bot_visitors))
    bots, people = frame.filter(is_bot), frame.filter(~is_bot)
    assert bots.height >= 10, "the simulated weeks hold bot sessions"
    assert bots["fast_event_share"].median() >= 0.8
    # People have some events under 100 ms apart too (a page view and its ad impression)
    assert people["fast_event_share"].median() <= 0.4


def test_product_features_match_the_mart(ml_lake):
    day = ml_lake.days[-1]
    frame = read_partition(table(ml_lake, PRODUCT), day)
    con = duckdb.connect(str(ml_lake.settings.home / "warehouse.duckdb"), read_only=True)
    try:
        mart = con.sql(
            "select product_id, sum(n_views) as n_views_7d from gold.mart_product_performance "
            "where performance_date between ? and ? group by 1",
            params=[day - timedelta(days=6), day],
        ).pl()
    finally:
        con.close()
    joined = frame.join(mart, on="product_id", suffix="_mart")
    assert joined.height == frame.height > 0
    assert (joined["n_views_7d"] == joined["n_views_7d_mart"]).all()
    top = frame.sort("popularity_rank_7d").row(0, named=True)
    assert top["n_views_7d"] == frame["n_views_7d"].max()
