import hashlib
import itertools
import json
import sqlite3
from collections import Counter
from datetime import date
from pathlib import Path

import pytest

from shoplake.core import clock
from shoplake.core.contracts import decode_event
from shoplake.core.ingest import Accepted, Ingestor
from shoplake.core.pii import Pseudonymizer
from shoplake.simulator import FaultRates, SimConfig, simulate
from shoplake.simulator.faults import EXPECTED_REASON
from shoplake.simulator.shopdb import TABLES, ShopDB
from shoplake.simulator.sinks import FilesSink, MemorySink, Sink

START = date(
    2026, 5, 4
)  # a Monday, before the test session's clock (events after "now" are held back)


def run(tmp_path: Path | None = None, **kw):
    sink = MemorySink()
    db = ShopDB(None, tmp_path / "shop.sqlite") if tmp_path else None
    report = simulate(
        SimConfig(**{"start": START, "days": 2, "users": 600, **kw}), sink, db, show_progress=False
    )
    return report, sink.records


def digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*.jsonl"))
    }


def test_same_seed_same_bytes_and_another_seed_differs(tmp_path: Path):
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        simulate(
            SimConfig(start=START, days=2, users=400, seed=seed),
            FilesSink(tmp_path / name),
            None,
            show_progress=False,
        )
    a, b, c = digest(tmp_path / "a"), digest(tmp_path / "b"), digest(tmp_path / "c")
    assert a and a == b
    assert a != c


def test_fault_labels_match_what_the_contract_says(tmp_path: Path):
    rates = FaultRates(
        malformed_json=0.01, oversize=0.01, missing_field=0.01, wrong_type=0.01, duplicate=0.02
    )
    report, records = run(faults=rates)
    ingestor = Ingestor(Pseudonymizer(b"k", "k"))
    now = clock.now()
    reasons = Counter()
    for rec in records:
        result = ingestor.accept(rec.payload, now, replay=True)
        assert isinstance(result, Accepted) == rec.valid, rec.fault
        if not rec.valid:
            assert result.reason == EXPECTED_REASON[rec.fault]
            reasons[result.reason] += 1
    assert reasons == report.expected_reasons
    assert report.expected_rejected == sum(reasons.values()) > 0
    # each injected kind shows up, in proportion to its rate (±50 % on a few thousand events)
    n = report.records
    for kind in ("malformed_json", "oversize", "missing_field", "wrong_type"):
        assert 0.5 * 0.01 * n < report.faults[kind] < 1.5 * 0.01 * n, (kind, report.faults[kind], n)
    assert report.faults["traffic_spike"] > 0 and report.faults["bot_burst"] > 0


def test_duplicates_late_future_and_bots_are_what_they_claim():
    _, records = run(faults=FaultRates(duplicate=0.02, late=0.02, future=0.01, bot_burst=0.01))
    ids = Counter(json.loads(r.payload)["event_id"] for r in records if r.valid)
    dups = [r for r in records if r.fault == "duplicate"]
    assert dups and all(ids[json.loads(r.payload)["event_id"]] == 2 for r in dups)
    checked = Counter()
    for r in records:
        if r.fault in ("late", "future"):
            ev = decode_event(r.payload)
            lag = (ev.received_at - ev.occurred_at).total_seconds()
            assert (lag >= 3600) if r.fault == "late" else (lag <= -7200)
            checked[r.fault] += 1
    assert checked["late"] > 10 and checked["future"] > 5  # the loop had something to check
    bots = [decode_event(r.payload) for r in records if r.fault == "bot_burst"]
    by_visitor = Counter(e.anonymous_id for e in bots)
    assert min(by_visitor.values()) >= 5
    first = [e for e in bots if e.anonymous_id == next(iter(by_visitor))]
    gaps = [(b.occurred_at - a.occurred_at).total_seconds() for a, b in itertools.pairwise(first)]
    assert max(gaps) < 0.1


def test_no_faults_means_every_event_is_valid():
    report, records = run(faults=FaultRates.none())
    assert report.faults == Counter() and all(r.valid for r in records)
    assert [r.received for r in records] == sorted(r.received for r in records)


def test_funnel_and_ads_look_like_a_shop():
    report, records = run(users=1500)
    t = report.by_type
    assert t["page_view"] > t["add_to_cart"] > t["begin_checkout"] > t["purchase"] > 0
    assert 0.005 < t["ad_click"] / t["ad_impression"] < 0.06
    order_ids = {json.loads(r.payload)["order_id"] for r in records if r.event_type == "purchase"}
    assert report.orders == len(order_ids)  # duplicates of a purchase event are one order


def test_orders_in_the_shop_db_match_purchase_events(tmp_path: Path):
    report, records = run(tmp_path, days=3, faults=FaultRates.none())
    purchases = {}
    for r in records:
        if r.event_type == "purchase":
            doc = json.loads(r.payload)
            purchases[doc["order_id"]] = doc
    con = sqlite3.connect(tmp_path / "shop.sqlite")
    orders = {
        row[0]: row
        for row in con.execute("select order_id, total, status, created_at, updated_at from orders")
    }
    assert set(orders) == set(purchases)
    for oid, doc in purchases.items():
        assert orders[oid][1] == pytest.approx(doc["total"])
        items = con.execute(
            "select sum(quantity * unit_price) from order_items where order_id = ?", (oid,)
        ).fetchone()[0]
        assert items == pytest.approx(doc["total"])
    statuses = Counter(o[2] for o in orders.values())
    assert statuses["paid"] + statuses["shipped"] > 0
    changed = [o for o in orders.values() if o[2] != "paid"]
    assert changed and all(
        o[4] > o[3] for o in changed
    )  # status changes move updated_at, not created_at
    assert report.db_rows["orders"] == len(orders)


