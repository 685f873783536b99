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
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from shoplake import clock
from shoplake.settings import REPO_ROOT, Settings

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
        return [str(dagster), "asset", "materialize", "-m", "pipeline_assets.definitions",
                "--select", self.selection, "--partition-range", f"{self.first}...{self.last}",
                "--config-json", json.dumps(IN_PROCESS)]  # fmt: skip


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
        proc = subprocess.run(run.command(), env=env, stdout=out, stderr=subprocess.STDOUT,
                              cwd=REPO_ROOT, timeout=timeout)  # fmt: skip
    return proc.returncode
