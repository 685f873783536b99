"""The simulated shop: a catalog with a category tree and power-law popularity, and its users."""

from __future__ import annotations

import bisect
import itertools
import random
import uuid
from dataclasses import dataclass

# Category codes in the REES46 style ("top.sub.leaf"), with a median price and brands per top level.
CATEGORIES: dict[str, tuple[float, list[str], list[str]]] = {
    "electronics": (280.0, ["smartphone", "tablet", "audio.headphone", "video.tv", "camera.photo", "clocks"],
                    ["samsung", "apple", "xiaomi", "huawei", "sony", "lg"]),
    "computers": (450.0, ["notebook", "desktop", "peripherals.mouse", "peripherals.keyboard", "components.videocards"],
                  ["lenovo", "hp", "asus", "acer", "logitech", "msi"]),
    "appliances": (190.0, ["kitchen.refrigerators", "kitchen.washer", "environment.vacuum", "personal.hair_cutter"],
                   ["bosch", "philips", "electrolux", "beko", "dyson"]),
    "apparel": (45.0, ["shoes.sneakers", "shoes.boots", "jeans", "dress", "bag"],
                ["nike", "adidas", "levis", "zara", "puma"]),
    "furniture": (220.0, ["living_room.sofa", "bedroom.bed", "kitchen.table", "office.chair"],
                  ["ikea", "hoff", "askona"]),
    "kids": (35.0, ["toys", "carriage", "skates"], ["lego", "hasbro", "mattel"]),
    "sport": (120.0, ["bicycle", "fitness.treadmill", "tennis"], ["decathlon", "wilson", "merida"]),
    "beauty": (25.0, ["skincare", "fragrance", "hair.dryer"], ["loreal", "nivea", "braun"]),
    "books": (15.0, ["fiction", "science", "comics"], ["penguin", "harpercollins", "marvel"]),
}  # fmt: skip

SEGMENTS = ("casual", "bargain_hunter", "loyal", "big_spender")
SEGMENT_WEIGHTS = (0.45, 0.25, 0.20, 0.10)
# (platform, device_type, share)
DEVICES = (("web", "desktop", 0.42), ("web", "mobile", 0.20), ("web", "tablet", 0.05),
           ("ios", "mobile", 0.17), ("ios", "tablet", 0.03), ("android", "mobile", 0.13))  # fmt: skip
COUNTRIES = (("US", "en-US", 0.35), ("GB", "en-GB", 0.12), ("DE", "de-DE", 0.12), ("FR", "fr-FR", 0.09),
             ("BR", "pt-BR", 0.10), ("IN", "en-IN", 0.10), ("PL", "pl-PL", 0.06), ("JP", "ja-JP", 0.06))  # fmt: skip
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
}  # fmt: skip
BOT_USER_AGENT = "Mozilla/5.0 (compatible; PriceScraper/1.4; +http://scraper.example)"
FIRST_NAMES = ("ana", "ben", "chen", "dara", "eli", "fatima", "gus", "hana", "ivan", "jo", "kofi", "lena",
               "mateo", "nia", "omar", "priya", "quinn", "rosa", "sven", "tara", "uma", "victor", "wen", "yusuf")  # fmt: skip
LAST_NAMES = ("silva", "smith", "muller", "martin", "kowalski", "tanaka", "patel", "garcia", "nguyen",
              "okafor", "rossi", "novak", "larsen", "cohen", "ahmed", "kim")  # fmt: skip


def rng_uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


class WeightedChoice:
    """Fast repeated weighted choice (bisect on cumulative weights)."""

    def __init__(self, items: list, weights: list[float]):
        self.items = items
        self.cum = list(itertools.accumulate(weights))
        self.total = self.cum[-1]

    def pick(self, rng: random.Random):
        return self.items[bisect.bisect_right(self.cum, rng.random() * self.total)]


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


class Population:
    def __init__(self, rng: random.Random, n_users: int, days: int):
        devices = WeightedChoice([(p, d) for p, d, _ in DEVICES], [w for *_, w in DEVICES])
        countries = WeightedChoice(
            [(c, loc) for c, loc, _ in COUNTRIES], [w for *_, w in COUNTRIES]
        )
        segments = WeightedChoice(list(SEGMENTS), list(SEGMENT_WEIGHTS))
        self.users: list[User] = []
        for i in range(n_users):
            platform, device = devices.pick(rng)
            country, locale = countries.pick(rng)
            segment = segments.pick(rng)
            first, last = (
                FIRST_NAMES[rng.randrange(len(FIRST_NAMES))],
                LAST_NAMES[rng.randrange(len(LAST_NAMES))],
            )
            if platform == "ios" and rng.random() < 0.4:
                ip = f"2001:db8:{rng.randrange(65536):x}:{rng.randrange(65536):x}::{rng.randrange(65536):x}"
            else:
                ip = f"{rng.randint(11, 223)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randint(1, 254)}"
            joined = -1 if rng.random() < 0.6 else rng.randrange(max(days, 1))
            self.users.append(
                User(
                    user_id=f"u{i:07d}",
                    anonymous_id=rng_uuid(rng),
                    segment=segment,
                    platform=platform,
                    device_type=device,
                    user_agent=rng.choice(USER_AGENTS[(platform, device)]),
                    country=country,
                    locale=locale,
                    ip=ip,
                    email=f"{first}.{last}{i}@example.com",
                    phone=f"+1 555 {rng.randrange(1000):03d} {rng.randrange(10000):04d}",
                    joined_day=joined,
                    has_account=rng.random() < 0.65,
                    clock_skew_s=rng.uniform(-600, 600) if rng.random() < 0.03 else 0.0,
                    activity={"loyal": 2.0, "big_spender": 1.3, "bargain_hunter": 1.1}.get(
                        segment, 0.8
                    ),
                )
            )

    def active_on(self, day: int) -> WeightedChoice:
        users = [u for u in self.users if u.joined_day <= day]
        return WeightedChoice(
            users, [u.activity * (3.0 if u.joined_day == day else 1.0) for u in users]
        )
