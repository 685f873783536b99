"""Gold: the dbt project as Dagster assets (dagster-dbt), one daily partition window per run."""

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import timedelta
from functools import cache
from typing import Any

import dagster as dg
import polars as pl
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


GOLD_TABLE_SHAPES_SQL = """
select table_name, column_name, data_type
from information_schema.columns
where table_schema = 'gold'
order by table_name, ordinal_position
"""


def gold_table_metadata(warehouse: WarehouseResource, tables: list[str]) -> dict[str, dict]:
    """Row count and column schema of each gold table, as ``dagster/row_count`` and
    ``dagster/column_schema`` (what dagster-dbt's ``fetch_row_counts`` and
    ``fetch_column_metadata`` attach).

    Read after dbt has finished, through the warehouse's read-only query (opened and closed at
    once). dagster-dbt's own fetchers open dbt's adapter in this process, and with DuckDB that
    handle stays open and locks the next dbt run out of the warehouse file.
    """
    if not tables:
        return {}
    shapes = warehouse.query(GOLD_TABLE_SHAPES_SQL)
    counts_sql = " union all ".join(
        f"select '{t}' as table_name, count(*) as n from gold.{t}" for t in sorted(tables)
    )
    counts = dict(warehouse.query(counts_sql).iter_rows())
    out = {}
    for table in tables:
        columns = shapes.filter(pl.col("table_name") == table)
        schema = dg.TableSchema(
            columns=[
                dg.TableColumn(name, str(kind))
                for name, kind in columns.select("column_name", "data_type").iter_rows()
            ]
        )
        out[table] = {
            "dagster/row_count": dg.MetadataValue.int(int(counts[table])),
            "dagster/column_schema": dg.MetadataValue.table_schema(schema),
        }
    return out


def with_table_metadata(
    events: list, context: dg.AssetExecutionContext, warehouse: WarehouseResource
) -> Iterator:
    """dbt's events, each gold materialization with its table's row count and column schema."""

    def gold_table(event) -> str | None:
        if isinstance(event, dg.Output):
            key = context.asset_key_for_output(event.output_name)
        elif isinstance(event, dg.AssetMaterialization):
            key = event.asset_key
        else:
            return None
        return key.path[1] if key.path[0] == "gold" else None

    tables = [t for t in map(gold_table, events) if t is not None]
    metadata = gold_table_metadata(warehouse, tables)
    for event in events:
        table = gold_table(event)
        if table in metadata:
            event = event.with_metadata({**event.metadata, **metadata[table]})
        yield event


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
        # What dbt_project/profiles.yml and macros/run_setting.sql read, for this run only.
        with scoped_environ(warehouse.dbt_env() | lake.dbt_env() | run_env(context, lake)):
            invocation = dbt.cli(["build"], context=context, target_path=dbt.run_target(context))
            events = list(invocation.stream())
        yield from with_table_metadata(events, context, warehouse)
        dbt.keep_partial_parse(invocation)

    return dg.Definitions(assets=[shoplake_dbt_models])
