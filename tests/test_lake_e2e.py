"""End to end: two simulated days through the collector into Kafka, the whole asset graph for
both partitions, marts checked against independent SQL over silver and against the simulator."""

from __future__ import annotations

import hashlib
import json
import os
from datetime import date, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from pipeline_assets.definitions import defs
from resources import resources_for
from shoplake.core.settings import REPO_ROOT, get_settings
from shoplake.simulator import FaultRates, SimConfig, simulate
from shoplake.simulator.shopdb import ShopDB
from shoplake.simulator.sinks import HttpSink, MemorySink
from tests.conftest import E2E_D0, RunningCollector

pytestmark = pytest.mark.integration

D0 = E2E_D0
D1, D2 = D0 + timedelta(days=1), D0 + timedelta(days=2)
RATES = FaultRates(duplicate=0.01, late=0.01, future=0.002, malformed_json=0.002, wrong_type=0.002)
CONFIG = SimConfig(start=D1, days=2, users=1500, seed=21, faults=RATES)


def assets(prefixes: tuple[str, ...]) -> list[dg.AssetsDefinition]:
    out = []
    for a in defs.assets:
        partitioned = isinstance(a, dg.AssetsDefinition) and a.partitions_def is not None
        if partitioned and any(k.path[0] in prefixes for k in a.keys):
            out.append(a)
    return out


@pytest.fixture(scope="module")
def lake(
    collector: RunningCollector, kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
):
    home = tmp_path_factory.mktemp("lakehome")
    settings = get_settings(
        {
            "SHOPLAKE_HOME": str(home),
            "SHOPLAKE_KAFKA_BOOTSTRAP": kafka_bootstrap,
            "SHOPLAKE_PII_KEY": "test-pii-key",
            "SHOPLAKE_ENV": "ci",
        }
    )
    report = simulate(
        CONFIG,
        HttpSink(collector.url, "test-replay-key"),
        ShopDB(None, settings.shopdb_sqlite_path),
        show_progress=False,
    )
    resources = resources_for(settings)
    everything = assets(("bronze", "silver", "staging", "gold"))
    bronze_only = assets(("bronze",))
    runs = {}
    # Every arrival day that can hold events of D1 and D2 lands first, as in a backfill; silver
    # of a day re-reads the arrival days after it (late events).
    for k in range(5):
        day = (D0 + timedelta(days=k)).isoformat()
        assert dg.materialize(bronze_only, partition_key=day, resources=resources).success
    for day in (D1, D2):
        runs[day] = dg.materialize(everything, partition_key=day.isoformat(), resources=resources)
        assert runs[day].success
    return {
        "home": home,
        "report": report,
        "runs": runs,
        "resources": resources,
        "everything": everything,
    }


def sim_truth() -> list[dict]:
    """What the simulator sent (same seed), as documents with a Python-computed event day."""
    sink = MemorySink()
    simulate(CONFIG, sink, None, show_progress=False)
    docs = []
    for rec in sink.records:
        if rec.valid:
            doc = json.loads(rec.payload)
            t = {
                k: datetime.fromisoformat(doc[k].replace("Z", "+00:00"))
                for k in ("received_at", "sent_at", "occurred_at")
            }
            doc["_event_day"] = (t["received_at"] - (t["sent_at"] - t["occurred_at"])).date()
            doc["_fault"] = rec.fault
            docs.append(doc)
    return docs


def test_every_check_passes_and_the_graph_is_whole(lake):
    for day, run in lake["runs"].items():
        failed = [
            (e.asset_key.to_user_string(), e.check_name)
            for e in run.get_asset_check_evaluations()
            if not e.passed
        ]
        assert failed == [], day
        assert len(run.get_asset_check_evaluations()) > 60


def test_gold_materializations_carry_row_counts_and_column_schemas(lake):
    """dagster-dbt's fetch_row_counts/fetch_column_metadata, read back from the warehouse."""
    warehouse = lake["resources"]["warehouse"]
    run = lake["runs"][D2]
    gold = {
        m.asset_key.path[1]: m.metadata
        for m in run.get_asset_materialization_events()
        for m in [m.event_specific_data.materialization]
        if m.asset_key.path[0] == "gold"
    }
    assert {"fct_events", "mart_daily_kpis", "fct_sessions"} <= set(gold)
    for name in ("fct_events", "mart_daily_kpis", "fct_sessions"):
        rows = warehouse.query(f"select count(*) as n from gold.{name}")["n"][0]
        assert gold[name]["dagster/row_count"].value == rows, name
        columns = [c.name for c in gold[name]["dagster/column_schema"].schema.columns]
        described = warehouse.query(
            "select column_name from information_schema.columns "
            f"where table_schema = 'gold' and table_name = '{name}' order by ordinal_position"
        )["column_name"].to_list()
        assert columns == described, name


