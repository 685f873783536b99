"""The one daily partitions definition every partitioned asset uses (UTC days).

Its first day is ``SHOPLAKE_PARTITIONS_START`` (see shoplake/core/settings.py), read once when the code
location loads, as Dagster reads every definition.
"""

from __future__ import annotations

import dagster as dg

from shoplake.core.settings import get_settings

daily_partitions = dg.DailyPartitionsDefinition(
    start_date=get_settings().partitions_start.isoformat(), timezone="UTC"
)
