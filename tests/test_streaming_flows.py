"""The speed layer's dataflow on hand-made events with known answers, and against the reference."""

from __future__ import annotations

import json
from datetime import date, timedelta

import msgspec
import pytest
from bytewax.connectors.kafka import KafkaError
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, run_main

from shoplake.core import clock
from shoplake.core.ingest import DlqRecord, Ingestor
from shoplake.core.pii import Pseudonymizer
from shoplake.core.speed.rows import Session, session_id
from shoplake.core.stream_config import StreamConfig
from shoplake.simulator import FaultRates, SimConfig, simulate
from shoplake.simulator.sinks import MemorySink
from streaming import reference
from streaming.events import decode_message
from streaming.flows import Sinks, build_flow
from streaming.sessions import SessionsLogic
from streaming.testing import (
    DAY,
    DLQ_TOPIC,
    TEST_CONFIG,
    at,
    event,
    message,
    numbered,
    replay_config,
    run_flow,
)

T0 = at(12)  # 2026-03-02T12:00:00Z


def metric(run, size: str, start, dimension: str = "all", value: str = "all"):
    return run.rows("window_metrics").get((size, start, dimension, value))


def msgs(*docs) -> list:
    return numbered(message(d) for d in docs)


def ticker(when, visitor: str = "clock") -> dict:
    """An event on another visitor that moves the watermark of a shard forward."""
    return event("page_view", visitor, when)


# -- windows ---------------------------------------------------------------------------------------
def test_windows_split_exactly_at_their_boundaries():
    v = "visitor-a"
    docs = [
        event("page_view", v, T0 + timedelta(seconds=9.999)),
        event("page_view", v, T0 + timedelta(seconds=10)),
        event(
            "product_view", v, T0 + timedelta(seconds=59.999), platform="ios", device_type="mobile"
        ),
        event("purchase", v, T0 + timedelta(seconds=60), total=25.5),
        event("add_to_cart", "visitor-b", T0 + timedelta(minutes=4, seconds=59.999)),
        event("begin_checkout", "visitor-b", T0 + timedelta(minutes=5), device_type=None),
    ]
    run = run_flow(msgs(*docs))

    first = metric(run, "10s", T0)
    assert (first.events, first.page_views, first.window_end) == (1, 1, T0 + timedelta(seconds=10))
    assert metric(run, "10s", T0 + timedelta(seconds=10)).events == 1
    minute = metric(run, "1m", T0)
    assert (minute.events, minute.unique_visitors, minute.product_views, minute.purchases) == (
        3,
        1,
        1,
        0,
    )
    next_minute = metric(run, "1m", T0 + timedelta(minutes=1))
    assert (next_minute.purchases, next_minute.revenue, next_minute.buyers) == (1, 25.5, 1)
    assert next_minute.conversion_rate == 1.0
    five = metric(run, "5m", T0)
    assert (five.events, five.unique_visitors, five.add_to_carts, five.revenue) == (5, 2, 1, 25.5)
    assert five.conversion_rate == 0.5
    assert metric(run, "5m", T0 + timedelta(minutes=5)).checkouts == 1
    # slices: by platform and device type (a missing device type is "unknown", as in gold)
    assert metric(run, "1m", T0, "platform", "ios").events == 1
    assert metric(run, "1m", T0, "platform", "web").events == 2
    assert metric(run, "5m", T0 + timedelta(minutes=5), "device_type", "unknown").events == 1
    assert all(r.window_start.tzinfo is not None for r in run.rows("window_metrics").values())


def test_event_time_corrects_client_clock_skew_and_excludes_future_events():
    # a client clock 45 minutes fast: corrected by (sent_at - occurred_at)
    skewed = event("page_view", "v1", T0 + timedelta(seconds=3), skew=timedelta(minutes=45))
    # occurred_at more than an hour after it was sent: a future event, as silver judges it
    future = event("page_view", "v2", T0 + timedelta(seconds=4))
    future["occurred_at"] = "2026-03-02T14:00:00.000Z"
    # a clock 2 h fast is still only a skewed clock: corrected, not from the future
    very_fast_clock = event("page_view", "v3", T0 + timedelta(seconds=5), skew=timedelta(hours=2))
    run = run_flow(msgs(skewed, future, very_fast_clock))

    window = metric(run, "10s", T0)
    assert (
        window.events == 2
    )  # both skewed events land on their server time, the future one nowhere
    assert window.future_events == 1 and window.rejected == 0
    assert (
        run.dlq == []
    )  # future events are valid: silver quarantines them, the DLQ does not get them
    assert run.day_totals(DAY.date()).events == 2


