"""The code location keeps to Dagster's current idioms: no deprecated calls from project code,
freshness policies on what people read, the DuckDB pool, and the library warnings the demo hides."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import dagster as dg

from pipeline_assets.definitions import defs
from pipeline_assets.gold.dbt import WAREHOUSE_POOL
from shoplake.core.settings import REPO_ROOT

SPECS = {spec.key: spec for spec in defs.resolve_all_asset_specs()}


def test_loading_and_evaluating_the_code_location_makes_no_deprecated_call(tmp_path):
    """In a fresh interpreter, a DeprecationWarning raised from project code is an error: load the
    code location, resolve its jobs, and evaluate the sensor that reads check evaluations."""
    code = textwrap.dedent(
        f"""
        import warnings
        warnings.filterwarnings(
            "error", category=DeprecationWarning,
            module=r"(pipeline_assets|resources|shoplake|streaming)(\\.|$)",
        )
        import dagster as dg
        from pipeline_assets.definitions import defs
        from pipeline_assets.ops.notify import notify_check_failures
        from resources import NotifierResource

        defs.resolve_all_job_defs()
        defs.resolve_asset_graph()
        with dg.instance_for_test() as instance:
            context = dg.build_sensor_context(
                instance=instance, resources={{"notifier": NotifierResource(home={str(tmp_path)!r})}}
            )
            result = notify_check_failures(context)
        print("ok", type(result).__name__)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ok SkipReason" in done.stdout


def test_marts_and_speed_tables_have_freshness_policies():
    gold = [k for k in SPECS if k.path[0] == "gold"]
    speed = [k for k in SPECS if k.path[0] == "speed"]
    assert len(gold) > 10 and len(speed) >= 5
    for k in gold + speed:
        policy = SPECS[k].freshness_policy
        assert policy is not None, k
        assert policy.warn_window < policy.fail_window, k
    assert (
        SPECS[gold[0]].freshness_policy.fail_window > SPECS[speed[0]].freshness_policy.fail_window
    )


def test_the_warehouse_writer_takes_the_duckdb_pool():
    writers = [
        a
        for a in defs.assets
        if isinstance(a, dg.AssetsDefinition) and any(k.path[0] == "gold" for k in a.keys)
    ]
    assert writers
    for a in writers:
        assert {node.pool for node in [a.node_def]} == {WAREHOUSE_POOL}
    config = (REPO_ROOT / "infra/dagster/dagster.yaml").read_text()
    assert "default_limit: 1" in config


def test_loading_the_code_location_prints_no_library_warning():
    done = subprocess.run(
        [sys.executable, "-W", "always", "-c", "import pipeline_assets.definitions"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Warning" not in done.stderr, done.stderr[-3000:]
