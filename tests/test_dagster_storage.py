"""Dagster's own storage in Postgres (dagster-postgres), as ci/prod run it."""

from __future__ import annotations

import shutil

import dagster as dg
import psycopg
import pytest

from shoplake.core.settings import REPO_ROOT

pytestmark = pytest.mark.integration


@dg.asset
def probe_asset() -> int:
    return 1


def test_runs_and_events_are_stored_in_postgres(fresh_pg_db: str, tmp_path, monkeypatch):
    shutil.copy(REPO_ROOT / "infra/dagster/dagster.postgres.yaml", tmp_path / "dagster.yaml")
    monkeypatch.setenv(
        "SHOPLAKE_DAGSTER_PG_URL", fresh_pg_db.replace("postgresql://", "postgresql+psycopg2://")
    )
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        result = dg.materialize([probe_asset], instance=instance)
        assert result.success
        assert instance.get_latest_materialization_event(dg.AssetKey("probe_asset")) is not None
    with psycopg.connect(fresh_pg_db) as conn:
        runs = conn.execute("select count(*) from runs").fetchall()[0][0]
        events = conn.execute(
            "select count(*) from event_logs where asset_key is not null"
        ).fetchall()[0][0]
    assert runs == 1 and events >= 1


def test_local_instance_file_is_valid(tmp_path, monkeypatch):
    shutil.copy(REPO_ROOT / "infra/dagster/dagster.yaml", tmp_path / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert dg.materialize([probe_asset], instance=instance).success
