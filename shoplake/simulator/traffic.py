"""One simulated day of sessions: funnels, searches, ads, seasonality, and the orders they create."""

from __future__ import annotations

import bisect
import itertools
import math
import random
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from shoplake.core.contracts.model import EVENT_TYPES, current_version
from shoplake.simulator.world import (
    BOT_USER_AGENT,
    ActiveUsers,
    Catalog,
    Population,
    Product,
    User,
    rng_uuid,
)

# Share of the day's sessions that start in each UTC hour (nightly low, lunch and evening peaks).
HOURLY = (
    0.8,
    0.5,
    0.35,
    0.3,
    0.3,
    0.4,
    0.8,
    1.5,
    2.4,
    3.0,
    3.4,
    3.7,
    4.1,
    4.0,
    3.6,
    3.4,
    3.5,
    3.9,
    4.6,
    5.3,
    5.6,
    5.0,
    3.6,
    1.9,
)
WEEKDAY = (0.92, 0.95, 0.97, 1.0, 1.05, 1.18, 1.12)  # Monday .. Sunday
CART_PROB = {"casual": 0.05, "bargain_hunter": 0.07, "loyal": 0.12, "big_spender": 0.14}
PAYMENT_METHODS = (
    "card",
    "card",
    "card",
    "paypal",
    "wallet",
    "bank_transfer",
    "voucher",
    "cash_on_delivery",
)
# CTR multipliers: the shape of CTR by device, banner position and site/app category.
CTR_BASE = 0.018
CTR_DEVICE = {"desktop": 0.8, "mobile": 1.35, "tablet": 1.05}
CTR_POSITION = (1.0, 1.45, 0.7, 0.55, 0.9, 0.6, 0.5, 1.2)
SITE_CATEGORIES = {
    "news": 0.8,
    "sports": 1.1,
    "entertainment": 1.3,
    "tech": 1.0,
    "shopping": 1.6,
    "finance": 0.6,
}
APP_CATEGORIES = {"games": 1.5, "social": 1.2, "utilities": 0.7, "news": 0.8, "shopping": 1.7}
PLACEMENTS = ("header", "sidebar", "in_feed", "footer", "interstitial")
CAMPAIGNS = tuple(f"cmp-{i:03d}" for i in range(24))
UTM = (
    ("google", "cpc"),
    ("facebook", "paid_social"),
    ("newsletter", "email"),
    ("instagram", "paid_social"),
    ("bing", "cpc"),
    ("affiliate", "referral"),
)
SEARCH_WORDS = ("cheap", "best", "new", "sale", "pro", "mini", "wireless", "black", "kids", "gift")


