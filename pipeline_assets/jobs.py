"""Jobs and the daily schedule (the seeds' Airflow DAGs, as Dagster jobs).

Why a schedule and not declarative automation: the daily run is "yesterday plus the
LATENESS_DAYS before it, whose silver can still gain late events", as ONE run over that range
(single-run backfill), keyed by the day so that a daemon restart never runs it twice, and skipped
while no day has closed. ``AutomationCondition.on_cron`` requests only the latest partition;
``in_latest_time_window(lookback_delta=...)`` with ``cron_tick_passed(...)`` can reach the late
days, but as a condition on every bronze, silver and dbt asset, evaluated per partition, which
states the same rule in more places and less plainly than :func:`daily_run_request` does here.
"""

from datetime import date

import dagster as dg

from pipeline_assets.partitions import daily_partitions
from pipeline_assets.silver.assets import LATENESS_DAYS
from shoplake.core.days import lateness_window

LAKE = dg.AssetSelection.key_prefixes(["bronze"], ["silver"], ["staging"], ["gold"], ["ml"])

# daily ETL: bronze -> silver -> gold -> ML for a day (or a range, in one run), with every check.
daily_etl_job = dg.define_asset_job(
    "daily_etl",
    selection=LAKE,
    description="Bronze, silver, gold and the ML layer (features, models, feature store) for a "
    "day or a range of days (the daily ETL DAG).",
)

# dbt run: the gold layer alone, for re-running marts over existing silver.
dbt_run_job = dg.define_asset_job(
    "dbt_run",
    selection=dg.AssetSelection.key_prefixes(["gold"])
    | dg.AssetSelection.key_prefixes(["staging"]),
    description="dbt build of staging and the marts for a day (the dbt run DAG).",
)


def daily_run_request(run_day: date) -> dg.RunRequest | dg.SkipReason:
    """The run for ``run_day``: yesterday and the LATENESS_DAYS before it, whose silver may gain
    late events that arrived yesterday. Skipped while no partition has closed yet."""
    first = daily_partitions.start.date()
    window = lateness_window(run_day, first, LATENESS_DAYS)
    if window is None:
        return dg.SkipReason(f"no closed day yet: the first partition is {first}")
    start, end = (d.isoformat() for d in window)
    return dg.RunRequest(
        run_key=f"daily-{end}",
        tags={
            "dagster/asset_partition_range_start": start,
            "dagster/asset_partition_range_end": end,
        },
    )


@dg.schedule(job=daily_etl_job, cron_schedule="0 2 * * *", execution_timezone="UTC")
def daily_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    """02:00 UTC: the previous day, plus the days whose late events may have arrived since."""
    return daily_run_request(context.scheduled_execution_time.date())


defs = dg.Definitions(jobs=[daily_etl_job, dbt_run_job], schedules=[daily_schedule])
