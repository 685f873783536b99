"""User agents and bots: browser, OS and device family from the user agent, and the two bot rules
of ``shoplake.core.rules`` (a crawler's user agent, a visitor clicking faster than a person)."""

from __future__ import annotations

import functools
from datetime import timedelta

import polars as pl

from shoplake.core.rules import BOT_GAP, BOT_MIN_CLICKS, BOT_USER_AGENT


@functools.lru_cache(maxsize=50_000)
def _parse_ua(ua: str) -> tuple[str | None, str | None, str | None]:
    from ua_parser import parse

    r = parse(ua)
    return (
        r.user_agent.family if r.user_agent else None,
        r.os.family if r.os else None,
        r.device.family if r.device else None,
    )


def parse_user_agents(df: pl.DataFrame) -> pl.DataFrame:
    """Browser, OS and device family from the user agent (ua-parser), parsed once per distinct UA."""
    uas = df.select(pl.col("user_agent").drop_nulls().unique()).to_series().to_list()
    parsed = [(ua, *_parse_ua(ua)) for ua in sorted(uas)]
    lookup = pl.DataFrame(
        parsed, schema=["user_agent", "browser", "os", "device_family"], orient="row"
    )
    if lookup.is_empty():
        lookup = pl.DataFrame(
            schema={c: pl.String for c in ("user_agent", "browser", "os", "device_family")}
        )
    return df.join(lookup, on="user_agent", how="left")


def flag_agent_bots(df: pl.DataFrame) -> pl.DataFrame:
    """``is_bot`` true where the user agent names a crawler or a tool (``BOT_USER_AGENT``)."""
    return df.with_columns(
        is_bot=pl.col("user_agent").fill_null("").str.contains(f"(?i){BOT_USER_AGENT.pattern}")
    )


def cadence_bots(keys: pl.DataFrame) -> pl.DataFrame:
    """Visitors with >= 5 events less than 100 ms apart (``keys``: anonymous_id, event_at), with
    ``cadence_bot`` true. Crawler user agents are the other bot rule (``BOT_USER_AGENT``)."""
    return (
        keys.sort("anonymous_id", "event_at")
        .with_columns(gap=pl.col("event_at").diff().over("anonymous_id"))
        # Strictly positive: equal timestamps usually mean coarse clocks (whole seconds), not a bot.
        .with_columns(
            quick=((pl.col("gap") < BOT_GAP) & (pl.col("gap") > timedelta(0))).fill_null(False)
        )
        .with_columns(run=(~pl.col("quick")).cum_sum().over("anonymous_id"))
        .group_by("anonymous_id", "run")
        .agg(clicks=pl.len())
        .filter(pl.col("clicks") >= BOT_MIN_CLICKS)
        .select("anonymous_id")
        .unique()
        .sort("anonymous_id")
        .with_columns(cadence_bot=pl.lit(True))
    )
