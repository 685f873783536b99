"""Customer segments: k-means on scaled RFM plus 28-day behaviour, one row per customer and day,
with segment ids matched to the previous day's centroids (shoplake.core.ml.segments).

The previous day's centroids and labels are read from the latest earlier partition's manifest,
where each day stores its own; the SQL RFM mart (gold/mart_rfm_segments) stays as it is and gives the
customers and their RFM values.
"""

from datetime import date

import dagster as dg
import polars as pl

from pipeline_assets.checks import check_days, combine
from pipeline_assets.gold.dbt import GOLD_FRESHNESS, WAREHOUSE_POOL
from pipeline_assets.ml.features import USER_FEATURES
from pipeline_assets.partitions import daily_partitions
from pipeline_assets.policies import column_schema, partition_days, partition_metadata
from resources import LakeResource, WarehouseResource
from resources.ml import MlflowResource
from shoplake.core.lake.io import (
    LakePath,
    read_manifest,
    read_partition,
    stored_days,
    write_partition,
)
from shoplake.core.ml import segments as S
from shoplake.core.ml.tracking import LoggedRun

GROUP = "ml_models"
SEGMENTS = dg.AssetKey(["ml", "customer_segments"])
RFM_MART = dg.AssetKey(["gold", "mart_rfm_segments"])
ONE_SEGMENT_PER_CUSTOMER = "one_segment_per_customer"
SILHOUETTE_FLOOR = "silhouette_floor"
# bench/ml_segments.py on the 35-day dev lake: the served k-means' silhouette was 0.234..0.286 per
# day (mean 0.258), the Gaussian mixture's 0.111..0.256. Under 0.15 the clusters are barely
# better than cutting one cloud into four.
MIN_SILHOUETTE = 0.15

BEHAVIOUR_COLUMNS = ["feature_date", "visitor_id", "n_events", "n_cart_adds"]


def _table(lake: LakeResource) -> LakePath:
    return lake.table_dir(*SEGMENTS.path)


def previous_day(table: LakePath, day: date) -> tuple[date | None, S.PreviousDay | None]:
    """The latest partition before ``day`` that was segmented, and its centroids and labels."""
    for earlier in reversed([d for d in stored_days(table) if d < day]):
        if (previous := S.stored_previous(read_manifest(table, earlier))) is not None:
            return earlier, previous
    return None, None


class BehaviourReader:
    """User-feature partitions read once per run (consecutive days share 27 of their 28)."""

    def __init__(self, table: LakePath):
        self.table = table
        self.cache: dict[date, pl.DataFrame | None] = {}

    def __call__(self, day: date) -> pl.DataFrame:
        window = S.behaviour_window(day)
        for d in window:
            if d not in self.cache:
                self.cache[d] = read_partition(self.table, d, columns=BEHAVIOUR_COLUMNS)
        self.cache = {d: f for d, f in self.cache.items() if d >= window[0]}
        return S.behaviour([f for d in window if (f := self.cache[d]) is not None], day)


def _silhouette_result(stored: dict) -> dg.AssetCheckResult:
    if "skipped" in stored:
        return dg.AssetCheckResult(passed=True, metadata={"skipped": stored["skipped"]})
    value = stored["silhouette"]
    return dg.AssetCheckResult(
        passed=value is not None and value >= MIN_SILHOUETTE,
        metadata={"silhouette": value, "floor": MIN_SILHOUETTE},
    )


def _profile_markdown(frame: pl.DataFrame) -> str:
    profile = (
        frame.group_by("segment_id", "segment_label")
        .agg(pl.len().alias("customers"), *[pl.col(f).mean().round(2) for f in S.FEATURES])
        .sort("segment_id")
    )
    head = "| " + " | ".join(profile.columns) + " |"
    rule = "|" + "---|" * profile.width
    rows = ["| " + " | ".join(str(v) for v in row) + " |" for row in profile.iter_rows()]
    return "\n".join([head, rule, *rows])


def _last_fit_metadata(run: LoggedRun, seg: S.Segmentation, frame: pl.DataFrame) -> dict:
    """The newest segmented day of the run: silhouette, labels, profile and its MLflow run."""
    return {
        "silhouette": seg.silhouette,
        "segments": dg.MetadataValue.json({str(i): label for i, label in seg.labels.items()}),
        "profile": dg.MetadataValue.md(_profile_markdown(frame)),
        "mlflow_run_id": run.run_id,
        "mlflow_run": dg.MetadataValue.url(run.link) if run.link else run.run_id,
        "registered_model": f"{S.REGISTERED_MODEL} v{run.registered_version}",
    }