def test_late_events_are_counted_in_late_events_not_dropped():
    late = event(
        "purchase", "late-visitor", T0 + timedelta(seconds=2), T0 + timedelta(seconds=45), total=40
    )
    docs = [
        event("page_view", "late-visitor", T0 + timedelta(seconds=1)),
        ticker(
            T0 + timedelta(seconds=40), "late-visitor"
        ),  # same shard: moves its watermark to 30 s
        late,  # window [0, 10) ended at 10 s, before the watermark (45 - 10 s lateness): late
    ]
    run = run_flow(msgs(*docs))

    assert metric(run, "10s", T0).events == 1
    late_10s = run.rows("late_events")[("10s", T0)]
    assert (late_10s.events, late_10s.purchases, late_10s.revenue) == (1, 1, 40.0)
    # the 1-minute and 5-minute windows were still open: the event counts there
    assert metric(run, "1m", T0).events == 3 and metric(run, "1m", T0).revenue == 40.0
    assert ("1m", T0) not in run.rows("late_events")
    assert run.day_totals(DAY.date()).purchases == 1


def test_an_event_within_the_allowed_lateness_is_on_time():
    docs = [
        ticker(T0 + timedelta(seconds=15), "v"),  # watermark 5 s
        event(
            "page_view", "v", T0 + timedelta(seconds=9), T0 + timedelta(seconds=19)
        ),  # end 10 > 9
    ]
    run = run_flow(msgs(*docs))
    assert metric(run, "10s", T0).events == 1
    assert run.rows("late_events") == {}


# -- dedupe and DLQ --------------------------------------------------------------------------------
def test_repeats_of_an_event_id_count_once_within_the_dedupe_window():
    first = event("purchase", "v", T0, total=10, event_id="00000000-0000-4000-8000-000000000001")
    again = dict(first, received_at="2026-03-02T12:01:00.000Z")  # re-sent 60 s later
    much_later = dict(first, received_at="2026-03-02T12:20:00.000Z")  # beyond a 10-minute window
    other = event("purchase", "v", T0 + timedelta(seconds=1), total=10)
    run = run_flow(
        msgs(first, again, other, much_later),
        TEST_CONFIG.with_(dedupe_window=timedelta(minutes=10)),
    )

    day = run.day_totals(DAY.date())
    assert day.purchases == 3  # first + other + the copy the window no longer remembers
    assert metric(run, "10s", T0).purchases == 2


def test_bad_payloads_go_to_the_dlq_with_a_reason_and_count_as_errors():
    good = event("page_view", "v", T0 + timedelta(seconds=1))
    missing = event("page_view", "v", T0 + timedelta(seconds=2))
    del missing["context"]
    collector_reject = DlqRecord(
        reason="wrong_type",
        error="x",
        raw="{}",
        raw_bytes=2,
        received_at=T0 + timedelta(seconds=3),
        source="collector",
    )
    own_record = msgspec.structs.replace(collector_reject, source="stream")
    records = [
        message(good),
        message(b'{"event_type": "page_view", "anon', key="v", received=T0 + timedelta(seconds=2)),
        message(missing),
        message(msgspec.json.encode(collector_reject), topic=DLQ_TOPIC, partition=0, key=None),
        message(msgspec.json.encode(own_record), topic=DLQ_TOPIC, partition=0, key=None),
    ]
    error = KafkaError(
        err="broker went away", msg=message(b"", key="v", received=T0 + timedelta(seconds=4))
    )
    run = run_flow([*numbered(records), error])

    reasons = sorted(json.loads(m.value)["reason"] for m in run.dlq)
    assert reasons == ["kafka_source_error", "malformed_json", "missing_field"]
    assert all(json.loads(m.value)["source"] == "stream" for m in run.dlq)
    assert all(m.topic == DLQ_TOPIC and ("source", b"stream") in m.headers for m in run.dlq)
    window = metric(run, "10s", T0)
    # 3 stream rejects + the collector's DLQ record; the stream's own record is not counted twice
    assert (window.events, window.rejected, window.error_rate) == (1, 4, 0.8)


# -- sessions --------------------------------------------------------------------------------------
def test_sessions_span_windows_and_midnight_and_split_after_30_minutes():
    night = date(2026, 3, 2)
    late_evening = at(23, 50)
    docs = [
        event("page_view", "s", late_evening, event_id="00000000-0000-4000-8000-00000000000a"),
        event("add_to_cart", "s", late_evening + timedelta(minutes=12)),
        event("purchase", "s", late_evening + timedelta(minutes=40), total=99.99),  # 00:30 next day
        event("page_view", "s", late_evening + timedelta(minutes=71)),  # 31 min later: new session
        ticker(late_evening + timedelta(hours=3), "s"),
    ]
    run = run_flow(msgs(*docs))
    sessions = sorted(run.rows("sessions").values(), key=lambda s: s.started_at)

    assert len(sessions) == 3
    first = sessions[0]
    assert first.session_id == session_id("s", "00000000-0000-4000-8000-00000000000a")
    assert first.session_date == night  # counted on the day it started, like silver
    assert (first.started_at, first.ended_at) == (
        late_evening,
        late_evening + timedelta(minutes=40),
    )
    assert first.duration_seconds == 2400.0
    assert (first.n_events, first.n_page_views, first.n_add_to_carts, first.n_purchases) == (
        3,
        1,
        1,
        1,
    )
    assert first.is_converted and first.revenue == 99.99 and not first.is_bot
    assert sessions[1].n_events == 1 and sessions[1].session_date == date(2026, 3, 3)


