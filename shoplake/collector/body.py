"""A request body -> its raw events, whatever a client (or an attacker) sends.

Accepted shapes: a JSON array of events, an envelope ``{"batch": [...], ...}`` (the Segment and
RudderStack batch shape) or one event object. The split does not decode the events; each gets
its own verdict from the contracts. A body that cannot be split at all raises
:class:`BodyError` with a reason.

Depth is bounded by design: msgspec splits well-formed bodies, and a body it cannot split for
depth is walked by a flat tokenizer (no recursion) that marks each event deeper than MAX_DEPTH.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field

import msgspec

MAX_DEPTH = 64  # nesting levels of one event; a contract needs 4
ENVELOPE_KEY = b"batch"


class BodyError(ValueError):
    """The body cannot be split into events. ``reason`` is a DLQ reason."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass
class Split:
    events: list[bytes]
    single: bool  # one bare event object, not a batch
    too_deep: set[int] = field(default_factory=set)  # indices of events nested past MAX_DEPTH


class _Envelope(msgspec.Struct):
    batch: list[msgspec.Raw] | None = None


_envelope = msgspec.json.Decoder(_Envelope)
_array = msgspec.json.Decoder(list[msgspec.Raw])
_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{},:]')
_WS = b" \t\r\n"


def split_body(body: bytes) -> Split:
    start = body.lstrip(_WS)[:1]
    if start not in (b"[", b"{"):
        raise BodyError("malformed_json", "the body is not a JSON array or object")
    try:
        if start == b"[":
            return Split([bytes(r) for r in _array.decode(body)], single=False)
        if body.count(b'"' + ENVELOPE_KEY + b'"') > 1:
            return _scan(body)  # the key may repeat: look at the top level exactly
        envelope = _envelope.decode(body)
    except RecursionError:
        return _scan(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise BodyError("malformed_json", f"the body is not valid JSON: {exc}") from None
    if envelope.batch is not None:
        return Split([bytes(r) for r in envelope.batch], single=False)
    return Split([body], single=True)


def _scan(body: bytes) -> Split:
    """Split by tokens, without recursion: the top-level array's elements, or the envelope's
    ``batch`` elements, each with its depth; the envelope's keys (a repeated key is refused:
    which copy a reader takes is ambiguous)."""
    stack: list[bytes] = []
    keys: list[bytes] = []
    events: list[bytes] = []
    too_deep: set[int] = set()
    level: int | None = None  # the stack depth whose direct children are the events
    start = 0  # where the current event starts
    deepest = 0  # nesting inside the current event
    overall = 0  # nesting of the whole body
    key_next = False  # the next string at depth 1 of an envelope is a key
    last_key: bytes | None = None
    for m in _TOKENS.finditer(body):
        tok, pos = m.group(), m.start()
        if tok[:1] == b'"':
            if key_next and len(stack) == 1:
                last_key = tok[1:-1]
                keys.append(last_key)
                key_next = False
        elif tok in (b"[", b"{"):
            stack.append(tok)
            d = len(stack)
            overall = max(overall, d)
            if d == 1 and tok == b"[":
                level, start = 1, pos + 1
            elif d == 1:
                key_next = True
            elif d == 2 and tok == b"[" and stack[0] == b"{" and last_key == ENVELOPE_KEY:
                level, start, deepest = 2, pos + 1, 0
            if level is not None and d > level:
                deepest = max(deepest, d - level)
        elif tok in (b"]", b"}"):
            if not stack or _CLOSES[stack[-1]] != tok:
                raise BodyError("malformed_json", "the body's brackets do not match")
            if level is not None and len(stack) == level:
                _take(body, start, pos, events, too_deep, deepest, closing=True)
                level = None
            stack.pop()
        elif tok == b",":
            if level is not None and len(stack) == level:
                _take(body, start, pos, events, too_deep, deepest, closing=False)
                start, deepest = pos + 1, 0
            elif len(stack) == 1 and stack[0] == b"{":
                key_next = True
    if stack:
        raise BodyError("malformed_json", "the body ends inside an array or object")
    if len(keys) != len(set(keys)):
        dupes = sorted({k.decode(errors="replace") for k in keys if keys.count(k) > 1})
        raise BodyError("duplicate_key", f"the body repeats the key(s) {dupes}: send each once")
    if body.lstrip(_WS)[:1] == b"{" and ENVELOPE_KEY not in keys:
        return Split([body], single=True, too_deep={0} if overall > MAX_DEPTH else set())
    return Split(events, single=False, too_deep=too_deep)


_CLOSES = {b"[": b"]", b"{": b"}"}


def _take(
    body: bytes,
    start: int,
    end: int,
    events: list[bytes],
    too_deep: set[int],
    deepest: int,
    closing: bool,
) -> None:
    """The element between ``start`` and ``end``; nothing before a closing bracket is an empty
    array (or a trailing comma, which msgspec refuses before this runs)."""
    raw = body[start:end].strip(_WS)
    if not raw:
        if closing:
            return
        raise BodyError("malformed_json", "the body has an empty element")
    if deepest > MAX_DEPTH:
        too_deep.add(len(events))
    events.append(raw)


def gunzip(body: bytes, limit: int) -> bytes:
    """A gzip body, decompressed up to ``limit`` bytes. Raises BodyError when it is not gzip and
    OverflowError when it inflates past the limit (a zip bomb is refused, not inflated)."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise BodyError("malformed_gzip", f"the body is not valid gzip: {exc}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise OverflowError(f"the body inflates past {limit} bytes")
    if not inflater.eof:
        raise BodyError("malformed_gzip", "the gzip body is truncated")
    return out
