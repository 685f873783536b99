"""The daily feature tables, as SQL over the gold marts, run by the warehouse itself (DuckDB; the
SQL keeps to what Postgres accepts too, untested there so far). bench/ml_day.py measures it
against the same features in Polars on the same input (docs/ml.md has the figures).

Point in time: a day's row reads only gold rows dated on or before that day, so recomputing day
D after D+1 exists gives the same rows; rows are sorted by their key so they give the same bytes.
"""

from __future__ import annotations

from datetime import date, timedelta

import polars as pl

# Two events of one visitor less than this apart are "fast" (a person cannot click that quickly).
FAST_GAP_SECONDS = 0.1
# A visitor with a single event has no gap; it gets the session timeout, the longest gap two
# events of one session can have.
NO_GAP_SECONDS = 1800.0
ROLLING_DAYS = (7, 28)

USER_SCHEMA: dict[str, pl.DataType] = {
    "feature_date": pl.Date(),
    "visitor_id": pl.String(),
    "n_events": pl.Int64(),
    "n_sessions": pl.Int64(),
    "n_page_views": pl.Int64(),
    "n_product_views": pl.Int64(),
    "n_cart_adds": pl.Int64(),
    "n_checkouts": pl.Int64(),
    "n_purchases": pl.Int64(),
    "revenue": pl.Float64(),
    "median_gap_seconds": pl.Float64(),
    "fast_event_share": pl.Float64(),
    "device_type": pl.String(),
    "platform": pl.String(),
    "days_since_first_seen": pl.Int64(),
    "n_events_7d": pl.Int64(),
    "n_events_28d": pl.Int64(),
    "n_sessions_7d": pl.Int64(),
    "n_sessions_28d": pl.Int64(),
    "n_purchases_7d": pl.Int64(),
    "n_purchases_28d": pl.Int64(),
    "revenue_7d": pl.Float64(),
    "revenue_28d": pl.Float64(),
    "active_days_28d": pl.Int64(),
    "is_rule_bot": pl.Boolean(),  # silver's rule-based flag, kept for comparison, not a model input
    "feature_timestamp": pl.Datetime("us", "UTC"),  # end of the day: when Feast may serve the row
}

PRODUCT_SCHEMA: dict[str, pl.DataType] = {
    "feature_date": pl.Date(),
    "product_id": pl.String(),
    "n_views": pl.Int64(),
    "n_cart_adds": pl.Int64(),
    "units_sold": pl.Int64(),
    "revenue": pl.Float64(),
    "view_to_cart_rate": pl.Float64(),
    "conversion_rate": pl.Float64(),
    "price": pl.Float64(),
    "n_views_7d": pl.Int64(),
    "n_views_28d": pl.Int64(),
    "units_sold_7d": pl.Int64(),
    "units_sold_28d": pl.Int64(),
    "popularity_rank_7d": pl.Int64(),
    "feature_timestamp": pl.Datetime("us", "UTC"),
}

# What the models may learn from: every numeric column except the date and the rule flag.
USER_MODEL_INPUTS = tuple(name for name, dtype in USER_SCHEMA.items() if dtype.is_numeric())

# Ranges the blocking checks hold every row to: (column, lowest, highest or None).
USER_RANGES = (
    *((c, 0, None) for c, t in USER_SCHEMA.items() if t.is_numeric()),
    ("fast_event_share", 0.0, 1.0),
    ("active_days_28d", 1, 28),
)
PRODUCT_RANGES = (
    *((c, 0, None) for c, t in PRODUCT_SCHEMA.items() if t.is_numeric()),
    ("view_to_cart_rate", 0.0, 1.0),
    ("popularity_rank_7d", 1, None),
)

