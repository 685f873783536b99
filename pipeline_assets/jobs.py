"""Jobs and the daily schedule (the seeds' Airflow DAGs, as Dagster jobs)."""

import dagster as dg

from pipeline_assets.partitions import daily_partitions

# daily ETL: bronze -> silver -> gold for one day, with every check.
daily_etl_job = dg.define_asset_job(
    "daily_etl",
    selection=dg.AssetSelection.key_prefixes(["bronze"], ["silver"], ["staging"], ["gold"]),
    partitions_def=daily_partitions,
    description="Bronze, silver and gold for one day (the daily ETL DAG).",
)

# dbt run: the gold layer alone, for re-running marts over existing silver.
dbt_run_job = dg.define_asset_job(
    "dbt_run",
    selection=dg.AssetSelection.key_prefixes(["gold"])
    | dg.AssetSelection.key_prefixes(["staging"]),
    partitions_def=daily_partitions,
    description="dbt build of staging and the marts for a day (the dbt run DAG).",
)

# 02:00 UTC every day, for the previous (complete) day.
daily_schedule = dg.build_schedule_from_partitioned_job(
    daily_etl_job, hour_of_day=2, minute_of_hour=0
)

defs = dg.Definitions(jobs=[daily_etl_job, dbt_run_job], schedules=[daily_schedule])
