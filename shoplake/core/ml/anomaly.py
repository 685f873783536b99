"""Anomalous visitors of a day: an IsolationForest on the user-day features, with evidence.

The model learns what a visitor-day looks like from the ``train_days`` days before day D (the
rows of ml/user_daily_features) and scores D's visitors. It is unsupervised: silver's rule flag
(``is_rule_bot``) is not an input; it is kept next to the scores as the baseline to compare with.

- Inputs: how the visitor browsed that day: volume, mix, pace and tenure (``BEHAVIOUR``), a
  subset of ``USER_MODEL_INPUTS``. bench/ml_anomaly.py measured that each further column lowers
  what the forest finds: an IsolationForest picks split features uniformly, so the seven
  purchase and revenue columns (today, 7 and 28 days) make every buyer (a few % of visitor-days)
  an outlier on seven axes, while a scripted client is an outlier on two (pace); on all 20
  numeric inputs it found no bot at all. Commerce outliers are the revenue forecast's concern.
- Transforms, part of the fitted model (a scikit-learn Pipeline, so the model MLflow keeps scores
  raw feature rows): counts and days ``log1p``; the median gap ``log10`` of seconds floored at
  10 ms (gaps span 50 ms to hours; log1p would squeeze every sub-second gap to about 0); shares
  stay on [0, 1].
- Score: ``anomaly_score`` is the IsolationForest paper's s(x, n) in (0, 1] (scikit-learn's
  ``-score_samples``): about 0.5 for ordinary rows, towards 1 for rows isolated in a few splits.
  It is normalised by the sample size, so one threshold holds across days.
- Flag: ``anomaly_score > score_threshold``, a fixed score set from the bench, not a
  contamination quantile: a quantile flags the same share of visitors on a day without bots as
  on a day full of them. ``max_samples`` is small (128) so that a burst of similar bots in the
  training window does not hide the next ones (masking).
- Cold start: when the window holds fewer than ``min_train_rows`` rows (the first day of a lake),
  the model is trained on D itself, and says so (``cold_start``).
- Evidence: the ``top_k`` inputs whose value is furthest from the training window, as a
  modified z-score on the transformed scale: (x - median) / (1.4826 * MAD), with 1.2533 * mean
  absolute deviation when the MAD is 0 (Iglewicz & Hoaglin; IBM's fallback), and +-``Z_CAP`` when
  a column was constant in training and x differs. It reads in a person's units ("fast_event_share
  1 where the window's typical value is 0.11"), it is exact and deterministic, and it does not
  depend on the forest's random splits. It describes what is unusual about the row rather than
  which splits the trees used; for axis-aligned random splits the two agree on the dominant
  feature (the one that isolates a row fastest is the one where it lies furthest out).
- Deterministic: fixed ``random_state``, one job, rows in (date, visitor) order, so the same
  input gives the same output bytes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from typing import Any

import numpy as np
import polars as pl
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import IsolationForest
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer

from shoplake.core.lake.io import LakePath, read_partitions
from shoplake.core.ml.features import USER_MODEL_INPUTS, USER_SCHEMA
from shoplake.core.notify import Notification

# The model's inputs: the day's volume, page/product mix, pace, and how new the visitor is.
BEHAVIOUR = (
    "n_events",
    "n_page_views",
    "n_product_views",
    "median_gap_seconds",
    "fast_event_share",
    "days_since_first_seen",
)
GAPS = ("median_gap_seconds",)  # log10 of seconds, floored at GAP_FLOOR_SECONDS
SHARES = ("fast_event_share",)  # already on [0, 1]: no transform
GAP_FLOOR_SECONDS = 0.01
Z_CAP = 100.0  # |z| of a value different from a column that was constant in training
MAD_TO_SD = 1.4826  # MAD of a normal distribution x 1.4826 = its standard deviation
MEANAD_TO_SD = 1.253314  # the same for the mean absolute deviation
# The model is kept in skops' format (no pickle). Loading it trusts the forest's node arrays and
# the numpy functions of the transform, which this run wrote itself.
SKOPS_TRUSTED = ("sklearn.tree._tree.Tree", "numpy.log1p", "numpy.log10", "numpy.clip")
REGISTERED_MODEL = "shoplake-user-anomalies"
EXPERIMENT = "shoplake-user-anomalies"

ANOMALY_SCHEMA: dict[str, pl.DataType] = {
    "feature_date": pl.Date(),
    "visitor_id": pl.String(),
    "anomaly_score": pl.Float64(),  # s(x, n) in (0, 1]; higher is more unusual
    "is_anomaly": pl.Boolean(),  # anomaly_score above the threshold
    "top_features": pl.List(pl.String()),  # the top_k inputs furthest from the training window
    "evidence": pl.String(),  # the same, readable: "name value (typical t, z +n.n)"
    "is_rule_bot": pl.Boolean(),  # silver's rule flag, the baseline (not a model input)
    "feature_timestamp": pl.Datetime("us", "UTC"),
}


@dataclass(frozen=True)
class AnomalyParams:
    inputs: tuple[str, ...] = BEHAVIOUR
    train_days: int = 14
    score_threshold: float = 0.65
    n_estimators: int = 200
    max_samples: int = 128
    random_state: int = 13
    top_k: int = 3
    min_train_rows: int = 50
    # The forest sees max_samples rows per tree; more than this many window rows add nothing but
    # fitting time (scikit-learn's fit is linear in the rows), so a seeded sample is used.
    max_train_rows: int = 50_000

    def __post_init__(self) -> None:
        unknown = set(self.inputs) - set(USER_MODEL_INPUTS)
        if unknown:
            raise ValueError(f"not model inputs of the user features: {sorted(unknown)}")

    def model_columns(self) -> tuple[str, ...]:
        """The inputs in the order the transform outputs them: log1p'd, gaps, shares."""
        plain = tuple(c for c in self.inputs if c not in GAPS and c not in SHARES)
        return (
            *plain,
            *(c for c in self.inputs if c in GAPS),
            *(c for c in self.inputs if c in SHARES),
        )

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "inputs": ",".join(self.inputs)}


