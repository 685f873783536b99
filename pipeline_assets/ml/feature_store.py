"""The Feast feature store: the repo definition (shoplake.core.ml.feature_store) applied, then each
partition day materialized from the feature Parquet into the online store (SQLite under
SHOPLAKE_HOME/feast, or Postgres with SHOPLAKE_PG_DSN). Materialization is this asset, not a cron.

Customer segments are served when their partition exists: a day without one is materialized
without the visitor_segments view, and listed in the metadata.
"""

from datetime import date

import dagster as dg

from pipeline_assets.partitions import daily_partitions
from pipeline_assets.policies import fail_without_retry, partition_days
from resources.ml import FeastResource
from shoplake.core.ml import feature_store as fs

GROUP = "ml_serving"
FEATURE_STORE = dg.AssetKey(["ml", "feature_store"])
# One writer at a time: the registry is a file and the default online store is SQLite.
FEAST_POOL = "feast"
SOURCES = {spec.name: dg.AssetKey(["ml", spec.table]) for spec in fs.VIEWS}


def _check_required(config: fs.StoreConfig, days: list[date]) -> None:
    for spec in fs.VIEWS:
        if spec.required and (gone := fs.missing_days(config, spec.name, days)):
            raise FileNotFoundError(
                f"{SOURCES[spec.name].to_user_string()} has no partition for "
                f"{', '.join(map(str, gone))}: materialize it for those days first"
            )


@dg.asset(
    key=FEATURE_STORE,
    deps=list(SOURCES.values()),
    group_name=GROUP,
    kinds={"feast", "parquet"},
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool=FEAST_POOL,
    description="Feast (local provider): entities visitor and product; the ML feature Parquet as "
    "the offline store; each partition day materialized into the online store.",
)
def feature_store(context: dg.AssetExecutionContext, feast: FeastResource) -> dg.MaterializeResult:
    config = feast.store_config()
    days = partition_days(context)
    with fail_without_retry():
        _check_required(config, days)
    store = fs.build_store(config)
    fs.apply(store, config)
    per_day: dict[str, dict[str, int]] = {}
    without_segments = []
    for day in days:
        views = [s.name for s in fs.VIEWS if not fs.missing_days(config, s.name, [day])]
        if fs.SEGMENT_VIEW.name not in views:
            without_segments.append(str(day))
        done = fs.materialize_day(store, config, day, views)
        per_day[str(day)] = {m.view: m.entities for m in done}
        context.log.info(
            f"feature store {day}: " + ", ".join(f"{m.view} {m.entities}" for m in done)
        )
    totals = {s.name: sum(d.get(s.name, 0) for d in per_day.values()) for s in fs.VIEWS}
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": sum(totals.values()),
            "entities_written": totals,
            "partitions": per_day,
            "online_store": config.online_store_kind,
            "days_without_segments": without_segments,
        }
    )


defs = dg.Definitions(assets=[feature_store])
