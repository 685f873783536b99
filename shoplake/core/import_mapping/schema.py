"""What an import mapping may say, checked before any row is read.

Every mistake is reported with the mapping's file and line, the field it is in, and what was
expected: an unknown key ("colum: price", a misspelled top-level key), a misspelled type, a field
the event contract does not have, a column the export does not have. All mistakes are listed at
once.
"""

from __future__ import annotations

import difflib
import string
from pathlib import Path
from typing import Any

import msgspec
import yaml

from shoplake.core.contracts.model import CONTRACTS

# Top-level keys, and whether each is required.
TOP_LEVEL = {
    "name": True,
    "source": True,
    "timestamp": True,
    "event_type": True,
    "event_id": True,
    "events": True,
    "common": False,
    "related": False,
    "skip_when": False,
}
LEAF = {"column", "value", "template", "related", "each", "sum"}
MODIFIERS = {"type", "prefix", "map", "default", "hash", "fields"}
TYPES = ("float", "int", "str")


class MappingInvalid(ValueError):
    """The mapping file has mistakes, or does not fit the export; the message lists each with
    its file and line."""


def _closest(word: str, options: set[str] | list[str]) -> str:
    match = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


class _Checker:
    def __init__(self, path: Path):
        self.path = path
        self.problems: list[str] = []

    def say(self, node: yaml.Node, where: str, what: str) -> None:
        self.problems.append(f"{self.path}:{node.start_mark.line + 1}: {where}: {what}")

    # -- the shape ----------------------------------------------------------------------------
    def top(self, root: yaml.Node) -> None:
        if not isinstance(root, yaml.MappingNode):
            self.say(root, "mapping", "the file must be a YAML mapping (key: value lines)")
            return
        keys = {k.value: v for k, v in root.value}
        for key_node, _ in root.value:
            if key_node.value not in TOP_LEVEL:
                hint = _closest(key_node.value, set(TOP_LEVEL))
                self.say(
                    key_node, key_node.value, f"unknown key{hint}; known: {', '.join(TOP_LEVEL)}"
                )
        for key, required in TOP_LEVEL.items():
            if required and key not in keys:
                self.say(root, key, "missing (required)")
        if "timestamp" in keys:
            self.keys(keys["timestamp"], "timestamp", {"column", "format"}, {"column", "format"})
        related = {}
        if "related" in keys and isinstance(keys["related"], yaml.MappingNode):
            for name, rel in keys["related"].value:
                related[name.value] = rel
                self.keys(
                    rel, f"related.{name.value}", {"file", "key", "on", "order_by"}, {"file", "key"}
                )
        if "skip_when" in keys:
            self.keys(keys["skip_when"], "skip_when", {"column", "in"}, {"column", "in"})
        for name in ("event_type", "event_id"):
            if name in keys:
                self.spec(keys[name], name, None, set(related))
        if "common" in keys:
            self.spec(keys["common"], "common", _shared_fields(), set(related))
        if "events" in keys and isinstance(keys["events"], yaml.MappingNode):
            known = {t for t, _ in CONTRACTS}
            for etype, fields in keys["events"].value:
                if etype.value not in known:
                    hint = _closest(etype.value, known)
                    self.say(etype, f"events.{etype.value}", f"no such event type{hint}")
                    continue
                struct = CONTRACTS[(etype.value, 1)][0]
                self.spec(fields, f"events.{etype.value}", _fields(struct), set(related))

    def keys(self, node: yaml.Node, where: str, allowed: set[str], required: set[str]) -> None:
        if not isinstance(node, yaml.MappingNode):
            self.say(node, where, f"expected a mapping with {', '.join(sorted(allowed))}")
            return
        present = {k.value for k, _ in node.value}
        for k, _ in node.value:
            if k.value not in allowed:
                self.say(k, f"{where}.{k.value}", f"unknown key{_closest(k.value, allowed)}")
        for k in sorted(required - present):
            self.say(node, f"{where}.{k}", "missing (required)")

    def spec(self, node: yaml.Node, where: str, fields: dict | None, related: set[str]) -> None:
        """A field spec: a constant, a leaf spec, an object of specs or a list of specs.
        ``fields``: what the contract has at this place (None: a scalar is expected)."""
        if isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self.spec(item, f"{where}[{i}]", fields, related)
            return
        if not isinstance(node, yaml.MappingNode):
            return  # a constant
        keys = {k.value for k, _ in node.value}
        if keys & LEAF or fields is None:
            self.leaf(node, where, fields, related)
            return
        for k, v in node.value:
            if k.value not in fields:
                hint = _closest(k.value, set(fields) | LEAF | MODIFIERS)
                self.say(k, f"{where}.{k.value}", f"the contract has no such field{hint}")
                continue
            self.spec(v, f"{where}.{k.value}", fields[k.value], related)

    def leaf(
        self, node: yaml.MappingNode, where: str, fields: dict | None, related: set[str]
    ) -> None:
        allowed = LEAF | MODIFIERS
        for k, v in node.value:
            key = k.value
            if key not in allowed:
                self.say(
                    k,
                    f"{where}.{key}",
                    f"unknown key{_closest(key, allowed)}; a field "
                    f"spec takes {', '.join(sorted(LEAF))} and {', '.join(sorted(MODIFIERS))}",
                )
            elif key == "type" and v.value not in TYPES:
                self.say(
                    v,
                    f"{where}.type",
                    f"{v.value!r} is not a type{_closest(v.value, TYPES)}; use {', '.join(TYPES)}",
                )
            elif key in ("related", "each", "sum") and v.value not in related:
                known = ", ".join(sorted(related)) or "none declared under 'related:'"
                self.say(v, f"{where}.{key}", f"no related table {v.value!r} (related: {known})")
            elif key == "default":
                self.spec(v, f"{where}.default", fields, related)
            elif key == "fields":
                self.spec(
                    v, f"{where}.fields", fields if isinstance(fields, dict) else None, related
                )
        keys = {k.value for k, _ in node.value}
        if not keys & LEAF:
            self.say(node, where, f"a field spec needs one of {', '.join(sorted(LEAF))}")


