"""Customer segments: k-means on scaled RFM plus recent behaviour, with segment ids that keep
their meaning from day to day.

A day's customers are the rows of gold.mart_rfm_segments as of that day (everyone with an order
up to it); their behaviour is summed from the last 28 days of ml/user_daily_features (zero for a
customer not seen in that window). Every input is log1p-transformed (counts and money are heavily
skewed) and standardized, then clustered with k-means, k fixed at 4: bench/ml_segments.py measured
the silhouette flat over k = 3..6 on the simulated shop (k=4: the best lowest day, and more
customers keep their segment than with 5 or 6), and a fixed k lets every day's clusters be
matched one to one with yesterday's. k-means beat a Gaussian mixture on the same inputs on
every day measured (see the bench).

Stable ids: today's centroids are matched to the previous day's (Hungarian assignment on the
distance between centroids, in today's standardized units), so segment 2 is the same kind of
customer every day. The fitted model's centroids are put in segment order, so the logged model's
``predict`` returns segment ids. Labels ("high value", "at risk", ...) are read off each day's
centroid profile by matching the centroids to fixed archetypes, again one to one, with a bias to
the label the segment had the day before (a centroid between two archetypes does not flip).

Deterministic: rows sorted by visitor, a fixed random_state, and no dependence on input order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score
from sklearn.mixture import GaussianMixture
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from shoplake.core.ml.tracking import LoggedRun, TrackingStore, log_training

K = 4
RANDOM_STATE = 0
N_INIT = 10
BEHAVIOUR_DAYS = 28
# Below this many customers a day is not segmented (k-means on a handful of points says nothing);
# its partition is written empty and says why.
MIN_CUSTOMERS = 5 * K
# The silhouette is O(n²): above this many customers it is computed on a fixed sample.
SILHOUETTE_SAMPLE = 5_000

RFM_FEATURES = ("recency_days", "frequency", "monetary")
BEHAVIOUR_FEATURES = ("n_events_28d", "active_days_28d", "cart_day_share_28d")
FEATURES = RFM_FEATURES + BEHAVIOUR_FEATURES

INPUT_SCHEMA: dict[str, pl.DataType] = {
    "visitor_id": pl.String(),
    "recency_days": pl.Int64(),
    "frequency": pl.Int64(),
    "monetary": pl.Float64(),
    "n_events_28d": pl.Int64(),
    "active_days_28d": pl.Int64(),
    "cart_day_share_28d": pl.Float64(),
}

SEGMENT_SCHEMA: dict[str, pl.DataType] = {
    "as_of_date": pl.Date(),
    "visitor_id": pl.String(),
    "segment_id": pl.Int64(),
    "segment_label": pl.String(),
    **{name: INPUT_SCHEMA[name] for name in FEATURES},
    "feature_timestamp": pl.Datetime("us", "UTC"),  # end of the day: when Feast may serve the row
}

# What each label looks like, in standard deviations from the day's mean customer, per feature.
# Each day's centroids are matched one to one to the nearest of these (k of them are used).
ARCHETYPES: dict[str, dict[str, float]] = {
    "high value": {
        "recency_days": -0.5,
        "frequency": 1.5,
        "monetary": 1.0,
        "n_events_28d": 0.5,
        "active_days_28d": 0.5,
        "cart_day_share_28d": 0.0,
    },
    "engaged browsers": {  # many visits lately, bought little
        "recency_days": 0.0,
        "frequency": -0.5,
        "monetary": -0.5,
        "n_events_28d": 0.5,
        "active_days_28d": 0.5,
        "cart_day_share_28d": -0.3,
    },
    "focused shoppers": {  # few visits, most of them with a cart add
        "recency_days": 0.0,
        "frequency": -0.5,
        "monetary": 0.0,
        "n_events_28d": 0.0,
        "active_days_28d": -1.0,
        "cart_day_share_28d": 1.5,
    },
    "at risk": {  # bought, then went quiet
        "recency_days": 1.0,
        "frequency": -0.5,
        "monetary": 0.0,
        "n_events_28d": -1.5,
        "active_days_28d": -1.0,
        "cart_day_share_28d": -1.0,
    },
    "new customers": {
        "recency_days": -1.5,
        "frequency": -0.5,
        "monetary": -0.5,
        "n_events_28d": -0.5,
        "active_days_28d": -0.5,
        "cart_day_share_28d": 0.0,
    },
    "lapsed high value": {
        "recency_days": 1.5,
        "frequency": 1.0,
        "monetary": 1.0,
        "n_events_28d": -1.0,
        "active_days_28d": -1.0,
        "cart_day_share_28d": -0.5,
    },
}

REGISTERED_MODEL = "shoplake-customer-segments"
EXPERIMENT = "shoplake-customer-segments"
# The model is kept in skops' format (no pickle); loading it trusts the log1p transform's ufuncs.
SKOPS_TRUSTED = ("numpy.log1p", "numpy.expm1")

# A segment keeps yesterday's label unless another archetype is this much nearer (standard
# deviations): a centroid halfway between two archetypes does not flip its label every day.
# bench/ml_segments.py measured the label changes with and without it.
LABEL_STICKINESS = 0.5

RFM_SQL = """
select user_id as visitor_id, recency_days, frequency, monetary
from gold.mart_rfm_segments
where as_of_date = $day
order by user_id
"""

# Centroids in feature units, by segment id: {segment_id: {feature: value}}.
Centroids = dict[int, dict[str, float]]


@dataclass(frozen=True)
class PreviousDay:
    """What one day's segmentation hands the next: centroids (feature units) and labels by id."""

    centroids: Centroids
    labels: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Segmentation:
    """One day's clustering. ``segment_ids`` follow the rows of the inputs it was fitted on."""

    model: Pipeline
    features: tuple[str, ...]
    segment_ids: np.ndarray
    centroids: Centroids
    labels: dict[int, str]
    silhouette: float
    matched: bool  # ids matched to previous centroids (else ordered by value, most first)
    sizes: dict[int, int] = field(default_factory=dict)

    def carry(self) -> PreviousDay:
        return PreviousDay(self.centroids, self.labels)


