"""A small declarative mapping from rows of a file export onto the event contracts.

A mapping (YAML) says how to build each field of an event from a row. A field spec is one of:

- ``{column: c}``: the row's value of ``c`` (``type: float|int|str``, ``prefix``, ``map``, ``default``);
- ``{value: v}``: a constant;
- ``{template: "a-{c}"}``: a string from row values (``{__row__}`` is the row number);
- ``{related: name, column: c}``: from the first related row (joined by key);
- ``{each: name, fields: {...}}``: a list, one item per related row;
- ``{sum: name, column: c}``: the sum over related rows;

and ``hash: true`` turns a rendered string into a deterministic UUID (event ids, order ids).
Nested dicts and lists of specs build nested objects. Every built event is then validated by the
same contract decoder as the collector's, so an import cannot land what the collector would refuse.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from shoplake.core.import_mapping.schema import check_columns, load_and_check

MAPPINGS_DIR = Path(__file__).with_name("mappings")
NAMESPACE = uuid.UUID("6f1c1d2e-5b7a-4e52-9a55-7d3c0b0f5e11")
LEAF_KEYS = {"column", "value", "template", "related", "each", "sum"}


class MappingError(ValueError):
    """The mapping or the file does not fit; the message says which field or column."""


@dataclass
class Mapping:
    name: str
    spec: dict[str, Any]
    path: Path

    @classmethod
    def load(cls, name_or_path: str) -> Mapping:
        """The mapping, checked against what a mapping may say before any row is read."""
        path = Path(name_or_path)
        if not path.exists():
            path = MAPPINGS_DIR / f"{name_or_path}.yaml"
        if not path.exists():
            known = ", ".join(sorted(p.stem for p in MAPPINGS_DIR.glob("*.yaml")))
            raise MappingError(f"no mapping {name_or_path!r}; shipped mappings: {known}")
        spec = load_and_check(path)
        return cls(spec["name"], spec, path)


def read_table(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".parquet":
        frame = pl.read_parquet(path)
    else:
        frame = pl.read_csv(path, infer_schema_length=0)  # everything as text; specs cast
    return frame.to_dicts()


def header(path: Path) -> set[str]:
    """The columns of an export file, without reading its rows."""
    if path.suffix == ".parquet":
        return set(pl.read_parquet_schema(path))
    return set(pl.read_csv(path, n_rows=0, infer_schema_length=0).columns)


class RowContext:
    def __init__(self, row: dict[str, Any], index: int, related: dict[str, list[dict[str, Any]]]):
        self.row = row
        self.index = index
        self.related = related


def _cast(value: Any, typ: str | None) -> Any:
    if value is None or value == "":
        return None
    if typ == "float":
        return float(value)
    if typ == "int":
        return int(float(value))
    if typ == "str":
        return str(value)
    return value


def _render(template: str, row: dict[str, Any], index: int) -> str:
    values = {k: ("" if v is None else v) for k, v in row.items()}
    values["__row__"] = index
    try:
        return template.format(**values)
    except KeyError as exc:
        raise MappingError(
            f"template {template!r} names column {exc} that the file does not have"
        ) from None


def evaluate(spec: Any, ctx: RowContext) -> Any:
    if isinstance(spec, list):
        return [evaluate(s, ctx) for s in spec]
    if not isinstance(spec, dict):
        return spec
    if not (LEAF_KEYS & spec.keys()):
        out = {k: evaluate(v, ctx) for k, v in spec.items()}
        return {k: v for k, v in out.items() if v is not None}
    row = ctx.row
    if "related" in spec and "column" in spec:
        rows = ctx.related.get(spec["related"]) or []
        row = rows[0] if rows else {}
    if "each" in spec:
        return [
            evaluate(spec["fields"], RowContext(r, ctx.index, ctx.related))
            for r in ctx.related.get(spec["each"], [])
        ]
    if "sum" in spec:
        total = sum(
            float(r[spec["column"]])
            for r in ctx.related.get(spec["sum"], [])
            if r.get(spec["column"])
        )
        return round(total, 2)
    if "value" in spec:
        value = spec["value"]
    elif "template" in spec:
        value = _render(spec["template"], row, ctx.index)
    else:
        col = spec["column"]
        if row and col not in row:
            raise MappingError(f"column {col!r} is not in the file (columns: {', '.join(row)})")
        value = row.get(col)
    if value in (None, "") and "default" in spec:
        return evaluate(spec["default"], ctx)
    if "map" in spec and value is not None:
        value = spec["map"].get(value, value)
    try:
        value = _cast(value, spec.get("type"))
    except ValueError:
        source = spec.get("column") or spec.get("template") or "value"
        raise MappingError(f"{source}: {value!r} is not a {spec.get('type')}") from None
    if value is not None and "prefix" in spec:
        value = f"{spec['prefix']}{value}"
    if value is not None and spec.get("hash"):
        value = str(uuid.uuid5(NAMESPACE, str(value)))
    return value


def parse_time(value: str, fmt: str) -> datetime:
    return datetime.strptime(value, fmt).replace(tzinfo=UTC)


@dataclass
class Built:
    """What a mapping made of an export's rows. Documents still need the contract check."""

    docs: list[tuple[int, dict[str, Any]]]  # (row, event document)
    skipped: list[tuple[int, str]]  # (row, why the mapping skips it)
    failed: list[tuple[int, str, dict[str, Any]]]  # (row, why it could not be built, the row)