def _fields(struct: type) -> dict[str, Any]:
    """A contract's fields: name -> nested fields (dict) or None (a scalar)."""
    out: dict[str, Any] = {}
    for f in msgspec.inspect.type_info(struct).fields:
        out[f.name] = _nested(f.type)
    return out


def _nested(t: Any) -> dict | None:
    if isinstance(t, msgspec.inspect.Metadata):
        return _nested(t.type)
    if isinstance(t, msgspec.inspect.UnionType):
        for member in t.types:
            if (found := _nested(member)) is not None:
                return found
        return None
    if isinstance(t, msgspec.inspect.StructType):
        return _fields(t.cls)
    if isinstance(t, msgspec.inspect.ListType):
        return _nested(t.item_type)
    return None


def _shared_fields() -> dict[str, Any]:
    """What ``common:`` may set: the fields every contract shares."""
    shared: dict[str, Any] | None = None
    for struct, _ in CONTRACTS.values():
        fields = _fields(struct)
        shared = fields if shared is None else {k: v for k, v in shared.items() if k in fields}
    return shared or {}


def load_and_check(path: Path) -> dict[str, Any]:
    """The mapping at ``path``, parsed and checked; raises MappingInvalid with every mistake."""
    try:
        with open(path, encoding="utf-8") as stream:
            root = yaml.compose(stream)
    except yaml.YAMLError as exc:
        raise MappingInvalid(f"{path}: not valid YAML: {exc}") from None
    if root is None:
        raise MappingInvalid(f"{path}: the file is empty")
    checker = _Checker(path)
    checker.top(root)
    if checker.problems:
        raise MappingInvalid("the mapping has mistakes:\n  " + "\n  ".join(checker.problems))
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def check_columns(
    path: Path, spec: dict[str, Any], columns: set[str], related: dict[str, set[str]]
) -> None:
    """Every column the mapping names is in the export (the main file or its related files)."""
    problems: list[str] = []
    text = path.read_text(encoding="utf-8").splitlines()

    def line_of(name: str) -> int:
        for i, line in enumerate(text, 1):
            if f"column: {name}" in line or f"{{{name}}}" in line or f'column: "{name}"' in line:
                return i
        return 1

    def walk(node: Any, where: str, table: str | None) -> None:
        if isinstance(node, list):
            for i, item in enumerate(node):
                walk(item, f"{where}[{i}]", table)
        elif isinstance(node, dict):
            rel = node.get("related") or node.get("each") or node.get("sum")
            here = rel if rel in related else table
            cols = related.get(here, columns) if here else columns
            col = node.get("column")
            if isinstance(col, str) and col not in cols:
                hint = _closest(col, cols)
                source = f"related file {here!r}" if here else "the export"
                problems.append(
                    f"{path}:{line_of(col)}: {where}: column {col!r} is not in {source}{hint}"
                )
            template = node.get("template")
            if isinstance(template, str):
                for _, name, _, _ in string.Formatter().parse(template):
                    if name and name != "__row__" and name not in cols:
                        problems.append(
                            f"{path}:{line_of(name)}: {where}: template names column "
                            f"{name!r}, which the export does not have{_closest(name, cols)}"
                        )
            for k, v in node.items():
                if k in ("fields",):
                    walk(v, f"{where}.{k}", node.get("each"))
                elif k not in ("column", "template", "map", "related", "each", "sum", "value"):
                    walk(v, f"{where}.{k}", table)

    for key in ("timestamp", "event_type", "event_id", "common", "events"):
        if key in spec:
            walk(spec[key], key, None)
    skip = spec.get("skip_when") or {}
    if skip.get("column") and skip["column"] not in columns:
        problems.append(
            f"{path}:{line_of(skip['column'])}: skip_when: column {skip['column']!r} "
            f"is not in the export{_closest(skip['column'], columns)}"
        )
    if problems:
        raise MappingInvalid("the mapping does not fit the export:\n  " + "\n  ".join(problems))
