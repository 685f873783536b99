"""What the Models page reads: the ML layer's tables in the lake (latest partition) and the actual
revenue from gold. Plain functions returning Polars frames, like shoplake/dashboards/data.py."""

from __future__ import annotations

from datetime import date, timedelta

import polars as pl

from shoplake.core.lake.io import read_partition, stored_days
from shoplake.dashboards.data import Sources, gold


def latest(src: Sources, table: str) -> tuple[date | None, pl.DataFrame]:
    """The newest partition of ``ml/<table>`` and its day (None and an empty frame if none)."""
    folder = src.batch_lake / "ml" / table
    days = stored_days(folder) if folder.exists() else []
    for day in reversed(days):
        frame = read_partition(folder, day)
        if frame is not None and frame.height:
            return day, frame
    return None, pl.DataFrame()


def forecast_vs_actual(src: Sources, history_days: int = 42) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(actual daily revenue up to the forecast's day, the served forecast with its intervals)."""
    as_of, forecast = latest(src, "revenue_forecast")
    if as_of is None:
        return pl.DataFrame(), forecast
    actual = gold(
        src,
        "select kpi_date as day, revenue from gold.mart_daily_kpis "
        "where kpi_date between $start and $end order by kpi_date",
        {"start": as_of - timedelta(days=history_days), "end": as_of},
    )
    return actual, forecast


def backtest(src: Sources) -> pl.DataFrame:
    """Backtest errors per model and metric, as of the newest day."""
    return latest(src, "forecast_backtest")[1]


def anomalies(src: Sources) -> tuple[date | None, pl.DataFrame, pl.DataFrame]:
    """The newest day's scores of every visitor, and its flagged visitors, most unusual first,
    with their evidence."""
    day, frame = latest(src, "user_anomalies")
    if frame.is_empty():
        return day, frame, frame
    scores = frame.select("anomaly_score", "is_anomaly")
    flagged = frame.filter(pl.col("is_anomaly")).sort("anomaly_score", descending=True)
    return day, scores, flagged.select("visitor_id", "anomaly_score", "evidence", "is_rule_bot")


def segments(src: Sources) -> tuple[date | None, pl.DataFrame]:
    """The newest day's segments: size and the mean of every numeric column per segment."""
    day, frame = latest(src, "customer_segments")
    if frame.is_empty():
        return day, frame
    numeric = [
        c
        for c, t in frame.schema.items()
        if t.is_numeric() and c not in ("segment_id",) and not c.endswith("_date")
    ]
    profile = frame.group_by("segment_id", "segment_label").agg(
        pl.len().alias("customers"), *(pl.col(c).mean().round(2) for c in numeric)
    )
    return day, profile.sort("segment_id")
