"""The code location's root: merges per-layer definitions and does nothing else."""

from __future__ import annotations

import dagster as dg

from pipeline_assets import checks, jobs
from pipeline_assets.bronze import assets as bronze
from pipeline_assets.gold import dbt as gold
from pipeline_assets.ops import jobs as ops
from pipeline_assets.ops import notify
from pipeline_assets.silver import assets as silver
from pipeline_assets.sources import kafka_topics
from pipeline_assets.speed import assets as speed
from pipeline_assets.speed import sensors as speed_sensors
from resources import resources_for

defs = dg.Definitions.merge(
    kafka_topics.defs,
    bronze.defs,
    silver.defs,
    gold.build_defs(),
    speed.defs,
    speed_sensors.defs,
    checks.defs,
    jobs.defs,
    ops.defs,
    notify.defs,
    dg.Definitions(resources=resources_for()),
)
