"""The ML layer in the code location: gold -> features -> models -> feature store, every asset on
the one daily partitions definition, the feature tables with their schemas and contracts."""

from __future__ import annotations

import dagster as dg

from pipeline_assets.definitions import defs
from pipeline_assets.partitions import daily_partitions

SPECS = {spec.key: spec for spec in defs.resolve_all_asset_specs()}
GRAPH = defs.resolve_asset_graph()


def key(path: str) -> dg.AssetKey:
    return dg.AssetKey(path.split("/"))


GROUPS = {
    "ml/user_daily_features": "ml_features",
    "ml/product_daily_features": "ml_features",
    "ml/user_anomalies": "ml_models",
    "ml/revenue_forecast": "ml_models",
    "ml/forecast_backtest": "ml_models",
    "ml/customer_segments": "ml_models",
    "ml/feature_store": "ml_serving",
}


def test_every_ml_asset_is_a_daily_partitioned_asset_in_its_group():
    ml = {k.to_user_string() for k in SPECS if k.path[0] == "ml"}
    assert ml == set(GROUPS)
    for path, group in GROUPS.items():
        spec = SPECS[key(path)]
        assert spec.group_name == group, path
        assert spec.partitions_def == daily_partitions, path
        node = GRAPH.get(key(path))
        assert node.backfill_policy == dg.BackfillPolicy.single_run(), path


def upstream(path: str) -> set[str]:
    return {k.to_user_string() for k in GRAPH.get(key(path)).parent_keys}


def test_lineage_runs_gold_features_models_feature_store():
    assert {"gold/fct_events", "gold/fct_sessions"} <= upstream("ml/user_daily_features")
    assert "gold/mart_product_performance" in upstream("ml/product_daily_features")
    assert "ml/user_daily_features" in upstream("ml/user_anomalies")
    assert "gold/mart_daily_kpis" in upstream("ml/revenue_forecast")
    assert {"gold/mart_rfm_segments", "ml/user_daily_features"} <= upstream("ml/customer_segments")
    assert {
        "ml/user_daily_features",
        "ml/product_daily_features",
        "ml/customer_segments",
    } <= upstream("ml/feature_store")


def test_feature_tables_declare_their_schema_and_contracts():
    checks = {
        (spec.asset_key.to_user_string(), spec.name): spec
        for definition in defs.asset_checks or []
        for spec in definition.check_specs
    }
    for path in ("ml/user_daily_features", "ml/product_daily_features"):
        schema = SPECS[key(path)].metadata["dagster/column_schema"]
        assert {c.name for c in schema.columns} >= {"feature_date", "feature_timestamp"}
        assert checks[(path, "nulls_and_ranges")].blocking
        assert (path, "point_in_time") in checks
