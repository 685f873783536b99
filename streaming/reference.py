"""An independent, plain-Python computation of every speed-layer output over a list of Kafka
messages: the oracle the tests compare the dataflow with.

It shares no rule with the flow. From the flow's modules it takes only what is not a rule: the
output rows (the tables' schema) and their id formats (``shoplake.core.speed.rows``), the settings
(``shoplake.core.stream_config``), which shard a record belongs to (``streaming.events.shard_of``) and the
window alignment (``streaming.windows``). Decoding uses the contracts, as silver does, and the DLQ
record format and size limit of ``shoplake.core.ingest``. Everything else (what an event counts as,
dedupe, windows and lateness, daily totals, sessions, rankings and every alert rule) is written
again below from the documentation (``streaming/README.md``, ``docs/architecture.md``, the
modules' docstrings), in one loop over the messages with dicts. ``tests/test_streaming_flows.py``
checks that it imports none of the flow's rule modules.

Orchestration is reproduced as the flow documents it: each shard (Kafka partition x visitor
bucket) has a watermark, its latest receive time minus the allowed lateness; a repeat dropped by
the dedupe does not move it. A record is decided with the watermark of its shard after its own
receive time: an event whose window ends at or before it is late. Sessions close once their last
event plus the gap is behind the watermark, and active sessions are counted at each minute end
the watermark passes, with the sessions known at that moment.

Unlike the flow it forgets nothing (no eviction of click runs, buyers, fired alerts or daily
visitor sets): the rules as documented, over the whole input. A day's daily totals close once the
watermark is more than the daily lateness (and a day of slack) past it, as documented.
"""

from __future__ import annotations

import random
import zlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import msgspec
from bytewax.connectors.kafka import KafkaError, KafkaSourceMessage

from shoplake.core import clock
from shoplake.core.contracts import ContractViolation, decode_event
from shoplake.core.contracts.event_time import event_time, is_future
from shoplake.core.ingest import MAX_EVENT_BYTES, DlqRecord
from shoplake.core.speed.rows import (
    ActiveSessions,
    Alert,
    DailyTotals,
    LateEvents,
    Row,
    Session,
    TopProduct,
    WindowMetrics,
    alert_id,
    session_id,
)
from shoplake.core.stream_config import StreamConfig
from streaming.events import shard_of
from streaming.windows import LATE_HORIZON_MS, WINDOW_1M, WINDOW_5M, WINDOW_10S

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DAY_MS = 86_400_000
MINUTE_MS = 60_000
WINDOWS = (WINDOW_10S, WINDOW_1M, WINDOW_5M)
# The documented crawler pattern (bot|crawl|spider|scrap|headless|python-requests|curl|wget|
# httpclient, case-insensitive), as plain substrings.
BOT_WORDS = (
    "bot",
    "crawl",
    "spider",
    "scrap",
    "headless",
    "python-requests",
    "curl",
    "wget",
    "httpclient",
)
# Event types with their own counter in window metrics and sessions.
COUNTED = ("page_view", "product_view", "add_to_cart", "begin_checkout", "purchase")


@dataclass
class Reference:
    """Final rows per table and key, and the DLQ records the stream itself writes."""

    tables: dict[str, dict[tuple, Row]] = field(default_factory=lambda: defaultdict(dict))
    dlq: list[bytes] = field(default_factory=list)

    def add(self, row: Row) -> None:
        self.tables[row.TABLE][row.key()] = row


def to_ms(ts: datetime) -> int:
    return (ts - EPOCH) // timedelta(milliseconds=1)


def to_dt(value: int) -> datetime:
    return EPOCH + timedelta(milliseconds=value)


def to_date(day: int) -> date:
    return date(1970, 1, 1) + timedelta(days=day)


def is_bot_agent(user_agent: str | None) -> bool:
    text = (user_agent or "").casefold()
    return any(word in text for word in BOT_WORDS)


def json_of(**values) -> str:
    return msgspec.json.encode(values, order="sorted").decode()


def stream_dlq(reason: str, error: str, raw: bytes, received: int, **extra) -> bytes:
    record = DlqRecord(
        reason=reason,
        error=error,
        raw=raw.decode("utf-8", errors="replace"),
        raw_bytes=len(raw),
        received_at=to_dt(received),
        source="stream",
        **extra,
    )
    return msgspec.json.encode(record)


