"""Decode raw JSON into a contract Struct, or say exactly why not.

Two steps: a cheap header decode picks the contract by ``(event_type, major)``; the contract's
own decoder then validates everything. Reasons are a small fixed vocabulary so that DLQ and
quarantine counts can be grouped by them.
"""

from __future__ import annotations

import msgspec

from shoplake.core.contracts.model import CONTRACTS, Event

# Reasons an event is rejected. Stable strings: they are metric labels and DLQ fields.
MALFORMED_JSON = "malformed_json"
NOT_AN_OBJECT = "not_an_object"
UNKNOWN_EVENT_TYPE = "unknown_event_type"
UNSUPPORTED_VERSION = "unsupported_schema_version"
MISSING_FIELD = "missing_field"
WRONG_TYPE = "wrong_type"
INVALID_VALUE = "invalid_value"
EVENT_TOO_LARGE = "event_too_large"
INVALID_ENCODING = "invalid_encoding"  # a string that is not UTF-8
TOO_DEEP = "too_deep"  # nested past what any contract allows
DUPLICATE_KEY = "duplicate_key"  # a body that repeats a key (which copy counts is ambiguous)
MALFORMED_GZIP = "malformed_gzip"
REASONS = (
    MALFORMED_JSON,
    NOT_AN_OBJECT,
    UNKNOWN_EVENT_TYPE,
    UNSUPPORTED_VERSION,
    MISSING_FIELD,
    WRONG_TYPE,
    INVALID_VALUE,
    EVENT_TOO_LARGE,
    INVALID_ENCODING,
    TOO_DEEP,
    DUPLICATE_KEY,
    MALFORMED_GZIP,
)


class ContractViolation(ValueError):
    """An event that does not satisfy its contract. ``reason`` is one of :data:`REASONS`."""

    def __init__(
        self, reason: str, message: str, event_type: str | None = None, version: str | None = None
    ):
        super().__init__(message)
        self.reason = reason
        self.event_type = event_type
        self.version = version


class _Header(msgspec.Struct):
    event_type: str | None = None
    schema_version: str | None = None


_header = msgspec.json.Decoder(_Header)
_decoders = {key: msgspec.json.Decoder(struct) for key, (struct, _) in CONTRACTS.items()}
_majors: dict[str, set[int]] = {}
for _t, _m in CONTRACTS:
    _majors.setdefault(_t, set()).add(_m)
_encoder = msgspec.json.Encoder()


def _classify(exc: msgspec.ValidationError) -> str:
    text = str(exc)
    if text.startswith("Object missing required field"):
        return MISSING_FIELD
    if text.startswith("Expected") and ", got `" in text:
        return (
            WRONG_TYPE  # "Expected `int`, got `str`"; "Expected `str` of length <= 128" is a value
        )
    return INVALID_VALUE


def decode_event(raw: bytes | memoryview | str) -> Event:
    """Validate ``raw`` against its contract. Raises :class:`ContractViolation`, whatever the
    input: bytes that are not UTF-8 and nesting msgspec will not follow are violations too."""
    try:
        return _decode(raw)
    except UnicodeDecodeError as exc:
        message = f"a string is not valid UTF-8 ({exc.reason} at byte {exc.start})"
        raise ContractViolation(INVALID_ENCODING, message) from None
    except RecursionError:
        raise ContractViolation(TOO_DEEP, "the event is nested too deeply") from None


def _decode(raw: bytes | memoryview | str) -> Event:
    try:
        header = _header.decode(raw)
    except msgspec.ValidationError as exc:
        if str(exc).startswith("Expected `object`"):
            raise ContractViolation(NOT_AN_OBJECT, "an event must be a JSON object") from None
        raise ContractViolation(_classify(exc), str(exc)) from None
    except msgspec.DecodeError as exc:
        raise ContractViolation(MALFORMED_JSON, f"malformed JSON: {exc}") from None
    etype, version = header.event_type, header.schema_version
    if etype is None:
        raise ContractViolation(MISSING_FIELD, "Object missing required field `event_type`")
    majors = _majors.get(etype)
    if majors is None:
        raise ContractViolation(UNKNOWN_EVENT_TYPE, f"unknown event_type {etype!r}", etype, version)
    if version is None:
        raise ContractViolation(
            MISSING_FIELD, "Object missing required field `schema_version`", etype
        )
    try:
        major = int(version.split(".", 1)[0])
    except ValueError:
        raise ContractViolation(
            INVALID_VALUE, f"schema_version {version!r} is not MAJOR.MINOR", etype, version
        ) from None
    if major not in majors:
        raise ContractViolation(
            UNSUPPORTED_VERSION,
            f"{etype} has no contract for major version {major} (known: {sorted(majors)})",
            etype,
            version,
        )
    try:
        return _decoders[(etype, major)].decode(raw)
    except msgspec.ValidationError as exc:
        raise ContractViolation(_classify(exc), str(exc), etype, version) from None
    except msgspec.DecodeError as exc:  # pragma: no cover - the header decode already parsed it
        raise ContractViolation(MALFORMED_JSON, f"malformed JSON: {exc}", etype, version) from None


def encode_event(event: Event) -> bytes:
    return _encoder.encode(event)
