"""Silver: clean, typed, deduplicated data by event day."""

from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

import dagster as dg
import polars as pl

from pipeline_assets.bronze.shopdb import SHOP_TABLES
from pipeline_assets.partitions import daily_partitions
from pipeline_assets.policies import column_schema, partition_days, partition_metadata
from pipeline_assets.silver.events import (
    SPILL_ROWS,
    BronzeReader,
    build_silver_events_from,
)
from pipeline_assets.silver.sessions import COLUMNS as SESSION_COLUMNS
from pipeline_assets.silver.sessions import sessionize
from pipeline_assets.silver.shop import SCD2_TRACKED, current_state, history_until, scd2
from resources import LakeResource
from shoplake.core.days import arrival_window
from shoplake.core.import_mapping.mapping import MAPPINGS_DIR
from shoplake.core.lake.imports import IMPORT_PREFIX, REJECTS_TABLE, import_table_name
from shoplake.core.lake.io import has_partition, iter_partition, read_partitions, write_partition
from shoplake.core.settings import get_settings

LATENESS_DAYS = get_settings().lateness_days  # read once, as the partition mappings are
RECONCILIATION = "bronze_rows_reconcile"
# A bronze partition bigger than SPILL_ROWS is decoded this many rows at a time: a decoded batch
# takes several times its Parquet size in memory.
BRONZE_BATCH_ROWS = 500_000

EVENTS = dg.AssetKey(["silver", "events"])

# Imported history (``shoplake import``) lands in bronze/import_<mapping>; declared here so the
# lineage shows it feeding silver beside Kafka.
IMPORT_SPECS = [
    dg.AssetSpec(
        ["bronze", import_table_name(p.stem)],
        group_name="bronze",
        kinds={"parquet"},
        partitions_def=daily_partitions,
        description=f"History imported with 'shoplake import --mapping {p.stem}', by event day.",
    )
    for p in sorted(MAPPINGS_DIR.glob("*.yaml"))
]


def bronze_event_tables(lake: LakeResource) -> list:
    """bronze/events and every bronze/import_* table present in the lake."""
    bronze = lake.table_dir("bronze", "events").parent
    imports = sorted(p for p in bronze.glob(f"{IMPORT_PREFIX}*") if p.name != REJECTS_TABLE)
    return [lake.table_dir("bronze", "events"), *imports]


def bronze_reader(tables: list, day: date) -> BronzeReader:
    """The bronze rows that can hold events of ``day``, batch by batch (see BronzeReader)."""

    def read(columns: list[str] | None) -> Iterator[pl.DataFrame]:
        for table in tables:
            for d in arrival_window(day, LATENESS_DAYS):
                for batch in iter_partition(table, d, columns, BRONZE_BATCH_ROWS, SPILL_ROWS):
                    yield batch if columns else batch.with_columns(arrival_date=pl.lit(d))

    return read