def kafka_time(msg: KafkaSourceMessage) -> int | None:
    """The record's timestamp (the collector's receive time), if it has one."""
    ts = msg.timestamp
    return ts[1] if ts and ts[0] != 0 and ts[1] > 0 else None


def read(msg, config: StreamConfig) -> dict | None:
    """A Kafka record as a plain dict: ``kind`` event | rejected | future, its shard and receive
    time; None for the stream's own DLQ records read back (counted when they were written)."""
    if isinstance(msg, KafkaError):
        src = msg.msg
        received = kafka_time(src) or clock.now_ms()
        shard = shard_of(src.partition or 0, src.key, config.sub_shards)
        dlq = stream_dlq("kafka_source_error", str(msg.err), b"", received)
        return {"kind": "rejected", "shard": shard, "received": received, "dlq": dlq}
    partition = msg.partition or 0
    raw = msg.value or b""
    if msg.topic == config.dlq_topic:
        shard = f"dlq.{partition}"
        try:
            record = msgspec.json.decode(raw, type=DlqRecord)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return {
                "kind": "rejected",
                "shard": shard,
                "received": kafka_time(msg) or clock.now_ms(),
                "dlq": None,
            }
        if record.source == "stream":
            return None
        return {
            "kind": "rejected",
            "shard": shard,
            "received": to_ms(record.received_at),
            "dlq": None,
        }
    shard = shard_of(partition, msg.key, config.sub_shards)
    stamped = kafka_time(msg)
    arrived = stamped or clock.now_ms()
    try:
        if len(raw) > MAX_EVENT_BYTES:
            raise ContractViolation("event_too_large", f"event is {len(raw)} bytes")
        doc = decode_event(raw)
    except ContractViolation as exc:
        dlq = stream_dlq(
            exc.reason,
            str(exc)[:1000],
            raw,
            arrived,
            event_type=exc.event_type,
            contract_version=exc.version,
        )
        return {"kind": "rejected", "shard": shard, "received": arrived, "dlq": dlq}
    received_at = doc.received_at or to_dt(arrived)
    if is_future(received_at, doc.sent_at, doc.occurred_at):
        return {"kind": "future", "shard": shard, "received": to_ms(received_at), "dlq": None}
    at = event_time(received_at, doc.sent_at, doc.occurred_at).astimezone(UTC)
    etype = type(doc).__struct_config__.tag  # the contract's event_type
    return {
        "kind": "event",
        "shard": shard,
        "received": to_ms(received_at),
        "id": str(doc.event_id),
        "type": etype,
        "visitor": doc.anonymous_id,
        "at": at,
        "ms": to_ms(at),
        # the arrival day is the Kafka timestamp's UTC day (bronze's partition)
        "arrival_day": (stamped if stamped is not None else to_ms(received_at)) // DAY_MS,
        "platform": doc.context.platform,
        "device": doc.context.device_type or "unknown",
        "bot": is_bot_agent(doc.context.user_agent),
        "product": getattr(doc, "product_id", None),
        "order": getattr(doc, "order_id", None),
        "cents": round(doc.total * 100) if etype == "purchase" else 0,
    }


