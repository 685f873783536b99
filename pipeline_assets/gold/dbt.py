"""Gold: the dbt project as Dagster assets (dagster-dbt), one daily partition window per run."""

import importlib.metadata
import os
import shutil
import sys
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import (
    DagsterDbtTranslator,
    DbtCliInvocation,
    DbtCliResource,
    DbtProject,
    dbt_assets,
)
from packaging import version

from pipeline_assets.gold.pg_load import load_silver
from pipeline_assets.partitions import daily_partitions
from pipeline_assets.policies import partition_days
from resources import LakeResource, WarehouseResource
from shoplake.settings import REPO_ROOT

DBT_DIR = REPO_ROOT / "dbt_project"
# The dbt installed beside this interpreter, so an unactivated venv works too.
_local_dbt = Path(sys.executable).with_name("dbt")
DBT_EXECUTABLE = str(_local_dbt) if _local_dbt.exists() else "dbt"
PARTIAL_PARSE = "partial_parse.msgpack"
dbt_project = DbtProject(project_dir=DBT_DIR, profiles_dir=DBT_DIR)
dbt_project.prepare_if_dev()


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
            seed = dbt_project.project_dir / dbt_project.target_path / PARTIAL_PARSE
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
        project_dir=dbt_project, dbt_executable=DBT_EXECUTABLE, state_dir=state_dir
    )


def ensure_manifest() -> None:
    """Parse the project once when no manifest exists yet (fresh checkout, CI)."""
    if not dbt_project.manifest_path.exists():
        dbt_cli().cli(["parse", "--quiet"], target_path=dbt_project.target_path).wait()


ensure_manifest()


class ShoplakeTranslator(DagsterDbtTranslator):
    """Keys and groups from where things land: sources are silver tables; groups follow folders."""

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        if dbt_resource_props["resource_type"] == "source":
            return dg.AssetKey(["silver", dbt_resource_props["name"]])
        fqn = dbt_resource_props["fqn"]
        layer = "gold" if len(fqn) > 1 and fqn[1] == "marts" else "staging"
        return dg.AssetKey([layer, dbt_resource_props["name"]])

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        fqn = dbt_resource_props["fqn"]
        if len(fqn) > 2 and fqn[1] == "marts":
            return f"gold_{fqn[2]}"
        return "staging"


def run_env(context: dg.AssetExecutionContext, lake: LakeResource) -> dict[str, str]:
    """The partition window as inclusive dates, and where the lake is (macros/run_setting.sql).

    Environment variables rather than ``--vars``: dbt reparses the whole project whenever its
    ``--vars`` change, i.e. on every partition.
    """
    window = context.partition_time_window
    return {
        "SHOPLAKE_DBT_MIN_DATE": window.start.date().isoformat(),
        "SHOPLAKE_DBT_MAX_DATE": (window.end - timedelta(days=1)).date().isoformat(),
        "SHOPLAKE_LAKE_ROOT": lake.root,
    }


@contextmanager
def scoped_environ(values: Mapping[str, str]) -> Iterator[None]:
    """``os.environ`` with ``values`` while the block runs (dbt copies it when it starts)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@dbt_assets(
    manifest=dbt_project.manifest_path,
    project=dbt_project,
    partitions_def=daily_partitions,
    dagster_dbt_translator=ShoplakeTranslator(),
    backfill_policy=dg.BackfillPolicy.single_run(),
)
def shoplake_dbt_models(
    context: dg.AssetExecutionContext,
    dbt: ShoplakeDbtCli,
    lake: LakeResource,
    warehouse: WarehouseResource,
):
    if warehouse.dsn:
        loaded = load_silver(warehouse.dsn, lake.location(), partition_days(context))
        context.log.info(
            "loaded silver into Postgres: " + ", ".join(f"{t.table}={t.rows}" for t in loaded)
        )
    # What dbt_project/profiles.yml and macros/run_setting.sql read, for this run only.
    with scoped_environ(warehouse.dbt_env() | lake.dbt_env() | run_env(context, lake)):
        invocation = dbt.cli(["build"], context=context, target_path=dbt.run_target(context))
    yield from invocation.stream()
    dbt.keep_partial_parse(invocation)


defs = dg.Definitions(assets=[shoplake_dbt_models])