USER_SQL = f"""
with events as (
    select coalesce(user_id, anonymous_id) as visitor_id, event_at, event_date, event_type,
           platform, device_type, order_total, is_bot
    from gold.fct_events
    where event_date between $first and $day
),
sessions as (
    select coalesce(user_id, anonymous_id) as visitor_id, session_date, count(*) as n_sessions
    from gold.fct_sessions
    where session_date between $first and $day
    group by 1, 2
),
daily as (
    select visitor_id, event_date,
           count(*) as n_events,
           count(*) filter (where event_type = 'purchase') as n_purchases,
           coalesce(sum(order_total) filter (where event_type = 'purchase'), 0) as revenue
    from events
    group by 1, 2
),
today as (
    select *,
           extract(epoch from event_at)
             - extract(epoch from lag(event_at) over (partition by visitor_id order by event_at))
             as gap
    from events
    where event_date = $day
),
today_agg as (
    select visitor_id,
           count(*) filter (where event_type = 'page_view') as n_page_views,
           count(*) filter (where event_type = 'product_view') as n_product_views,
           count(*) filter (where event_type = 'add_to_cart') as n_cart_adds,
           count(*) filter (where event_type = 'begin_checkout') as n_checkouts,
           coalesce(percentile_cont(0.5) within group (order by gap), {NO_GAP_SECONDS}) as median_gap_seconds,
           coalesce(avg(case when gap < {FAST_GAP_SECONDS} then 1.0 else 0.0 end)
                    filter (where gap is not null), 0.0) as fast_event_share,
           coalesce(mode() within group (order by device_type), 'unknown') as device_type,
           mode() within group (order by platform) as platform,
           bool_or(is_bot) as is_rule_bot
    from today
    group by 1
),
first_seen as (
    select coalesce(user_id, anonymous_id) as visitor_id, min(event_date) as first_date
    from gold.fct_events
    where event_date <= $day
      and coalesce(user_id, anonymous_id) in (select visitor_id from today_agg)
    group by 1
),
rolled as (
    select d.visitor_id,
           sum(d.n_events) filter (where d.event_date = $day) as n_events,
           sum(d.n_purchases) filter (where d.event_date = $day) as n_purchases,
           sum(d.revenue) filter (where d.event_date = $day) as revenue,
           sum(d.n_events) filter (where d.event_date > $day - 7) as n_events_7d,
           sum(d.n_events) as n_events_28d,
           sum(d.n_purchases) filter (where d.event_date > $day - 7) as n_purchases_7d,
           sum(d.n_purchases) as n_purchases_28d,
           sum(d.revenue) filter (where d.event_date > $day - 7) as revenue_7d,
           sum(d.revenue) as revenue_28d,
           count(*) as active_days_28d
    from daily as d
    where d.visitor_id in (select visitor_id from today_agg)
    group by 1
),
session_rolled as (
    select visitor_id,
           coalesce(sum(n_sessions) filter (where session_date = $day), 0) as n_sessions,
           sum(n_sessions) filter (where session_date > $day - 7) as n_sessions_7d,
           sum(n_sessions) as n_sessions_28d
    from sessions
    group by 1
)
select cast($day as date) as feature_date, t.visitor_id,
       r.n_events, coalesce(s.n_sessions, 0) as n_sessions,
       t.n_page_views, t.n_product_views, t.n_cart_adds, t.n_checkouts,
       r.n_purchases, r.revenue,
       t.median_gap_seconds, t.fast_event_share, t.device_type, t.platform,
       cast($day - f.first_date as bigint) as days_since_first_seen,
       r.n_events_7d, r.n_events_28d,
       coalesce(s.n_sessions_7d, 0) as n_sessions_7d, coalesce(s.n_sessions_28d, 0) as n_sessions_28d,
       r.n_purchases_7d, r.n_purchases_28d,
       r.revenue_7d, r.revenue_28d,
       r.active_days_28d, t.is_rule_bot
from today_agg as t
join rolled as r using (visitor_id)
join first_seen as f using (visitor_id)
left join session_rolled as s using (visitor_id)
order by t.visitor_id
"""

PRODUCT_SQL = """
with perf as (
    select performance_date, product_id, n_views, n_cart_adds, units_sold, revenue,
           view_to_cart_rate
    from gold.mart_product_performance
    where performance_date between $first and $day
),
prices as (
    select product_id, avg(price) as price
    from gold.fct_events
    where event_date = $day and event_type = 'product_view' and not is_bot and price is not null
    group by 1
),
rolled as (
    select product_id,
           sum(n_views) filter (where performance_date > $day - 7) as n_views_7d,
           sum(n_views) as n_views_28d,
           sum(units_sold) filter (where performance_date > $day - 7) as units_sold_7d,
           sum(units_sold) as units_sold_28d
    from perf
    group by 1
),
today as (
    select * from perf where performance_date = $day
)
select cast($day as date) as feature_date, t.product_id,
       t.n_views, t.n_cart_adds, t.units_sold, t.revenue,
       coalesce(t.view_to_cart_rate, 0.0) as view_to_cart_rate,
       case when t.n_views > 0 then 1.0 * t.units_sold / t.n_views else 0.0 end as conversion_rate,
       coalesce(p.price, 0.0) as price,
       coalesce(r.n_views_7d, 0) as n_views_7d, coalesce(r.n_views_28d, 0) as n_views_28d,
       coalesce(r.units_sold_7d, 0) as units_sold_7d,
       coalesce(r.units_sold_28d, 0) as units_sold_28d,
       rank() over (order by coalesce(r.n_views_7d, 0) desc) as popularity_rank_7d
from today as t
left join prices as p using (product_id)
left join rolled as r using (product_id)
order by t.product_id
"""


def window(day: date) -> dict[str, date]:
    """The query parameters: the day and the first day its longest rolling sum reaches back to."""
    return {"day": day, "first": day - timedelta(days=max(ROLLING_DAYS) - 1)}


def conform(frame: pl.DataFrame, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """The columns in schema order and types, money to the cent, and the row's timestamp: the
    last microsecond of its day (an empty day gives an empty, typed frame)."""
    if frame.is_empty():
        return pl.DataFrame(schema=schema)
    columns = [name for name in schema if name != "feature_timestamp"]
    out = frame.select([pl.col(name).cast(schema[name]) for name in columns])
    money = [c for c in columns if c.startswith("revenue")]
    stamp = (
        pl.col("feature_date").cast(pl.Datetime("us", "UTC"))
        + pl.duration(days=1)
        - pl.duration(microseconds=1)
    )
    return out.with_columns(pl.col(money).round(2), feature_timestamp=stamp)


def user_features(query, day: date) -> pl.DataFrame:
    """One row per visitor active on ``day``. ``query(sql, params)`` reads the warehouse."""
    return conform(query(USER_SQL, window(day)), USER_SCHEMA)


def product_features(query, day: date) -> pl.DataFrame:
    """One row per product viewed or carted on ``day`` by people (bots left out)."""
    return conform(query(PRODUCT_SQL, window(day)), PRODUCT_SCHEMA)
