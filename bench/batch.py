"""Batch layer cost for one daily partition, vs one hand-written DuckDB query, same input, same run.

    .venv/bin/python -m bench.batch [--events 1000000] [--cold]
    .venv/bin/python -m bench.batch --resume DIR [--silver-only]   # again on DIR's lake

1. Simulates one day (faults on) straight into a throw-away Kafka broker (through the ingest path).
2. Materializes bronze -> silver -> gold for that day with Dagster (in process), timing each step.
3. Peer: one DuckDB query over the same bronze Parquet that decodes the JSON, deduplicates by
   event_id, sessionizes (30-minute inactivity) and computes the daily metrics of mart_daily_kpis.
4. Dagster overhead per asset: the step's wall time minus the same plain function run directly.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from shoplake.core import clock

DAY = clock.today() - timedelta(days=2)
os.environ["SHOPLAKE_PARTITIONS_START"] = (DAY - timedelta(days=1)).isoformat()

import dagster as dg  # noqa: E402
import duckdb  # noqa: E402
import polars as pl  # noqa: E402

from bench.support import start_broker  # noqa: E402
from pipeline_assets.bronze.kafka_day import extract_day  # noqa: E402
from pipeline_assets.definitions import defs  # noqa: E402
from pipeline_assets.silver.assets import bronze_reader  # noqa: E402
from pipeline_assets.silver.events import build_silver_events_from  # noqa: E402
from pipeline_assets.silver.sessions import COLUMNS as SESSION_COLUMNS  # noqa: E402
from pipeline_assets.silver.sessions import sessionize  # noqa: E402
from resources import resources_for  # noqa: E402
from shoplake.core.ingest import Ingestor  # noqa: E402
from shoplake.core.lake.io import read_manifest, read_partitions, write_partition  # noqa: E402
from shoplake.core.settings import Settings, get_settings  # noqa: E402
from shoplake.simulator import FaultRates, SimConfig, simulate  # noqa: E402
from shoplake.simulator.shopdb import ShopDB  # noqa: E402
from shoplake.simulator.sinks import KafkaSink  # noqa: E402

PEER_SQL = """
with raw as (
    select json_extract_string(value, '$.event_id') as event_id,
           json_extract_string(value, '$.event_type') as event_type,
           json_extract_string(value, '$.anonymous_id') as anonymous_id,
           cast(json_extract(value, '$.total') as double) as total,
           cast(json_extract_string(value, '$.received_at') as timestamptz)
             - (cast(json_extract_string(value, '$.sent_at') as timestamptz)
                - cast(json_extract_string(value, '$.occurred_at') as timestamptz)) as event_at,
           kafka_timestamp, kafka_partition, kafka_offset
    from read_parquet('{bronze}')
),
dedup as (
    select * from raw
    qualify row_number() over (partition by event_id order by kafka_timestamp, kafka_partition, kafka_offset) = 1
),
day as (select * from dedup where cast(event_at as date) = '{day}'),
gaps as (
    select *, case when lag(event_at) over (partition by anonymous_id order by event_at, event_id) is null
                     or event_at - lag(event_at) over (partition by anonymous_id order by event_at, event_id) > interval 30 minute
                   then 1 else 0 end as new_session
    from day
),
numbered as (select *, sum(new_session) over (partition by anonymous_id order by event_at, event_id) as session_no from gaps),
sessions as (
    select anonymous_id, session_no, count(*) as n_events,
           count(*) filter (where event_type = 'purchase') as n_purchases
    from numbered group by 1, 2
)
select
    (select count(distinct anonymous_id) from day) as daily_active_visitors,
    (select count(*) from sessions) as n_sessions,
    (select avg(case when n_events = 1 then 1.0 else 0.0 end) from sessions) as bounce_rate,
    (select avg(case when n_purchases > 0 then 1.0 else 0.0 end) from sessions) as conversion_rate,
    (select sum(total) from day where event_type = 'purchase') as revenue
"""


def step_times(instance: dg.DagsterInstance, run_id: str) -> dict[str, float]:
    """Wall time of each step of a run, from the instance's step statistics."""
    return {
        s.step_key: s.end_time - s.start_time
        for s in instance.get_run_step_stats(run_id)
        if s.end_time
    }


def dbt_elapsed(settings: Settings, run_id: str) -> float | None:
    """dbt's own elapsed time for the run's dbt invocation (its target dir in SHOPLAKE_HOME/dbt)."""
    target = settings.dbt_state_dir
    found = sorted(target.glob(f"shoplake_dbt_models-{run_id[:7]}-*/run_results.json"))
    return json.loads(found[-1].read_text())["elapsed_time"] if found else None


