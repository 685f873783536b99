"""The revenue forecast's backtest: Prophet and its statistical peers against seasonal-naive.

    .venv/bin/python -m bench.ml_forecast [--days 140] [--users 4000] [--home /work/scratch/mlhome]

1. A long history. Building months of lake through Kafka and Dagster takes hours here (the dev
   lake's 35 days of 600 users took about an hour), so the daily revenue comes straight from the
   simulator: its purchase events summed per event day, as gold.mart_daily_kpis sums them (each
   event once, no bot sessions, none the collector rejects). Step 2 checks that this sum is the
   mart's revenue on the dev lake. The simulator's weekday factors (traffic.WEEKDAY) give the
   weekly cycle, its users joining over the days a trend, and its order sizes the noise.
   The backtest runs every origin from day 21 on, a week apart, with a 14-day horizon; Prophet
   with AutoETS as peer (the served configuration), then again with AutoARIMA as peer.
2. The dev lake (``--home``, built by the lead; read only): the same backtest through the asset
   (ml/forecast_backtest materialized in-process into a throw-away lake, on the home's warehouse)
   and through the core functions on the warehouse rows; both tables must be equal. The dev
   lake's simulation is replayed into the revenue sum of step 1 and compared with its mart.

Figures are fractions shown in percent; coverage is the share of actuals inside the interval.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from bench.support import session_environment
from shoplake.core import clock

# The simulator sends only what has arrived by the clock's now: put it after every simulated day
# (the dev lake's end in November 2026, and a year of history from 2026-01-05), unless the shell
# moves it.
os.environ.setdefault(clock.ENV, "2027-01-04T12:00:00+00:00")
session_environment()

import polars as pl  # noqa: E402

from shoplake.core.ml import forecast as F  # noqa: E402
from shoplake.core.warehouse import query  # noqa: E402
from shoplake.simulator import SimConfig, simulate  # noqa: E402
from shoplake.simulator.faults import Record  # noqa: E402
from shoplake.simulator.sinks import Sink  # noqa: E402

# Faults whose events never reach gold: rejected by the collector, or dropped as bots or future.
NOT_IN_GOLD = ("bot_burst", "future")
DEV_HOME = Path("/work/scratch/mlhome")
# The dev lake's simulation (/work/scratch/build_dev_lake.sh): 35 days from 2026-10-20, 600 users.
DEV_SIM = SimConfig(start=date(2026, 10, 20), days=35, users=600)


class RevenueSink(Sink):
    """Keeps only what daily revenue needs: each purchase's total by the day it occurred."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()
        self.revenue: dict[date, float] = defaultdict(float)

    def write(self, records: Sequence[Record]) -> None:
        for rec in records:
            if rec.event_type != "purchase" or not rec.valid or rec.fault in NOT_IN_GOLD:
                continue
            doc = json.loads(rec.payload)
            if doc["event_id"] in self.seen:  # a duplicate delivery
                continue
            self.seen.add(doc["event_id"])
            day = datetime.fromisoformat(doc["occurred_at"]).astimezone(UTC).date()
            self.revenue[day] += doc["total"]

    def frame(self, first: date, last: date) -> pl.DataFrame:
        days = [d for d in sorted(self.revenue) if first <= d <= last]
        return pl.DataFrame(
            {"kpi_date": days, "revenue": [round(self.revenue[d], 2) for d in days]},
            schema={"kpi_date": pl.Date(), "revenue": pl.Float64()},
        )


def simulated_revenue(config: SimConfig) -> pl.DataFrame:
    sink = RevenueSink()
    simulate(config, sink, show_progress=False)
    return sink.frame(config.start, config.start + timedelta(days=config.days - 1))


def print_backtest(bt: F.Backtest, extra: dict[str, dict[str, float]] | None = None) -> None:
    rows = {**bt.metrics, **(extra or {})}
    print(f"  {'model':<16}{'MAPE':>9}{'sMAPE':>9}{'cov 80':>9}{'cov 95':>9}   vs seasonal-naive")
    base = bt.metrics[F.SEASONAL_NAIVE]["smape"]
    for model, m in rows.items():
        role = "served" if model == bt.served else ("baseline" if model == F.SEASONAL_NAIVE else "")
        print(
            f"  {model:<16}"
            + "".join(f"{100 * m[k]:>8.1f}%" for k in F.METRICS)
            + f"   sMAPE x{m['smape'] / base:.2f} {role}"
        )
    print(
        f"  {len(bt.origin_dates)} origins {bt.origin_dates[0]} .. {bt.origin_dates[-1]}, "
        f"horizon {bt.spec.horizon}, {int((bt.points['model'] == F.PROPHET).sum())} points a model"
    )