def test_active_sessions_count_visitors_with_an_event_in_the_last_30_minutes():
    docs = [
        event("page_view", "a", at(10, 0, 30)),
        event("page_view", "b", at(10, 1, 30)),
        event("page_view", "a", at(10, 20)),
        ticker(at(11, 0), "a"),  # carries the shards' watermarks past 10:40
        ticker(at(11, 0), "b"),
    ]
    run = run_flow(msgs(*docs), replay_config(TEST_CONFIG.with_(sub_shards=1)))
    active = {k[0]: r.active_sessions for k, r in run.rows("active_sessions").items()}

    assert active[at(10, 0)] == 1  # minute ending 10:01: only a
    assert active[at(10, 1)] == 2  # minute ending 10:02: a and b
    assert active[at(10, 30)] == 2  # b's event at 10:01:30 is within the 30 minutes up to 10:31
    assert active[at(10, 31)] == 1  # ... but not within those up to 10:32
    assert active[at(10, 48)] == 1 and at(10, 49) not in active  # a's last event was at 10:20


def test_closed_sessions_free_their_state():
    logic = SessionsLogic(TEST_CONFIG, None)
    peak, closed = 0, 0
    for minute in range(600):  # 10 hours, a new visitor every minute, each visiting once
        doc = event("page_view", f"visitor-{minute}", DAY + timedelta(minutes=minute))
        out, _ = logic.on_batch([decode_message(message(doc, partition=0), 1, DLQ_TOPIC)])
        closed += sum(isinstance(x, Session) for x in out)
        peak = max(peak, len(logic.s["open"]))
    assert peak <= 32  # about 30 minutes of visitors, not 600
    assert closed >= 600 - 32


# -- alerts ----------------------------------------------------------------------------------------
def alerts(run) -> list:
    return sorted(run.rows("alerts").values(), key=lambda a: (a.rule, a.window_start))


def test_bot_click_cadence_alerts_once_per_visitor():
    bot = [event("product_view", "bot", T0 + timedelta(milliseconds=50 * i)) for i in range(8)]
    coarse = [
        event("product_view", "coarse-clock", T0) for _ in range(6)
    ]  # equal stamps: not a bot
    human = [event("product_view", "human", T0 + timedelta(seconds=9 * i)) for i in range(8)]
    run = run_flow(msgs(*bot, *coarse, *human))

    found = alerts(run)
    assert [(a.rule, a.subject) for a in found] == [("bot_click_cadence", "bot")]
    assert json.loads(found[0].evidence)["clicks"] == 5
    assert len([m for m in run.topics if m.topic == "shop.alerts"]) == 1
    assert [s.is_bot for s in run.rows("sessions").values() if s.anonymous_id == "bot"] == [True]


def test_large_purchase_needs_a_prior_average_and_alerts_once():
    docs = [
        event("purchase", "first-timer", T0, total=5000),  # no prior orders: no average to compare
        event("purchase", "regular", T0 + timedelta(minutes=1), total=20),
        event("purchase", "regular", T0 + timedelta(minutes=2), total=30),
        event("purchase", "regular", T0 + timedelta(minutes=3), total=125),  # 5 x 25 is not above
        event("purchase", "regular", T0 + timedelta(minutes=4), total=300, order_id="o-big"),
    ]
    run = run_flow(msgs(*docs))
    found = alerts(run)
    assert [(a.rule, a.subject) for a in found] == [("large_purchase", "regular")]
    ev = json.loads(found[0].evidence)
    assert (ev["order_id"], ev["order_total"], ev["prior_orders"]) == ("o-big", 300.0, 3)


def minute_of_traffic(minute: int, n: int, tag: str, **fields) -> list[dict]:
    start = T0 + timedelta(minutes=minute)
    return [
        event("page_view", f"{tag}-{i % 50}", start + timedelta(seconds=59 * i / n), **fields)
        for i in range(n)
    ]


def test_traffic_spike_alerts_once_and_needs_a_baseline():
    docs = (
        minute_of_traffic(0, 40, "a")
        + minute_of_traffic(1, 130, "b")  # > 3 x 40: spike
        + minute_of_traffic(2, 130, "c")  # same as before: no spike
        + minute_of_traffic(10, 5, "d")  # quiet minute ...
        + minute_of_traffic(11, 50, "e")  # ... 10x, but the baseline is below the minimum
    )
    run = run_flow(msgs(*sorted(docs, key=lambda d: d["received_at"])))
    found = alerts(run)
    assert [(a.rule, a.window_start) for a in found] == [
        ("traffic_spike", T0 + timedelta(minutes=1))
    ]
    assert json.loads(found[0].evidence)["previous_events"] == 40


