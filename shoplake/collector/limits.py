"""Per-write-key token-bucket rate limiting and constant-time key checks."""

from __future__ import annotations

import hmac
import math
import time


class TokenBucket:
    """``rate`` tokens per second, up to ``burst``. One bucket per write key."""

    def __init__(self, rate: float, burst: int):
        self.rate = rate
        self.burst = burst
        self._state: dict[str, tuple[float, float]] = {}

    def take(self, key: str, cost: float = 1.0, now: float | None = None) -> float:
        """0.0 if allowed, else the seconds to wait before retrying."""
        now = time.monotonic() if now is None else now
        tokens, last = self._state.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        if tokens >= cost:
            self._state[key] = (tokens - cost, now)
            return 0.0
        self._state[key] = (tokens, now)
        return (cost - tokens) / self.rate if self.rate > 0 else math.inf


def match_key(candidate: str, keys: tuple[str, ...]) -> str | None:
    """The configured key equal to ``candidate``; compares against every key in constant time."""
    found = None
    cand = candidate.encode()
    for key in keys:
        if hmac.compare_digest(cand, key.encode()):
            found = key
    return found
