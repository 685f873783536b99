"""JSON Schema export of every contract, and the compatibility rules between versions.

Within one major version a contract may only gain optional fields. Removing a field, changing
its type or making it required needs a new major version (a new Struct in ``CONTRACTS``).
Two things are not type changes: the ``x-pii`` policy of a field (how it is pseudonymized), and
limits that only restate what storage can hold (no control characters in ids, int64 bounds):
a value outside them could never be stored.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec

from shoplake.core.contracts.model import CONTRACTS, INT64_MAX, NO_CONTROL

SCHEMA_DIR = Path(__file__).with_name("schemas")


def schema_path(event_type: str, major: int, root: Path = SCHEMA_DIR) -> Path:
    return root / f"{event_type}.v{major}.json"


def generate(event_type: str, major: int) -> dict[str, Any]:
    struct, minor = CONTRACTS[(event_type, major)]
    schema = msgspec.json.schema(struct)
    schema["$id"] = f"https://shoplake.dev/contracts/{event_type}/v{major}"
    schema["x-event-type"] = event_type
    schema["x-contract-version"] = f"{major}.{minor}"
    return schema


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if ref:
        return schema["$defs"][ref.rsplit("/", 1)[-1]]
    return node


def _object(schema: dict[str, Any], node: dict[str, Any]) -> tuple[dict[str, Any] | None, bool]:
    """(the object schema a property holds, whether it is nullable); (None, _) if not an object."""
    node = _resolve(schema, node)
    nullable = False
    if "anyOf" in node:
        members = [m for m in node["anyOf"] if m.get("type") != "null"]
        nullable = len(members) < len(node["anyOf"])
        if len(members) != 1:
            return None, nullable
        node = _resolve(schema, members[0])
    return (node if "properties" in node else None), nullable


def _types(schema: dict[str, Any], node: dict[str, Any]) -> Any:
    """A comparable description of a property's type (follows $refs, ignores descriptions)."""
    node = _resolve(schema, node)
    if "anyOf" in node:
        return sorted(json.dumps(_types(schema, n), sort_keys=True) for n in node["anyOf"])
    # Length limits are compared apart (relaxing one is compatible, tightening is not).
    ignored = (
        "description",
        "title",
        "default",
        "properties",
        "required",
        "$defs",
        "maxLength",
        "minLength",
    )
    keep = {k: v for k, v in node.items() if k not in ignored and k != "x-pii"}
    if keep.get("pattern") == NO_CONTROL:
        del keep["pattern"]
    if keep.get("maximum") == INT64_MAX:
        del keep["maximum"]
    if "properties" in node:
        keep["object"] = {
            name: _types(schema, prop) for name, prop in sorted(node["properties"].items())
        }
        keep["required"] = sorted(node.get("required", []))
    if "items" in node:
        keep["items"] = _types(schema, node["items"])
    return keep


def _lengths(schema: dict[str, Any], node: dict[str, Any]) -> tuple[int, float]:
    """(minLength, maxLength) of a string property (through $ref / nullable anyOf)."""
    node = _resolve(schema, node)
    for member in node.get("anyOf", [node]):
        member = _resolve(schema, member)
        if member.get("type") == "string":
            return member.get("minLength", 0), member.get("maxLength", float("inf"))
    return 0, float("inf")


def incompatibilities(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Why ``new`` cannot replace ``old`` under the same major version (empty: compatible)."""
    problems: list[str] = []

    def walk(o_node: dict[str, Any], n_node: dict[str, Any], path: str) -> None:
        o_props, n_props = o_node.get("properties", {}), n_node.get("properties", {})
        for name in o_props:
            if name not in n_props:
                problems.append(f"{path}{name}: field removed")
        o_req, n_req = set(o_node.get("required", [])), set(n_node.get("required", []))
        for name in sorted(n_req - o_req):
            problems.append(
                f"{path}{name}: field became required"
                if name in o_props
                else f"{path}{name}: new field is required"
            )
        for name, o_prop in o_props.items():
            if name not in n_props:
                continue
            n_prop = n_props[name]
            (o_obj, o_null), (n_obj, n_null) = _object(old, o_prop), _object(new, n_prop)
            if o_obj is not None and n_obj is not None and o_null == n_null:
                walk(o_obj, n_obj, f"{path}{name}.")
            elif _types(old, o_prop) != _types(new, n_prop):
                problems.append(f"{path}{name}: type changed")
            else:
                (o_min, o_max), (n_min, n_max) = _lengths(old, o_prop), _lengths(new, n_prop)
                if n_max < o_max or n_min > o_min:
                    problems.append(f"{path}{name}: length limit tightened")

    walk(_resolve(old, old), _resolve(new, new), "")
    return problems


def export(root: Path = SCHEMA_DIR, check_compat: bool = True) -> list[Path]:
    """Write every contract's schema. Refuses an incompatible change within a major version."""
    root.mkdir(parents=True, exist_ok=True)
    written = []
    for event_type, major in sorted(CONTRACTS):
        path = schema_path(event_type, major, root)
        new = generate(event_type, major)
        if check_compat and path.exists():
            problems = incompatibilities(json.loads(path.read_text()), new)
            if problems:
                raise ValueError(
                    f"{event_type} v{major}: incompatible change ({'; '.join(problems)}). "
                    f"Add a new major version (a new Struct registered as ({event_type!r}, {major + 1})) instead."
                )
        text = render(new)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            written.append(path)
    return written
