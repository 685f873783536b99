"""Latency of the production process (``python -m bytewax.run streaming.run:flow``): its sustained
rate replaying the day, then live traffic as the collector writes it, and the first sight of each
output on the Kafka topics and in the Parquet tables."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import urllib.request
import uuid
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pyarrow.parquet as pq
from confluent_kafka import Consumer, Producer, TopicPartition

from bench.stream.day import create_topics
from bench.support import cpu_seconds
from shoplake.core import clock
from shoplake.core.ingest import Accepted, Ingestor
from shoplake.core.kafka_io import producer_config
from shoplake.core.pii import Pseudonymizer
from shoplake.core.platform.process import free_port
from shoplake.simulator import FaultRates, SimConfig, simulate
from shoplake.simulator.sinks import MemorySink
from streaming.launch import Launch, command, ensure_recovery, environment, stop
from streaming.testing import event


def start_stream(
    home: Path,
    bootstrap: str,
    topics: tuple[str, str],
    log: Path,
    eof: bool,
    metrics_port: int,
    extra: dict[str, str],
    recovery: bool = True,
) -> subprocess.Popen:
    """`shoplake stream` as it runs in production (1 worker, recovery every 5 s), its output to a log."""
    launch = Launch(
        workers=1,
        recovery_dir=home / "recovery" if recovery else None,
        snapshot_seconds=5,
        eof=eof,
        metrics_port=metrics_port,
    )
    if launch.recovery_dir is not None:
        ensure_recovery(launch.recovery_dir, 4)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHOPLAKE_", "BYTEWAX_"))}
    env.update(
        SHOPLAKE_HOME=str(home),
        SHOPLAKE_KAFKA_BOOTSTRAP=bootstrap,
        SHOPLAKE_STREAM_TOPICS=",".join(topics),
        SHOPLAKE_STREAM_DLQ_TOPIC=topics[1],
        SHOPLAKE_STREAM_SINKS="parquet,kafka",
        **extra,
    )
    out = open(log, "ab")  # noqa: SIM115 (the child keeps it)
    return subprocess.Popen(
        command(launch), env=environment(launch, 0, env), stdout=out, stderr=subprocess.STDOUT
    )


def records_in(port: int) -> float | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("shoplake_stream_records_in_total{")
    )


def sustained_rate(
    tmp: Path, bootstrap: str, topics: tuple[str, str], total: int, cap: float
) -> tuple[float, str]:
    """Records/s of the production process replaying the day to EOF (all rows emitted), from its
    first record to its exit; if it needs more than ``cap`` seconds, its rate after a warm-up."""
    port = free_port()
    proc = start_stream(tmp / "sustain", bootstrap, topics, tmp / "sustain.log", True, port, {})
    try:
        deadline = time.monotonic() + 120
        while not records_in(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the stream did not start; see {tmp / 'sustain.log'}")
            time.sleep(0.05)
        samples = [(time.monotonic(), records_in(port) or 0.0)]
        while proc.poll() is None and time.monotonic() - samples[0][0] < cap:
            time.sleep(0.2)
            n = records_in(port)
            if n is not None:
                samples.append((time.monotonic(), n))
        if proc.poll() == 0:
            elapsed = time.monotonic() - samples[0][0]
            return total / elapsed, f"the whole replay to EOF ({elapsed:.0f} s)"
    finally:
        stop([proc])
    steady = [x for x in samples if x[0] >= samples[0][0] + 10]
    if proc.returncode not in (0, None) and len(steady) < 2:
        raise RuntimeError(f"the stream failed; see {tmp / 'sustain.log'}")
    (t0, n0), (t1, n1) = steady[0], steady[-1]
    return (n1 - n0) / (t1 - t0), f"{t1 - t0:.0f} s after a 10 s warm-up (capped, not at EOF)"


class Watcher:
    """First sight of each output, on the Kafka topics (a consumer thread) and in the Parquet
    tables (a thread listing new part files every 50 ms); and the input topic's own latency."""

    def __init__(self, bootstrap: str, events_topic: str, lake: Path) -> None:
        self.lake = lake
        self.events_topic = events_topic
        self.floor = array("d")  # consume time - record timestamp, ms
        self.windows_kafka: dict[int, float] = {}  # 10 s window start ms -> first seen ms
        self.windows_parquet: dict[int, float] = {}
        self.alerts_kafka: dict[str, float] = {}  # triggering event id -> first seen ms
        self.alerts_parquet: dict[str, float] = {}
        self.stop = threading.Event()
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": "bench-watch",
                "enable.auto.commit": "false",
            }
        )
        parts = []
        for topic in (events_topic, "shop.metrics.10s", "shop.alerts"):
            md = self.consumer.list_topics(topic, timeout=10).topics[topic]
            for p in md.partitions:
                _, high = self.consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                parts.append(TopicPartition(topic, p, high))
        self.consumer.assign(parts)
        self.threads = [
            threading.Thread(target=f, daemon=True) for f in (self._kafka, self._parquet)
        ]
        for t in self.threads:
            t.start()

    def _kafka(self) -> None:
        while not self.stop.is_set():
            batch = self.consumer.consume(1000, 0.005)  # returns within 5 ms of a message
            now = time.time() * 1000
            for m in batch:
                if m.error() is not None:
                    continue
                topic = m.topic()
                if topic == self.events_topic:
                    self.floor.append(now - m.timestamp()[1])
                elif topic == "shop.metrics.10s":
                    _, start, dim, value = m.key().decode().split("|")
                    if (dim, value) == ("all", "all"):
                        self.windows_kafka.setdefault(_iso_ms(start), now)
                else:
                    alert = json.loads(m.value())
                    if alert["rule"] == "bot_click_cadence":
                        eid = json.loads(alert["evidence"])["event_id"]
                        self.alerts_kafka.setdefault(eid, now)
        self.consumer.close()

    def _parquet(self) -> None:
        known: set[str] = set()
        while not self.stop.wait(0.05):
            for table in ("window_metrics", "alerts"):
                for f in (self.lake / "speed" / table).glob("date=*/part-*.parquet"):
                    if f.name in known:
                        continue
                    now = time.time() * 1000
                    known.add(f.name)
                    try:
                        rows = pq.read_table(f).to_pylist()
                    except OSError:  # compacted away meanwhile: its rows are in the new file
                        continue
                    for r in rows:
                        if table == "alerts" and r["rule"] == "bot_click_cadence":
                            eid = json.loads(r["evidence"])["event_id"]
                            self.alerts_parquet.setdefault(eid, now)
                        elif (
                            table == "window_metrics"
                            and r["window_size"] == "10s"
                            and r["dimension"] == "all"
                        ):
                            start = int(r["window_start"].timestamp() * 1000)
                            self.windows_parquet.setdefault(start, now)

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join()


