"""Dashboard query latency on gold: p50/p95 of every query the Commerce and Ads pages run.

    .venv/bin/python -m bench.serving --home /tmp/shoplake-batch-XXXX/home [--runs 50]

Each query opens the warehouse read-only, runs, and closes it, exactly as the pages do
(shoplake/dashboards/data.py), so the figure includes the connection; the open/close alone is
printed beside it.
`python -m bench.batch` leaves a one-day warehouse of about a million events behind.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import duckdb

from shoplake.dashboards import data


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--home", type=Path, required=True, help="a SHOPLAKE_HOME with a warehouse")
    ap.add_argument("--runs", type=int, default=50, help="runs per query")
    args = ap.parse_args()
    src = data.Sources(args.home / "lake", args.home / "warehouse.duckdb", None, args.home)
    bounds = data.date_bounds(src)
    if bounds is None:
        raise SystemExit(f"no gold.mart_daily_kpis rows in {src.warehouse_path}")
    start, end = bounds
    queries = {
        "daily_kpis": lambda: data.daily_kpis(src, start, end),
        "funnel": lambda: data.funnel(src, start, end, None),
        "top_products": lambda: data.top_products(src, start, end, 20),
        "categories": lambda: data.categories(src, start, end),
        "rfm_segments": lambda: data.rfm_segments(src),
        "cohorts": lambda: data.cohorts(src),
        "daily_ctr": lambda: data.daily_ctr(src, start, end),
        "hourly_ctr": lambda: data.hourly_ctr(src, start, end),
        "device_performance": lambda: data.device_performance(src, start, end, None),
        "inventory_categories": lambda: data.inventory_categories(src, start, end),
        "banner_positions": lambda: data.banner_positions(src, start, end),
    }
    events = duckdb.connect(str(src.warehouse_path), read_only=True)
    n_events = events.sql("select count(*) from gold.fct_events").fetchall()[0][0]
    events.close()
    print(f"warehouse {src.warehouse_path} ({n_events:,} events, {start}..{end}), {args.runs} runs")
    all_times: list[float] = []
    print(f"{'query':22s} {'rows':>6s} {'p50 ms':>8s} {'p95 ms':>8s}")
    for name, fn in queries.items():
        rows = fn().height  # warm the OS cache once
        times = []
        for _ in range(args.runs):
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1000)
        all_times += times
        print(
            f"{name:22s} {rows:6d} {statistics.median(times):8.1f} {percentile(times, 0.95):8.1f}"
        )
    print(
        f"all queries: p50 {statistics.median(all_times):.1f} ms, "
        f"p95 {percentile(all_times, 0.95):.1f} ms (target p95 <= 100 ms)"
    )

    t_open = []
    for _ in range(args.runs):
        t = time.perf_counter()
        duckdb.connect(str(src.warehouse_path), read_only=True).close()
        t_open.append((time.perf_counter() - t) * 1000)
    print(f"opening + closing the file alone: p50 {statistics.median(t_open):.1f} ms")


if __name__ == "__main__":
    main()
