"""speed_layer_reconciliation on a real DuckDB warehouse and a real Parquet lake: it compares like
with like (the Kafka arrival days silver read), fails with the evidence when the layers disagree
on that input, and warns with the fix when one side has nothing."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest

from pipeline_assets.speed.assets import reconcile_day
from resources import LakeResource, WarehouseResource
from shoplake.core.lake.io import write_partition
from shoplake.core.speed.rows import DailyTotals
from shoplake.core.speed.tables import ParquetWriter

D = date(2026, 12, 31)  # the year's last day: late events arrive in the next year
NEXT, AFTER = D + timedelta(days=1), D + timedelta(days=2)


@pytest.fixture
def lake_and_warehouse(tmp_path: Path):
    lake = LakeResource(root=str(tmp_path / "lake"), speed_root=str(tmp_path / "lake"))
    warehouse_path = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(warehouse_path)) as con:
        con.sql("create schema gold")
        # 1,000 events of D in gold, 10 purchases of 10.0, one bot purchase that gold excludes
        con.sql(f"""
            create table gold.fct_events as
            select date '{D}' as event_date,
                   case when i < 11 then 'purchase' else 'page_view' end as event_type,
                   case when i < 11 then 10.0 end as order_total,
                   i = 0 as is_bot
            from range(1000) t(i)
        """)
    return lake, WarehouseResource(path=str(warehouse_path))


def silver_read(lake: LakeResource, arrivals: list[date]) -> None:
    """silver/events of D as built from these Kafka arrival days (its manifest says so)."""
    manifest = {"date": D.isoformat(), "kafka_arrival_days": [a.isoformat() for a in arrivals]}
    write_partition(lake.table_dir("silver", "events"), D, pl.DataFrame({"x": [1]}), manifest)


def speed(lake: LakeResource, arrival: date, events: int, purchases: int, revenue: float) -> None:
    row = DailyTotals(
        event_date=D,
        arrival_date=arrival,
        events=events,
        bot_events=1,
        purchases=purchases,
        orders=purchases,
        revenue=revenue,
        bot_revenue=10.0,
        unique_visitors=events,
    )
    ParquetWriter(Path(lake.speed_lake_root)).upsert("daily_totals", [row])


def test_events_that_arrived_after_silver_read_do_not_count(lake_and_warehouse):
    """Guards the like-for-like cut: 40 late events (4 %) arrived the day after silver's last
    arrival day; comparing every arrival day would fail, the same input agrees."""
    lake, warehouse = lake_and_warehouse
    silver_read(lake, [D, NEXT])
    speed(lake, D, 990, 11, 110.0)
    speed(lake, NEXT, 10, 0, 10.0)  # revenue = 110 + 10 - 2 * bot 10 = 100, as gold
    speed(lake, AFTER, 40, 0, 0.0)
    result = reconcile_day(lake, warehouse, D)
    assert result.passed, result.description
    assert result.metadata["events_speed"].value == result.metadata["events_gold"].value == 1000
    assert result.metadata["arrival_days"].value == f"{D}, {NEXT}"


def test_a_disagreement_on_the_same_input_fails_with_the_evidence(lake_and_warehouse):
    lake, warehouse = lake_and_warehouse
    silver_read(lake, [D, NEXT])
    speed(lake, D, 960, 11, 110.0)  # 40 events the batch layer has and the stream does not
    speed(lake, NEXT, 10, 0, 10.0)
    result = reconcile_day(lake, warehouse, D)
    assert not result.passed and result.severity == dg.AssetCheckSeverity.ERROR
    assert result.metadata["events_rel_diff"].value == pytest.approx(30 / 1000)
    assert result.metadata["purchases_rel_diff"].value == 0
    assert "3.000%" in (result.description or "")


def test_no_speed_totals_for_the_days_silver_read_warns_with_the_fix(lake_and_warehouse):
    lake, warehouse = lake_and_warehouse
    silver_read(lake, [D, NEXT])
    speed(lake, AFTER, 40, 0, 0.0)  # the stream saw only a later arrival day
    result = reconcile_day(lake, warehouse, D)
    assert not result.passed and result.severity == dg.AssetCheckSeverity.WARN
    assert "shoplake stream" in (result.description or "")


def test_a_day_silver_has_not_built_warns_with_the_fix(lake_and_warehouse):
    lake, warehouse = lake_and_warehouse
    speed(lake, D, 1000, 11, 110.0)
    result = reconcile_day(lake, warehouse, D)
    assert not result.passed and result.severity == dg.AssetCheckSeverity.WARN
    assert f"shoplake materialize {D}" in (result.description or "")


def test_a_lake_the_speed_layer_never_wrote_to_has_nothing_to_reconcile(lake_and_warehouse):
    """A shop without the stream (a batch-only or import-only lake) does not get a warning on
    every day; a stream that ran and missed the day does (the test above)."""
    lake, warehouse = lake_and_warehouse
    silver_read(lake, [D, NEXT])
    result = reconcile_day(lake, warehouse, D)
    assert result.passed and "never run" in result.metadata["speed_layer"].value
    assert "shoplake stream" in (result.description or "")
