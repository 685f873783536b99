"""Day arithmetic every layer shares: closed days, lateness windows and history ranges (UTC).

Pure functions of their arguments, so they can be tested at any date (month ends, New Year,
Feb 29); callers pass ``clock.today()``.
"""

from __future__ import annotations

from datetime import date, timedelta

ONE_DAY = timedelta(days=1)


def last_closed_day(today: date) -> date:
    """The newest day that has ended (UTC): yesterday."""
    return today - ONE_DAY


def days_between(first: date, last: date) -> list[date]:
    """Every day from ``first`` to ``last``, both included (empty when ``last`` < ``first``)."""
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def arrival_window(event_day: date, lateness_days: int) -> list[date]:
    """Arrival days that can hold events of ``event_day``: the day before (client clock skew
    around midnight), the day itself and ``lateness_days`` after it."""
    return [event_day + timedelta(days=i) for i in range(-1, lateness_days + 1)]


def lateness_window(run_day: date, first_day: date, lateness_days: int) -> tuple[date, date] | None:
    """The event days a daily run on ``run_day`` rebuilds: the last closed day and the
    ``lateness_days`` before it (their late events may have arrived since), never before
    ``first_day``. None when no day in that range has closed yet."""
    end = last_closed_day(run_day)
    if end < first_day:
        return None
    return max(end - timedelta(days=lateness_days), first_day), end


def history_range(days: int, today: date) -> tuple[date, date]:
    """``days`` days of history ending today: (first day, last closed day). Today itself is
    partial (live), so the last closed day is the day before."""
    if days < 1:
        raise ValueError(f"days={days}: give at least 1 day of history")
    return today - timedelta(days=days - 1), last_closed_day(today)
