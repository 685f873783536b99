"""The ML layer on one day of about 1M events: which engine builds the features, and what the ML
group adds to the day's run.

    .venv/bin/python -m bench.ml_day [--events 1000000] [--keep DIR]
    .venv/bin/python -m bench.ml_day --resume DIR [--engines-only]   # again on DIR's lake (--keep)

1. Simulates the day (faults on) into a throw-away broker; one Dagster run builds the day before
   and the day, bronze -> gold, as the daily schedule would.
2. Engine: the user and product feature tables of the day, three times each, as the asset builds
   them (SQL run by the DuckDB warehouse) and as the same features in Polars (peer): from the same
   gold rows, timed with and without reading them out of the warehouse.
3. The ML group: one Dagster run of every ml/* asset and check for the day, each step's wall
   time, next to the bronze -> gold run of the same day.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

from bench.support import session_environment

session_environment()

import dagster as dg  # noqa: E402
import duckdb  # noqa: E402
import polars as pl  # noqa: E402
from polars.testing import assert_frame_equal  # noqa: E402

from bench.batch import step_times  # noqa: E402
from bench.engines import timed  # noqa: E402
from bench.sim_lake import graph_part, lake_settings, simulate_into  # noqa: E402
from bench.support import start_broker  # noqa: E402
from pipeline_assets.definitions import defs  # noqa: E402
from resources import resources_for  # noqa: E402
from shoplake.core import clock  # noqa: E402
from shoplake.core.ml import features as F  # noqa: E402
from shoplake.core.warehouse import query  # noqa: E402
from shoplake.simulator import FaultRates, SimConfig  # noqa: E402

DAY = clock.today() - timedelta(days=2)
LAKE = ("bronze", "silver", "staging", "gold")


def polars_user_features(events: pl.DataFrame, sessions: pl.DataFrame, day: date) -> pl.DataFrame:
    """The user feature table in Polars, from the same gold rows the SQL reads (the peer)."""
    first = day - timedelta(days=max(F.ROLLING_DAYS) - 1)
    ev = events.with_columns(visitor_id=pl.coalesce("user_id", "anonymous_id"))
    window = ev.filter(pl.col("event_date").is_between(first, day))
    is_buy = pl.col("event_type") == "purchase"
    daily = window.group_by("visitor_id", "event_date").agg(
        n_events=pl.len(),
        n_purchases=is_buy.sum(),
        revenue=pl.col("order_total").filter(is_buy).sum(),
    )
    today = (
        window.filter(pl.col("event_date") == day)
        .sort("visitor_id", "event_at")
        .with_columns(
            gap=(pl.col("event_at") - pl.col("event_at").shift(1))
            .over("visitor_id")
            .dt.total_microseconds()
            / 1e6
        )
    )
    agg = today.group_by("visitor_id").agg(
        n_page_views=(pl.col("event_type") == "page_view").sum(),
        n_product_views=(pl.col("event_type") == "product_view").sum(),
        n_cart_adds=(pl.col("event_type") == "add_to_cart").sum(),
        n_checkouts=(pl.col("event_type") == "begin_checkout").sum(),
        median_gap_seconds=pl.col("gap").median().fill_null(F.NO_GAP_SECONDS),
        fast_event_share=(pl.col("gap").drop_nulls() < F.FAST_GAP_SECONDS).mean().fill_null(0.0),
        device_type=pl.col("device_type").drop_nulls().mode().sort().first().fill_null("unknown"),
        platform=pl.col("platform").mode().sort().first(),
        is_rule_bot=pl.col("is_bot").any(),
    )
    week = pl.col("event_date") > day - timedelta(days=7)
    rolled = daily.group_by("visitor_id").agg(
        n_events=pl.col("n_events").filter(pl.col("event_date") == day).sum(),
        n_purchases=pl.col("n_purchases").filter(pl.col("event_date") == day).sum(),
        revenue=pl.col("revenue").filter(pl.col("event_date") == day).sum(),
        n_events_7d=pl.col("n_events").filter(week).sum(),
        n_events_28d=pl.col("n_events").sum(),
        n_purchases_7d=pl.col("n_purchases").filter(week).sum(),
        n_purchases_28d=pl.col("n_purchases").sum(),
        revenue_7d=pl.col("revenue").filter(week).sum(),
        revenue_28d=pl.col("revenue").sum(),
        active_days_28d=pl.len(),
    )
    first_seen = (
        ev.filter(pl.col("event_date") <= day)
        .group_by("visitor_id")
        .agg(days_since_first_seen=(pl.lit(day) - pl.col("event_date").min()).dt.total_days())
    )
    sess = (
        sessions.with_columns(visitor_id=pl.coalesce("user_id", "anonymous_id"))
        .filter(pl.col("session_date").is_between(first, day))
        .group_by("visitor_id")
        .agg(
            n_sessions=(pl.col("session_date") == day).sum(),
            n_sessions_7d=(pl.col("session_date") > day - timedelta(days=7)).sum(),
            n_sessions_28d=pl.len(),
        )
    )
    out = (
        agg.join(rolled, on="visitor_id")
        .join(first_seen, on="visitor_id")
        .join(sess, on="visitor_id", how="left")
        .with_columns(pl.col("n_sessions", "n_sessions_7d", "n_sessions_28d").fill_null(0))
        .with_columns(feature_date=pl.lit(day))
        .sort("visitor_id")
    )
    return F.conform(out, F.USER_SCHEMA)


REPEAT = 5  # each engine's timing is the median of this many runs


def engines(warehouse: Path, day: date) -> None:
    def sql(q, params):
        return query(q, params, path=warehouse)

    duck_s, duck = timed(lambda: F.user_features(sql, day), REPEAT)
    first = day - timedelta(days=max(F.ROLLING_DAYS) - 1)
    cols = "user_id, anonymous_id, event_at, event_date, event_type, platform, device_type, order_total, is_bot"

    def read():
        con = duckdb.connect(str(warehouse), read_only=True)
        try:
            ev = con.sql(f"select {cols} from gold.fct_events where event_date <= '{day}'").pl()
            se = con.sql(
                "select user_id, anonymous_id, session_date from gold.fct_sessions "
                f"where session_date between '{first}' and '{day}'"
            ).pl()
        finally:
            con.close()
        return ev, se

    read_s, (events, sessions) = timed(read, REPEAT)
    pol_s, pol = timed(lambda: polars_user_features(events, sessions, day), REPEAT)
    try:  # gaps differ in the last bits: differences of float epochs in SQL, of microseconds in Polars
        assert_frame_equal(duck, pol, check_exact=False, abs_tol=1e-5)
        same, diff = True, " (floats to 10 µs)"
    except AssertionError as exc:
        same, diff = False, f": {str(exc).splitlines()[0]}"
    print(f"user features, {duck.height:,} visitors from {events.height:,} events:")
    print(f"    DuckDB SQL in the warehouse (the asset):   {duck_s:6.2f} s")
    print(f"    Polars, compute only (peer):               {pol_s:6.2f} s")
    print(f"    Polars, reading gold + compute (peer):     {read_s + pol_s:6.2f} s")
    print(f"    same table from both: {same}{diff}")
    prod_s, prod = timed(lambda: F.product_features(sql, day), REPEAT)
    print(f"product features, {prod.height:,} products: DuckDB SQL {prod_s:6.2f} s")


def build(tmp: Path, events: int) -> Path:
    broker = start_broker(tmp / "kafka")
    try:
        settings = lake_settings(tmp / "home", broker.bootstrap)
        users = max(1000, int(events / 2.95))
        t = time.perf_counter()
        report, _ = simulate_into(
            settings, SimConfig(start=DAY, days=1, users=users, faults=FaultRates())
        )
        print(f"simulated {report.records:,} events for {DAY} in {time.perf_counter() - t:.0f}s")
        resources = resources_for(settings)
        lake = graph_part(defs, LAKE)
        assert dg.materialize(
            lake, partition_key=str(DAY - timedelta(days=1)), resources=resources
        ).success
        instance = dg.DagsterInstance.ephemeral()
        t = time.perf_counter()
        run = dg.materialize(lake, partition_key=str(DAY), resources=resources, instance=instance)
        assert run.success
        print(f"bronze -> gold for {DAY}: {time.perf_counter() - t:.1f} s wall")
    finally:
        broker.stop()
    return tmp / "home"


def timed_run(parts: list, resources: dict) -> tuple[float, dg.ExecuteInProcessResult, dict]:
    instance = dg.DagsterInstance.ephemeral()
    t = time.perf_counter()
    run = dg.materialize(parts, partition_key=str(DAY), resources=resources, instance=instance)
    return time.perf_counter() - t, run, step_times(instance, run.run_id)


def ml_group(home: Path) -> None:
    """The ML group's run for the day, next to the silver -> gold run of the same day (peer; bronze
    is left out: its broker is gone)."""
    resources = resources_for(lake_settings(home, "127.0.0.1:1"))  # neither run reads Kafka
    peer_s, peer, _ = timed_run(graph_part(defs, ("silver", "staging", "gold")), resources)
    ml_s, run, steps = timed_run(graph_part(defs, ("ml",)), resources)
    print(f"silver -> gold for {DAY} (peer): {peer_s:7.1f} s wall, success={peer.success}")
    print(f"ML group for {DAY}:              {ml_s:7.1f} s wall, success={run.success}")
    print(f"the ML group adds {ml_s / peer_s:.0%} to the day's silver -> gold run")
    for k, v in sorted(steps.items(), key=lambda kv: -kv[1]):
        print(f"    {k:45s} {v:7.2f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--keep", type=Path, help="build the lake in DIR and keep it")
    ap.add_argument("--resume", type=Path, metavar="DIR", help="reuse DIR's lake")
    ap.add_argument("--engines-only", action="store_true", help="skip the ML group's run")
    args = ap.parse_args()
    if args.resume:
        home = args.resume / "home"
    else:
        root = args.keep or Path(tempfile.mkdtemp(prefix="shoplake-ml-day-"))
        root.mkdir(parents=True, exist_ok=True)
        home = build(root, args.events)
    engines(home / "warehouse.duckdb", DAY)
    if not args.engines_only:
        ml_group(home)


if __name__ == "__main__":
    main()
