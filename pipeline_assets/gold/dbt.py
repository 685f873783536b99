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
dbt_project = DbtProject(project_dir=DBT_DIR, profiles_dir=DBT_DIR)
dbt_project.prepare_if_dev()


class ShoplakeDbtCli(DbtCliResource):
    """dagster-dbt's resource, minus a ``dbt --version`` subprocess (about 3 s) on every run.

    The resource asks the executable for its version once per instance, and Dagster builds the
    instance per run. Our executable is the dbt beside this interpreter, so its version is the
    installed dbt-core's; any other executable is still asked.
    """

    @cached_property
    def _cli_version(self) -> version.Version:
        if self.dbt_executable == str(_local_dbt):
            return version.parse(importlib.metadata.version("dbt-core"))
        return super()._cli_version


def dbt_cli() -> DbtCliResource:
    return ShoplakeDbtCli(project_dir=dbt_project, dbt_executable=DBT_EXECUTABLE)


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


def keep_partial_parse(invocation: DbtCliInvocation) -> None:
    """Make this run's parse state the project's, so the next run parses only what changed.

    dagster-dbt starts each run from ``target/partial_parse.msgpack``; dbt writes an updated one
    into the run's own target folder. It is replaced atomically, so concurrent runs are safe.
    """
    produced = Path(invocation.target_path) / "partial_parse.msgpack"
    if not produced.exists():
        return
    shared = dbt_project.project_dir / dbt_project.target_path / "partial_parse.msgpack"
    tmp = shared.with_name(f".partial_parse.{uuid.uuid4().hex[:8]}")
    shutil.copyfile(produced, tmp)
    os.replace(tmp, shared)


@dbt_assets(
    manifest=dbt_project.manifest_path,
    project=dbt_project,
    partitions_def=daily_partitions,
    dagster_dbt_translator=ShoplakeTranslator(),
    backfill_policy=dg.BackfillPolicy.single_run(),
)
def shoplake_dbt_models(
    context: dg.AssetExecutionContext,
    dbt: DbtCliResource,
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
        invocation = dbt.cli(["build"], context=context)
    yield from invocation.stream()
    keep_partial_parse(invocation)


defs = dg.Definitions(assets=[shoplake_dbt_models])
