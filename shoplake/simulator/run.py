"""Drives a simulation: days of traffic -> faults -> a sink, with the order database kept in step.

Traffic is generated in slices of at most about ``slice_sessions`` sessions, in time order, so
memory does not grow with the day.
"""

from __future__ import annotations

import bisect
import math
import operator
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from shoplake.core import clock
from shoplake.simulator.faults import EXPECTED_REASON, FaultRates, Record, inject
from shoplake.simulator.shopdb import TABLES, OrderBook, ShopDB
from shoplake.simulator.sinks import Sink
from shoplake.simulator.traffic import DayGenerator, DayPlan, day_start, days_from
from shoplake.simulator.world import Catalog, Population


@dataclass
class SimConfig:
    start: date = field(default_factory=lambda: clock.today() - timedelta(days=1))
    days: int = 1
    users: int = 2000
    products: int = 500
    seed: int = 42
    sessions_per_user: float = 0.35
    faults: FaultRates = field(default_factory=FaultRates)
    rate: float | None = None  # events per second cap; None = as fast as possible
    live: bool = False  # pace by the wall clock, starting now
    # Sessions generated at once, which bounds memory. Part of what a seed produces: the slices
    # each have their own random stream.
    slice_sessions: int = 1_000


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


def world(config: SimConfig) -> tuple[Catalog, Population]:
    """The catalog and the people a simulation with ``config`` uses (the same seed, the same
    world): tests look up who was simulated here instead of repeating the recipe."""
    world_rng = random.Random(f"{config.seed}:world")
    catalog = Catalog(world_rng, config.products)
    return catalog, Population(world_rng, config.users, config.days)


def simulate(
    config: SimConfig, sink: Sink, db: ShopDB | None = None, show_progress: bool = True
) -> SimReport:
    """Generate the days slice by slice and send each record once every slice that could still
    produce an earlier one is done: memory holds one slice and what is not yet due (the tails of
    open sessions, duplicates, late arrivals), not a day."""
    t_start = time.perf_counter()
    report = SimReport()
    catalog, population = world(config)
    generator = DayGenerator(catalog, population, config.sessions_per_user)
    book = (
        OrderBook(db, catalog, population, random.Random(f"{config.seed}:orders")) if db else None
    )
    rates = config.faults
    days = days_from(config.start, config.days)
    if book is not None:
        book.load_catalog(day_start(days[0]) - 30 * 86_400)
        book.load_accounts(day_start(days[0]))

    out = _Emitter(sink, config, report)
    pending: list[Record] = []  # generated, in receive order, not due yet
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("sessions, {task.fields[events]:,} events"),
        TimeRemainingColumn(),
        disable=not show_progress,
    )
    with progress:
        for i, d in enumerate(days):
            plan = DayPlan(i, d)
            slices = generator.plan(
                random.Random(f"{config.seed}:day:{d.isoformat()}"),
                plan,
                config.slice_sessions,
                spike_factor=rates.traffic_spike,
                revenue_drop_factor=rates.revenue_drop,
            )
            if book is not None:
                book.daily_changes(day_start(d))
            end = day_start(d) + 86_400
            last_day = i == len(days) - 1
            task = progress.add_task(
                f"simulating {d.isoformat()}", total=sum(s.sessions for s in slices), events=0
            )
            sent_before = report.records
            for k, part in enumerate(slices):
                rng = random.Random(f"{config.seed}:day:{d.isoformat()}:slice:{k}")
                events = generator.generate(
                    rng,
                    plan,
                    part,
                    revenue_drop_factor=rates.revenue_drop,
                    bot_burst_rate=rates.bot_burst,
                )
                records = inject(rng, events, rates)
                del events
                # Later slices start at or after `until` and no record arrives before its session
                # starts, so everything received before `until` is final and can go now.
                if k + 1 < len(slices):
                    until = slices[k + 1].start
                else:
                    until = math.inf if last_day else end
                due, pending = _split(pending, records, until)
                out.emit(due)
                del due, records
                report.orders += len(plan.orders)
                if book is not None:
                    for order in plan.orders:
                        book.place(order)
                    book.flush_until(min(until, end))
                plan.orders.clear()
                progress.update(task, advance=part.sessions, events=report.records - sent_before)
            report.suppressed_purchases += plan.suppressed_purchases
            if plan.spike:
                report.spikes.append(tuple(_iso_pair(plan.spike)))  # type: ignore[arg-type]
            if plan.revenue_drop:
                report.revenue_drops.append(tuple(_iso_pair(plan.revenue_drop)))  # type: ignore[arg-type]
    out.close()
    if book is not None and out.last_received is not None:
        # Sessions of the last day can run past its end: their orders exist as their purchase
        # events were sent, so the database holds every order placed until the last one sent.
        book.flush_until(out.last_received)
    sink.close()
    if db is not None:
        report.db_rows = {t: db.count(t) for t in TABLES}
    report.sink = sink.results
    report.seconds = time.perf_counter() - t_start
    return report