def long_history(days: int, users: int, seed: int) -> None:
    config = SimConfig(start=date(2026, 1, 5), days=days, users=users, seed=seed)
    t0 = time.perf_counter()
    kpis = simulated_revenue(config)
    sim_s = time.perf_counter() - t0
    y = kpis["revenue"]
    weekday = (
        kpis.with_columns(wd=pl.col("kpi_date").dt.weekday())
        .group_by("wd")
        .agg(pl.col("revenue").mean())
        .sort("wd")
    )
    print(
        f"\n1. simulated history: {days} days from {config.start}, {users} users, seed {seed} "
        f"(simulated in {sim_s:.0f} s)\n  daily revenue mean {y.mean():,.0f}, sd {y.std():,.0f} "
        f"(cv {y.std() / y.mean():.2f}); weekday means Mon..Sun relative to the mean: "
        + " ".join(f"{v / y.mean():.2f}" for v in weekday["revenue"])
    )
    series = F.revenue_series(kpis, kpis["kpi_date"].max())
    spec = F.ForecastSpec(max_origins=1000)
    t0 = time.perf_counter()
    bt = F.backtest(series, spec)
    bt_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    arima = F.backtest(series, replace(spec, peer="auto_arima"))
    arima_s = time.perf_counter() - t0
    same_prophet = arima.metrics[F.PROPHET] == bt.metrics[F.PROPHET]
    print_backtest(bt, {"auto_arima": arima.metrics["auto_arima"]})
    print(
        f"  backtest wall time: {bt_s:.1f} s with AutoETS, {arima_s:.1f} s with AutoARIMA (each "
        f"with Prophet and seasonal-naive); Prophet's figures identical in both runs: "
        f"{same_prophet}"
    )
    t0 = time.perf_counter()
    served = F.forecast(series, bt.served, spec)
    again = F.forecast(series, bt.served, spec)
    print(
        f"  served {bt.served} (beats seasonal-naive: {bt.beats_baseline}); forecast "
        f"{served.frame['forecast_date'].min()} .. {served.frame['forecast_date'].max()} refitted "
        f"twice in {time.perf_counter() - t0:.1f} s, same values: {served.frame.equals(again.frame)}"
    )


def dev_lake(home: Path) -> None:
    import dagster as dg

    from pipeline_assets.ml import forecast as assets
    from resources import LakeResource, WarehouseResource
    from shoplake.core.lake.io import read_manifest, read_partition

    warehouse = home / "warehouse.duckdb"
    kpis = query("select kpi_date, revenue from gold.mart_daily_kpis order by 1", path=warehouse)
    day = kpis["kpi_date"].max()
    print(
        f"\n2. dev lake {home}: gold.mart_daily_kpis {kpis.height} days "
        f"{kpis['kpi_date'].min()} .. {day}, as of {day}"
    )
    replay = simulated_revenue(DEV_SIM)
    joined = kpis.join(replay, on="kpi_date", how="full", suffix="_sim")
    equal = joined.filter(
        (pl.col("revenue") - pl.col("revenue_sim")).abs().fill_null(1.0) > 0.005
    ).height
    print(
        f"  the dev lake's simulation replayed into the revenue sum of step 1: {equal} of "
        f"{joined.height} days differ from the mart's revenue"
    )
    series = F.revenue_series(kpis, day)
    t0 = time.perf_counter()
    core = F.backtest(series, F.ForecastSpec())
    core_s = time.perf_counter() - t0
    print_backtest(core)
    with tempfile.TemporaryDirectory() as scratch:
        t0 = time.perf_counter()
        result = dg.materialize(
            [assets.forecast_backtest],
            partition_key=day.isoformat(),
            resources={
                "lake": LakeResource(root=scratch),
                "warehouse": WarehouseResource(path=str(warehouse)),
            },
        )
        asset_s = time.perf_counter() - t0
        table_dir = Path(scratch) / "ml" / "forecast_backtest"
        stored = read_partition(table_dir, day)
        manifest = read_manifest(table_dir, day)
    same = stored is not None and stored.equals(core.table())
    print(
        f"  through the asset ml/forecast_backtest (run ok: {result.success}, {asset_s:.1f} s; "
        f"core alone {core_s:.1f} s): served {manifest.get(assets.SERVED)}, table equal to the "
        f"core's: {same}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--days", type=int, default=140, help="simulated days of history")
    parser.add_argument("--users", type=int, default=4000, help="simulated users")
    parser.add_argument("--seed", type=int, default=42, help="the simulation's seed")
    parser.add_argument(
        "--home", type=Path, default=DEV_HOME, help="the dev lake's SHOPLAKE_HOME (read only)"
    )
    parser.add_argument("--skip-dev-lake", action="store_true", help="only the long history")
    args = parser.parse_args()
    long_history(args.days, args.users, args.seed)
    if not args.skip_dev_lake:
        dev_lake(args.home)


if __name__ == "__main__":
    main()
