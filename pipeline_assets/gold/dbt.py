"""Gold: the dbt project as Dagster assets (dagster-dbt), one daily partition window per run."""

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import timedelta
from functools import cache
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, dbt_assets

from pipeline_assets.gold.pg_load import load_silver
from pipeline_assets.partitions import daily_partitions
from pipeline_assets.policies import partition_days
from resources import LakeResource, WarehouseResource
from resources.dbt import ShoplakeDbtCli, dbt_project

# The marts are rebuilt by the daily run at 02:00 UTC: a mart older than a day and a bit is late,
# older than two days is stale (the daily run failed or the daemon is not running).
GOLD_FRESHNESS = dg.FreshnessPolicy.time_window(
    fail_window=timedelta(hours=48), warn_window=timedelta(hours=26)
)
# DuckDB has one writer: every asset that writes the warehouse takes a slot of this pool, whose
# limit is 1 in infra/dagster/dagster.yaml.
WAREHOUSE_POOL = "duckdb"


class ShoplakeTranslator(DagsterDbtTranslator):
    """Keys and groups from where things land: sources are silver tables; groups follow folders.
    The marts carry the gold freshness policy."""

    def get_asset_spec(self, manifest, unique_id, project) -> dg.AssetSpec:
        spec = super().get_asset_spec(manifest, unique_id, project)
        if spec.key.path[0] == "gold":
            return spec.replace_attributes(freshness_policy=GOLD_FRESHNESS)
        return spec

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
    saved = dict(os.environ)
    os.environ.update(values)
    try:
        yield
    finally:
        for k in values:
            if k in saved:
                os.environ[k] = saved[k]
            else:
                os.environ.pop(k, None)


@cache
def build_defs() -> dg.Definitions:
    """The dbt models as assets. Built on first call: it needs the project's manifest."""
    project = dbt_project()

    @dbt_assets(
        manifest=project.manifest_path,
        project=project,
        partitions_def=daily_partitions,
        dagster_dbt_translator=ShoplakeTranslator(),
        backfill_policy=dg.BackfillPolicy.single_run(),
        pool=WAREHOUSE_POOL,
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
        # What dbt_project/profiles.yml and macros/run_setting.sql read, for this run only (the
        # row counts and column schemas are read through dbt's adapter, which reads them too).
        with scoped_environ(warehouse.dbt_env() | lake.dbt_env() | run_env(context, lake)):
            invocation = dbt.cli(["build"], context=context, target_path=dbt.run_target(context))
            yield from invocation.stream().fetch_row_counts().fetch_column_metadata()
        dbt.keep_partial_parse(invocation)

    return dg.Definitions(assets=[shoplake_dbt_models])
