"""The long fuzz run of the collector: N generated requests against its own throw-away broker,
then every promise checked against both topics (see bench/fuzz_harness.py).

    .venv/bin/python -m bench.fuzz_collector [--requests 10000] [--seed 1]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from bench.fuzz_harness import Ledger, fuzz, verify
from bench.support import RunningCollector, collector_env, session_environment, start_broker


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    session_environment()  # as the tests run: the fixed date, no shell settings
    tmp = Path(tempfile.mkdtemp(prefix="shoplake-fuzz-"))
    broker = start_broker(tmp / "kafka")
    collector = RunningCollector(collector_env(tmp / "collector", broker.bootstrap))
    ledger = Ledger()
    try:
        t = time.perf_counter()
        fuzz(collector.url, args.requests, ledger, seed=args.seed)
        seconds = time.perf_counter() - t
        problems = verify(broker.bootstrap, ledger)
    finally:
        collector.stop()
        broker.stop()
    statuses = ", ".join(f"{s}: {n:,}" for s, n in sorted(ledger.statuses.items()))
    print(f"{ledger.requests:,} requests in {seconds:.0f}s; answers {statuses}")
    print(f"5xx answers: {sum(n for s, n in ledger.statuses.items() if s >= 500)}")
    print(
        f"events accepted: {sum(ledger.accepted.values()):,} (all in shop.events exactly once: "
        f"{not any('accepted' in p for p in problems)})"
    )
    print(
        f"events rejected: {ledger.rejected:,} (DLQ records: "
        f"{'as many' if not any('DLQ' in p for p in problems) else 'NOT as many'})"
    )
    print(
        f"personal values planted: {len(ledger.secrets):,}; found raw in a topic: "
        f"{sum('raw personal' in p for p in problems)} (at most 10 are listed)"
    )
    for p in problems:
        print(f"PROBLEM: {p[:2000]}")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
