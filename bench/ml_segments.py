"""Customer segments on a built lake: silhouette per day for the served k-means and its peers,
the choice of k, and how stable segment ids are from one day to the next.

    .venv/bin/python -m bench.ml_segments --home /work/scratch/mlhome [--first 2026-10-27]

Reads the lake's warehouse (gold.mart_rfm_segments) and ml/user_daily_features read-only; writes
nothing. Every day from ``--first`` (default: the first day with enough customers) to the last
day of the mart is segmented as the asset does it, chaining each day's centroids to the next.

- served: k-means, k=4, on log1p-scaled RFM + 28-day behaviour, ids matched to yesterday's
  centroids (Hungarian);
- gmm: a Gaussian mixture (full covariance) on the same inputs, matched the same way;
- rfm only: k-means on recency, frequency and monetary alone (its silhouette is over 3 features
  instead of 6, so it is not comparable one to one; it shows what the behaviour features cost);
- unmatched: the served clustering with ids ordered by value each day instead of matched;
- sql mart: gold.mart_rfm_segments' rule-based rfm_segment, the segmentation that exists.

"kept" is the share of customers present on both days whose segment did not change.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import polars as pl

from shoplake.core.lake.io import lake_location, read_partition, stored_days
from shoplake.core.ml import segments as S
from shoplake.core.settings import get_settings
from shoplake.core.warehouse import query as warehouse_query

K_RANGE = range(3, 7)
STICKINESS = (0.0, 0.25, 0.5, 1.0)


def _nan_mean(values: list[float]) -> float:
    kept = [v for v in values if v == v]
    return statistics.fmean(kept) if kept else float("nan")


def _nan_min(values: list[float]) -> float:
    kept = [v for v in values if v == v]
    return min(kept) if kept else float("nan")


class Chain:
    """One way of segmenting, run day after day with its own previous centroids."""

    def __init__(self, name: str, match: bool = True, **fit: object):
        self.name, self.match, self.fit = name, match, fit
        self.previous: S.PreviousDay | None = None
        self.table: pl.DataFrame | None = None
        self.silhouettes: list[float] = []
        self.kept: list[float] = []
        self.label_by_id: dict[int, set[str]] = {}
        self.label_changes = 0  # (day, id) whose label differs from the id's label the day before
        self.seconds = 0.0

    def step(self, day: date, inputs: pl.DataFrame) -> tuple[float, float]:
        started = time.perf_counter()
        seg = S.fit_segments(inputs, self.previous if self.match else None, **self.fit)
        self.seconds += time.perf_counter() - started
        table = S.segment_table(day, inputs, seg)
        kept = S.kept_share(self.table, table) if self.table is not None else float("nan")
        if self.previous is not None:
            before = self.previous.labels
            self.label_changes += sum(before.get(i) != label for i, label in seg.labels.items())
        self.previous, self.table = seg.carry(), table
        self.silhouettes.append(seg.silhouette)
        self.kept.append(kept)
        for i, label in seg.labels.items():
            self.label_by_id.setdefault(i, set()).add(label)
        return seg.silhouette, kept


def _behaviour_reader(lake_root: str) -> Callable[[date], pl.DataFrame]:
    table = lake_location(lake_root) / "ml" / "user_daily_features"
    cache: dict[date, pl.DataFrame | None] = {}

    def read(day: date) -> pl.DataFrame:
        frames = []
        for d in S.behaviour_window(day):
            if d not in cache:
                cache[d] = read_partition(table, d)
            if cache[d] is not None:
                frames.append(cache[d])
        return S.behaviour(frames, day)

    return read


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--home", type=Path, required=True, help="the SHOPLAKE_HOME of a built lake"
    )
    parser.add_argument("--first", type=date.fromisoformat, help="first day to segment")
    args = parser.parse_args()
    settings = get_settings({"SHOPLAKE_HOME": str(args.home)})
    warehouse = str(settings.home / "warehouse.duckdb")

    def query(sql: str, params: dict | None = None) -> pl.DataFrame:
        return warehouse_query(sql, params, path=warehouse)

    marts = query(
        "select as_of_date, count(*) as n from gold.mart_rfm_segments group by 1 order by 1"
    )
    feature_days = set(
        stored_days(lake_location(settings.lake_root) / "ml" / "user_daily_features")
    )
    days = [
        d
        for d, n in marts.iter_rows()
        if n >= S.MIN_CUSTOMERS and d in feature_days and (args.first is None or d >= args.first)
    ]
    if not days:
        raise SystemExit(
            f"no day with {S.MIN_CUSTOMERS}+ customers and user features in {args.home}"
        )
    behaviour = _behaviour_reader(settings.lake_root)
    chains = [
        Chain("served"),
        Chain("gmm", method="gmm"),
        Chain("rfm only", features=S.RFM_FEATURES),
        Chain("unmatched", match=False),
    ]
    by_k = {k: Chain(f"k={k}", k=k) for k in K_RANGE}
    by_stickiness = {v: Chain(f"stickiness {v}", stickiness=v) for v in STICKINESS}
    sql_kept: list[float] = []
    previous_sql: pl.DataFrame | None = None

    print(
        f"lake {args.home}: {days[0]}..{days[-1]} ({len(days)} days), k={S.K}, features {S.FEATURES}"
    )
    header = f"{'day':<11}{'customers':>10}" + "".join(f"{c.name + ' sil':>15}" for c in chains[:3])
    header += "".join(f"{c.name + ' kept':>16}" for c in chains) + f"{'sql mart kept':>15}"
    print(header)
    for day in days:
        inputs = S.segment_inputs(S.rfm_customers(query, day), behaviour(day))
        results = [c.step(day, inputs) for c in chains]
        for c in [*by_k.values(), *by_stickiness.values()]:
            c.step(day, inputs)
        sql = query(
            "select user_id as visitor_id, rfm_segment as segment_id from gold.mart_rfm_segments "
            "where as_of_date = $day",
            {"day": day},
        )
        kept = S.kept_share(previous_sql, sql) if previous_sql is not None else float("nan")
        sql_kept.append(kept)
        previous_sql = sql
        row = f"{day!s:<11}{inputs.height:>10}"
        row += "".join(f"{sil:>15.3f}" for sil, _ in results[:3])
        row += "".join(f"{k:>16.3f}" for _, k in results) + f"{kept:>15.3f}"
        print(row)

    print("\nsummary over the days (kept: from the second day on)")
    print(
        f"{'method':<12}{'mean sil':>10}{'min sil':>10}{'mean kept':>11}{'min kept':>10}{'fit s/day':>11}"
    )
    for c in chains:
        print(
            f"{c.name:<12}{_nan_mean(c.silhouettes):>10.3f}{_nan_min(c.silhouettes):>10.3f}"
            f"{_nan_mean(c.kept):>11.3f}{_nan_min(c.kept):>10.3f}{c.seconds / len(days):>11.3f}"
        )
    print(
        f"{'sql mart':<12}{'':>10}{'':>10}{_nan_mean(sql_kept):>11.3f}{_nan_min(sql_kept):>10.3f}"
    )
    served = chains[0]
    print(
        f"\nserved vs gmm mean silhouette: {_nan_mean(served.silhouettes):.3f} vs "
        f"{_nan_mean(chains[1].silhouettes):.3f} "
        f"(x{_nan_mean(served.silhouettes) / _nan_mean(chains[1].silhouettes):.2f})"
    )
    print(
        f"served vs unmatched mean kept: {_nan_mean(served.kept):.3f} vs "
        f"{_nan_mean(chains[3].kept):.3f}; sql mart {_nan_mean(sql_kept):.3f}"
    )
    print("\nk-means silhouette by k (served inputs, ids matched day to day)")
    print(f"{'k':<4}{'mean sil':>10}{'min sil':>10}{'mean kept':>11}")
    for k, c in by_k.items():
        print(
            f"{k:<4}{_nan_mean(c.silhouettes):>10.3f}{_nan_min(c.silhouettes):>10.3f}"
            f"{_nan_mean(c.kept):>11.3f}"
        )
    print(
        f"\nlabel changes (a segment id's label differs from the day before; "
        f"{(len(days) - 1) * S.K} id-days), by stickiness (served: {S.LABEL_STICKINESS})"
    )
    for v, c in by_stickiness.items():
        print(f"  {v:<5} {c.label_changes:>4}")
    print("\nlabels each served segment id carried over the days")
    for i, labels in sorted(served.label_by_id.items()):
        print(f"  {i}: {', '.join(sorted(labels))}")
    last = served.table
    if last is not None:
        profile = (
            last.group_by("segment_id", "segment_label")
            .agg(pl.len().alias("customers"), *[pl.col(f).mean().round(2) for f in S.FEATURES])
            .sort("segment_id")
        )
        with pl.Config(tbl_cols=-1, tbl_width_chars=200):
            print(f"\nprofiles on {days[-1]}\n{profile}")


if __name__ == "__main__":
    main()
