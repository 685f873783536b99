"""The one path every event takes into Kafka: size check, contract, pseudonymization, encoding.

Used by the HTTP collector and by ``shoplake simulate --to kafka``, so that no route into the
topics skips validation or lets a personal value through.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from datetime import datetime

import msgspec

from shoplake.core.contracts.decode import (
    EVENT_TOO_LARGE,
    ContractViolation,
    decode_event,
    encode_event,
)
from shoplake.core.pii import Pseudonymizer
from shoplake.core.settings import Settings

MAX_EVENT_BYTES = 32 * 1024
MAX_DLQ_BYTES = 1536 * 1024
_EVENT_ID = re.compile(rb'"event_id"\s*:\s*"([0-9A-Fa-f-]{32,36})"')


@dataclass(slots=True)
class Accepted:
    event_id: str
    event_type: str
    key: bytes
    value: bytes
    timestamp_ms: int


@dataclass(slots=True)
class Rejected:
    reason: str
    error: str
    raw: bytes
    event_type: str | None = None
    event_id: str | None = None
    contract_version: str | None = None


class DlqRecord(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What a rejected event looks like in ``shop.events.dlq``."""

    reason: str
    error: str
    raw: str  # the payload as received, with personal values replaced by tokens
    raw_bytes: int
    received_at: datetime
    source: str
    event_type: str | None = None
    event_id: str | None = None
    contract_version: str | None = None
    write_key_id: str | None = None
    pii_key_id: str | None = None
    raw_encoding: str = "utf-8"


_dlq_encoder = msgspec.json.Encoder()


def key_id(write_key: str) -> str:
    """A non-secret id for a write key (first 8 hex of its SHA-256)."""
    return hashlib.sha256(write_key.encode()).hexdigest()[:8]


class Ingestor:
    def __init__(self, pseudonymizer: Pseudonymizer, max_event_bytes: int = MAX_EVENT_BYTES):
        self.pii = pseudonymizer
        self.max_event_bytes = max_event_bytes

    @classmethod
    def from_settings(cls, settings: Settings) -> Ingestor:
        return cls(Pseudonymizer(settings.pii_key, settings.pii_key_id))

    def accept(
        self, raw: bytes, received_at: datetime, replay: bool = False, trusted_tokens: bool = False
    ) -> Accepted | Rejected:
        """Validate one raw event. ``replay`` keeps the client's received_at (simulated history);
        ``trusted_tokens`` keeps pseudonyms this platform wrote (a DLQ replay), which from a
        client would be hashed again."""
        if len(raw) > self.max_event_bytes:
            return Rejected(
                EVENT_TOO_LARGE,
                f"event is {len(raw)} bytes; the limit is {self.max_event_bytes}",
                raw,
                event_id=_sniff_event_id(raw),
            )
        try:
            event = decode_event(raw)
        except ContractViolation as exc:
            return Rejected(
                exc.reason, str(exc), raw, exc.event_type, _sniff_event_id(raw), exc.version
            )
        if replay:
            # Simulated history keeps its own receive time, but never one in the future: Kafka
            # rejects timestamps more than an hour ahead, and nothing can arrive before it is sent.
            received_at = min(event.received_at or event.sent_at, received_at)
        event = msgspec.structs.replace(event, received_at=received_at)
        event = self.pii.apply(event, trusted_tokens)
        return Accepted(
            event_id=str(event.event_id),
            event_type=type(event).__struct_config__.tag,
            key=event.anonymous_id.encode(),
            value=encode_event(event),
            timestamp_ms=int(received_at.timestamp() * 1000),
        )

    def dlq_value(
        self,
        rejected: Rejected,
        received_at: datetime,
        source: str,
        write_key_id: str | None = None,
    ) -> bytes:
        scrub = self.pii.scrub_text
        record = DlqRecord(
            reason=rejected.reason,
            error=scrub(rejected.error),
            raw=self.pii.scrub_raw(rejected.raw),
            raw_bytes=len(rejected.raw),
            received_at=received_at,
            source=source,
            # as the client sent them: free text, scrubbed like the rest of the record
            event_type=scrub(rejected.event_type[:128]) if rejected.event_type else None,
            event_id=rejected.event_id,
            contract_version=(
                scrub(rejected.contract_version[:64]) if rejected.contract_version else None
            ),
            write_key_id=write_key_id,
            pii_key_id=self.pii.key_id,
        )
        value = _dlq_encoder.encode(record)
        if len(value) > MAX_DLQ_BYTES:
            # JSON escaping can blow a 1 MiB body past Kafka's message limit; base64 is bounded.
            scrubbed = record.raw.encode()
            record = msgspec.structs.replace(
                record, raw=base64.b64encode(scrubbed).decode(), raw_encoding="base64"
            )
            value = _dlq_encoder.encode(record)
        return value


def _sniff_event_id(raw: bytes) -> str | None:
    m = _EVENT_ID.search(raw[:4096])
    return m.group(1).decode() if m else None
