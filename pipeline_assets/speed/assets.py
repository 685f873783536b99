"""The speed layer in the asset graph: Bytewax's tables as external assets fed by shop.events.

Dagster does not run the stream (``shoplake stream`` does, continuously); it shows where the
tables come from and who reads them, records observations of them (rows, freshness, lag) from
``speed_layer_sensor``, and checks each closed day of the speed layer against batch gold.
"""

from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import polars as pl

from pipeline_assets.checks import check_days, combine
from pipeline_assets.partitions import daily_partitions
from pipeline_assets.sources.kafka_topics import topic_key
from resources import LakeResource, WarehouseResource
from shoplake.core.lake.io import read_manifest
from shoplake.core.platform.topics import EVENTS_TOPIC
from shoplake.core.speed.rows import TABLES
from shoplake.core.speed.tables import read_table, table_dir

SPEED_RECONCILIATION = "speed_layer_reconciliation"
RECONCILE_TOLERANCE = 0.005  # 0.5 %


def speed_key(table: str) -> dg.AssetKey:
    return dg.AssetKey(["speed", table])


# The stream writes every few seconds and the lag sensor observes the tables every minute: no new
# rows for 2 minutes is worth a look, 10 minutes means the speed layer is down or stuck.
SPEED_FRESHNESS = dg.FreshnessPolicy.time_window(
    fail_window=timedelta(minutes=10), warn_window=timedelta(minutes=2)
)


def speed_spec(table: str) -> dg.AssetSpec:
    cls = TABLES[table]
    return dg.AssetSpec(
        key=speed_key(table),
        group_name="speed",
        kinds={"bytewax", "parquet"},
        deps=[topic_key(EVENTS_TOPIC)],
        freshness_policy=SPEED_FRESHNESS,
        description=(cls.__doc__ or table).strip().split("\n\n")[0],
        metadata={
            "natural_key": ", ".join(cls.KEY),
            "partitioned_by": cls.DATE_COLUMN,
            "written_by": "shoplake stream (Bytewax), continuously",
        },
    )


SPEED_SPECS = [speed_spec(t) for t in TABLES]

GOLD_TOTALS_SQL = """
select
    count(*) as events,
    count(*) filter (where event_type = 'purchase') as purchases,
    coalesce(sum(order_total) filter (where event_type = 'purchase' and not is_bot), 0) as revenue
from gold.fct_events
where event_date = $day
"""


def gold_totals(warehouse: WarehouseResource, day: date) -> dict[str, float]:
    """Events, purchases and non-bot revenue of a day in batch gold."""
    row = warehouse.query(GOLD_TOTALS_SQL, {"day": day}).row(0, named=True)
    return {k: float(v or 0) for k, v in row.items()}


def speed_totals(
    lake_root: str, day: date, arrival_days: list[date] | None = None
) -> dict[str, float] | None:
    """The speed layer's totals of event day ``day``, summed over ``arrival_days`` (all of them
    when None). None when the stream holds nothing for them."""
    frame = read_table("daily_totals", lake_root, start=day, end=day)
    frame = frame.filter(pl.col("event_date") == day)
    if arrival_days is not None:
        frame = frame.filter(pl.col("arrival_date").is_in(arrival_days))
    if frame.height == 0:
        return None
    sums = frame.select(pl.col("events", "purchases", "revenue", "bot_revenue").sum()).row(
        0, named=True
    )
    return {
        "events": float(sums["events"]),
        "purchases": float(sums["purchases"]),
        "revenue": float(sums["revenue"] - sums["bot_revenue"]),
    }


def silver_arrival_days(lake: LakeResource, day: date) -> list[date] | None:
    """The Kafka arrival days (bronze/events partitions) silver read for ``day``, from its
    manifest; None when silver has not built the day."""
    manifest = read_manifest(lake.table_dir("silver", "events"), day)
    if manifest is None:
        return None
    return [date.fromisoformat(d) for d in manifest.get("kafka_arrival_days", [])]


def compare(speed: dict[str, float], gold: dict[str, float]) -> dict[str, float]:
    """Relative difference per measure (0 when both are 0)."""
    out = {}
    for k in ("events", "purchases", "revenue"):
        base = max(abs(gold[k]), abs(speed[k]))
        out[k] = 0.0 if base == 0 else abs(speed[k] - gold[k]) / base
    return out


@dg.asset_check(
    asset=dg.AssetKey(["gold", "fct_events"]),
    name=SPEED_RECONCILIATION,
    partitions_def=daily_partitions,
    additional_deps=[speed_key("daily_totals")],
    description=(
        "The speed layer's daily totals (events, purchases, revenue) agree with batch gold within "
        "0.5 % on the same input: the speed totals are summed over exactly the Kafka arrival days "
        "silver read for the day, so late events that arrived since do not count on one side only."
    ),
)
def speed_layer_reconciliation(
    context: dg.AssetCheckExecutionContext, lake: LakeResource, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    return combine({day: reconcile_day(lake, warehouse, day) for day in check_days(context)})


def reconcile_day(
    lake: LakeResource, warehouse: WarehouseResource, day: date
) -> dg.AssetCheckResult:
    """Speed vs gold for ``day`` on the same input. Fails (ERROR) when they differ by more than
    the tolerance; warns when one side has nothing to compare."""
    arrivals = silver_arrival_days(lake, day)
    if arrivals is None:
        return dg.AssetCheckResult(
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            description=f"silver/events has no partition for {day}: materialize it first "
            f"(shoplake materialize {day})",
        )
    if not table_dir(Path(lake.speed_lake_root), "daily_totals").exists():
        return dg.AssetCheckResult(
            passed=True,
            metadata={"speed_layer": "never run on this lake"},
            description="no speed layer has written to this lake (speed/daily_totals does not "
            "exist): nothing to reconcile. Start 'shoplake stream' to compare the two layers.",
        )
    speed = speed_totals(lake.speed_lake_root, day, arrivals)
    if speed is None:
        return dg.AssetCheckResult(
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"arrival_days": ", ".join(map(str, arrivals)) or "none"},
            description=(
                f"the speed layer has no daily totals for {day}: is `shoplake stream` running, "
                "and did it read this day from Kafka? Start it with 'shoplake stream'."
            ),
        )
    gold = gold_totals(warehouse, day)
    diff = compare(speed, gold)
    worst = max(diff.values())
    metadata = {f"{k}_speed": speed[k] for k in speed} | {f"{k}_gold": gold[k] for k in gold}
    metadata |= {f"{k}_rel_diff": round(v, 6) for k, v in diff.items()}
    metadata["arrival_days"] = ", ".join(map(str, arrivals))
    return dg.AssetCheckResult(
        passed=worst <= RECONCILE_TOLERANCE,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata=metadata,
        description=f"largest relative difference {worst:.3%} (tolerance {RECONCILE_TOLERANCE:.1%}) "
        f"over arrival days {', '.join(map(str, arrivals))}",
    )


defs = dg.Definitions(assets=SPEED_SPECS, asset_checks=[speed_layer_reconciliation])