def compute(
    messages: Iterable[KafkaSourceMessage], config: StreamConfig | None = None
) -> Reference:
    config = config or StreamConfig()
    rules = config.rules
    lateness = config.lateness // timedelta(milliseconds=1)
    remember = config.dedupe_window // timedelta(milliseconds=1)
    gap = config.session_gap // timedelta(milliseconds=1)
    quick = rules.bot_gap // timedelta(milliseconds=1)
    out = Reference()

    latest: dict[str, int] = {}  # shard -> latest receive time, repeats included (dedupe)
    kept: dict[str, dict[str, int]] = defaultdict(dict)  # shard -> event id -> its kept copy
    newest: dict[str, int] = {}  # shard -> latest receive time of what passed the dedupe
    metrics: dict[tuple[str, int], dict[tuple[str, str], dict]] = defaultdict(dict)
    late: dict[tuple[str, int], dict[str, int]] = {}
    day_seen: dict[int, dict[str, set]] = defaultdict(lambda: {"visitors": set(), "orders": set()})
    daily: dict[tuple[int, int], dict[str, int]] = {}
    sessions: dict[str, dict[str, list[dict]]] = defaultdict(dict)  # shard -> visitor -> open
    active: dict[int, int] = defaultdict(int)  # minute end -> open sessions
    products: dict[int, dict[str, dict[str, int]]] = defaultdict(dict)
    clicks: dict[str, tuple[int, int]] = {}  # visitor -> (previous event ms, quick run length)
    orders: dict[str, tuple[int, int]] = {}  # visitor -> (orders so far, their cents)
    arrival = 0

    def close_passed(open_here: dict[str, list[dict]], visitor: str, wm: int) -> None:
        """Emit the visitor's sessions whose last event plus the gap is behind the watermark."""
        still = []
        for s in open_here.get(visitor, []):
            if s["last"] + gap < wm:
                out.add(session_of(visitor, s, quick, rules.bot_min_clicks))
            else:
                still.append(s)
        if still:
            open_here[visitor] = still
        else:
            open_here.pop(visitor, None)

    def late_counts(size: str, start: int) -> dict[str, int]:
        if (size, start) not in late:
            late[(size, start)] = {"events": 0, "purchases": 0, "cents": 0, "rejected": 0}
        return late[(size, start)]

    for msg in messages:
        rec = read(msg, config)
        if rec is None:
            continue
        if rec.get("dlq") is not None:
            out.dlq.append(rec["dlq"])
        shard, received = rec["shard"], rec["received"]

        # Dedupe: a repeat of an event id whose kept copy arrived within the dedupe window
        # before the latest arrival in the shard is dropped.
        latest[shard] = max(latest.get(shard, received), received)
        if rec["kind"] == "event":
            first = kept[shard].get(rec["id"])
            if first is not None and latest[shard] - first <= remember:
                continue
            kept[shard][rec["id"]] = received

        # The shard's watermark; when it passes minute ends, count the sessions open at each.
        before = newest.get(shard)
        if before is None or received > before:
            newest[shard] = received
        wm = newest[shard] - lateness
        open_here = sessions[shard]
        if before is not None and received > before:
            old_wm = before - lateness
            end = old_wm - old_wm % MINUTE_MS + MINUTE_MS  # the first minute end after old_wm
            while end <= wm:
                n = sum(
                    1
                    for lst in open_here.values()
                    for s in lst
                    if s["first_ms"] <= end < s["last"] + gap
                )
                if n:
                    active[end] += n
                end += MINUTE_MS
            for visitor in list(open_here):
                close_passed(open_here, visitor, wm)

        if rec["kind"] != "event":
            for w in WINDOWS:
                start = w.start_ms(received)
                if start + w.length_ms <= wm:  # its window is closed: a late reject
                    if rec["kind"] == "rejected" and start >= wm - LATE_HORIZON_MS:
                        late_counts(w.name, start)["rejected"] += 1
                    continue
                acc = metrics[(w.name, start)].setdefault(("all", "all"), new_slice())
                acc[rec["kind"]] += 1
            continue

        e = rec
        visitor, purchase = e["visitor"], e["type"] == "purchase"
        arrival += 1

        # Window metrics, or late events when the window has closed.
        for w in WINDOWS:
            start = w.start_ms(e["ms"])
            if start + w.length_ms <= wm:
                if start >= wm - LATE_HORIZON_MS:
                    c = late_counts(w.name, start)
                    c["events"] += 1
                    c["purchases"] += purchase
                    c["cents"] += e["cents"]
                continue
            for key in (("all", "all"), ("platform", e["platform"]), ("device_type", e["device"])):
                acc = metrics[(w.name, start)].setdefault(key, new_slice())
                acc["events"] += 1
                acc["visitors"].add(visitor)
                if e["type"] in COUNTED:
                    acc[e["type"]] += 1
                if purchase:
                    acc["cents"] += e["cents"]
                    acc["buyers"].add(visitor)

        # Daily totals by event day and arrival day, up to the daily lateness. A day closes once
        # the shard's watermark is more than the lateness (and a day of slack) past it: what
        # arrives for it afterwards (a replay with its original receive time) is late.
        day = e["ms"] // DAY_MS
        closed = day < wm // DAY_MS - config.daily_lateness_days - 1
        if day < e["arrival_day"] - config.daily_lateness_days or closed:
            if day * DAY_MS >= wm - LATE_HORIZON_MS:
                c = late_counts("1d", day * DAY_MS)
                c["events"] += 1
                c["purchases"] += purchase
                c["cents"] += e["cents"]
        else:
            seen = day_seen[day]
            t = daily.setdefault(
                (day, e["arrival_day"]),
                dict.fromkeys(
                    (
                        "events",
                        "bot_events",
                        "purchases",
                        "orders",
                        "cents",
                        "bot_cents",
                        "visitors",
                    ),
                    0,
                ),
            )
            t["events"] += 1
            t["bot_events"] += e["bot"]
            if purchase:
                t["purchases"] += 1
                t["cents"] += e["cents"]
                t["bot_cents"] += e["cents"] if e["bot"] else 0
                if e["order"] is not None and e["order"] not in seen["orders"]:
                    seen["orders"].add(e["order"])
                    t["orders"] += 1
            if visitor not in seen["visitors"]:
                seen["visitors"].add(visitor)
                t["visitors"] += 1

        # Sessions: those the watermark has passed are closed; the event joins every open session
        # of the visitor it is within the gap of (on either side), which merge; or it starts one.
        close_passed(open_here, visitor, wm)
        mine = open_here.get(visitor, [])
        near = [s for s in mine if s["first_ms"] - gap <= e["ms"] <= s["last"] + gap]
        events = [pair for s in near for pair in s["events"]] + [(arrival, e)]
        first = min((ev for _, ev in events), key=lambda ev: (ev["at"], ev["id"]))
        joined = {
            "events": events,
            "first": first,
            "first_ms": first["ms"],
            "last": max(ev["ms"] for _, ev in events),
        }
        # the merged session takes the place of the oldest one it joins (sessions stay in the
        # order they started in, which is the order they close in at the end of the input)
        joins = [any(s is n for n in near) for s in mine]
        place = joins.index(True) if near else len(mine)
        rest = [s for s, j in zip(mine, joins, strict=True) if not j]
        open_here[visitor] = [*rest[:place], joined, *rest[place:]]

        # Top products of the 5-minute window (late events are not ranked).
        if e["type"] in ("product_view", "add_to_cart") and e["product"] is not None:
            start = WINDOW_5M.start_ms(e["ms"])
            if start + WINDOW_5M.length_ms > wm:
                c = products[start].setdefault(e["product"], {"product_view": 0, "add_to_cart": 0})
                c[e["type"]] += 1

        # Bot click cadence: 5 events in a row (arrival order), each 0 < gap < 100 ms after the
        # previous; once per visitor and event day.
        prev = clicks.get(visitor)
        run = prev[1] + 1 if prev is not None and 0 < e["ms"] - prev[0] < quick else 1
        clicks[visitor] = (e["ms"], run)
        if run >= rules.bot_min_clicks:
            aid = alert_id("bot_click_cadence", visitor, day)
            if (aid,) not in out.tables["alerts"]:
                out.add(
                    Alert(
                        alert_id=aid,
                        rule="bot_click_cadence",
                        severity="warning",
                        window_start=to_dt(WINDOW_1M.start_ms(e["ms"])),
                        subject=visitor,
                        evidence=json_of(
                            clicks=run,
                            max_gap_ms=quick,
                            event_id=e["id"],
                            event_at=e["at"].isoformat(),
                            bot_user_agent=e["bot"],
                        ),
                    )
                )

        # Large purchase: above factor x the visitor's average order value so far.
        if purchase:
            n, cents = orders.get(visitor, (0, 0))
            if n >= max(1, rules.big_purchase_min_orders):
                average = cents / n
                if e["cents"] > rules.big_purchase_factor * average:
                    aid = alert_id("large_purchase", visitor, e["order"] or e["id"])
                    if (aid,) not in out.tables["alerts"]:
                        out.add(
                            Alert(
                                alert_id=aid,
                                rule="large_purchase",
                                severity="warning",
                                window_start=to_dt(WINDOW_1M.start_ms(e["ms"])),
                                subject=visitor,
                                evidence=json_of(
                                    order_id=e["order"],
                                    order_total=e["cents"] / 100,
                                    average_order_value=round(average / 100, 2),
                                    prior_orders=n,
                                    factor=rules.big_purchase_factor,
                                ),
                            )
                        )
            orders[visitor] = (n + 1, cents + e["cents"])

    # At the end of the input every open session closes.
    for open_here in sessions.values():
        for visitor, lst in open_here.items():
            for s in lst:
                out.add(session_of(visitor, s, quick, rules.bot_min_clicks))

    lengths = {w.name: w.length_ms for w in WINDOWS}
    for (size, start), slices in metrics.items():
        for (dim, value), acc in slices.items():
            visitors, buyers = len(acc["visitors"]), len(acc["buyers"])
            total = acc["events"] + acc["rejected"]
            out.add(
                WindowMetrics(
                    window_size=size,
                    window_start=to_dt(start),
                    window_end=to_dt(start + lengths[size]),
                    dimension=dim,
                    dimension_value=value,
                    events=acc["events"],
                    unique_visitors=visitors,
                    page_views=acc["page_view"],
                    product_views=acc["product_view"],
                    add_to_carts=acc["add_to_cart"],
                    checkouts=acc["begin_checkout"],
                    purchases=acc["purchase"],
                    buyers=buyers,
                    revenue=acc["cents"] / 100,
                    conversion_rate=round(buyers / visitors, 6) if visitors else None,
                    rejected=acc["rejected"],
                    future_events=acc["future"],
                    error_rate=round(acc["rejected"] / total, 6) if total else None,
                )
            )
    for (size, start), c in late.items():
        out.add(
            LateEvents(
                window_size=size,
                window_start=to_dt(start),
                events=c["events"],
                purchases=c["purchases"],
                revenue=c["cents"] / 100,
                rejected=c["rejected"],
            )
        )
    for (day, arrived), t in daily.items():
        out.add(
            DailyTotals(
                event_date=to_date(day),
                arrival_date=to_date(arrived),
                events=t["events"],
                bot_events=t["bot_events"],
                purchases=t["purchases"],
                orders=t["orders"],
                revenue=t["cents"] / 100,
                bot_revenue=t["bot_cents"] / 100,
                unique_visitors=t["visitors"],
            )
        )
    for end, n in active.items():
        out.add(
            ActiveSessions(
                window_start=to_dt(end - MINUTE_MS), window_end=to_dt(end), active_sessions=n
            )
        )
    for start, counts in products.items():
        for ranking, etype in (("views", "product_view"), ("add_to_carts", "add_to_cart")):
            # most counted first, ties by product id; products never counted are not ranked
            ranked = sorted((-c[etype], pid) for pid, c in counts.items() if c[etype] > 0)
            for rank, (minus, pid) in enumerate(ranked[: config.top_n], 1):
                out.add(
                    TopProduct(
                        window_start=to_dt(start),
                        window_end=to_dt(start + WINDOW_5M.length_ms),
                        ranking=ranking,
                        rank=rank,
                        product_id=pid,
                        count=-minus,
                    )
                )

    # Window alerts, on the `all` slice of each minute and each 5 minutes vs the one before.
    rows = out.tables["window_metrics"]
    for (size, start, dim, _), cur in list(rows.items()):
        if dim != "all" or size not in ("1m", "5m"):
            continue
        prev = rows.get((size, start - timedelta(milliseconds=lengths[size]), "all", "all"))
        # each rule needs a minimum baseline, so quiet windows do not alert
        total = cur.events + cur.rejected
        spike = (
            size == "1m"
            and prev is not None
            and prev.events >= rules.spike_min_events
            and cur.events > rules.spike_ratio * prev.events
        )
        errors = (
            size == "1m"
            and total >= rules.error_min_total
            and cur.rejected > rules.error_rate * total
        )
        drop = (
            size == "5m"
            and prev is not None
            and prev.purchases >= rules.drop_min_purchases
            and cur.revenue < rules.drop_ratio * prev.revenue
        )
        found = []
        if spike:
            found.append(
                (
                    "traffic_spike",
                    "warning",
                    json_of(
                        events=cur.events,
                        previous_events=prev.events,
                        ratio=round(cur.events / prev.events, 3),
                        threshold=rules.spike_ratio,
                    ),
                )
            )
        if errors:
            found.append(
                (
                    "error_rate",
                    "critical",
                    json_of(
                        rejected=cur.rejected,
                        events=cur.events,
                        error_rate=round(cur.rejected / total, 6),
                        threshold=rules.error_rate,
                    ),
                )
            )
        if drop:
            found.append(
                (
                    "revenue_drop",
                    "critical",
                    json_of(
                        revenue=cur.revenue,
                        previous_revenue=prev.revenue,
                        purchases=cur.purchases,
                        previous_purchases=prev.purchases,
                        threshold=rules.drop_ratio,
                    ),
                )
            )
        subject = f"{size}:all"
        for rule, severity, evidence in found:
            out.add(
                Alert(
                    alert_id=alert_id(rule, subject, start.isoformat()),
                    rule=rule,
                    severity=severity,
                    window_start=start,
                    subject=subject,
                    evidence=evidence,
                )
            )
    return out


