"""Event contracts, version 1: msgspec Structs that decode and validate in one pass.

Personal fields are declared with ``x-pii`` in their JSON Schema metadata (see :data:`Email`,
:data:`Phone`, :data:`IpAddress`); :mod:`shoplake.core.pii` finds them by walking these types, so a
new personal field is pseudonymized as soon as it is declared here.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

import msgspec
from msgspec import Meta, Struct

UtcDatetime = Annotated[datetime, Meta(tz=True, description="RFC 3339 timestamp with a UTC offset")]
# Ids travel as Kafka keys and file names: no control characters. Integers are stored as int64.
NO_CONTROL = r"^[^\x00-\x1f\x7f]*$"
INT64_MAX = 2**63 - 1
Id = Annotated[str, Meta(min_length=1, max_length=128, pattern=NO_CONTROL)]
# An id that may name a person (a visitor, a user, an order): kept, unless it is an email or a
# phone number, which shoplake.core.pii then hashes.
PersonId = Annotated[
    str,
    Meta(
        min_length=1, max_length=128, pattern=NO_CONTROL, extra_json_schema={"x-pii": "identifier"}
    ),
]
Count = Annotated[int, Meta(ge=0, le=INT64_MAX, description="stored as a 64-bit integer")]
Currency = Annotated[str, Meta(pattern="^[A-Z]{3}$", description="ISO 4217 code")]
Money = Annotated[float, Meta(ge=0, le=10_000_000)]
Quantity = Annotated[int, Meta(ge=1, le=10_000)]
SchemaVersion = Annotated[str, Meta(pattern=r"^\d+\.\d+$", description="MAJOR.MINOR")]

# Long enough for the raw value and for its pseudonym ("h:" + 64 hex), so a pseudonymized event
# still satisfies its contract (DLQ replays, re-validation downstream).
Email = Annotated[str, Meta(max_length=320, extra_json_schema={"x-pii": "email"})]
Phone = Annotated[str, Meta(max_length=80, extra_json_schema={"x-pii": "phone"})]
IpAddress = Annotated[str, Meta(max_length=80, extra_json_schema={"x-pii": "ip"})]
# Free text a client writes: scrubbed by pattern (emails, phones, IPs, card numbers).
Text = Annotated[str, Meta(extra_json_schema={"x-pii": "text"})]
# A URL: personal query parameters hashed, then scrubbed as text.
Url = Annotated[str, Meta(max_length=2048, extra_json_schema={"x-pii": "url"})]

Platform = Literal["web", "ios", "android"]
DeviceType = Literal["desktop", "mobile", "tablet"]
PaymentMethod = Literal["card", "paypal", "bank_transfer", "wallet", "voucher", "cash_on_delivery"]


class Context(Struct, kw_only=True, omit_defaults=True):
    """Where the event came from. ``ip`` is personal: it is reduced to a network and hashed."""

    platform: Platform
    device_type: DeviceType | None = None
    user_agent: (
        Annotated[str, Meta(max_length=1024, extra_json_schema={"x-pii": "text"})] | None
    ) = None
    ip: IpAddress | None = None
    locale: Annotated[str, Meta(max_length=35)] | None = None
    country: Annotated[str, Meta(pattern="^[A-Z]{2}$")] | None = None
    page_url: Url | None = None
    referrer: Url | None = None
    utm_source: Text | None = None
    utm_medium: Text | None = None
    utm_campaign: Text | None = None
    utm_term: Text | None = None
    utm_content: Text | None = None


class Traits(Struct, kw_only=True, omit_defaults=True):
    """Identity a client may attach (typically on login). Every field here is personal."""

    email: Email | None = None
    phone: Phone | None = None


class Event(Struct, kw_only=True, omit_defaults=True, tag_field="event_type"):
    """The envelope every event type shares."""

    event_id: uuid.UUID
    schema_version: SchemaVersion
    occurred_at: UtcDatetime
    sent_at: UtcDatetime
    received_at: UtcDatetime | None = None
    anonymous_id: PersonId
    user_id: PersonId | None = None
    session_id: PersonId | None = None
    context: Context
    traits: Traits | None = None
    pii_key_id: str | None = None


class OrderItem(Struct, kw_only=True, omit_defaults=True):
    product_id: Id
    quantity: Quantity
    unit_price: Money
    category: str | None = None


class PageView(Event, tag="page_view", kw_only=True):
    page_type: Literal["home", "category", "product", "search", "cart", "checkout", "other"] = (
        "other"
    )
    title: Text | None = None


class ProductView(Event, tag="product_view", kw_only=True):
    product_id: Id
    category: Text | None = None
    brand: Text | None = None
    price: Money
    currency: Currency = "USD"


class Search(Event, tag="search", kw_only=True):
    query: Annotated[str, Meta(max_length=512, extra_json_schema={"x-pii": "text"})]
    results_count: Count


class AddToCart(Event, tag="add_to_cart", kw_only=True):
    product_id: Id
    quantity: Quantity
    unit_price: Money
    category: str | None = None
    currency: Currency = "USD"


class RemoveFromCart(Event, tag="remove_from_cart", kw_only=True):
    product_id: Id
    quantity: Quantity
    unit_price: Money
    category: str | None = None
    currency: Currency = "USD"


class BeginCheckout(Event, tag="begin_checkout", kw_only=True):
    cart_value: Money
    items_count: Annotated[int, Meta(ge=1, le=INT64_MAX)]
    currency: Currency = "USD"


class Purchase(Event, tag="purchase", kw_only=True):
    order_id: PersonId
    items: Annotated[list[OrderItem], Meta(min_length=1, max_length=200)]
    total: Money
    currency: Currency
    payment_method: PaymentMethod


class _Ad(Event, kw_only=True):
    ad_id: Id
    campaign_id: Id
    banner_position: Annotated[int, Meta(ge=0, le=7)]
    placement: Literal["header", "sidebar", "in_feed", "footer", "interstitial"]
    site_id: str | None = None
    site_category: str | None = None
    app_id: str | None = None
    app_category: str | None = None


class AdImpression(_Ad, tag="ad_impression", kw_only=True):
    pass


class AdClick(_Ad, tag="ad_click", kw_only=True):
    pass


class Login(Event, tag="login", kw_only=True):
    method: Literal["password", "oauth", "sso", "magic_link"] = "password"


class Logout(Event, tag="logout", kw_only=True):
    pass


# (event_type, major) -> (struct, minor). Add a new major as a new Struct; never edit a released one
# except by adding optional fields (tests/test_contracts.py enforces this against the exported schemas).
CONTRACTS: dict[tuple[str, int], tuple[type[Event], int]] = {
    ("page_view", 1): (PageView, 0),
    ("product_view", 1): (ProductView, 0),
    ("search", 1): (Search, 0),
    ("add_to_cart", 1): (AddToCart, 0),
    ("remove_from_cart", 1): (RemoveFromCart, 0),
    ("begin_checkout", 1): (BeginCheckout, 0),
    ("purchase", 1): (Purchase, 0),
    ("ad_impression", 1): (AdImpression, 0),
    ("ad_click", 1): (AdClick, 0),
    ("login", 1): (Login, 0),
    ("logout", 1): (Logout, 0),
}

EVENT_TYPES: tuple[str, ...] = tuple(sorted({t for t, _ in CONTRACTS}))


def current_version(event_type: str) -> str:
    """Newest ``MAJOR.MINOR`` of an event type."""
    major = max(m for t, m in CONTRACTS if t == event_type)
    return f"{major}.{CONTRACTS[(event_type, major)][1]}"


def event_tag(struct: type[Event]) -> str:
    return msgspec.inspect.type_info(struct).tag  # type: ignore[attr-defined]
