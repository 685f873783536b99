"""Run the asset graph for a range of days from a shell, the way the demo does.

One Dagster run on the instance under ``SHOPLAKE_HOME/dagster`` (so ``dagster dev`` shows it),
with the in-process executor (a subprocess per step would re-import the code location for every
asset) and the single-run backfill policy of the lake's assets.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from shoplake.core import clock
from shoplake.core.settings import REPO_ROOT, Settings

# The assets read from Kafka; a lake fed only by 'shoplake import' leaves them out.
KAFKA_ASSETS = ("bronze/events", "bronze/dlq_events")
IN_PROCESS = {"execution": {"config": {"in_process": {}}}}


@dataclass(frozen=True)
class Materialization:
    first: date
    last: date
    selection: str = "*"

    def command(self) -> list[str]:
        dagster = Path(sys.executable).with_name("dagster")
        return [
            str(dagster),
            "asset",
            "materialize",
            "-m",
            "pipeline_assets.definitions",
            "--select",
            self.selection,
            "--partition-range",
            f"{self.first}...{self.last}",
            "--config-json",
            json.dumps(IN_PROCESS),
        ]


def without_kafka(selection: str = "*") -> str:
    """``selection`` minus the assets read from Kafka, in Dagster's selection syntax."""
    excluded = " and ".join(f'not key:"{k}"' for k in KAFKA_ASSETS)
    return excluded if selection == "*" else f"({selection}) and {excluded}"


def dagster_home(settings: Settings, env: dict[str, str] | None = None) -> Path:
    """``DAGSTER_HOME`` if set, else ``SHOPLAKE_HOME/dagster``, created with the local instance
    config (SQLite storage) when it has none."""
    env = os.environ if env is None else env
    home = Path(env.get("DAGSTER_HOME") or settings.home / "dagster")
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        shutil.copy(REPO_ROOT / "infra/dagster/dagster.yaml", home / "dagster.yaml")
    return home


def run_env(settings: Settings, first: date, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a run: its Dagster instance, the repo on the path, the partitions
    reaching back to ``first``, and this process's clock."""
    env = dict(os.environ if base is None else base)
    env["DAGSTER_HOME"] = str(dagster_home(settings, env))
    env["SHOPLAKE_HOME"] = str(settings.home)
    if first < settings.partitions_start:
        env["SHOPLAKE_PARTITIONS_START"] = first.isoformat()
    if env.get(clock.ENV):
        env[clock.ENV] = clock.env_value()
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    return env


def materialize(run: Materialization, env: dict[str, str], log: Path, timeout: float = 3600) -> int:
    """Run it, appending Dagster's output to ``log``; the exit code of ``dagster``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.run(
            run.command(),
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
            timeout=timeout,
        )
    return proc.returncode


@dataclass
class AssetOutcome:
    rows: int | None = None
    checks_passed: int = 0
    checks_failed: list[str] = field(default_factory=list)
    failed: str | None = None  # the step's error, when it failed


@dataclass
class RunSummary:
    run_id: str
    status: str
    assets: dict[str, AssetOutcome]
    first_error: str | None


def summarize(dagster_home: Path) -> RunSummary | None:
    """What the newest run of the instance at ``dagster_home`` did, per asset: rows written,
    checks passed and failed, and the first error (its message says how to fix it)."""
    import dagster as dg

    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        runs = instance.get_runs(limit=1)
        if not runs:
            return None
        run = runs[0]
        kinds = {
            dg.DagsterEventType.ASSET_MATERIALIZATION,
            dg.DagsterEventType.ASSET_CHECK_EVALUATION,
            dg.DagsterEventType.STEP_FAILURE,
        }
        assets: dict[str, AssetOutcome] = {}
        first_error = None
        for entry in instance.all_logs(run.run_id, of_type=kinds):
            event = entry.dagster_event
            if event is None:
                continue
            if event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION:
                m = event.event_specific_data.materialization
                outcome = assets.setdefault(m.asset_key.to_user_string(), AssetOutcome())
                rows = m.metadata.get("dagster/row_count")
                if rows is not None:
                    outcome.rows = (outcome.rows or 0) + int(rows.value)
            elif event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
                check = event.event_specific_data
                outcome = assets.setdefault(check.asset_key.to_user_string(), AssetOutcome())
                if check.passed:
                    outcome.checks_passed += 1
                else:
                    outcome.checks_failed.append(check.check_name)
                    first_error = (
                        first_error
                        or f"check {check.check_name} failed on {check.asset_key.to_user_string()}"
                    )
            else:
                message = event.step_failure_data.error.message.strip().splitlines()[0]
                outcome = assets.setdefault(event.step_key or "?", AssetOutcome())
                outcome.failed = message
                first_error = (
                    message
                    if first_error is None or first_error.startswith("check")
                    else first_error
                )
        return RunSummary(run.run_id, run.status.value, assets, first_error)
