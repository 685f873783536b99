"""Asset checks as data contracts. Names are constants; failing rows (a sample) go in metadata.

Cheap checks ride inside MaterializeResult (the silver reconciliation); these read the stored
partition back. The Pandera checks on silver are blocking: bad silver stops gold in the same run.
"""

import hashlib
import json
from datetime import date, timedelta

import dagster as dg
import pandera.polars as pa
import polars as pl

from pipeline_assets.partitions import daily_partitions
from pipeline_assets.silver.schema import SilverEvent
from resources import LakeResource
from shoplake.core.lake.io import (
    LakePath,
    has_partition,
    iter_partition,
    read_manifest,
    read_partition,
)

BRONZE_MANIFEST = "matches_manifest"
SILVER_CONTRACT = "pandera_contract"
SILVER_VOLUME = "volume_day_over_day"
VOLUME_DROP_WARN = 0.5
VALIDATE_BATCH_ROWS = 1_000_000


class SilverSession(pa.DataFrameModel):
    session_id: str = pa.Field(unique=True)
    session_date: pl.Date = pa.Field()
    anonymous_id: str = pa.Field()
    duration_seconds: float = pa.Field(ge=0, le=7 * 86_400)
    n_events: pl.Int32 = pa.Field(ge=1)
    revenue: float = pa.Field(ge=0)

    class Config:
        strict = False


def check_days(context: dg.AssetCheckExecutionContext) -> list[date]:
    """The days of this run: one, or a range under a single-run backfill (the daily schedule)."""
    return [date.fromisoformat(k) for k in context.partition_keys]


def combine(results: dict[date, dg.AssetCheckResult]) -> dg.AssetCheckResult:
    """One result for a range run: it passes if every day passes; the first failure's evidence
    is kept, and every day's figures are in ``per_day``."""
    if len(results) == 1:
        return next(iter(results.values()))
    failed = [d for d, r in results.items() if not r.passed]
    shown = results[failed[0]] if failed else next(iter(results.values()))
    per_day = {
        str(d): {k: getattr(v, "value", v) for k, v in r.metadata.items()}
        for d, r in results.items()
    }
    return dg.AssetCheckResult(
        passed=not failed,
        severity=shown.severity,
        description=shown.description,
        metadata={
            "days": len(results),
            "failed_days": ", ".join(map(str, failed)) or "none",
            **({f"{failed[0]} {k}": v for k, v in shown.metadata.items()} if failed else {}),
            "per_day": dg.MetadataValue.json(json.loads(json.dumps(per_day, default=str))),
        },
    )


def _failure_sample(err: pa.errors.SchemaErrors, n: int = 20) -> dg.MetadataValue:
    cases = err.failure_cases.head(n).select("column", "check", "failure_case", "index")
    with pl.Config(tbl_rows=n, tbl_width_chars=200):
        return dg.MetadataValue.md(f"```\n{cases}\n```")


def _kafka_manifest_check(name: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=dg.AssetKey(["bronze", name]),
        name=BRONZE_MANIFEST,
        partitions_def=daily_partitions,
        description="The stored Parquet has the rows and event_id checksum its manifest records.",
    )
    def _check(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> dg.AssetCheckResult:
        table = lake.table_dir("bronze", name)
        return combine({day: _manifest_day(table, day) for day in check_days(context)})

    return _check


def _manifest_day(table: LakePath, day: date) -> dg.AssetCheckResult:
    frame = read_partition(table, day, columns=["event_id"])  # a day can be 10M records
    manifest = read_manifest(table, day)
    if frame is None or manifest is None:
        return dg.AssetCheckResult(passed=False, metadata={"error": f"partition {day} is missing"})
    ids = sorted(i for i in frame["event_id"].to_list() if i)
    checksum = hashlib.sha256("\n".join(ids).encode()).hexdigest()
    return dg.AssetCheckResult(
        passed=frame.height == manifest["rows"] and checksum == manifest["event_id_checksum"],
        metadata={"rows": frame.height, "manifest_rows": manifest["rows"]},
    )


def _pandera_check(
    table: str, model: type[pa.DataFrameModel], description: str
) -> dg.AssetChecksDefinition:
    """A blocking check that the stored partition of silver/<table> satisfies ``model``."""

    @dg.asset_check(
        asset=dg.AssetKey(["silver", table]),
        name=SILVER_CONTRACT,
        partitions_def=daily_partitions,
        blocking=True,
        description=description,
    )
    def _check(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> dg.AssetCheckResult:
        folder = lake.table_dir("silver", table)
        return combine({day: _validate_day(folder, day, model) for day in check_days(context)})

    return _check


def _validate_day(
    folder: LakePath, day: date, model: type[pa.DataFrameModel]
) -> dg.AssetCheckResult:
    if not has_partition(folder, day):
        return dg.AssetCheckResult(passed=False, metadata={"error": "partition missing"})
    # Batch by batch (a day can be bigger than memory); uniqueness is checked on the whole day.
    unique = [c for c, f in model.to_schema().columns.items() if f.unique]
    rows, failures, sample, keys = 0, 0, None, []
    for batch in iter_partition(folder, day, batch_rows=VALIDATE_BATCH_ROWS):
        rows += batch.height
        keys.append(batch.select(unique))
        try:
            model.validate(batch, lazy=True)
        except pa.errors.SchemaErrors as err:
            failures += len(err.failure_cases)
            sample = sample or _failure_sample(err)
    duplicated = {
        c: n for c in unique if (n := pl.concat([k[c] for k in keys]).is_duplicated().sum())
    }
    if failures or duplicated:
        return dg.AssetCheckResult(
            passed=False,
            metadata={
                "failures": failures,
                **({"sample": sample} if sample else {}),
                **{f"duplicated {c}": n for c, n in duplicated.items()},
            },
        )
    return dg.AssetCheckResult(passed=True, metadata={"rows": rows})


silver_events_contract = _pandera_check(
    "events",
    SilverEvent,
    "silver/events satisfies the SilverEvent Pandera model; gold is not built on bad silver.",
)
silver_sessions_contract = _pandera_check(
    "sessions", SilverSession, "silver/sessions: unique ids, sane durations and counts."
)


@dg.asset_check(
    asset=dg.AssetKey(["silver", "events"]),
    name=SILVER_VOLUME,
    partitions_def=daily_partitions,
    description=f"Warns when a day has less than {VOLUME_DROP_WARN:.0%} of the previous day's events.",
)
def silver_events_volume(
    context: dg.AssetCheckExecutionContext, lake: LakeResource
) -> dg.AssetCheckResult:
    table = lake.table_dir("silver", "events")
    return combine({day: _volume_day(table, day) for day in check_days(context)})


def _volume_day(table: LakePath, day: date) -> dg.AssetCheckResult:
    today, yesterday = read_manifest(table, day), read_manifest(table, day - timedelta(days=1))
    rows = today["silver_rows"] if today else 0
    if yesterday is None or yesterday["silver_rows"] == 0:
        return dg.AssetCheckResult(passed=True, metadata={"rows": rows, "previous_day": "none"})
    ratio = rows / yesterday["silver_rows"]
    return dg.AssetCheckResult(
        passed=ratio >= VOLUME_DROP_WARN,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "rows": rows,
            "previous_rows": yesterday["silver_rows"],
            "ratio": round(ratio, 3),
        },
    )


defs = dg.Definitions(
    asset_checks=[
        _kafka_manifest_check("events"),
        _kafka_manifest_check("dlq_events"),
        silver_events_contract,
        silver_events_volume,
        silver_sessions_contract,
    ]
)