_received = operator.attrgetter("received")


def _split(
    pending: list[Record], records: list[Record], until: float
) -> tuple[list[Record], list[Record]]:
    """(records due before ``until``, the rest), both in receive order; inputs are sorted."""
    p = bisect.bisect_left(pending, until, key=_received)
    r = bisect.bisect_left(records, until, key=_received)
    due = pending[:p] + records[:r]
    due.sort(key=_received)  # two sorted runs: one linear merge
    later = pending[p:] + records[r:]
    later.sort(key=_received)
    return due, later


class _Emitter:
    """Sends records, given in receive order, to the sink: in chunks as fast as allowed (capped at
    ``config.rate`` per second), or in live mode when the wall clock reaches their receive time
    shifted to start now. Counts what it sends."""

    def __init__(self, sink: Sink, config: SimConfig, report: SimReport):
        self.sink = sink
        self.config = config
        self.report = report
        self.chunk = 2_000 if config.rate is None else max(1, int(config.rate / 4))
        self.buffer: list[Record] = []
        self.wall = clock.now_s()
        self.sent = 0
        self.last_received: float | None = None  # the receive time of the last record sent
        self.t0: float | None = None  # when the first chunk went (rate)
        self.offset: float | None = None  # live: wall clock minus simulated receive time

    def emit(self, records: list[Record]) -> None:
        if not self.config.live:
            # Events that would arrive after the wall clock have not arrived yet: hold them back.
            n = bisect.bisect_right(records, self.wall, key=_received)
            self.report.not_yet_arrived += len(records) - n
            records = records[:n]
        for rec in records:
            self.report.count(rec)
        if self.config.live:
            self._live(records)
            return
        self.buffer.extend(records)
        full = len(self.buffer) - len(self.buffer) % self.chunk
        for k in range(0, full, self.chunk):
            self._send(self.buffer[k : k + self.chunk])
        del self.buffer[:full]

    def close(self) -> None:
        if self.buffer:
            self._send(self.buffer)
            self.buffer = []

    def _send(self, part: list[Record]) -> None:
        if self.t0 is None:
            self.t0 = time.perf_counter()
        self.sink.write(part)
        self.last_received = part[-1].received if part else self.last_received
        self.sent += len(part)
        if self.config.rate:
            ahead = self.sent / self.config.rate - (time.perf_counter() - self.t0)
            if ahead > 0:
                time.sleep(ahead)

    def _live(self, records: list[Record]) -> None:
        i = 0
        while i < len(records):
            if self.offset is None:
                self.offset = clock.now_s() - records[0].received
            now = clock.now_s() - self.offset
            j = bisect.bisect_right(records, now, lo=i, key=_received)
            if j > i:
                self.sink.write(records[i:j])
                self.last_received = records[j - 1].received
                i = j
            else:
                time.sleep(min(0.25, max(0.0, records[i].received - now)))


def _iso_pair(window: tuple[float, float]) -> list[str]:
    return [datetime.fromtimestamp(t, UTC).isoformat() for t in window]
