"""The daily revenue forecast: Prophet against a statistical peer, backtested by rolling origin.

- Series: ``revenue`` of gold.mart_daily_kpis, one value per calendar day from its first day up to
  the as-of day D, which must have a row. The mart has a row per day with non-bot sessions, so a
  day without a row between two that have one is 0.
- Models: Prophet (MAP fit, weekly seasonality, nothing yearly or daily), one statistical peer
  from statsforecast (AutoETS by default, or AutoARIMA; season length 7), and SeasonalNaive
  (the value of the same weekday a week earlier) as the baseline every model must beat.
- Intervals at 80 % and 95 %. Prophet has one ``interval_width`` per model, but in a MAP fit it
  plays no part in fitting: it only picks which quantiles of the simulated predictive draws
  (future trend changes plus observation noise) ``predict`` reports. So the model is fitted once,
  the draws are made once (``predictive_samples``), and both intervals are read from the same
  draws (percentiles 10/90 and 2.5/97.5). Fitting twice with two widths would give the same fit
  and different draws, whose intervals need not nest. statsforecast gives both levels from one fit.
- Backtest: rolling origin. Each origin trains on the days up to it and forecasts the next
  ``horizon`` days; origins are ``origin_step`` days apart, the latest ending on D, at most
  ``max_origins`` of them, none with fewer than ``min_train_days`` days to train on. Over every
  (origin, day) pair: MAPE (days with revenue only), sMAPE (0 when actual and forecast are both
  0), and the share of actuals inside each interval. All three are fractions (0.12 = 12 %).
- Served model: the better of Prophet and the peer on backtest sMAPE. It is refitted on the whole
  history to forecast D+1..D+horizon.
- Minimum history: ``min_train_days`` (3 weeks: three of each weekday to estimate the weekly
  pattern from) plus one ``horizon`` to score the first origin on; 35 days at the default 14.
  Below that, or when D itself has no row yet, there is no forecast, and ``shortfall`` says why.
- Forecasts and bounds are clipped at 0 (revenue is never negative); this changes no coverage.
- Deterministic: Prophet's optimizer gets a fixed seed, its draws a fixed NumPy seed (the global
  generator's state is restored afterwards); statsforecast's fits involve no randomness.

Prophet, statsforecast and MLflow are imported when first used: together they take seconds to
import, which the Dagster code location should not pay at load.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd
import polars as pl

PROPHET = "prophet"
SEASONAL_NAIVE = "seasonal_naive"
# The statistical peers, by name: statsforecast's model class.
PEERS = {"auto_ets": "AutoETS", "auto_arima": "AutoARIMA"}
SEASON_LENGTH = 7
LEVELS = (80, 95)
HORIZON_RANGE = (14, 30)
METRICS = ("mape", "smape", "coverage_80", "coverage_95")
REGISTERED_MODEL = "shoplake-revenue-forecast"
EXPERIMENT = "shoplake-revenue-forecast"
BOUNDS = ("lo80", "hi80", "lo95", "hi95")

FORECAST_SCHEMA: dict[str, pl.DataType] = {
    "as_of_date": pl.Date(),  # D: the last day of history the model saw
    "forecast_date": pl.Date(),  # D+1 .. D+horizon
    "horizon_day": pl.Int32(),  # forecast_date - as_of_date, in days
    "model": pl.String(),  # the served model
    "yhat": pl.Float64(),
    "lo80": pl.Float64(),
    "hi80": pl.Float64(),
    "lo95": pl.Float64(),
    "hi95": pl.Float64(),
}

BACKTEST_SCHEMA: dict[str, pl.DataType] = {
    "as_of_date": pl.Date(),
    "model": pl.String(),
    "role": pl.String(),  # served, candidate (the other of Prophet and the peer) or baseline
    "metric": pl.String(),  # one of METRICS
    "value": pl.Float64(),  # a fraction; null when undefined (MAPE with no day of revenue)
    "horizon": pl.Int32(),
    "n_origins": pl.Int32(),
    "n_points": pl.Int32(),  # (origin, day) pairs scored
    "first_origin": pl.Date(),  # the last training day of the first and of the last origin
    "last_origin": pl.Date(),
}


@dataclass(frozen=True)
class ForecastSpec:
    """What to forecast and how to backtest it."""

    horizon: int = 14
    peer: str = "auto_ets"
    min_train_days: int = 21
    max_origins: int = 8
    origin_step: int = 7
    seed: int = 13
    prophet_draws: int = 1000  # Prophet's uncertainty_samples

    def __post_init__(self) -> None:
        low, high = HORIZON_RANGE
        if not low <= self.horizon <= high:
            raise ValueError(f"horizon {self.horizon}: choose {low} to {high} days")
        if self.peer not in PEERS:
            raise ValueError(f"peer {self.peer!r}: choose one of {', '.join(PEERS)}")
        if self.min_train_days < 2 * SEASON_LENGTH:
            raise ValueError(
                f"min_train_days {self.min_train_days}: at least {2 * SEASON_LENGTH} (two weeks) "
                "are needed to tell a weekly pattern from noise"
            )
        if self.max_origins < 1 or self.origin_step < 1:
            raise ValueError("max_origins and origin_step must be at least 1")

    @property
    def min_history_days(self) -> int:
        return self.min_train_days + self.horizon

    @property
    def models(self) -> tuple[str, str, str]:
        """Prophet, the peer, the baseline."""
        return (PROPHET, self.peer, SEASONAL_NAIVE)


# -- the series ---------------------------------------------------------------------------------


def revenue_series(kpis: pl.DataFrame, day: date) -> pd.DataFrame:
    """``ds`` and ``y`` (revenue) for every calendar day from the first to the last KPI day up to
    ``day``, from a frame with ``kpi_date`` and ``revenue``. A day between them without a row is 0
    (the mart has a row per day with non-bot sessions); days after the last row are not there yet,
    and are left out (``shortfall`` reports a series that stops before ``day``)."""
    rows = kpis.filter(pl.col("kpi_date") <= day) if kpis.height else kpis
    if rows.height == 0:
        return pd.DataFrame({"ds": pd.to_datetime([]), "y": np.array([], dtype=float)})
    calendar = pl.DataFrame(
        {
            "kpi_date": pl.date_range(
                rows["kpi_date"].min(), rows["kpi_date"].max(), "1d", eager=True
            )
        }
    )
    full = calendar.join(
        rows.select("kpi_date", pl.col("revenue").cast(pl.Float64)), on="kpi_date", how="left"
    ).sort("kpi_date")
    return pd.DataFrame(
        {
            "ds": pd.to_datetime(full["kpi_date"].to_list()),
            "y": full["revenue"].fill_null(0.0).to_numpy(),
        }
    )


def shortfall(series: pd.DataFrame, spec: ForecastSpec, day: date) -> str | None:
    """Why there is no forecast as of ``day`` from this history, or None when there is one."""
    n = len(series)
    if n == 0:
        return f"gold.mart_daily_kpis has no revenue up to {day}: nothing to forecast from"
    last = series["ds"].iloc[-1].date()
    if last != day:
        return (
            f"gold.mart_daily_kpis has no row for {day} (its last day up to then is {last}): "
            f"a forecast as of {day} needs that day's revenue"
        )
    if n < spec.min_history_days:
        return (
            f"{n} days of revenue history ({series['ds'].iloc[0].date()} .. {last}); a forecast "
            f"needs at least {spec.min_history_days}: {spec.min_train_days} to train on and "
            f"{spec.horizon} more to backtest the first origin on"
        )
    if not (series["y"] > 0).any():
        return f"no revenue in the {n} days of history: nothing to forecast"
    return None


def origins(n_days: int, spec: ForecastSpec) -> list[int]:
    """Training lengths of the backtest's origins, oldest first: the latest ends ``horizon``
    days before the end, then every ``origin_step`` days back, none shorter than min_train_days."""
    latest = n_days - spec.horizon
    lengths = range(latest, spec.min_train_days - 1, -spec.origin_step)
    return sorted(lengths[: spec.max_origins])


# -- the models ---------------------------------------------------------------------------------


def _prophet() -> Any:
    """Prophet's class, with its loggers and cmdstanpy's turned down to warnings: Prophet logs
    every fit, cmdstanpy every optimizer start and stop (it sets itself up to log at INFO on first
    use, hence the explicit set-up before lowering it), and Prophet reports at import that plotly
    is missing (its plots are not used here)."""
    logging.getLogger("prophet.plot").setLevel(logging.CRITICAL)
    from cmdstanpy.utils import get_logger
    from prophet import Prophet

    get_logger().setLevel(logging.WARNING)
    logging.getLogger("prophet").setLevel(logging.WARNING)
    return Prophet


@contextmanager
def quiet() -> Iterator[None]:
    """No FutureWarnings from inside pandas, Prophet and statsforecast during a fit."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        yield


