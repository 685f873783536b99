"""The revenue forecast: the core on a hand-made weekly series in a real DuckDB warehouse, and the
assets on that warehouse with a real lake folder and a real MLflow store (SQLite)."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta
from itertools import pairwise
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import polars as pl
import pytest

from pipeline_assets.ml import forecast as assets
from resources import LakeResource, WarehouseResource
from resources.ml import MlflowResource
from shoplake.core.lake.io import read_manifest, read_partition, write_partition
from shoplake.core.ml import forecast as F
from shoplake.core.warehouse import query
from shoplake.simulator.traffic import WEEKDAY

START = date(2026, 8, 3)  # a Monday
DAYS = 63  # nine weeks: two backtest origins with the test spec
LAST = START + timedelta(days=DAYS - 1)
# Two origins keep the module fast (each origin fits Prophet, AutoETS and seasonal-naive).
SPEC = F.ForecastSpec(max_origins=2)


def weekly_revenue(days: int = DAYS, seed: int = 7) -> pl.DataFrame:
    """The simulator's weekday factors on a level of 1000, a slight trend, 5 % noise."""
    rng = np.random.default_rng(seed)
    dates = [START + timedelta(days=i) for i in range(days)]
    level = 1000 * (1 + 0.002 * np.arange(days))
    factor = np.array([WEEKDAY[d.weekday()] for d in dates])
    revenue = np.round(level * factor * (1 + rng.normal(0, 0.05, days)), 2)
    return pl.DataFrame({"kpi_date": dates, "revenue": revenue})


def write_warehouse(path: Path, kpis: pl.DataFrame) -> Path:
    con = duckdb.connect(str(path))
    try:
        con.execute("create schema if not exists gold")
        con.execute(
            "create or replace table gold.mart_daily_kpis "
            "(kpi_date date, revenue decimal(18, 2), n_orders bigint)"
        )
        con.executemany(
            "insert into gold.mart_daily_kpis values (?, ?, 1)",
            kpis.select("kpi_date", "revenue").rows(),
        )
    finally:
        con.close()
    return path


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_warehouse(
        tmp_path_factory.mktemp("forecast") / "warehouse.duckdb", weekly_revenue()
    )


@pytest.fixture(scope="module")
def kpis(warehouse: Path) -> pl.DataFrame:
    return query("select kpi_date, revenue from gold.mart_daily_kpis order by 1", path=warehouse)


@pytest.fixture(scope="module")
def backtest(kpis: pl.DataFrame) -> F.Backtest:
    return F.backtest(F.revenue_series(kpis, LAST), SPEC)


def test_the_served_model_beats_seasonal_naive(backtest: F.Backtest):
    assert backtest.origin_dates == [LAST - timedelta(days=21), LAST - timedelta(days=14)]
    served = backtest.served
    assert served in (F.PROPHET, "auto_ets")
    assert backtest.beats_baseline
    smape = {m: backtest.metrics[m]["smape"] for m in SPEC.models}
    assert smape[served] == min(smape[F.PROPHET], smape["auto_ets"])
    assert smape[served] < 0.8 * smape[F.SEASONAL_NAIVE]
    table = backtest.table()
    assert table.schema == pl.Schema(F.BACKTEST_SCHEMA)
    assert table.height == 3 * len(F.METRICS)
    assert F.served_model(table) == served
    assert dict(table.select("model", "role").unique().iter_rows()) == {
        served: "served",
        ({F.PROPHET, "auto_ets"} - {served}).pop(): "candidate",
        F.SEASONAL_NAIVE: "baseline",
    }
    assert table["n_points"].to_list() == [2 * SPEC.horizon] * table.height