@dataclass(frozen=True)
class Baseline:
    """The training window's typical value (raw), centre and spread (transformed) per input."""

    typical: np.ndarray
    median: np.ndarray
    scale: np.ndarray  # 0 where the column was constant in training


@dataclass(frozen=True)
class DayScores:
    day: date
    frame: pl.DataFrame  # ANOMALY_SCHEMA, one row per visitor of the day
    model: Pipeline | None  # None when the day had no visitors
    threshold: float | None  # anomaly_score above which a visitor is flagged
    train_rows: int  # rows the model learned from (a seeded sample of a bigger window)
    train_days: tuple[date, ...]  # the days the model learned from
    cold_start: bool
    window_rows: int = 0  # rows of the window (the day itself on a cold start)

    @property
    def n_flagged(self) -> int:
        return int(self.frame["is_anomaly"].sum()) if self.frame.height else 0

    @property
    def training(self) -> str:
        """Where the model learned, in words (for metadata)."""
        if self.model is None:
            return "no visitors on the day: nothing trained"
        if self.cold_start:
            return f"cold start: trained on {self.day} itself ({self.train_rows} rows)"
        first, last = self.train_days[0], self.train_days[-1]
        rows = f"{self.train_rows} rows"
        if self.window_rows > self.train_rows:
            rows += f", sampled from {self.window_rows}"
        return f"{len(self.train_days)} past day(s) {first}..{last} ({rows})"

    def metrics(self) -> dict[str, float]:
        rule = int(self.frame["is_rule_bot"].sum()) if self.frame.height else 0
        both = (
            int((self.frame["is_anomaly"] & self.frame["is_rule_bot"]).sum())
            if self.frame.height
            else 0
        )
        return {
            "n_train_rows": self.train_rows,
            "n_window_rows": self.window_rows,
            "n_train_days": len(self.train_days),
            "n_scored": self.frame.height,
            "n_flagged": self.n_flagged,
            "n_rule_bots": rule,
            "n_flagged_rule_bots": both,
            "threshold": self.threshold if self.threshold is not None else float("nan"),
            "cold_start": float(self.cold_start),
        }


