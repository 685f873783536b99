"""What a client sends the collector besides the events: the headers of a replayed history."""

from __future__ import annotations

# Set to "1" with a replay key: the events are history, stamped with their own times.
REPLAY_HEADER = "x-shoplake-replay"
# The receive time of a replayed request (RFC 3339), so a retry keeps every event's time.
REPLAY_TIME_HEADER = "x-shoplake-replay-time"
