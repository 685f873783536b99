"""Lake partitions behave the same in a local folder and in an s3:// lake (a real moto server):
read back what was written, replace on re-run with the same bytes, manifest last on s3."""

from __future__ import annotations

import hashlib
from datetime import date
from pathlib import Path

import duckdb
import polars as pl
import pyarrow.parquet as pq
import pytest
import s3fs

from resources import LakeResource, resources_for
from shoplake.core.lake.io import (
    DATA_FILE,
    MANIFEST,
    LakePath,
    is_object_store,
    lake_location,
    partition_dir,
    read_manifest,
    read_partition,
    read_partitions,
    register_lake,
    stored_days,
    write_partition,
)
from shoplake.core.settings import get_settings

DAY = date(2026, 3, 2)
FRAME = pl.DataFrame({"event_id": ["a", "b", "c"], "n": [1, 2, 3]})
OTHER = pl.DataFrame({"event_id": ["x"], "n": [9]})


@pytest.fixture(params=["local", "s3"])
def table(request, tmp_path: Path) -> LakePath:
    if request.param == "local":
        return lake_location(str(tmp_path / "lake")) / "bronze" / "events"
    endpoint = request.getfixturevalue("s3_endpoint")
    bucket = request.getfixturevalue("s3_bucket")
    return lake_location(f"s3://{bucket}/lake", endpoint) / "bronze" / "events"


