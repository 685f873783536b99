"""The ML layer's logic, free of Dagster: features, models, tracking and the feature store.

The Dagster assets that run it are in pipeline_assets/ml; each module here is usable on its own
(the benchmarks in bench/ call them directly).
"""
