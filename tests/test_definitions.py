"""The Dagster code location loads, from Python and through workspace.yaml."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from pipeline_assets.definitions import defs
from pipeline_assets.partitions import daily_partitions
from shoplake.settings import REPO_ROOT


def test_code_location_has_the_kafka_sources():
    keys = {spec.key for spec in defs.resolve_all_asset_specs()}
    assert dg.AssetKey(["kafka", "shop_events"]) in keys
    assert dg.AssetKey(["kafka", "shop_events_dlq"]) in keys
    assert daily_partitions.timezone == "UTC"


def test_workspace_yaml_loads(tmp_path: Path):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    dagster = Path(sys.executable).with_name("dagster")
    proc = subprocess.run(
        [str(dagster), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Validation successful for code location shoplake" in proc.stderr + proc.stdout
