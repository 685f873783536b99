"""Resources of the ML layer: the MLflow tracking store and the Feast feature store."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg

from shoplake.core.ml.feature_store import StoreConfig, build_store
from shoplake.core.ml.tracking import TrackingStore

if TYPE_CHECKING:
    from feast import FeatureStore


class MlflowResource(dg.ConfigurableResource):
    """Where training runs are logged and models registered: SQLite and local artifacts under
    SHOPLAKE_HOME/mlflow by default, or a tracking server (SHOPLAKE_MLFLOW_TRACKING_URI).

    Not dagster-mlflow's ``mlflow_tracking``: that resource opens one MLflow run per Dagster run,
    named after the job, and needs a job hook to end it; here each asset trains its own model and
    logs its own run, and assets are materialized without a job.
    """

    tracking_uri: str
    artifact_dir: str = ""
    ui_url: str = ""  # the MLflow UI, for links in asset metadata

    def store(self) -> TrackingStore:
        return TrackingStore(
            tracking_uri=self.tracking_uri,
            artifact_dir=Path(self.artifact_dir) if self.artifact_dir else None,
            ui_url=self.ui_url,
        )


class FeastResource(dg.ConfigurableResource):
    """The Feast feature store: registry (and, without ``pg_dsn``, the SQLite online store) under
    ``feast_dir``; offline sources are the lake's ``ml/*`` feature Parquet under ``lake_root``.
    The repo definition itself is shoplake.core.ml.feature_store."""

    feast_dir: str
    lake_root: str
    s3_endpoint_url: str | None = None
    pg_dsn: str | None = None  # set: Feast's Postgres online store

    def store_config(self) -> StoreConfig:
        return StoreConfig(
            feast_dir=Path(self.feast_dir),
            lake_root=self.lake_root,
            s3_endpoint_url=self.s3_endpoint_url,
            pg_dsn=self.pg_dsn,
        )

    def store(self) -> FeatureStore:
        return build_store(self.store_config())
