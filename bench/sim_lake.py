"""A simulated lake built the way production builds it, for the ML benchmarks and tests.

The simulator's traffic goes through the ingest path into a broker, then one Dagster run (a
single-run backfill over the days) materializes the chosen layers with their checks. The
simulator's labels come back as truth: the visitors of every bot_burst session.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import dagster as dg

from shoplake.core.ingest import Ingestor
from shoplake.core.settings import Settings, get_settings
from shoplake.simulator import SimConfig, simulate
from shoplake.simulator.faults import Record
from shoplake.simulator.shopdb import ShopDB
from shoplake.simulator.sinks import KafkaSink, Sink

LAYERS = ("bronze", "silver", "staging", "gold", "ml")


class LabelledSink(Sink):
    """Passes records on, and keeps the anonymous ids of the simulator's bot_burst sessions."""

    def __init__(self, inner: Sink):
        super().__init__()
        self.inner = inner
        self.bot_visitors: set[str] = set()

    def write(self, records: Sequence[Record]) -> None:
        for rec in records:
            if rec.fault == "bot_burst":
                self.bot_visitors.add(json.loads(rec.payload)["anonymous_id"])
        self.inner.write(records)
        self.results = self.inner.results

    def close(self) -> None:
        self.inner.close()


@dataclass
class SimLake:
    home: Path
    settings: Settings
    resources: dict[str, Any]
    days: list[date]
    bot_visitors: set[str]
    run: Any = None
    report: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


def lake_settings(home: Path, bootstrap: str, **extra: str) -> Settings:
    return get_settings(
        {
            "SHOPLAKE_HOME": str(home),
            "SHOPLAKE_KAFKA_BOOTSTRAP": bootstrap,
            "SHOPLAKE_PII_KEY": "test-pii-key",
            "SHOPLAKE_ENV": "ci",
            **extra,
        }
    )


def simulate_into(settings: Settings, config: SimConfig) -> tuple[Any, set[str]]:
    """The simulated days into the broker (through the collector's ingest path) and the shop
    database; returns the report and the bot visitors."""
    sink = LabelledSink(KafkaSink(Ingestor.from_settings(settings), settings.bootstrap_servers))
    report = simulate(config, sink, ShopDB(None, settings.shopdb_sqlite_path), show_progress=False)
    return report, sink.bot_visitors


def graph_part(
    defs: dg.Definitions, layers: Sequence[str] = LAYERS
) -> list[dg.AssetsDefinition | dg.AssetChecksDefinition]:
    """The partitioned assets of ``layers`` and every standalone check on them."""
    out: list = []
    for a in defs.assets or []:
        partitioned = isinstance(a, dg.AssetsDefinition) and a.partitions_def is not None
        if partitioned and any(k.path[0] in layers for k in a.keys):
            out.append(a)
    for c in defs.asset_checks or []:
        if any(k.asset_key.path[0] in layers for k in c.check_keys):
            out.append(c)
    return out


def materialize_range(
    parts: list, resources: dict[str, Any], first: date, last: date
) -> dg.ExecuteInProcessResult:
    """One in-process run over first..last, as the CLI's single-run backfill launches it."""
    return dg.materialize(
        parts,
        resources=resources,
        tags={
            "dagster/asset_partition_range_start": first.isoformat(),
            "dagster/asset_partition_range_end": last.isoformat(),
        },
        raise_on_error=False,
    )


def arrival_days(config: SimConfig) -> tuple[date, date]:
    """The bronze days that can hold the simulated days' events (late ones arrive after)."""
    return config.start - timedelta(days=1), config.start + timedelta(days=config.days + 2)