def new_slice() -> dict:
    return {
        "events": 0,
        **dict.fromkeys(COUNTED, 0),
        "cents": 0,
        "visitors": set(),
        "buyers": set(),
        "rejected": 0,
        "future": 0,
    }


def session_of(visitor: str, s: dict, quick: int, bot_min_clicks: int) -> Session:
    """A closed session as a row: its first event (by event time, then id, as silver orders
    them) names it and gives its platform and device."""
    events = [ev for _, ev in sorted(s["events"], key=lambda pair: pair[0])]  # arrival order
    first = s["first"]
    first_ms, first_id = first["ms"], first["id"]
    n = {t: sum(ev["type"] == t for ev in events) for t in COUNTED}
    run = best = 0
    previous = None
    for ev in events:  # the click-cadence rule within the session, in arrival order
        run = run + 1 if previous is not None and 0 < ev["ms"] - previous < quick else 1
        best = max(best, run)
        previous = ev["ms"]
    return Session(
        session_id=session_id(visitor, first_id),
        session_date=to_dt(first_ms).date(),
        anonymous_id=visitor,
        started_at=to_dt(first_ms),
        ended_at=to_dt(s["last"]),
        duration_seconds=(s["last"] - first_ms) / 1000,
        n_events=len(events),
        n_page_views=n["page_view"],
        n_product_views=n["product_view"],
        n_add_to_carts=n["add_to_cart"],
        n_checkouts=n["begin_checkout"],
        n_purchases=n["purchase"],
        is_converted=n["purchase"] > 0,
        revenue=sum(ev["cents"] for ev in events) / 100,
        platform=first["platform"],
        device_type=first["device"],
        is_bot=any(ev["bot"] for ev in events) or best >= bot_min_clicks,
    )