@contextmanager
def _numpy_seed(seed: int) -> Iterator[None]:
    """Prophet draws from NumPy's global generator: seed it, and give it back as it was."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def _frame(ds: pd.Series, yhat: Any, bounds: dict[str, Any]) -> pd.DataFrame:
    out = pd.DataFrame({"ds": pd.to_datetime(ds).reset_index(drop=True), "yhat": yhat})
    for name in BOUNDS:
        out[name] = np.asarray(bounds[name], dtype=float)
    cols = ["yhat", *BOUNDS]
    out[cols] = out[cols].astype(float).clip(lower=0.0)
    return out


def fit_prophet(train: pd.DataFrame, spec: ForecastSpec) -> Any:
    """A Prophet MAP fit with weekly seasonality (the only cycle a daily shop series of weeks to
    months can show), deterministic for a given seed."""
    prophet = _prophet()
    with quiet():
        model = prophet(
            weekly_seasonality=True,
            yearly_seasonality=False,
            daily_seasonality=False,
            uncertainty_samples=spec.prophet_draws,
            # Used only by the model's own predict (e.g. loaded back from MLflow); here both
            # intervals come from predictive_samples.
            interval_width=LEVELS[0] / 100,
        )
        # L-BFGS: Prophet picks Newton under 100 days, which is 5-10x slower here for the same
        # optimum; Prophet falls back to Newton by itself if L-BFGS fails.
        model.fit(train[["ds", "y"]], algorithm="LBFGS", seed=spec.seed)
    return model


def predict_prophet(model: Any, horizon: int, seed: int) -> pd.DataFrame:
    """The next ``horizon`` days: Prophet's point forecast, and both intervals from one set of
    predictive draws."""
    with quiet():
        future = model.make_future_dataframe(periods=horizon, include_history=False)
        with _numpy_seed(seed):
            draws = model.predictive_samples(future)["yhat"]
        point = _point_forecast(model, future)
    q = np.nanpercentile(draws, [2.5, 10, 90, 97.5], axis=1)
    return _frame(future["ds"], point, {"lo95": q[0], "lo80": q[1], "hi80": q[2], "hi95": q[3]})


def _point_forecast(model: Any, future: pd.DataFrame) -> np.ndarray:
    """Prophet's ``yhat`` without its own interval draws (they are made once, above)."""
    draws = model.uncertainty_samples
    model.uncertainty_samples = 0
    try:
        return model.predict(future)["yhat"].to_numpy()
    finally:
        model.uncertainty_samples = draws


