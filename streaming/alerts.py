"""Anomaly alerts.

Per visitor (stage 1, in the visitor's shard):
- ``bot_click_cadence``: at least 5 events in a row, each less than 100 ms after the previous
  (silver's bot rule), once per visitor and day;
- ``large_purchase``: an order above 5x the visitor's average order value so far (it needs a
  prior order), once per order.

Per window (after the merge, on the ``all`` slice):
- ``traffic_spike``: a minute with more than 3x the events of the minute before (+200 %);
- ``error_rate``: a minute where rejected / (accepted + rejected) is above 1 %;
- ``revenue_drop``: 5 minutes with less than half the revenue of the 5 minutes before.
Each window rule needs a minimum baseline, so quiet windows do not alert.

An alert's id hashes its rule and subject (visitor and day, order, or window), so a condition
alerts once even when a window is re-emitted or the stream is replayed.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable
from dataclasses import dataclass

import msgspec
from bytewax.operators import StatefulBatchLogic

from shoplake.core.speed.rows import Alert, WindowMetrics, alert_id
from shoplake.core.stream_config import AlertRules, StreamConfig
from streaming.events import LiveEvent, from_ms
from streaming.windows import WINDOW_1M, ShardLogic, TumblingWindower

DAY_MS = 86_400_000


def evidence(**values) -> str:
    return msgspec.json.encode(values, order="sorted").decode()


@dataclass(slots=True)
class ClickRun:
    """A visitor's current run of quick clicks (stage 1, per visitor)."""

    previous_ms: int  # event time of the visitor's previous event, in arrival order
    clicks: int  # events in the current quick run
    last_received_ms: int  # when the visitor's latest event arrived, for eviction

    def __reduce__(self):  # snapshots hold one per visitor: pickle the fields, not a slot dict
        return ClickRun, (self.previous_ms, self.clicks, self.last_received_ms)


@dataclass(slots=True)
class BuyerState:
    """A visitor's orders so far (stage 1, per visitor), for the large-purchase rule."""

    orders: int
    revenue_cents: int
    last_event_ms: int  # event time of the latest order, for eviction
    order_ids: set[str | None]  # an order counts once, however often it arrives

    def __reduce__(self):  # as ClickRun's
        return BuyerState, (self.orders, self.revenue_cents, self.last_event_ms, self.order_ids)


def next_run(run: ClickRun | None, event_ms: int, received_ms: int, bot_gap_ms: int) -> ClickRun:
    """The visitor's click run after one more event, updated in place (silver's rule: a gap
    counts when 0 < gap < bot_gap; equal stamps are coarse clocks, not bots)."""
    if run is None:
        return ClickRun(event_ms, 1, received_ms)
    gap = event_ms - run.previous_ms
    run.clicks = run.clicks + 1 if 0 < gap < bot_gap_ms else 1
    run.previous_ms = event_ms
    run.last_received_ms = received_ms
    return run


