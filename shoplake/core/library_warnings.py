"""The one place where warnings from libraries are silenced, each because it is understood.

Called when the Dagster code location is imported (``pipeline_assets/__init__.py``), so neither
``shoplake demo`` nor ``dagster dev`` prints them. Warnings not listed here still show.
"""

from __future__ import annotations

import warnings

KNOWN = [
    # pandera imports pyspark.pandas at start-up (to patch pandas' typing), and pyspark then warns
    # about pandas 3. shoplake does not use pandas-on-Spark; Spark's own use is issue #14's.
    (FutureWarning, r"PySpark does not yet fully support pandas >= 3"),
    # Dagster marks these parameters beta/preview; shoplake relies on them on purpose: one run per
    # backfill (BackfillPolicy.single_run), checks partitioned like their assets, and a partition
    # mapping that lets the first partition have no previous day.
    (Warning, r"Parameter `backfill_policy` of function `asset` is currently in beta"),
    (Warning, r"Specifying a partitions_def on an AssetCheckSpec is currently in preview"),
    (Warning, r"Parameter `allow_nonexistent_upstream_partitions` of initializer"),
    # sqlglot (through dagster-dbt) imports its Rust tokenizer, which announces its successor.
    (DeprecationWarning, r"sqlglotrs is deprecated"),
]


def silence_known_library_warnings() -> None:
    for category, message in KNOWN:
        warnings.filterwarnings("ignore", message=message, category=category)