def rfm_customers(query: Callable, day: date) -> pl.DataFrame:
    """The customers as of ``day`` with their recency, frequency and monetary value."""
    frame = query(RFM_SQL, {"day": day})
    if frame.is_empty():
        return pl.DataFrame(schema={n: INPUT_SCHEMA[n] for n in ("visitor_id", *RFM_FEATURES)})
    return frame.select(pl.col(n).cast(INPUT_SCHEMA[n]) for n in ("visitor_id", *RFM_FEATURES))


def behaviour_window(day: date) -> list[date]:
    """The days of user features a day's behaviour is summed over (the day and 27 before)."""
    return [day - timedelta(days=i) for i in range(BEHAVIOUR_DAYS - 1, -1, -1)]


def behaviour(daily: Sequence[pl.DataFrame], day: date) -> pl.DataFrame:
    """Per visitor over the 28 days up to ``day``: events, active days, and the share of active
    days with a cart add (user features are per day, so this stands for "sessions with a cart
    add"). ``daily`` are user_daily_features partitions; rows outside the window are ignored."""
    first = day - timedelta(days=BEHAVIOUR_DAYS - 1)
    frames = [f.select("feature_date", "visitor_id", "n_events", "n_cart_adds") for f in daily]
    rows = pl.concat(frames) if frames else pl.DataFrame()
    schema = {"visitor_id": pl.String(), **{n: INPUT_SCHEMA[n] for n in BEHAVIOUR_FEATURES}}
    if rows.is_empty():
        return pl.DataFrame(schema=schema)
    return (
        rows.filter(pl.col("feature_date").is_between(first, day))
        .group_by("visitor_id")
        .agg(
            n_events_28d=pl.col("n_events").sum(),
            active_days_28d=pl.col("feature_date").n_unique(),
            cart_day_share_28d=(pl.col("n_cart_adds") > 0).mean(),
        )
        .select(pl.col(n).cast(t) for n, t in schema.items())
        .sort("visitor_id")
    )


