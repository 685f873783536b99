"""``python -m bench.stream``: the options, the input, each stage against its peer, the report."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

import bench.stream
from bench.stream.day import BenchTopicsSink, create_topics, simulate_day
from bench.stream.latency import latency
from bench.stream.runs import QUARTERS, measure
from bench.support import session_environment, start_broker
from shoplake.core import clock
from shoplake.core.ingest import Ingestor
from shoplake.core.pii import Pseudonymizer

TARGETS = {"decode": 0.50, "1m": 0.20, "sessions": 0.10}


def line(label: str, r: dict) -> None:
    rss = " ".join(f"{r['rss'][q]:.0f}" for q in QUARTERS)
    print(
        f"   {label:<44}{r['rate']:9,.0f} rec/s {r['cpu_rate']:9,.0f} rec/CPU-s   RSS MB at 25/50/75/100 %: {rss}"
    )


def ratios(label: str, a: dict, b: dict, target: float | None) -> None:
    wall, cpu = a["rate"] / b["rate"], a["cpu_rate"] / b["cpu_rate"]
    met = (
        ""
        if target is None
        else f"   target >= {target:.0%}: {'met' if wall >= target else 'NOT met'}"
    )
    print(f"   {label:<44}{wall:9.1%} wall     {cpu:9.1%} CPU{met}")


def same(a: dict, b: dict) -> str:
    if (a["counts"], a["digest"]) == (b["counts"], b["digest"]):
        return "identical (" + ", ".join(f"{k} {v:,}" for k, v in sorted(a["counts"].items())) + ")"
    return f"DIFFERENT: bytewax {a['counts']} {a['digest']} vs loop {b['counts']} {b['digest']}"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=bench.stream.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--visitors",
        type=int,
        default=200_000,
        help="simulated users (about a third visit on the day, ~11 events each); 500k, 5M for bigger runs",
    )
    ap.add_argument(
        "--stages",
        default="decode,1m,sessions,latency",
        help="comma-separated subset of decode, 1m, sessions, latency",
    )
    ap.add_argument(
        "--repeat",
        type=int,
        default=2,
        help="runs of each throughput engine, interleaved; the fastest counts",
    )
    ap.add_argument(
        "--recovery",
        action="store_true",
        help="throughput flows snapshot to a recovery store every 5 s, as `shoplake stream` does",
    )
    ap.add_argument(
        "--sustain-seconds",
        type=float,
        default=150,
        help="cap on the production process's replay of the day (its sustained rate)",
    )
    ap.add_argument(
        "--latency-rate",
        type=float,
        default=None,
        help="offered records/s in the latency run (default: 50 %% of the sustained rate)",
    )
    ap.add_argument(
        "--latency-seconds", type=float, default=60, help="duration of the live traffic"
    )
    ap.add_argument(
        "--latency-warmup",
        type=float,
        default=100,
        help="seconds of traffic before measuring: the merge steps wait for never-seen "
        "shards for 3 x SHOPLAKE_STREAM_IDLE_SECONDS (90 s) after their first input",
    )
    ap.add_argument(
        "--latency-pool",
        type=int,
        default=100_000,
        help="simulated payloads the latency traffic cycles through (fresh event ids)",
    )
    ap.add_argument(
        "--latency-lateness",
        type=float,
        default=0,
        help="SHOPLAKE_STREAM_LATENESS_SECONDS of the latency run (production: 30)",
    )
    ap.add_argument(
        "--latency-no-recovery",
        action="store_true",
        help="run the latency process without recovery snapshots (to see their cost)",
    )
    ap.add_argument("--bursts", type=float, default=5, help="bot bursts per second (alert samples)")
    ap.add_argument(
        "--drain", type=float, default=8, help="seconds to keep watching after the traffic"
    )
    ap.add_argument(
        "--bootstrap",
        default=None,
        help="use this (throw-away) broker instead of starting one; the latency run writes to its shop.metrics.*/shop.alerts",
    )
    args = ap.parse_args()
    stages = {s.strip() for s in args.stages.split(",") if s.strip()}
    # As the tests run: the simulated day is the day before the fixed date, so the digests do not
    # change from one day to the next (SHOPLAKE_CLOCK moves it); shell settings are dropped.
    session_environment()

    tmp = Path(tempfile.mkdtemp(prefix="shoplake-bench-stream-"))
    broker = None
    bootstrap = args.bootstrap
    t_all = time.perf_counter()
    done = False
    print(
        f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs"
    )
    try:
        if bootstrap is None:
            broker = start_broker(tmp / "kafka")
            bootstrap = broker.bootstrap
        tag = uuid.uuid4().hex[:6]
        topics = (f"bench.stream-{tag}.events", f"bench.stream-{tag}.dlq")
        create_topics(bootstrap, *topics)
        t = time.perf_counter()
        day = clock.today() - timedelta(days=1)
        sink = BenchTopicsSink(Ingestor(Pseudonymizer(b"bench-key", "k1")), bootstrap, *topics)
        simulate_day(day, args.visitors, sink, tmp)
        total, visitors = sum(sink.counts.values()), len(sink.visitors)
        print(
            f"input: {total:,} records of {day} ({sink.counts[topics[0]]:,} events, "
            f"{sink.counts[topics[1]]:,} DLQ, faults on) from {args.visitors:,} simulated users, "
            f"{visitors:,} of whom visit that day; produced in {time.perf_counter() - t:.0f} s"
        )
        del sink
        common = {
            "bootstrap": bootstrap,
            "events_topic": topics[0],
            "dlq_topic": topics[1],
            "total": total,
            "recovery": args.recovery,
        }
        print(
            "throughput: each run its own process, reading both topics from Kafka to EOF; "
            f"Bytewax: run_main, 1 worker, {'recovery every 5 s' if args.recovery else 'no recovery'}"
        )

        if "decode" in stages:
            print("\n1. stateless decode + validate (contracts)")
            a, b, f = measure("decode", ["decode_event", "loop", "bytewax"], common, args.repeat)
            line("plain loop: decode_event(value)", a)
            line("plain loop: decode_message (the step's work)", b)
            line("Bytewax: decode_event step", f)
            ratios("ratio Bytewax / decode_event loop", f, a, TARGETS["decode"])
            ratios("ratio Bytewax / same-work loop", f, b, None)
            print(f"   outputs: {same(f, b)}")
        if "1m" in stages:
            print("\n2. 1-minute window metrics (decode, dedupe, per-shard watermark, late counts)")
            b, f = measure("1m", ["loop", "bytewax"], common, args.repeat)
            line("plain loop", b)
            line("Bytewax (1 worker)", f)
            ratios("ratio Bytewax / loop", f, b, TARGETS["1m"])
            ok = "met" if f["rate"] >= 50_000 else "NOT met"
            print(
                f"   Bytewax per worker: {f['rate']:,.0f} records/s wall, {f['cpu_rate']:,.0f} per "
                f"CPU-second (target >= 50,000/s: {ok})"
            )
            print(f"   outputs: {same(f, b)}")
        if "sessions" in stages:
            print(f"\n3. sessionization, {visitors:,} visitors over one simulated day")
            b, f = measure("sessions", ["loop", "bytewax"], common, args.repeat)
            line("plain loop", b)
            line("Bytewax (1 worker)", f)
            ratios("ratio Bytewax / loop", f, b, TARGETS["sessions"])
            for label, r in (("Bytewax", f), ("loop", b)):
                rss = [r["rss"][q] for q in QUARTERS]
                print(
                    f"   {label} RSS 25 % -> 75 %: {rss[2] - rss[0]:+.0f} MB, 25 % -> 100 %: "
                    f"{rss[3] - rss[0]:+.0f} MB; peak {r['peak_mb']:.0f} MB"
                )
            print(f"   outputs: {same(f, b)}")
        if "latency" in stages:
            latency(args, tmp, bootstrap, topics, total, broker.pid() if broker else None)
        print(
            f"\ntotal {time.perf_counter() - t_all:.0f} s; load average at end: "
            f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}"
        )
        done = True
    finally:
        if broker is not None:
            broker.stop()
        if done:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"logs and data kept in {tmp}", file=sys.stderr)


if __name__ == "__main__":
    main()
