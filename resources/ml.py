"""Resources of the ML layer: the MLflow tracking store and the Feast feature store."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from shoplake.core.ml.tracking import TrackingStore


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
