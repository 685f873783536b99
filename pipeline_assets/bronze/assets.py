"""Bronze: raw records by arrival day, from Kafka and from the shop's order database."""

from datetime import date
from typing import Any

import dagster as dg
import polars as pl

from pipeline_assets.bronze.kafka_day import extract_day
from pipeline_assets.bronze.shopdb import SHOP_TABLES, extract_table, table_schema
from pipeline_assets.partitions import daily_partitions
from pipeline_assets.policies import (
    IO_RETRY,
    column_schema,
    fail_without_retry,
    partition_days,
    partition_metadata,
)
from pipeline_assets.sources.kafka_topics import topic_key
from resources import KafkaResource, LakeResource, PIIResource, ShopDBResource
from shoplake.core.lake.io import LakePath, stored_days, write_partition
from shoplake.core.platform.kafka import wait_for_broker
from shoplake.core.platform.topics import DLQ_TOPIC, EVENTS_TOPIC


def _kafka_day_asset(name: str, topic: str, dlq: bool, description: str) -> dg.AssetsDefinition:
    @dg.asset(
        key=["bronze", name],
        group_name="bronze",
        partitions_def=daily_partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        retry_policy=IO_RETRY,
        deps=[topic_key(topic)],
        kinds={"kafka", "parquet", "polars"},
        description=description,
    )
    def _asset(
        context: dg.AssetExecutionContext, kafka: KafkaResource, lake: LakeResource
    ) -> dg.MaterializeResult:
        table_dir = lake.table_dir("bronze", name)
        per_day: dict[str, Any] = {}
        total = nbytes = 0
        frame = None
        with fail_without_retry():
            wait_for_broker(kafka.bootstrap_servers, timeout=15)
        for day in partition_days(context):
            extract = extract_day(kafka.bootstrap_servers, topic, day, dlq=dlq)
            written = write_partition(table_dir, day, extract.frame, extract.manifest)
            frame = extract.frame
            per_day[day.isoformat()] = {"rows": written.rows, "bytes": written.bytes}
            total += written.rows
            nbytes += written.bytes
            context.log.info(f"{name} {day}: {written.rows} records from {topic} -> {written.path}")
        metadata: dict[str, Any] = {
            "dagster/row_count": total,
            "bytes": nbytes,
            "partitions": per_day,
            "path": str(table_dir),
        }
        if frame is not None:
            metadata["dagster/column_schema"] = column_schema(frame)
        return dg.MaterializeResult(metadata=metadata)

    return _asset


bronze_events = _kafka_day_asset(
    "events",
    EVENTS_TOPIC,
    False,
    "Every record of shop.events whose Kafka timestamp (collector receive time) falls in the day, "
    "as received, with partition/offset and a manifest.",
)
bronze_dlq_events = _kafka_day_asset(
    "dlq_events",
    DLQ_TOPIC,
    True,
    "Every record of shop.events.dlq for the day: rejected events with their reason, kept and queryable.",
)


def _shop_table_asset(table: str) -> dg.AssetsDefinition:
    @dg.asset(
        key=["bronze", f"shop_{table}"],
        group_name="bronze",
        partitions_def=daily_partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        retry_policy=IO_RETRY,
        kinds={"postgres", "parquet", "polars"},
        description=f"Rows of the shop database's {table} table whose updated_at falls in the day "
        "(incremental). The earliest partition in the lake also holds everything created before "
        "it (the initial load), whichever day that is. Empty when no order database is configured.",
    )
    def _asset(
        context: dg.AssetExecutionContext,
        shopdb: ShopDBResource,
        lake: LakeResource,
        pii: PIIResource,
    ) -> dg.MaterializeResult:
        table_dir = lake.table_dir("bronze", f"shop_{table}")
        days = sorted(partition_days(context))
        if (why := shopdb.missing()) is not None:
            context.log.warning(f"bronze/shop_{table}: {why}; writing empty partitions")
            return _empty_shop_partitions(table_dir, table, days, why)
        conn, placeholder = shopdb.connect()
        pseudo = pii.pseudonymizer()
        per_day: dict[str, int] = {}
        initial_days = []
        frame = None
        try:
            for day in days:
                initial = is_initial_load(table_dir, day)
                frame = extract_table(conn, placeholder, table, day, initial, pseudo)
                manifest = {"table": table, "date": day.isoformat(), "initial_load": initial}
                written = write_partition(table_dir, day, frame, manifest)
                per_day[day.isoformat()] = written.rows
                if initial:
                    initial_days.append(day.isoformat())
        finally:
            conn.close()
        metadata = partition_metadata(per_day, frame)
        if initial_days:
            metadata["initial_load"] = ", ".join(initial_days)
        return dg.MaterializeResult(metadata=metadata)

    return _asset


def is_initial_load(table_dir: LakePath, day: date) -> bool:
    """A shop table's partition takes the initial load when no earlier day is in the lake, so the
    dimensions are complete from whichever day the lake starts (re-running it gives it again)."""
    return not any(d < day for d in stored_days(table_dir))


def _empty_shop_partitions(
    table_dir: LakePath, table: str, days: list[date], why: str
) -> dg.MaterializeResult:
    frame = pl.DataFrame(schema=table_schema(table))
    per_day = {}
    for day in days:
        manifest = {"table": table, "date": day.isoformat(), "source": "none", "why": why}
        per_day[day.isoformat()] = write_partition(table_dir, day, frame, manifest).rows
    metadata = partition_metadata(per_day, frame)
    metadata["source"] = dg.MetadataValue.text(f"none: {why}")
    return dg.MaterializeResult(metadata=metadata)


bronze_shop_assets = [_shop_table_asset(t) for t in SHOP_TABLES]

defs = dg.Definitions(assets=[bronze_events, bronze_dlq_events, *bronze_shop_assets])
