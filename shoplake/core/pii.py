"""Pseudonymization of personal data with a keyed HMAC-SHA256, by policy.

The contracts declare, with ``x-pii``, how each string field is treated (see
:mod:`shoplake.core.contracts.model`):

- ``email``, ``phone``, ``ip``: personal; hashed whole after normalizing (emails lower-cased,
  phones reduced to digits, IPs to their /24 or /48 network), so the same person hashes the same;
- ``identifier`` (``anonymous_id``, ``user_id``, ``session_id``, ``order_id``): kept, unless it
  looks like an email or a phone number, then hashed as one;
- ``text`` (titles, search queries, user agents, UTM tags): scrubbed by pattern: emails (plain,
  percent-encoded, non-ASCII domains), phone numbers, IPv4/IPv6 addresses and card-like numbers
  (Luhn) are replaced by their tokens;
- ``url`` (``page_url``, ``referrer``): query parameters with personal names (email, phone, name,
  address, token, ...) get their value hashed, then the URL is scrubbed as text.

A token is ``h:`` + 64 hex. Only this module makes tokens: a client that sends an ``h:`` value
has it hashed again like any other value (it cannot plant or forge one). Records this platform
wrote itself (a DLQ replay) are re-read with ``trusted_tokens``. The key id travels with each
event, so a key rotation can be told apart downstream.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

import msgspec

from shoplake.core.contracts.model import CONTRACTS, Event

PREFIX = "h:"  # marks a pseudonymized value; never a valid email, phone or IP
HASHED = ("email", "phone", "ip")  # kinds hashed whole
KINDS = (*HASHED, "identifier", "text", "url")
MAX_DEPTH = 32  # nesting the DLQ scrubber walks; deeper values are dropped, not recursed into
_TOKEN = re.compile(r"h:[0-9a-f]{64}")
_JSON_ESCAPE = re.compile(r'\\(?:u[0-9a-fA-F]{4}|["\\/bfnrt])')
_UUID = re.compile(
    r"(?<![0-9A-Fa-f])[0-9A-Fa-f]{8}(?:-[0-9A-Fa-f]{4}){3}-[0-9A-Fa-f]{12}(?![0-9A-Fa-f])"
)


def _pii_paths(struct: type[msgspec.Struct]) -> list[tuple[tuple[str, ...], str]]:
    """(attribute path, kind) of every field with an ``x-pii`` kind, found through msgspec.inspect."""
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
        # lists (purchase items) hold product data only; a declared field inside one needs a walk

    walk(msgspec.inspect.type_info(struct), ())
    return out


PII_FIELDS: dict[type[Event], list[tuple[tuple[str, ...], str]]] = {
    struct: _pii_paths(struct) for struct, _ in CONTRACTS.values()
}
# The same paths as a tree per event type, each field visited once: (name, kind, fields below it).
PiiTree = tuple[tuple[str, str | None, "PiiTree"], ...]


def _tree(paths: list[tuple[tuple[str, ...], str]]) -> PiiTree:
    below: dict[str, list[tuple[tuple[str, ...], str]]] = {}
    kinds: dict[str, str] = {}
    for path, kind in paths:
        if len(path) == 1:
            kinds[path[0]] = kind
        below.setdefault(path[0], [])
        if len(path) > 1:
            below[path[0]].append((path[1:], kind))
    return tuple((name, kinds.get(name), _tree(rest)) for name, rest in below.items())


PII_TREES: dict[type[Event], PiiTree] = {struct: _tree(p) for struct, p in PII_FIELDS.items()}
# Field name -> kind, for payloads that did not decode (the DLQ): the same policy by name.
KIND_BY_NAME: dict[str, str] = {
    path[-1]: kind for fields in PII_FIELDS.values() for path, kind in fields
}


def _around(pattern: re.Pattern, text: str, scrub: Callable[[str], str]) -> str:
    """``text`` with ``scrub`` applied to the pieces between ``pattern``'s matches, which are
    kept as they are."""
    kept = pattern.findall(text)
    pieces = pattern.split(text)
    return "".join(scrub(p) + (kept[i] if i < len(kept) else "") for i, p in enumerate(pieces))


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
        return unquote(value).strip().lower()
    if kind == "phone":
        digits = re.sub(r"[^\d]", "", value)
        return ("+" if value.strip().startswith("+") else "") + digits
    if kind == "card":
        return re.sub(r"[^\d]", "", value)
    if kind == "ip":
        return network_of(value)
    return value.strip()


# -- what personal data looks like in text -------------------------------------------------------
# Matches start only where a run of such characters starts, and parts are bounded, so a long run
# (an oversize payload) is scanned once, not once per position.
_EMAIL = re.compile(
    r"(?<![\w.%+-])[\w.%+-]{1,64}(?:@|%40)[\w-]{1,63}(?:\.[\w-]{1,63}){0,8}\.[^\W\d_]{2,24}",
)
# Phones: "+" and digits, or grouped digits ("(555) 123-4567", "06 12 34 56 78"), or a national
# number starting with 0. Bare digit runs (product ids, timestamps) are not phones.
_PHONE = re.compile(
    r"(?<![\w+])(?:\+\d[\d ()-]{5,22}\d|\(?\d{2,4}\)?(?:[ -]\d{2,4}){2,5}|0\d{8,14})(?![\w])"
)
_DATE_LIKE = re.compile(r"\d{4}-\d{2}-\d{2}")
_CARD = re.compile(r"(?<![\w])\d(?:[ -]?\d){12,18}(?![\w])")
_IPV4 = re.compile(r"(?<![\w./:])(?:\d{1,3}\.){3}\d{1,3}(?![\w.])")
# IPv6 candidates (with or without "::"), confirmed by the ipaddress module before replacing.
_IPV6 = re.compile(r"(?<![0-9A-Za-z:])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?![0-9A-Za-z:])")
# Anything that could be one of the above: text without it is returned as is, cheaply.
_SUSPECT = re.compile(r"@|%40|\d[\d ().-]{5,}\d|[0-9A-Fa-f]:[0-9A-Fa-f:]*:")
# Query parameters whose value is personal by their name.
_PERSONAL_PARAM = re.compile(
    r"^(?:e-?mail|mail|phone|tel|mobile|msisdn|name|first_?name|last_?name|full_?name|user|"
    r"address|addr|street|city|zip|post_?code|postal|token|access_token|id_token|auth|password|"
    r"passwd|pwd|pass|secret|ssn|card|cc|iban|birth|dob|ip)",
    re.IGNORECASE,
)
_IDENTIFIER_EMAIL = re.compile(r"[\w.%+-]{1,64}(?:@|%40)[\w.-]{1,255}")


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card_like(candidate: str) -> bool:
    digits = re.sub(r"\D", "", candidate)
    return 13 <= len(digits) <= 19 and _luhn(digits)


def _phone_like(candidate: str) -> bool:
    digits = sum(ch.isdigit() for ch in candidate)
    return (9 <= digits <= 15 and not _DATE_LIKE.match(candidate)) or (
        candidate.startswith("+") and 7 <= digits <= 15
    )


class Pseudonymizer:
    CACHE_SIZE = 100_000  # a visitor's IP and email repeat across its events
    # User agents, referrers, titles and many URLs repeat across events too: their scrubbed form
    # is kept when value and result are both at most SCRUBBED_MAX_CHARS. Bounded: 10,000 entries
    # of two such strings are about 10 MB of ASCII, 40 MB at worst (4-byte characters).
    SCRUBBED_CACHE_SIZE = 10_000
    SCRUBBED_MAX_CHARS = 512

    def __init__(self, key: bytes, key_id: str):
        if not key:
            raise ValueError("the PII key is empty: set SHOPLAKE_PII_KEY")
        self.key = key
        self.key_id = key_id
        self._cache: dict[tuple[str, str], str] = {}
        self._scrubbed: dict[tuple[str, str], str] = {}

    def token(self, kind: str, value: str) -> str:
        """Keyed hash of the normalized value, prefixed so a token is never mistaken for data.
        Any value is hashed, one that looks like a token too."""
        cached = self._cache.get((kind, value))
        if cached is not None:
            return cached
        msg = f"{kind}:{normalize(kind, value)}".encode()
        token = PREFIX + hmac.new(self.key, msg, hashlib.sha256).hexdigest()
        if len(self._cache) >= self.CACHE_SIZE:
            self._cache.clear()  # bounded; a cold cache only costs time
        self._cache[(kind, value)] = token
        return token

    # -- the policy, one value at a time ----------------------------------------------------
    def pseudonymize(self, kind: str, value: str, trusted_tokens: bool = False) -> str:
        """``value`` of a field of ``kind`` as it may be stored."""
        if trusted_tokens and _TOKEN.fullmatch(value):
            return value  # written by this platform (a DLQ replay), not by a client
        if kind in HASHED:
            return self.token(kind, value)
        if len(value) > self.SCRUBBED_MAX_CHARS:
            return self._scrub(kind, value)
        cached = self._scrubbed.get((kind, value))
        if cached is None:
            cached = self._scrub(kind, value)
            if len(cached) <= self.SCRUBBED_MAX_CHARS:  # tokens can make a result longer
                if len(self._scrubbed) >= self.SCRUBBED_CACHE_SIZE:
                    self._scrubbed.clear()
                self._scrubbed[(kind, value)] = cached
        return cached

    def _scrub(self, kind: str, value: str) -> str:
        if kind == "identifier":
            return self.scrub_identifier(value)
        if kind == "url":
            return self.scrub_url(value)
        return self.scrub_text(value)

    def scrub_identifier(self, value: str) -> str:
        """An id that is really an email, a phone number or an IP address is hashed as one, and
        an email inside an id is replaced; other ids are kept (digits in an id are not a phone)."""
        v = value.strip()
        if "@" in v or "%40" in v:
            return self.token("email", v) if _IDENTIFIER_EMAIL.fullmatch(v) else self.scrub_text(v)
        if (v[:1] in "+(0" or " " in v) and _PHONE.fullmatch(v) and _phone_like(v):
            return self.token("phone", v)
        if ("." in v or ":" in v) and network_of(v) != v.lower():  # an IP address
            return self.token("ip", v)
        return value

    def scrub_text(self, text: str) -> str:
        """Every email, phone number, IP address and card-like number in ``text`` replaced by
        its token, also where it is percent-encoded (``%2B33%206...``: then the text is returned
        decoded, with its tokens); text with none is returned as is."""
        scrubbed = self._scrub_patterns(text)
        if "%" in scrubbed:
            decoded = unquote(scrubbed)
            if decoded != scrubbed:
                again = self._scrub_patterns(decoded)
                if again != decoded:
                    return again
        return scrubbed

    def _scrub_patterns(self, text: str) -> str:
        """scrub_text on the text as written. UUIDs (event ids, ids in URLs) are kept whole:
        their digit groups are not phone or card numbers."""
        if not _SUSPECT.search(text):
            return text
        if "-" in text and _UUID.search(text):
            return _around(_UUID, text, self._scrub_found)
        return self._scrub_found(text)

    def _scrub_found(self, text: str) -> str:
        text = _EMAIL.sub(lambda m: self.token("email", m.group()), text)
        text = _CARD.sub(self._card_token, text)
        text = _PHONE.sub(self._phone_token, text)
        text = _IPV6.sub(self._ipv6_token, text)
        return _IPV4.sub(self._ipv4_token, text)

    def scrub_url(self, url: str) -> str:
        """Personal query parameters hashed, then the rest scrubbed as text (also where it is
        percent-encoded). A URL with nothing personal is returned byte for byte."""
        try:
            parts = urlsplit(url)
        except ValueError:
            return self.scrub_text(url)
        query = self._scrub_patterns(parts.query)  # as written ("+33 6 ..." is literally there)
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)  # and as decoded ("%40", "%2B")
            scrubbed = [
                (
                    k,
                    self.token("param", v)
                    if v and _PERSONAL_PARAM.match(k)
                    else self.scrub_text(v),
                )
                for k, v in pairs
            ]
            if scrubbed != pairs:
                query = urlencode(scrubbed, safe=":/")
        path, fragment = self._scrub_patterns(parts.path), self._scrub_patterns(parts.fragment)
        if _SUSPECT.search(unquote(path)):
            path = quote(self.scrub_text(unquote(path)), safe="/:@")
        if fragment and _SUSPECT.search(unquote(fragment)):
            fragment = quote(self.scrub_text(unquote(fragment)), safe="/:=&")
        netloc = self.scrub_text(parts.netloc) if "@" in parts.netloc else parts.netloc
        if (query, path, fragment, netloc) == (
            parts.query,
            parts.path,
            parts.fragment,
            parts.netloc,
        ):
            return url
        return urlunsplit((parts.scheme, netloc, path, query, fragment))

    def _card_token(self, m: re.Match) -> str:
        return self._longest(m.group(), "card", _card_like)

    def _phone_token(self, m: re.Match) -> str:
        return self._longest(m.group(), "phone", _phone_like)

    def _longest(self, text: str, kind: str, like) -> str:
        """``text`` (a pattern's match) with its longest run of whole digit groups that ``like``
        accepts replaced by a token: a match may run into neighbouring numbers."""
        groups = [(g.start(), g.end()) for g in re.finditer(r"\d+", text)]
        spans = sorted(
            ((i, j) for i in range(len(groups)) for j in range(i, len(groups))),
            key=lambda ij: ij[0] - ij[1],
        )
        for i, j in spans:
            start, end = groups[i][0], groups[j][1]
            while start > 0 and text[start - 1] in "+(":
                start -= 1
            if like(text[start:end]):
                return text[:start] + self.token(kind, text[start:end]) + text[end:]
        return text

    def _ipv4_token(self, m: re.Match) -> str:
        if all(int(p) <= 255 for p in m.group().split(".")):
            return self.token("ip", m.group())
        return m.group()

    def _ipv6_token(self, m: re.Match) -> str:
        try:
            ipaddress.IPv6Address(m.group())
        except ValueError:
            return m.group()
        return self.token("ip", m.group())

    # -- decoded events ----------------------------------------------------------------------
    def apply(self, event: Event, trusted_tokens: bool = False) -> Event:
        """The event with every declared field treated by its policy, and the key id set."""
        changes = self._changes(event, PII_TREES[type(event)], trusted_tokens)
        changes["pii_key_id"] = self.key_id
        return msgspec.structs.replace(event, **changes)

    def _changes(self, obj: Any, tree: PiiTree, trusted: bool) -> dict[str, Any]:
        """The replaced values of ``obj``'s declared fields; nested structs (context.ip,
        traits.email) are replaced one level down."""
        changes: dict[str, Any] = {}
        for name, kind, below in tree:
            value = getattr(obj, name)
            if value is None:
                continue
            if kind is not None:
                if isinstance(value, str):
                    new = self.pseudonymize(kind, value, trusted)
                    if new != value:
                        changes[name] = new
            elif inner := self._changes(value, below, trusted):
                changes[name] = msgspec.structs.replace(value, **inner)
        return changes

    # -- rejected payloads -------------------------------------------------------------------
    def scrub_raw(self, raw: bytes) -> str:
        """A rejected payload made safe for the DLQ: by field name where it parses as JSON (the
        same policy as accepted events), by pattern where it does not."""
        text = raw.decode("utf-8", errors="replace")
        try:
            # invalid UTF-8 (replaced) need not keep the rest of a JSON body from being read
            doc = msgspec.json.decode(text.encode())
        except (msgspec.DecodeError, RecursionError):
            # JSON escapes glue to what follows ("\\n0612345678"): scrub between them
            return _around(_JSON_ESCAPE, text, self.scrub_text)
        return msgspec.json.encode(self.scrub_value(doc)).decode()

    def scrub_value(self, value: Any, key: str | None = None, depth: int = 0) -> Any:
        """A decoded JSON value with the policy applied by field name; unknown fields as text,
        long numbers as text too, and nothing deeper than MAX_DEPTH."""
        if isinstance(value, dict):
            if depth >= MAX_DEPTH:
                return f"[removed: nested deeper than {MAX_DEPTH} levels]"
            return {self.scrub_text(k): self.scrub_value(v, k, depth + 1) for k, v in value.items()}
        if isinstance(value, list):
            if depth >= MAX_DEPTH:
                return f"[removed: nested deeper than {MAX_DEPTH} levels]"
            return [self.scrub_value(v, key, depth + 1) for v in value]
        kind = KIND_BY_NAME.get(key or "", "text")
        if isinstance(value, str):
            if kind == "identifier":  # an id the contract refused: scrub all of it as text too
                return self.scrub_text(self.scrub_identifier(value))
            return self.pseudonymize(kind, value)
        if kind in HASHED and isinstance(value, int | float) and not isinstance(value, bool):
            return self.token(kind, str(value))  # a phone sent as a number is still a phone
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 1_000_000:
            text = str(value)
            scrubbed = self.scrub_text(text)
            return value if scrubbed == text else scrubbed
        return value
