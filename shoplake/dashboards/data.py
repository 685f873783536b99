"""What the dashboards read: gold marts (read-only) and the speed tables. Plain functions returning
Polars frames, so bench/serving.py times exactly what the pages run and tests call them directly.

The warehouse is opened read-only per query and closed at once: DuckDB allows one writer, and a
dashboard holding the file open would block the next dbt build.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from shoplake.core import clock, warehouse
from shoplake.core.notify import read_log
from shoplake.core.settings import Settings
from shoplake.core.warehouse import WarehouseBusy  # noqa: F401 - the pages catch it as data.WarehouseBusy

if TYPE_CHECKING:
    from shoplake.core.lake.io import LakePath


@dataclass(frozen=True)
class Sources:
    lake_root: Path  # local: the speed tables, and the batch lake unless batch_root is set
    warehouse_path: Path
    warehouse_dsn: str | None
    home: Path
    batch_root: LakePath | None = None  # the batch lake when it is elsewhere (an s3:// root)

    @classmethod
    def from_settings(cls, s: Settings) -> Sources:
        from shoplake.core.lake.io import lake_location

        batch = lake_location(s.lake_root, s.s3_endpoint_url)
        return cls(s.speed_lake_root, s.home / "warehouse.duckdb", s.warehouse_dsn, s.home, batch)

    @property
    def batch_lake(self) -> LakePath:
        return self.batch_root or self.lake_root


def gold(src: Sources, sql: str, params: dict[str, Any] | None = None) -> pl.DataFrame:
    """A read-only query on the warehouse (named parameters as ``$name``)."""
    return warehouse.query(sql, params, path=src.warehouse_path, dsn=src.warehouse_dsn)


def date_bounds(src: Sources) -> tuple[date, date] | None:
    frame = gold(src, "select min(kpi_date) as lo, max(kpi_date) as hi from gold.mart_daily_kpis")
    if frame.is_empty() or frame["lo"][0] is None:
        return None
    return frame["lo"][0], frame["hi"][0]


# -- Commerce --------------------------------------------------------------------------------------
def daily_kpis(src: Sources, start: date, end: date) -> pl.DataFrame:
    return gold(
        src,
        "select * from gold.mart_daily_kpis where kpi_date between $start and $end "
        "order by kpi_date",
        {"start": start, "end": end},
    )


def funnel(src: Sources, start: date, end: date, platform: str | None = None) -> pl.DataFrame:
    return gold(
        src,
        """select device_type, sum(n_sessions) as sessions, sum(n_product_view) as product_view,
                  sum(n_add_to_cart) as add_to_cart, sum(n_checkout) as checkout,
                  sum(n_purchase) as purchase
           from gold.mart_conversion_funnel
           where funnel_date between $start and $end and ($platform = '' or platform = $platform)
           group by device_type order by sessions desc""",
        {"start": start, "end": end, "platform": platform or ""},
    )


def top_products(src: Sources, start: date, end: date, limit: int = 20) -> pl.DataFrame:
    return gold(
        src,
        """select product_id, any_value(top_category) as top_category, any_value(brand) as brand,
                  sum(n_views) as views, sum(n_cart_adds) as cart_adds, sum(units_sold) as units,
                  sum(revenue) as revenue
           from gold.mart_product_performance where performance_date between $start and $end
           group by product_id order by revenue desc, product_id limit $limit""",
        {"start": start, "end": end, "limit": limit},
    )


def categories(src: Sources, start: date, end: date) -> pl.DataFrame:
    return gold(
        src,
        """select top_category, sum(n_views) as views, sum(n_cart_adds) as cart_adds,
                  sum(units_sold) as units, sum(revenue) as revenue
           from gold.mart_category_analysis where category_date between $start and $end
           group by top_category order by revenue desc""",
        {"start": start, "end": end},
    )


def rfm_segments(src: Sources) -> pl.DataFrame:
    return gold(
        src,
        """select rfm_segment, count(*) as customers, sum(monetary) as revenue,
                  avg(recency_days) as avg_recency_days
           from gold.mart_rfm_segments
           where as_of_date = (select max(as_of_date) from gold.mart_rfm_segments)
           group by rfm_segment order by customers desc""",
    )


def cohorts(src: Sources) -> pl.DataFrame:
    return gold(
        src,
        "select cohort_week, week_number, retention_rate, cohort_size "
        "from gold.mart_cohort_retention order by cohort_week, week_number",
    )


# -- Ads -------------------------------------------------------------------------------------------
def daily_ctr(src: Sources, start: date, end: date) -> pl.DataFrame:
    return gold(
        src,
        "select * from gold.mart_daily_ctr where ctr_date between $start and $end "
        "order by ctr_date",
        {"start": start, "end": end},
    )


def hourly_ctr(src: Sources, start: date, end: date) -> pl.DataFrame:
    return gold(
        src,
        """select ctr_hour, sum(n_impressions) as impressions, sum(n_clicks) as clicks,
                  case when sum(n_impressions) = 0 then null
                       else sum(n_clicks) * 1.0 / sum(n_impressions) end as ctr
           from gold.mart_hourly_ctr where ctr_date between $start and $end
           group by ctr_hour order by ctr_hour""",
        {"start": start, "end": end},
    )


def device_performance(
    src: Sources, start: date, end: date, platform: str | None = None
) -> pl.DataFrame:
    return gold(
        src,
        """select platform, device_type, sum(n_sessions) as sessions, sum(revenue) as revenue,
                  sum(n_impressions) as impressions, sum(n_clicks) as clicks,
                  case when sum(n_impressions) = 0 then null
                       else sum(n_clicks) * 1.0 / sum(n_impressions) end as ctr
           from gold.mart_device_performance
           where performance_date between $start and $end and ($platform = '' or platform = $platform)
           group by platform, device_type order by sessions desc""",
        {"start": start, "end": end, "platform": platform or ""},
    )


def inventory_categories(src: Sources, start: date, end: date) -> pl.DataFrame:
    return gold(
        src,
        """select inventory_type, coalesce(inventory_category, 'unknown') as category,
                  count(*) filter (where event_type = 'ad_impression') as impressions,
                  count(*) filter (where event_type = 'ad_click') as clicks
           from gold.fct_events
           where event_date between $start and $end and event_type in ('ad_impression', 'ad_click')
             and not is_bot
           group by all order by impressions desc""",
        {"start": start, "end": end},
    ).with_columns(ctr=pl.col("clicks") / pl.col("impressions"))


def banner_positions(src: Sources, start: date, end: date) -> pl.DataFrame:
    return gold(
        src,
        """select banner_position, sum(n_impressions) as impressions, sum(n_clicks) as clicks,
                  case when sum(n_impressions) = 0 then null
                       else sum(n_clicks) * 1.0 / sum(n_impressions) end as ctr,
                  sum(n_attributed_purchases) as attributed_purchases
           from gold.mart_banner_position where ctr_date between $start and $end
           group by banner_position order by banner_position""",
        {"start": start, "end": end},
    )


# -- Live (speed tables) ---------------------------------------------------------------------------
def _speed(src: Sources, table: str, since: datetime) -> pl.DataFrame:
    from shoplake.core.speed.tables import read_table

    return read_table(table, src.lake_root, start=since.date(), end=None)


def live_metrics(src: Sources, minutes: int = 30, dimension: str = "all") -> pl.DataFrame:
    """10-second windows of the last ``minutes`` (newest event time in the table as 'now')."""
    frame = _speed(src, "window_metrics", clock.now() - timedelta(days=1))
    frame = frame.filter((pl.col("window_size") == "10s") & (pl.col("dimension") == dimension))
    if frame.is_empty():
        return frame
    newest = frame["window_start"].max()
    return frame.filter(pl.col("window_start") > newest - timedelta(minutes=minutes)).sort(
        "window_start"
    )


def live_summary(src: Sources) -> dict[str, Any]:
    """The Live page's headline numbers, over the last hour of event time."""
    now = clock.now()
    m1 = _speed(src, "window_metrics", now - timedelta(days=1)).filter(
        (pl.col("window_size") == "1m") & (pl.col("dimension") == "all")
    )
    out: dict[str, Any] = {
        "events_per_s": None,
        "conversion_rate": None,
        "revenue_1h": None,
        "active_sessions": None,
        "avg_session_seconds": None,
        "newest": None,
    }
    if not m1.is_empty():
        newest = m1["window_start"].max()
        hour = m1.filter(pl.col("window_start") > newest - timedelta(hours=1))
        last = m1.filter(pl.col("window_start") == newest).row(0, named=True)
        out["newest"] = newest
        out["events_per_s"] = last["events"] / 60
        out["revenue_1h"] = float(hour["revenue"].sum())
        visitors, buyers = hour["unique_visitors"].sum(), hour["buyers"].sum()
        out["conversion_rate"] = buyers / visitors if visitors else None
    active = _speed(src, "active_sessions", now - timedelta(days=1))
    if not active.is_empty():
        out["active_sessions"] = int(active.sort("window_start")["active_sessions"][-1])
    sessions = _speed(src, "sessions", now - timedelta(days=1))
    if not sessions.is_empty():
        recent = sessions.filter(
            pl.col("ended_at") > sessions["ended_at"].max() - timedelta(hours=1)
        )
        out["avg_session_seconds"] = float(recent["duration_seconds"].mean())
    return out


