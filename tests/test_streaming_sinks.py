"""The speed tables' sinks: idempotent upserts to Parquet (atomic, compacted) and to Postgres."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import msgspec
import polars as pl
import pyarrow.parquet as pq
import pytest
from bytewax.testing import TestingSource, run_main

from shoplake.core.speed import tables
from shoplake.core.speed.rows import Alert, DailyTotals, WindowMetrics
from shoplake.core.speed.tables import ParquetWriter, compact_partition, read_table, table_dir
from streaming.flows import Sinks, build_flow
from streaming.sinks import PostgresWriter, table_sink
from streaming.testing import TEST_CONFIG, at, event, message, numbered

T0 = datetime(2026, 3, 2, 12, tzinfo=UTC)


def metrics(minute: int, events: int, value: str = "all") -> WindowMetrics:
    start = T0 + timedelta(minutes=minute)
    return WindowMetrics(
        window_size="1m",
        window_start=start,
        window_end=start + timedelta(minutes=1),
        dimension="all" if value == "all" else "platform",
        dimension_value=value,
        events=events,
        unique_visitors=events,
        page_views=events,
        product_views=0,
        add_to_carts=0,
        checkouts=0,
        purchases=0,
        buyers=0,
        revenue=0.0,
        conversion_rate=None,
        rejected=0,
        future_events=0,
        error_rate=None,
    )


def as_rows(df: pl.DataFrame, cls) -> list:
    return sorted((msgspec.convert(r, cls) for r in df.to_dicts()), key=lambda r: r.key())


def parts(lake, table: str) -> list:
    return sorted(table_dir(lake, table).rglob("*.parquet"))


def test_writing_the_same_rows_twice_gives_the_same_table(tmp_path):
    writer = ParquetWriter(tmp_path)
    rows = [metrics(0, 5), metrics(1, 7), metrics(1, 3, "ios")]
    writer.upsert("window_metrics", rows)
    once = read_table("window_metrics", tmp_path)
    writer.upsert("window_metrics", rows)  # a replay after recovery
    twice = read_table("window_metrics", tmp_path)

    assert twice.height == 3
    assert once.sort("window_start", "dimension_value").equals(
        twice.sort("window_start", "dimension_value")
    )
    assert as_rows(twice, WindowMetrics) == sorted(rows, key=lambda r: r.key())
    assert twice.schema["window_start"] == pl.Datetime("us", "UTC")


def test_the_last_row_written_for_a_key_wins(tmp_path):
    writer = ParquetWriter(tmp_path)
    writer.upsert("window_metrics", [metrics(0, 5), metrics(1, 1)])
    writer.upsert("window_metrics", [metrics(0, 9)])  # a corrected window
    writer.upsert("window_metrics", [metrics(0, 4), metrics(0, 11)])  # last within a batch too
    table = read_table("window_metrics", tmp_path).sort("window_start")
    assert table["events"].to_list() == [11, 1]


def test_tables_are_laid_out_by_date(tmp_path):
    writer = ParquetWriter(tmp_path)
    day1 = DailyTotals(
        event_date=date(2026, 3, 1),
        arrival_date=date(2026, 3, 1),
        events=1,
        bot_events=0,
        purchases=0,
        orders=0,
        revenue=0.0,
        bot_revenue=0.0,
        unique_visitors=1,
    )
    day2 = msgspec.structs.replace(
        day1, event_date=date(2026, 3, 2), arrival_date=date(2026, 3, 2), events=2
    )
    writer.upsert("daily_totals", [day1, day2])
    folders = sorted(p.name for p in table_dir(tmp_path, "daily_totals").iterdir())
    assert folders == ["date=2026-03-01", "date=2026-03-02"]
    only = read_table("daily_totals", tmp_path, start=date(2026, 3, 2))
    assert only["events"].to_list() == [2]


def test_a_failed_write_leaves_no_part_behind(tmp_path, monkeypatch):
    writer = ParquetWriter(tmp_path)
    writer.upsert("window_metrics", [metrics(0, 5)])

    def half_written(table, where, **kw):
        with open(where, "wb") as fh:
            fh.write(b"PAR1 truncated")
        raise OSError("disk full")

    monkeypatch.setattr(tables.pq, "write_table", half_written)
    with pytest.raises(OSError, match="disk full"):
        writer.upsert("window_metrics", [metrics(0, 99)])
    files = list(table_dir(tmp_path, "window_metrics").rglob("*"))
    assert [f.name for f in files if f.is_file()] == [parts(tmp_path, "window_metrics")[0].name]
    assert read_table("window_metrics", tmp_path)["events"].to_list() == [5]


def test_compaction_merges_parts_and_keeps_the_last_row_per_key(tmp_path):
    writer = ParquetWriter(tmp_path, compact_after=1000)
    for i in range(6):
        writer.upsert("window_metrics", [metrics(0, i), metrics(i, 100 + i)])
    before = read_table("window_metrics", tmp_path).sort("window_start")
    folder = table_dir(tmp_path, "window_metrics") / "date=2026-03-02"
    assert len(list(folder.glob("part-*.parquet"))) == 6

    compacted = compact_partition(folder, WindowMetrics)
    assert list(folder.glob("*.parquet")) == [compacted]
    assert pq.read_table(compacted).num_rows == 6  # one row per key
    after = read_table("window_metrics", tmp_path).sort("window_start")
    assert after.equals(before)
    assert after.filter(pl.col("window_start") == T0)["events"].to_list() == [5]

    writer.upsert("window_metrics", [metrics(0, 42)])  # newer than the compacted file: it wins
    assert read_table("window_metrics", tmp_path).filter(pl.col("window_start") == T0)[
        "events"
    ].to_list() == [42]


def test_the_writer_compacts_by_itself(tmp_path):
    writer = ParquetWriter(tmp_path, compact_after=4)
    for i in range(9):
        writer.upsert("window_metrics", [metrics(0, i)])
    assert len(parts(tmp_path, "window_metrics")) < 4
    assert read_table("window_metrics", tmp_path)["events"].to_list() == [8]


def test_an_empty_table_reads_with_its_schema(tmp_path):
    table = read_table("alerts", tmp_path)
    assert table.height == 0 and table.columns == list(Alert.__struct_fields__)


def test_the_flow_writes_parquet_tables_through_the_table_sink(tmp_path):
    docs = [event("page_view", f"v{i}", at(12, 0, i)) for i in range(5)]
    records = numbered(message(d) for d in docs)
    flow = build_flow(
        TestingSource(records, batch_size=2), Sinks(tables=table_sink(tmp_path, None)), TEST_CONFIG
    )
    run_main(flow)
    run_main(
        build_flow(TestingSource(records), Sinks(tables=table_sink(tmp_path, None)), TEST_CONFIG)
    )  # replay

    minute = read_table("window_metrics", tmp_path).filter(
        (pl.col("window_size") == "1m") & (pl.col("dimension") == "all")
    )
    assert minute.select("events", "unique_visitors").row(0) == (5, 5)
    assert read_table("sessions", tmp_path).height == 5
    assert read_table("daily_totals", tmp_path)["events"].to_list() == [5]
    assert not list(tmp_path.rglob(".*.tmp"))


# -- Postgres --------------------------------------------------------------------------------------
@pytest.mark.integration
def test_postgres_upserts_by_natural_key(fresh_pg_db):
    import psycopg

    writer = PostgresWriter(fresh_pg_db)
    alert = Alert(
        alert_id="a1",
        rule="traffic_spike",
        severity="warning",
        window_start=T0,
        subject="1m:all",
        evidence='{"ratio": 3.5}',
    )
    writer.upsert("window_metrics", [metrics(0, 5), metrics(1, 7)])
    writer.upsert("window_metrics", [metrics(0, 5), metrics(1, 7)])  # replayed
    writer.upsert("window_metrics", [metrics(0, 9)])  # corrected
    writer.upsert("alerts", [alert, alert])
    writer.close()

    with psycopg.connect(fresh_pg_db) as conn:
        got = conn.execute(
            "select window_start, events from realtime.window_metrics order by window_start"
        ).fetchall()
        alerts = conn.execute(
            "select alert_id, window_start, evidence from realtime.alerts"
        ).fetchall()
        key = conn.execute(
            "select string_agg(a.attname, ',' order by a.attnum) from pg_index i "
            "join pg_attribute a on a.attrelid = i.indrelid and a.attnum = any(i.indkey) "
            "where i.indrelid = 'realtime.window_metrics'::regclass and i.indisprimary"
        ).fetchall()
    assert got == [(T0, 9), (T0 + timedelta(minutes=1), 7)]
    assert alerts == [("a1", T0, '{"ratio": 3.5}')]
    assert key == [("window_size,window_start,dimension,dimension_value",)]


@pytest.mark.integration
def test_the_flow_upserts_into_postgres(fresh_pg_db, tmp_path):
    import psycopg

    docs = [event("purchase", f"v{i}", at(12, 0, i), total=10 + i) for i in range(4)]
    records = numbered(message(d) for d in docs)
    for _ in range(2):  # the second run is a replay: same rows, no duplicates
        run_main(
            build_flow(
                TestingSource(records), Sinks(tables=table_sink(None, fresh_pg_db)), TEST_CONFIG
            )
        )
    with psycopg.connect(fresh_pg_db) as conn:
        daily = conn.execute(
            "select event_date, purchases, revenue from realtime.daily_totals"
        ).fetchall()
        sessions = conn.execute("select count(*) from realtime.sessions").fetchall()
    assert daily == [(date(2026, 3, 2), 4, 46.0)]
    assert sessions == [(4,)]


def test_progress_of_a_partition_being_created_is_no_progress(tmp_path):
    """The demo polls the stream's progress while `shoplake stream` may still be creating its
    recovery partitions: a partition without tables yet means nothing snapshotted, not an error."""
    import sqlite3

    from shoplake.core.speed.progress import read_offsets

    sqlite3.connect(tmp_path / "part-0.sqlite3").close()  # created, tables not yet
    assert read_offsets(tmp_path) == {}
    (tmp_path / "part-0.sqlite3").unlink()
    broken = sqlite3.connect(tmp_path / "part-1.sqlite3")
    broken.execute("create table exs (nonsense int)")
    broken.close()
    with pytest.raises(sqlite3.OperationalError, match="no such column"):
        read_offsets(tmp_path)
