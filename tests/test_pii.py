import json
import uuid
from datetime import UTC, datetime
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoplake.core.contracts import decode_event
from shoplake.core.contracts.decode import encode_event
from shoplake.core.contracts.model import PageView
from shoplake.core.pii import PII_FIELDS, PREFIX, Pseudonymizer, network_of, normalize

P = Pseudonymizer(b"secret-key", "k1")


def login_doc(**traits) -> bytes:
    return json.dumps(
        {
            "event_id": str(uuid.uuid4()),
            "event_type": "login",
            "schema_version": "1.0",
            "occurred_at": "2026-11-01T10:00:00Z",
            "sent_at": "2026-11-01T10:00:01Z",
            "anonymous_id": "a1",
            "user_id": "u1",
            "context": {"platform": "web", "ip": "81.2.69.142", "user_agent": "UA"},
            "traits": traits,
        }
    ).encode()


def test_declared_personal_fields_are_found_by_walking_the_contracts():
    kinds = {kind for fields in PII_FIELDS.values() for _, kind in fields}
    assert kinds == {"email", "phone", "ip", "identifier", "text", "url"}
    page_view = dict(PII_FIELDS[PageView])
    assert page_view[("anonymous_id",)] == "identifier"
    assert page_view[("context", "page_url")] == "url"
    assert page_view[("context", "user_agent")] == "text" and page_view[("title",)] == "text"


def test_apply_replaces_every_personal_field_and_records_the_key_id():
    ev = P.apply(decode_event(login_doc(email="Ana.Silva@Example.com", phone="+1 555 010 2030")))
    assert ev.pii_key_id == "k1"
    assert ev.context.ip.startswith(PREFIX) and ev.traits.email.startswith(PREFIX)
    assert ev.traits.phone.startswith(PREFIX)
    assert ev.context.user_agent == "UA"  # not personal: untouched
    encoded = json.dumps([ev.context.ip, ev.traits.email, ev.traits.phone])
    for raw in ("81.2.69", "Ana.Silva", "ana.silva", "555 010 2030", "5550102030"):
        assert raw not in encoded


def test_tokens_are_stable_normalized_and_keyed():
    assert P.token("email", "Ana@Example.com ") == P.token("email", "ana@example.com")
    assert P.token("phone", "+1 (555) 010-2030") == P.token("phone", "+15550102030")
    # the same /24 network hashes the same; the neighbouring network does not
    assert P.token("ip", "81.2.69.142") == P.token("ip", "81.2.69.7")
    assert P.token("ip", "81.2.69.142") != P.token("ip", "81.2.70.142")
    other = Pseudonymizer(b"another-key", "k2")
    assert other.token("email", "ana@example.com") != P.token("email", "ana@example.com")


def test_networks():
    assert network_of("81.2.69.142") == "81.2.69.0/24"
    assert network_of("2001:db8:abcd:12:1::7") == "2001:db8:abcd::/48"
    assert normalize("ip", "not-an-ip") == "not-an-ip"


def test_scrub_raw_handles_structured_and_broken_payloads():
    structured = P.scrub_raw(login_doc(email="bo@example.org", phone="+44 20 7946 0958"))
    assert (
        "bo@example.org" not in structured
        and "7946" not in structured
        and "81.2.69.142" not in structured
    )
    assert json.loads(structured)["anonymous_id"] == "a1"  # the rest survives for debugging
    broken = login_doc(email="bo@example.org")[:-30]
    text = P.scrub_raw(broken)
    assert "81.2.69.142" not in text and "bo@example.org" not in text
    assert "2026-11-01T10:00:00Z" in text  # timestamps are not mistaken for phones or IPv6
    for ip6 in ("2001:db8:417e:9559::96f8", "fe80::1", "2001:0db8:0000:0000:0000:ff00:0042:8329"):
        assert ip6 not in P.scrub_text(f'"ip": "{ip6}", "at": "10:00:00"')
    assert "10:00:00" in P.scrub_text('"at": "10:00:00"')


