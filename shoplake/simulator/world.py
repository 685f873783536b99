"""The simulated shop: a catalog with a category tree and power-law popularity, and its users."""

from __future__ import annotations

import bisect
import itertools
import random
import uuid
from array import array
from collections.abc import Sequence
from dataclasses import dataclass

# Category codes in the REES46 style ("top.sub.leaf"), with a median price and brands per top level.
CATEGORIES: dict[str, tuple[float, list[str], list[str]]] = {
    "electronics": (
        280.0,
        ["smartphone", "tablet", "audio.headphone", "video.tv", "camera.photo", "clocks"],
        ["samsung", "apple", "xiaomi", "huawei", "sony", "lg"],
    ),
    "computers": (
        450.0,
        [
            "notebook",
            "desktop",
            "peripherals.mouse",
            "peripherals.keyboard",
            "components.videocards",
        ],
        ["lenovo", "hp", "asus", "acer", "logitech", "msi"],
    ),
    "appliances": (
        190.0,
        ["kitchen.refrigerators", "kitchen.washer", "environment.vacuum", "personal.hair_cutter"],
        ["bosch", "philips", "electrolux", "beko", "dyson"],
    ),
    "apparel": (
        45.0,
        ["shoes.sneakers", "shoes.boots", "jeans", "dress", "bag"],
        ["nike", "adidas", "levis", "zara", "puma"],
    ),
    "furniture": (
        220.0,
        ["living_room.sofa", "bedroom.bed", "kitchen.table", "office.chair"],
        ["ikea", "hoff", "askona"],
    ),
    "kids": (35.0, ["toys", "carriage", "skates"], ["lego", "hasbro", "mattel"]),
    "sport": (120.0, ["bicycle", "fitness.treadmill", "tennis"], ["decathlon", "wilson", "merida"]),
    "beauty": (25.0, ["skincare", "fragrance", "hair.dryer"], ["loreal", "nivea", "braun"]),
    "books": (15.0, ["fiction", "science", "comics"], ["penguin", "harpercollins", "marvel"]),
}

