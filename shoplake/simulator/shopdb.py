"""The shop's operational order database, written by the simulator as purchases happen.

Postgres when ``SHOPLAKE_PG_DSN`` is set, else a SQLite file under ``SHOPLAKE_HOME``. Rows carry
``created_at``/``updated_at``; later status changes (paid -> shipped -> delivered, refunds,
cancellations) update rows at the time they happen, so an extractor keyed on ``updated_at`` sees
an old order again on the day it changed.
"""

from __future__ import annotations

import heapq
import math
import random
import sqlite3
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shoplake.core.contracts.shopdb import INTEGER, KEYS, NUMERIC, TABLES
from shoplake.core.settings import Settings
from shoplake.simulator.traffic import Order, iso
from shoplake.simulator.world import Catalog, Population, User


def ddl(table: str) -> str:
    cols = []
    for c in TABLES[table]:
        typ = "NUMERIC(12,2)" if c in NUMERIC else "INTEGER" if c in INTEGER else "TEXT"
        cols.append(f"{c} {typ}{' NOT NULL' if c in KEYS[table] or c.endswith('_at') else ''}")
    cols.append(f"PRIMARY KEY ({', '.join(KEYS[table])})")
    return f"CREATE TABLE IF NOT EXISTS {table} ({', '.join(cols)})"


def upsert_sql(table: str, placeholder: str) -> str:
    cols = TABLES[table]
    keys = KEYS[table]
    updates = ", ".join(f"{c} = excluded.{c}" for c in cols if c not in keys and c != "created_at")
    return (
        f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join([placeholder] * len(cols))}) "
        f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {updates}"
    )


