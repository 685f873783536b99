"""A shop with only a clickstream export: import it on a fresh home, then run the command the
import prints, verbatim. No Kafka, no order database."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from tests.conftest import CI, DATASETS

pytestmark = pytest.mark.integration
REES46 = DATASETS / "rees46_ecommerce_multicategory_2019oct_head"
BIN = Path(sys.executable).parent


def test_the_next_command_printed_by_an_import_works_verbatim(tmp_path: Path):
    if not REES46.exists():
        if CI:
            pytest.fail(f"the shared datasets are missing at {DATASETS} (set SHOPLAKE_DATASETS)")
        pytest.skip(f"no datasets at {DATASETS}; set SHOPLAKE_DATASETS to your copy")
    home = tmp_path / "home"
    env = {
        **os.environ,
        "SHOPLAKE_HOME": str(home),
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
    }
    imported = subprocess.run(
        ["shoplake", "import", str(REES46), "--mapping", "rees46"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert imported.returncode == 0, imported.stdout + imported.stderr
    (next_line,) = [line for line in imported.stdout.splitlines() if line.startswith("next: ")]
    command = next_line.removeprefix("next: ")
    assert shlex.split(command)[:2] == ["shoplake", "materialize"]

    ran = subprocess.run(
        ["bash", "-c", command], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert ran.returncode == 0, (ran.stdout + ran.stderr)[-3000:]

    # The shop tables are empty partitions that say why; the marts are built from the import.
    manifest = json.loads(
        (home / "lake/bronze/shop_orders/date=2019-10-01/_manifest.json").read_text()
    )
    assert manifest["rows"] == 0 and "no order database is configured" in manifest["why"]
    wh = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    events, orders = wh.sql(
        "select (select count(*) from gold.fct_events where event_date = '2019-10-01'), "
        "(select count(*) from gold.fct_orders)"
    ).fetchall()[0]
    assert (events, orders) == (17434, 0)
    assert (
        home / "dagster" / "dagster.yaml"
    ).exists()  # the run is on the instance dagster dev shows
