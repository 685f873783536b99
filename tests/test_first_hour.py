"""A new user's first hour: each command run as the README shows it, on a fresh home. Every error
path ends within its time bound in one 'error:' line that says what to run, with no traceback;
the happy path (simulate two days, materialize the second) passes every check."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from shoplake.core.days import last_closed_day
from shoplake.core.platform.process import free_port
from shoplake.core.settings import REPO_ROOT
from shoplake.materialize import summarize
from tests.conftest import DATASETS, TODAY, clean_env, start_broker

BIN = Path(sys.executable).parent
REES46 = DATASETS / "rees46_ecommerce_multicategory_2019oct_head"


def fresh_env(home: Path, **extra: str) -> dict[str, str]:
    """A new user's shell: defaults everywhere, nothing listening on the ports shoplake uses."""
    env = clean_env()
    env.update(
        PATH=f"{BIN}{os.pathsep}{env['PATH']}",
        SHOPLAKE_HOME=str(home),
        SHOPLAKE_KAFKA_PORT=str(free_port()),
        SHOPLAKE_COLLECTOR_PORT=str(free_port()),
    )
    env.update(extra)
    return env


def shoplake(args: list[str], env: dict[str, str], timeout: float) -> tuple[int, str, float]:
    t = time.monotonic()
    proc = subprocess.run(
        ["shoplake", *args],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout + 60,
    )
    return proc.returncode, proc.stdout + proc.stderr, time.monotonic() - t


YESTERDAY = last_closed_day(TODAY).isoformat()
ERROR_PATHS = {
    # name: (args, extra env, seconds, what the one line must tell)
    "collector without Kafka": (["collector"], {}, 15, "shoplake kafka start"),
    "stream without Kafka": (["stream", "--eof"], {}, 15, "shoplake kafka start"),
    "materialize without Kafka": (["materialize", YESTERDAY], {}, 15, "shoplake kafka start"),
    "simulate without a collector": (
        ["simulate", "--days", "2", "--users", "300"],
        {},
        30,
        "shoplake collector",
    ),
    "prod without secrets": (["collector"], {"SHOPLAKE_ENV": "prod"}, 15, "SHOPLAKE_WRITE_KEYS"),
    "prod with a short PII key": (
        ["collector"],
        {"SHOPLAKE_ENV": "prod", "SHOPLAKE_PII_KEY": "x", "SHOPLAKE_WRITE_KEYS": "k"},
        15,
        "32 or more",
    ),
    "an unknown environment": (["simulate"], {"SHOPLAKE_ENV": "staging"}, 15, "local, ci, prod"),
}


@pytest.mark.parametrize("name", list(ERROR_PATHS))
def test_an_error_path_ends_in_one_line_with_the_fix(name: str, tmp_path: Path):
    args, extra, bound, fix = ERROR_PATHS[name]
    code, out, seconds = shoplake(args, fresh_env(tmp_path / "home", **extra), bound)
    assert code == 1, out
    assert seconds < bound, (name, seconds)
    assert "Traceback" not in out, out
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and fix in errors[0], out
    assert len(out.splitlines()) <= 3, out  # the line, and the hint about --debug
    if name == "prod without secrets":
        assert "SHOPLAKE_PII_KEY" in errors[0]  # every missing secret at once
    if name == "simulate without a collector":
        assert not (tmp_path / "home" / "shopdb.sqlite").exists()  # nothing left behind


def test_debug_shows_the_traceback(tmp_path: Path):
    code, out, _ = shoplake(["--debug", "simulate"], fresh_env(tmp_path, SHOPLAKE_ENV="nope"), 15)
    assert code == 1 and "Traceback" in out and "ConfigError" in out