class ShopDB:
    """A thin DB-API wrapper over SQLite or Postgres (psycopg 3) with the same SQL."""

    @classmethod
    def from_settings(cls, settings: Settings) -> ShopDB:
        """Postgres when SHOPLAKE_PG_DSN is set, else the SQLite file under SHOPLAKE_HOME."""
        return cls(settings.pg_dsn, settings.shopdb_sqlite_path)

    def __init__(self, dsn: str | None, sqlite_path: Path | None = None):
        if dsn:
            import psycopg

            self.conn: Any = psycopg.connect(dsn)
            self.placeholder = "%s"
            self.kind = "postgres"
        else:
            assert sqlite_path is not None
            sqlite_path.parent.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(sqlite_path)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.placeholder = "?"
            self.kind = "sqlite"
        cur = self.conn.cursor()
        for table in TABLES:
            cur.execute(ddl(table))
            cur.execute(f"CREATE INDEX IF NOT EXISTS {table}_updated_at ON {table} (updated_at)")
        self.conn.commit()  # (psycopg's `with conn:` would close the connection)

    def upsert(self, table: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self.conn.cursor().executemany(upsert_sql(table, self.placeholder), rows)

    def commit(self) -> None:
        self.conn.commit()

    def count(self, table: str) -> int:
        cur = self.conn.cursor()
        cur.execute(f"SELECT count(*) FROM {table}")
        return int(cur.fetchone()[0])

    def close(self) -> None:
        self.conn.close()


@dataclass(order=True, slots=True)
class _Change:
    at: float
    seq: int
    table: str = field(compare=False)
    row: tuple = field(compare=False)


class OrderBook:
    """Turns purchases into rows and schedules their later changes; flushes what is due by a time.

    Per user it keeps one number (when the customer row was created), not rows: customers who
    signed up before the first day are written at once, the others are queued when due."""

    def __init__(self, db: ShopDB, catalog: Catalog, population: Population, rng: random.Random):
        self.db = db
        self.rng = rng
        self.catalog = catalog
        self.population = population
        self._queue: list[_Change] = []
        self._seq = 0
        # Customer row created at (epoch seconds) by user index; NaN: no customer row.
        self._created = array("d", [math.nan]) * len(population)
        self._joiners = array("q")  # user indexes whose sign-up is still due, by time
        self._next_joiner = 0
        self._products_loaded = False

    def _schedule(self, at: float, table: str, row: tuple) -> None:
        self._seq += 1
        heapq.heappush(self._queue, _Change(at, self._seq, table, row))

    @staticmethod
    def _customer_row(u: User, at: float) -> tuple:
        ts = iso(at)
        return (u.user_id, u.email, u.phone, u.country, u.segment, ts, ts)

    def load_accounts(self, first_day_start: float) -> None:
        """Every user with an account is a customer row from sign-up (before the first visit)."""
        rng, pop, created = self.rng, self.population, self._created
        rows: list[tuple] = []
        joiners = list(self._joiners[self._next_joiner :])
        for i in range(len(pop)):
            if not pop.has_account(i) or not math.isnan(created[i]):
                continue
            joined = pop.joined_day(i)
            if joined < 0:
                created[i] = at = first_day_start - rng.uniform(1, 365) * 86_400
                rows.append(self._customer_row(pop.user(i), at))
                if len(rows) >= 10_000:
                    self.db.upsert("customers", rows)
                    rows = []
            else:
                created[i] = first_day_start + joined * 86_400 + rng.uniform(0, 60)
                joiners.append(i)
        # Before every simulated change, so written now rather than queued.
        self.db.upsert("customers", rows)
        self.db.commit()
        joiners.sort(key=created.__getitem__)
        self._joiners = array("q", joiners)
        self._next_joiner = 0

    def load_catalog(self, at: float) -> None:
        if self._products_loaded:
            return
        ts = iso(at)
        self.db.upsert(
            "products",
            [
                (
                    p.product_id,
                    p.name,
                    p.category_id,
                    p.category_code,
                    p.brand,
                    p.price,
                    "USD",
                    ts,
                    ts,
                )
                for p in self.catalog.products
            ],
        )
        self._products_loaded = True

    def daily_changes(self, day_start_ts: float) -> None:
        """Price changes for ~1% of products and segment moves for ~0.5% of customers."""
        rng = self.rng
        for p in self.catalog.products:
            if rng.random() < 0.01:
                at = day_start_ts + rng.random() * 86_400
                price = round(p.price * rng.uniform(0.8, 1.15), 2)
                self._schedule(
                    at,
                    "products",
                    (
                        p.product_id,
                        p.name,
                        p.category_id,
                        p.category_code,
                        p.brand,
                        price,
                        "USD",
                        None,
                        iso(at),
                    ),
                )
        created = self._created
        # By user index, which is user_id order (seven digits).
        for i in range(len(created)):
            if created[i] < day_start_ts and rng.random() < 0.005:  # NaN: not a customer
                at = day_start_ts + rng.random() * 86_400
                user = self.population.user(i)
                seg = rng.choice(("casual", "bargain_hunter", "loyal", "big_spender"))
                self._schedule(
                    at,
                    "customers",
                    (user.user_id, user.email, user.phone, user.country, seg, None, iso(at)),
                )

    def place(self, order: Order) -> None:
        rng, t, u = self.rng, order.placed_at, order.user
        ts = iso(t)
        index = int(u.user_id[1:])
        if math.isnan(self._created[index]):
            self._created[index] = t
            self._schedule(t, "customers", self._customer_row(u, t))
        head = (order.order_id, u.user_id, u.anonymous_id)
        tail = (order.total, "USD", order.payment_method)
        self._schedule(t, "orders", (*head, "paid", *tail, ts, ts))
        pay_id = f"pay-{order.order_id[2:]}"
        self._schedule(
            t,
            "payments",
            (pay_id, order.order_id, order.payment_method, order.total, "captured", ts, ts),
        )
        for line, (p, qty, price) in enumerate(order.items, 1):
            self._schedule(
                t,
                "order_items",
                (order.order_id, line, p.product_id, qty, price, p.category_code, ts, ts),
            )
            self._schedule(
                t,
                "inventory_movements",
                (
                    f"mv-{order.order_id[2:]}-{line}",
                    p.product_id,
                    -qty,
                    "sale",
                    order.order_id,
                    ts,
                    ts,
                ),
            )
        r = rng.random()
        if r < 0.02:  # cancelled before shipping
            at = t + rng.uniform(600, 12 * 3600)
            self._schedule(at, "orders", (*head, "cancelled", *tail, ts, iso(at)))
            self._schedule(
                at,
                "payments",
                (pay_id, order.order_id, order.payment_method, order.total, "voided", ts, iso(at)),
            )
            self._restock(order, at, "cancellation")
            return
        shipped = t + rng.uniform(0.3, 2.0) * 86_400
        self._schedule(shipped, "orders", (*head, "shipped", *tail, ts, iso(shipped)))
        delivered = shipped + rng.uniform(1.0, 4.0) * 86_400
        self._schedule(delivered, "orders", (*head, "delivered", *tail, ts, iso(delivered)))
        if r < 0.06:  # refunded after delivery
            at = delivered + rng.uniform(1.0, 6.0) * 86_400
            self._schedule(at, "orders", (*head, "refunded", *tail, ts, iso(at)))
            self._schedule(
                at,
                "payments",
                (
                    pay_id,
                    order.order_id,
                    order.payment_method,
                    order.total,
                    "refunded",
                    ts,
                    iso(at),
                ),
            )
            self._restock(order, at, "return")

    def _restock(self, order: Order, at: float, reason: str) -> None:
        for line, (p, qty, _) in enumerate(order.items, 1):
            self._schedule(
                at,
                "inventory_movements",
                (
                    f"mv-{order.order_id[2:]}-{line}-{reason}",
                    p.product_id,
                    qty,
                    reason,
                    order.order_id,
                    iso(at),
                    iso(at),
                ),
            )

    def flush_until(self, horizon: float) -> int:
        """Apply every change due by ``horizon`` in time order; later ones stay scheduled."""
        # Sign-ups first, in batches: new keys, and a day's can be a quarter of the population.
        n = 0
        rows: list[tuple] = []
        while self._next_joiner < len(self._joiners):
            i = self._joiners[self._next_joiner]
            at = self._created[i]
            if at > horizon:
                break
            rows.append(self._customer_row(self.population.user(i), at))
            self._next_joiner += 1
            if len(rows) >= 10_000:
                self.db.upsert("customers", rows)
                n += len(rows)
                rows = []
        self.db.upsert("customers", rows)
        n += len(rows)
        due: dict[str, list[tuple]] = {}
        while self._queue and self._queue[0].at <= horizon:
            ch = heapq.heappop(self._queue)
            row = ch.row
            if row[-2] is None:  # an update: created_at is kept by the upsert on conflict
                row = (*row[:-2], row[-1], row[-1])
            due.setdefault(ch.table, []).append(row)
            n += 1
        # Parents before children; rows in time order, so the last change of a key wins.
        for table in TABLES:
            self.db.upsert(table, due.get(table, []))
        self.db.commit()
        return n

    @property
    def pending(self) -> int:
        return len(self._queue)
