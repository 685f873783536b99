"""Writing and reading lake partitions: atomic replace, a manifest beside the data, stable bytes.

A table folder is a local ``Path`` or, when the lake root is ``s3://bucket/prefix``, a
universal_pathlib ``UPath`` over s3fs. Object stores have no rename, so there the data object is
written first and the manifest last: an s3 partition is present only once its manifest exists.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq
from upath import UPath

DATA_FILE = "part-0.parquet"
MANIFEST = "_manifest.json"
OBJECT_STORES = ("s3",)

# A local folder, or a location in an object store (UPath: same ``/``, exists, glob, read_text).
LakePath = Path | UPath

# What a partition is written from: one frame, or frames made one at a time (a day too big to hold
# whole), written in order as row groups of the same file.
PartitionData = pl.DataFrame | Sequence[pl.LazyFrame]


@dataclass(frozen=True)
class WrittenPartition:
    path: LakePath
    rows: int
    bytes: int
    manifest: dict[str, Any]


def lake_location(root: str, s3_endpoint_url: str | None = None) -> LakePath:
    """The lake root as a path: a local folder, or ``s3://bucket/prefix`` through s3fs.

    Credentials and region come from the standard AWS chain (AWS_ACCESS_KEY_ID,
    AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION, a profile or an instance role).
    """
    if "://" not in root:
        return Path(root)
    scheme = root.split("://", 1)[0]
    if scheme not in OBJECT_STORES:
        raise ValueError(
            f"lake root {root!r}: {scheme}:// is not supported; set SHOPLAKE_LAKE_ROOT to a local "
            "folder or an s3://bucket/prefix URL"
        )
    return UPath(root, **s3_options(s3_endpoint_url))


def s3_options(endpoint_url: str | None) -> dict[str, Any]:
    """s3fs options. Listings are not cached: other processes write the lake too."""
    return {"use_listings_cache": False} | ({"endpoint_url": endpoint_url} if endpoint_url else {})


def is_object_store(path: LakePath) -> bool:
    return isinstance(path, UPath) and path.protocol in OBJECT_STORES


def register_lake(con: Any, root: LakePath) -> None:
    """Let a DuckDB connection read ``root``'s URLs (fsspec; DuckDB's httpfs is not used)."""
    if is_object_store(root):
        con.register_filesystem(root.fs)


def partition_dir(table_dir: LakePath, day: date | str) -> LakePath:
    return table_dir / f"date={day if isinstance(day, str) else day.isoformat()}"


def _manifest_text(manifest: dict[str, Any]) -> str:
    return json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n"


def write_partition(
    table_dir: LakePath, day: date | str, data: PartitionData, manifest: dict[str, Any]
) -> WrittenPartition:
    """Replace partition ``date=<day>`` of ``table_dir`` with ``data`` and its manifest.

    The same data gives the same bytes (no wall-clock metadata), locally and on s3.
    """
    if is_object_store(table_dir):
        return _write_objects(partition_dir(table_dir, day), data, manifest)
    return _write_folder(table_dir, partition_dir(table_dir, day), data, manifest)


def _write_parquet(data: PartitionData, dest: Any) -> int:
    """One Parquet file (zstd, statistics); its row count. Parts are made and written one at a
    time, each as its own row groups."""
    if isinstance(data, pl.DataFrame) or len(data) == 1:
        df = data if isinstance(data, pl.DataFrame) else data[0].collect()
        df.write_parquet(dest, compression="zstd", compression_level=3, statistics=True)
        return df.height
    writer, rows = None, 0
    # The next part is computed while this one is compressed and written (both release the GIL).
    with ThreadPoolExecutor(1) as pool:
        ahead = pool.submit(_arrow, data[0])
        try:
            for i in range(len(data)):
                table = ahead.result()
                if i + 1 < len(data):
                    ahead = pool.submit(_arrow, data[i + 1])
                if writer is None:
                    writer = pq.ParquetWriter(
                        dest, table.schema, compression="zstd", compression_level=3
                    )
                writer.write_table(table.cast(writer.schema))
                rows += table.num_rows
                del table
        finally:
            if writer is not None:
                writer.close()
    return rows


def _arrow(part: pl.LazyFrame) -> Any:
    # One chunk per column: the bytes must not depend on how the part was computed.
    return part.collect().rechunk().to_arrow()


def _write_folder(
    table_dir: Path, final: Path, data: PartitionData, manifest: dict[str, Any]
) -> WrittenPartition:
    """Write to a temporary folder, then swap it in. Readers glob ``date=*/``; the temporary and
    old folders start with a dot, so a reader never sees a half-written partition."""
    table_dir.mkdir(parents=True, exist_ok=True)
    tmp = table_dir / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        manifest = {**manifest, "rows": _write_parquet(data, tmp / DATA_FILE)}
        (tmp / MANIFEST).write_text(_manifest_text(manifest))
        if final.exists():
            old = table_dir / f".old-{final.name}-{uuid.uuid4().hex[:8]}"
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old)
        else:
            os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    rows = manifest["rows"]
    return WrittenPartition(final, rows, (final / DATA_FILE).stat().st_size, manifest)


def _write_objects(final: UPath, data: PartitionData, manifest: dict[str, Any]) -> WrittenPartition:
    """One PUT per object, each atomic. The old manifest goes first, so a rewrite that fails
    halfway reads as a missing partition, never as new data under the old manifest."""
    buf = io.BytesIO()
    manifest = {**manifest, "rows": _write_parquet(data, buf)}
    body = buf.getvalue()
    (final / MANIFEST).unlink(missing_ok=True)
    (final / DATA_FILE).write_bytes(body)
    (final / MANIFEST).write_text(_manifest_text(manifest))
    return WrittenPartition(final, manifest["rows"], len(body), manifest)


def _present(folder: LakePath) -> bool:
    return (folder / (MANIFEST if is_object_store(folder) else DATA_FILE)).exists()


def has_partition(table_dir: LakePath, day: date | str) -> bool:
    return _present(partition_dir(table_dir, day))


def read_partition(
    table_dir: LakePath, day: date | str, columns: list[str] | None = None
) -> pl.DataFrame | None:
    folder = partition_dir(table_dir, day)
    if not _present(folder):
        return None
    path = folder / DATA_FILE
    return pl.read_parquet(path.read_bytes() if is_object_store(path) else path, columns=columns)


def iter_partition(
    table_dir: LakePath,
    day: date | str,
    columns: list[str] | None = None,
    batch_rows: int = 2_000_000,
    whole_rows: int | None = None,
) -> Iterator[pl.DataFrame]:
    """A partition as frames of at most ``batch_rows`` rows, in file order (nothing if absent).

    For partitions too big to hold whole next to what is made of them (a 10M-event bronze day).
    A partition of at most ``whole_rows`` rows (default ``batch_rows``) is one frame, read by
    Polars' own (parallel) reader.
    """
    folder = partition_dir(table_dir, day)
    if not _present(folder):
        return
    path = folder / DATA_FILE
    whole = batch_rows if whole_rows is None else whole_rows
    with path.open("rb") as fh:
        pf = pq.ParquetFile(fh)
        rows = pf.metadata.num_rows
        if rows > whole and is_object_store(path):
            for batch in pf.iter_batches(batch_size=batch_rows, columns=columns):
                yield pl.from_arrow(batch)  # type: ignore[misc]
            return
    if rows <= whole:  # one frame, also for an empty partition (with its columns)
        yield pl.read_parquet(path.read_bytes() if is_object_store(path) else path, columns=columns)
        return
    # Polars reads only the row groups a slice needs, about 8x faster than pyarrow's iter_batches
    # followed by a conversion.
    scan = pl.scan_parquet(path)
    scan = scan.select(columns) if columns else scan
    for offset in range(0, rows, batch_rows):
        yield scan.slice(offset, batch_rows).collect()


def read_partitions(
    table_dir: LakePath, days: list[date], columns: list[str] | None = None
) -> list[pl.DataFrame]:
    return [df for d in days if (df := read_partition(table_dir, d, columns)) is not None]


def read_manifest(table_dir: LakePath, day: date | str) -> dict[str, Any] | None:
    path = partition_dir(table_dir, day) / MANIFEST
    return json.loads(path.read_text()) if path.exists() else None


def stored_days(table_dir: LakePath) -> list[date]:
    """The days of the partitions present in ``table_dir``, in order."""
    marker = MANIFEST if is_object_store(table_dir) else DATA_FILE
    return sorted(date.fromisoformat(p.parent.name[5:]) for p in table_dir.glob(f"date=*/{marker}"))