def recent_alerts(src: Sources, hours: int = 1) -> pl.DataFrame:
    frame = _speed(src, "alerts", clock.now() - timedelta(days=1))
    if frame.is_empty():
        return frame
    newest = frame["window_start"].max()
    return frame.filter(pl.col("window_start") > newest - timedelta(hours=hours)).sort(
        "window_start", descending=True
    )


def live_top_products(src: Sources, ranking: str = "views") -> pl.DataFrame:
    frame = _speed(src, "top_products", clock.now() - timedelta(days=1))
    frame = frame.filter(pl.col("ranking") == ranking)
    if frame.is_empty():
        return frame
    return frame.filter(pl.col("window_start") == frame["window_start"].max()).sort("rank")


# -- Data health -----------------------------------------------------------------------------------
def latest_partitions(src: Sources) -> pl.DataFrame:
    rows = []
    for layer in ("bronze", "silver", "speed"):
        root = src.lake_root if layer == "speed" else src.batch_lake
        for table in sorted(p for p in (root / layer).glob("*") if p.is_dir()):
            days = sorted(p.name[5:] for p in table.glob("date=*"))
            if days:
                rows.append(
                    {
                        "layer": layer,
                        "table": table.name,
                        "latest": days[-1],
                        "partitions": len(days),
                    }
                )
    return pl.DataFrame(
        rows,
        schema={
            "layer": pl.String,
            "table": pl.String,
            "latest": pl.String,
            "partitions": pl.Int64,
        },
    )


