"""The dbt CLI as a Dagster resource, and the dbt project, built lazily.

Each run's dbt state lives under ``SHOPLAKE_HOME/dbt`` (see :class:`ShoplakeDbtCli`).
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import sys
import uuid
from functools import cache, cached_property
from pathlib import Path

import dagster as dg
from dagster_dbt import DbtCliInvocation, DbtCliResource, DbtProject
from packaging import version

from shoplake.core.settings import REPO_ROOT

DBT_DIR = REPO_ROOT / "dbt_project"
# The dbt installed beside this interpreter, so an unactivated venv works too.
_local_dbt = Path(sys.executable).with_name("dbt")
DBT_EXECUTABLE = str(_local_dbt) if _local_dbt.exists() else "dbt"
PARTIAL_PARSE = "partial_parse.msgpack"


@cache
def dbt_project() -> DbtProject:
    """The dbt project, built on first use (as dagster-open-platform does), with its manifest.

    Importing this module starts nothing; the first call parses the project when no manifest
    exists yet (fresh checkout, CI), or when ``dagster dev`` asks for a fresh one.
    """
    project = DbtProject(project_dir=DBT_DIR, profiles_dir=DBT_DIR)
    project.prepare_if_dev()
    if not project.manifest_path.exists():
        cli = ShoplakeDbtCli(project_dir=project, dbt_executable=DBT_EXECUTABLE)
        cli.cli(["parse", "--quiet"], target_path=project.target_path).wait()
    return project


class ShoplakeDbtCli(DbtCliResource):
    """dagster-dbt's resource, with each run's dbt state under ``state_dir`` (SHOPLAKE_HOME/dbt).

    A run's artifacts and logs go to ``<state_dir>/<op>-<run>-<id>/`` and the parse state that the
    next run starts from is ``<state_dir>/partial_parse.msgpack``, so two homes (two tests, two
    users of one checkout) never read each other's state. The project's own ``target/`` holds
    only the manifest that defines the assets.

    Also minus a ``dbt --version`` subprocess (about 3 s) on every run: the resource asks the
    executable for its version once per instance, and Dagster builds the instance per run. Our
    executable is the dbt beside this interpreter, so its version is the installed dbt-core's;
    any other executable is still asked.
    """

    state_dir: str = ""

    def run_target(self, context: dg.AssetExecutionContext) -> Path | None:
        """A new target folder for this run, seeded with the home's parse state."""
        if not self.state_dir:
            return None
        state = Path(self.state_dir)
        run = context.run.run_id[:7]
        target = state / f"{context.op_execution_context.op.name}-{run}-{uuid.uuid4().hex[:7]}"
        target.mkdir(parents=True)
        seed = state / PARTIAL_PARSE
        if not seed.exists():
            project = dbt_project()
            seed = project.project_dir / project.target_path / PARTIAL_PARSE
        if seed.exists():
            shutil.copyfile(seed, target / PARTIAL_PARSE)
        return target

    def keep_partial_parse(self, invocation: DbtCliInvocation) -> None:
        """Make this run's parse state the home's, so the next run parses only what changed.

        It is replaced atomically, so concurrent runs are safe.
        """
        produced = Path(invocation.target_path) / PARTIAL_PARSE
        if not self.state_dir or not produced.exists():
            return
        shared = Path(self.state_dir) / PARTIAL_PARSE
        tmp = shared.with_name(f".{PARTIAL_PARSE}.{uuid.uuid4().hex[:8]}")
        shutil.copyfile(produced, tmp)
        os.replace(tmp, shared)

    @cached_property
    def _cli_version(self) -> version.Version:
        if self.dbt_executable == str(_local_dbt):
            return version.parse(importlib.metadata.version("dbt-core"))
        return super()._cli_version


def dbt_cli(state_dir: str = "") -> ShoplakeDbtCli:
    return ShoplakeDbtCli(
        project_dir=str(DBT_DIR),
        profiles_dir=str(DBT_DIR),
        dbt_executable=DBT_EXECUTABLE,
        state_dir=state_dir,
    )
