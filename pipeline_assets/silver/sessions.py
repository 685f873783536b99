"""silver/events -> silver/sessions: 30-minute inactivity sessions per visitor.

A session belongs to the day it starts, so a session crossing midnight is counted once. For day D
the input is the events of D-1, D and D+1: enough to see a session that began before midnight
(not D's) and to finish one that began on D. The session id is a hash of the visitor and the
session's first event, stable across re-runs. A session's user_id is the first one seen in it,
else the one the visitor logged in with elsewhere in the window (stitching).
"""

from __future__ import annotations

import hashlib
from datetime import date, timedelta

import polars as pl

INACTIVITY = timedelta(minutes=30)
# The silver/events columns sessionize reads (three days of events: read only these).
COLUMNS = [
    "event_id",
    "event_type",
    "event_at",
    "anonymous_id",
    "user_id",
    "total",
    "platform",
    "device_type",
    "browser",
    "os",
    "country",
    "page_url",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "is_bot",
]


def sessionize(events: pl.DataFrame, day: date, inactivity: timedelta = INACTIVITY) -> pl.DataFrame:
    df = events.sort("anonymous_id", "event_at", "event_id").with_columns(
        new_session=(
            (pl.col("event_at").diff().over("anonymous_id") > inactivity)
            | (pl.col("anonymous_id") != pl.col("anonymous_id").shift(1)).fill_null(True)
        ).fill_null(True)
    )
    df = df.with_columns(session_seq=pl.col("new_session").cast(pl.Int32).cum_sum())
    identity = (
        df.filter(pl.col("user_id").is_not_null())
        .group_by("anonymous_id")
        .agg(known_user_id=pl.col("user_id").sort_by("event_at").last())
    )
    is_type = lambda t: (pl.col("event_type") == t).sum().cast(pl.Int32)  # noqa: E731
    sessions = df.group_by("session_seq").agg(
        anonymous_id=pl.col("anonymous_id").first(),
        first_event_id=pl.col("event_id").first(),
        session_user_id=pl.col("user_id").drop_nulls().first(),
        started_at=pl.col("event_at").min(),
        ended_at=pl.col("event_at").max(),
        n_events=pl.len().cast(pl.Int32),
        n_page_views=is_type("page_view"),
        n_product_views=is_type("product_view"),
        n_searches=is_type("search"),
        n_add_to_carts=is_type("add_to_cart"),
        n_checkouts=is_type("begin_checkout"),
        n_purchases=is_type("purchase"),
        n_ad_impressions=is_type("ad_impression"),
        n_ad_clicks=is_type("ad_click"),
        revenue=pl.col("total").filter(pl.col("event_type") == "purchase").sum(),
        platform=pl.col("platform").first(),
        device_type=pl.col("device_type").first(),
        browser=pl.col("browser").first(),
        os=pl.col("os").first(),
        country=pl.col("country").first(),
        landing_page=pl.col("page_url").first(),
        utm_source=pl.col("utm_source").first(),
        utm_medium=pl.col("utm_medium").first(),
        utm_campaign=pl.col("utm_campaign").first(),
        is_bot=pl.col("is_bot").any(),
    )
    sessions = (
        sessions.with_columns(session_date=pl.col("started_at").dt.date())
        .filter(pl.col("session_date") == day)
        .join(identity, on="anonymous_id", how="left")
        .with_columns(
            user_id=pl.coalesce("session_user_id", "known_user_id"),
            duration_seconds=(pl.col("ended_at") - pl.col("started_at")).dt.total_milliseconds()
            / 1000.0,
            is_bounce=pl.col("n_events") == 1,
            is_converted=pl.col("n_purchases") > 0,
            session_id=pl.concat_str("anonymous_id", "first_event_id", separator="|").map_elements(
                lambda s: hashlib.sha256(s.encode()).hexdigest()[:24], return_dtype=pl.String
            ),
        )
        .drop("session_seq", "session_user_id", "known_user_id", "first_event_id")
    )
    first = [
        "session_id",
        "session_date",
        "anonymous_id",
        "user_id",
        "started_at",
        "ended_at",
        "duration_seconds",
    ]
    return sessions.select(first + sorted(c for c in sessions.columns if c not in first)).sort(
        "started_at", "session_id"
    )