SEGMENTS = ("casual", "bargain_hunter", "loyal", "big_spender")
SEGMENT_WEIGHTS = (0.45, 0.25, 0.20, 0.10)
# (platform, device_type, share)
DEVICES = (
    ("web", "desktop", 0.42),
    ("web", "mobile", 0.20),
    ("web", "tablet", 0.05),
    ("ios", "mobile", 0.17),
    ("ios", "tablet", 0.03),
    ("android", "mobile", 0.13),
)
COUNTRIES = (
    ("US", "en-US", 0.35),
    ("GB", "en-GB", 0.12),
    ("DE", "de-DE", 0.12),
    ("FR", "fr-FR", 0.09),
    ("BR", "pt-BR", 0.10),
    ("IN", "en-IN", 0.10),
    ("PL", "pl-PL", 0.06),
    ("JP", "ja-JP", 0.06),
)
USER_AGENTS = {
    ("web", "desktop"): [
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.51",
    ],
    ("web", "mobile"): [
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36",
        "Mozilla/5.0 (Linux; Android 13; SM-S911B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/24.0 Chrome/117.0.0.0 Mobile Safari/537.36",
    ],
    ("web", "tablet"): [
        "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    ],
    ("ios", "mobile"): ["ShopLake/3.2.1 (iPhone15,2; iOS 17.4.1; Scale/3.00)"],
    ("ios", "tablet"): ["ShopLake/3.2.1 (iPad13,1; iPadOS 17.4.1; Scale/2.00)"],
    ("android", "mobile"): ["ShopLake/3.2.0 (Linux; Android 14; Pixel 8) okhttp/4.12.0"],
}
BOT_USER_AGENT = "Mozilla/5.0 (compatible; PriceScraper/1.4; +http://scraper.example)"
FIRST_NAMES = (
    "ana",
    "ben",
    "chen",
    "dara",
    "eli",
    "fatima",
    "gus",
    "hana",
    "ivan",
    "jo",
    "kofi",
    "lena",
    "mateo",
    "nia",
    "omar",
    "priya",
    "quinn",
    "rosa",
    "sven",
    "tara",
    "uma",
    "victor",
    "wen",
    "yusuf",
)
LAST_NAMES = (
    "silva",
    "smith",
    "muller",
    "martin",
    "kowalski",
    "tanaka",
    "patel",
    "garcia",
    "nguyen",
    "okafor",
    "rossi",
    "novak",
    "larsen",
    "cohen",
    "ahmed",
    "kim",
)


def rng_uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


class WeightedChoice:
    """Fast repeated weighted choice (bisect on cumulative weights)."""

    def __init__(self, items: list, weights: list[float]):
        self.items = items
        self.cum = list(itertools.accumulate(weights))
        self.total = self.cum[-1]

    def pick(self, rng: random.Random):
        return self.items[self.pick_index(rng)]

    def pick_index(self, rng: random.Random) -> int:
        return bisect.bisect_right(self.cum, rng.random() * self.total)


@dataclass(frozen=True, slots=True)
class Product:
    product_id: str
    name: str
    category_id: str
    category_code: str
    brand: str
    price: float


@dataclass(frozen=True, slots=True)
class User:
    user_id: str
    anonymous_id: str
    segment: str
    platform: str
    device_type: str
    user_agent: str
    country: str
    locale: str
    ip: str
    email: str
    phone: str
    joined_day: int  # day index (0 = first simulated day; negative = before)
    has_account: bool
    clock_skew_s: float
    activity: float


class Catalog:
    def __init__(self, rng: random.Random, n_products: int):
        leaves = [(top, leaf) for top, (_, subs, _) in CATEGORIES.items() for leaf in subs]
        self.products: list[Product] = []
        for i in range(n_products):
            top, leaf = leaves[rng.randrange(len(leaves))]
            median, _, brands = CATEGORIES[top]
            price = round(max(1.0, rng.lognormvariate(0, 0.6) * median), 2)
            brand = brands[rng.randrange(len(brands))]
            code = f"{top}.{leaf}"
            self.products.append(
                Product(
                    product_id=str(1_000_000 + i),
                    name=f"{brand.title()} {leaf.split('.')[-1].replace('_', ' ')} {i % 97 + 1}",
                    category_id=str(2_053_013_552_226_107_603 + leaves.index((top, leaf))),
                    category_code=code,
                    brand=brand,
                    price=price,
                )
            )
        # Power-law popularity: rank r has weight 1 / r^1.1 (a shuffled rank per product).
        ranks = list(range(1, n_products + 1))
        rng.shuffle(ranks)
        self.popularity = WeightedChoice(self.products, [1.0 / r**1.1 for r in ranks])
        self.by_category: dict[str, list[Product]] = {}
        for p in self.products:
            self.by_category.setdefault(p.category_code, []).append(p)
        self.category_codes = sorted(self.by_category)

    def pick(self, rng: random.Random) -> Product:
        return self.popularity.pick(rng)


# Users are rebuilt from these columns on demand; index order is the order of the draws.
DEVICE_KEYS = tuple((p, d) for p, d, _ in DEVICES)
COUNTRY_KEYS = tuple((c, loc) for c, loc, _ in COUNTRIES)
SEGMENT_ACTIVITY = {"casual": 0.8, "bargain_hunter": 1.1, "loyal": 2.0, "big_spender": 1.3}
_IPV6 = 1 << 48  # flag bit in a packed address: 2001:db8:a:b::c, else a.b.c.d


class Population:
    """Every user, as compact columns (about 40 bytes a user) and not as objects: a day of 10M
    events has 3M users. ``users[i]`` and ``active_on(day).pick(rng)`` build a ``User`` on demand,
    the same one for the same seed and index."""

    def __init__(self, rng: random.Random, n_users: int, days: int):
        devices = WeightedChoice(list(DEVICE_KEYS), [w for *_, w in DEVICES])
        countries = WeightedChoice(list(COUNTRY_KEYS), [w for *_, w in COUNTRIES])
        segments = WeightedChoice(list(SEGMENTS), list(SEGMENT_WEIGHTS))
        self._device = bytearray(n_users)
        self._country = bytearray(n_users)
        self._segment = bytearray(n_users)
        self._agent = bytearray(n_users)
        self._account = bytearray(n_users)
        self._name = array("H", bytes(2 * n_users))  # first name index * len(LAST_NAMES) + last
        self._ip = array("q", bytes(8 * n_users))
        self._phone = array("i", bytes(4 * n_users))  # the 7 random digits
        self._joined = array("i", bytes(4 * n_users))
        self._anon = bytearray(16 * n_users)  # UUID bytes
        self._skew: dict[int, float] = {}  # the few users whose clock is off
        # Draws in the same order as when users were objects, so a seed gives the same people.
        for i in range(n_users):
            device = devices.pick_index(rng)
            platform = DEVICE_KEYS[device][0]
            self._device[i] = device
            self._country[i] = countries.pick_index(rng)
            self._segment[i] = segments.pick_index(rng)
            self._name[i] = rng.randrange(len(FIRST_NAMES)) * len(LAST_NAMES) + rng.randrange(
                len(LAST_NAMES)
            )
            if platform == "ios" and rng.random() < 0.4:
                a, b, c = rng.randrange(65536), rng.randrange(65536), rng.randrange(65536)
                self._ip[i] = _IPV6 | a << 32 | b << 16 | c
            else:
                a, b = rng.randint(11, 223), rng.randrange(256)
                c, d = rng.randrange(256), rng.randint(1, 254)
                self._ip[i] = a << 24 | b << 16 | c << 8 | d
            self._joined[i] = -1 if rng.random() < 0.6 else rng.randrange(max(days, 1))
            self._anon[16 * i : 16 * i + 16] = uuid.UUID(int=rng.getrandbits(128), version=4).bytes
            agents = USER_AGENTS[DEVICE_KEYS[device]]
            self._agent[i] = agents.index(rng.choice(agents))
            self._phone[i] = rng.randrange(1000) * 10_000 + rng.randrange(10000)
            self._account[i] = rng.random() < 0.65
            if rng.random() < 0.03:
                self._skew[i] = rng.uniform(-600, 600)
        self.users = _Users(self)

    def __len__(self) -> int:
        return len(self._device)

    def user(self, i: int) -> User:
        platform, device = DEVICE_KEYS[self._device[i]]
        country, locale = COUNTRY_KEYS[self._country[i]]
        segment = SEGMENTS[self._segment[i]]
        first, last = divmod(self._name[i], len(LAST_NAMES))
        phone = self._phone[i]
        return User(
            user_id=f"u{i:07d}",
            anonymous_id=str(uuid.UUID(bytes=bytes(self._anon[16 * i : 16 * i + 16]))),
            segment=segment,
            platform=platform,
            device_type=device,
            user_agent=USER_AGENTS[(platform, device)][self._agent[i]],
            country=country,
            locale=locale,
            ip=_ip_text(self._ip[i]),
            email=f"{FIRST_NAMES[first]}.{LAST_NAMES[last]}{i}@example.com",
            phone=f"+1 555 {phone // 10_000:03d} {phone % 10_000:04d}",
            joined_day=self._joined[i],
            has_account=bool(self._account[i]),
            clock_skew_s=self._skew.get(i, 0.0),
            activity=SEGMENT_ACTIVITY[segment],
        )

    def has_account(self, i: int) -> bool:
        return bool(self._account[i])

    def joined_day(self, i: int) -> int:
        return self._joined[i]

    def active_on(self, day: int) -> ActiveUsers:
        """Users who have joined by ``day``, weighted by activity (x3 on the day they join)."""
        joined, seg = self._joined, self._segment
        activity = [SEGMENT_ACTIVITY[s] for s in SEGMENTS]
        index = array("i", (i for i in range(len(joined)) if joined[i] <= day))
        weights = (activity[seg[i]] * (3.0 if joined[i] == day else 1.0) for i in index)
        return ActiveUsers(self, index, array("d", itertools.accumulate(weights)))


class _Users(Sequence[User]):
    """``population.users``: a read-only sequence that builds each ``User`` when asked."""

    def __init__(self, population: Population):
        self._population = population

    def __len__(self) -> int:
        return len(self._population)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self._population.user(k) for k in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self._population.user(i)


class ActiveUsers:
    """Weighted choice over a day's users, kept as index and cumulative-weight arrays."""

    def __init__(self, population: Population, index: array, cum: array):
        self.population = population
        self.index = index
        self.cum = cum
        self.total = cum[-1] if cum else 0.0

    def __len__(self) -> int:
        return len(self.index)

    def pick(self, rng: random.Random) -> User:
        k = bisect.bisect_right(self.cum, rng.random() * self.total)
        return self.population.user(self.index[k])


def _ip_text(packed: int) -> str:
    if packed & _IPV6:
        return f"2001:db8:{packed >> 32 & 0xFFFF:x}:{packed >> 16 & 0xFFFF:x}::{packed & 0xFFFF:x}"
    return f"{packed >> 24}.{packed >> 16 & 0xFF}.{packed >> 8 & 0xFF}.{packed & 0xFF}"
