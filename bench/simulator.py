"""Simulator peak memory and speed as the population grows, each size vs the smallest, same run.

    .venv/bin/python -m bench.simulator [--users 30000 300000] [--shopdb]

Every size simulates one day (default faults) in a fresh process, into a sink that counts and drops
what it receives, so the figure is the simulator's own memory and not the sink's. ``--shopdb`` adds
the order database (SQLite in a temporary folder), as ``bench.batch`` does. Bounded memory shows as
a peak-RSS ratio near 1 against the smallest size while records grow with the users.

    .venv/bin/python -m bench.simulator --child 300000   # one size in this process, a JSON line
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import date
from pathlib import Path

from shoplake.simulator import FaultRates, SimConfig, simulate
from shoplake.simulator.faults import Record
from shoplake.simulator.shopdb import ShopDB
from shoplake.simulator.sinks import Sink

DAY = date(2026, 10, 7)  # a Wednesday, in the past


class CountingSink(Sink):
    """Counts records and payload bytes; keeps nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0

    def write(self, records: Sequence[Record]) -> None:
        self.results["written"] += len(records)
        self.bytes += sum(len(r.payload) for r in records)


def one(users: int, shopdb: bool) -> dict:
    sink = CountingSink()
    with tempfile.TemporaryDirectory(prefix="shoplake-bench-sim-") as tmp:
        db = ShopDB(None, Path(tmp) / "shop.sqlite") if shopdb else None
        t = time.perf_counter()
        report = simulate(
            SimConfig(start=DAY, days=1, users=users, faults=FaultRates()),
            sink,
            db,
            show_progress=False,
        )
        seconds = time.perf_counter() - t
        orders = report.db_rows.get("orders", 0)
    return {
        "users": users,
        "records": sink.results["written"],
        "mb_out": sink.bytes / 1e6,
        "seconds": seconds,
        "orders": orders,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--users",
        type=int,
        nargs="+",
        default=[30_000, 300_000],
        help="population sizes, each simulated for one day in its own process",
    )
    ap.add_argument("--shopdb", action="store_true", help="also write orders to a SQLite shop DB")
    ap.add_argument("--child", type=int, help="run one size in this process and print JSON")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(one(args.child, args.shopdb)))
        return
    rows = []
    for users in sorted(args.users):
        cmd = [sys.executable, "-m", "bench.simulator", "--child", str(users)]
        out = subprocess.run(
            cmd + ["--shopdb"] * args.shopdb, check=True, capture_output=True, text=True
        ).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        r, base = rows[-1], rows[0]
        print(
            f"users {r['users']:>10,}  records {r['records']:>11,}  "
            f"{r['records'] / r['seconds']:>8,.0f} records/s  peak RSS {r['peak_rss_mb']:>8,.0f} MB  "
            f"x{r['peak_rss_mb'] / base['peak_rss_mb']:.2f} the RSS of {base['users']:,} users "
            f"for x{r['records'] / base['records']:.1f} the records",
            flush=True,
        )


if __name__ == "__main__":
    main()
