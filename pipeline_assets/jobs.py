"""Jobs and the daily schedule (the seeds' Airflow DAGs, as Dagster jobs)."""

from datetime import timedelta

import dagster as dg

from pipeline_assets.partitions import daily_partitions
from pipeline_assets.silver.assets import LATENESS_DAYS

LAKE = dg.AssetSelection.key_prefixes(["bronze"], ["silver"], ["staging"], ["gold"])

# daily ETL: bronze -> silver -> gold for a day (or a range, in one run), with every check.
daily_etl_job = dg.define_asset_job(
    "daily_etl",
    selection=LAKE,
    partitions_def=daily_partitions,
    description="Bronze, silver and gold for a day or a range of days (the daily ETL DAG).",
)

# dbt run: the gold layer alone, for re-running marts over existing silver.
dbt_run_job = dg.define_asset_job(
    "dbt_run",
    selection=dg.AssetSelection.key_prefixes(["gold"])
    | dg.AssetSelection.key_prefixes(["staging"]),
    partitions_def=daily_partitions,
    description="dbt build of staging and the marts for a day (the dbt run DAG).",
)


def lateness_window(scheduled_date) -> tuple[str, str]:
    """The partitions one daily run covers: yesterday and the LATENESS_DAYS before it, whose
    silver may gain late events that arrived yesterday."""
    end = scheduled_date - timedelta(days=1)
    start = max(end - timedelta(days=LATENESS_DAYS), daily_partitions.start.date())
    return start.isoformat(), end.isoformat()


@dg.schedule(job=daily_etl_job, cron_schedule="0 2 * * *", execution_timezone="UTC")
def daily_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """02:00 UTC: the previous day, plus the days whose late events may have arrived since."""
    start, end = lateness_window(context.scheduled_execution_time.date())
    return dg.RunRequest(
        run_key=f"daily-{end}",
        tags={
            "dagster/asset_partition_range_start": start,
            "dagster/asset_partition_range_end": end,
        },
    )


defs = dg.Definitions(jobs=[daily_etl_job, dbt_run_job], schedules=[daily_schedule])