def test_metrics_are_computed_as_defined():
    points = pl.DataFrame(
        {
            "y": [100.0, 0.0, 50.0, 0.0],
            "yhat": [110.0, 10.0, 50.0, 0.0],
            "lo80": [95.0, 5.0, 60.0, 0.0],
            "hi80": [105.0, 15.0, 70.0, 0.0],
            "lo95": [90.0, 0.0, 40.0, 0.0],
            "hi95": [115.0, 20.0, 80.0, 0.0],
        }
    ).to_pandas()
    m = F.score(points)
    assert m["mape"] == pytest.approx((0.1 + 0.0) / 2)  # days with revenue only
    # |e|*2/(|y|+|yhat|): 20/210, 20/10 = 2, 0, and 0 for actual and forecast both 0.
    assert m["smape"] == pytest.approx((20 / 210 + 2 + 0 + 0) / 4)
    assert m["coverage_80"] == pytest.approx(2 / 4)  # 100 in, 0 out, 50 out, 0 in
    assert m["coverage_95"] == pytest.approx(4 / 4)


@pytest.mark.parametrize("model", [F.PROPHET, "auto_ets", "auto_arima"])
def test_intervals_nest_around_the_forecast(kpis: pl.DataFrame, model: str):
    spec = replace(SPEC, peer="auto_arima") if model == "auto_arima" else SPEC
    result = F.forecast(F.revenue_series(kpis, LAST), model, spec)
    frame = result.frame
    assert frame.schema == pl.Schema(F.FORECAST_SCHEMA)
    assert frame["forecast_date"].to_list() == [
        LAST + timedelta(days=i) for i in range(1, SPEC.horizon + 1)
    ]
    assert frame["model"].unique().to_list() == [model]
    order = ["lo95", "lo80", "yhat", "hi80", "hi95"]
    for low, high in pairwise(order):
        assert (frame[low] <= frame[high]).all(), (model, low, high)
    assert (frame["lo95"] < frame["hi95"]).all()
    # The weekly pattern carries into the forecast: Saturdays above Mondays.
    weekday = frame.with_columns(wd=pl.col("forecast_date").dt.weekday())
    sat = weekday.filter(pl.col("wd") == 6)["yhat"].mean()
    mon = weekday.filter(pl.col("wd") == 1)["yhat"].mean()
    assert sat > 1.1 * mon


def test_too_short_a_history_gives_the_reason_instead_of_a_forecast(kpis: pl.DataFrame):
    short_day = START + timedelta(days=29)
    why = F.shortfall(F.revenue_series(kpis, short_day), SPEC, short_day)
    assert why is not None
    assert "30 days of revenue history" in why and "at least 35" in why
    # A longer horizon needs more history.
    day = START + timedelta(days=40)
    assert F.shortfall(F.revenue_series(kpis, day), SPEC, day) is None
    assert "at least 51" in F.shortfall(F.revenue_series(kpis, day), replace(SPEC, horizon=30), day)
    # Nothing up to the day, and a day that has no row yet.
    before = START - timedelta(days=1)
    assert "no revenue up to" in F.shortfall(F.revenue_series(kpis, before), SPEC, before)
    after = LAST + timedelta(days=2)
    series = F.revenue_series(kpis, after)
    assert series["ds"].iloc[-1].date() == LAST
    assert f"no row for {after}" in F.shortfall(series, SPEC, after)
    with pytest.raises(ValueError, match="at least 35"):
        F.backtest(F.revenue_series(kpis, short_day), SPEC)


def test_a_day_missing_between_two_rows_is_zero_revenue():
    kpis = pl.DataFrame({"kpi_date": [START, START + timedelta(days=2)], "revenue": [10.0, 30.0]})
    series = F.revenue_series(kpis, START + timedelta(days=5))
    assert series["y"].tolist() == [10.0, 0.0, 30.0]


def test_the_horizon_and_peer_are_checked():
    with pytest.raises(ValueError, match="14 to 30"):
        F.ForecastSpec(horizon=7)
    with pytest.raises(ValueError, match="14 to 30"):
        F.ForecastSpec(horizon=31)
    with pytest.raises(ValueError, match="auto_ets"):
        F.ForecastSpec(peer="theta")