def _stats_models(names: list[str]) -> list[Any]:
    from statsforecast import models as sf_models

    out = []
    for name in names:
        cls = sf_models.SeasonalNaive if name == SEASONAL_NAIVE else getattr(sf_models, PEERS[name])
        out.append(cls(season_length=SEASON_LENGTH, alias=name))
    return out


def _stats_frames(raw: pd.DataFrame, names: list[str]) -> dict[str, pd.DataFrame]:
    return {
        name: _frame(
            raw["ds"],
            raw[name].to_numpy(),
            {
                f"{side}{level}": raw[f"{name}-{side}-{level}"].to_numpy()
                for side in ("lo", "hi")
                for level in LEVELS
            },
        )
        for name in names
    }


def _stats_input(train: pd.DataFrame) -> pd.DataFrame:
    return train[["ds", "y"]].assign(unique_id="revenue")


def forecast_stats(train: pd.DataFrame, horizon: int, names: list[str]) -> dict[str, pd.DataFrame]:
    """statsforecast's models (the peer, seasonal-naive) forecasting from ``train``, one frame
    each."""
    with quiet():
        from statsforecast import StatsForecast

        sf = StatsForecast(models=_stats_models(names), freq="D", n_jobs=1)
        raw = sf.forecast(df=_stats_input(train), h=horizon, level=list(LEVELS))
    return _stats_frames(raw, names)


def _forecast(model: str, train: pd.DataFrame, spec: ForecastSpec) -> pd.DataFrame:
    if model == PROPHET:
        return predict_prophet(fit_prophet(train, spec), spec.horizon, spec.seed)
    return forecast_stats(train, spec.horizon, [model])[model]


# -- the backtest -------------------------------------------------------------------------------