def _iso_ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


# The collector's output is prepared ahead with this receive time and stamped when sent, so the
# load generator only stamps and produces (in production the collector runs elsewhere).
STAMP = datetime(2001, 2, 3, 4, 5, 6, 789_000, tzinfo=UTC)
STAMP_JSON = msgspec.json.encode(STAMP)[1:-1]
SENT = STAMP - timedelta(days=1)  # bot events: occurred_at = sent_at, so event time = receive time


@dataclass(slots=True)
class Prepared:
    """One record as the collector writes it, received at STAMP."""

    dlq: bool
    key: bytes | None
    value: bytes
    event_id: bytes | None  # to make a repeat of the pool a new event


def prepare(payloads: list[bytes], ingestor) -> list[Prepared]:
    out = []
    for raw in payloads:
        res = ingestor.accept(raw, STAMP)
        if isinstance(res, Accepted):
            out.append(Prepared(False, res.key, res.value, res.event_id.encode()))
        else:
            key = res.event_id.encode() if res.event_id else None
            out.append(Prepared(True, key, ingestor.dlq_value(res, STAMP, "collector"), key))
    return out


@dataclass
class Generated:
    t0: float = 0.0
    t_end: float = 0.0
    accepted_ms: array = field(default_factory=lambda: array("q"))  # events, by receive time
    triggers: dict[str, int] = field(default_factory=dict)  # bot burst's 5th event id -> ms
    sent: int = 0
    rejected: int = 0