def test_scrubbing_is_linear_on_long_runs():
    import time

    blob = json.dumps(
        {"debug_blob": "x" * 40_000, "more": "a" * 40_000 + "@", "digits": "+1" + "2" * 40_000}
    )
    t = time.perf_counter()
    P.scrub_raw(blob.encode())
    assert time.perf_counter() - t < 0.5
    assert "ana@example.com" not in P.scrub_text("mail ana@example.com now")


# -- the policy: personal data anywhere a client can write --------------------------------------
EMAIL, PHONE, IP = "alice.martin@example.com", "+33 6 12 34 56 78", "81.2.69.142"


def page_view(**fields) -> bytes:
    doc = {
        "event_id": str(uuid.uuid4()),
        "event_type": "page_view",
        "schema_version": "1.0",
        "occurred_at": "2026-11-01T10:00:00Z",
        "sent_at": "2026-11-01T10:00:01Z",
        "anonymous_id": "a1",
        "context": {"platform": "web"},
    }
    for name, value in fields.items():
        if name.startswith("context_"):
            doc["context"][name.removeprefix("context_")] = value
        else:
            doc[name] = value
    return json.dumps(doc, ensure_ascii=False).encode()


PLACEMENTS = {
    "url query": {"context_page_url": f"https://shop.example/?email={EMAIL}"},
    "url query, percent-encoded": {
        "context_page_url": "https://shop.example/?e=alice.martin%40example.com"
    },
    "url query, by parameter name": {
        "context_page_url": "https://shop.example/c?name=Alice+Martin&page=2"
    },
    "url path": {"context_page_url": f"https://shop.example/account/{EMAIL}/orders"},
    "referrer": {"context_referrer": f"https://mail.example/read?from={EMAIL}&tel=0612345678"},
    "referrer, phone": {"context_referrer": "https://s.example/?q=call+%2B33+6+12+34+56+78"},
    "user agent": {"context_user_agent": f"Mozilla/5.0 (compatible; crawler; +{EMAIL})"},
    "title": {"title": f"Order for {EMAIL}"},
    "title, phone": {"title": f"Call us at {PHONE}"},
    "title, national phone": {"title": "Rappel au 06 12 34 56 78"},
    "title, card": {"title": "card 4111 1111 1111 1111"},
    "title, ip": {"title": f"from {IP}"},
    "title, non-ASCII domain": {"title": "écrire à zoë@exämple.fr"},
    "utm_source": {"context_utm_source": EMAIL},
    "utm_content": {"context_utm_content": PHONE},
    "utm_campaign": {"context_utm_campaign": f"promo-{IP}"},
    "anonymous_id": {"anonymous_id": "bob@example.com"},
    "anonymous_id, phone": {"anonymous_id": PHONE},
    "user_id": {"user_id": EMAIL},
    "session_id": {"session_id": EMAIL},
}
SECRETS = (
    EMAIL,
    "alice.martin%40example.com",
    "Alice+Martin",
    "Alice Martin",
    "bob@example.com",
    "0612345678",
    "06 12 34 56 78",
    "6 12 34 56 78",
    "4111 1111 1111 1111",
    IP,
    "zoë@exämple.fr",
    "+6+12+34+56+78",
)


@pytest.mark.parametrize("where", list(PLACEMENTS))
def test_personal_data_in_any_client_written_field_is_pseudonymized(where):
    """Guards finding 2: only traits.email/phone and context.ip used to be hashed."""
    raw = page_view(**PLACEMENTS[where])
    stored = encode_event(P.apply(decode_event(raw))).decode()
    leaked = [secret for secret in SECRETS if secret in stored]
    assert leaked == [], (where, stored)
    assert stored.count(PREFIX) >= 1  # replaced by a token, not dropped
    assert [secret for secret in SECRETS if secret in raw.decode()]  # positive control


