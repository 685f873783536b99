"""Pseudonymization of personal data with a keyed HMAC-SHA256.

The personal fields are the ones the contracts declare with ``x-pii``. Values are normalized
before hashing so that the same person hashes the same way (emails lower-cased, phones reduced
to digits, IPs reduced to their /24 or /48 network). The key id travels with each event so a
key rotation can be told apart downstream.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
from typing import Any

import msgspec

from shoplake.contracts.model import CONTRACTS, Event

PREFIX = "h:"  # marks a pseudonymized value; never a valid email, phone or IP


def _pii_paths(struct: type[msgspec.Struct]) -> list[tuple[tuple[str, ...], str]]:
    """(attribute path, kind) of every field declared personal, found through msgspec.inspect."""
    out: list[tuple[tuple[str, ...], str]] = []

    def walk(t: Any, path: tuple[str, ...]) -> None:
        if isinstance(t, msgspec.inspect.UnionType):
            for member in t.types:
                walk(member, path)
        elif isinstance(t, msgspec.inspect.StructType):
            for f in t.fields:
                walk(f.type, (*path, f.name))
        elif isinstance(t, msgspec.inspect.Metadata):
            kind = (t.extra_json_schema or {}).get("x-pii")
            if kind:
                out.append((path, kind))
            else:
                walk(t.type, path)
        # lists hold no personal fields today; a declared one inside a list would need a walk here

    walk(msgspec.inspect.type_info(struct), ())
    return out


PII_FIELDS: dict[type[Event], list[tuple[tuple[str, ...], str]]] = {
    struct: _pii_paths(struct) for struct, _ in CONTRACTS.values()
}


def network_of(ip: str) -> str:
    """The /24 (IPv4) or /48 (IPv6) network of ``ip``; unparseable input is returned stripped."""
    ip = ip.strip()
    parts = ip.split(".")
    if len(parts) == 4 and all(p.isdigit() and len(p) <= 3 and int(p) <= 255 for p in parts):
        return f"{int(parts[0])}.{int(parts[1])}.{int(parts[2])}.0/24"  # fast path, no ipaddress
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip.lower()
    prefix = 24 if addr.version == 4 else 48
    return str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False))


def normalize(kind: str, value: str) -> str:
    if kind == "email":
        return value.strip().lower()
    if kind == "phone":
        digits = re.sub(r"[^\d]", "", value)
        return ("+" if value.strip().startswith("+") else "") + digits
    if kind == "ip":
        return network_of(value)
    return value.strip()


class Pseudonymizer:
    CACHE_SIZE = 100_000  # a visitor's IP and email repeat across its events

    def __init__(self, key: bytes, key_id: str):
        if not key:
            raise ValueError("the PII key is empty: set SHOPLAKE_PII_KEY")
        self.key = key
        self.key_id = key_id
        self._cache: dict[tuple[str, str], str] = {}

    def token(self, kind: str, value: str) -> str:
        """Keyed hash of the normalized value, prefixed so a token is never mistaken for data."""
        if value.startswith(PREFIX):
            return value  # already pseudonymized (replayed from the DLQ, say)
        cached = self._cache.get((kind, value))
        if cached is not None:
            return cached
        msg = f"{kind}:{normalize(kind, value)}".encode()
        token = PREFIX + hmac.new(self.key, msg, hashlib.sha256).hexdigest()
        if len(self._cache) >= self.CACHE_SIZE:
            self._cache.clear()  # bounded; a cold cache only costs time
        self._cache[(kind, value)] = token
        return token

    def apply(self, event: Event) -> Event:
        """The event with every declared personal field replaced by its token, and the key id set."""
        changes: dict[str, Any] = {"pii_key_id": self.key_id}
        for path, kind in PII_FIELDS[type(event)]:
            changes = self._replace_path(event, changes, path, kind)
        return msgspec.structs.replace(event, **changes)

    def _replace_path(
        self, event: Event, changes: dict[str, Any], path: tuple[str, ...], kind: str
    ) -> dict[str, Any]:
        head = path[0]
        parent = changes.get(head, getattr(event, head))
        if parent is None:
            return changes
        if len(path) == 1:
            if isinstance(parent, str):
                changes[head] = self.token(kind, parent)
            return changes
        # nested struct (context.ip, traits.email): replace one level down
        inner = self._replace_path(parent, {}, path[1:], kind)
        if inner:
            changes[head] = msgspec.structs.replace(parent, **inner)
        return changes

    # -- rejected payloads ---------------------------------------------------------------------
    # Matches may only start where a run of such characters starts, and parts are bounded, so a
    # long run without "@" (an oversize payload) is scanned once, not once per position.
    _EMAIL = re.compile(
        r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9.-]{1,255}\.[A-Za-z]{2,24}"
    )
    _IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
    # IPv6 candidates (with or without "::"), confirmed by the ipaddress module before replacing.
    _IPV6 = re.compile(
        r"(?<![0-9A-Za-z:])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?![0-9A-Za-z:])"
    )
    _PHONE = re.compile(r"(?<![\d+])\+\d[\d ().-]{6,30}\d")
    _KEYS = {"ip": "ip", "email": "email", "phone": "phone"}

    def scrub_text(self, text: str) -> str:
        """Replace anything that looks like an email, phone (+…) or IP address with its token."""
        text = self._EMAIL.sub(lambda m: self.token("email", m.group()), text)
        text = self._PHONE.sub(lambda m: self.token("phone", m.group()), text)
        text = self._IPV6.sub(self._ipv6_token, text)
        return self._IPV4.sub(lambda m: self.token("ip", m.group()), text)

    def _ipv6_token(self, m: re.Match) -> str:
        try:
            ipaddress.IPv6Address(m.group())
        except ValueError:
            return m.group()
        return self.token("ip", m.group())

    def scrub_raw(self, raw: bytes) -> str:
        """A rejected payload made safe for the DLQ: structured where it parses, by pattern where not."""
        text = raw.decode("utf-8", errors="replace")
        try:
            doc = msgspec.json.decode(raw)
        except (msgspec.DecodeError, UnicodeDecodeError):
            return self.scrub_text(text)
        return msgspec.json.encode(self._scrub_value(doc, None)).decode()

    def _scrub_value(self, value: Any, key: str | None) -> Any:
        if isinstance(value, dict):
            return {k: self._scrub_value(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [self._scrub_value(v, key) for v in value]
        if isinstance(value, str):
            kind = self._KEYS.get((key or "").lower())
            return self.token(kind, value) if kind else self.scrub_text(value)
        return value