def score(points: pd.DataFrame) -> dict[str, float]:
    """MAPE, sMAPE and the coverage of both intervals over (actual ``y``, forecast) pairs."""
    y, yhat = points["y"].to_numpy(float), points["yhat"].to_numpy(float)
    err = np.abs(y - yhat)
    positive = y > 0
    denom = np.abs(y) + np.abs(yhat)
    smape = np.divide(2 * err, denom, out=np.zeros_like(err), where=denom > 0)
    out = {
        "mape": float(np.mean(err[positive] / y[positive])) if positive.any() else float("nan"),
        "smape": float(np.mean(smape)),
    }
    for level in LEVELS:
        inside = (y >= points[f"lo{level}"].to_numpy()) & (y <= points[f"hi{level}"].to_numpy())
        out[f"coverage_{level}"] = float(np.mean(inside))
    return out


@dataclass(frozen=True)
class Backtest:
    """A rolling-origin backtest of Prophet, the peer and seasonal-naive on one history."""

    as_of: date
    spec: ForecastSpec
    origin_dates: list[date]  # each origin's last training day
    points: pd.DataFrame  # origin, ds, horizon_day, model, y, yhat and the bounds
    metrics: dict[str, dict[str, float]]  # model -> metric -> value

    @property
    def served(self) -> str:
        """The better of Prophet and the peer on sMAPE (Prophet on a tie)."""
        return min((PROPHET, self.spec.peer), key=lambda m: self.metrics[m]["smape"])

    @property
    def beats_baseline(self) -> bool:
        return self.metrics[self.served]["smape"] < self.metrics[SEASONAL_NAIVE]["smape"]

    def role(self, model: str) -> str:
        if model == SEASONAL_NAIVE:
            return "baseline"
        return "served" if model == self.served else "candidate"

    def table(self) -> pl.DataFrame:
        """One row per model and metric (BACKTEST_SCHEMA), served model first."""
        order = [self.served, *(m for m in self.spec.models if m != self.served)]
        rows = [
            {
                "as_of_date": self.as_of,
                "model": model,
                "role": self.role(model),
                "metric": metric,
                "value": None if np.isnan(v := self.metrics[model][metric]) else v,
                "horizon": self.spec.horizon,
                "n_origins": len(self.origin_dates),
                "n_points": int((self.points["model"] == model).sum()),
                "first_origin": self.origin_dates[0],
                "last_origin": self.origin_dates[-1],
            }
            for model in order
            for metric in METRICS
        ]
        return pl.DataFrame(rows, schema=BACKTEST_SCHEMA)


def served_model(table: pl.DataFrame) -> str:
    """The served model of a backtest table."""
    return table.filter(pl.col("role") == "served")["model"][0]


def metric(table: pl.DataFrame, model: str, name: str) -> float:
    value = table.filter((pl.col("model") == model) & (pl.col("metric") == name))["value"][0]
    return float("nan") if value is None else float(value)


def flat_metrics(table: pl.DataFrame) -> dict[str, float]:
    """A backtest table as ``<model>_<metric>`` (for MLflow), with the served model's also under
    ``served_<metric>``."""
    served = served_model(table)
    out = {}
    for row in table.iter_rows(named=True):
        value = float("nan") if row["value"] is None else row["value"]
        out[f"{row['model']}_{row['metric']}"] = value
        if row["model"] == served:
            out[f"served_{row['metric']}"] = value
    return out


def backtest(series: pd.DataFrame, spec: ForecastSpec) -> Backtest:
    """Rolling-origin backtest as of the last day of ``series``, which must be long enough
    (``shortfall``)."""
    if (why := shortfall(series, spec, series["ds"].iloc[-1].date())) is not None:
        raise ValueError(why)
    stats = [spec.peer, SEASONAL_NAIVE]
    parts, origin_dates = [], []
    for length in origins(len(series), spec):
        train = series.iloc[:length]
        actual = series.iloc[length : length + spec.horizon].reset_index(drop=True)
        origin = train["ds"].iloc[-1].date()
        origin_dates.append(origin)
        frames = {PROPHET: _forecast(PROPHET, train, spec)} | forecast_stats(
            train, spec.horizon, stats
        )
        for model, frame in frames.items():
            parts.append(
                frame.assign(
                    origin=origin,
                    horizon_day=np.arange(1, spec.horizon + 1),
                    model=model,
                    y=actual["y"].to_numpy(),
                )
            )
    points = pd.concat(parts, ignore_index=True)
    metrics = {m: score(points[points["model"] == m]) for m in spec.models}
    return Backtest(series["ds"].iloc[-1].date(), spec, origin_dates, points, metrics)


