import copy
import json
import uuid

import pytest

from shoplake.core.contracts import EVENT_TYPES, ContractViolation, decode_event, encode_event
from shoplake.core.contracts.decode import (
    MALFORMED_JSON,
    MISSING_FIELD,
    NOT_AN_OBJECT,
    UNKNOWN_EVENT_TYPE,
    UNSUPPORTED_VERSION,
    WRONG_TYPE,
)
from shoplake.core.contracts.model import CONTRACTS, Purchase
from shoplake.core.contracts.schemas import (
    SCHEMA_DIR,
    export,
    generate,
    incompatibilities,
    render,
    schema_path,
)


def base(event_type: str, **fields) -> dict:
    doc = {
        "event_id": str(uuid.uuid4()),
        "event_type": event_type,
        "schema_version": "1.0",
        "occurred_at": "2026-11-01T10:00:00.000Z",
        "sent_at": "2026-11-01T10:00:00.100Z",
        "anonymous_id": "anon-1",
        "session_id": "s-1",
        "context": {"platform": "web", "device_type": "desktop", "ip": "1.2.3.4"},
    }
    doc.update(fields)
    return doc


PURCHASE = base(
    "purchase",
    order_id="o-1",
    items=[{"product_id": "p1", "quantity": 2, "unit_price": 10.5, "category": "books.fiction"}],
    total=21.0,
    currency="USD",
    payment_method="card",
)


def test_every_event_type_has_a_contract_and_a_schema_file():
    """EVENT_TYPES is the one list: every contract's type is in it, every type has an exported
    JSON Schema, and no schema file is left for a type that is gone (run 'make schemas')."""
    assert len(EVENT_TYPES) >= 11 and {"page_view", "purchase", "ad_click"} <= set(EVENT_TYPES)
    assert set(EVENT_TYPES) == {t for t, _ in CONTRACTS}
    for event_type, major in CONTRACTS:
        assert schema_path(event_type, major).exists()
    exported = {p.name.split(".v")[0] for p in SCHEMA_DIR.glob("*.json")}
    assert exported == set(EVENT_TYPES)


def test_purchase_decodes_to_typed_struct_and_round_trips():
    ev = decode_event(json.dumps(PURCHASE))
    assert isinstance(ev, Purchase)
    assert ev.items[0].quantity == 2 and ev.occurred_at.tzinfo is not None
    again = decode_event(encode_event(ev))
    assert again == ev


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda d: d.pop("order_id"), MISSING_FIELD),
        (lambda d: d.pop("anonymous_id"), MISSING_FIELD),
        (lambda d: d.update(total="21.0"), WRONG_TYPE),
        (lambda d: d["items"][0].update(quantity="two"), WRONG_TYPE),
        (lambda d: d.update(event_type="teleport"), UNKNOWN_EVENT_TYPE),
        (lambda d: d.update(schema_version="9.0"), UNSUPPORTED_VERSION),
        (lambda d: d.update(schema_version=1), WRONG_TYPE),
    ],
)
def test_violations_carry_a_reason(mutate, reason):
    doc = copy.deepcopy(PURCHASE)
    mutate(doc)
    with pytest.raises(ContractViolation) as info:
        decode_event(json.dumps(doc))
    assert info.value.reason == reason


def test_invalid_values_and_shapes():
    for bad in (b'{"event_type": "purchase"', b"[1, 2]"):
        with pytest.raises(ContractViolation) as info:
            decode_event(bad)
        assert info.value.reason in (MALFORMED_JSON, NOT_AN_OBJECT)
    doc = copy.deepcopy(PURCHASE)
    doc["occurred_at"] = "2026-11-01T10:00:00"  # no timezone
    with pytest.raises(ContractViolation, match="timezone"):
        decode_event(json.dumps(doc))
    doc = copy.deepcopy(PURCHASE)
    doc["items"] = []
    with pytest.raises(ContractViolation):
        decode_event(json.dumps(doc))


def test_newer_minor_version_with_unknown_fields_is_accepted():
    doc = base("page_view", page_type="home", schema_version="1.7", new_optional_thing=3)
    assert decode_event(json.dumps(doc)).schema_version == "1.7"


