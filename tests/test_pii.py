import json
import uuid

from shoplake.contracts import decode_event
from shoplake.pii import PII_FIELDS, PREFIX, Pseudonymizer, network_of, normalize

P = Pseudonymizer(b"secret-key", "k1")


def login_doc(**traits) -> bytes:
    return json.dumps({
        "event_id": str(uuid.uuid4()), "event_type": "login", "schema_version": "1.0",
        "occurred_at": "2026-11-01T10:00:00Z", "sent_at": "2026-11-01T10:00:01Z",
        "anonymous_id": "a1", "user_id": "u1",
        "context": {"platform": "web", "ip": "81.2.69.142", "user_agent": "UA"},
        "traits": traits,
    }).encode()  # fmt: skip


def test_declared_personal_fields_are_found_by_walking_the_contracts():
    kinds = {kind for fields in PII_FIELDS.values() for _, kind in fields}
    assert kinds == {"email", "phone", "ip"}


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
    assert P.token("email", P.token("email", "a@b.co")) == P.token("email", "a@b.co")  # idempotent


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