def test_faults_are_accounted_for_exactly(lake):
    lake_root = lake["home"] / "lake"
    report = lake["report"]
    manifests = [
        json.loads((lake_root / "silver/events" / f"date={d}" / "_manifest.json").read_text())
        for d in (D1, D2)
    ]
    assert sum(m["duplicates_removed"] for m in manifests) == report.faults["duplicate"]
    quarantine = duckdb.sql(
        f"select reason, count(*) from read_parquet('{lake_root}/silver/events_quarantine/*/*.parquet') group by 1"
    ).fetchall()
    assert dict(quarantine) == {"future_event": report.faults["future"]}
    for m in manifests:  # no row lost
        assert m["input_rows"] == m["silver_rows"] + m["quarantined"] + m["duplicates_removed"]
    dlq_reasons = duckdb.sql(
        f"select reason, count(*) from read_parquet('{lake_root}/bronze/dlq_events/*/*.parquet') group by 1"
    ).fetchall()
    assert dict(dlq_reasons) == dict(
        report.expected_reasons
    )  # replayed rejects land on their arrival day


def test_silver_matches_what_the_simulator_sent(lake):
    lake_root = lake["home"] / "lake"
    truth = sim_truth()
    for day in (D1, D2):
        expected = {
            d["event_id"] for d in truth if d["_event_day"] == day and d["_fault"] != "future"
        }
        got = duckdb.sql(
            f"select event_id from read_parquet('{lake_root}/silver/events/date={day}/*.parquet')"
        ).fetchall()
        assert {r[0] for r in got} == expected
        orders = {
            d["order_id"]: d["total"]
            for d in truth
            if d["event_type"] == "purchase" and d["_event_day"] == day
        }
        silver_orders = dict(
            duckdb.sql(
                f"select order_id, max(total) from read_parquet('{lake_root}/silver/events/date={day}/*.parquet') "
                "where event_type = 'purchase' group by 1"
            ).fetchall()
        )
        assert silver_orders == pytest.approx(orders)


def test_marts_agree_with_independent_sql_over_silver(lake):
    lake_root = lake["home"] / "lake"
    wh = duckdb.connect(str(lake["home"] / "warehouse.duckdb"), read_only=True)
    ev = f"read_parquet('{lake_root}/silver/events/*/*.parquet')"
    se = f"read_parquet('{lake_root}/silver/sessions/*/*.parquet')"
    for day in (D1, D2):
        revenue, orders = duckdb.sql(
            f"select sum(total), count(distinct order_id) from {ev} where event_type='purchase' and not is_bot and event_date = '{day}'"
        ).fetchall()[0]
        sessions, bounce, dav = duckdb.sql(
            f"select count(*), avg(case when is_bounce then 1 else 0 end), count(distinct anonymous_id) from {se} where not is_bot and session_date = '{day}'"
        ).fetchall()[0]
        kpi = wh.sql(
            f"select revenue, n_orders, n_sessions, bounce_rate, daily_active_visitors from gold.mart_daily_kpis where kpi_date = '{day}'"
        ).fetchall()[0]
        # bounce_rate is rounded to 6 places in the mart (stable_avg)
        assert kpi == pytest.approx((revenue, orders, sessions, bounce, dav), abs=1e-6)
        imp, clk = duckdb.sql(
            f"select count(*) filter (where event_type='ad_impression'), count(*) filter (where event_type='ad_click') from {ev} where not is_bot and event_date='{day}'"
        ).fetchall()[0]
        assert wh.sql(
            f"select n_impressions, n_clicks from gold.mart_daily_ctr where ctr_date='{day}'"
        ).fetchall()[0] == (imp, clk)
        full_funnel = duckdb.sql(
            f"select count(*) from {se} where not is_bot and session_date='{day}' and n_product_views > 0 and n_add_to_carts > 0 and n_checkouts > 0 and n_purchases > 0"
        ).fetchall()[0][0]
        assert wh.sql(
            f"select sum(n_purchase), sum(n_sessions) from gold.mart_conversion_funnel where funnel_date='{day}'"
        ).fetchall()[0] == (full_funnel, sessions)
        units = duckdb.sql(
            f"select sum(i.quantity) from (select unnest(items) as i from {ev} where event_type='purchase' and not is_bot and event_date='{day}')"
        ).fetchall()[0][0]
        assert (
            wh.sql(
                f"select sum(units_sold) from gold.mart_product_performance where performance_date='{day}'"
            ).fetchall()[0][0]
            == units
        )
    # orders from the shop DB: the fact table totals equal their items
    assert (
        wh.sql(
            "select count(*) from gold.fct_orders where abs(order_total - items_total) > 0.01"
        ).fetchall()[0][0]
        == 0
    )
    wh.close()


def _fingerprint(home: Path, day: date) -> dict[str, str]:
    out = {}
    for part in sorted((home / "lake").glob(f"*/*/date={day}/*")):
        out[str(part.relative_to(home))] = hashlib.sha256(part.read_bytes()).hexdigest()
    wh = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    for table, col in (
        ("mart_daily_kpis", "kpi_date"),
        ("fct_events", "event_date"),
        ("fct_sessions", "session_date"),
        ("mart_product_performance", "performance_date"),
    ):
        rows = wh.sql(f"select * from gold.{table} where {col} = '{day}' order by all").fetchall()
        out[table] = hashlib.sha256(repr(rows).encode()).hexdigest() + f":{len(rows)}"
    wh.close()
    return out