def test_checked_in_schemas_are_current():
    stale = [
        str(schema_path(t, m))
        for t, m in CONTRACTS
        if schema_path(t, m).read_text() != render(generate(t, m))
    ]
    assert not stale, f"stale JSON Schemas, run 'make schemas': {stale}"


def test_checked_in_schemas_are_compatible_with_the_code():
    for t, m in CONTRACTS:
        old = json.loads(schema_path(t, m).read_text())
        assert incompatibilities(old, generate(t, m)) == [], f"{t} v{m}: bump the major version"


def test_personal_fields_are_marked_in_the_schema():
    text = schema_path("login", 1).read_text()
    for kind in ("email", "phone", "ip"):
        assert f'"x-pii": "{kind}"' in text


# -- compatibility rules, on the real purchase schema with controlled edits -----------------------
@pytest.fixture
def purchase_schema():
    return generate("purchase", 1)


def _props(schema):
    return schema["$defs"]["Purchase"]["properties"]


def test_adding_an_optional_field_is_compatible(purchase_schema):
    new = copy.deepcopy(purchase_schema)
    _props(new)["coupon"] = {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None}
    new["$defs"]["Context"]["properties"]["screen"] = {"type": "string"}
    assert incompatibilities(purchase_schema, new) == []


def test_removing_a_field_is_not(purchase_schema):
    new = copy.deepcopy(purchase_schema)
    del _props(new)["payment_method"]
    assert incompatibilities(purchase_schema, new) == ["payment_method: field removed"]


def test_changing_a_type_is_not(purchase_schema):
    new = copy.deepcopy(purchase_schema)
    _props(new)["total"] = {"type": "string"}
    assert incompatibilities(purchase_schema, new) == ["total: type changed"]


def test_making_a_field_required_is_not(purchase_schema):
    new = copy.deepcopy(purchase_schema)
    new["$defs"]["Purchase"]["required"].append("user_id")
    assert incompatibilities(purchase_schema, new) == ["user_id: field became required"]


def test_relaxing_a_length_limit_is_compatible_but_tightening_is_not(purchase_schema):
    relaxed = copy.deepcopy(purchase_schema)
    relaxed["$defs"]["Context"]["properties"]["ip"]["anyOf"][0]["maxLength"] = 200
    assert incompatibilities(purchase_schema, relaxed) == []
    tightened = copy.deepcopy(purchase_schema)
    tightened["$defs"]["Context"]["properties"]["ip"]["anyOf"][0]["maxLength"] = 10
    assert incompatibilities(purchase_schema, tightened) == ["context.ip: length limit tightened"]


def test_pseudonymized_events_still_satisfy_their_contract():
    from shoplake.core.contracts import encode_event
    from shoplake.core.pii import Pseudonymizer

    doc = base("login", traits={"email": "a@b.co", "phone": "+1 555 010 2030"})
    pseudo = Pseudonymizer(b"k", "k1").apply(decode_event(json.dumps(doc)))
    assert decode_event(encode_event(pseudo)).context.ip.startswith("h:")


def test_nested_changes_are_seen(purchase_schema):
    new = copy.deepcopy(purchase_schema)
    del new["$defs"]["Context"]["properties"]["ip"]
    new["$defs"]["Traits"]["properties"]["email"] = {"type": "integer"}
    assert sorted(incompatibilities(purchase_schema, new)) == [
        "context.ip: field removed",
        "traits.email: type changed",
    ]


def test_export_refuses_an_incompatible_change(tmp_path, purchase_schema):
    export(tmp_path)
    path = schema_path("purchase", 1, tmp_path)
    doctored = copy.deepcopy(purchase_schema)
    _props(doctored)["legacy_field"] = {"type": "string"}  # the code no longer has it
    path.write_text(render(doctored))
    checked_in = schema_path("purchase", 1).read_bytes()
    with pytest.raises(ValueError, match="new major version"):
        export(tmp_path)
    assert len(list(tmp_path.glob("*.json"))) == len(CONTRACTS)
    assert path.read_text() == render(doctored)  # the refused export left the old file as it was
    assert schema_path("purchase", 1).read_bytes() == checked_in  # and the repo's schemas alone