def window_days(day: date, params: AnomalyParams) -> list[date]:
    """The days the model for ``day`` learns from: the ``train_days`` days before it."""
    return [day - timedelta(days=n) for n in range(params.train_days, 0, -1)]


def load_history(table: LakePath, day: date, params: AnomalyParams) -> pl.DataFrame:
    """The training window's rows of the user features, with the columns training reads
    (missing days are skipped)."""
    columns = ["feature_date", "visitor_id", *params.inputs]
    frames = read_partitions(table, window_days(day, params), columns)
    if not frames:
        return pl.DataFrame(schema={c: USER_SCHEMA[c] for c in columns})
    return pl.concat(frames, how="vertical_relaxed")


def model_inputs(frame: pl.DataFrame, params: AnomalyParams) -> Any:
    """The raw inputs as the model takes them: a pandas frame of floats, in model_columns order."""
    return frame.select(pl.col(c).cast(pl.Float64) for c in params.model_columns()).to_pandas()


def make_model(params: AnomalyParams, n_rows: int) -> Pipeline:
    """The transform (see the module doc) and the forest, unfitted."""
    columns = params.model_columns()
    groups = [
        ("log1p", FunctionTransformer(np.log1p), [c for c in columns if c not in GAPS + SHARES]),
        (
            "log10_gap",
            make_pipeline(
                FunctionTransformer(np.clip, kw_args={"a_min": GAP_FLOOR_SECONDS, "a_max": None}),
                FunctionTransformer(np.log10),
            ),
            [c for c in columns if c in GAPS],
        ),
        ("share", "passthrough", [c for c in columns if c in SHARES]),
    ]
    forest = IsolationForest(
        n_estimators=params.n_estimators,
        max_samples=min(params.max_samples, n_rows),
        random_state=params.random_state,
        n_jobs=1,
    )
    return Pipeline(
        [("transform", ColumnTransformer([g for g in groups if g[2]])), ("forest", forest)]
    )


def baseline(raw: np.ndarray, transformed: np.ndarray) -> Baseline:
    median = np.median(transformed, axis=0)
    mad = np.median(np.abs(transformed - median), axis=0) * MAD_TO_SD
    mean_ad = np.mean(np.abs(transformed - median), axis=0) * MEANAD_TO_SD
    return Baseline(
        typical=np.median(raw, axis=0), median=median, scale=np.where(mad > 0, mad, mean_ad)
    )


def robust_z(transformed: np.ndarray, base: Baseline) -> np.ndarray:
    """Modified z-scores of each value against the training window (see the module doc)."""
    diff = transformed - base.median
    safe = np.where(base.scale > 0, base.scale, 1.0)
    z = np.where(base.scale > 0, diff / safe, np.sign(diff) * Z_CAP)
    return np.clip(z, -Z_CAP, Z_CAP)


def _number(x: pl.Expr) -> pl.Expr:
    """A value for people: three significant digits, no trailing ".0"."""
    return x.round_sig_figs(3).cast(pl.String).str.replace(r"\.0$", "")


def explain(
    columns: tuple[str, ...], raw: np.ndarray, z: np.ndarray, base: Baseline, top_k: int
) -> pl.DataFrame:
    """Per row, ``top_features``: the ``top_k`` inputs with the largest |z| (ties in column
    order; an input at its typical value is never named), and ``evidence``: the same as text,
    "name value (typical t, z +n.n)" joined by "; ". Vectorised: a day can have 10^5 visitors."""
    rows = np.arange(z.shape[0])[:, None]
    order = np.argsort(-np.abs(z), axis=1, kind="stable")[:, :top_k]
    picked_z = z[rows, order]
    parts = {}
    for r in range(order.shape[1]):
        j = order[:, r]
        parts |= {
            f"name{r}": pl.Series(columns).gather(j),
            f"value{r}": raw[rows[:, 0], j],
            f"typical{r}": base.typical[j],
            f"z{r}": picked_z[:, r],
        }
    frame = pl.DataFrame(parts)
    names, texts = [], []
    for r in range(order.shape[1]):
        named = pl.col(f"z{r}") != 0
        zr = pl.col(f"z{r}").round(1)
        sign = pl.when(zr >= 0).then(pl.lit("+")).otherwise(pl.lit(""))
        names.append(pl.when(named).then(pl.col(f"name{r}")))
        texts.append(
            pl.when(named).then(
                pl.format(
                    "{} {} (typical {}, z {}{})",
                    pl.col(f"name{r}"),
                    _number(pl.col(f"value{r}")),
                    _number(pl.col(f"typical{r}")),
                    sign,
                    zr.cast(pl.String),
                )
            )
        )
    return frame.select(
        top_features=pl.concat_list(names).list.drop_nulls(),
        evidence=pl.concat_str(texts, separator="; ", ignore_nulls=True),
    )