def listing(table: LakePath) -> dict[str, str]:
    """Every file under the table (temporary ones included) with its sha256."""
    if is_object_store(table):
        fs = s3fs.S3FileSystem(endpoint_url=table.storage_options["endpoint_url"])
        return {
            k.split("/events/", 1)[1]: hashlib.sha256(fs.cat_file(k)).hexdigest()
            for k in fs.find(table.path)
        }
    return {
        str(p.relative_to(table)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in table.rglob("*")
        if p.is_file()
    }


def test_written_partitions_read_back(table: LakePath):
    written = write_partition(table, DAY, FRAME, {"source": "test"})
    assert written.rows == 3 and written.manifest == {"source": "test", "rows": 3}
    assert read_partition(table, DAY).equals(FRAME)
    assert read_manifest(table, DAY) == {"source": "test", "rows": 3}
    assert read_partition(table, date(2026, 3, 1)) is None
    assert read_manifest(table, date(2026, 3, 1)) is None
    write_partition(table, date(2026, 3, 4), OTHER, {})
    assert stored_days(table) == [DAY, date(2026, 3, 4)]
    assert [
        f.height for f in read_partitions(table, [date(2026, 3, 1), DAY, date(2026, 3, 4)])
    ] == [3, 1]
    files = listing(table)
    assert sorted(files) == sorted(
        f"date={d}/{name}" for d in ("2026-03-02", "2026-03-04") for name in (DATA_FILE, MANIFEST)
    )
    assert written.bytes == len((partition_dir(table, DAY) / DATA_FILE).read_bytes())


def test_a_rerun_replaces_the_partition_with_the_same_bytes(table: LakePath):
    write_partition(table, DAY, FRAME, {"source": "test"})
    first = listing(table)
    write_partition(table, DAY, OTHER, {"source": "other"})
    assert read_partition(table, DAY).equals(OTHER)
    assert read_manifest(table, DAY)["rows"] == 1
    assert listing(table).keys() == first.keys()  # replaced, nothing left beside it
    write_partition(table, DAY, FRAME, {"source": "test"})
    assert listing(table) == first


def test_a_partition_written_in_parts_is_one_file_of_row_groups(table: LakePath):
    """A day too big to hold whole is written part by part (silver/events by hour)."""
    parts = [FRAME.lazy().head(2), FRAME.lazy().tail(1)]
    written = write_partition(table, DAY, parts, {"source": "parts"})
    assert written.rows == 3 and read_manifest(table, DAY)["rows"] == 3
    assert read_partition(table, DAY).equals(FRAME)
    path = partition_dir(table, DAY) / DATA_FILE
    with path.open("rb") as fh:
        assert pq.ParquetFile(fh).metadata.num_row_groups == 2
    first = listing(table)
    write_partition(table, DAY, parts, {"source": "parts"})
    assert listing(table) == first  # the same parts give the same bytes


def test_local_and_s3_partitions_are_byte_identical(
    tmp_path: Path, s3_endpoint: str, s3_bucket: str
):
    local = lake_location(str(tmp_path)) / "t"
    remote = lake_location(f"s3://{s3_bucket}/lake", s3_endpoint) / "t"
    for t in (local, remote):
        write_partition(t, DAY, FRAME, {"source": "test"})
    for name in (DATA_FILE, MANIFEST):
        assert (partition_dir(local, DAY) / name).read_bytes() == (
            partition_dir(remote, DAY) / name
        ).read_bytes()


def test_on_s3_a_partition_without_its_manifest_is_missing(s3_endpoint: str, s3_bucket: str):
    """The manifest is written last: data whose manifest never arrived (a crash between the two
    PUTs, or a rewrite that failed halfway) is not read."""
    table = lake_location(f"s3://{s3_bucket}/lake", s3_endpoint) / "silver" / "events"
    write_partition(table, DAY, FRAME, {})
    (partition_dir(table, DAY) / MANIFEST).unlink()
    assert (partition_dir(table, DAY) / DATA_FILE).exists()
    assert read_partition(table, DAY) is None and stored_days(table) == []
    write_partition(table, DAY, FRAME, {})
    assert read_partition(table, DAY).equals(FRAME) and stored_days(table) == [DAY]


def test_duckdb_reads_the_s3_lake_through_fsspec(s3_endpoint: str, s3_bucket: str):
    root = lake_location(f"s3://{s3_bucket}/lake", s3_endpoint)
    write_partition(root / "silver" / "events", DAY, FRAME, {})
    write_partition(root / "silver" / "events", date(2026, 3, 3), OTHER, {})
    con = duckdb.connect()
    register_lake(con, root)
    got = con.sql(
        f"select count(*), sum(n) from read_parquet('{root}/silver/events/date=*/{DATA_FILE}')"
    ).fetchall()
    assert got == [(4, 15)]


def test_settings_choose_the_lake_root(tmp_path: Path):
    base = {"SHOPLAKE_HOME": str(tmp_path)}
    lake = resources_for(get_settings(base))["lake"]
    assert lake.root == str(tmp_path.resolve() / "lake") and lake.dbt_env() == {}
    assert isinstance(lake.table_dir("bronze", "events"), Path)
    s3 = get_settings(
        base
        | {
            "SHOPLAKE_LAKE_ROOT": "s3://bucket/lake/",
            "SHOPLAKE_S3_ENDPOINT_URL": "http://127.0.0.1:9000",
        }
    )
    lake = resources_for(s3)["lake"]
    assert (lake.root, lake.s3_endpoint_url) == ("s3://bucket/lake", "http://127.0.0.1:9000")
    assert str(lake.table_dir("bronze", "events")) == "s3://bucket/lake/bronze/events"
    assert lake.dbt_env() == {"SHOPLAKE_S3_ENDPOINT_URL": "http://127.0.0.1:9000"}
    assert lake.speed_lake_root == str(tmp_path.resolve() / "lake")  # the speed layer stays local
    relative = get_settings(base | {"SHOPLAKE_LAKE_ROOT": "some/lake"})
    assert Path(relative.lake_root).is_absolute()


def test_unsupported_roots_say_what_to_set():
    with pytest.raises(ValueError, match="SHOPLAKE_LAKE_ROOT"):
        lake_location("gs://bucket/lake")
    with pytest.raises(ValueError, match="local speed_root"):
        _ = LakeResource(root="s3://bucket/lake").speed_lake_root


def test_iter_partition_batches_in_file_order_and_keeps_empty_partitions(tmp_path):
    from shoplake.core.lake.io import iter_partition

    table = tmp_path / "t"
    df = pl.DataFrame({"k": list(range(10)), "value": [f"v{i}" for i in range(10)]})
    write_partition(table, "2026-01-01", df, {})
    batches = list(iter_partition(table, "2026-01-01", batch_rows=3))
    assert [b.height for b in batches] == [3, 3, 3, 1]
    assert pl.concat(batches).equals(df)
    assert next(
        b.columns for b in iter_partition(table, "2026-01-01", ["value"], batch_rows=3)
    ) == ["value"]
    (whole,) = iter_partition(table, "2026-01-01")
    assert whole.equals(df)
    write_partition(table, "2026-01-02", df.clear(), {})
    (empty,) = iter_partition(table, "2026-01-02")
    assert empty.height == 0 and empty.columns == ["k", "value"]
    assert list(iter_partition(table, "2026-01-03")) == []