@dg.asset(
    key=SEGMENTS,
    deps=[
        RFM_MART,
        dg.AssetDep(
            USER_FEATURES,
            partition_mapping=dg.TimeWindowPartitionMapping(
                start_offset=-(S.BEHAVIOUR_DAYS - 1),
                end_offset=0,
                allow_nonexistent_upstream_partitions=True,
            ),
        ),
    ],
    group_name=GROUP,
    kinds={"scikitlearn", "mlflow", "parquet"},
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    freshness_policy=GOLD_FRESHNESS,
    pool=WAREHOUSE_POOL,
    metadata={"dagster/column_schema": column_schema(pl.Schema(S.SEGMENT_SCHEMA))},
    check_specs=[
        dg.AssetCheckSpec(
            SILHOUETTE_FLOOR,
            asset=SEGMENTS,
            description=f"The day's silhouette is at least {MIN_SILHOUETTE} (days with too few "
            "customers to segment pass and say so).",
        )
    ],
    description="One row per customer (gold.mart_rfm_segments as of the day) with a segment from "
    f"k-means (k={S.K}) on log-scaled RFM and 28-day behaviour (events, active days, share of "
    "active days with a cart add). Segment ids are matched to the previous day's centroids, so "
    "an id means the same kind of customer every day; labels come from the centroid profile. "
    f"Each day is an MLflow run, the model registered as {S.REGISTERED_MODEL}.",
)
def customer_segments(
    context: dg.AssetExecutionContext,
    lake: LakeResource,
    warehouse: WarehouseResource,
    mlflow: MlflowResource,
) -> dg.MaterializeResult:
    table, store = _table(lake), mlflow.store()
    behaviour = BehaviourReader(lake.table_dir(*USER_FEATURES.path))
    per_day, silhouettes, checks, runs, frame, last = {}, {}, {}, {}, None, None
    for day in partition_days(context):
        inputs = S.segment_inputs(S.rfm_customers(warehouse.query, day), behaviour(day))
        before, previous = previous_day(table, day)
        seg = S.fit_segments(inputs, previous) if inputs.height >= S.MIN_CUSTOMERS else None
        stored = S.manifest(seg, inputs.height, before)
        if seg is not None:
            run = S.log_run(store, day, seg, inputs.height)
            stored["mlflow_run_id"] = runs[str(day)] = run.run_id
            silhouettes[str(day)] = stored["silhouette"]
        frame = S.segment_table(day, inputs, seg)
        if seg is not None:
            last = (run, seg, frame)
        write_partition(table, day, frame, stored)
        per_day[str(day)] = frame.height
        checks[day] = _silhouette_result(stored)
        context.log.info(
            f"customer segments {day}: {inputs.height} customers, "
            + (stored.get("skipped") or f"silhouette {stored['silhouette']}, sizes {seg.sizes}")
        )
    metadata = partition_metadata(per_day, frame) | {"silhouette_per_day": silhouettes}
    if last is not None:
        metadata |= _last_fit_metadata(*last) | {"mlflow_runs": dg.MetadataValue.json(runs)}
    result = combine(checks)
    return dg.MaterializeResult(
        metadata=metadata,
        check_results=[
            dg.AssetCheckResult(
                check_name=SILHOUETTE_FLOOR,
                passed=result.passed,
                severity=result.severity,
                metadata=result.metadata,
            )
        ],
    )


def one_segment_day(
    lake: LakeResource, warehouse: WarehouseResource, day: date
) -> dg.AssetCheckResult:
    """The stored day against the mart: every customer once, with a known segment and label."""
    table = _table(lake)
    frame, stored = read_partition(table, day), read_manifest(table, day)
    if frame is None or stored is None:
        return dg.AssetCheckResult(passed=False, metadata={"error": f"partition {day} is missing"})
    customers = S.rfm_customers(warehouse.query, day)["visitor_id"]
    if "skipped" in stored:
        return dg.AssetCheckResult(
            passed=frame.is_empty() and customers.len() < S.MIN_CUSTOMERS,
            metadata={"skipped": stored["skipped"], "customers": customers.len()},
        )
    ids = frame["visitor_id"]
    missing = customers.filter(~customers.is_in(ids.implode()))
    extra = ids.filter(~ids.is_in(customers.implode()))
    problems = {
        "duplicated customers": int(ids.is_duplicated().sum()),
        "customers without a segment": missing.len(),
        "rows that are not customers": extra.len(),
        "unknown segment ids": frame.filter(
            ~pl.col("segment_id").is_between(0, stored["k"] - 1)
        ).height,
        "null labels": frame["segment_label"].null_count(),
    }
    found = {k: v for k, v in problems.items() if v}
    sample = {"sample missing": missing.head(10).to_list()} if missing.len() else {}
    return dg.AssetCheckResult(passed=not found, metadata={"rows": frame.height, **found, **sample})


@dg.asset_check(
    asset=SEGMENTS,
    name=ONE_SEGMENT_PER_CUSTOMER,
    partitions_def=daily_partitions,
    blocking=True,
    pool=WAREHOUSE_POOL,
    description="Every customer of gold.mart_rfm_segments that day has exactly one row, with a "
    "segment id in 0..k-1 and a label; nothing else has a row. Blocking: the feature store does "
    "not serve a partial segmentation.",
)
def one_segment_per_customer(
    context: dg.AssetCheckExecutionContext, lake: LakeResource, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    return combine({day: one_segment_day(lake, warehouse, day) for day in check_days(context)})


defs = dg.Definitions(assets=[customer_segments], asset_checks=[one_segment_per_customer])