# -- building Kafka messages without Kafka (tests, benchmarks) ----------------------------------
def kafka_messages(
    records: Sequence,
    ingestor,
    events_topic: str = "shop.events",
    dlq_topic: str = "shop.events.dlq",
    partitions: int = 6,
    dlq_partitions: int = 3,
) -> list[KafkaSourceMessage]:
    """Simulator records as the collector would have written them, in receive order: accepted
    events keyed by visitor (partition = CRC32 of the key, librdkafka's default), rejects in the
    DLQ."""
    offsets: dict[tuple[str, int], int] = defaultdict(int)
    rng = random.Random(0)
    out = []
    for rec in records:
        received = datetime.fromtimestamp(rec.received, UTC)
        res = ingestor.accept(rec.payload, received, replay=True)
        if hasattr(res, "value"):
            topic, key, value, ts = events_topic, res.key, res.value, res.timestamp_ms
            part = zlib.crc32(key) % partitions
        else:
            topic, key, ts = (
                dlq_topic,
                (res.event_id or "").encode() or None,
                int(rec.received * 1000),
            )
            value = ingestor.dlq_value(res, received, "simulator")
            part = rng.randrange(dlq_partitions)
        offset = offsets[(topic, part)]
        offsets[(topic, part)] += 1
        out.append(
            KafkaSourceMessage(
                key=key, value=value, topic=topic, partition=part, offset=offset, timestamp=(1, ts)
            )
        )
    return out
