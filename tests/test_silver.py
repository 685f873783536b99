"""Silver transforms on hand-made events with known answers (no Dagster, no Kafka)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl

from pipeline_assets.silver.events import build_silver_events
from pipeline_assets.silver.sessions import sessionize
from pipeline_assets.silver.shop import current_state, scd2

D = date(2026, 10, 10)
T0 = datetime(2026, 10, 10, 12, 0, tzinfo=UTC)


def iso(t: datetime) -> str:
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def ev(
    at: datetime,
    etype: str = "page_view",
    anon: str = "a1",
    received: datetime | None = None,
    skew: timedelta = timedelta(0),
    event_id: str | None = None,
    **fields,
) -> dict:
    received = received or at + timedelta(milliseconds=200)
    doc = {
        "event_id": event_id or str(uuid.uuid4()),
        "event_type": etype,
        "schema_version": "1.0",
        "occurred_at": iso(at + skew),
        "sent_at": iso(received - timedelta(milliseconds=50) + skew),
        "received_at": iso(received),
        "anonymous_id": anon,
        "session_id": "s",
        "context": {
            "platform": "web",
            "device_type": "desktop",
            "user_agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
        },
    }
    if etype == "page_view":
        doc["page_type"] = "home"
    doc.update(fields)
    return doc


def bronze(docs: list[dict]) -> pl.DataFrame:
    rows = []
    for i, d in enumerate(docs):
        received = datetime.fromisoformat(d["received_at"].replace("Z", "+00:00"))
        rows.append(
            {
                "kafka_partition": 0,
                "kafka_offset": i,
                "kafka_timestamp": received,
                "key": d["anonymous_id"],
                "event_id": d["event_id"],
                "event_type": d["event_type"],
                "value": json.dumps(d),
                "arrival_date": received.date(),
            }
        )
    return pl.DataFrame(rows).with_columns(pl.col("kafka_timestamp").dt.cast_time_unit("ms"))


def test_dedupe_late_future_and_too_late():
    dup = ev(T0, event_id="11111111-1111-4111-8111-111111111111")
    late = ev(
        T0 + timedelta(hours=5), received=T0 + timedelta(days=1, hours=3)
    )  # arrives D+1, belongs to D
    future = ev(T0, occurred_future=True)
    future["occurred_at"] = iso(T0 + timedelta(hours=3))  # client says 3 h ahead of receipt
    too_late = ev(T0 - timedelta(days=3), received=T0)  # event day D-3 arriving on D: beyond 2 days
    docs = [
        dup,
        dict(dup, received_at=iso(T0 + timedelta(seconds=30))),
        late,
        future,
        too_late,
        ev(T0 + timedelta(minutes=1)),
    ]
    out = build_silver_events(bronze(docs), D, lateness_days=2)
    assert out.stats == {
        "input_rows": 6,
        "silver_rows": 3,
        "quarantined": 2,
        "duplicates_removed": 1,
        "bots": 0,
    }
    assert late["event_id"] in out.events["event_id"].to_list()
    assert sorted(out.quarantine["reason"].to_list()) == ["future_event", "late_beyond_window"]
    assert out.events["event_date"].unique().to_list() == [D]
    # the same late event is not also counted by the arrival day's partition
    next_day = build_silver_events(bronze(docs), D + timedelta(days=1), lateness_days=2)
    assert next_day.events.height == 0


def test_clock_skew_is_corrected_from_the_receive_time():
    skewed = ev(T0, skew=timedelta(minutes=-50))  # device clock 50 minutes behind
    out = build_silver_events(bronze([skewed]), D)
    row = out.events.row(0, named=True)
    assert abs((row["event_at"] - T0).total_seconds()) < 1
    assert (row["occurred_at"] - T0) < timedelta(minutes=-49)  # raw client time is kept as is


def test_midnight_and_skew_put_an_event_in_the_right_day():
    near_midnight = ev(
        datetime(2026, 10, 10, 23, 59, 59, 900000, tzinfo=UTC), skew=timedelta(minutes=5)
    )
    out = build_silver_events(bronze([near_midnight]), D)
    assert out.events.height == 1  # client clock says 00:04 next day; corrected time says D


def test_contract_violations_are_quarantined_with_the_check():
    bad = ev(T0, "product_view", product_id="p1", price=-5.0)
    out = build_silver_events(bronze([bad, ev(T0)]), D)
    assert out.events.height == 1
    q = out.quarantine.row(0, named=True)
    assert q["reason"] == "contract_violation" and "price" in q["detail"]
    assert q["raw"] == json.dumps(bad)  # read back from bronze, byte for byte


def test_a_record_that_is_not_json_is_quarantined_not_fatal():
    good = ev(T0)
    frame = bronze([good, ev(T0 + timedelta(seconds=1))])
    broken = [frame["value"][1][:40], "not json"]  # truncated, and not JSON at all
    frame = pl.concat(
        [frame, frame.tail(1).with_columns(kafka_offset=pl.lit(2, pl.Int64), event_id=pl.lit("e3"))]
    )
    frame = frame.with_columns(pl.Series("value", [frame["value"][0], *broken]))
    out = build_silver_events(frame, D)
    assert out.events["event_id"].to_list() == [good["event_id"]]
    assert out.quarantine["reason"].to_list() == ["unparseable", "unparseable"]
    assert out.quarantine["raw"].to_list() == broken  # the raw record is kept, byte for byte
    assert out.stats["input_rows"] == 3 and out.stats["quarantined"] == 2


def test_bots_by_user_agent_and_by_click_cadence():
    crawler = ev(T0, anon="crawler", context={"platform": "web", "user_agent": "Googlebot/2.1"})
    burst = [ev(T0 + timedelta(milliseconds=60 * i), anon="fast") for i in range(5)]
    slow = [ev(T0 + timedelta(seconds=2 * i), anon="human") for i in range(5)]
    out = build_silver_events(bronze([crawler, *burst, *slow]), D)
    bots = dict(out.events.group_by("anonymous_id").agg(pl.col("is_bot").all()).iter_rows())
    assert bots == {"crawler": True, "fast": True, "human": False}
    assert out.events.filter(pl.col("anonymous_id") == "human")["browser"][0] == "Chrome"


def silver(docs: list[dict]) -> pl.DataFrame:
    frames = [build_silver_events(bronze(docs), D + timedelta(days=k)).events for k in (-1, 0, 1)]
    return pl.concat(frames, how="diagonal_relaxed")


def test_sessions_gap_midnight_and_stitching():
    late_evening = datetime(2026, 10, 9, 23, 50, tzinfo=UTC)
    docs = [
        ev(late_evening, anon="night"),  # starts on D-1 ...
        ev(late_evening + timedelta(minutes=20), anon="night"),  # ... crosses midnight: not D's
        ev(T0, anon="u"),
        ev(T0 + timedelta(minutes=10), "login", anon="u", user_id="user-7", method="password"),
        ev(T0 + timedelta(minutes=45), anon="u"),  # 35 min gap: a new session, stitched to user-7
        ev(
            T0 + timedelta(minutes=46),
            "purchase",
            anon="u",
            user_id="user-7",
            order_id="o1",
            total=30.0,
            currency="USD",
            payment_method="card",
            items=[{"product_id": "p", "quantity": 1, "unit_price": 30.0}],
        ),
    ]
    s = sessionize(silver(docs), D)
    assert s.height == 2 and set(s["anonymous_id"]) == {"u"}
    assert s["user_id"].to_list() == ["user-7", "user-7"]
    assert s["is_converted"].to_list() == [False, True] and s["revenue"].to_list() == [0.0, 30.0]
    previous = sessionize(silver(docs), D - timedelta(days=1))
    assert (
        previous.height == 1 and previous["n_events"][0] == 2
    )  # counted once, on the day it started
    again = sessionize(silver(docs), D)
    assert again["session_id"].to_list() == s["session_id"].to_list()  # stable ids


def test_shop_state_and_scd2():
    hist = pl.DataFrame(
        {
            "product_id": ["p1", "p1", "p1", "p2"],
            "name": ["A", "A", "A2", "B"],
            "category_id": ["c"] * 4,
            "category_code": ["x"] * 4,
            "brand": ["b"] * 4,
            "price": [10.0, 10.0, 12.0, 5.0],
            "currency": ["USD"] * 4,
            "created_at": ["2026-10-01T00:00:00Z"] * 4,
            "updated_at": [
                "2026-10-01T00:00:00Z",
                "2026-10-03T00:00:00Z",
                "2026-10-05T00:00:00Z",
                "2026-10-01T00:00:00Z",
            ],
        }
    )
    cur = current_state(hist, "products")
    assert cur.filter(pl.col("product_id") == "p1")["price"].to_list() == [12.0]
    h = scd2(hist, "products").filter(pl.col("product_id") == "p1")
    assert h["price"].to_list() == [10.0, 12.0]  # the name-only change is not a new price version
    assert h["valid_from"].to_list() == ["2026-10-01T00:00:00Z", "2026-10-05T00:00:00Z"]
    assert h["valid_to"].to_list() == ["2026-10-05T00:00:00Z", None]
    assert h["is_current"].to_list() == [False, True] and h["name"].to_list() == ["A2", "A2"]


def test_a_day_processed_out_of_core_is_the_same_day(monkeypatch, tmp_path):
    """Past spill.SPILL_ROWS a day goes through hash buckets and hourly files on disk. Duplicates
    in different batches, a bot whose burst is split across buckets, several hours, quarantine
    and contract violations must all come out as they do in memory, down to the written bytes."""
    from pipeline_assets.silver import events
    from pipeline_assets.silver.events import spill
    from shoplake.core.lake.io import write_partition

    dup = ev(T0, event_id="11111111-1111-4111-8111-111111111111")
    docs = [ev(T0 + timedelta(minutes=37 * i), anon=f"a{i % 3}") for i in range(12)]  # 7 hours
    docs += [dup, *[ev(T0 + timedelta(milliseconds=60 * i), anon="fast") for i in range(6)]]
    docs.append(ev(T0, "product_view", product_id="p1", price=-5.0))  # a contract violation
    docs.append(ev(T0 - timedelta(days=3), received=T0))  # beyond the lateness window
    docs.append(dict(dup, received_at=iso(T0 + timedelta(seconds=30))))  # last batch: a copy
    frame = bronze(docs)

    def read(columns):  # batches of 5, as the asset reads bronze in batches
        return [
            frame.slice(i, 5).select(columns) if columns else frame.slice(i, 5)
            for i in range(0, frame.height, 5)
        ]

    whole = build_silver_events(frame, D)
    monkeypatch.setattr(spill, "SPILL_ROWS", 0)  # the build reads both from spill when it runs
    monkeypatch.setattr(spill, "BUCKETS", 4)
    with events.build_silver_events_from(read, D) as spilled:
        assert len(spilled.parts) == 7  # one per hour of the day that has events
        assert spilled.events.equals(whole.events) and spilled.events.height == 19
        assert spilled.quarantine.equals(whole.quarantine) and spilled.stats == whole.stats
        a = write_partition(tmp_path / "a", D, spilled.parts, {})
        spill = Path(spilled.spill.name)
    with events.build_silver_events_from(read, D) as again:
        write_partition(tmp_path / "again", D, again.parts, {})
    assert (tmp_path / "again" / f"date={D}" / "part-0.parquet").read_bytes() == (
        a.path / "part-0.parquet"
    ).read_bytes()
    assert not spill.exists()  # the temporary files are gone with the result
    b = write_partition(tmp_path / "b", D, whole.events, {})
    assert whole.stats["duplicates_removed"] == 1 and whole.stats["bots"] == 6
    assert whole.quarantine["reason"].sort().to_list() == [
        "contract_violation",
        "late_beyond_window",
    ]
    assert a.rows == b.rows == 19
    assert pl.read_parquet(a.path / "part-0.parquet").equals(whole.events)
    assert pl.read_parquet(b.path / "part-0.parquet").equals(whole.events)


def test_an_empty_arrival_window_gives_an_empty_partition():
    out = build_silver_events(bronze([ev(T0)]).clear(), D)
    assert out.events.height == 0 and out.quarantine.height == 0
    assert out.stats["input_rows"] == 0 and "event_id" in out.events.columns


def test_the_silver_contract_check_reads_a_day_in_batches_and_still_sees_duplicates(
    monkeypatch, tmp_path
):
    """The check validates big days batch by batch; an event_id repeated across two batches
    must still fail it, and a clean day must pass."""
    from pipeline_assets import checks
    from pipeline_assets.silver.schema import SilverEvent
    from shoplake.core.lake.io import write_partition

    events = build_silver_events(
        bronze([ev(T0 + timedelta(seconds=i)) for i in range(6)]), D
    ).events
    monkeypatch.setattr(checks, "VALIDATE_BATCH_ROWS", 4)
    write_partition(tmp_path / "ok", D, events, {})
    ok = checks._validate_day(tmp_path / "ok", D, SilverEvent)
    assert ok.passed and ok.metadata["rows"].value == 6
    twice = pl.concat([events, events.head(1)])  # row 7 repeats row 1, in another batch
    write_partition(tmp_path / "dup", D, twice, {})
    bad = checks._validate_day(tmp_path / "dup", D, SilverEvent)
    assert not bad.passed and bad.metadata["duplicated event_id"].value == 2
    assert not checks._validate_day(tmp_path / "none", D, SilverEvent).passed


def test_click_cadence_at_its_edges():
    """Guards the bot rule's edges: 5 events each less than 100 ms after the previous are a bot;
    exactly 100 ms apart is not, and equal timestamps (coarse clocks) are not either."""
    docs = [
        *(ev(T0 + timedelta(milliseconds=99 * i), anon="gap-99") for i in range(5)),
        *(ev(T0 + timedelta(milliseconds=100 * i), anon="gap-100") for i in range(5)),
        *(ev(T0, anon="same-stamp") for _ in range(5)),
        *(ev(T0 + timedelta(milliseconds=50 * i), anon="four") for i in range(4)),
    ]
    out = build_silver_events(bronze(docs), D)
    bots = dict(out.events.group_by("anonymous_id").agg(pl.col("is_bot").all()).iter_rows())
    assert bots == {"gap-99": True, "gap-100": False, "same-stamp": False, "four": False}


def test_the_copy_kept_is_the_first_to_arrive_then_the_lowest_partition_then_offset():
    """Guards the canonical copy of a repeated event_id: earliest Kafka timestamp first, then
    partition, then offset, whatever the order of the rows."""

    def copies(event_id: str, devices: list[str]) -> list[dict]:
        base = ev(T0, event_id=event_id)
        return [dict(base, context=dict(base["context"], device_type=d)) for d in devices]

    by_time = copies("11111111-1111-4111-8111-000000000001", ["tablet", "mobile"])
    by_partition = copies("11111111-1111-4111-8111-000000000002", ["tablet", "mobile"])
    by_offset = copies("11111111-1111-4111-8111-000000000003", ["tablet", "mobile"])
    frame = bronze([*by_time, *by_partition, *by_offset])
    t = frame["kafka_timestamp"][0]
    placement = [  # (kafka_timestamp, partition, offset) of each row; "mobile" must win each time
        (t + timedelta(seconds=5), 0, 0),
        (t, 0, 1),  # later arrival at a lower offset
        (t, 1, 2),
        (t, 0, 3),  # same time, lower partition at a higher offset
        (t, 2, 9),
        (t, 2, 4),  # same time and partition
    ]
    frame = frame.with_columns(
        kafka_timestamp=pl.Series([p[0] for p in placement]).dt.cast_time_unit("ms"),
        kafka_partition=pl.Series([p[1] for p in placement], dtype=frame["kafka_partition"].dtype),
        kafka_offset=pl.Series([p[2] for p in placement], dtype=frame["kafka_offset"].dtype),
    )
    out = build_silver_events(frame, D)
    assert out.stats["duplicates_removed"] == 3
    assert out.events.sort("event_id")["device_type"].to_list() == ["mobile"] * 3
