"""The speed layer's stateful rules on their own, at their edges: what counts as a repeat, and
what each step remembers and forgets."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta

from streaming.dedupe import DedupeLogic
from streaming.events import LiveEvent
from streaming.testing import TEST_CONFIG

WINDOW = timedelta(minutes=10)
WINDOW_MS = 600_000
T0_MS = 1_772_452_800_000  # 2026-03-02T12:00:00Z


def live(event_id: str, received_ms: int, **fields) -> LiveEvent:
    at = datetime.fromtimestamp(received_ms / 1000, UTC)
    fields = {"event_type": "page_view", "anonymous_id": "v"} | fields
    return LiveEvent(
        event_id=event_id,
        event_at=at,
        received_at=at,
        **fields,
        event_ms=received_ms,
        received_ms=received_ms,
        platform="web",
        device_type="desktop",
        is_bot_ua=False,
        shard="0",
        partition=0,
        offset=0,
    )


def passed(logic: DedupeLogic, *items: LiveEvent) -> list[tuple[str, int]]:
    out, _ = logic.on_batch(list(items))
    return [(e.event_id, e.received_ms) for e in out]


def state(logic: DedupeLogic) -> tuple[dict[str, int], list[tuple[int, str]], int]:
    return pickle.loads(logic.snapshot())


def test_a_copy_exactly_one_window_after_the_first_is_a_repeat_one_ms_later_is_not():
    """Guards the window's edge: "at most dedupe_window before" is inclusive, in milliseconds."""
    logic = DedupeLogic(TEST_CONFIG.with_(dedupe_window=WINDOW), None)
    assert passed(logic, live("a", T0_MS)) == [("a", T0_MS)]
    assert passed(logic, live("a", T0_MS + WINDOW_MS)) == []
    logic = DedupeLogic(TEST_CONFIG.with_(dedupe_window=WINDOW), None)
    passed(logic, live("a", T0_MS))
    assert passed(logic, live("a", T0_MS + WINDOW_MS + 1)) == [("a", T0_MS + WINDOW_MS + 1)]


def test_the_window_is_measured_from_the_latest_arrival_on_the_shard():
    """Guards the horizon: another event arriving later ages the first copy out."""
    logic = DedupeLogic(TEST_CONFIG.with_(dedupe_window=WINDOW), None)
    passed(logic, live("a", T0_MS), live("b", T0_MS + WINDOW_MS + 1))
    # a copy of a that arrives out of order, earlier than b, is past the horizon b set
    assert passed(logic, live("a", T0_MS + 5)) == [("a", T0_MS + 5)]


def test_memory_holds_only_ids_within_the_window_and_a_refreshed_id_stays():
    """Guards eviction: ids older than the window leave the state (memory stays bounded), an id
    seen again after it expired is kept under its new arrival, and the snapshot resumes it."""
    logic = DedupeLogic(TEST_CONFIG.with_(dedupe_window=WINDOW), None)
    passed(logic, live("a", T0_MS), live("b", T0_MS + 1))
    later = T0_MS + WINDOW_MS + 2
    passed(logic, live("a", later))  # a again, a new first copy; b is now older than the window
    seen, order, max_recv = state(logic)
    assert seen == {"a": later}
    assert order == [(later, "a")]
    assert max_recv == later
    # the entry at exactly the horizon stays: eviction is for ids strictly older
    logic = DedupeLogic(TEST_CONFIG.with_(dedupe_window=WINDOW), None)
    passed(logic, live("a", T0_MS), live("c", T0_MS + WINDOW_MS))
    assert set(state(logic)[0]) == {"a", "c"}

    resumed = DedupeLogic(TEST_CONFIG.with_(dedupe_window=WINDOW), logic.snapshot())
    assert passed(resumed, live("a", T0_MS + WINDOW_MS)) == []
    assert state(resumed) == state(logic)


# -- what the per-visitor alert step remembers -----------------------------------------------------
MINUTE_MS, DAY_MS = 60_000, 86_400_000


def test_the_visitor_alert_step_forgets_runs_buyers_and_fired_alerts_at_their_horizons():
    """Guards the alert step's eviction edges (memory stays bounded, and what is forgotten is what
    the rules no longer need): a click run once its visitor has been silent for the session gap,
    a buyer after visitor_ttl without an order, a fired alert two days after its day."""
    from streaming.alerts import VisitorAlertsLogic

    config = TEST_CONFIG
    gap_ms = int(config.session_gap.total_seconds() * 1000)
    ttl_ms = int(config.visitor_ttl.total_seconds() * 1000)
    logic = VisitorAlertsLogic(config, None)
    t = T0_MS
    logic.on_event(live("e1", t, anonymous_id="clicker"), t)
    purchase = live(
        "e2", t, anonymous_id="buyer", event_type="purchase", order_id="o1", revenue_cents=1000
    )
    logic.on_event(purchase, t)
    logic.s["fired"]["an-alert"] = t // DAY_MS

    logic.on_advance(t, t + gap_ms)  # silent for exactly the gap: still remembered
    assert set(logic.s["runs"]) == {"buyer", "clicker"}
    logic.on_advance(t + gap_ms, t + gap_ms + MINUTE_MS)  # the next minute: both runs forgotten
    assert logic.s["runs"] == {}

    day = t // DAY_MS
    logic.on_advance(0, (day + 2) * DAY_MS)  # two days later: the alert is still remembered
    assert set(logic.s["fired"]) == {"an-alert"} and set(logic.s["buyers"]) == {"buyer"}
    logic.on_advance(0, (day + 3) * DAY_MS)
    assert logic.s["fired"] == {}

    # a buyer whose last order is exactly visitor_ttl old is remembered, a day later it is not
    midnight = (day + 1) * DAY_MS
    logic = VisitorAlertsLogic(config, None)
    logic.on_event(live("e3", midnight, anonymous_id="buyer", event_type="purchase"), midnight)
    logic.on_advance(0, midnight + ttl_ms)
    assert set(logic.s["buyers"]) == {"buyer"}
    logic.on_advance(0, midnight + ttl_ms + DAY_MS)
    assert logic.s["buyers"] == {}
