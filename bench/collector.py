"""Collector throughput and latency vs a plain confluent-kafka produce loop, same payloads, same run.

    .venv/bin/python -m bench.collector [--events 200000] [--batch 100] [--concurrency 16]

Starts a throw-away local broker and the collector as its own process (uvicorn, one worker). The
load generator is an asyncio httpx client in this process.
Peers, each over the same simulated payloads (PII included, faults off):
  - plain loop: Producer.produce() of the raw payloads with the collector's producer settings
    (idempotent, acks=all), one flush at the end: the ceiling of what Kafka + client can take;
  - plain loop acked per batch: the same, waiting for every batch of --batch to be acknowledged,
    the guarantee the collector gives before it answers 2xx.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import httpx
from confluent_kafka import Producer

from bench.support import (
    RunningCollector,
    collector_env,
    cpu_seconds,
    session_environment,
    start_broker,
)
from shoplake.core import clock
from shoplake.core.days import last_closed_day
from shoplake.core.kafka_io import producer_config
from shoplake.simulator import FaultRates, SimConfig, simulate
from shoplake.simulator.sinks import MemorySink


def payloads(n: int) -> list[bytes]:
    """n simulated payloads of days that have fully arrived by the clock in effect (main puts it
    on the tests' fixed date)."""
    sink = MemorySink()
    days = 1
    while len(sink.payloads) < n:
        sink.payloads.clear()
        start = last_closed_day(clock.today()) - timedelta(days=days)
        cfg = SimConfig(start=start, days=days, users=max(1000, n // 3), faults=FaultRates.none())
        simulate(cfg, sink, None, show_progress=False)
        days += 1
    return sink.payloads[:n]


def plain_loop(bootstrap: str, data: list[bytes], keys: list[bytes], batch: int | None) -> float:
    producer = Producer(producer_config(bootstrap, 30_000))
    t = time.perf_counter()
    for i, (value, key) in enumerate(zip(data, keys, strict=True)):
        while True:
            try:
                producer.produce("bench.plain", value, key)
                break
            except BufferError:
                producer.poll(0.01)
        if batch and (i + 1) % batch == 0:
            producer.flush()
    producer.flush()
    return len(data) / (time.perf_counter() - t)


async def load(url: str, bodies: list[bytes], concurrency: int) -> tuple[float, list[float], int]:
    latencies: list[float] = []
    accepted = 0
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for b in bodies:
        queue.put_nowait(b)
    headers = {
        "X-Write-Key": "test-replay-key",
        "Content-Type": "application/json",
        "X-Shoplake-Replay": "1",
    }

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal accepted
        while not queue.empty():
            body = queue.get_nowait()
            t = time.perf_counter()
            resp = await client.post(url, content=body, headers=headers)
            latencies.append(time.perf_counter() - t)
            if resp.status_code != 200:
                raise RuntimeError(f"collector answered {resp.status_code}: {resp.text[:200]}")
            accepted += resp.json()["accepted"]

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        t = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - t
    return elapsed, latencies, accepted


def load_wrk(
    url: str, bodies: list[bytes], concurrency: int, seconds: int, workdir: Path
) -> tuple[float, float, float, int]:
    """wrk (C) as the load generator: (events/s, p50 s, p99 s, requests). Needs every answer 200."""
    body_file = workdir / "bodies.txt"
    body_file.write_bytes(b"\n".join(bodies) + b"\n")
    script = Path(__file__).with_name("wrk_post.lua")
    proc = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{concurrency}",
            f"-d{seconds}s",
            "--timeout",
            "30s",
            "-s",
            str(script),
            url,
            "--",
            str(body_file),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    m = re.search(
        r"WRK requests=(\d+) non2xx=(\d+) socket_errors=(\d+) duration_us=(\d+) p50_us=(\d+) p99_us=(\d+)",
        proc.stdout,
    )
    if not m:
        raise RuntimeError(f"unexpected wrk output:\n{proc.stdout}{proc.stderr}")
    requests, non2xx, errors, duration, p50, p99 = map(int, m.groups())
    if non2xx or errors:
        raise RuntimeError(f"{non2xx} non-2xx answers and {errors} socket errors under load")
    events_per_request = statistics.mean(b.count(b'"event_id"') for b in bodies)
    return requests * events_per_request / (duration / 1e6), p50 / 1e6, p99 / 1e6, requests


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument(
        "--client",
        choices=["wrk", "python"],
        default="wrk" if shutil.which("wrk") else "python",
        help="load generator: wrk (apt-get install wrk; default when found) or an httpx asyncio client",
    )
    ap.add_argument("--seconds", type=int, default=15, help="duration of the wrk run")
    ap.add_argument("--workers", type=int, default=1, help="collector worker processes")
    args = ap.parse_args()
    # As the tests run (the same payloads on every day): the fixed date, no shell settings.
    session_environment()

    tmp = Path(tempfile.mkdtemp(prefix="shoplake-bench-"))
    broker = start_broker(tmp / "kafka")
    bootstrap = broker.bootstrap
    from shoplake.core.platform.topics import TopicSpec, ensure_topics

    ensure_topics(bootstrap, {"bench.plain": TopicSpec("bench.plain", 6, 3_600_000, "delete")})
    unlimited = {
        "SHOPLAKE_RATE_LIMIT": "1000000",
        "SHOPLAKE_RATE_BURST": "1000000",
        "SHOPLAKE_RATE_LIMIT_EVENTS": "100000000",
        "SHOPLAKE_RATE_CLIENT_SHARE": "1",
    }
    env = collector_env(
        tmp / "collector", bootstrap, SHOPLAKE_DELIVERY_TIMEOUT_MS="30000", **unlimited
    )
    collector = RunningCollector(env, workers=args.workers)
    try:
        data = payloads(args.events)
        keys = [json.loads(p)["anonymous_id"].encode() for p in data]
        bodies = [
            b"[" + b",".join(data[i : i + args.batch]) + b"]"
            for i in range(0, len(data), args.batch)
        ]
        mb = sum(map(len, data)) / 1e6
        print(
            f"{len(data):,} events, {mb:.1f} MB, batches of {args.batch}, {args.concurrency} concurrent requests"
        )

        asyncio.run(load(collector.url + "/v1/events", bodies[:50], args.concurrency))  # warm-up
        # Best of two for each peer: the first pass also warms the broker's JIT.
        plain = max(plain_loop(bootstrap, data, keys, None) for _ in range(2))
        plain_batched = max(plain_loop(bootstrap, data, keys, args.batch) for _ in range(2))
        pids = {"collector": collector.pid}
        pids |= {
            f"collector worker {i}": int(p)
            for i, p in enumerate(
                subprocess.run(
                    ["pgrep", "-P", str(collector.pid)], capture_output=True, text=True
                ).stdout.split()
            )
        }
        if args.client == "python":
            pids["load client"] = os.getpid()
        pids["kafka broker"] = broker.pid()
        cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
        if args.client == "wrk":
            t0 = time.perf_counter()
            rate, p50, p99, _ = load_wrk(
                collector.url + "/v1/events", bodies, args.concurrency, args.seconds, tmp
            )
            elapsed = time.perf_counter() - t0
        else:
            elapsed, lat, accepted = asyncio.run(
                load(collector.url + "/v1/events", bodies, args.concurrency)
            )
            assert accepted == len(data), (accepted, len(data))
            rate = accepted / elapsed
            lat.sort()
            p50, p99 = statistics.median(lat), lat[int(0.99 * (len(lat) - 1))]
        cpu = {name: (cpu_seconds(pid) - cpu0[name]) / elapsed for name, pid in pids.items()}
        print(f"plain produce loop (flush at end):      {plain:12,.0f} events/s")
        print(f"plain produce loop (acked per batch):   {plain_batched:12,.0f} events/s")
        print(
            f"collector (HTTP, validate, HMAC, ack):  {rate:12,.0f} events/s   (load: {args.client})"
        )
        print(f"ratio collector / plain loop:           {rate / plain:.1%}")
        print(f"ratio collector / plain acked per batch:{rate / plain_batched:.1%}")
        print(
            f"request latency (batch of {args.batch}): p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms"
        )
        print(
            "CPU during the collector phase (cores): "
            + ", ".join(f"{k} {v:.2f}" for k, v in cpu.items())
        )
    finally:
        collector.stop()
        broker.stop()


if __name__ == "__main__":
    main()
