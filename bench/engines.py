"""Polars or DuckDB for silver/sessions? The same sessionization both ways, same input, same run.

    .venv/bin/python -m bench.engines --lake /tmp/shoplake-batch-XXXX/home/lake [--repeat 3]

Reads silver/events of the lake's newest day and the days around it (what the asset reads), then
runs pipeline_assets.silver.sessions.sessionize (Polars) and an equivalent DuckDB query over the
same in-memory Arrow table. Both must give the same session ids and counts; the figure is the
median wall time of each, and their ratio. `python -m bench.batch` leaves such a lake behind.
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import date, timedelta
from pathlib import Path

import duckdb
import polars as pl

from pipeline_assets.silver.sessions import sessionize
from shoplake.core.lake.io import read_partitions

DUCKDB_SESSIONS = """
with ordered as (
    select *,
        case when lag(event_at) over w is null
               or event_at - lag(event_at) over w > interval 30 minute then 1 else 0 end as is_new
    from events
    window w as (partition by anonymous_id order by event_at, event_id)
),
numbered as (
    select *, sum(is_new) over (partition by anonymous_id order by event_at, event_id
                                rows unbounded preceding) as seq
    from ordered
),
identity as (
    select anonymous_id, arg_max(user_id, event_at) as known_user_id
    from events where user_id is not null group by 1
),
sessions as (
    select
        anonymous_id, seq,
        arg_min(event_id, (event_at, event_id)) as first_event_id,
        arg_min(user_id, (event_at, event_id)) filter (where user_id is not null) as session_user_id,
        min(event_at) as started_at, max(event_at) as ended_at,
        count(*) as n_events,
        count(*) filter (where event_type = 'page_view') as n_page_views,
        count(*) filter (where event_type = 'product_view') as n_product_views,
        count(*) filter (where event_type = 'add_to_cart') as n_add_to_carts,
        count(*) filter (where event_type = 'begin_checkout') as n_checkouts,
        count(*) filter (where event_type = 'purchase') as n_purchases,
        sum(total) filter (where event_type = 'purchase') as revenue,
        arg_min(platform, (event_at, event_id)) as platform,
        arg_min(device_type, (event_at, event_id)) as device_type,
        bool_or(is_bot) as is_bot
    from numbered group by all
)
select
    substr(sha256(s.anonymous_id || '|' || s.first_event_id), 1, 24) as session_id,
    cast(s.started_at as date) as session_date,
    coalesce(s.session_user_id, i.known_user_id) as user_id,
    s.* exclude (seq, first_event_id, session_user_id),
    n_events = 1 as is_bounce
from sessions s left join identity i using (anonymous_id)
where cast(s.started_at as date) = $day
"""


def newest_day(lake: Path) -> date:
    days = sorted(p.name.removeprefix("date=") for p in (lake / "silver/events").glob("date=*"))
    if not days:
        raise SystemExit(f"no silver/events under {lake}: run 'python -m bench.batch' first")
    return date.fromisoformat(days[-1])


def timed(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--lake", type=Path, required=True, help="a lake root with silver/events")
    ap.add_argument("--day", type=date.fromisoformat, help="default: the newest silver day")
    ap.add_argument("--repeat", type=int, default=3, help="runs per engine (median reported)")
    args = ap.parse_args()
    day = args.day or newest_day(args.lake)
    around = [day - timedelta(days=1), day, day + timedelta(days=1)]
    events = pl.concat(read_partitions(args.lake / "silver/events", around), how="diagonal_relaxed")
    print(f"{events.height:,} silver events around {day}")

    polars_s, polars_out = timed(lambda: sessionize(events, day), args.repeat)
    con = duckdb.connect()
    con.register("events", events.to_arrow())
    duck_s, duck_out = timed(
        lambda: pl.from_arrow(con.sql(DUCKDB_SESSIONS, params={"day": day}).to_arrow_table()),
        args.repeat,
    )

    p_ids = set(polars_out["session_id"])
    d_ids = set(duck_out["session_id"])
    same = p_ids == d_ids
    print(f"sessions: polars {len(p_ids):,}, duckdb {len(d_ids):,}, same ids: {same}")
    if same:
        cols = ["session_id", "n_events", "n_purchases", "is_bot"]
        joined = polars_out.select(cols).join(duck_out.select(cols), on="session_id")
        diff = joined.filter(
            (pl.col("n_events") != pl.col("n_events_right"))
            | (pl.col("n_purchases") != pl.col("n_purchases_right"))
            | (pl.col("is_bot") != pl.col("is_bot_right"))
        ).height
        print(f"sessions whose counts differ: {diff}")
    print(f"polars sessionize:  {polars_s:6.2f} s (median of {args.repeat})")
    print(f"duckdb sessionize:  {duck_s:6.2f} s (median of {args.repeat})")
    print(f"ratio polars / duckdb: {polars_s / duck_s:5.2f} x")


if __name__ == "__main__":
    main()