def test_rematerializing_a_partition_is_idempotent_and_leaves_neighbours_alone(lake):
    home = lake["home"]
    before = {d: _fingerprint(home, d) for d in (D1, D2)}
    for _ in range(3):
        assert dg.materialize(
            lake["everything"], partition_key=D2.isoformat(), resources=lake["resources"]
        ).success
        after = {d: _fingerprint(home, d) for d in (D1, D2)}
        # the same files (none added, none gone) with the same bytes, and the same mart rows
        for d in (D1, D2):
            assert sorted(after[d]) == sorted(before[d]), d
            changed = sorted(k for k in before[d] if before[d][k] != after[d][k])
            assert changed == [], d
    # bronze and silver event files (data + manifest) are among what was compared
    assert sum("/events/date=" in k for k in before[D2]) >= 4


def test_the_next_partition_reuses_dbt_parse_state_and_env_does_not_leak(lake):
    """The window reaches dbt as env vars read at execution, so a new day is not a full reparse.

    The parse state comes from this test's own home (SHOPLAKE_HOME/dbt), written by the D1 run,
    and no run leaves anything in the checkout's dbt_project/target.
    """
    run_id = lake["runs"][D2].run_id
    (log,) = (lake["home"] / "dbt").glob(f"shoplake_dbt_models-{run_id[:7]}-*/dbt.log")
    assert (lake["home"] / "dbt" / "partial_parse.msgpack").exists()
    checkout_target = REPO_ROOT / "dbt_project" / "target"
    assert not list(checkout_target.glob(f"shoplake_dbt_models-{run_id[:7]}-*"))
    text = log.read_text()
    assert "Unable to do partial parsing" not in text
    assert "Partial parsing enabled, no changes found" in text
    assert "SHOPLAKE_DBT_MIN_DATE" not in os.environ


def test_dbt_docs_generate_works_on_the_built_warehouse(lake, tmp_path):
    import subprocess

    from resources.dbt import DBT_DIR, DBT_EXECUTABLE

    home = lake["home"]
    env = {
        **os.environ,
        "SHOPLAKE_WAREHOUSE": str(home / "warehouse.duckdb"),
        "SHOPLAKE_DBT_TARGET": "duckdb",
    }
    proc = subprocess.run(
        [
            DBT_EXECUTABLE,
            "docs",
            "generate",
            "--profiles-dir",
            str(DBT_DIR),
            "--project-dir",
            str(DBT_DIR),
            "--target-path",
            str(tmp_path),
            "--vars",
            json.dumps(
                {
                    "lake_root": str(home / "lake"),
                    "min_date": D2.isoformat(),
                    "max_date": D2.isoformat(),
                }
            ),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    catalog = json.loads((tmp_path / "catalog.json").read_text())
    assert "model.shoplake.fct_events" in catalog["nodes"]
    assert (tmp_path / "index.html").exists()


def _norm(row: tuple) -> tuple:
    """Numbers as floats (Postgres numeric vs DuckDB decimal), dates as strings."""
    return tuple(str(v) if isinstance(v, date) else float(v) if v is not None else v for v in row)


def test_postgres_warehouse_builds_the_same_marts(lake, fresh_pg_db):
    """dbt-postgres: silver is loaded into Postgres and the same marts come out."""
    import psycopg

    from resources import WarehouseResource

    resources = {**lake["resources"], "warehouse": WarehouseResource(dsn=fresh_pg_db)}
    saved = dict(os.environ)
    try:
        for day in (D1, D2, D2):  # D2 twice: a re-run replaces its window
            assert dg.materialize(
                assets(("staging", "gold")), partition_key=day.isoformat(), resources=resources
            ).success
    finally:
        os.environ.clear()
        os.environ.update(saved)
    queries = {
        "mart_daily_kpis": "select kpi_date, revenue, n_orders, n_sessions, bounce_rate, daily_active_visitors from gold.mart_daily_kpis",
        "mart_daily_ctr": "select ctr_date, n_impressions, n_clicks from gold.mart_daily_ctr",
        "fct_events": "select event_date, count(*), count(distinct event_id) from gold.fct_events group by 1",
        "mart_product_performance": "select performance_date, sum(units_sold), count(*) from gold.mart_product_performance group by 1",
        "fct_orders": "select count(*), round(cast(sum(order_total) as numeric), 2) from gold.fct_orders",
    }
    wh = duckdb.connect(str(lake["home"] / "warehouse.duckdb"), read_only=True)
    pg = psycopg.connect(fresh_pg_db)
    try:
        for name, sql in queries.items():
            expected = sorted(wh.sql(sql).fetchall())
            got = sorted(pg.execute(sql).fetchall())
            assert len(got) == len(expected) > 0, name
            for g, e in zip(got, expected, strict=True):
                assert _norm(g) == pytest.approx(_norm(e)), name
    finally:
        pg.close()
        wh.close()