def test_revenue_drop_alerts_once_and_needs_a_baseline():
    def purchases(minute: int, n: int, total: float) -> list[dict]:
        start = T0 + timedelta(minutes=minute)
        return [
            event("purchase", f"buyer-{minute}-{i}", start + timedelta(seconds=10 * i), total=total)
            for i in range(n)
        ]

    docs = (
        purchases(0, 6, 100)  # 5-minute window 12:00: 600
        + purchases(5, 1, 100)  # 12:05: 100 < 50 % of 600: drop
        + purchases(10, 1, 100)  # 12:10: previous had one purchase only (baseline below 5)
        + purchases(15, 1, 100)
    )
    run = run_flow(msgs(*docs))
    found = alerts(run)
    assert [(a.rule, a.window_start) for a in found] == [
        ("revenue_drop", T0 + timedelta(minutes=5))
    ]
    assert json.loads(found[0].evidence)["previous_revenue"] == 600.0


def test_error_rate_alerts_above_one_percent_of_a_minute():
    def rejects(minute: int, n: int) -> list:
        when = T0 + timedelta(minutes=minute, seconds=30)
        return [
            message(b"{not json", key=f"r{i}", received=when + timedelta(milliseconds=i))
            for i in range(n)
        ]

    normal = [message(d) for d in minute_of_traffic(0, 200, "a") + minute_of_traffic(1, 200, "b")]
    records = sorted(normal + rejects(0, 3) + rejects(1, 1), key=lambda m: m.timestamp[1])
    run = run_flow(numbered(records))
    found = alerts(run)
    assert [(a.rule, a.window_start, a.severity) for a in found] == [("error_rate", T0, "critical")]
    assert json.loads(found[0].evidence)["rejected"] == 3


def test_steady_traffic_raises_no_alert():
    docs = []
    for minute in range(30):
        docs += minute_of_traffic(minute, 60, f"m{minute}")
        docs.append(
            event(
                "purchase", f"m{minute}-0", T0 + timedelta(minutes=minute, seconds=59.5), total=50
            )
        )
    run = run_flow(msgs(*sorted(docs, key=lambda d: d["received_at"])))
    assert run.rows("alerts") == {}
    assert len(run.rows("window_metrics")) > 100


# -- products and daily totals ---------------------------------------------------------------------
def test_top_products_rank_by_views_and_cart_adds_with_ties_by_id():
    def views(pid: str, n: int) -> list[dict]:
        return [
            event("product_view", f"v-{pid}-{i}", T0 + timedelta(seconds=i), product_id=pid)
            for i in range(n)
        ]

    docs = views("p-a", 5) + views("p-c", 3) + views("p-b", 3) + views("p-d", 1)
    docs += [event("add_to_cart", "cart", T0 + timedelta(seconds=30), product_id="p-d")]
    run = run_flow(msgs(*docs), TEST_CONFIG.with_(top_n=3))
    top = run.rows("top_products")

    by_views = [(top[(T0, "views", r)].product_id, top[(T0, "views", r)].count) for r in (1, 2, 3)]
    assert by_views == [("p-a", 5), ("p-b", 3), ("p-c", 3)]
    assert (T0, "views", 4) not in top
    assert (top[(T0, "add_to_carts", 1)].product_id, top[(T0, "add_to_carts", 1)].count) == (
        "p-d",
        1,
    )
    assert (T0, "add_to_carts", 2) not in top


def test_daily_totals_take_late_events_up_to_the_limit_and_split_out_bots():
    bot_ua = "python-requests/2.31"
    docs = [
        event("purchase", "a", at(10), total=10, order_id="o-1"),
        event("purchase", "a", at(11), total=15, order_id="o-1"),  # same order again: one order
        event("page_view", "b", at(23, 59, 59.9)),
        event("purchase", "bot", at(12), total=7, user_agent=bot_ua),
        event("page_view", "c", at(0, 0, 1, day=DAY + timedelta(days=1))),
        # two days late: still counted in its day; four days late: beyond the 3-day limit
        event("page_view", "d", at(9), at(9, day=DAY + timedelta(days=2))),
        event("page_view", "e", at(8), at(9, 0, 1, day=DAY + timedelta(days=4))),
    ]
    run = run_flow(msgs(*sorted(docs, key=lambda d: d["received_at"])))
    day = run.day_totals(DAY.date())

    assert (day.events, day.bot_events, day.purchases, day.orders) == (5, 1, 3, 2)
    assert (day.revenue, day.bot_revenue, day.unique_visitors) == (32.0, 7.0, 4)
    assert run.day_totals(date(2026, 3, 3)).events == 1
    assert run.rows("late_events")[("1d", DAY)].events == 1
    # split by the day each arrived, as bronze partitions them: "b" (23:59:59.9) arrived after
    # midnight, "d" two days later
    by_arrival = {a: r for (d, a), r in run.rows("daily_totals").items() if d == DAY.date()}
    arrivals = {a: r.events for a, r in by_arrival.items()}
    assert arrivals == {DAY.date(): 3, date(2026, 3, 3): 1, date(2026, 3, 4): 1}
    assert by_arrival[date(2026, 3, 4)].unique_visitors == 1  # "d" was first seen that day


