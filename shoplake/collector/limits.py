"""Rate limits (requests and events per write key, a fair share per client) and constant-time
key checks."""

from __future__ import annotations

import hmac
import math
import time


class TokenBucket:
    """``rate`` tokens per second, up to ``burst``, one bucket per name. At most ``max_names``
    are kept: past that, buckets that have refilled (idle names) are forgotten."""

    def __init__(self, rate: float, burst: float, max_names: int = 10_000):
        self.rate = rate
        self.burst = burst
        self.max_names = max_names
        self._state: dict[str, tuple[float, float]] = {}

    def take(self, name: str, cost: float = 1.0, now: float | None = None) -> float:
        """0.0 if allowed (the tokens are taken), else the seconds to wait before retrying."""
        now = time.monotonic() if now is None else now
        tokens, last = self._state.get(name, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        if tokens >= cost:
            self._state[name] = (tokens - cost, now)
            self._prune(now)
            return 0.0
        self._state[name] = (tokens, now)
        if cost > self.burst or self.rate <= 0:
            return math.inf
        return (cost - tokens) / self.rate

    def refund(self, name: str, cost: float) -> None:
        tokens, last = self._state[name]
        self._state[name] = (min(float(self.burst), tokens + cost), last)

    def _prune(self, now: float) -> None:
        if len(self._state) <= self.max_names:
            return
        full = [
            n for n, (t, last) in self._state.items() if t + (now - last) * self.rate >= self.burst
        ]
        for name in full:
            del self._state[name]


class RateLimits:
    """Per write key: requests per second and events per second; per (key, client address): a
    share of the key's events, so one client of a shared key cannot starve the others."""

    def __init__(self, requests: float, request_burst: int, events: float, client_share: float):
        self.requests = TokenBucket(requests, request_burst)
        self.events = TokenBucket(events, 2 * events)
        self.client_events = TokenBucket(events * client_share, 2 * events * client_share)

    def take_request(self, key: str) -> float:
        return self.requests.take(key)

    def take_events(self, key: str, client: str, n: int) -> float:
        """0.0 if ``n`` events may go (taken from both buckets), else the seconds to wait."""
        per_client = f"{key}\x00{client}"
        wait = self.client_events.take(per_client, n)
        if wait > 0:
            return wait
        wait = self.events.take(key, n)
        if wait > 0:
            self.client_events.refund(per_client, n)
        return wait


def match_key(candidate: str, keys: tuple[str, ...]) -> str | None:
    """The configured key equal to ``candidate``; compares against every key in constant time."""
    found = None
    cand = candidate.encode()
    for key in keys:
        if hmac.compare_digest(cand, key.encode()):
            found = key
    return found
