"""The steps of CONTRIBUTING.md's recipes that are easy to forget, each caught here."""

from __future__ import annotations

import importlib
import pkgutil

import dagster as dg

import pipeline_assets
from pipeline_assets.definitions import defs
from shoplake.core.import_mapping.mapping import MAPPINGS_DIR, Mapping
from shoplake.core.lake.imports import import_table_name

KEYS = {spec.key for spec in defs.resolve_all_asset_specs()}
CHECKS = {key for key in defs.resolve_asset_graph().asset_check_keys}


def project_modules() -> list:
    return [
        importlib.import_module(info.name)
        for info in pkgutil.walk_packages(pipeline_assets.__path__, "pipeline_assets.")
    ]


def test_every_asset_and_check_in_the_code_location_modules_is_in_the_definitions():
    """A new asset or check defined in a module but not merged into definitions.py fails here."""
    declared_assets, declared_checks = set(), set()
    for module in project_modules():
        for value in vars(module).values():
            if isinstance(value, dg.AssetsDefinition):
                declared_assets |= set(value.keys)
                declared_checks |= set(value.check_keys)
            elif isinstance(value, dg.AssetChecksDefinition):
                declared_checks |= set(value.check_keys)
    assert declared_assets and declared_checks
    assert declared_assets - KEYS == set()
    assert declared_checks - CHECKS == set()


def test_every_shipped_import_mapping_loads_and_has_its_bronze_table():
    mappings = sorted(p.stem for p in MAPPINGS_DIR.glob("*.yaml"))
    assert {"rees46", "olist"} <= set(mappings)
    for name in mappings:
        assert Mapping.load(name).name == name
        assert dg.AssetKey(["bronze", import_table_name(name)]) in KEYS, name