def test_events_older_than_a_week_behind_the_watermark_are_not_kept_anywhere():
    docs = [
        event("page_view", "a", at(12)),
        event("page_view", "a", at(11, day=DAY - timedelta(days=8)), at(12, 0, 1)),  # 8 days late
    ]
    run = run_flow(msgs(*docs))
    assert run.rows("late_events") == {}
    assert {d for d, _ in run.rows("daily_totals")} == {DAY.date()}
    assert run.day_totals(DAY.date()).events == 1


# -- the reference, recovery and silver parity ------------------------------------------------------
@pytest.fixture(scope="module")
def simulated() -> list:
    """Two simulated days (a few thousand events) with every kind of fault, as Kafka records."""
    sink = MemorySink()
    faults = FaultRates(
        duplicate=0.02, late=0.02, bot_burst=0.05, malformed_json=0.01, missing_field=0.005
    )
    simulate(
        SimConfig(start=date(2026, 2, 2), days=2, users=600, seed=11, faults=faults),
        sink,
        None,
        show_progress=False,
    )
    return reference.kafka_messages(sink.records, Ingestor(Pseudonymizer(b"test-key", "k1")))


@pytest.mark.parametrize("batch_size", [1, 250])
def test_flow_outputs_equal_the_reference_on_simulated_traffic(simulated, batch_size):
    config = replay_config(StreamConfig())
    run = run_flow(simulated, config, batch_size=batch_size)
    expected = reference.compute(simulated, config)

    assert len(simulated) > 2000
    got = run.tables()
    assert set(got) == set(expected.tables)
    for table, rows in expected.tables.items():
        assert got[table] == rows, table
    assert (
        sorted(m.value for m in run.dlq) == sorted(expected.dlq) == []
    )  # the collector rejected them
    # the comparison covered every kind of output
    assert {"bot_click_cadence"} <= {a.rule for a in expected.tables["alerts"].values()}
    assert len(expected.tables["late_events"]) > 0 and len(expected.tables["sessions"]) > 200
    assert sum(r.rejected for r in expected.tables["window_metrics"].values()) > 0
    # each window was emitted once: no correction was needed when every shard is awaited
    keys = [row.key() for t, row in run.emitted if t == "window_metrics"]
    assert len(keys) == len(set(keys))