def generate(
    bootstrap: str,
    topics: tuple[str, str],
    pool: list[Prepared],
    bots: list[list[Prepared]],
    rate: float,
    seconds: float,
    bursts_per_second: float,
    warmup: float,
    on_warm: Callable[[], None],
) -> Generated:
    """``rate`` records/s as the collector writes them (its producer settings, the record timestamp
    and received_at = now), cycling through ``pool`` with fresh event ids; plus bot bursts of 5
    events 50 ms apart, each from a new visitor. ``on_warm`` runs once the warm-up is over."""
    producer = Producer(producer_config(bootstrap))
    gen = Generated(t0=time.time())
    i, started, bursts, warm = 0, 0, [], False

    def send(p: Prepared, stamp: bytes, ts: int, fresh: bool) -> None:
        value = p.value.replace(STAMP_JSON, stamp, 1)
        if fresh and p.event_id is not None:
            value = value.replace(p.event_id, str(uuid.uuid4()).encode(), 1)
        while True:
            try:
                producer.produce(topics[p.dlq], value, p.key, timestamp=ts)
                return
            except BufferError:
                producer.poll(0.01)

    while (now := time.time()) < gen.t0 + seconds:
        if not warm and now >= gen.t0 + warmup:
            warm = True
            on_warm()
        stamp, ts = msgspec.json.encode(datetime.fromtimestamp(now, UTC))[1:-1], int(now * 1000)
        while i < int((now - gen.t0) * rate):
            p = pool[i % len(pool)]
            send(p, stamp, ts, i >= len(pool))
            i += 1
            if p.dlq:
                gen.rejected += 1
            else:
                gen.accepted_ms.append(ts)
        while started < min(len(bots), (now - gen.t0) * bursts_per_second):
            bursts.append([gen.t0 + started / bursts_per_second, bots[started], 0])
            started += 1
        for b in bursts:
            if b[0] + 0.05 * b[2] <= now:
                send(b[1][b[2]], stamp, ts, False)
                b[2] += 1
                if b[2] == 5:
                    gen.triggers[json.loads(b[1][4].value)["event_id"]] = ts
        bursts = [b for b in bursts if b[2] < 5]
        producer.poll(0)
        time.sleep(0.002)
    gen.t_end = time.time()
    gen.sent = i + 5 * started
    producer.flush(30)
    return gen


def pct(values, q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * (len(s) - 1) + 0.5))] if s else float("nan")


