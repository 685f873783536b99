"""Land an import in bronze: validated through the collector's ingest path, one partition per day.

Each mapping has its own bronze table (``bronze/import_<mapping>``), so imports from different
sources never overwrite each other, and re-importing the same file gives the same bytes.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import msgspec
import polars as pl

from shoplake.core import clock
from shoplake.core.import_mapping.mapping import Mapping, build_events
from shoplake.core.ingest import Accepted, Ingestor
from shoplake.core.lake.bronze import BRONZE_SCHEMA
from shoplake.core.lake.imports import REJECTS_TABLE, import_table_name
from shoplake.core.lake.io import LakePath, write_partition

MAPPING_ERROR = "mapping_error"  # a row the mapping could not turn into an event


@dataclass
class ImportReport:
    mapping: str
    rows_read: int = 0
    landed: int = 0
    skipped: int = 0
    rejected: Counter = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)  # reason -> the first row's error
    days: dict[str, int] = field(default_factory=dict)
    rejects_at: str | None = None  # the partition of bronze/import_rejects holding them


def import_file(
    mapping_name: str, source: Path, lake_root: LakePath, ingestor: Ingestor
) -> ImportReport:
    mapping = Mapping.load(mapping_name)
    built = build_events(mapping, source)
    docs = built.docs
    rows = len(docs) + len(built.skipped) + len(built.failed)
    report = ImportReport(mapping.name, rows_read=rows, skipped=len(built.skipped))
    rejects: list[dict[str, Any]] = []
    for row, why, source_row in built.failed:
        report.rejected[MAPPING_ERROR] += 1
        report.examples.setdefault(MAPPING_ERROR, f"row {row}: {why}")
        raw = ingestor.pii.scrub_raw(msgspec.json.encode(source_row))
        rejects.append(
            {"mapping": mapping.name, "row": row, "reason": MAPPING_ERROR, "error": why, "raw": raw}
        )
    by_day: dict[date, dict[str, list[Any]]] = defaultdict(lambda: {k: [] for k in BRONZE_SCHEMA})
    encode = msgspec.json.encode
    for i, (row, doc) in enumerate(docs):
        raw = encode(doc)
        received = datetime.fromisoformat(doc["received_at"].replace("Z", "+00:00"))
        result = ingestor.accept(raw, received, replay=True)
        if not isinstance(result, Accepted):
            report.rejected[result.reason] += 1
            report.examples.setdefault(result.reason, f"row {row}: {result.error}")
            rejects.append(
                {
                    "mapping": mapping.name,
                    "row": row,
                    "reason": result.reason,
                    "error": result.error,
                    "raw": ingestor.pii.scrub_raw(raw),
                }
            )
            continue
        cols = by_day[received.date()]
        cols["kafka_partition"].append(
            -1
        )  # not from Kafka: the row number stands in for the offset
        cols["kafka_offset"].append(i)
        cols["kafka_timestamp"].append(result.timestamp_ms)
        cols["key"].append(result.key.decode())
        cols["event_id"].append(result.event_id)
        cols["event_type"].append(result.event_type)
        cols["value"].append(result.value.decode())
    table_dir = lake_root / "bronze" / import_table_name(mapping.name)
    source_digest = hashlib.sha256(b"".join(p.read_bytes() for p in _files(source))).hexdigest()
    for day, cols in sorted(by_day.items()):
        frame = pl.DataFrame(
            {
                k: pl.Series(k, v, dtype=pl.Int64 if k == "kafka_timestamp" else BRONZE_SCHEMA[k])
                for k, v in cols.items()
            }
        ).with_columns(pl.col("kafka_timestamp").cast(pl.Datetime("ms", "UTC")))
        ids = sorted(frame["event_id"].to_list())
        manifest = {
            "mapping": mapping.name,
            "date": day.isoformat(),
            "source_sha256": source_digest,
            "event_id_checksum": hashlib.sha256("\n".join(ids).encode()).hexdigest(),
        }
        write_partition(table_dir, day, frame, manifest)
        report.days[day.isoformat()] = frame.height
        report.landed += frame.height
    if rejects:
        written = write_partition(
            lake_root / "bronze" / REJECTS_TABLE,
            clock.today(),
            pl.DataFrame(rejects),
            {"mapping": mapping.name},
        )
        report.rejects_at = str(written.path)
    return report


def _files(source: Path) -> list[Path]:
    return sorted(p for p in source.iterdir() if p.is_file()) if source.is_dir() else [source]
