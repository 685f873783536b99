"""Writing and reading lake partitions: atomic replace, a manifest beside the data, stable bytes."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl

DATA_FILE = "part-0.parquet"
MANIFEST = "_manifest.json"


@dataclass(frozen=True)
class WrittenPartition:
    path: Path
    rows: int
    bytes: int
    manifest: dict[str, Any]


def partition_dir(table_dir: Path, day: date | str) -> Path:
    return table_dir / f"date={day if isinstance(day, str) else day.isoformat()}"


def write_partition(
    table_dir: Path, day: date | str, df: pl.DataFrame, manifest: dict[str, Any]
) -> WrittenPartition:
    """Write ``df`` + manifest to a temporary folder, then swap it in for ``date=<day>``.

    Readers glob ``date=*/``; the temporary and old folders start with a dot, so a reader never
    sees a half-written partition. The same frame gives the same bytes (no wall-clock metadata).
    """
    final = partition_dir(table_dir, day)
    table_dir.mkdir(parents=True, exist_ok=True)
    tmp = table_dir / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        df.write_parquet(tmp / DATA_FILE, compression="zstd", compression_level=3, statistics=True)
        manifest = {**manifest, "rows": df.height}
        (tmp / MANIFEST).write_text(
            json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n"
        )
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
    return WrittenPartition(final, df.height, (final / DATA_FILE).stat().st_size, manifest)


def read_partition(table_dir: Path, day: date | str) -> pl.DataFrame | None:
    path = partition_dir(table_dir, day) / DATA_FILE
    return pl.read_parquet(path) if path.exists() else None


def read_partitions(table_dir: Path, days: list[date]) -> list[pl.DataFrame]:
    return [df for d in days if (df := read_partition(table_dir, d)) is not None]


def read_manifest(table_dir: Path, day: date | str) -> dict[str, Any] | None:
    path = partition_dir(table_dir, day) / MANIFEST
    return json.loads(path.read_text()) if path.exists() else None
