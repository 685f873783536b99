"""bronze/events (by arrival day) -> silver/events (by event day), plus the quarantine.

For event day D the transform reads the arrival days D-1 .. D+lateness. Each row is decoded with
a Polars schema derived from the contracts, its event time is corrected for client clock skew
(``received_at - (sent_at - occurred_at)``), and duplicates are removed by event_id (the first
copy to arrive is canonical). Every bronze row then lands in exactly one place:

- silver/events of its event day (the canonical copy of a good event);
- silver/events_quarantine of its arrival day, with a reason (future, too late, contract);
- the duplicate count of the partition its canonical copy went to.

The stages, one module each: ``decode`` (JSON, event time, row-local verdict), ``agents`` (user
agent and bot flags), ``dedupe``, ``spill`` (out of core), ``quarantine`` (contract check and
quarantine rows); ``build`` puts them together. Plain transforms, no Dagster.

SPILL_ROWS and BUCKETS are re-exported for reading; the build reads them from ``spill`` when it
runs, so a test that changes them patches ``pipeline_assets.silver.events.spill``.
"""

from pipeline_assets.silver.events.agents import BOT_GAP, BOT_MIN_CLICKS, BOT_USER_AGENT
from pipeline_assets.silver.events.build import (
    SilverEventsResult,
    build_silver_events,
    build_silver_events_from,
)
from pipeline_assets.silver.events.decode import BronzeReader
from pipeline_assets.silver.events.spill import BUCKETS, SPILL_ROWS

__all__ = [
    "BOT_GAP",
    "BOT_MIN_CLICKS",
    "BOT_USER_AGENT",
    "BUCKETS",
    "SPILL_ROWS",
    "BronzeReader",
    "SilverEventsResult",
    "build_silver_events",
    "build_silver_events_from",
]
