"""One measured run in its own process (clean heap, its own RSS): the child that runs one engine
over the bench topics, and the parent side that starts children and keeps the fastest run."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from bytewax.testing import run_main

from bench.stream.day import DLQ_PARTITIONS, EVENT_PARTITIONS
from bench.stream.flows import FLOWS, kafka_source
from bench.stream.loops import PEERS, consume
from bench.stream.tally import Tally, TallySink
from shoplake.core.stream_config import StreamConfig
from streaming import prom
from streaming.testing import replay_config

QUARTERS = (25, 50, 75, 100)


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def peak_rss_mb() -> float:
    """This process's high-water RSS (VmHWM: ru_maxrss would include the parent's, across exec)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1e3


class RssSampler(threading.Thread):
    """RSS when the records read cross 25/50/75/100 % of the input (polled every 20 ms)."""

    def __init__(self, progress: Callable[[], int], total: int) -> None:
        super().__init__(daemon=True)
        self.progress, self.total = progress, total
        self.samples: dict[int, float] = {}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.02):
            try:
                n = self.progress()
            except RuntimeError:  # the dict grew while summed; next round
                continue
            for q in QUARTERS:
                if q not in self.samples and n >= self.total * q / 100:
                    self.samples[q] = rss_mb()

    def at_end(self) -> None:
        """The input is done: the 100 % point if polling has not caught it."""
        self.samples.setdefault(100, rss_mb())

    def finish(self) -> dict[int, float]:
        self.done.set()
        self.join()
        for q in QUARTERS:
            self.samples.setdefault(q, rss_mb())
        return self.samples


def child(spec: dict) -> dict:
    stage, engine = spec["stage"], spec["engine"]
    topics = [spec["events_topic"], spec["dlq_topic"]]
    config = bench_config(spec["dlq_topic"])
    tally = Tally()
    peer_progress = [0]
    if engine == "bytewax":
        sampler = RssSampler(lambda: sum(list(prom.positions.values())), spec["total"])
    else:
        sampler = RssSampler(lambda: peer_progress[0], spec["total"])
    sampler.start()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t = time.perf_counter()
    if engine == "bytewax":
        sink = TallySink(tally, sampler.at_end)
        flow = FLOWS[stage](kafka_source(spec["bootstrap"], topics), sink, config)
        if spec.get("recovery"):
            from bytewax.recovery import RecoveryConfig, init_db_dir

            rec = Path(tempfile.mkdtemp(prefix="shoplake-bench-rec-"))
            init_db_dir(rec, 1)
            run_main(flow, epoch_interval=timedelta(seconds=5), recovery_config=RecoveryConfig(rec))
        else:
            run_main(flow)
    else:
        batches = consume(spec["bootstrap"], topics, peer_progress, sampler.at_end)
        PEERS[(stage, engine)](batches, config, tally)
    seconds = time.perf_counter() - t
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    rss = sampler.finish()
    cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
    return {"seconds": seconds, "cpu": cpu, "rss": rss, "peak_mb": peak_rss_mb(), **tally.summary()}


def bench_config(dlq_topic: str) -> StreamConfig:
    """As a replay runs (every shard awaited, no wall clock): results depend on the input only."""
    return replay_config(StreamConfig(dlq_topic=dlq_topic), EVENT_PARTITIONS, DLQ_PARTITIONS)


def measure_once(stage: str, engine: str, common: dict) -> dict:
    spec = common | {"stage": stage, "engine": engine}
    proc = subprocess.run(
        [sys.executable, "-m", "bench.stream.runs", json.dumps(spec)],
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    )
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["rate"] = common["total"] / result["seconds"]
    result["cpu_rate"] = common["total"] / result["cpu"]
    result["rss"] = {int(q): mb for q, mb in result["rss"].items()}
    return result


def measure(stage: str, engines: list[str], common: dict, repeat: int) -> list[dict]:
    """Each engine ``repeat`` times, interleaved (the CPUs are shared); the fastest run of each
    (wall clock), with the best CPU-time rate of its runs alongside."""
    runs: dict[str, list[dict]] = {e: [] for e in engines}
    for _ in range(repeat):
        for engine in engines:
            runs[engine].append(measure_once(stage, engine, common))
    best = []
    for engine in engines:
        fastest = max(runs[engine], key=lambda r: r["rate"])
        fastest["cpu_rate"] = max(r["cpu_rate"] for r in runs[engine])
        best.append(fastest)
    return best


if __name__ == "__main__":  # a child: one run, its result as the last line of output
    print(json.dumps(child(json.loads(sys.argv[1]))))
