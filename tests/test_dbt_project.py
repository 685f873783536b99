"""The dbt project's YAML agrees with its SQL and with the Python contracts.

Every model has a YAML next to it that states the grain and describes every column the model
outputs; the output columns are read from the model's final select, parsed by sqlfluff with the
macro stubs of dbt_project/.sqlfluff. No warehouse, lake or dbt run is needed.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest
import yaml
from sqlfluff.core import FluffConfig, Linter
from sqlfluff.core.parser import BaseSegment

from shoplake.core.contracts import EVENT_TYPES
from shoplake.core.settings import REPO_ROOT

DBT_DIR = REPO_ROOT / "dbt_project"
MODELS = sorted((DBT_DIR / "models").rglob("*.sql"))


def model_yaml(sql: Path) -> dict:
    """The model's entry in the YAML next to it (``<model>.yml``)."""
    doc = yaml.safe_load(sql.with_suffix(".yml").read_text())
    (entry,) = [m for m in doc.get("models", []) if m["name"] == sql.stem]
    return entry


def accepted_values(model: dict, column: str) -> list:
    (col,) = [c for c in model["columns"] if c["name"] == column]
    (test,) = [t["accepted_values"] for t in col["data_tests"] if "accepted_values" in t]
    return test["arguments"]["values"]


@cache
def _linter() -> Linter:
    return Linter(config=FluffConfig.from_path(str(DBT_DIR)))


def _child(segment: BaseSegment, *types: str) -> BaseSegment | None:
    return segment.get_child(*types)


def _select_columns(select: BaseSegment, ctes: dict[str, BaseSegment]) -> list[str]:
    """Output column names of a select statement; ``select *`` from a CTE expands to its columns."""
    clause = _child(select, "select_clause")
    assert clause is not None
    names: list[str] = []
    for element in clause.get_children("select_clause_element"):
        alias = _child(element, "alias_expression")
        if alias is not None:
            names.append([s.raw for s in alias.raw_segments if s.raw.strip()][-1])
        elif _child(element, "wildcard_expression") is not None:
            source = next(_child(select, "from_clause").recursive_crawl("table_reference")).raw
            assert source in ctes, f"select * from {source}: not a CTE of the model"
            names.extend(_select_columns(ctes[source], ctes))
        else:
            column = _child(element, "column_reference")
            assert column is not None, f"unnamed select target: {element.raw}"
            names.append(column.raw.split(".")[-1])
    return names


def output_columns(sql: Path) -> list[str]:
    """The columns the model outputs, read from its final select."""
    (parsed,) = _linter().parse_path(str(sql))
    assert parsed.tree is not None and not parsed.violations, (sql, parsed.violations)
    (statement,) = parsed.tree.recursive_crawl("with_compound_statement", recurse_into=False)
    ctes = {}
    for cte in statement.get_children("common_table_expression"):
        name = _child(cte, "identifier").raw
        ctes[name] = next(_child(cte, "bracketed").recursive_crawl("select_statement"))
    return _select_columns(_child(statement, "select_statement"), ctes)


def test_stg_events_accepts_exactly_the_contracts_event_types():
    values = accepted_values(model_yaml(DBT_DIR / "models/staging/stg_events.sql"), "event_type")
    assert len(values) == len(set(values))
    assert sorted(values) == sorted(EVENT_TYPES)


def test_the_project_has_the_models_this_test_expects():
    names = {m.stem for m in MODELS}
    assert len(names) == len(MODELS) >= 26
    assert {"stg_events", "fct_sessions", "mart_daily_ctr", "mart_rfm_segments"} <= names


@pytest.mark.parametrize("sql", MODELS, ids=lambda p: p.stem)
def test_model_yaml_states_the_grain_and_describes_every_column(sql: Path):
    model = model_yaml(sql)
    assert "One row per" in model.get("description", ""), sql.stem
    undescribed = [c["name"] for c in model["columns"] if not c.get("description", "").strip()]
    assert undescribed == [], sql.stem


@pytest.mark.parametrize("sql", MODELS, ids=lambda p: p.stem)
def test_model_yaml_columns_are_the_models_output_columns(sql: Path):
    documented = [c["name"] for c in model_yaml(sql)["columns"]]
    assert len(documented) == len(set(documented)), sql.stem
    assert documented == output_columns(sql), sql.stem


def test_unit_tests_cover_the_tricky_logic():
    tested = {}
    for path in (DBT_DIR / "models").rglob("*.yml"):
        for unit in yaml.safe_load(path.read_text()).get("unit_tests", []):
            assert unit["model"] == path.stem, f"{unit['name']} is not next to its model"
            tested.setdefault(unit["model"], []).append(unit["name"])
    assert {
        "fct_sessions",
        "mart_daily_kpis",
        "mart_daily_ctr",
        "mart_conversion_funnel",
        "mart_rfm_segments",
    } <= set(tested)