def test_the_kafka_key_follows_the_stored_visitor_id():
    from shoplake.core.ingest import Ingestor

    result = Ingestor(P).accept(page_view(anonymous_id="bob@example.com"), datetime.now(UTC))
    assert result.key.decode().startswith(PREFIX) and b"bob@" not in result.key


def test_plain_values_are_left_alone():
    ua = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/124.0.0.0 Safari/537.36"
    url = "https://shop.example/product/123456789?utm_source=news&page=2#reviews"
    ev = P.apply(
        decode_event(
            page_view(
                context_user_agent=ua,
                context_page_url=url,
                title="Order 2026-11-01 10:00:00, 3 items",
                anonymous_id="8c0d9d9e-3f0c-4a57-9a3e-5b7f43f0e2c1",
            )
        )
    )
    assert ev.context.user_agent == ua and ev.context.page_url == url
    assert ev.title == "Order 2026-11-01 10:00:00, 3 items"
    assert ev.anonymous_id == "8c0d9d9e-3f0c-4a57-9a3e-5b7f43f0e2c1"


def test_a_client_sent_token_is_hashed_again():
    """Guards finding 3: an "h:" prefix used to skip hashing, so a client could store raw data
    or plant another person's token."""
    forged = P.token("email", "victim@example.com")
    for sent in ("h:dave@example.com", forged):
        ev = P.apply(decode_event(login_doc(email=sent)))
        assert ev.traits.email != sent and ev.traits.email.startswith(PREFIX)
    # a DLQ replay re-reads tokens this platform wrote, and keeps them
    assert (
        P.apply(decode_event(login_doc(email=forged)), trusted_tokens=True).traits.email == forged
    )


def test_the_dlq_scrubber_applies_the_same_policy_to_every_field():
    """Guards finding 5: top-level event_type leaked, phones needed a "+", percent-encoded and
    non-ASCII-domain emails were missed."""
    from shoplake.core.ingest import Ingestor, Rejected

    raw = json.dumps(
        {
            "event_type": "eve@example.com",
            "schema_version": "bob@example.com",
            "title": "call 0612345678",
            "page": "x?e=alice.martin%40example.com",
            "note": "zoë@exämple.fr",
            "phone": 33612345678,
            "nested": [[[{"referrer": f"https://s/?email={EMAIL}"}]]],
        }
    ).encode()
    rejected = Rejected(
        "unknown_event_type",
        "unknown event_type 'eve@example.com'",
        raw,
        "eve@example.com",
        None,
        "bob@example.com",
    )
    value = Ingestor(P).dlq_value(rejected, datetime.now(UTC), "collector").decode()
    for secret in (
        "eve@example.com",
        "bob@example.com",
        "0612345678",
        "alice.martin%40example",
        "zoë@exämple.fr",
        "33612345678",
        EMAIL,
    ):
        assert secret not in value, secret
    assert "eve@example.com" in raw.decode()  # positive control


def test_the_dlq_scrubber_bounds_depth_by_design():
    """Guards finding 1: ~485 levels inside a rejected event overflowed the scrubber."""
    deep = b'{"a": ' + b"[" * 485 + b'"bob@example.com"' + b"]" * 485 + b"}"
    scrubbed = P.scrub_raw(deep)
    assert "bob@example.com" not in scrubbed and "removed: nested deeper" in scrubbed
    very_deep = b"[" * 5000 + b"]" * 5000  # msgspec itself refuses: scrubbed as text
    assert P.scrub_raw(very_deep) == very_deep.decode()


