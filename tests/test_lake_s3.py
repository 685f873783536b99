"""The batch lake on S3 (a real moto server): one simulated day through the collector and Kafka,
bronze -> silver -> dbt gold with the lake root at s3://<bucket>/lake, marts checked against an
independent DuckDB query over the s3 silver Parquet, and a re-run giving the same objects."""

from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime, timedelta

import dagster as dg
import duckdb
import pytest
import s3fs

from pipeline_assets.checks import defs as check_defs
from resources import resources_for
from shoplake.core.settings import get_settings
from shoplake.simulator import FaultRates, SimConfig, simulate
from shoplake.simulator.shopdb import ShopDB
from shoplake.simulator.sinks import HttpSink, MemorySink
from tests.conftest import E2E_D0, RunningCollector
from tests.test_lake_e2e import assets

pytestmark = pytest.mark.integration

# Not a day test_lake_e2e builds silver for (its D1, D2), and clean traffic (no dead letters),
# so the two tests can share shop.events in either order.
DAY = E2E_D0 + timedelta(days=3)
CONFIG = SimConfig(start=DAY, days=1, users=500, seed=33, faults=FaultRates.none())


@pytest.fixture(scope="module")
def s3_lake(
    collector: RunningCollector,
    kafka_bootstrap: str,
    s3_endpoint: str,
    tmp_path_factory: pytest.TempPathFactory,
):
    bucket = "shoplake-e2e"
    fs = s3fs.S3FileSystem(endpoint_url=s3_endpoint, skip_instance_cache=True)
    fs.mkdir(bucket)
    home = tmp_path_factory.mktemp("s3home")
    settings = get_settings(
        {
            "SHOPLAKE_HOME": str(home),
            "SHOPLAKE_KAFKA_BOOTSTRAP": kafka_bootstrap,
            "SHOPLAKE_PII_KEY": "test-pii-key",
            "SHOPLAKE_ENV": "ci",
            "SHOPLAKE_LAKE_ROOT": f"s3://{bucket}/lake",
            "SHOPLAKE_S3_ENDPOINT_URL": s3_endpoint,
        }
    )
    simulate(
        CONFIG,
        HttpSink(collector.url, "test-replay-key"),
        ShopDB(None, settings.shopdb_sqlite_path),
        show_progress=False,
    )
    resources = resources_for(settings)
    everything = [*assets(("bronze", "silver", "staging", "gold")), *check_defs.asset_checks]
    saved = dict(os.environ)  # the dbt asset exports the warehouse's and the lake's variables
    try:
        # Bronze from the first partition (the shop database's initial load) to the day after
        # DAY (events that arrive after midnight), as a backfill would.
        for k in range((DAY - E2E_D0).days + 2):
            day = E2E_D0 + timedelta(days=k)
            assert dg.materialize(
                assets(("bronze",)), partition_key=day.isoformat(), resources=resources
            ).success
        run = dg.materialize(everything, partition_key=DAY.isoformat(), resources=resources)
        assert run.success
        yield {
            "home": home,
            "fs": fs,
            "bucket": bucket,
            "run": run,
            "resources": resources,
            "everything": everything,
            "endpoint": s3_endpoint,
        }
    finally:
        os.environ.clear()
        os.environ.update(saved)


def objects_of_day(lake: dict) -> dict[str, str]:
    """sha256 of every object of the day's partitions in the bucket."""
    fs = lake["fs"]
    keys = [k for k in fs.find(f"{lake['bucket']}/lake") if f"/date={DAY}/" in k]
    return {k: hashlib.sha256(fs.cat_file(k)).hexdigest() for k in keys}


