"""The code location's root: merges per-layer definitions and does nothing else."""

from __future__ import annotations

import dagster as dg

from pipeline_assets import checks, jobs
from pipeline_assets.bronze import assets as bronze
from pipeline_assets.gold import dbt as gold
from pipeline_assets.ml import anomaly as ml_anomaly
from pipeline_assets.ml import feature_store as ml_feature_store
from pipeline_assets.ml import features as ml_features
from pipeline_assets.ml import forecast as ml_forecast
from pipeline_assets.ml import segments as ml_segments
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
    ml_features.defs,
    ml_anomaly.defs,
    ml_forecast.defs,
    ml_segments.defs,
    ml_feature_store.defs,
    speed_sensors.defs,
    checks.defs,
    jobs.defs,
    ops.defs,
    notify.defs,
    dg.Definitions(resources=resources_for()),
)