def iso(ts: float) -> str:
    """Epoch seconds -> RFC 3339 UTC with milliseconds."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(slots=True)
class SimEvent:
    """A generated event before fault injection. Times are true (server) epoch seconds."""

    received: float
    doc: dict
    fault: str | None = None


@dataclass
class Order:
    order_id: str
    user: User
    placed_at: float
    items: list[tuple[Product, int, float]]
    total: float
    payment_method: str


@dataclass
class DayPlan:
    """Per-day knobs: the traffic spike and revenue drop windows (epoch seconds) for fault labels,
    and the day's active users. ``orders`` collects orders as slices are generated; the caller
    takes them after each slice."""

    day_index: int
    day: date
    spike: tuple[float, float] | None = None
    revenue_drop: tuple[float, float] | None = None
    suppressed_purchases: int = 0
    orders: list[Order] = field(default_factory=list)
    users: ActiveUsers | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class Slice:
    """Sessions starting in [start, end), generated together with their own random stream.

    A day is cut into slices of at most about ``max_sessions`` sessions each, so generating one
    takes memory bounded by that size, whatever the population."""

    index: int
    start: float
    end: float
    sessions: int
    label: str | None = None  # "traffic_spike": the spike's extra sessions


class DayGenerator:
    def __init__(self, catalog: Catalog, population: Population, sessions_per_user: float = 0.35):
        self.catalog = catalog
        self.population = population
        self.sessions_per_user = sessions_per_user
        self.versions = {t: current_version(t) for t in EVENT_TYPES}

    def plan(
        self,
        rng: random.Random,
        plan: DayPlan,
        max_sessions: int,
        spike_factor: float = 0.0,
        revenue_drop_factor: float = 1.0,
    ) -> list[Slice]:
        """The day's sessions per hour, and the spike's, cut into slices in order of start time."""
        start = day_start(plan.day)
        plan.users = self.population.active_on(plan.day_index)
        expected = len(plan.users) * self.sessions_per_user * WEEKDAY[plan.day.weekday()]
        n_sessions = max(1, int(rng.gauss(expected, math.sqrt(expected))))
        hour_total = sum(HOURLY)
        hours = [h / hour_total for h in HOURLY]

        if spike_factor > 0:
            s = start + rng.uniform(9, 20) * 3600
            plan.spike = (s, s + 600)
        if revenue_drop_factor < 1.0:
            s = start + rng.randrange(10, 21) * 3600
            plan.revenue_drop = (s, s + 3600)

        cum = list(itertools.accumulate(hours))
        per_hour = [0] * 24
        for _ in range(n_sessions):
            per_hour[min(23, bisect.bisect_right(cum, rng.random() * cum[-1]))] += 1
        windows = [
            (start + h * 3600, start + (h + 1) * 3600, n, None) for h, n in enumerate(per_hour)
        ]
        if plan.spike is not None:
            # Extra sessions packed into a 10-minute window: spike_factor x the normal rate there.
            per_10min = n_sessions * max(hours) / 6
            windows.append((*plan.spike, int(per_10min * spike_factor), "traffic_spike"))
        parts = []
        for a, b, n, label in windows:
            # Cut a window into k equal spans; each session falls in one at random (multinomial).
            k = max(1, math.ceil(n / max_sessions))
            counts = [n]
            if k > 1:
                counts = [0] * k
                for _ in range(n):
                    counts[rng.randrange(k)] += 1
            width = (b - a) / k
            parts += [
                (a + j * width, a + (j + 1) * width, c, label) for j, c in enumerate(counts) if c
            ]
        parts.sort(key=lambda w: w[0])
        return [Slice(i, a, b, n, label) for i, (a, b, n, label) in enumerate(parts)]

    def generate(
        self,
        rng: random.Random,
        plan: DayPlan,
        part: Slice,
        revenue_drop_factor: float = 1.0,
        bot_burst_rate: float = 0.0,
    ) -> list[SimEvent]:
        """The events of one slice's sessions (not in time order); its orders go to plan.orders."""
        assert plan.users is not None, "plan() the day first"
        users = plan.users
        events: list[SimEvent] = []
        for _ in range(part.sessions):
            t0 = part.start + rng.random() * (part.end - part.start)
            self._session(rng, users.pick(rng), t0, plan, events, part.label, revenue_drop_factor)
            if part.label is None and bot_burst_rate and rng.random() < bot_burst_rate:
                self._bot_burst(rng, users.pick(rng), t0 + rng.random() * 60, events)
        return events

    # -- one session ----------------------------------------------------------------------------
    def _session(
        self,
        rng: random.Random,
        user: User,
        t: float,
        plan: DayPlan,
        out: list[SimEvent],
        label: str | None,
        revenue_drop_factor: float,
    ) -> None:
        session_id = rng_uuid(rng)
        logged_in = user.has_account and rng.random() < 0.45
        app = user.platform != "web"
        gap_median = 12.0 if app else 20.0
        base_ctx = {
            "platform": user.platform,
            "device_type": user.device_type,
            "user_agent": user.user_agent,
            "ip": user.ip,
            "locale": user.locale,
            "country": user.country,
        }
        utm = (
            (*UTM[rng.randrange(len(UTM))], CAMPAIGNS[rng.randrange(len(CAMPAIGNS))])
            if rng.random() < 0.3
            else None
        )
        state = {"t": t, "logged_in": logged_in}

        def emit(
            etype: str, fields: dict, page: str | None = None, traits: dict | None = None
        ) -> None:
            ctx = dict(base_ctx)
            if not app and page is not None:
                ctx["page_url"] = f"https://shop.example/{page}"
            if utm is not None:
                ctx["utm_source"], ctx["utm_medium"], ctx["utm_campaign"] = utm
            received = self._received(rng, state["t"], app)
            doc = self._doc(
                rng, user, etype, state["t"], received, session_id, state["logged_in"], ctx, fields
            )
            if traits:
                doc["traits"] = traits
            out.append(SimEvent(received, doc, label))

        def step() -> None:
            state["t"] += rng.lognormvariate(math.log(gap_median), 0.8)

        landing = rng.choice(("home", "home", "category", "product"))
        emit("page_view", {"page_type": landing, "title": landing.title()}, landing)
        if logged_in:
            step()
            emit(
                "login",
                {"method": rng.choice(("password", "oauth", "magic_link"))},
                "login",
                {"email": user.email, "phone": user.phone},
            )

        cart: dict[str, tuple[Product, int]] = {}
        n_steps = 0 if rng.random() < 0.33 else int(rng.expovariate(1 / 7)) + 1
        for _ in range(n_steps):
            step()
            r = rng.random()
            if r < 0.55:
                p = self.catalog.pick(rng)
                emit(
                    "product_view",
                    {
                        "product_id": p.product_id,
                        "category": p.category_code,
                        "brand": p.brand,
                        "price": p.price,
                    },
                    f"product/{p.product_id}",
                )
                if rng.random() < CART_PROB[user.segment]:
                    step()
                    qty = 1 if rng.random() < 0.85 else rng.randint(2, 4)
                    prev = cart.get(p.product_id, (p, 0))[1]
                    cart[p.product_id] = (p, prev + qty)
                    emit(
                        "add_to_cart",
                        {
                            "product_id": p.product_id,
                            "quantity": qty,
                            "unit_price": p.price,
                            "category": p.category_code,
                        },
                        "cart",
                    )
            elif r < 0.70:
                p = self.catalog.pick(rng)
                words = p.category_code.split(".")[-1].replace("_", " ")
                query = f"{rng.choice(SEARCH_WORDS)} {p.brand} {words}"
                emit("search", {"query": query, "results_count": rng.randint(0, 240)}, "search")
            else:
                code = self.catalog.category_codes[rng.randrange(len(self.catalog.category_codes))]
                emit("page_view", {"page_type": "category", "title": code}, f"category/{code}")
            if rng.random() < 0.3:
                self._ad(rng, user, state, emit, step)
            if cart and rng.random() < 0.06:
                step()
                pid = rng.choice(sorted(cart))
                p, qty = cart.pop(pid)
                emit(
                    "remove_from_cart",
                    {
                        "product_id": pid,
                        "quantity": qty,
                        "unit_price": p.price,
                        "category": p.category_code,
                    },
                    "cart",
                )

        if cart and rng.random() < 0.55:
            step()
            value = round(sum(p.price * q for p, q in cart.values()), 2)
            emit(
                "begin_checkout",
                {"cart_value": value, "items_count": sum(q for _, q in cart.values())},
                "checkout",
            )
            buy_p = 0.68
            in_drop = (
                plan.revenue_drop is not None
                and plan.revenue_drop[0] <= state["t"] < plan.revenue_drop[1]
            )
            if in_drop:
                buy_p *= revenue_drop_factor
            r = rng.random()
            if r < buy_p and user.has_account:
                if not state["logged_in"]:
                    step()
                    state["logged_in"] = True
                    emit(
                        "login",
                        {"method": "password"},
                        "login",
                        {"email": user.email, "phone": user.phone},
                    )
                step()
                items = [
                    (p, q, p.price) for p, q in sorted(cart.values(), key=lambda x: x[0].product_id)
                ]
                order = Order(
                    f"o-{rng_uuid(rng)[:18]}",
                    user,
                    state["t"],
                    items,
                    value,
                    PAYMENT_METHODS[rng.randrange(len(PAYMENT_METHODS))],
                )
                plan.orders.append(order)
                emit(
                    "purchase",
                    {
                        "order_id": order.order_id,
                        "items": [
                            {
                                "product_id": p.product_id,
                                "quantity": q,
                                "unit_price": price,
                                "category": p.category_code,
                            }
                            for p, q, price in items
                        ],
                        "total": order.total,
                        "currency": "USD",
                        "payment_method": order.payment_method,
                    },
                    "checkout/complete",
                )
            elif in_drop and r < 0.68 and user.has_account:
                plan.suppressed_purchases += 1
        if state["logged_in"] and rng.random() < 0.1:
            step()
            emit("logout", {}, "logout")

    def _ad(self, rng: random.Random, user: User, state: dict, emit, step) -> None:
        position = rng.randrange(8)
        placement = PLACEMENTS[rng.randrange(len(PLACEMENTS))]
        fields = {
            "ad_id": f"ad-{rng.randrange(400):04d}",
            "campaign_id": CAMPAIGNS[rng.randrange(len(CAMPAIGNS))],
            "banner_position": position,
            "placement": placement,
        }
        if user.platform == "web":
            cat = rng.choice(sorted(SITE_CATEGORIES))
            fields |= {"site_id": f"site-{rng.randrange(60):03d}", "site_category": cat}
            cat_factor = SITE_CATEGORIES[cat]
        else:
            cat = rng.choice(sorted(APP_CATEGORIES))
            fields |= {"app_id": f"app-{rng.randrange(40):03d}", "app_category": cat}
            cat_factor = APP_CATEGORIES[cat]
        emit("ad_impression", fields, None)
        ctr = CTR_BASE * CTR_DEVICE[user.device_type] * CTR_POSITION[position] * cat_factor
        if rng.random() < ctr:
            state["t"] += rng.uniform(0.8, 6.0)
            emit("ad_click", fields, None)

    def _bot_burst(self, rng: random.Random, user: User, t: float, out: list[SimEvent]) -> None:
        """A scripted client: 5-12 clicks less than 100 ms apart, all labelled bot_burst."""
        session_id = rng_uuid(rng)
        anon = rng_uuid(rng)
        ctx = {
            "platform": "web",
            "device_type": "desktop",
            "user_agent": BOT_USER_AGENT,
            "ip": f"{rng.randint(11, 223)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randint(1, 254)}",
        }
        bot = User(
            **{
                **{f: getattr(user, f) for f in user.__slots__},
                "anonymous_id": anon,
                "clock_skew_s": 0.0,
            }
        )
        for _ in range(rng.randint(5, 12)):
            t += rng.uniform(0.02, 0.095)
            p = self.catalog.pick(rng)
            fields = {
                "product_id": p.product_id,
                "category": p.category_code,
                "brand": p.brand,
                "price": p.price,
            }
            doc = self._doc(rng, bot, "product_view", t, t + 0.05, session_id, False, ctx, fields)
            out.append(SimEvent(t + 0.05, doc, "bot_burst"))

    # -- envelope -------------------------------------------------------------------------------
    def _received(self, rng: random.Random, t: float, app: bool) -> float:
        # Apps batch for a few seconds; browsers send at once. Network adds 20-250 ms.
        send_delay = rng.uniform(0.5, 20.0) if app else rng.uniform(0.01, 0.4)
        return t + send_delay + rng.uniform(0.02, 0.25)

    def _doc(
        self,
        rng: random.Random,
        user: User,
        etype: str,
        t: float,
        received: float,
        session_id: str,
        logged_in: bool,
        ctx: dict,
        fields: dict,
    ) -> dict:
        """The event as the client sends it: occurred_at and sent_at on the client's (maybe skewed)
        clock; received_at is the server's, filled here because the simulator replays history."""
        skew = user.clock_skew_s
        doc = {
            "event_id": rng_uuid(rng),
            "event_type": etype,
            "schema_version": self.versions[etype],
            "occurred_at": iso(t + skew),
            "sent_at": iso(received - 0.05 + skew),
            "received_at": iso(received),
            "anonymous_id": user.anonymous_id,
            "session_id": session_id,
            "context": ctx,
        }
        if logged_in:
            doc["user_id"] = user.user_id
        doc.update(fields)
        return doc


def day_start(d: date) -> float:
    return datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp()


def days_from(start: date, n: int) -> list[date]:
    return [start + timedelta(days=i) for i in range(n)]