def test_a_mistaken_mapping_names_the_file_line_and_field(tmp_path: Path):
    if not REES46.exists():
        pytest.fail(f"the shared datasets are missing at {DATASETS} (set SHOPLAKE_DATASETS)")
    shipped = (REPO_ROOT / "shoplake/core/import_mapping/mappings/rees46.yaml").read_text()
    typo = tmp_path / "typo.yaml"
    typo.write_text(
        shipped.replace(
            "price: {column: price, type: float}", "price: {colum: price, type: flaot}", 1
        )
    )
    env = fresh_env(tmp_path / "home")
    code, out, _ = shoplake(["import", str(REES46), "--mapping", str(typo)], env, 60)
    assert code == 1 and "Traceback" not in out
    line = next(i for i, t in enumerate(typo.read_text().splitlines(), 1) if "colum:" in t)
    assert (
        f"{typo}:{line}: events.product_view.price.colum: unknown key (did you mean 'column'?)"
        in out
    )
    assert "'flaot' is not a type (did you mean 'float'?)" in out
    assert not (tmp_path / "home" / "lake").exists()  # nothing read, nothing landed

    missing = tmp_path / "missing.yaml"
    missing.write_text(shipped.replace("brand: {column: brand}", "brand: {column: brnd}"))
    code, out, _ = shoplake(["import", str(REES46), "--mapping", str(missing)], env, 60)
    assert code == 1 and "column 'brnd' is not in the export (did you mean 'brand'?)" in out

    broken = tmp_path / "broken.yaml"
    broken.write_text("name: x\n  source: [\n")
    code, out, _ = shoplake(["import", str(REES46), "--mapping", str(broken)], env, 60)
    assert code == 1 and f"{broken}: not valid YAML" in out and "<unicode string>" not in out


def test_help_and_version_tell_the_truth(tmp_path: Path):
    env = fresh_env(tmp_path)
    code, out, _ = shoplake(["--version"], env, 15)
    assert code == 0 and out.startswith("shoplake ")
    _, out, _ = shoplake(["collector", "--help"], env, 15)
    assert "[critical|error|warning|info|debug|trace]" in out
    _, out, _ = shoplake(["simulate", "--help"], env, 15)
    for kind in ("malformed_json", "late", "bot_burst", "traffic_spike", "revenue_drop"):
        assert kind in out


@pytest.mark.integration
@pytest.mark.timeout(900)
def test_the_second_simulated_day_materializes_with_default_settings(tmp_path: Path):
    """Guards the first-day trap: the shop tables used to load their initial state only in the
    SHOPLAKE_PARTITIONS_START partition, so any other first day failed its dbt relationships."""
    broker = start_broker(tmp_path / "kafka")
    try:
        env = fresh_env(tmp_path / "home", SHOPLAKE_KAFKA_BOOTSTRAP=broker.bootstrap)
        code, out, _ = shoplake(
            ["simulate", "--to", "kafka", "--days", "2", "--users", "300"], env, 300
        )
        assert code == 0, out
        second = last_closed_day(TODAY)
        code, out, _ = shoplake(["materialize", second.isoformat()], env, 600)
        assert code == 0, out[-4000:]
        summary = summarize(tmp_path / "home" / "dagster")
        assert summary is not None and summary.status == "SUCCESS"
        failed = {a: o.checks_failed for a, o in summary.assets.items() if o.checks_failed}
        assert failed == {}, failed
        checks = sum(o.checks_passed for o in summary.assets.values())
        assert checks > 60  # dbt tests, contracts, reconciliations: all ran and passed
        assert {"gold/fct_orders", "gold/dim_products", "silver/events"} <= summary.assets.keys()
        assert summary.assets["silver/events"].rows  # rows written, as the table shows them
        wh = duckdb.connect(str(tmp_path / "home" / "warehouse.duckdb"), read_only=True)
        orders, products = wh.sql(
            "select (select count(*) from gold.fct_orders), (select count(*) from gold.dim_products)"
        ).fetchall()[0]
        assert orders > 0 and products > 0
        assert "first problem" not in out and f"run {summary.run_id[:8]}: SUCCESS" in out
    finally:
        broker.stop()
