"""Fault injection: every injected fault is labelled, so tests and reports can count them exactly.

Rejected by the collector (-> DLQ): malformed_json, oversize, missing_field, wrong_type.
Accepted, for later layers to handle: duplicate, late, future, bot_burst, traffic_spike.
revenue_drop suppresses purchases in one hour; the report says how many.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, fields

import msgspec

from shoplake.simulator.traffic import SimEvent, iso

REJECTED_FAULTS = ("malformed_json", "oversize", "missing_field", "wrong_type")
ACCEPTED_FAULTS = ("duplicate", "late", "future", "bot_burst", "traffic_spike")
# What the collector's DLQ reason will be for each rejected fault.
EXPECTED_REASON = {
    "malformed_json": "malformed_json",
    "oversize": "event_too_large",
    "missing_field": "missing_field",
    "wrong_type": "wrong_type",
}


@dataclass(frozen=True)
class FaultRates:
    """Per-event probabilities (bot_burst: per session; spike and drop: on/off per day)."""

    malformed_json: float = 0.001
    oversize: float = 0.0005
    missing_field: float = 0.001
    wrong_type: float = 0.001
    duplicate: float = 0.004
    late: float = 0.004
    future: float = 0.0005
    bot_burst: float = 0.002
    traffic_spike: float = 3.0  # extra traffic in one 10-minute window a day, x normal (0: off)
    revenue_drop: float = 0.2  # purchase probability factor in one hour a day (1: off)

    @classmethod
    def none(cls) -> FaultRates:
        return cls(**{f.name: 0.0 for f in fields(cls)} | {"revenue_drop": 1.0})

    @classmethod
    def parse(cls, spec: str) -> FaultRates:
        """'default', 'none', or 'name=value,name=value' over the defaults."""
        if spec in ("", "default"):
            return cls()
        if spec == "none":
            return cls.none()
        values = {}
        names = {f.name for f in fields(cls)}
        for part in spec.split(","):
            name, _, value = part.partition("=")
            if name.strip() not in names:
                raise ValueError(f"unknown fault {name!r}; known: {', '.join(sorted(names))}")
            values[name.strip()] = float(value)
        return cls(**values)


@dataclass(slots=True)
class Record:
    """One payload as it will be sent, in receive-time order."""

    received: float
    payload: bytes
    fault: str | None
    event_type: str | None
    valid: bool
    alone: bool = False  # must be sent in its own request (malformed JSON would spoil a batch)


_encode = msgspec.json.Encoder().encode


def inject(rng: random.Random, events: list[SimEvent], rates: FaultRates) -> list[Record]:
    out: list[Record] = []
    for ev in events:
        doc, etype = ev.doc, ev.doc["event_type"]
        r = rng.random()
        # Invalid faults never replace a purchase: the order database must agree with the events.
        if etype != "purchase" and ev.fault is None:
            if r < rates.malformed_json:
                raw = _encode(doc)
                out.append(
                    Record(
                        ev.received,
                        raw[: rng.randrange(8, len(raw) - 4)],
                        "malformed_json",
                        etype,
                        False,
                        True,
                    )
                )
                continue
            r -= rates.malformed_json
            if r < rates.oversize:
                big = dict(doc, debug_blob="x" * rng.randint(33_000, 40_000))
                out.append(Record(ev.received, _encode(big), "oversize", etype, False))
                continue
            r -= rates.oversize
            if r < rates.missing_field:
                bad = dict(doc)
                del bad[rng.choice(("anonymous_id", "occurred_at", "context"))]
                out.append(Record(ev.received, _encode(bad), "missing_field", etype, False))
                continue
            r -= rates.missing_field
            if r < rates.wrong_type:
                bad = dict(doc, anonymous_id=rng.randrange(10**9))
                out.append(Record(ev.received, _encode(bad), "wrong_type", etype, False))
                continue
            r -= rates.wrong_type
        else:
            r -= rates.malformed_json + rates.oversize + rates.missing_field + rates.wrong_type
        if ev.fault is None and r < rates.late:
            delay = rng.uniform(3600, 48 * 3600)
            received = ev.received + delay
            late = dict(doc, sent_at=iso(received - 0.05), received_at=iso(received))
            out.append(Record(received, _encode(late), "late", etype, True))
            continue
        r -= rates.late
        if ev.fault is None and r < rates.future:
            fut = dict(doc, occurred_at=iso(ev.received + rng.uniform(2 * 3600, 72 * 3600)))
            out.append(Record(ev.received, _encode(fut), "future", etype, True))
            continue
        r -= rates.future
        out.append(Record(ev.received, _encode(doc), ev.fault, etype, True))
        if r < rates.duplicate:
            again = ev.received + rng.uniform(0.5, 120)
            out.append(
                Record(again, _encode(dict(doc, received_at=iso(again))), "duplicate", etype, True)
            )
    out.sort(key=lambda rec: rec.received)
    return out
