"""ML features: one row per visitor and day, one per product and day, on the gold marts.

Each table declares its column schema, and has two checks: a blocking one on nulls and ranges
(bad features stop the models in the same run), and a point-in-time one that recomputes the day
now, when later days may exist, and compares the bytes with the stored partition.
"""

import hashlib
import tempfile
from collections.abc import Callable
from datetime import date
from pathlib import Path

import dagster as dg
import polars as pl

from pipeline_assets.checks import check_days, combine
from pipeline_assets.gold.dbt import GOLD_FRESHNESS, WAREHOUSE_POOL
from pipeline_assets.partitions import daily_partitions
from pipeline_assets.policies import column_schema, partition_days, partition_metadata
from resources import LakeResource, WarehouseResource
from shoplake.core.lake.io import (
    DATA_FILE,
    LakePath,
    partition_dir,
    read_partition,
    write_partition,
)
from shoplake.core.ml import features as F

GROUP = "ml_features"
USER_FEATURES = dg.AssetKey(["ml", "user_daily_features"])
PRODUCT_FEATURES = dg.AssetKey(["ml", "product_daily_features"])
NULLS_AND_RANGES = "nulls_and_ranges"
POINT_IN_TIME = "point_in_time"

Builder = Callable[[Callable, date], pl.DataFrame]
TABLES: dict[dg.AssetKey, tuple[Builder, dict[str, pl.DataType], tuple]] = {
    USER_FEATURES: (F.user_features, F.USER_SCHEMA, F.USER_RANGES),
    PRODUCT_FEATURES: (F.product_features, F.PRODUCT_SCHEMA, F.PRODUCT_RANGES),
}


def _table_dir(lake: LakeResource, key: dg.AssetKey) -> LakePath:
    return lake.table_dir(*key.path)


def _feature_asset(
    key: dg.AssetKey, upstream: list[dg.AssetKey], description: str
) -> dg.AssetsDefinition:
    build, schema, _ = TABLES[key]

    @dg.asset(
        key=key,
        deps=upstream,
        group_name=GROUP,
        kinds={"duckdb", "parquet"},
        partitions_def=daily_partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        freshness_policy=GOLD_FRESHNESS,
        pool=WAREHOUSE_POOL,
        metadata={"dagster/column_schema": column_schema(pl.Schema(schema))},
        description=description,
    )
    def _asset(
        context: dg.AssetExecutionContext, lake: LakeResource, warehouse: WarehouseResource
    ) -> dg.MaterializeResult:
        per_day, frame = {}, None
        for day in partition_days(context):
            frame = build(warehouse.query, day)
            write_partition(_table_dir(lake, key), day, frame, {"rows": frame.height})
            per_day[str(day)] = frame.height
            context.log.info(f"{key.to_user_string()} {day}: {frame.height} rows")
        return dg.MaterializeResult(metadata=partition_metadata(per_day, frame))

    return _asset


user_daily_features = _feature_asset(
    USER_FEATURES,
    [dg.AssetKey(["gold", "fct_events"]), dg.AssetKey(["gold", "fct_sessions"])],
    "One row per visitor (user_id, else anonymous_id) active that day: activity, revenue, timing "
    "(median gap, share of events under 100 ms apart), device, tenure, and 7/28-day rolling sums "
    "that see nothing after the day.",
)
product_daily_features = _feature_asset(
    PRODUCT_FEATURES,
    [dg.AssetKey(["gold", "mart_product_performance"]), dg.AssetKey(["gold", "fct_events"])],
    "One row per product seen by people that day: views, cart adds, units sold, conversion, "
    "price, and 7/28-day rolling popularity.",
)


def range_violations(frame: pl.DataFrame, ranges: tuple) -> dict[str, int]:
    """Rows per problem: a null anywhere, or a value outside its column's range."""
    found = {f"null {c}": n for c, n in frame.null_count().row(0, named=True).items() if n}
    for column, low, high in ranges:
        bad = pl.col(column) < low
        if high is not None:
            bad = bad | (pl.col(column) > high)
        if n := frame.filter(bad).height:
            found[f"{column} outside [{low}, {high if high is not None else '∞'}]"] = n
    return found


def _ranges_day(lake: LakeResource, key: dg.AssetKey, day: date) -> dg.AssetCheckResult:
    _, _, ranges = TABLES[key]
    frame = read_partition(_table_dir(lake, key), day)
    if frame is None:
        return dg.AssetCheckResult(passed=False, metadata={"error": f"partition {day} is missing"})
    problems = range_violations(frame, ranges)
    return dg.AssetCheckResult(passed=not problems, metadata={"rows": frame.height, **problems})


def _file_digest(path: LakePath) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _point_in_time_day(
    lake: LakeResource, warehouse: WarehouseResource, key: dg.AssetKey, day: date
) -> dg.AssetCheckResult:
    build, _, _ = TABLES[key]
    stored = partition_dir(_table_dir(lake, key), day) / DATA_FILE
    if not stored.exists():
        return dg.AssetCheckResult(passed=False, metadata={"error": f"partition {day} is missing"})
    with tempfile.TemporaryDirectory() as scratch:
        again = build(warehouse.query, day)
        written = write_partition(Path(scratch), day, again, {"rows": again.height})
        same = _file_digest(written.path / DATA_FILE) == _file_digest(stored)
    return dg.AssetCheckResult(passed=same, metadata={"rows": again.height, "same_bytes": same})


def _checks(key: dg.AssetKey) -> list[dg.AssetChecksDefinition]:
    @dg.asset_check(
        asset=key,
        name=NULLS_AND_RANGES,
        partitions_def=daily_partitions,
        blocking=True,
        description="No nulls; counts and money at least 0; shares and rates within [0, 1].",
    )
    def ranges(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> dg.AssetCheckResult:
        return combine({day: _ranges_day(lake, key, day) for day in check_days(context)})

    @dg.asset_check(
        asset=key,
        name=POINT_IN_TIME,
        partitions_def=daily_partitions,
        pool=WAREHOUSE_POOL,
        description="Recomputing the day now, with any later days in the warehouse, gives the "
        "same bytes: a day's features see nothing after it.",
    )
    def point_in_time(
        context: dg.AssetCheckExecutionContext, lake: LakeResource, warehouse: WarehouseResource
    ) -> dg.AssetCheckResult:
        return combine(
            {day: _point_in_time_day(lake, warehouse, key, day) for day in check_days(context)}
        )

    return [ranges, point_in_time]


defs = dg.Definitions(
    assets=[user_daily_features, product_daily_features],
    asset_checks=[*_checks(USER_FEATURES), *_checks(PRODUCT_FEATURES)],
)