def test_the_same_input_gives_the_same_output(kpis: pl.DataFrame, backtest: F.Backtest):
    series = F.revenue_series(kpis, LAST)
    np.random.seed(123)
    state = np.random.get_state()[1].copy()
    again = F.backtest(series, SPEC)
    # Prophet's draws are seeded without disturbing NumPy's global generator.
    assert (np.random.get_state()[1] == state).all()
    assert again.metrics == backtest.metrics
    assert again.points.equals(backtest.points)
    assert again.table().equals(backtest.table())
    for model in (F.PROPHET, "auto_ets"):
        first = F.forecast(series, model, SPEC).frame
        assert F.forecast(series, model, SPEC).frame.equals(first)
    # The seed moves only Prophet's interval draws, not its fitted point forecast.
    prophet = F.forecast(series, F.PROPHET, SPEC).frame
    other_seed = F.forecast(series, F.PROPHET, replace(SPEC, seed=SPEC.seed + 1)).frame
    assert other_seed["yhat"].equals(prophet["yhat"])
    assert not other_seed["hi95"].equals(prophet["hi95"])


# -- the assets, on real stores ------------------------------------------------------------------


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory, warehouse: Path) -> dict:
    root = tmp_path_factory.mktemp("forecast_stores")
    return {
        "lake": LakeResource(root=str(root / "lake")),
        "warehouse": WarehouseResource(path=str(warehouse)),
        "mlflow": MlflowResource(
            tracking_uri=f"sqlite:///{root / 'mlflow' / 'mlflow.db'}",
            artifact_dir=str(root / "mlflow" / "artifacts"),
            ui_url="http://127.0.0.1:5000",
        ),
    }


def materialize(stores: dict, day: date) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [assets.forecast_backtest, assets.revenue_forecast, assets.beats_seasonal_naive],
        partition_key=day.isoformat(),
        resources=stores,
        run_config=dg.RunConfig(
            ops={"ml__forecast_backtest": assets.BacktestConfig(max_origins=SPEC.max_origins)}
        ),
    )


def metadata(result: dg.ExecuteInProcessResult, key: dg.AssetKey) -> dict:
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key == key]
    return {k: getattr(v, "value", v) for k, v in event.materialization.metadata.items()}


def test_the_assets_forecast_log_to_mlflow_and_check(stores: dict, backtest: F.Backtest):
    import mlflow

    result = materialize(stores, LAST)
    assert result.success
    lake = stores["lake"]
    table = read_partition(lake.table_dir("ml", "forecast_backtest"), LAST)
    assert table.equals(backtest.table())  # the asset's backtest is the core's
    served = backtest.served
    forecast = read_partition(lake.table_dir("ml", "revenue_forecast"), LAST)
    assert forecast.equals(
        F.forecast(
            F.revenue_series(
                query(
                    "select kpi_date, revenue from gold.mart_daily_kpis",
                    path=stores["warehouse"].path,
                ),
                LAST,
            ),
            served,
            SPEC,
        ).frame
    )

    meta = metadata(result, assets.FORECAST)
    assert meta[assets.SERVED] == served
    assert meta["mlflow_run"].endswith(meta["mlflow_run_id"])
    assert "| seasonal_naive | baseline |" in meta["backtest"]
    (check,) = result.get_asset_check_evaluations()
    assert check.check_name == assets.BEATS_SEASONAL_NAIVE and check.passed

    # The run holds the backtest metrics and the input range; the model is registered and,
    # loaded back, forecasts what the asset stored.
    mlflow.set_tracking_uri(stores["mlflow"].tracking_uri)
    run = mlflow.get_run(meta["mlflow_run_id"])
    assert run.data.metrics["served_smape"] == pytest.approx(backtest.metrics[served]["smape"])
    assert run.data.metrics["seasonal_naive_smape"] == pytest.approx(
        backtest.metrics[F.SEASONAL_NAIVE]["smape"]
    )
    assert run.data.params["history_end"] == LAST.isoformat()
    assert run.data.params["served_model"] == served
    model = mlflow.pyfunc.load_model(f"models:/{F.REGISTERED_MODEL}/1")
    if served == F.PROPHET:
        future = forecast.select(ds=pl.col("forecast_date").cast(pl.Datetime)).to_pandas()
        loaded = model.predict(future)["yhat"].to_numpy()
    else:
        import pandas as pd

        loaded = model.predict(pd.DataFrame({"h": [SPEC.horizon]}))[served].to_numpy()
    assert np.allclose(loaded, forecast["yhat"].to_numpy())