def build_events(mapping: Mapping, folder_or_file: Path) -> Built:
    spec = mapping.spec
    if folder_or_file.is_dir():
        files = sorted(folder_or_file.glob(spec["source"]))
        folder = folder_or_file
    else:
        files, folder = [folder_or_file], folder_or_file.parent
    if not files:
        raise MappingError(f"no file matching {spec['source']!r} in {folder_or_file}")
    relations = spec.get("related") or {}
    check_columns(
        mapping.path,
        spec,
        header(files[0]),
        {name: header(folder / rel["file"]) for name, rel in relations.items()},
    )
    related: dict[str, dict[Any, list[dict[str, Any]]]] = {}
    for name, rel in (spec.get("related") or {}).items():
        index: dict[Any, list[dict[str, Any]]] = defaultdict(list)
        rel_rows = read_table(folder / rel["file"])
        if "order_by" in rel:
            rel_rows.sort(key=lambda r, k=rel["order_by"]: float(r[k] or 0))
        for r in rel_rows:
            index[r[rel["key"]]].append(r)
        related[name] = index

    docs: list[tuple[int, dict[str, Any]]] = []
    skipped: list[tuple[int, str]] = []
    failed: list[tuple[int, str, dict[str, Any]]] = []
    n = 0
    for path in files:
        for row in read_table(path):
            n += 1
            skip = spec.get("skip_when")
            if skip and row.get(skip["column"]) in skip["in"]:
                skipped.append((n, f"{skip['column']}={row.get(skip['column'])}"))
                continue
            rel_rows = {
                name: related[name].get(row.get(rel.get("on", rel["key"])), [])
                for name, rel in (spec.get("related") or {}).items()
            }
            ctx = RowContext(row, n, rel_rows)
            try:
                etype = evaluate(spec["event_type"], ctx)
                if etype not in spec["events"]:
                    skipped.append((n, f"event_type {etype!r} has no mapping"))
                    continue
                docs.append((n, _document(spec, ctx, etype)))
            except (MappingError, ValueError) as exc:
                failed.append((n, str(exc), row))
    return Built(docs, skipped, failed)


def _document(spec: dict[str, Any], ctx: RowContext, etype: str) -> dict[str, Any]:
    raw_time = ctx.row[spec["timestamp"]["column"]]
    try:
        ts = parse_time(raw_time, spec["timestamp"]["format"])
    except (TypeError, ValueError):
        raise MappingError(
            f"timestamp {raw_time!r} does not match the format {spec['timestamp']['format']!r}"
        ) from None
    stamp = ts.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {
        "event_id": evaluate(spec["event_id"], ctx),
        "event_type": etype,
        "schema_version": "1.0",
        "occurred_at": stamp,
        "sent_at": stamp,
        "received_at": stamp,
        **evaluate(spec.get("common", {}), ctx),
        **evaluate(spec["events"][etype], ctx),
    }