# -- the served forecast ------------------------------------------------------------------------


@dataclass(frozen=True)
class Forecast:
    """The served model refitted on the whole history, and its forecast (FORECAST_SCHEMA)."""

    model: str
    fitted: Any  # a Prophet model, or a fitted StatsForecast
    frame: pl.DataFrame
    history_days: int


def forecast(series: pd.DataFrame, model: str, spec: ForecastSpec) -> Forecast:
    """``model`` fitted on all of ``series`` and its forecast of the ``horizon`` next days."""
    as_of = series["ds"].iloc[-1].date()
    if model == PROPHET:
        fitted = fit_prophet(series, spec)
        frame = predict_prophet(fitted, spec.horizon, spec.seed)
    else:
        with quiet():
            from statsforecast import StatsForecast

            fitted = StatsForecast(models=_stats_models([model]), freq="D", n_jobs=1)
            fitted.fit(df=_stats_input(series))
            raw = fitted.predict(h=spec.horizon, level=list(LEVELS))
        frame = _stats_frames(raw, [model])[model]
    out = pl.DataFrame(
        {
            "as_of_date": [as_of] * len(frame),
            "forecast_date": [as_of + timedelta(days=i) for i in range(1, len(frame) + 1)],
            "horizon_day": list(range(1, len(frame) + 1)),
            "model": [model] * len(frame),
            **{c: frame[c].to_numpy() for c in ("yhat", *BOUNDS)},
        },
        schema=FORECAST_SCHEMA,
    )
    return Forecast(model, fitted, out, len(series))


def empty(schema: dict[str, pl.DataType]) -> pl.DataFrame:
    return pl.DataFrame(schema=schema)


# -- MLflow -------------------------------------------------------------------------------------


def _stats_pyfunc(fitted: Any) -> Any:
    """An MLflow pyfunc around a fitted StatsForecast. Defined here, inside a function, so that
    cloudpickle stores the class by value: loading it needs statsforecast, not this project."""
    import mlflow.pyfunc

    class StatsForecastModel(mlflow.pyfunc.PythonModel):
        """Input: a frame with a column ``h`` (days ahead; the first row's value is used).
        Output: statsforecast's forecast with the 80 % and 95 % bounds."""

        def __init__(self, model: Any) -> None:
            self.model = model

        def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> Any:
            h = int(model_input["h"].iloc[0])
            return self.model.predict(h=h, level=[80, 95])

    return StatsForecastModel(fitted)


def model_logger(result: Forecast, registered_model: str = REGISTERED_MODEL) -> Callable[[], Any]:
    """For ``log_training``: logs the served model, registered under ``registered_model``.
    Prophet with MLflow's prophet flavor; statsforecast as a pyfunc. Requirements are explicit:
    MLflow would otherwise infer them in a slow subprocess."""
    from importlib.metadata import version

    def log() -> Any:
        if result.model == PROPHET:
            import mlflow.prophet

            return mlflow.prophet.log_model(
                result.fitted,
                name="model",
                registered_model_name=registered_model,
                pip_requirements=[f"prophet=={version('prophet')}"],
            )
        import mlflow.pyfunc

        return mlflow.pyfunc.log_model(
            name="model",
            python_model=_stats_pyfunc(result.fitted),
            registered_model_name=registered_model,
            pip_requirements=[
                f"statsforecast=={version('statsforecast')}",
                f"pandas=={version('pandas')}",
                f"cloudpickle=={version('cloudpickle')}",
            ],
        )

    return log


def training_params(
    spec: ForecastSpec, series: pd.DataFrame, model: str, n_origins: int
) -> dict[str, Any]:
    """What an MLflow run records about a training: the model, the spec, the input range."""
    return {
        "served_model": model,
        "horizon": spec.horizon,
        "levels": ",".join(map(str, LEVELS)),
        "season_length": SEASON_LENGTH,
        "peer": spec.peer,
        "min_train_days": spec.min_train_days,
        "max_origins": spec.max_origins,
        "origin_step": spec.origin_step,
        "n_origins": n_origins,
        "seed": spec.seed,
        "prophet_draws": spec.prophet_draws,
        "history_start": series["ds"].iloc[0].date().isoformat(),
        "history_end": series["ds"].iloc[-1].date().isoformat(),
        "history_days": len(series),
        "input": "gold.mart_daily_kpis.revenue",
    }
