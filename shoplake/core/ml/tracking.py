"""MLflow tracking: one run per training, its params, metrics and model, the model registered.

The store is a SQLite backend with local artifacts under ``SHOPLAKE_HOME/mlflow`` by default, or
the server named by ``SHOPLAKE_MLFLOW_TRACKING_URI``.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class TrackingStore:
    """Where runs go. ``artifact_dir`` is used for experiments created on a local backend."""

    tracking_uri: str
    artifact_dir: Path | None = None
    ui_url: str = ""

    @property
    def is_local(self) -> bool:
        return self.tracking_uri.startswith("sqlite:") or "://" not in self.tracking_uri


@dataclass(frozen=True)
class LoggedRun:
    run_id: str
    experiment_id: str
    model_uri: str | None
    registered_version: str | None
    ui_url: str = ""

    @property
    def link(self) -> str:
        """The run in the MLflow UI (empty when no UI address is known)."""
        if not self.ui_url:
            return ""
        return f"{self.ui_url.rstrip('/')}/#/experiments/{self.experiment_id}/runs/{self.run_id}"


@contextmanager
def _quiet() -> Iterator[None]:
    """MLflow logs every run's URL and warns about optional extras; keep the run log readable."""
    logger = logging.getLogger("mlflow")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _experiment_id(mlflow: Any, store: TrackingStore, name: str) -> str:
    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = None
    if store.is_local and store.artifact_dir is not None:
        store.artifact_dir.mkdir(parents=True, exist_ok=True)
        location = (store.artifact_dir / name).as_uri()
    return mlflow.create_experiment(name, artifact_location=location)


def log_training(
    store: TrackingStore,
    *,
    experiment: str,
    run_name: str,
    params: Mapping[str, Any],
    metrics: Mapping[str, float],
    log_model: Callable[[], Any] | None = None,
    tags: Mapping[str, str] | None = None,
) -> LoggedRun:
    """Log one training run. ``log_model`` is called inside the active run and returns MLflow's
    ``ModelInfo`` (e.g. ``mlflow.sklearn.log_model(..., registered_model_name=...)``)."""
    import mlflow

    if store.is_local:
        Path(store.tracking_uri.removeprefix("sqlite:///")).parent.mkdir(
            parents=True, exist_ok=True
        )
    with _quiet():
        mlflow.set_tracking_uri(store.tracking_uri)
        mlflow.set_registry_uri(store.tracking_uri)
        experiment_id = _experiment_id(mlflow, store, experiment)
        with mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run:
            mlflow.set_tags(dict(tags or {}))
            mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
            mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v == v})
            info = log_model() if log_model is not None else None
    version = getattr(info, "registered_model_version", None)
    return LoggedRun(
        run_id=run.info.run_id,
        experiment_id=experiment_id,
        model_uri=getattr(info, "model_uri", None),
        registered_version=None if version is None else str(version),
        ui_url=store.ui_url,
    )
