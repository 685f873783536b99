"""The one clock: every "now" and "today" in shoplake comes from here.

Unset, it is the system clock. ``SHOPLAKE_CLOCK`` moves it, so that tests and CI can run the
platform on any date (a month end, New Year's Eve, Feb 29):

- ``SHOPLAKE_CLOCK=2026-12-31T23:30:00Z`` starts the clock at that instant when the process
  first reads it; from there it runs at the normal rate;
- ``SHOPLAKE_CLOCK=2026-12-31T23:30:00Z@1767222000.0`` says the clock read that instant at that
  Unix time (the system's), so every process given the same value shares one timeline. Hand
  :func:`env_value` to subprocesses for this.

Only absolute times come from here. Durations (timeouts, idle timers, rates) are measured with
``time.monotonic`` and do not depend on the date.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, date, datetime

ENV = "SHOPLAKE_CLOCK"

_offset_s: float | None = None  # fake - real, in seconds; None: not read yet
_source: str | None = None  # the SHOPLAKE_CLOCK value the offset was computed from


class ClockError(ValueError):
    pass


def parse(value: str, real_now: float | None = None) -> float:
    """The offset (seconds to add to the system clock) that ``value`` of SHOPLAKE_CLOCK means."""
    instant, _, anchor = value.strip().partition("@")
    try:
        at = datetime.fromisoformat(instant.replace("Z", "+00:00"))
        anchor_s = float(anchor) if anchor else (time.time() if real_now is None else real_now)
    except ValueError as exc:
        raise ClockError(
            f"{ENV}={value!r} is not an ISO instant such as 2026-12-31T23:30:00Z (optionally "
            "followed by @<unix seconds> of the system clock); unset it to use the system clock"
        ) from exc
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.timestamp() - anchor_s


def _offset() -> float:
    global _offset_s, _source
    value = os.environ.get(ENV) or ""
    if _offset_s is None or value != _source:
        _offset_s = parse(value) if value else 0.0
        _source = value
    return _offset_s


def is_moved() -> bool:
    """Whether SHOPLAKE_CLOCK moves the clock away from the system's."""
    return bool(os.environ.get(ENV))


def now_s() -> float:
    """Unix seconds on the shoplake clock."""
    return time.time() + _offset()


def now() -> datetime:
    """The current instant on the shoplake clock, timezone-aware UTC."""
    return datetime.fromtimestamp(now_s(), UTC)


def now_ms() -> int:
    return int(now_s() * 1000)


def today() -> date:
    """Today's UTC date on the shoplake clock."""
    return now().date()


def env_value(at: datetime | None = None) -> str:
    """A SHOPLAKE_CLOCK value that puts a subprocess on this process's timeline (or on ``at``)."""
    real = time.time()
    fake = at.timestamp() if at is not None else real + _offset()
    return f"{datetime.fromtimestamp(fake, UTC).isoformat()}@{real:.6f}"