def test_a_resumed_run_ends_with_the_same_tables(simulated, tmp_path):
    config = replay_config(StreamConfig(daily_emit_interval=timedelta(days=1)))
    cut = [len(simulated) // 3, 2 * len(simulated) // 3]
    items = [
        *simulated[: cut[0]],
        TestingSource.ABORT(),
        *simulated[cut[0] : cut[1]],
        TestingSource.ABORT(),
        *simulated[cut[1] :],
    ]
    init_db_dir(tmp_path, 1)
    emitted: list = []
    flow = build_flow(
        TestingSource(items, batch_size=50), Sinks(tables=TestingSink(emitted)), config
    )
    for _ in range(3):  # two aborts, then to the end
        run_main(flow, epoch_interval=timedelta(0), recovery_config=RecoveryConfig(tmp_path))

    resumed: dict = {}
    for table, row in emitted:
        resumed.setdefault(table, {})[row.key()] = row
    assert resumed == reference.compute(simulated, config).tables


def test_bot_rules_are_the_ones_silver_applies():
    """Both layers take the bot rules from shoplake.core.rules: same agents, same cadence."""
    from pipeline_assets.silver import events as silver
    from shoplake.core import rules
    from streaming.events import is_bot_agent

    assert (silver.BOT_USER_AGENT, silver.BOT_GAP, silver.BOT_MIN_CLICKS) == (
        rules.BOT_USER_AGENT,
        rules.BOT_GAP,
        rules.BOT_MIN_CLICKS,
    )
    assert (TEST_CONFIG.rules.bot_gap, TEST_CONFIG.rules.bot_min_clicks) == (
        rules.BOT_GAP,
        rules.BOT_MIN_CLICKS,
    )
    for agent in ["Googlebot/2.1", "curl/8.5", "HeadlessChrome/120", "Mozilla/5.0 Firefox/121"]:
        assert is_bot_agent(agent) == bool(rules.BOT_USER_AGENT.search(agent))
    assert is_bot_agent("Googlebot/2.1") and not is_bot_agent("Mozilla/5.0 Firefox/121")


def test_timestamps_are_utc_and_windows_aligned():
    run = run_flow(msgs(event("page_view", "v", T0 + timedelta(seconds=17.5))))
    start = next(iter(run.rows("window_metrics").values())).window_start
    assert start.utcoffset() == timedelta(0)
    assert {k[1] for k in run.rows("window_metrics")} == {T0 + timedelta(seconds=10), T0}


def test_the_reference_shares_no_rule_with_the_flow():
    """The reference is an oracle only if it computes the outputs with its own code: a rule it
    imported from the flow would be wrong on both sides, and the comparison could not tell."""
    import ast
    from pathlib import Path

    rule_modules = {"alerts", "sessions", "live_metrics", "products", "daily", "dedupe"}
    forbidden = {f"streaming.{m}" for m in rule_modules}
    event_rules = {"decode_message", "LiveEvent", "Reject"}
    tree = ast.parse(Path(reference.__file__).read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name in forbidden]
        elif isinstance(node, ast.ImportFrom):
            module, names = node.module or "", {a.name for a in node.names}
            if module in forbidden:
                found.append(module)
            elif module == "streaming":  # from streaming import alerts
                found += [f"streaming.{n}" for n in names & rule_modules]
            elif module == "streaming.events":
                found += [f"streaming.events.{n}" for n in names & (event_rules | {"*"})]
    assert found == [], f"streaming/reference.py imports the flow's rules: {found}"


# -- live mode: idle shards and stragglers ---------------------------------------------------------
def test_a_live_merge_stops_waiting_for_idle_shards_and_corrects_stragglers():
    from streaming.live_metrics import SliceTotals, finish_metrics, merge_metrics
    from streaming.windows import WINDOW_10S, Mark, MergeLogic, Partial

    now = [1000.0]
    config = StreamConfig(
        idle_advance=True, idle_timeout=timedelta(seconds=30), expected_shards=("a", "b")
    )
    logic = MergeLogic(
        WINDOW_10S, merge_metrics, finish_metrics(WINDOW_10S), config, None, clock=lambda: now[0]
    )
    start = int(T0.timestamp() * 1000)
    values = {("all", "all"): SliceTotals(events=2, page_views=1, visitors=1)}

    out, _ = logic.on_batch([Partial(start, values), Mark("a", start + 20_000)])
    assert out == []  # shard b has not marked yet
    now[0] += 60
    assert logic.on_notify()[0] == []  # b idle for 60 s: not yet three idle timeouts
    now[0] += 40
    (row,) = [r for r in logic.on_notify()[0] if r.dimension == "all"]
    assert row.events == 2
    out, _ = logic.on_batch([Partial(start, values), Mark("b", start + 20_000)])  # b shows up late
    assert [r.events for r in out if r.dimension == "all"] == [4]  # the window, corrected


def test_an_idle_shard_advances_its_watermark_with_the_wall_clock(monkeypatch):
    import time as time_module

    from streaming.live_metrics import WindowMetricsLogic
    from streaming.windows import WINDOW_10S, Mark, Partial

    wall = [T0.timestamp()]
    monkeypatch.setattr(time_module, "time", lambda: wall[0])
    monkeypatch.delenv(clock.ENV, raising=False)  # the wall clock above is the shoplake clock
    config = StreamConfig(
        idle_advance=True, idle_timeout=timedelta(seconds=30), lateness=timedelta(seconds=10)
    )
    logic = WindowMetricsLogic(WINDOW_10S, config, None)
    item = decode_message(message(event("page_view", "v", T0), partition=0), 8, DLQ_TOPIC)
    out, _ = logic.on_batch([item])
    assert not any(isinstance(x, Partial) for x in out)
    assert logic.notify_at() == T0 + timedelta(seconds=30)
    wall[0] += 70  # nothing arrived for 70 s: the partition is at its end
    out, _ = logic.on_notify()
    assert [p.window_start_ms for p in out if isinstance(p, Partial)] == [
        int(T0.timestamp() * 1000)
    ]
    assert isinstance(out[-1], Mark) and out[-1].watermark_ms == int(T0.timestamp() * 1000) + 30_000


def test_an_idle_shard_of_the_visitor_alerts_advances_after_the_idle_timeout(monkeypatch):
    """Guards the per-visitor alert step's wall-clock advance: it must wake after idle_timeout
    (30 s), not after the 30-minute session gap it also uses to forget click runs."""
    import time as time_module

    from streaming.alerts import VisitorAlertsLogic

    wall = [T0.timestamp()]
    monkeypatch.setattr(time_module, "time", lambda: wall[0])
    monkeypatch.delenv(clock.ENV, raising=False)  # the wall clock above is the shoplake clock
    config = StreamConfig(idle_advance=True, idle_timeout=timedelta(seconds=30))
    logic = VisitorAlertsLogic(config, None)
    item = decode_message(message(event("page_view", "v", T0), partition=0), 8, DLQ_TOPIC)
    logic.on_batch([item])
    assert logic.notify_at() == T0 + timedelta(seconds=30)
    wall[0] += 40
    logic.on_notify()
    assert logic.s["wm"] == int(T0.timestamp() * 1000) + 10_000 - 30_000  # now - idle - lateness


def test_metrics_sessions_and_alerts_are_produced_to_their_topics():
    docs = [event("product_view", "bot", T0 + timedelta(milliseconds=40 * i)) for i in range(6)]
    run = run_flow(msgs(*docs))
    by_topic: dict = {}
    for m in run.topics:
        by_topic.setdefault(m.topic, []).append(m)
    assert set(by_topic) == {
        "shop.metrics.10s",
        "shop.metrics.1m",
        "shop.metrics.5m",
        "shop.alerts",
        "shop.sessions",
    }
    first = by_topic["shop.metrics.10s"][0]
    assert first.key.decode().startswith("metrics|2026-03-02T12:00:00+00:00|")
    assert json.loads(first.value)["events"] == 6
    assert json.loads(by_topic["shop.sessions"][0].value)["is_bot"] is True


# -- where the independent oracle caught the flow ---------------------------------------------------
@pytest.mark.parametrize("batch_size", [1, 100])
def test_a_large_purchase_delivered_again_alerts_once(batch_size):
    """The same purchase re-delivered after the dedupe window used to alert a second time, its
    average including itself."""
    docs = [event("purchase", "regular", T0 + timedelta(minutes=i), total=10) for i in range(10)]
    big = event("purchase", "regular", T0 + timedelta(minutes=11), total=300, order_id="o-big")
    clock_event = event("page_view", "clock", T0 + timedelta(minutes=25))
    msgs = numbered([message(d, partition=0) for d in [*docs, big, clock_event, big]])
    run = run_flow(msgs, TEST_CONFIG.with_(sub_shards=1), batch_size=batch_size)
    alerts = [a for a in run.rows("alerts").values() if a.rule == "large_purchase"]
    assert len(alerts) == 1 and json.loads(alerts[0].evidence)["prior_orders"] == 10
    assert len([m for m in run.topics if m.topic == "shop.alerts"]) == 1


@pytest.mark.parametrize("batch_size", [1, 2, 100])
def test_a_bot_burst_that_arrives_late_is_still_one_run(batch_size):
    """Five clicks 50 ms apart that arrive two hours late used to alert only in big batches: the
    click run was forgotten by event time between batches."""
    docs = [event("page_view", "clock", T0 - timedelta(seconds=1))]
    docs += [
        event(
            "page_view",
            "late-bot",
            at(10) + timedelta(milliseconds=50 * i),
            T0 + timedelta(minutes=1, milliseconds=i),
        )
        for i in range(5)
    ]
    run = run_flow(
        numbered(message(d, partition=0) for d in docs),
        TEST_CONFIG.with_(sub_shards=1),
        batch_size=batch_size,
    )
    assert [a.subject for a in run.rows("alerts").values()] == ["late-bot"]


@pytest.mark.parametrize("batch_size", [1, 100])
def test_a_replay_for_a_closed_day_does_not_count_its_visitor_twice(batch_size):
    """An event replayed from the DLQ with its original receive time, after its day's visitors
    were forgotten, used to count its visitor again (batch size 1 only)."""
    day5 = DAY + timedelta(days=5)
    docs = [
        event("page_view", "v", at(9)),
        event("page_view", "other", at(9, day=day5)),
        event("page_view", "v", at(8), at(10)),
    ]
    run = run_flow(
        numbered(message(d, partition=0) for d in docs),
        TEST_CONFIG.with_(sub_shards=1),
        batch_size=batch_size,
    )
    assert run.day_totals(DAY.date()).unique_visitors == 1
    assert run.rows("late_events")[("1d", DAY)].events == 1  # counted as late, not lost


# -- every alert rule at its threshold, whole rows against the reference ----------------------------
def test_every_alert_rule_at_its_edges_equals_the_reference():
    """Guards each alert's whole row (id, severity, window, subject, evidence) and each rule's
    threshold edge: the flow must equal the independent reference, and exactly the cases just
    past a threshold alert ("above" is strict, "at least" is inclusive)."""
    h = timedelta(hours=1)
    m = timedelta(minutes=1)
    docs = [
        # large_purchase: 5 x the average exactly does not alert; a cent more does
        event("purchase", "lp-equal", T0, total=20),
        event("purchase", "lp-equal", T0 + m, total=100, order_id="o-equal"),
        # an average of 10.015 (rounded to cents in the evidence): 50.08 is above 5x
        event("purchase", "lp-above", T0, total=10.01),
        event("purchase", "lp-above", T0 + timedelta(seconds=1), total=10.02),
        event("purchase", "lp-above", T0 + m, total=50.08, order_id="o-above"),
        event("purchase", "lp-first", T0 + m, total=5000),  # no prior order: no average
    ]
    # bot_click_cadence: 5 clicks 99 ms apart alert; 100 ms apart, or only 4 clicks, do not
    for visitor, n, gap in (("bot-99", 5, 99), ("bot-100", 5, 100), ("bot-four", 4, 50)):
        docs += [
            event("page_view", visitor, T0 + 2 * m + timedelta(milliseconds=gap * i))
            for i in range(n)
        ]
    # traffic_spike: a 30-event minute (the minimum baseline), then 3x exactly, then 3x + 1
    for minute, n in ((0, 30), (1, 90), (2, 30), (3, 91)):
        docs += minute_of_traffic(60 + minute, n, f"spike{minute}")
    # below the baseline: 29 events, then 10x
    docs += minute_of_traffic(70, 29, "quiet") + minute_of_traffic(71, 290, "loud")
    # revenue_drop: 5 purchases (the minimum) for 500, then exactly half, then a cent under half
    for window, amounts in ((0, [100] * 5), (1, [50] * 5), (2, [124.99])):
        start = T0 + 2 * h + window * 5 * m
        docs += [
            event("purchase", f"rd-{window}-{i}", start + timedelta(seconds=10 * i), total=a)
            for i, a in enumerate(amounts)
        ]
    records = [message(d) for d in docs]

    # error_rate: 1 rejected of 100 (exactly 1 %) does not alert; 2 of 100 (the minimum total)
    # and 2 of 103 (a rate that rounds) do
    def rejects(start, n: int, tag: str) -> list:
        return [
            message(b"{not json", key=f"{tag}{i}", received=start + timedelta(seconds=50 + i))
            for i in range(n)
        ]

    for minute, good, bad in ((0, 99, 1), (2, 98, 2), (4, 101, 2)):  # each after a quiet minute
        start = T0 + 3 * h + minute * m
        records += [message(d) for d in minute_of_traffic(180 + minute, good, f"er{minute}")]
        records += rejects(start, bad, f"bad{minute}-")
    records = numbered(sorted(records, key=lambda r: r.timestamp[1]))

    run = run_flow(records)
    expected = reference.compute(records, TEST_CONFIG)
    assert run.tables()["alerts"] == expected.tables["alerts"]

    fired = sorted((a.rule, a.subject, a.window_start) for a in run.rows("alerts").values())
    assert fired == sorted(
        [
            ("large_purchase", "lp-above", T0 + m),
            ("bot_click_cadence", "bot-99", T0 + 2 * m),
            ("traffic_spike", "1m:all", T0 + 63 * m),
            ("revenue_drop", "5m:all", T0 + 2 * h + 10 * m),
            ("error_rate", "1m:all", T0 + 3 * h + 2 * m),
            ("error_rate", "1m:all", T0 + 3 * h + 4 * m),
        ]
    )


def test_daily_totals_of_bots_orders_and_late_purchases_equal_the_reference():
    """Guards the daily totals' counters one by one (bot events and revenue, distinct orders,
    visitors) and what a purchase too late for its day counts in late_events, against the
    reference and against the numbers written here."""
    bot_ua = "Googlebot/2.1"
    docs = [
        event("purchase", "bot", T0, total=7, order_id="o-bot-1", user_agent=bot_ua),
        event(
            "purchase",
            "bot",
            T0 + timedelta(seconds=1),
            total=8,
            order_id="o-bot-2",
            user_agent=bot_ua,
        ),
        event("page_view", "bot", T0 + timedelta(seconds=2), user_agent=bot_ua),
        event("purchase", "human", T0 + timedelta(seconds=3), total=10, order_id="o-h"),
        event(
            "purchase", "human", T0 + timedelta(seconds=4), total=10, order_id="o-h"
        ),  # same order
        # four days late: beyond the daily lateness (3 days), counted as a late 1d event
        event("purchase", "late", T0 - timedelta(days=4), T0 + timedelta(seconds=5), total=2.5),
        event("page_view", "late", T0 - timedelta(days=4), T0 + timedelta(seconds=6)),
        event("page_view", "late", T0 - timedelta(days=4), T0 + timedelta(seconds=6.5)),
        # exactly three days late, at noon: still counted in its own day
        event("page_view", "edge", T0 - timedelta(days=3), T0 + timedelta(seconds=7)),
    ]
    records = msgs(*docs)
    run = run_flow(records)
    expected = reference.compute(records, TEST_CONFIG)
    for table in ("daily_totals", "late_events"):
        assert run.tables()[table] == expected.tables[table], table

    day = run.day_totals(DAY.date())
    assert (day.events, day.bot_events, day.purchases, day.orders) == (5, 3, 4, 3)
    assert (day.revenue, day.bot_revenue, day.unique_visitors) == (35.0, 15.0, 2)
    (late,) = [r for r in run.rows("late_events").values() if r.window_size == "1d"]
    assert (late.events, late.purchases, late.revenue) == (3, 1, 2.5)
    edge = run.rows("daily_totals")[((DAY - timedelta(days=3)).date(), DAY.date())]
    assert (edge.events, edge.unique_visitors) == (1, 1)