def bare_silver_events(lake: Path, scratch: Path) -> float:
    """The silver/events asset's body without Dagster: same reads, transform and writes."""
    t = time.perf_counter()
    read = bronze_reader([lake / "bronze/events"], DAY)
    with build_silver_events_from(read, DAY, log=lambda m: print("   ", m, flush=True)) as silver:
        write_partition(scratch / "silver", DAY, silver.parts, silver.stats)
        write_partition(scratch / "quarantine", DAY, silver.quarantine, silver.stats)
    return time.perf_counter() - t


def peer_query(lake: Path) -> tuple[tuple, float]:
    con = duckdb.connect()
    t = time.perf_counter()
    bronze_glob = f"{lake}/bronze/events/date=*/part-0.parquet"
    row = con.sql(PEER_SQL.format(bronze=bronze_glob, day=DAY.isoformat())).fetchall()[0]
    return row, time.perf_counter() - t


def resume(tmp: Path, silver_only: bool = False) -> None:
    """silver -> gold again on an earlier run's lake (e.g. after that run was stopped)."""
    settings = get_settings(
        {"SHOPLAKE_HOME": str(tmp / "home"), "SHOPLAKE_KAFKA_BOOTSTRAP": "127.0.0.1:9"}
    )
    rows = (read_manifest(settings.home / "lake/bronze/events", DAY) or {}).get("rows")
    print(f"resuming {tmp}: bronze/events {DAY} holds {rows:,} rows")
    if silver_only:
        with tempfile.TemporaryDirectory(prefix="shoplake-bench-") as scratch:
            seconds = bare_silver_events(settings.home / "lake", Path(scratch))
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
        print(
            f"silver/events body (read, transform, write): {seconds:.1f} s, peak RSS {peak:.1f} GB"
        )
        return
    lake_assets = [
        a
        for a in defs.assets
        if isinstance(a, dg.AssetsDefinition)
        and a.partitions_def is not None
        and not any(k.path[0] == "bronze" for k in a.keys)
    ]
    instance = dg.DagsterInstance.ephemeral()
    t = time.perf_counter()
    result = dg.materialize(
        lake_assets,
        partition_key=DAY.isoformat(),
        resources=resources_for(settings),
        instance=instance,
    )
    total = time.perf_counter() - t
    assert result.success
    steps = step_times(instance, result.run_id)
    peer, peer_s = peer_query(settings.home / "lake")
    for k, v in sorted(steps.items(), key=lambda kv: -kv[1])[:6]:
        print(f"    {k:40s} {v:7.2f} s")
    dbt_inside = dbt_elapsed(settings, result.run_id)
    print(f"silver + gold steps, Dagster in process:           {total:8.1f} s wall")
    if dbt_inside is not None:
        print(f"    of which dbt's own run (run_results.json):     {dbt_inside:8.1f} s")
    print(f"peer: one DuckDB query from the same bronze:       {peer_s:8.1f} s")
    print(f"ratio pipeline (silver+gold) / peer:               {total / peer_s:8.1f} x")
    print(f"peer says DAV={peer[0]} sessions={peer[1]} revenue={peer[4]:.2f}")
    bare = bare_silver_events(settings.home / "lake", tmp / "bare")
    print(
        f"Dagster overhead silver_events {steps.get('silver_events', 0) - bare:6.2f} s (step wall minus bare body)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--events", type=int, default=1_000_000, help="approximate events in the day")
    ap.add_argument(
        "--cold",
        action="store_true",
        help="no previous run: dbt parses the whole project, as on a fresh checkout",
    )
    ap.add_argument(
        "--resume",
        type=Path,
        metavar="DIR",
        help="the folder of an earlier run whose bronze is materialized: time silver -> gold "
        "again without simulating (its broker is gone, so bronze is not re-run)",
    )
    ap.add_argument(
        "--silver-only",
        action="store_true",
        help="with --resume: time the silver/events body alone, and its peak memory",
    )
    args = ap.parse_args()
    if args.resume:
        return resume(args.resume, args.silver_only)
    tmp = Path(tempfile.mkdtemp(prefix="shoplake-batch-"))
    broker = start_broker(tmp / "kafka")
    try:
        settings = get_settings(
            {"SHOPLAKE_HOME": str(tmp / "home"), "SHOPLAKE_KAFKA_BOOTSTRAP": broker.bootstrap}
        )
        users = max(1000, int(args.events / 2.95))  # measured: 3M users gave 8.9M records
        t = time.perf_counter()
        sink = KafkaSink(Ingestor.from_settings(settings), broker.bootstrap)
        report = simulate(
            SimConfig(start=DAY, days=1, users=users, faults=FaultRates()),
            sink,
            ShopDB(None, settings.shopdb_sqlite_path),
            show_progress=False,
        )
        print(
            f"simulated {report.records:,} events for {DAY} into Kafka in {time.perf_counter() - t:.0f}s"
        )

        resources = resources_for(settings)
        lake_assets = [
            a
            for a in defs.assets
            if isinstance(a, dg.AssetsDefinition) and a.partitions_def is not None
        ]
        # The day before, as the daily schedule would have run it: bronze for the arrival day that
        # can hold late events of DAY, and (unless --cold) the whole graph, so that dbt starts from
        # the previous run's parse state as it does in a deployment, not from a fresh checkout.
        warm = [
            a
            for a in lake_assets
            if args.cold is False or any(k.path[0] == "bronze" for k in a.keys)
        ]
        first = dg.materialize(
            warm, partition_key=(DAY - timedelta(days=1)).isoformat(), resources=resources
        )
        assert first.success
        t = time.perf_counter()
        instance = dg.DagsterInstance.ephemeral()
        result = dg.materialize(
            lake_assets, partition_key=DAY.isoformat(), resources=resources, instance=instance
        )
        total = time.perf_counter() - t
        assert result.success
        steps = step_times(instance, result.run_id)

        lake = settings.home / "lake"
        peer, peer_s = peer_query(lake)
        wh = duckdb.connect(str(settings.home / "warehouse.duckdb"), read_only=True)
        kpi = wh.sql(
            f"select daily_active_visitors, n_sessions, revenue from gold.mart_daily_kpis where kpi_date = '{DAY}'"
        ).fetchall()[0]
        wh.close()

        # The same bodies (same reads and writes), without Dagster, for the overhead figure.
        scratch = tmp / "bare"
        t = time.perf_counter()
        x = extract_day(broker.bootstrap, "shop.events", DAY)
        write_partition(scratch / "bronze", DAY, x.frame, x.manifest)
        bare_bronze = time.perf_counter() - t
        del x  # a 10M-event day is several GB
        t = time.perf_counter()
        bare_silver = bare_silver_events(lake, scratch)
        t = time.perf_counter()
        around = read_partitions(
            lake / "silver/events",
            [DAY - timedelta(days=1), DAY, DAY + timedelta(days=1)],
            SESSION_COLUMNS,
        )
        write_partition(
            scratch / "sessions",
            DAY,
            sessionize(pl.concat(around, how="diagonal_relaxed"), DAY),
            {},
        )
        bare_sessions = time.perf_counter() - t

        silver_gold = sum(v for k, v in steps.items() if not k.startswith("bronze"))
        print(f"bronze -> gold, one partition, Dagster in process: {total:8.1f} s wall")
        for k, v in sorted(steps.items(), key=lambda kv: -kv[1])[:8]:
            print(f"    {k:40s} {v:7.2f} s")
        print(f"silver + gold steps (same input as the peer):      {silver_gold:8.1f} s")
        dbt_inside = dbt_elapsed(settings, result.run_id)
        if dbt_inside is not None and "shoplake_dbt_models" in steps:
            print(
                f"    of which dbt's own run (run_results.json):     {dbt_inside:8.1f} s; around it "
                f"(dbt start-up, parse, Dagster events): {steps['shoplake_dbt_models'] - dbt_inside:.1f} s"
            )
        print(f"peer: one DuckDB query from the same bronze:       {peer_s:8.1f} s")
        print(f"ratio pipeline (silver+gold) / peer:               {silver_gold / peer_s:8.1f} x")
        print(f"ratio pipeline (bronze->gold, all steps) / peer:   {total / peer_s:8.1f} x")
        print(
            f"peer says DAV={peer[0]} sessions={peer[1]} revenue={peer[4]:.2f}; mart says DAV={kpi[0]} sessions={kpi[1]} revenue={kpi[2]:.2f}"
        )
        print(
            "(the mart excludes bot sessions and keeps sessions that start on the day; the peer counts all)"
        )
        over = {
            "bronze__events": steps.get("bronze__events", 0) - bare_bronze,
            "silver_events": steps.get("silver_events", 0) - bare_silver,
            "silver__sessions": steps.get("silver__sessions", 0) - bare_sessions,
        }
        for k, v in over.items():
            print(f"Dagster overhead {k:20s} {v:6.2f} s (step wall minus bare body)")
    finally:
        broker.stop()


if __name__ == "__main__":
    main()