def rejects_by_day(src: Sources) -> pl.DataFrame:
    """Quarantined rows (silver) and dead letters (bronze DLQ) per day, from the manifests."""
    rows = []
    for label, table in (("quarantined", "silver/events_quarantine"), ("dlq", "bronze/dlq_events")):
        for manifest in sorted((src.batch_lake / table).glob("date=*/_manifest.json")):
            n = json.loads(manifest.read_text()).get("rows", 0)
            rows.append({"day": manifest.parent.name[5:], "kind": label, "rows": n})
    return pl.DataFrame(rows, schema={"day": pl.String, "kind": pl.String, "rows": pl.Int64})


def stream_lag(src: Sources, bootstrap: str) -> pl.DataFrame:
    """Per input partition: the offset the stream has durably reached and the lag behind it."""
    from shoplake.core.speed.progress import consumer_lag, read_offsets

    offsets = read_offsets(src.home / "stream" / "recovery")
    if not offsets:
        return pl.DataFrame()
    lag = consumer_lag(bootstrap, offsets, timeout=2)
    return pl.DataFrame(
        [
            {"topic": t, "partition": f"{t}/{p}", "offset": offsets[(t, p)], "lag": lag[(t, p)]}
            for t, p in sorted(offsets)
        ]
    )


def check_results() -> pl.DataFrame:
    """Latest evaluation of each asset check, from the Dagster instance (DAGSTER_HOME)."""
    import dagster as dg

    instance = dg.DagsterInstance.get()
    records = instance.get_event_records(
        dg.EventRecordsFilter(event_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION),
        limit=5000,
        ascending=False,
    )
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    for rec in records:
        ev = rec.event_log_entry.dagster_event.event_specific_data
        key = (ev.asset_key.to_user_string(), ev.check_name)
        if key not in seen:
            seen[key] = {
                "asset": key[0],
                "check": key[1],
                "passed": ev.passed,
                "severity": ev.severity.value,
                "at": datetime.fromtimestamp(rec.event_log_entry.timestamp, UTC),
            }
    return pl.DataFrame(list(seen.values())) if seen else pl.DataFrame()


def notifications(src: Sources, limit: int = 50) -> pl.DataFrame:
    rows = read_log(src.home, limit)
    return (
        pl.DataFrame(
            [{k: r.get(k) for k in ("at", "severity", "title", "text", "slack")} for r in rows]
        )
        if rows
        else pl.DataFrame()
    )
