"""The revenue forecast: a rolling-origin backtest of Prophet, a statistical peer and seasonal-naive
on gold's daily revenue, then the better of Prophet and the peer forecasting the next days.

Both assets are daily: partition D uses the revenue of every day up to D (shoplake/core/ml/
forecast.py has the models, the backtest and the minimum history). With too little history a
partition is written empty, and its manifest and the run's metadata say why.

- ``ml/forecast_backtest``: one row per model and metric as of D; its run config (horizon 14-30,
  peer, origins) is kept in the partition's manifest, which the forecast reads back.
- ``ml/revenue_forecast``: the served model's forecast of D+1..D+horizon with 80 % and 95 %
  bounds. It holds no actuals: readers take those from gold.mart_daily_kpis, which also has the
  days after D once they happen (the forecast of an older D is compared with them there). Each
  training is an MLflow run; the model is registered as ``shoplake-revenue-forecast``.
- Check ``beats_seasonal_naive``: the served model's backtest sMAPE is below seasonal-naive's.
"""

from dataclasses import asdict
from datetime import date

import dagster as dg
import polars as pl
from pydantic import Field

from pipeline_assets.checks import check_days, combine
from pipeline_assets.gold.dbt import GOLD_FRESHNESS, WAREHOUSE_POOL
from pipeline_assets.partitions import daily_partitions
from pipeline_assets.policies import column_schema, partition_days, partition_metadata
from resources import LakeResource, WarehouseResource
from resources.ml import MlflowResource
from shoplake.core.lake.io import LakePath, read_manifest, read_partition, write_partition
from shoplake.core.ml import forecast as F
from shoplake.core.ml.tracking import log_training

GROUP = "ml_models"
DAILY_KPIS = dg.AssetKey(["gold", "mart_daily_kpis"])
BACKTEST = dg.AssetKey(["ml", "forecast_backtest"])
FORECAST = dg.AssetKey(["ml", "revenue_forecast"])
BEATS_SEASONAL_NAIVE = "beats_seasonal_naive"
# Manifest keys of a partition.
NO_FORECAST = "no_forecast_reason"
SPEC = "spec"
SERVED = "served_model"


class BacktestConfig(dg.Config):
    """How to forecast and backtest; the forecast asset uses what its day's backtest used."""

    horizon: int = Field(
        default=F.ForecastSpec.horizon,
        ge=F.HORIZON_RANGE[0],
        le=F.HORIZON_RANGE[1],
        description="Days forecast after D (the backtest scores the same horizon).",
    )
    peer: str = Field(
        default=F.ForecastSpec.peer, description=f"Prophet's peer: one of {', '.join(F.PEERS)}."
    )
    min_train_days: int = Field(
        default=F.ForecastSpec.min_train_days,
        description="Fewest days a backtest origin trains on.",
    )
    max_origins: int = Field(
        default=F.ForecastSpec.max_origins, description="At most this many backtest origins."
    )
    origin_step: int = Field(
        default=F.ForecastSpec.origin_step, description="Days between two backtest origins."
    )

    def spec(self) -> F.ForecastSpec:
        return F.ForecastSpec(
            horizon=self.horizon,
            peer=self.peer,
            min_train_days=self.min_train_days,
            max_origins=self.max_origins,
            origin_step=self.origin_step,
        )


def _table_dir(lake: LakeResource, key: dg.AssetKey) -> LakePath:
    return lake.table_dir(*key.path)


def daily_revenue(warehouse: WarehouseResource, last: date) -> pl.DataFrame:
    """kpi_date and revenue of gold.mart_daily_kpis up to ``last``."""
    return warehouse.query(
        "select kpi_date, revenue from gold.mart_daily_kpis where kpi_date <= $last "
        "order by kpi_date",
        {"last": last},
    )


def backtest_markdown(table: pl.DataFrame) -> str:
    """The backtest as a model x metric table, in percent."""
    wide = table.pivot(on="metric", index=["model", "role"], values="value")
    lines = [
        "| model | role | MAPE | sMAPE | 80 % coverage | 95 % coverage |",
        "|---|---|---|---|---|---|",
    ]
    for row in wide.iter_rows(named=True):
        cells = ["n/a" if row[m] is None else f"{100 * row[m]:.1f} %" for m in F.METRICS]
        lines.append(f"| {row['model']} | {row['role']} | {' | '.join(cells)} |")
    first = table.row(0, named=True)
    lines.append(
        f"\n{first['n_origins']} origins ({first['first_origin']} .. {first['last_origin']}), "
        f"horizon {first['horizon']} days, {first['n_points']} points per model."
    )
    return "\n".join(lines)