def segment_inputs(rfm: pl.DataFrame, activity: pl.DataFrame) -> pl.DataFrame:
    """One row per customer, sorted by visitor: RFM, and behaviour (zero when not seen lately)."""
    joined = rfm.join(activity, on="visitor_id", how="left")
    filled = joined.with_columns(pl.col(BEHAVIOUR_FEATURES).fill_null(0))
    return filled.select(pl.col(n).cast(t) for n, t in INPUT_SCHEMA.items()).sort("visitor_id")


def _pipeline(method: str, k: int) -> Pipeline:
    if method == "kmeans":
        model = KMeans(n_clusters=k, n_init=N_INIT, random_state=RANDOM_STATE)
    elif method == "gmm":
        model = GaussianMixture(n_components=k, n_init=3, random_state=RANDOM_STATE)
    else:
        raise ValueError(f"unknown clustering method {method!r}: use 'kmeans' or 'gmm'")
    log1p = FunctionTransformer(np.log1p, inverse_func=np.expm1, feature_names_out="one-to-one")
    return Pipeline([("log1p", log1p), ("scale", StandardScaler()), ("cluster", model)])


def _centers(model: Pipeline) -> np.ndarray:
    """The cluster centres in standardized units."""
    cluster = model.named_steps["cluster"]
    return cluster.cluster_centers_ if isinstance(cluster, KMeans) else cluster.means_


def _standardize(model: Pipeline, frame: pd.DataFrame) -> np.ndarray:
    """Rows in feature units to the standardized units of this fit."""
    return model[:-1].transform(frame)


def _in_feature_units(model: Pipeline, centers: np.ndarray) -> np.ndarray:
    return np.expm1(model.named_steps["scale"].inverse_transform(centers))


def match_ids(centers: np.ndarray, previous: np.ndarray, previous_ids: Sequence[int]) -> list[int]:
    """The segment id of each of today's clusters: the one-to-one assignment to the previous
    centroids (same units, as many) with the least total distance."""
    cost = np.linalg.norm(centers[:, None, :] - previous[None, :, :], axis=2)
    rows, cols = linear_sum_assignment(cost)
    ids = [0] * len(centers)
    for r, c in zip(rows, cols, strict=True):
        ids[r] = int(previous_ids[c])
    return ids


def _value_order(centers: np.ndarray, features: Sequence[str]) -> list[int]:
    """Ids by value when there is nothing to match: the highest mean of frequency and monetary
    (standardized) gets 0. Ties go to the first-found cluster's centre coordinates."""
    value_cols = [features.index(f) for f in ("frequency", "monetary") if f in features]
    value = centers[:, value_cols].mean(axis=1) if value_cols else np.zeros(len(centers))
    order = sorted(range(len(centers)), key=lambda i: (-round(value[i], 9), tuple(centers[i])))
    ids = [0] * len(centers)
    for rank, i in enumerate(order):
        ids[i] = rank
    return ids


def label_segments(
    centers: np.ndarray,
    features: Sequence[str],
    previous: Mapping[int, str] | None = None,
    stickiness: float = LABEL_STICKINESS,
) -> list[str]:
    """A label per segment (``centers`` in segment-id order): the one-to-one assignment of
    segments to ARCHETYPES (on the features both have) with the least total distance, where a
    segment keeping its ``previous`` label counts ``stickiness`` standard deviations nearer."""
    names = list(ARCHETYPES)
    protos = np.array([[ARCHETYPES[n].get(f, 0.0) for f in features] for n in names])
    cost = np.linalg.norm(centers[:, None, :] - protos[None, :, :], axis=2)
    for i, label in (previous or {}).items():
        if i < len(centers) and label in names:
            cost[i, names.index(label)] -= stickiness
    rows, cols = linear_sum_assignment(cost)
    labels = [f"segment {i}" for i in range(len(centers))]  # more clusters than archetypes
    for r, c in zip(rows, cols, strict=True):
        labels[r] = names[c]
    return labels


