"""Where imported history lands: one bronze table per mapping, and one table of rejected rows."""

from __future__ import annotations

IMPORT_PREFIX = "import_"
REJECTS_TABLE = "import_rejects"


def import_table_name(mapping: str) -> str:
    return f"{IMPORT_PREFIX}{mapping}"