def latency(
    args, tmp: Path, bootstrap: str, day_topics: tuple[str, str], total: int, broker_pid: int | None
) -> None:
    print("\n4. latency, collector acceptance -> visible, at 50 % of the sustained rate")
    sustained, how = sustained_rate(tmp, bootstrap, day_topics, total, args.sustain_seconds)
    rate = args.latency_rate or sustained * 0.5
    print(
        f"   sustained rate of the production process (1 worker, Parquet + Kafka sinks, recovery "
        f"every 5 s) replaying the day: {sustained:,.0f} records/s over {how}"
    )
    print(
        f"   offered: {rate:,.0f} records/s + {args.bursts:g} bot bursts/s (5 events 50 ms apart), "
        f"measured for {args.latency_seconds:.0f} s after {args.latency_warmup:.0f} s of warm-up; "
        f"allowed lateness {args.latency_lateness:g} s"
        f"{', NO recovery' if args.latency_no_recovery else ''}"
    )

    mem = MemorySink()  # a pool of raw payloads, sent in a cycle with fresh event ids
    simulate(
        SimConfig(
            start=clock.today() - timedelta(days=1),
            users=args.latency_pool // 3,
            seed=7,
            faults=FaultRates(),
        ),
        mem,
        None,
        show_progress=False,
    )
    ingestor = Ingestor(Pseudonymizer(b"bench-key", "k1"))
    pool = prepare(mem.payloads[: args.latency_pool], ingestor)
    del mem
    seconds = args.latency_warmup + args.latency_seconds
    bots = [
        prepare(
            [
                msgspec.json.encode(event("page_view", f"bench-bot-{n}", SENT, SENT))
                for _ in range(5)
            ],
            ingestor,
        )
        for n in range(int(seconds * args.bursts) + 1)
    ]

    tag = uuid.uuid4().hex[:6]
    topics = (f"bench.latency-{tag}.events", f"bench.latency-{tag}.dlq")
    create_topics(bootstrap, *topics)
    home = tmp / "latency"
    port = free_port()
    extra = {"SHOPLAKE_STREAM_LATENESS_SECONDS": str(args.latency_lateness)}
    proc = start_stream(
        home,
        bootstrap,
        topics,
        tmp / "latency.log",
        False,
        port,
        extra,
        recovery=not args.latency_no_recovery,
    )
    watcher = None
    try:
        deadline = time.monotonic() + 120
        while records_in(port) is None:  # served once the flow is built, just before it runs
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the stream did not start; see {tmp / 'latency.log'}")
            time.sleep(0.2)
        time.sleep(2)
        watcher = Watcher(bootstrap, topics[0], home / "lake")
        pids = {"stream": proc.pid, "load generator + watchers": os.getpid()}
        if broker_pid is not None:
            pids["Kafka broker"] = broker_pid
        warm: dict = {}

        def on_warm() -> None:
            warm.update(
                t=time.monotonic(),
                read=records_in(port) or 0,
                cpu={name: cpu_seconds(pid) for name, pid in pids.items()},
            )

        gen = generate(
            bootstrap, topics, pool, bots, rate, seconds, args.bursts, args.latency_warmup, on_warm
        )
        read_at_end = records_in(port) or 0
        elapsed = time.monotonic() - warm["t"]
        cores = {
            name: (cpu_seconds(pid) - warm["cpu"][name]) / elapsed for name, pid in pids.items()
        }
        time.sleep(args.drain)
    finally:
        if watcher is not None:
            watcher.close()
        stop([proc])

    t_from = (gen.t0 + args.latency_warmup) * 1000
    t_to = (gen.t_end - 1) * 1000  # the last windows close only with later traffic
    behind = gen.sent - read_at_end
    print(
        f"   the stream read {(read_at_end - warm['read']) / elapsed:,.0f} records/s while measured; "
        f"when the traffic stopped it was {behind:,.0f} records (~{behind / rate:.1f} s) behind "
        f"({gen.rejected:,} collector rejects went to the DLQ topic)"
    )
    print(
        "   CPU while measured (cores of 2, another engineer shares them): "
        + ", ".join(f"{k} {v:.2f}" for k, v in cores.items())
        + f"; load average {os.getloadavg()[0]:.1f}"
    )
    floor = list(watcher.floor)
    print(
        f"   Kafka produce -> consume (the floor):         p50 {pct(floor, 0.5):7.0f} ms   p99 {pct(floor, 0.99):7.0f} ms   n={len(floor):,}"
    )

    def report(label: str, seen: dict, sent: dict[object, float]) -> list[float]:
        lat = [seen[k] - t for k, t in sent.items() if k in seen]
        missing = len(sent) - len(lat)
        tail = f"   ({missing} never seen)" if missing else ""
        print(
            f"   {label:<46}p50 {pct(lat, 0.5):7.0f} ms   p99 {pct(lat, 0.99):7.0f} ms   max {max(lat, default=float('nan')):7.0f} ms   n={len(lat):,}{tail}"
        )
        return lat

    triggers = {k: t for k, t in gen.triggers.items() if t_from <= t <= t_to}
    print(
        "   per-event path: bot_click_cadence alert (detect_visitor_anomalies), from the 5th event:"
    )
    alerts_k = report("  -> row in shop.alerts (Kafka)", watcher.alerts_kafka, triggers)
    report("  -> row in speed/alerts (Parquet)", watcher.alerts_parquet, triggers)
    ends = {
        s: s + 10_000.0
        for s in range(int(t_from // 10_000 + 1) * 10_000, int(t_to), 10_000)
        if s + 10_000 <= t_to
    }
    print("   10 s window metrics ('all' row), from the window's end:")
    wins_k = report("  -> shop.metrics.10s (Kafka)", watcher.windows_kafka, ends)
    report("  -> speed/window_metrics (Parquet)", watcher.windows_parquet, ends)
    per_event = [
        watcher.windows_kafka[a - a % 10_000] - a
        for a in gen.accepted_ms
        if a - a % 10_000 in ends and a - a % 10_000 in watcher.windows_kafka
    ]
    print(
        f"   per event, incl. waiting for its 10 s window to end (Kafka): p50 {pct(per_event, 0.5):.0f} ms   p99 {pct(per_event, 0.99):.0f} ms"
    )
    ok = "met" if alerts_k and pct(alerts_k, 0.99) <= 1000 else "NOT met"
    ok_w = "met" if wins_k and pct(wins_k, 0.99) <= 1000 else "NOT met"
    print(
        f"   target p99 <= 1 s: per-event path (alert -> Kafka) {ok}; 10 s windows from their end {ok_w}"
    )