@settings(max_examples=300, deadline=None)
@given(
    st.text(max_size=200),
    st.sampled_from(
        [
            EMAIL,
            "bob@example.org",
            "+44 20 7946 0958",
            "0612345678",
            "81.2.69.142",
            "4111111111111111",
        ]
    ),
)
def test_a_secret_anywhere_in_free_text_is_scrubbed(text, secret):
    cut = len(text) // 2
    mixed = f"{text[:cut]} {secret} {text[cut:]}"
    assert secret not in P.scrub_text(mixed)
    assert secret not in P.scrub_url(f"https://s.example/p?x={quote(mixed)}")


@pytest.mark.parametrize("kind", ["text", "url", "identifier"])
def test_a_repeated_value_is_scrubbed_every_time_short_or_long(kind):
    """Guards the cache of scrubbed values: a value seen before is scrubbed again, never passed
    through raw, whether it is short enough to be cached or too long for the cache."""
    p = Pseudonymizer(b"secret-key", "k1")
    short = f"https://s.example/?q={EMAIL}" if kind == "url" else EMAIL
    long = short + "x" * (Pseudonymizer.SCRUBBED_MAX_CHARS + 1) if kind != "identifier" else short
    for value in (short, long):
        first = p.pseudonymize(kind, value)
        assert EMAIL not in first
        assert p.pseudonymize(kind, value) == first
    assert p.pseudonymize(kind, "plain words") == "plain words"


@settings(max_examples=200, deadline=None)
@given(
    st.text(max_size=100),
    st.sampled_from([EMAIL, "+33 6 15 18 47 46", "+04699175392", "00000000000", "81.2.69.142"]),
)
def test_a_percent_encoded_secret_in_free_text_or_an_unparseable_body_is_scrubbed(text, secret):
    """Found by the long fuzz run: a phone percent-encoded inside a URL inside a body that does
    not parse went to the DLQ raw (``%2B04699175392``: the digits follow a letter)."""
    encoded = quote(secret, safe="")
    mixed = f"{text} ref=https://s.example/p?q={encoded}&page=2 {text}"
    assert secret not in P.scrub_text(mixed) and encoded not in P.scrub_text(mixed)
    body = ('{"batch": [{"referrer": "' + mixed.replace("\\", "").replace('"', "") + '"}]').encode()
    scrubbed = P.scrub_raw(body + b", \xff}")  # broken JSON: scrubbed as text
    assert secret not in scrubbed and encoded not in scrubbed


def test_uuids_are_kept_whole_their_digit_groups_are_not_phones():
    """Found by the long fuzz run: the DLQ copy of an event id 00000000-0000-4000-8000-... had a
    phone token in its middle. Ids in text and URL paths stay as they are; a phone beside one
    is still scrubbed."""
    event_id = "00000000-0000-4000-8000-00000000000e"
    assert P.scrub_text(f"{event_id} call +33 6 15 18 47 46") == (
        f"{event_id} call {P.token('phone', '+33 6 15 18 47 46')}"
    )
    url = "https://s.example/o/123e4567-e89b-42d3-a456-426614174000?page=2"
    assert P.scrub_url(url) == url
    assert json.loads(P.scrub_raw(json.dumps({"event_id": event_id}).encode()))["event_id"] == (
        event_id
    )


def test_a_body_that_does_not_parse_is_scrubbed_between_its_json_escapes():
    """Found by the long fuzz run: a phone glued to an escape (``a\\u000004699175392``) in a body
    that does not parse went to the DLQ raw. And invalid UTF-8 alone no longer stops a body from
    being scrubbed field by field."""
    for escape in ("\\u0000", "\\n", '\\"'):
        broken = f'{{"anonymous_id": "a{escape}04699175392", "x": [}}'.encode()
        scrubbed = P.scrub_raw(broken)
        assert "04699175392" not in scrubbed and escape in scrubbed
    bad_utf8 = b'{"t": "\xff\xfe", "referrer": "https://s.example/?q=04699175392"}'
    assert "04699175392" not in P.scrub_raw(bad_utf8)
    assert json.loads(P.scrub_raw(bad_utf8))["t"] == "\ufffd\ufffd"
