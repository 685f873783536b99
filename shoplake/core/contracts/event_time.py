"""When an event happened, on the collector's clock: the one formula silver and the speed layer use.

``event_at = received_at - (sent_at - occurred_at)``. The client measures the event's age
(``sent_at - occurred_at``) on its own clock, so its skew cancels out, and the collector's
``received_at`` anchors it. Clients stamp ``sent_at`` on every attempt (a retry 10 minutes later
carries a ``sent_at`` 10 minutes later), so retries and slow networks do not move event time.

The functions take datetimes or Polars expressions alike.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TypeVar

# An event that claims to have happened more than this after it was received is from the future.
FUTURE_TOLERANCE = timedelta(hours=1)

T = TypeVar("T")


def event_time(received_at: T, sent_at: T, occurred_at: T) -> T:
    """The event's time on the collector's clock."""
    return received_at - (sent_at - occurred_at)  # type: ignore[operator]


def is_future(received_at: T, sent_at: T, occurred_at: T) -> T:
    """True (or a boolean expression) when the event's time is more than FUTURE_TOLERANCE after
    it was received: the client says it happened after it sent it. A client whose clock is
    merely off is not from the future; its skew cancels out as in :func:`event_time`."""
    return event_time(received_at, sent_at, occurred_at) > received_at + FUTURE_TOLERANCE  # type: ignore[operator]