QUARANTINE = dg.AssetKey(["silver", "events_quarantine"])


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            EVENTS,
            deps=[
                dg.AssetDep(
                    ["bronze", "events"],
                    partition_mapping=dg.TimeWindowPartitionMapping(
                        start_offset=-1,
                        end_offset=LATENESS_DAYS,
                        allow_nonexistent_upstream_partitions=True,
                    ),
                )
            ]
            + [dg.AssetDep(spec.key) for spec in IMPORT_SPECS],
            group_name="silver",
            kinds={"parquet", "polars"},
            description="Events by event day (clock-skew corrected), validated against the contracts, "
            "deduplicated by event_id, with device/OS/browser and a bot flag.",
        ),
        dg.AssetSpec(
            QUARANTINE,
            deps=[EVENTS],
            group_name="silver",
            kinds={"parquet", "polars"},
            description="Rows kept out of silver/events, by arrival day, with a reason: future_event, "
            "late_beyond_window, contract_violation, unparseable.",
        ),
    ],
    check_specs=[
        dg.AssetCheckSpec(
            RECONCILIATION,
            asset=EVENTS,
            description="input rows = silver + quarantined + duplicates removed",
        )
    ],
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
)
def silver_events(context: dg.AssetExecutionContext, lake: LakeResource):
    tables = bronze_event_tables(lake)
    per_day: dict[str, Any] = {}
    schema = None
    for day in partition_days(context):
        if not any(has_partition(t, d) for t in tables for d in arrival_window(day, LATENESS_DAYS)):
            raise dg.Failure(
                f"no bronze/events partitions for {day} and the days after it: materialize bronze first"
            )
        read = bronze_reader(tables, day)
        # Which Kafka arrival days this day was built from: the speed layer's totals over the
        # same days are the like-for-like comparison (speed_layer_reconciliation).
        kafka_arrivals = [
            d.isoformat() for d in arrival_window(day, LATENESS_DAYS) if has_partition(tables[0], d)
        ]
        with build_silver_events_from(read, day, LATENESS_DAYS, context.log.info) as result:
            manifest = {
                "date": day.isoformat(),
                "lateness_days": LATENESS_DAYS,
                "kafka_arrival_days": kafka_arrivals,
                **result.stats,
            }
            write_partition(lake.table_dir("silver", "events"), day, result.parts, manifest)
            write_partition(
                lake.table_dir("silver", "events_quarantine"), day, result.quarantine, manifest
            )
            schema = result.schema
        per_day[day.isoformat()] = result.stats
        context.log.info(f"silver/events {day}: {result.stats}")
    totals = {k: sum(s[k] for s in per_day.values()) for k in next(iter(per_day.values()))}
    balanced = (
        totals["input_rows"]
        == totals["silver_rows"] + totals["quarantined"] + totals["duplicates_removed"]
    )
    yield dg.MaterializeResult(
        asset_key=EVENTS,
        metadata={
            "dagster/row_count": totals["silver_rows"],
            "duplicates_removed": totals["duplicates_removed"],
            "bots": totals["bots"],
            "partitions": per_day,
            "dagster/column_schema": column_schema(schema) if schema else None,
        },
    )
    yield dg.MaterializeResult(
        asset_key=QUARANTINE, metadata={"dagster/row_count": totals["quarantined"]}
    )
    yield dg.AssetCheckResult(
        asset_key=EVENTS,
        check_name=RECONCILIATION,
        passed=balanced,
        metadata={
            k: totals[k] for k in ("input_rows", "silver_rows", "quarantined", "duplicates_removed")
        },
    )


@dg.asset(
    key=["silver", "sessions"],
    deps=[
        dg.AssetDep(
            EVENTS,
            partition_mapping=dg.TimeWindowPartitionMapping(
                start_offset=-1, end_offset=1, allow_nonexistent_upstream_partitions=True
            ),
        )
    ],
    group_name="silver",
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    kinds={"parquet", "polars"},
    description="30-minute inactivity sessions per visitor, by the day they start, stitched to user_id.",
)
def silver_sessions(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    events_dir = lake.table_dir("silver", "events")
    per_day: dict[str, int] = {}
    frame = None
    for day in partition_days(context):
        window = read_partitions(
            events_dir, [day - timedelta(days=1), day, day + timedelta(days=1)], SESSION_COLUMNS
        )
        if not window:
            raise dg.Failure(f"silver/events for {day} is missing: materialize it first")
        frame = sessionize(pl.concat(window, how="diagonal_relaxed"), day)
        write_partition(lake.table_dir("silver", "sessions"), day, frame, {"date": day.isoformat()})
        per_day[day.isoformat()] = frame.height
    return dg.MaterializeResult(metadata=partition_metadata(per_day, frame))


def _shop_silver(table: str) -> dg.AssetsDefinition:
    history = table in SCD2_TRACKED
    desc = (
        f"SCD2 history of {table} ({SCD2_TRACKED[table]}) as of the end of the day, with valid_from/valid_to/is_current."
        if history
        else f"Current state of {table} as of the end of the day (latest version of each key)."
    )

    @dg.asset(
        key=["silver", table],
        deps=[dg.AssetKey(["bronze", f"shop_{table}"])],
        group_name="silver",
        partitions_def=daily_partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        kinds={"parquet", "polars"},
        description=desc + " Reads every bronze partition up to the day.",
    )
    def _asset(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
        per_day: dict[str, int] = {}
        frame = None
        for day in partition_days(context):
            hist = history_until(lake.table_dir("bronze", f"shop_{table}"), table, day)
            frame = scd2(hist, table) if history else current_state(hist, table)
            write_partition(lake.table_dir("silver", table), day, frame, {"date": day.isoformat()})
            per_day[day.isoformat()] = frame.height
        return dg.MaterializeResult(metadata=partition_metadata(per_day, frame))

    return _asset


silver_shop_assets = [_shop_silver(t) for t in SHOP_TABLES]

defs = dg.Definitions(assets=[*IMPORT_SPECS, silver_events, silver_sessions, *silver_shop_assets])
