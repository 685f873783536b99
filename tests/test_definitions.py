"""The Dagster code location loads, from Python and through workspace.yaml, with what must exist."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from pipeline_assets.definitions import defs
from pipeline_assets.partitions import daily_partitions
from shoplake.core.settings import REPO_ROOT

SPECS = {spec.key: spec for spec in defs.resolve_all_asset_specs()}


def key(*path: str) -> dg.AssetKey:
    return dg.AssetKey(list(path))


def test_layers_and_groups():
    expected = {
        key("kafka", "shop_events"): "kafka",
        key("bronze", "events"): "bronze",
        key("bronze", "dlq_events"): "bronze",
        key("bronze", "shop_orders"): "bronze",
        key("silver", "events"): "silver",
        key("silver", "events_quarantine"): "silver",
        key("silver", "sessions"): "silver",
        key("silver", "products"): "silver",
        key("staging", "stg_events"): "staging",
        key("gold", "fct_events"): "gold_core",
        key("gold", "dim_users"): "gold_core",
        key("gold", "mart_daily_kpis"): "gold_commerce",
        key("gold", "mart_daily_ctr"): "gold_ads",
        key("gold", "mart_rfm_segments"): "gold_customers",
    }
    for k, group in expected.items():
        assert k in SPECS, k
        assert SPECS[k].group_name == group, k
    marts = {k.path[1] for k in SPECS if k.path[0] == "gold"}
    assert {
        "fct_sessions",
        "fct_orders",
        "fct_order_items",
        "dim_products",
        "dim_date",
        "agg_daily_user_metrics",
        "mart_conversion_funnel",
        "mart_product_performance",
        "mart_category_analysis",
        "mart_hourly_ctr",
        "mart_device_performance",
        "mart_banner_position",
        "mart_cohort_retention",
    } <= marts


def test_every_lake_asset_uses_the_one_daily_partitioning():
    for k, spec in SPECS.items():
        if k.path[0] in ("bronze", "silver", "staging", "gold"):
            assert spec.partitions_def == daily_partitions, k
    assert daily_partitions.timezone == "UTC"


def test_lineage_runs_from_kafka_to_the_marts():
    assert key("kafka", "shop_events") in {d.asset_key for d in SPECS[key("bronze", "events")].deps}
    assert key("bronze", "events") in {d.asset_key for d in SPECS[key("silver", "events")].deps}
    assert key("silver", "events") in {
        d.asset_key for d in SPECS[key("staging", "stg_events")].deps
    }
    assert key("staging", "stg_events") in {
        d.asset_key for d in SPECS[key("gold", "fct_events")].deps
    }


def test_checks_jobs_and_schedule_exist():
    graph = defs.resolve_asset_graph()
    checks = {(c.asset_key, c.name) for c in graph.asset_check_keys}
    assert (key("silver", "events"), "pandera_contract") in checks
    assert (key("silver", "events"), "bronze_rows_reconcile") in checks
    assert (key("bronze", "events"), "matches_manifest") in checks
    assert any(
        k == key("gold", "fct_events") and n.startswith("unique_") for k, n in checks
    )  # dbt tests
    assert len(checks) > 70
    assert {"daily_etl", "dbt_run"} <= {j.name for j in defs.resolve_all_job_defs()}
    schedule = defs.resolve_schedule_def("daily_schedule")
    assert schedule.cron_schedule == "0 2 * * *" and schedule.execution_timezone == "UTC"


def test_workspace_yaml_loads(tmp_path: Path):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    dagster = Path(sys.executable).with_name("dagster")
    proc = subprocess.run(
        [str(dagster), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Validation successful for code location shoplake" in proc.stderr + proc.stdout