def _reasons_metadata(reasons: dict[str, str], last_day: date) -> dict:
    """Why days have no forecast: each day's reason, and the run's last day's on its own."""
    if not reasons:
        return {}
    out: dict = {"days_without_forecast": dg.MetadataValue.json(reasons)}
    if str(last_day) in reasons:
        out[NO_FORECAST] = reasons[str(last_day)]
    return out


@dg.asset(
    key=BACKTEST,
    deps=[DAILY_KPIS],
    group_name=GROUP,
    kinds={"prophet", "parquet"},
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    freshness_policy=GOLD_FRESHNESS,
    pool=WAREHOUSE_POOL,
    metadata={"dagster/column_schema": column_schema(pl.Schema(F.BACKTEST_SCHEMA))},
    description="Rolling-origin backtest as of D of Prophet, a statistical peer (AutoETS) and "
    "seasonal-naive on daily revenue: MAPE, sMAPE and 80/95 % interval coverage per model; the "
    "better of Prophet and the peer on sMAPE is the served one.",
)
def forecast_backtest(
    context: dg.AssetExecutionContext,
    config: BacktestConfig,
    lake: LakeResource,
    warehouse: WarehouseResource,
) -> dg.MaterializeResult:
    spec = config.spec()
    days = partition_days(context)
    kpis = daily_revenue(warehouse, max(days))
    per_day, reasons, served, table = {}, {}, {}, None
    for day in days:
        series = F.revenue_series(kpis, day)
        manifest: dict = {SPEC: asdict(spec), "history_days": len(series)}
        if (why := F.shortfall(series, spec, day)) is not None:
            frame = F.empty(F.BACKTEST_SCHEMA)
            reasons[str(day)] = manifest[NO_FORECAST] = why
            context.log.info(f"forecast backtest {day}: no forecast: {why}")
        else:
            bt = F.backtest(series, spec)
            frame = table = bt.table()
            served[str(day)] = manifest[SERVED] = bt.served
            context.log.info(
                f"forecast backtest {day}: {bt.served} served, sMAPE "
                f"{bt.metrics[bt.served]['smape']:.3f} vs seasonal-naive "
                f"{bt.metrics[F.SEASONAL_NAIVE]['smape']:.3f}"
            )
        write_partition(_table_dir(lake, BACKTEST), day, frame, manifest)
        per_day[str(day)] = frame.height
    metadata = partition_metadata(per_day, table) | _reasons_metadata(reasons, max(days))
    if table is not None:
        metadata |= {
            "backtest": dg.MetadataValue.md(backtest_markdown(table)),
            "as_of_date": str(table["as_of_date"][0]),
            SERVED: F.served_model(table),
            "served_per_day": dg.MetadataValue.json(served),
        }
    return dg.MaterializeResult(metadata=metadata)


def _backtest_of(lake: LakeResource, day: date) -> tuple[dict, pl.DataFrame | None]:
    manifest = read_manifest(_table_dir(lake, BACKTEST), day)
    if manifest is None:
        raise dg.Failure(
            description=f"ml/forecast_backtest has no partition {day}: materialize it first "
            "(the forecast serves the model its backtest chose)",
            allow_retries=False,
        )
    return manifest, read_partition(_table_dir(lake, BACKTEST), day)


