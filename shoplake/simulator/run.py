"""Drives a simulation: days of traffic -> faults -> a sink, with the order database kept in step."""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from shoplake.simulator.faults import EXPECTED_REASON, FaultRates, Record, inject
from shoplake.simulator.shopdb import TABLES, OrderBook, ShopDB
from shoplake.simulator.sinks import Sink
from shoplake.simulator.traffic import DayGenerator, DayPlan, day_start, days_from
from shoplake.simulator.world import Catalog, Population


@dataclass
class SimConfig:
    start: date = field(default_factory=lambda: datetime.now(UTC).date() - timedelta(days=1))
    days: int = 1
    users: int = 2000
    products: int = 500
    seed: int = 42
    sessions_per_user: float = 0.35
    faults: FaultRates = field(default_factory=FaultRates)
    rate: float | None = None  # events per second cap; None = as fast as possible
    live: bool = False  # pace by the wall clock, starting now


@dataclass
class SimReport:
    records: int = 0
    by_type: Counter = field(default_factory=Counter)
    faults: Counter = field(default_factory=Counter)
    expected_accepted: int = 0
    expected_rejected: int = 0
    expected_reasons: Counter = field(default_factory=Counter)
    orders: int = 0
    suppressed_purchases: int = 0
    spikes: list[tuple[str, str]] = field(default_factory=list)
    revenue_drops: list[tuple[str, str]] = field(default_factory=list)
    not_yet_arrived: int = 0
    db_rows: dict[str, int] = field(default_factory=dict)
    sink: Counter = field(default_factory=Counter)
    seconds: float = 0.0

    def count(self, rec: Record) -> None:
        self.records += 1
        if rec.event_type:
            self.by_type[rec.event_type] += 1
        if rec.fault:
            self.faults[rec.fault] += 1
        if rec.valid:
            self.expected_accepted += 1
        else:
            self.expected_rejected += 1
            self.expected_reasons[EXPECTED_REASON[rec.fault or ""]] += 1


def simulate(
    config: SimConfig, sink: Sink, db: ShopDB | None = None, show_progress: bool = True
) -> SimReport:
    t_start = time.perf_counter()
    report = SimReport()
    world_rng = random.Random(f"{config.seed}:world")
    catalog = Catalog(world_rng, config.products)
    population = Population(world_rng, config.users, config.days)
    generator = DayGenerator(catalog, population, config.sessions_per_user)
    book = (
        OrderBook(db, catalog, population, random.Random(f"{config.seed}:orders")) if db else None
    )
    rates = config.faults
    days = days_from(config.start, config.days)
    if book is not None:
        book.load_catalog(day_start(days[0]) - 30 * 86_400)
        book.load_accounts(day_start(days[0]))

    carry: list[Record] = []
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("events"),
        TimeRemainingColumn(), disable=not show_progress,
    )  # fmt: skip
    with progress:
        for i, d in enumerate(days):
            rng = random.Random(f"{config.seed}:day:{d.isoformat()}")
            plan = DayPlan(i, d)
            if book is not None:
                book.daily_changes(day_start(d))
            events = generator.generate(
                rng, plan, spike_factor=rates.traffic_spike, revenue_drop_factor=rates.revenue_drop,
                bot_burst_rate=rates.bot_burst,
            )  # fmt: skip
            records = inject(rng, events, rates)
            end = day_start(d) + 86_400
            if carry:
                records = sorted(carry + records, key=lambda r: r.received)
            last_day = i == len(days) - 1
            now_records = records if last_day else [r for r in records if r.received < end]
            carry = [] if last_day else [r for r in records if r.received >= end]
            if not config.live:
                # Events that would arrive after the wall clock have not arrived yet: hold them back.
                wall = time.time()
                report.not_yet_arrived += sum(1 for r in now_records if r.received > wall)
                now_records = [r for r in now_records if r.received <= wall]

            task = progress.add_task(f"simulating {d.isoformat()}", total=len(now_records))
            _emit(now_records, sink, config, lambda n, task=task: progress.advance(task, n))
            for rec in now_records:
                report.count(rec)
            report.orders += len(plan.orders)
            report.suppressed_purchases += plan.suppressed_purchases
            if plan.spike:
                report.spikes.append(tuple(_iso_pair(plan.spike)))  # type: ignore[arg-type]
            if plan.revenue_drop:
                report.revenue_drops.append(tuple(_iso_pair(plan.revenue_drop)))  # type: ignore[arg-type]
            if book is not None:
                for order in plan.orders:
                    book.place(order)
                book.flush_until(end)
    sink.close()
    if db is not None:
        report.db_rows = {t: db.count(t) for t in TABLES}
    report.sink = sink.results
    report.seconds = time.perf_counter() - t_start
    return report


def _emit(records: list[Record], sink: Sink, config: SimConfig, advance) -> None:
    if config.live:
        # Real-time: send each record when the wall clock reaches its (shifted) receive time.
        offset = time.time() - records[0].received if records else 0.0
        i = 0
        while i < len(records):
            now = time.time() - offset
            j = i
            while j < len(records) and records[j].received <= now:
                j += 1
            if j > i:
                sink.write(records[i:j])
                advance(j - i)
                i = j
            else:
                time.sleep(min(0.25, max(0.0, records[i].received - now)))
        return
    chunk = 2_000 if config.rate is None else max(1, int(config.rate / 4))
    t0 = time.perf_counter()
    sent = 0
    for k in range(0, len(records), chunk):
        part = records[k : k + chunk]
        sink.write(part)
        sent += len(part)
        advance(len(part))
        if config.rate:
            ahead = sent / config.rate - (time.perf_counter() - t0)
            if ahead > 0:
                time.sleep(ahead)


def _iso_pair(window: tuple[float, float]) -> list[str]:
    return [datetime.fromtimestamp(t, UTC).isoformat() for t in window]
