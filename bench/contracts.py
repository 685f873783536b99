"""Decode + validate speed of the contracts: msgspec (chosen) vs pydantic v2, same payloads, same run.

.venv/bin/python -m bench.contracts [--events 100000]
"""

from __future__ import annotations

import argparse
import time
from datetime import date, datetime
from typing import Annotated, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from shoplake.core.contracts import decode_event
from shoplake.simulator import FaultRates, SimConfig, simulate
from shoplake.simulator.sinks import MemorySink


# The same contract in pydantic v2 (strict, like msgspec), for the comparison only.
class PContext(BaseModel):
    model_config = ConfigDict(strict=True)
    platform: Literal["web", "ios", "android"]
    device_type: Literal["desktop", "mobile", "tablet"] | None = None
    user_agent: str | None = None
    ip: str | None = None
    locale: str | None = None
    country: str | None = None
    page_url: str | None = None
    referrer: str | None = None
    utm_source: str | None = None
    utm_medium: str | None = None
    utm_campaign: str | None = None


class PTraits(BaseModel):
    email: str | None = None
    phone: str | None = None


class PBase(BaseModel):
    model_config = ConfigDict(strict=False)  # strict mode rejects ISO strings for datetime in JSON
    event_id: pydantic.UUID4
    schema_version: str
    occurred_at: pydantic.AwareDatetime
    sent_at: pydantic.AwareDatetime
    received_at: pydantic.AwareDatetime | None = None
    anonymous_id: Annotated[str, Field(min_length=1, max_length=128)]
    user_id: str | None = None
    session_id: str | None = None
    context: PContext
    traits: PTraits | None = None


class PItem(BaseModel):
    product_id: str
    quantity: Annotated[int, Field(ge=1)]
    unit_price: Annotated[float, Field(ge=0)]
    category: str | None = None


class PPageView(PBase):
    event_type: Literal["page_view"]
    page_type: str = "other"
    title: str | None = None


class PProductView(PBase):
    event_type: Literal["product_view"]
    product_id: str
    category: str | None = None
    brand: str | None = None
    price: float
    currency: str = "USD"


class PSearch(PBase):
    event_type: Literal["search"]
    query: str
    results_count: int


class PCart(PBase):
    event_type: Literal["add_to_cart", "remove_from_cart"]
    product_id: str
    quantity: int
    unit_price: float
    category: str | None = None
    currency: str = "USD"


class PCheckout(PBase):
    event_type: Literal["begin_checkout"]
    cart_value: float
    items_count: int
    currency: str = "USD"


class PPurchase(PBase):
    event_type: Literal["purchase"]
    order_id: str
    items: list[PItem]
    total: float
    currency: str
    payment_method: str


class PAd(PBase):
    event_type: Literal["ad_impression", "ad_click"]
    ad_id: str
    campaign_id: str
    banner_position: int
    placement: str
    site_id: str | None = None
    site_category: str | None = None
    app_id: str | None = None
    app_category: str | None = None


class PLogin(PBase):
    event_type: Literal["login", "logout"]
    method: str | None = None


PEvent = pydantic.TypeAdapter(
    Annotated[
        PPageView | PProductView | PSearch | PCart | PCheckout | PPurchase | PAd | PLogin,
        Field(discriminator="event_type"),
    ]
)


def best_of(fn, payloads, repeat=3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        for p in payloads:
            fn(p)
        best = min(best, time.perf_counter() - t)
    return len(payloads) / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=100_000)
    args = ap.parse_args()
    sink = MemorySink()
    users = max(200, args.events // 5)
    simulate(
        SimConfig(start=date(2026, 11, 1), days=1, users=users, faults=FaultRates.none()),
        sink,
        None,
        show_progress=False,
    )
    payloads = sink.payloads[: args.events]
    assert isinstance(PEvent.validate_json(payloads[0]).occurred_at, datetime)
    m = best_of(decode_event, payloads)
    p = best_of(PEvent.validate_json, payloads)
    print(
        f"events: {len(payloads)}  (python {'.'.join(map(str, __import__('sys').version_info[:3]))})"
    )
    print(f"msgspec   decode+validate: {m:12,.0f} events/s  ({1e6 / m:.2f} us/event)")
    print(f"pydantic2 decode+validate: {p:12,.0f} events/s  ({1e6 / p:.2f} us/event)")
    print(f"ratio msgspec/pydantic: {m / p:.2f}x")


if __name__ == "__main__":
    main()