def test_a_day_with_too_little_history_is_written_empty_with_the_reason(stores: dict):
    day = START + timedelta(days=29)
    result = materialize(stores, day)
    assert result.success
    lake = stores["lake"]
    for key in (assets.BACKTEST, assets.FORECAST):
        table_dir = lake.table_dir(*key.path)
        assert read_partition(table_dir, day).height == 0
        assert "at least 35" in read_manifest(table_dir, day)[assets.NO_FORECAST]
        assert "at least 35" in metadata(result, key)[assets.NO_FORECAST]
    (check,) = result.get_asset_check_evaluations()
    assert check.passed  # nothing served, nothing to judge
    assert "at least 35" in check.metadata[assets.NO_FORECAST].value


def test_the_check_fails_when_seasonal_naive_is_better(tmp_path: Path, backtest: F.Backtest):
    lake = LakeResource(root=str(tmp_path))
    worse = backtest.table().with_columns(
        value=pl.when((pl.col("role") == "baseline") & (pl.col("metric") == "smape"))
        .then(0.001)
        .otherwise(pl.col("value"))
    )
    write_partition(lake.table_dir("ml", "forecast_backtest"), LAST, worse, {})
    result = assets._beats_day(lake, LAST)
    assert not result.passed
    assert result.metadata["seasonal_naive_smape"].value == 0.001
    assert not assets._beats_day(lake, LAST + timedelta(days=1)).passed  # no backtest at all


@pytest.mark.integration
def test_on_the_simulated_lake_days_with_enough_history_are_forecast_and_logged(ml_lake):
    """Through Kafka and the whole graph: a day has a forecast once it has 35 days of revenue
    before it (the reason otherwise), and each forecast is an MLflow run."""
    import mlflow

    lake = ml_lake.resources["lake"]
    kpis = query(
        "select kpi_date, revenue from gold.mart_daily_kpis order by 1",
        path=ml_lake.settings.home / "warehouse.duckdb",
    )
    first = kpis["kpi_date"].min()
    mlflow.set_tracking_uri(ml_lake.resources["mlflow"].tracking_uri)
    forecast_days = []
    for day in ml_lake.days:
        table_dir = lake.table_dir("ml", "revenue_forecast")
        manifest, frame = read_manifest(table_dir, day), read_partition(table_dir, day)
        assert manifest is not None, day
        if (day - first).days + 1 < SPEC.min_history_days:
            assert "a forecast needs at least 35" in manifest[assets.NO_FORECAST], day
            assert frame.height == 0
            continue
        forecast_days.append(day)
        assert frame.height == SPEC.horizon
        assert frame["forecast_date"].min() == day + timedelta(days=1)
        run = mlflow.get_run(manifest["mlflow_run_id"])
        assert run.data.params["history_end"] == day.isoformat()
        assert run.data.params["served_model"] == manifest[assets.SERVED]
    assert forecast_days, f"no day of {ml_lake.days[0]}..{ml_lake.days[-1]} has 35 days of history"
    (check,) = [
        e
        for e in ml_lake.run.get_asset_check_evaluations()
        if e.check_name == assets.BEATS_SEASONAL_NAIVE
    ]
    per_day, failed = check.metadata["per_day"].value, check.metadata["failed_days"].value
    for day in forecast_days:
        judged = per_day[str(day)]
        assert judged[assets.SERVED] in (F.PROPHET, "auto_ets")
        beats = judged["served_smape"] < judged["seasonal_naive_smape"]
        assert (str(day) in failed) == (not beats), (day, judged)
