"""Property-based fuzzing of the collector over real HTTP against a real broker.

Hypothesis generates requests: batches, envelopes and single events, valid or broken in every
way the contracts name (missing fields, wrong types, invalid UTF-8, deep nesting, ints past
int64, control characters in ids, repeated keys, gzip, garbage bytes), with emails, phone
numbers and IPs planted in every field a client writes. A ledger keeps what each answer
promised; :func:`verify` then reads both topics and checks the promises:

- no answer is a 5xx;
- every event a 2xx accepted is in ``shop.events`` exactly once;
- every rejected event is in the DLQ (one record per rejection);
- no generated email, phone number or IP appears raw (or percent-encoded) in either topic.

Used by tests/test_collector_fuzz.py (a short run in CI) and bench/fuzz_collector.py (the long
run).
"""

from __future__ import annotations

import gzip
import json
import re
import uuid
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import quote

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.kafka_util import consume_all

KEYS = {"good": "test-key", "other": "second-key"}
_NOT_PERSONAL = re.compile(
    rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|h:[0-9a-f]{64}"
    rb"|\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})?"
)
EVENT_TYPES = ("page_view", "product_view", "search", "login", "purchase")

emails = st.builds(
    lambda user, domain, tld: f"{user}@{domain}.{tld}",
    st.from_regex(r"[a-z][a-z0-9._]{2,12}[a-z]", fullmatch=True),
    st.from_regex(r"[a-z]{3,10}", fullmatch=True),
    st.sampled_from(["com", "org", "fr", "io"]),
)
phones = st.builds(
    lambda digits, style: style.format(*digits),
    # No group of zeros: "00000000000" is "in" any long number (-100000000000000), a false alarm
    st.lists(st.from_regex(r"[1-9][0-9]", fullmatch=True), min_size=5, max_size=5),
    st.sampled_from(["+33 6 {1} {2} {3} {4}", "0{0}{1}{2}{3}{4}", "+1 ({0}{1}) {2}{3}-{4}{0}"]),
)
ips = st.builds(
    lambda a, b, c, d: f"{a}.{b}.{c}.{d}",
    st.integers(11, 223),
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(1, 254),
)
secrets = st.one_of(emails, phones, ips)
filler = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)


@dataclass
class Request:
    body: bytes
    headers: dict[str, str]
    secrets: list[str]


@dataclass
class Ledger:
    """What the collector's answers promised."""

    accepted: Counter = field(default_factory=Counter)  # event_id -> times accepted
    rejected: int = 0  # DLQ records owed
    rejected_ids: set[str] = field(default_factory=set)
    secrets: set[str] = field(default_factory=set)
    statuses: Counter = field(default_factory=Counter)
    requests: int = 0


def _base(draw, etype: str) -> dict:
    doc = {
        "event_id": str(uuid.UUID(int=draw(st.integers(0, 2**128 - 1)), version=4)),
        "event_type": etype,
        "schema_version": "1.0",
        "occurred_at": "2026-11-01T10:00:00Z",
        "sent_at": "2026-11-01T10:00:01Z",
        "anonymous_id": f"anon-{draw(st.integers(0, 10**6))}",
        "context": {"platform": draw(st.sampled_from(["web", "ios", "android"]))},
    }
    if etype == "product_view":
        doc |= {"product_id": "p-1", "price": 10.0}
    elif etype == "search":
        doc |= {"query": "shoes", "results_count": 3}
    elif etype == "purchase":
        doc |= {
            "order_id": f"o-{draw(st.integers(0, 10**6))}",
            "total": 10.0,
            "currency": "EUR",
            "payment_method": "card",
            "items": [{"product_id": "p-1", "quantity": 1, "unit_price": 10.0}],
        }
    return doc


PLACES = (
    "title",
    "page_url",
    "referrer",
    "user_agent",
    "utm_source",
    "utm_term",
    "anonymous_id",
    "user_id",
    "session_id",
    "email",
    "phone",
    "ip",
    "unknown_field",
    "query",
)


def _plant(draw, doc: dict, secret: str) -> None:
    """Put ``secret`` somewhere a client can write, alone or inside text."""
    place = draw(st.sampled_from(PLACES))
    ctx = doc["context"]
    text = f"{draw(filler)} {secret} {draw(filler)}"
    if place == "title":
        doc["title"] = text
    elif place in ("page_url", "referrer"):
        name = draw(st.sampled_from(["email", "q", "ref", "x"]))
        value = secret if draw(st.booleans()) else quote(secret, safe="")
        ctx[place] = f"https://shop.example/p/{draw(st.integers(1, 10**6))}?{name}={value}&page=2"
    elif place in ("user_agent", "utm_source", "utm_term"):
        ctx[place] = text
    elif place in ("anonymous_id", "user_id", "session_id"):
        doc[place] = secret
    elif place in ("email", "phone"):
        doc.setdefault("traits", {})[place] = secret
    elif place == "ip":
        ctx["ip"] = secret
    elif place == "query" and doc["event_type"] == "search":
        doc["query"] = text
    else:
        doc[f"note_{draw(st.integers(0, 9))}"] = text  # an unknown field