def bot_alert(e: LiveEvent, clicks: int, bot_gap_ms: int) -> Alert:
    return Alert(
        alert_id=alert_id("bot_click_cadence", e.anonymous_id, e.event_ms // DAY_MS),
        rule="bot_click_cadence",
        severity="warning",
        window_start=from_ms(WINDOW_1M.start_ms(e.event_ms)),
        subject=e.anonymous_id,
        evidence=evidence(
            clicks=clicks,
            max_gap_ms=bot_gap_ms,
            event_id=e.event_id,
            event_at=e.event_at.isoformat(),
            bot_user_agent=e.is_bot_ua,
        ),
    )


def large_purchase_alert(e: LiveEvent, orders: int, cents: int, rules: AlertRules) -> Alert | None:
    """An alert if this purchase is above factor x the average of the visitor's prior orders."""
    average = cents / orders
    if (
        orders < rules.big_purchase_min_orders
        or e.revenue_cents <= rules.big_purchase_factor * average
    ):
        return None
    return Alert(
        alert_id=alert_id("large_purchase", e.anonymous_id, e.order_id or e.event_id),
        rule="large_purchase",
        severity="warning",
        window_start=from_ms(WINDOW_1M.start_ms(e.event_ms)),
        subject=e.anonymous_id,
        evidence=evidence(
            order_id=e.order_id,
            order_total=e.revenue_cents / 100,
            average_order_value=round(average / 100, 2),
            prior_orders=orders,
            factor=rules.big_purchase_factor,
        ),
    )


def window_alerts(cur: WindowMetrics, prev: WindowMetrics | None, rules: AlertRules) -> list[Alert]:
    """The window rules for one ``all``-slice window, given the window before it (if any)."""
    r = rules
    found: list[tuple[str, str, str]] = []
    if cur.window_size == "1m":
        if (
            prev is not None
            and prev.events >= r.spike_min_events
            and cur.events > r.spike_ratio * prev.events
        ):
            found.append(
                (
                    "traffic_spike",
                    "warning",
                    evidence(
                        events=cur.events,
                        previous_events=prev.events,
                        ratio=round(cur.events / prev.events, 3),
                        threshold=r.spike_ratio,
                    ),
                )
            )
        total = cur.events + cur.rejected
        if total >= r.error_min_total and cur.rejected > r.error_rate * total:
            found.append(
                (
                    "error_rate",
                    "critical",
                    evidence(
                        rejected=cur.rejected,
                        events=cur.events,
                        error_rate=round(cur.rejected / total, 6),
                        threshold=r.error_rate,
                    ),
                )
            )
    elif (
        cur.window_size == "5m"
        and prev is not None
        and prev.purchases >= r.drop_min_purchases
        and cur.revenue < r.drop_ratio * prev.revenue
    ):
        found.append(
            (
                "revenue_drop",
                "critical",
                evidence(
                    revenue=cur.revenue,
                    previous_revenue=prev.revenue,
                    purchases=cur.purchases,
                    previous_purchases=prev.purchases,
                    threshold=r.drop_ratio,
                ),
            )
        )
    subject = f"{cur.window_size}:all"
    return [
        Alert(
            alert_id=alert_id(rule, subject, cur.window_start.isoformat()),
            rule=rule,
            severity=severity,
            window_start=cur.window_start,
            subject=subject,
            evidence=ev,
        )
        for rule, severity, ev in found
    ]


class VisitorAlertsLogic(ShardLogic):
    """Stage 1: per-visitor click runs and order values, with eviction.

    Eviction runs as the watermark passes each minute and day (:meth:`on_advance`, item by item),
    so what is forgotten never depends on how items were batched. A click run is forgotten once
    its visitor has sent nothing for the session gap, by arrival: a burst that arrives late is
    still one run.
    """

    def __init__(self, config: StreamConfig, resume: bytes | None):
        super().__init__(config, resume)
        self.rules = config.rules
        self.bot_gap_ms = int(config.rules.bot_gap.total_seconds() * 1000)
        self.session_gap_ms = int(config.session_gap.total_seconds() * 1000)
        self.ttl_ms = int(config.visitor_ttl.total_seconds() * 1000)

    def initial_state(self) -> dict:
        # runs: visitor -> ClickRun; buyers: visitor -> BuyerState; fired: alert id -> day
        return {"runs": {}, "buyers": {}, "fired": {}, "swept": None, "swept_day": None}

    def on_event(self, e: LiveEvent, wm: int) -> list:
        out = []
        s = self.s
        run = next_run(s["runs"].get(e.anonymous_id), e.event_ms, e.received_ms, self.bot_gap_ms)
        s["runs"][e.anonymous_id] = run
        if run.clicks >= self.rules.bot_min_clicks:
            alert = bot_alert(e, run.clicks, self.bot_gap_ms)
            if alert.alert_id not in s["fired"]:
                s["fired"][alert.alert_id] = e.event_ms // DAY_MS
                out.append(alert)
        if e.event_type == "purchase":
            buyer = s["buyers"].get(e.anonymous_id)
            if buyer is None:
                s["buyers"][e.anonymous_id] = BuyerState(
                    1, e.revenue_cents, e.event_ms, {e.order_id}
                )
            # an order counts once, however often it arrives
            elif e.order_id not in buyer.order_ids:
                alert = large_purchase_alert(e, buyer.orders, buyer.revenue_cents, self.rules)
                if alert is not None and alert.alert_id not in s["fired"]:
                    s["fired"][alert.alert_id] = e.event_ms // DAY_MS
                    out.append(alert)
                buyer.orders += 1
                buyer.revenue_cents += e.revenue_cents
                buyer.last_event_ms = max(buyer.last_event_ms, e.event_ms)
                buyer.order_ids.add(e.order_id)
        return out

    def on_advance(self, old_wm: int, new_wm: int) -> list:
        s = self.s
        minute = WINDOW_1M.index(new_wm)
        if s["swept"] is None or minute > s["swept"]:
            s["swept"] = minute
            oldest = new_wm - self.session_gap_ms
            s["runs"] = {v: r for v, r in s["runs"].items() if r.last_received_ms >= oldest}
        day = new_wm // DAY_MS
        if s["swept_day"] is None or day > s["swept_day"]:
            s["swept_day"] = day
            s["fired"] = {a: d for a, d in s["fired"].items() if d >= day - 2}
            oldest = new_wm - self.ttl_ms
            s["buyers"] = {v: b for v, b in s["buyers"].items() if b.last_event_ms >= oldest}
        return []


class WindowAlertsLogic(StatefulBatchLogic):
    """Stage 3, one key per window length: compares each window with the one before."""

    def __init__(self, windower: TumblingWindower, rules: AlertRules, resume: bytes | None):
        self.windower = windower
        self.rules = rules
        self.s = pickle.loads(resume) if resume is not None else {"windows": {}, "fired": set()}

    def on_batch(self, values: list[WindowMetrics]) -> tuple[Iterable, bool]:
        out = []
        length = self.windower.length_ms
        windows = self.s["windows"]
        for row in values:
            start = int(row.window_start.timestamp() * 1000)
            windows[start] = row
            for t in (start, start + length):  # a corrected window changes its successor's baseline
                if t in windows:
                    out.extend(self._judge(windows[t], windows.get(t - length)))
        if windows:
            horizon = max(windows) - 10 * length
            for t in [t for t in windows if t < horizon]:
                del windows[t]
            self.s["fired"] = {a for a in self.s["fired"] if a[1] >= horizon}
        return out, StatefulBatchLogic.RETAIN

    def _judge(self, cur: WindowMetrics, prev: WindowMetrics | None) -> list[Alert]:
        out = []
        start_ms = int(cur.window_start.timestamp() * 1000)
        for alert in window_alerts(cur, prev, self.rules):
            if (alert.alert_id, start_ms) not in self.s["fired"]:
                self.s["fired"].add((alert.alert_id, start_ms))
                out.append(alert)
        return out

    def snapshot(self) -> bytes:
        return pickle.dumps(self.s, protocol=pickle.HIGHEST_PROTOCOL)