def test_every_partition_lands_in_the_bucket_with_its_manifest(s3_lake):
    assert not (s3_lake["home"] / "lake" / "bronze").exists()  # nothing went to local disk
    keys = set(objects_of_day(s3_lake))
    prefix = f"{s3_lake['bucket']}/lake"
    tables = {
        "bronze/events",
        "bronze/dlq_events",
        "bronze/shop_orders",
        "silver/events",
        "silver/events_quarantine",
        "silver/sessions",
        "silver/orders",
        "silver/products",
    }
    for table in tables:
        folder = f"{prefix}/{table}/date={DAY}"
        assert {f"{folder}/part-0.parquet", f"{folder}/_manifest.json"} <= keys, table
    assert all(k.rsplit("/", 1)[1] in ("part-0.parquet", "_manifest.json") for k in keys)
    manifest = json.loads(
        s3_lake["fs"].cat_file(f"{prefix}/silver/events/date={DAY}/_manifest.json")
    )
    assert manifest["silver_rows"] > 300
    assert manifest["input_rows"] == (
        manifest["silver_rows"] + manifest["quarantined"] + manifest["duplicates_removed"]
    )


def test_checks_read_the_s3_lake_and_pass(s3_lake):
    evaluations = s3_lake["run"].get_asset_check_evaluations()
    names = {e.check_name for e in evaluations}
    assert {"matches_manifest", "pandera_contract", "bronze_rows_reconcile"} <= names
    assert [(e.asset_key.to_user_string(), e.check_name) for e in evaluations if not e.passed] == []


def s3_duckdb(lake: dict) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection of its own that reads s3:// through fsspec (not the project's code)."""
    con = duckdb.connect()
    con.register_filesystem(
        s3fs.S3FileSystem(endpoint_url=lake["endpoint"], skip_instance_cache=True)
    )
    return con


def test_marts_agree_with_independent_sql_over_s3_silver(s3_lake):
    con = s3_duckdb(s3_lake)
    silver = f"s3://{s3_lake['bucket']}/lake/silver"
    ev = f"read_parquet('{silver}/events/*/*.parquet')"
    se = f"read_parquet('{silver}/sessions/*/*.parquet')"
    revenue, orders = con.sql(
        f"select sum(total), count(distinct order_id) from {ev} where event_type = 'purchase' and not is_bot and event_date = $day",
        params={"day": DAY},
    ).fetchall()[0]
    sessions, dav = con.sql(
        f"select count(*), count(distinct anonymous_id) from {se} where not is_bot and session_date = $day",
        params={"day": DAY},
    ).fetchall()[0]
    assert orders > 0 and sessions > 100
    wh = duckdb.connect(str(s3_lake["home"] / "warehouse.duckdb"), read_only=True)
    try:
        kpi = wh.sql(
            "select revenue, n_orders, n_sessions, daily_active_visitors from gold.mart_daily_kpis where kpi_date = $day",
            params={"day": DAY},
        ).fetchall()
    finally:
        wh.close()
    assert kpi == [pytest.approx((revenue, orders, sessions, dav))]


def test_silver_holds_every_event_the_simulator_sent_for_the_day(s3_lake):
    sink = MemorySink()
    simulate(CONFIG, sink, None, show_progress=False)
    expected = set()
    for rec in sink.records:
        doc = json.loads(rec.payload)
        t = {k: datetime.fromisoformat(doc[k]) for k in ("received_at", "sent_at", "occurred_at")}
        if (t["received_at"] - (t["sent_at"] - t["occurred_at"])).date() == DAY:
            expected.add(doc["event_id"])  # by the event day silver computes (clock-skew corrected)
    got = (
        s3_duckdb(s3_lake)
        .sql(
            f"select event_id from read_parquet('s3://{s3_lake['bucket']}/lake/silver/events/date={DAY}/*.parquet')"
        )
        .fetchall()
    )
    # A superset: test_lake_e2e's traffic may also reach this day when it ran first.
    assert len(expected) > 300 and expected <= {r[0] for r in got}


def test_rematerializing_the_day_rewrites_the_same_objects(s3_lake):
    before = objects_of_day(s3_lake)
    assert len(before) >= 20
    assert dg.materialize(
        s3_lake["everything"], partition_key=DAY.isoformat(), resources=s3_lake["resources"]
    ).success
    assert objects_of_day(s3_lake) == before