def _reorder(model: Pipeline, ids: list[int]) -> None:
    """Put the fitted clusters in segment-id order, so ``model.predict`` returns segment ids."""
    order = np.argsort(ids)
    cluster = model.named_steps["cluster"]
    if isinstance(cluster, KMeans):
        cluster.cluster_centers_ = cluster.cluster_centers_[order]
        cluster.labels_ = np.argsort(order)[cluster.labels_]
    else:
        for name in ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_"):
            setattr(cluster, name, getattr(cluster, name)[order])


def silhouette(standardized: np.ndarray, ids: np.ndarray) -> float:
    """The mean silhouette (on a fixed sample above SILHOUETTE_SAMPLE rows); NaN for one cluster."""
    if len(np.unique(ids)) < 2 or len(ids) <= len(np.unique(ids)):
        return float("nan")
    sample = SILHOUETTE_SAMPLE if len(ids) > SILHOUETTE_SAMPLE else None
    return float(silhouette_score(standardized, ids, sample_size=sample, random_state=RANDOM_STATE))


def fit_segments(
    inputs: pl.DataFrame,
    previous: PreviousDay | None = None,
    *,
    k: int = K,
    features: Sequence[str] = FEATURES,
    method: str = "kmeans",
    stickiness: float = LABEL_STICKINESS,
) -> Segmentation:
    """Cluster one day's customers (``inputs`` from :func:`segment_inputs`) and give each cluster
    a segment id (matched to the ``previous`` day's centroids when given) and a label."""
    features = tuple(features)
    ordered = inputs.sort("visitor_id")
    # Fitted on named columns, so the logged model checks the names it is given.
    x = ordered.select(pl.col(features).cast(pl.Float64)).to_pandas()
    model = _pipeline(method, k).fit(x)
    centers = _centers(model)
    # A different k (or a different set of features) is a different model: nothing to match.
    before = previous.centroids if previous is not None else {}
    matched = sorted(before) == list(range(k))
    matched = matched and all(set(c) >= set(features) for c in before.values())
    if matched:
        prev_ids = sorted(before)
        prev = pd.DataFrame(
            [[before[i][f] for f in features] for i in prev_ids], columns=list(features)
        )
        ids = match_ids(centers, _standardize(model, prev), prev_ids)
    else:
        ids = _value_order(centers, features)
    _reorder(model, ids)
    centers = _centers(model)
    segment_ids = model.predict(x)
    labels = label_segments(
        centers, features, previous.labels if matched and previous else None, stickiness
    )
    in_units = _in_feature_units(model, centers)
    standardized = model[:-1].transform(x)
    return Segmentation(
        model=model,
        features=features,
        segment_ids=segment_ids,
        centroids={
            i: {f: round(float(v), 6) for f, v in zip(features, in_units[i], strict=True)}
            for i in range(len(centers))
        },
        labels=dict(enumerate(labels)),
        silhouette=silhouette(standardized, segment_ids),
        matched=matched,
        sizes={i: int((segment_ids == i).sum()) for i in range(len(centers))},
    )


def end_of_day(column: str) -> pl.Expr:
    """The last microsecond of the date in ``column``, in UTC."""
    return (
        pl.col(column).cast(pl.Datetime("us", "UTC"))
        + pl.duration(days=1)
        - pl.duration(microseconds=1)
    )


def segment_table(day: date, inputs: pl.DataFrame, seg: Segmentation | None) -> pl.DataFrame:
    """The stored rows: one per customer, with segment id and label (empty without a fit)."""
    if seg is None:
        return pl.DataFrame(schema=SEGMENT_SCHEMA)
    ordered = inputs.sort("visitor_id")
    labels = [seg.labels[int(i)] for i in seg.segment_ids]
    out = ordered.with_columns(
        as_of_date=pl.lit(day, pl.Date()),
        segment_id=pl.Series(seg.segment_ids, dtype=pl.Int64()),
        segment_label=pl.Series(labels, dtype=pl.String()),
    )
    out = out.with_columns(feature_timestamp=end_of_day("as_of_date"))
    return out.select(pl.col(n).cast(t) for n, t in SEGMENT_SCHEMA.items())


