"""The one daily partitions definition every partitioned asset uses (UTC days)."""

from __future__ import annotations

import os

import dagster as dg

PARTITIONS_START = os.environ.get("SHOPLAKE_PARTITIONS_START", "2026-01-01")

daily_partitions = dg.DailyPartitionsDefinition(start_date=PARTITIONS_START, timezone="UTC")