def _ordered(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.sort("feature_date", "visitor_id")


def score_day(
    today: pl.DataFrame, history: pl.DataFrame, params: AnomalyParams = AnomalyParams()
) -> DayScores:
    """Train on ``history`` (the window's feature rows; ``today`` on a cold start) and score
    ``today`` (one day's feature rows)."""
    today = _ordered(today)
    day = today["feature_date"][0] if today.height else None
    empty = pl.DataFrame(schema=ANOMALY_SCHEMA)
    if today.is_empty():
        past = tuple(sorted(set(history["feature_date"].to_list())))
        return DayScores(day, empty, None, None, 0, past, False)
    cold = history.height < params.min_train_rows
    train = today if cold else _ordered(history)
    train_days = (day,) if cold else tuple(sorted(set(train["feature_date"].to_list())))
    window_rows = train.height
    if train.height > params.max_train_rows:
        train = train.sample(params.max_train_rows, seed=params.random_state)

    model = make_model(params, train.height)
    x_train = model_inputs(train, params)
    model.fit(x_train)
    # The flag is the fixed score threshold; the fitted forest's offset says the same, so the
    # model MLflow keeps predicts -1 for exactly the flagged rows.
    threshold = params.score_threshold
    model.named_steps["forest"].offset_ = -threshold

    x_today = model_inputs(today, params)
    score = -model.score_samples(x_today)
    transform = model.named_steps["transform"]
    base = baseline(x_train.to_numpy(), transform.transform(x_train))
    z = robust_z(transform.transform(x_today), base)
    why = explain(params.model_columns(), x_today.to_numpy(), z, base, params.top_k)

    frame = pl.DataFrame(
        {
            "feature_date": today["feature_date"],
            "visitor_id": today["visitor_id"],
            "anomaly_score": np.round(score, 6),
            "is_anomaly": score > threshold,
            "top_features": why["top_features"],
            "evidence": why["evidence"],
            "is_rule_bot": today["is_rule_bot"],
            "feature_timestamp": today["feature_timestamp"],
        },
        schema=ANOMALY_SCHEMA,
    )
    return DayScores(day, frame, model, threshold, train.height, train_days, cold, window_rows)


@dataclass(frozen=True)
class Agreement:
    """Flags against a reference set (the simulator's bots in the bench, the rule flag in the
    check): true positives, false positives, false negatives."""

    tp: int
    fp: int
    fn: int

    @property
    def precision(self) -> float | None:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else None

    @property
    def recall(self) -> float | None:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else None

    def __add__(self, other: Agreement) -> Agreement:
        return Agreement(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)


def agreement(flagged: Iterable[str], reference: Iterable[str]) -> Agreement:
    flagged, reference = set(flagged), set(reference)
    return Agreement(len(flagged & reference), len(flagged - reference), len(reference - flagged))


def versus_rule(frame: pl.DataFrame) -> Agreement:
    """The model's flags against silver's rule flag on the same rows (no labels needed)."""
    flagged = frame.filter("is_anomaly")["visitor_id"]
    rule = frame.filter("is_rule_bot")["visitor_id"]
    return agreement(flagged, rule)


def signature(params: AnomalyParams) -> Any:
    """The logged model's interface: the raw inputs (floats, by name) to predict's -1 / 1."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec("double", c) for c in params.model_columns()]),
        outputs=Schema([ColSpec("long")]),
    )


def log_run(store: Any, scores: DayScores, params: AnomalyParams) -> Any:
    """One MLflow run for the day's training: params (with the window), metrics, and the fitted
    pipeline, registered as REGISTERED_MODEL. Returns tracking's ``LoggedRun``."""
    import mlflow.sklearn
    import pandas
    import sklearn
    import skops

    from shoplake.core.ml.tracking import log_training

    if scores.model is None:
        raise ValueError(f"{scores.day}: nothing was trained (no visitors)")
    model = scores.model

    def _log_model() -> Any:
        return mlflow.sklearn.log_model(
            model,
            name="model",
            registered_model_name=REGISTERED_MODEL,
            signature=signature(params),
            skops_trusted_types=list(SKOPS_TRUSTED),
            pip_requirements=[
                f"skops=={skops.__version__}",
                f"scikit-learn=={sklearn.__version__}",
                f"numpy=={np.__version__}",
                f"pandas=={pandas.__version__}",
            ],
        )

    return log_training(
        store,
        experiment=EXPERIMENT,
        run_name=f"user-anomalies-{scores.day}",
        params={
            **params.as_dict(),
            "gap_floor_seconds": GAP_FLOOR_SECONDS,
            "scored_day": str(scores.day),
            "train_first_day": str(scores.train_days[0]),
            "train_last_day": str(scores.train_days[-1]),
            "training": scores.training,
        },
        metrics=scores.metrics(),
        log_model=_log_model,
        tags={"shoplake.partition": str(scores.day), "shoplake.asset": "ml/user_anomalies"},
    )


# -- notifications: each flagged visitor-day once ------------------------------------------------
NOTIFY_SOURCE = "ml/user_anomalies"
KEEP_NOTIFIED_DAYS = 62  # days whose notified visitors are remembered (re-runs within: silent)


@dataclass
class NotifiedLedger:
    """What the notifying sensor has done: the event-log cursor of the last materialization it
    read, and per partition day the visitors already notified (so a re-run of the day, which
    writes the same flags again, sends nothing). Kept as the sensor's cursor (JSON)."""

    cursor: str | None = None
    sent: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def from_json(cls, text: str | None) -> NotifiedLedger:
        if not text:
            return cls()
        data = json.loads(text)
        return cls(cursor=data.get("cursor"), sent=data.get("sent", {}))

    def to_json(self) -> str:
        return json.dumps({"cursor": self.cursor, "sent": self.sent}, sort_keys=True)

    def unsent(self, frame: pl.DataFrame) -> pl.DataFrame:
        """The day's flagged rows not notified yet, most anomalous first."""
        day = str(frame["feature_date"][0]) if frame.height else ""
        done = set(self.sent.get(day, ()))
        return frame.filter(pl.col("is_anomaly") & ~pl.col("visitor_id").is_in(list(done))).sort(
            ["anomaly_score", "visitor_id"], descending=[True, False]
        )

    def mark(self, day: str, visitors: Iterable[str]) -> None:
        self.sent[day] = sorted(set(self.sent.get(day, ())) | set(visitors))
        for old in sorted(self.sent)[:-KEEP_NOTIFIED_DAYS]:
            del self.sent[old]


def anomaly_note(row: dict[str, Any], link: str | None = None) -> Notification:
    """One flagged visitor-day, with its evidence."""
    rule = "yes" if row["is_rule_bot"] else "no"
    return Notification(
        title=f"Anomalous visitor {row['visitor_id']} on {row['feature_date']}",
        text=row["evidence"] or "no single input stands out",
        severity="warning",
        source=NOTIFY_SOURCE,
        fields={
            "score": f"{row['anomaly_score']:.3f}",
            "top features": ", ".join(row["top_features"]) or "-",
            "rule bot flag": rule,
        },
        link=link,
    )


def overflow_note(counts: dict[str, int], link: str | None = None) -> Notification:
    """The flagged visitors beyond a tick's budget, counted per day (each is still sent once:
    here)."""
    days = ", ".join(f"{day}: {n}" for day, n in sorted(counts.items()))
    return Notification(
        title=f"{sum(counts.values())} more anomalous visitors",
        text=f"Not listed one by one ({days}); see ml/user_anomalies or the Models dashboard.",
        severity="warning",
        source=NOTIFY_SOURCE,
        link=link,
    )