def _break(draw, doc: dict) -> bytes | None:
    """Make ``doc`` invalid in one of the ways the contracts name; None: leave it valid."""
    how = draw(
        st.sampled_from(
            ["valid"] * 6
            + [
                "missing",
                "wrong_type",
                "utf8",
                "deep",
                "bigint",
                "control",
                "unknown_type",
                "oversize",
            ]
        )
    )
    if how == "missing":
        del doc[draw(st.sampled_from(["anonymous_id", "occurred_at", "context", "event_id"]))]
    elif how == "wrong_type":
        doc["anonymous_id"] = draw(st.integers())
    elif how == "bigint":
        doc |= {
            "event_type": "search",
            "query": "q",
            "results_count": 2**64 + draw(st.integers(0, 9)),
        }
    elif how == "control":
        doc["anonymous_id"] = "a\u0000" + doc["anonymous_id"]
    elif how == "unknown_type":
        doc["event_type"] = draw(st.one_of(st.text(max_size=20), emails))
    elif how == "oversize":
        doc["title"] = "x" * 40_000
    raw = json.dumps(doc, ensure_ascii=False).encode()
    if how == "utf8":
        raw = raw.replace(b'"schema_version"', b'"t":"\xff\xfe","schema_version"', 1)
    elif how == "deep":
        n = draw(st.integers(100, 1500))
        raw = raw[:-1] + b',"deep":' + b"[" * n + b"]" * n + b"}"
    return raw


@st.composite
def requests(draw) -> Request:
    planted: list[str] = []
    raws = []
    for _ in range(draw(st.integers(1, 8))):
        doc = _base(draw, draw(st.sampled_from(EVENT_TYPES)))
        for _ in range(draw(st.integers(0, 2))):
            secret = draw(secrets)
            planted.append(secret)
            _plant(draw, doc, secret)
        raws.append(_break(draw, doc))
    shape = draw(st.sampled_from(["array"] * 4 + ["envelope", "single", "garbage", "repeated"]))
    if shape == "array":
        body = b"[" + b",".join(raws) + b"]"
    elif shape == "envelope":
        body = b'{"sentAt": "2026-11-01T10:00:01Z", "batch": [' + b",".join(raws) + b"]}"
    elif shape == "single":
        body = raws[0]
    elif shape == "repeated":
        body = b'{"batch": [' + raws[0] + b'], "batch": [' + b",".join(raws) + b"]}"
    else:
        body = draw(st.binary(max_size=300))
    headers = {"X-Write-Key": KEYS[draw(st.sampled_from(["good"] * 9 + ["other"]))]}
    if draw(st.integers(0, 9)) == 0:
        headers["X-Write-Key"] = draw(st.sampled_from(["", "wrong", "h:abc"]))
    if draw(st.integers(0, 4)) == 0:
        body, headers["Content-Encoding"] = gzip.compress(body), "gzip"
    return Request(body, headers, planted)


def send(client: httpx.Client, url: str, req: Request, ledger: Ledger) -> int:
    resp = client.post(f"{url}/v1/events", content=req.body, headers=req.headers)
    ledger.requests += 1
    ledger.statuses[resp.status_code] += 1
    ledger.secrets.update(req.secrets)
    if resp.status_code in (200, 207, 400, 413) and resp.headers.get("content-type", "").startswith(
        "application/json"
    ):
        for result in resp.json().get("results", []):
            if result["status"] == "accepted":
                ledger.accepted[result["event_id"]] += 1
            else:
                ledger.rejected += 1
                if result.get("event_id"):
                    ledger.rejected_ids.add(result["event_id"])
    return resp.status_code


def fuzz(url: str, n: int, ledger: Ledger, seed: int | None = None) -> None:
    """``n`` generated requests; fails at once (and shrinks) on any 5xx."""
    client = httpx.Client(timeout=60)

    @settings(
        max_examples=n,
        deadline=None,
        database=None,
        derandomize=seed is not None,
        suppress_health_check=list(HealthCheck),
    )
    @given(requests())
    def one(req: Request) -> None:
        status = send(client, url, req, ledger)
        assert status < 500, (status, req.body[:500], req.headers)

    try:
        one()
    finally:
        client.close()


def verify(bootstrap: str, ledger: Ledger) -> list[str]:
    """The promises the answers made, checked against both topics. Empty: all kept."""
    problems = []
    events = consume_all(bootstrap, "shop.events", timeout=120)
    dlq = consume_all(bootstrap, "shop.events.dlq", timeout=120)
    landed = Counter(json.loads(m.value())["event_id"] for m in events)
    if landed != ledger.accepted:
        extra, missing = landed - ledger.accepted, ledger.accepted - landed
        problems.append(
            f"shop.events differs from what was accepted: extra {dict(extra)}, "
            f"missing {dict(missing)}"
        )
    if len(dlq) != ledger.rejected:
        problems.append(f"{len(dlq)} DLQ records for {ledger.rejected} rejections")
    dlq_ids = {json.loads(m.value()).get("event_id") for m in dlq}
    if missing_ids := ledger.rejected_ids - dlq_ids:
        problems.append(f"rejected events missing from the DLQ: {sorted(missing_ids)[:5]}")
    blob = b"\n".join([m.value() for m in events + dlq] + [m.key() or b"" for m in events])
    # Ids, tokens and timestamps are digits too: a generated phone of zeros is "in" an event id.
    blob = _NOT_PERSONAL.sub(b"", blob)
    leaked = sorted(
        s for s in ledger.secrets if s.encode() in blob or quote(s, safe="").encode() in blob
    )
    for secret in leaked[:10]:
        raw = secret.encode() if secret.encode() in blob else quote(secret, safe="").encode()
        at = blob.find(raw)
        context = blob[max(0, at - 300) : at + 100].decode(errors="replace")
        problems.append(f"raw personal value {secret!r} in the topics, in: {context}")
    return problems
