"""Real public samples (../shared/datasets): REES46 clickstream and Olist orders, imported and
built through the whole graph by the dagster CLI, checked against reference SQL on the raw CSVs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from shoplake.core.ingest import Ingestor
from shoplake.core.pii import Pseudonymizer
from shoplake.importers.land import import_file
from shoplake.simulator.shopdb import ShopDB
from tests.conftest import CI, DATASETS

pytestmark = pytest.mark.integration
REES46 = DATASETS / "rees46_ecommerce_multicategory_2019oct_head"
OLIST = DATASETS / "olist_brazilian_ecommerce_sample3000"


@pytest.fixture(scope="module")
def home(tmp_path_factory, kafka_bootstrap):
    if not REES46.exists() or not OLIST.exists():
        if CI:
            pytest.fail(f"the shared datasets are missing at {DATASETS} (set SHOPLAKE_DATASETS)")
        pytest.skip(f"no datasets at {DATASETS}; set SHOPLAKE_DATASETS to your copy")
    home = tmp_path_factory.mktemp("realdata")
    ShopDB(None, home / "shopdb.sqlite").close()  # an order database with no orders of its own
    ingestor = Ingestor(Pseudonymizer(b"test-pii-key", "k1"))
    reports = {
        m: import_file(m, src, home / "lake", ingestor)
        for m, src in (("rees46", REES46), ("olist", OLIST))
    }
    return home, reports, kafka_bootstrap


def materialize(home: Path, bootstrap: str, day: str) -> None:
    env = {
        **os.environ,
        "SHOPLAKE_HOME": str(home),
        "SHOPLAKE_KAFKA_BOOTSTRAP": bootstrap,
        "SHOPLAKE_PARTITIONS_START": "2016-09-01",
        "SHOPLAKE_PII_KEY": "test-pii-key",
        "DAGSTER_HOME": str(home / "dagster"),
    }
    (home / "dagster").mkdir(exist_ok=True)
    dagster = Path(sys.executable).with_name("dagster")
    proc = subprocess.run(
        [
            str(dagster),
            "asset",
            "materialize",
            "-m",
            "pipeline_assets.definitions",
            "--select",
            "*",
            "--partition",
            day,
            "--config-json",
            '{"execution": {"config": {"in_process": {}}}}',
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]


def test_rees46_clickstream(home):
    home, reports, bootstrap = home
    assert reports["rees46"].landed == 17434 and reports["rees46"].days == {"2019-10-01": 17434}
    materialize(home, bootstrap, "2019-10-01")
    csv = f"read_csv('{REES46}/2019-Oct_head.csv', timestampformat='%Y-%m-%d %H:%M:%S UTC')"
    purchases, revenue = duckdb.sql(
        f"select count(*), sum(price) from {csv} where event_type = 'purchase'"
    ).fetchall()[0]
    # 30-minute inactivity sessions per user, written independently of the pipeline
    sessions = duckdb.sql(f"""
        with e as (select user_id, cast(event_time as timestamp) as t from {csv}),
        g as (select user_id, t, t - lag(t) over (partition by user_id order by t) as gap from e)
        select count(*) filter (where gap is null or gap > interval 30 minute) from g
    """).fetchall()[0][0]
    wh = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    n_sessions, n_purchases, rev = wh.sql(
        "select count(*), sum(n_purchases), sum(revenue) from gold.fct_sessions where session_date = '2019-10-01'"
    ).fetchall()[0]
    assert (n_sessions, n_purchases) == (sessions, purchases)
    assert rev == pytest.approx(revenue)
    # The KPIs exclude bots: visitors with a run of 5+ events less than 100 ms apart, written
    # here independently of silver, over the raw CSV.
    bots_sql = f"""
        with e as (select user_id, cast(event_time as timestamp) as t from {csv}),
        g as (select user_id, t, t - lag(t) over (partition by user_id order by t) as gap from e),
        r as (select user_id, sum(case when gap > interval 0 second
                                        and gap < interval 100 millisecond then 0 else 1 end)
                  over (partition by user_id order by t rows unbounded preceding) as run from g)
        select distinct user_id from r group by user_id, run having count(*) >= 5
    """
    bot_users = {row[0] for row in duckdb.sql(bots_sql).fetchall()}
    human_purchases, human_revenue = duckdb.sql(
        f"select count(*), coalesce(sum(price), 0) from {csv} where event_type = 'purchase' "
        f"and user_id not in (select user_id from ({bots_sql}))"
    ).fetchall()[0]
    gold_bots = wh.sql(
        "select count(distinct anonymous_id) from gold.fct_events where is_bot and event_date = '2019-10-01'"
    ).fetchall()[0][0]
    assert gold_bots == len(bot_users)
    kpi = wh.sql(
        "select n_orders, revenue from gold.mart_daily_kpis where kpi_date = '2019-10-01'"
    ).fetchall()[0]
    assert kpi == (human_purchases, pytest.approx(human_revenue))


def test_olist(home):
    home, reports, bootstrap = home
    report = reports["olist"]
    assert report.rejected == {
        "invalid_value": 8
    }  # orders without any item: kept in import_rejects
    items = f"read_csv('{OLIST}/olist_order_items_dataset.csv')"
    orders = f"read_csv('{OLIST}/olist_orders_dataset.csv')"
    busiest = (
        duckdb.sql(
            f"select cast(cast(order_purchase_timestamp as timestamp) as date) as d, count(*) as n from {orders} "
            "where order_status not in ('created', 'unavailable') group by 1 order by n desc, d limit 1"
        )
        .fetchall()[0][0]
        .isoformat()
    )
    materialize(home, bootstrap, busiest)
    ref_orders, ref_revenue = duckdb.sql(f"""
        select count(distinct o.order_id), sum(i.price)
        from {orders} o join {items} i using (order_id)
        where o.order_status not in ('created', 'unavailable')
          and cast(cast(o.order_purchase_timestamp as timestamp) as date) = '{busiest}'
    """).fetchall()[0]
    wh = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    n_orders, revenue = wh.sql(
        f"select n_orders, revenue from gold.mart_daily_kpis where kpi_date = '{busiest}'"
    ).fetchall()[0]
    assert n_orders == ref_orders and revenue == pytest.approx(ref_revenue, abs=0.01)
    units = wh.sql(
        f"select sum(units_sold) from gold.mart_product_performance where performance_date = '{busiest}'"
    ).fetchall()[0][0]
    assert (
        units
        == duckdb.sql(f"""
        select count(*) from {orders} o join {items} i using (order_id)
        where o.order_status not in ('created', 'unavailable') and cast(cast(o.order_purchase_timestamp as timestamp) as date) = '{busiest}'
    """).fetchall()[0][0]
    )