@dg.asset(
    key=FORECAST,
    deps=[DAILY_KPIS, BACKTEST],
    group_name=GROUP,
    kinds={"prophet", "mlflow", "parquet"},
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    freshness_policy=GOLD_FRESHNESS,
    pool=WAREHOUSE_POOL,
    metadata={"dagster/column_schema": column_schema(pl.Schema(F.FORECAST_SCHEMA))},
    description="Daily revenue forecast for D+1..D+horizon from the model D's backtest chose, "
    "with 80 % and 95 % bounds (actuals: gold.mart_daily_kpis). Each training is an MLflow run, "
    "the model registered as shoplake-revenue-forecast.",
)
def revenue_forecast(
    context: dg.AssetExecutionContext,
    lake: LakeResource,
    warehouse: WarehouseResource,
    mlflow: MlflowResource,
) -> dg.MaterializeResult:
    days = partition_days(context)
    kpis = daily_revenue(warehouse, max(days))
    store = mlflow.store()
    per_day, reasons, runs, frame, last = {}, {}, {}, None, None
    for day in days:
        manifest, table = _backtest_of(lake, day)
        if NO_FORECAST in manifest:
            frame = F.empty(F.FORECAST_SCHEMA)
            reasons[str(day)] = manifest[NO_FORECAST]
            write_partition(
                _table_dir(lake, FORECAST), day, frame, {NO_FORECAST: reasons[str(day)]}
            )
            per_day[str(day)] = 0
            continue
        spec = F.ForecastSpec(**manifest[SPEC])
        series = F.revenue_series(kpis, day)
        result = F.forecast(series, manifest[SERVED], spec)
        run = log_training(
            store,
            experiment=F.EXPERIMENT,
            run_name=f"revenue-forecast {day}",
            params=F.training_params(spec, series, result.model, table["n_origins"][0]),
            metrics=F.flat_metrics(table),
            log_model=F.model_logger(result),
            tags={
                "as_of_date": str(day),
                "served_model": result.model,
                "asset": "ml/revenue_forecast",
            },
        )
        frame = result.frame
        write_partition(
            _table_dir(lake, FORECAST),
            day,
            frame,
            {SERVED: result.model, SPEC: manifest[SPEC], "mlflow_run_id": run.run_id},
        )
        per_day[str(day)] = frame.height
        runs[str(day)] = run.run_id
        last = (run, table)
        context.log.info(
            f"revenue forecast {day}: {result.model}, {frame.height} days, MLflow run {run.run_id}"
            f" (model version {run.registered_version})"
        )
    metadata = partition_metadata(per_day, frame) | _reasons_metadata(reasons, max(days))
    if last is not None:
        run, table = last
        metadata |= {
            "mlflow_run_id": run.run_id,
            "mlflow_run": dg.MetadataValue.url(run.link) if run.link else run.run_id,
            "registered_model": f"{F.REGISTERED_MODEL} v{run.registered_version}",
            SERVED: F.served_model(table),
            "backtest": dg.MetadataValue.md(backtest_markdown(table)),
            "mlflow_runs": dg.MetadataValue.json(runs),
        }
    return dg.MaterializeResult(metadata=metadata)


def _beats_day(lake: LakeResource, day: date) -> dg.AssetCheckResult:
    manifest = read_manifest(_table_dir(lake, BACKTEST), day)
    if manifest is None:
        return dg.AssetCheckResult(
            passed=False, metadata={"error": f"ml/forecast_backtest partition {day} is missing"}
        )
    if NO_FORECAST in manifest:
        # Nothing is served, so there is nothing to judge; the reason is the evidence.
        return dg.AssetCheckResult(
            passed=True,
            description="no forecast served for this day",
            metadata={NO_FORECAST: manifest[NO_FORECAST]},
        )
    table = read_partition(_table_dir(lake, BACKTEST), day)
    served = F.served_model(table)
    ours = F.metric(table, served, "smape")
    baseline = F.metric(table, F.SEASONAL_NAIVE, "smape")
    return dg.AssetCheckResult(
        passed=ours < baseline,
        metadata={
            SERVED: served,
            "served_smape": ours,
            "seasonal_naive_smape": baseline,
            "smape_ratio": ours / baseline if baseline else float("inf"),
            "n_origins": int(table["n_origins"][0]),
        },
    )


@dg.asset_check(
    asset=FORECAST,
    name=BEATS_SEASONAL_NAIVE,
    partitions_def=daily_partitions,
    description="The served model's backtest sMAPE is below seasonal-naive's on the same "
    "origins (a day without a forecast has nothing to judge and passes, with the reason).",
)
def beats_seasonal_naive(
    context: dg.AssetCheckExecutionContext, lake: LakeResource
) -> dg.AssetCheckResult:
    return combine({day: _beats_day(lake, day) for day in check_days(context)})


defs = dg.Definitions(
    assets=[forecast_backtest, revenue_forecast],
    asset_checks=[beats_seasonal_naive],
)