def test_rerun_on_the_same_db_is_idempotent(tmp_path: Path):
    run(tmp_path)
    con = sqlite3.connect(tmp_path / "shop.sqlite")
    first = {t: con.execute(f"select * from {t} order by 1, 2").fetchall() for t in TABLES}
    run(tmp_path)
    second = {t: con.execute(f"select * from {t} order by 1, 2").fetchall() for t in TABLES}
    assert first == second


@pytest.mark.integration
def test_postgres_shop_db_matches_sqlite(tmp_path: Path, fresh_pg_db: str):
    sink = MemorySink()
    cfg = SimConfig(start=START, days=2, users=500)
    simulate(cfg, sink, ShopDB(None, tmp_path / "s.sqlite"), show_progress=False)
    pg = ShopDB(fresh_pg_db)
    simulate(cfg, MemorySink(), pg, show_progress=False)
    lite = sqlite3.connect(tmp_path / "s.sqlite")
    for table in TABLES:
        cur = pg.conn.cursor()
        cur.execute(f"select * from {table} order by 1, 2")
        pg_rows = [
            tuple(
                float(v) if hasattr(v, "as_integer_ratio") and not isinstance(v, int) else v
                for v in row
            )
            for row in cur.fetchall()
        ]
        lite_rows = [
            tuple(float(v) if isinstance(v, float) else v for v in row)
            for row in lite.execute(f"select * from {table} order by 1, 2")
        ]
        assert pg_rows == lite_rows, table


def test_live_mode_paces_by_the_wall_clock():
    import time

    from shoplake.simulator.faults import Record
    from shoplake.simulator.run import SimReport, _Emitter

    class Clocked(Sink):
        def __init__(self):
            super().__init__()
            self.at = []

        def write(self, records):
            self.at.extend(time.monotonic() for _ in records)

    sink = Clocked()
    records = [Record(1000.0 + 0.3 * i, b"{}", None, "page_view", True) for i in range(4)]
    t0 = time.monotonic()
    emitter = _Emitter(sink, SimConfig(live=True), SimReport())
    emitter.emit(records[:2])  # two slices' worth: the second keeps the first one's clock
    emitter.emit(records[2:])
    offsets = [round(t - t0, 1) for t in sink.at]
    assert offsets[0] < 0.15 and 0.8 <= offsets[-1] < 1.3
    assert all(b >= a for a, b in itertools.pairwise(offsets))


class InFlight(Sink):
    """Checks receive order across writes and tracks the most records that were generated (by
    fault injection) but not yet handed to the sink: what the simulator was holding."""

    def __init__(self) -> None:
        super().__init__()
        self.produced = self.written = self.most = 0
        self.last = float("-inf")
        self.in_order = True

    def write(self, records) -> None:
        self.most = max(self.most, self.produced - self.written)
        self.in_order &= all(r.received >= self.last for r in records)
        self.in_order &= all(a.received <= b.received for a, b in itertools.pairwise(records))
        self.last = records[-1].received
        self.written += len(records)


def in_flight(monkeypatch: pytest.MonkeyPatch, users: int) -> InFlight:
    import shoplake.simulator.run as run_module

    sink = InFlight()
    inject = run_module.inject

    def counted(*args):
        records = inject(*args)
        sink.produced += len(records)
        return records

    monkeypatch.setattr(run_module, "inject", counted)
    rates = FaultRates(late=0.01, duplicate=0.01, bot_burst=0.01)
    config = SimConfig(start=START, days=2, users=users, slice_sessions=100, faults=rates)
    report = simulate(config, sink, None, show_progress=False)
    assert sink.written == sink.produced == report.records
    return sink


def test_memory_is_bounded_by_the_slice_not_the_day(monkeypatch: pytest.MonkeyPatch):
    small, big = in_flight(monkeypatch, 4_000), in_flight(monkeypatch, 16_000)
    assert small.in_order and big.in_order  # across slices, days, late arrivals and duplicates
    assert big.written > 3.5 * small.written
    # Holding a day would put half of the two days in flight, growing x4 with the users. What is
    # held is one slice (~100 sessions), what is not due yet and the sink's next 2,000-record chunk.
    assert big.most < 2 * small.most, (small.most, big.most)
    assert big.most < 0.1 * big.written, (big.most, big.written)


def test_a_user_costs_tens_of_bytes_not_an_object():
    import random
    import tracemalloc

    from shoplake.simulator.world import Population

    tracemalloc.start()
    try:
        population = Population(random.Random(1), 20_000, 2)
        size = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert size / 20_000 < 80  # a User object with its strings was ~570 bytes
    first = population.users[123]
    assert first == population.users[123] and first.user_id == "u0000123"
    assert len(population.users) == 20_000 and population.users[-1].user_id == "u0019999"


def test_customers_are_not_queued_in_memory(tmp_path: Path):
    import random

    from shoplake.simulator.shopdb import OrderBook
    from shoplake.simulator.traffic import day_start
    from shoplake.simulator.world import Catalog, Population

    rng = random.Random(3)
    catalog, population = Catalog(rng, 50), Population(rng, 5_000, 2)
    db = ShopDB(None, tmp_path / "shop.sqlite")
    book = OrderBook(db, catalog, population, random.Random(4))
    first = day_start(START)
    book.load_accounts(first)
    users = population.users
    before = sum(1 for u in users if u.has_account and u.joined_day < 0)
    assert book.pending == 0 and db.count("customers") == before > 0
    book.flush_until(first + 60)  # day 0's sign-ups are due in its first minute
    assert db.count("customers") == before + sum(
        1 for u in users if u.has_account and u.joined_day == 0
    )
    book.flush_until(first + 86_400 + 60)
    assert db.count("customers") == sum(1 for u in users if u.has_account)