def manifest(seg: Segmentation | None, customers: int, previous_day: date | None) -> dict:
    """What the partition records next to its rows: the centroids the next day matches against,
    the labels and the silhouette (or why the day was not segmented)."""
    if seg is None:
        return {
            "customers": customers,
            "skipped": f"{customers} customers, fewer than {MIN_CUSTOMERS} to segment",
        }
    return {
        "customers": customers,
        "k": len(seg.centroids),
        "features": list(seg.features),
        "silhouette": None if seg.silhouette != seg.silhouette else round(seg.silhouette, 6),
        "centroids": {str(i): c for i, c in seg.centroids.items()},
        "labels": {str(i): label for i, label in seg.labels.items()},
        "sizes": {str(i): n for i, n in seg.sizes.items()},
        "matched_to": previous_day.isoformat() if previous_day and seg.matched else None,
    }


def stored_previous(stored: Mapping | None) -> PreviousDay | None:
    """What a partition's manifest hands the next day (None for a skipped day)."""
    if not stored or not stored.get("centroids"):
        return None
    return PreviousDay(
        centroids={
            int(i): {f: float(v) for f, v in c.items()} for i, c in stored["centroids"].items()
        },
        labels={int(i): str(label) for i, label in stored.get("labels", {}).items()},
    )


def kept_share(before: pl.DataFrame, after: pl.DataFrame) -> float:
    """Of the customers in both tables, the share whose segment_id did not change (NaN if none)."""
    both = before.select("visitor_id", "segment_id").join(
        after.select("visitor_id", "segment_id"), on="visitor_id", suffix="_after"
    )
    if both.is_empty():
        return float("nan")
    return float((both["segment_id"] == both["segment_id_after"]).mean())


def log_run(store: TrackingStore, day: date, seg: Segmentation, customers: int) -> LoggedRun:
    """One MLflow run for the day's clustering: params, silhouette and sizes, and the fitted
    pipeline (its ``predict`` gives segment ids), registered as REGISTERED_MODEL. Returns
    tracking's ``LoggedRun``."""
    import mlflow.sklearn
    import scipy
    import sklearn
    import skops
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    def _log_model() -> Any:
        return mlflow.sklearn.log_model(
            seg.model,
            name="model",
            registered_model_name=REGISTERED_MODEL,
            signature=ModelSignature(
                inputs=Schema([ColSpec("double", f) for f in seg.features]),
                outputs=Schema([ColSpec("integer")]),
            ),
            skops_trusted_types=list(SKOPS_TRUSTED),
            pip_requirements=[
                f"skops=={skops.__version__}",
                f"scikit-learn=={sklearn.__version__}",
                f"numpy=={np.__version__}",
                f"scipy=={scipy.__version__}",
                f"pandas=={pd.__version__}",
            ],
        )

    cluster = seg.model.named_steps["cluster"]
    return log_training(
        store,
        experiment=EXPERIMENT,
        run_name=f"customer-segments {day}",
        params={
            "k": len(seg.centroids),
            "features": ",".join(seg.features),
            "method": type(cluster).__name__,
            "random_state": RANDOM_STATE,
            "n_init": N_INIT,
            "transform": "log1p, standard scaling",
            "as_of_date": str(day),
            "behaviour_window": f"{behaviour_window(day)[0]}..{day}",
            "ids_matched_to_previous": seg.matched,
            "labels": ", ".join(f"{i}={label}" for i, label in sorted(seg.labels.items())),
        },
        metrics={
            "silhouette": seg.silhouette,
            "customers": customers,
            **{f"size_{i}": n for i, n in seg.sizes.items()},
        },
        log_model=_log_model,
        tags={"shoplake.partition": str(day), "shoplake.asset": "ml/customer_segments"},
    )
