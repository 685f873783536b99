"""Date logic at fixed dates: month ends, New Year, Feb 29 and the partitions' first day.

Nothing here reads the system's date: every "today" is given, or set on the shoplake clock.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline_assets.bronze.kafka_day import beyond_retention, day_bounds_ms
from pipeline_assets.jobs import daily_run_request, daily_schedule
from pipeline_assets.partitions import daily_partitions
from shoplake.core import clock
from shoplake.core.days import arrival_window, days_between, history_range, lateness_window

D = date.fromisoformat
FIRST = D("2026-01-01")  # the default SHOPLAKE_PARTITIONS_START
DAY_MS = 86_400_000


@pytest.mark.parametrize(
    ("run_day", "expected"),
    [
        ("2026-12-01", ("2026-11-28", "2026-11-30")),  # month end
        ("2027-01-01", ("2026-12-29", "2026-12-31")),  # the year's last day
        ("2027-01-02", ("2026-12-30", "2027-01-01")),  # across New Year
        ("2028-03-01", ("2028-02-27", "2028-02-29")),  # leap day
        ("2028-02-29", ("2028-02-26", "2028-02-28")),  # run on the leap day
        ("2026-03-01", ("2026-02-26", "2026-02-28")),  # no leap day
    ],
)
def test_the_lateness_window_at_calendar_edges(run_day, expected):
    start, end = lateness_window(D(run_day), FIRST, 2)
    assert (start.isoformat(), end.isoformat()) == expected


def test_the_lateness_window_starts_no_earlier_than_the_first_partition():
    assert (
        lateness_window(D("2026-01-01"), FIRST, 2) is None
    )  # run on the first day: nothing closed
    assert lateness_window(D("2026-01-02"), FIRST, 2) == (FIRST, FIRST)
    assert lateness_window(D("2026-01-03"), FIRST, 2) == (FIRST, D("2026-01-02"))
    assert lateness_window(D("2025-12-20"), FIRST, 2) is None  # before the lake starts


@given(
    run_day=st.dates(D("2000-01-01"), D("2100-12-31")),
    first=st.dates(D("2000-01-01"), D("2100-12-31")),
    lateness=st.integers(0, 30),
)
def test_the_lateness_window_is_never_inverted(run_day, first, lateness):
    window = lateness_window(run_day, first, lateness)
    if window is None:
        assert run_day - timedelta(days=1) < first
        return
    start, end = window
    assert first <= start <= end == run_day - timedelta(days=1)
    assert (end - start).days <= lateness


def _tick(at: datetime) -> dg.RunRequest | dg.SkipReason:
    data = daily_schedule.evaluate_tick(dg.build_schedule_context(scheduled_execution_time=at))
    if data.skip_message:
        return dg.SkipReason(data.skip_message)
    (request,) = data.run_requests
    return request


def test_the_daily_schedule_requests_the_window_across_new_year():
    assert daily_partitions.start.date() == FIRST  # no earlier test or shell moved it
    request = _tick(datetime(2027, 1, 1, 2, 0, tzinfo=UTC))
    assert request.tags["dagster/asset_partition_range_start"] == "2026-12-29"
    assert request.tags["dagster/asset_partition_range_end"] == "2026-12-31"
    assert request.run_key == "daily-2026-12-31"


def test_the_daily_schedule_skips_on_the_partitions_first_day():
    skipped = _tick(datetime(2026, 1, 1, 2, 0, tzinfo=UTC))
    assert isinstance(skipped, dg.SkipReason) and "2026-01-01" in (skipped.skip_message or "")
    request = daily_run_request(D("2026-01-02"))
    assert request.tags["dagster/asset_partition_range_start"] == "2026-01-01"
    assert request.tags["dagster/asset_partition_range_end"] == "2026-01-01"


def test_partition_ranges_cross_month_year_and_leap_day():
    keys = daily_partitions.get_partition_keys_in_range(
        dg.PartitionKeyRange("2026-02-27", "2026-03-02")
    )
    assert keys == ["2026-02-27", "2026-02-28", "2026-03-01", "2026-03-02"]
    assert days_between(D("2027-12-30"), D("2028-01-02")) == [
        D("2027-12-30"),
        D("2027-12-31"),
        D("2028-01-01"),
        D("2028-01-02"),
    ]
    assert days_between(D("2028-02-28"), D("2028-03-01"))[1] == D("2028-02-29")
    assert days_between(D("2026-01-02"), D("2026-01-01")) == []
    # silver re-reads the day before and the lateness days after, across the year's end
    assert arrival_window(D("2027-01-01"), 2) == [
        D("2026-12-31"),
        D("2027-01-01"),
        D("2027-01-02"),
        D("2027-01-03"),
    ]


@pytest.mark.parametrize(
    ("now", "day", "beyond"),
    [
        ("2027-01-01T00:00:00", "2026-12-25", False),  # exactly 7 days back: still kept
        ("2027-01-01T00:00:01", "2026-12-25", True),
        ("2028-03-01T12:00:00", "2028-02-23", True),  # the week spans Feb 29
        ("2028-03-01T12:00:00", "2028-02-24", False),
    ],
)
def test_the_retention_guard_at_calendar_edges(now, day, beyond):
    now_ms = int(datetime.fromisoformat(now).replace(tzinfo=UTC).timestamp() * 1000)
    assert beyond_retention(D(day), 7 * DAY_MS, now_ms) is beyond
    assert beyond_retention(D(day), -1, now_ms)  # unlimited retention: an empty day was deleted
    assert day_bounds_ms(D(day))[1] - day_bounds_ms(D(day))[0] == DAY_MS


@pytest.mark.parametrize(
    ("today", "first", "last"),
    [
        ("2027-01-01", "2026-12-26", "2026-12-31"),
        ("2028-03-02", "2028-02-25", "2028-03-01"),
        ("2026-12-01", "2026-11-25", "2026-11-30"),
    ],
)
def test_the_demo_day_range(today, first, last):
    assert history_range(7, D(today)) == (D(first), D(last))
    assert history_range(1, D(today))[0] == D(today)  # one day: only today, nothing closed


def test_the_clock_can_be_set_and_runs_on(monkeypatch):
    monkeypatch.setenv(clock.ENV, "2026-12-31T23:59:59Z")
    assert clock.today() == D("2026-12-31")
    start = clock.now()
    assert start - datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC) < timedelta(seconds=1)
    monkeypatch.setenv(clock.ENV, "2028-02-29T12:00:00+00:00")
    assert clock.today() == D("2028-02-29")
    monkeypatch.setenv(clock.ENV, "tomorrow")
    with pytest.raises(clock.ClockError, match="ISO instant"):
        clock.now()


def test_a_subprocess_shares_the_clocks_timeline(monkeypatch):
    monkeypatch.setenv(clock.ENV, "2027-01-01T00:00:00Z")
    here = clock.now()
    env = {**os.environ, clock.ENV: clock.env_value()}
    code = "from shoplake.core import clock; print(clock.now().isoformat())"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    there = datetime.fromisoformat(out.strip())
    assert timedelta(0) <= there - here < timedelta(seconds=30)
