"""The behaviour rules that silver and the speed layer both apply, so they cannot drift apart.

A visitor is a bot when its user agent names a crawler or a tool, or when it clicks faster than a
person can: ``BOT_MIN_CLICKS`` events in a row, each less than ``BOT_GAP`` after the previous.
How far in the future an event may claim to be is ``FUTURE_TOLERANCE`` in
:mod:`shoplake.core.contracts.event_time`; the event types are ``EVENT_TYPES`` in the contracts.
"""

from __future__ import annotations

import re
from datetime import timedelta

BOT_USER_AGENT = re.compile(
    r"bot|crawl|spider|scrap|headless|python-requests|curl|wget|httpclient", re.I
)
BOT_MIN_CLICKS = 5
BOT_GAP = timedelta(milliseconds=100)


def is_bot_agent(user_agent: str | None) -> bool:
    return bool(user_agent) and BOT_USER_AGENT.search(user_agent) is not None
