"""Dagster resources, and the one place that picks them per environment (SHOPLAKE_ENV).

local: DuckDB file + Parquet lake under SHOPLAKE_HOME, the provisioned Kafka, SQLite shop DB.
ci/prod: the same resource types pointed at configured services (the lake may be an s3:// URL,
SHOPLAKE_LAKE_ROOT); secrets only through EnvVar or, for S3, the standard AWS credential chain.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl

from resources.dbt import dbt_cli
from resources.ml import FeastResource, MlflowResource
from shoplake.core.lake.io import LakePath, is_object_store, lake_location
from shoplake.core.notify import Notification, Notifier
from shoplake.core.pii import Pseudonymizer
from shoplake.core.settings import Settings, get_settings
from shoplake.core.warehouse import query as warehouse_query


class LakeResource(dg.ConfigurableResource):
    """The Parquet lake: ``<root>/<layer>/<table>/date=YYYY-MM-DD/``.

    ``root`` is a local folder or ``s3://bucket/prefix`` (s3fs; credentials from the standard AWS
    variables or role). The speed layer's tables stay on local disk, under ``speed_root``.
    """

    root: str
    s3_endpoint_url: str | None = None  # an S3-compatible store; unset: AWS S3
    speed_root: str = ""  # default: root

    def location(self) -> LakePath:
        return lake_location(self.root, self.s3_endpoint_url)

    def table_dir(self, layer: str, table: str) -> LakePath:
        return self.location() / layer / table

    @property
    def speed_lake_root(self) -> str:
        root = self.speed_root or self.root
        if "://" in root:
            raise ValueError(
                f"speed tables at {root!r}: the speed layer writes local Parquet only; give the "
                "lake resource a local speed_root (resources_for uses SHOPLAKE_HOME/lake)"
            )
        return root

    def dbt_env(self) -> dict[str, str]:
        """What dbt_project/profiles.yml reads, besides the lake_root var, to open an s3 lake."""
        if not is_object_store(self.location()):
            return {}
        return {"SHOPLAKE_S3_ENDPOINT_URL": self.s3_endpoint_url or ""}


class KafkaResource(dg.ConfigurableResource):
    bootstrap_servers: str


class ShopDBResource(dg.ConfigurableResource):
    """The shop's order database: Postgres when ``dsn`` is set, else the SQLite file."""

    dsn: str | None = None
    sqlite_path: str = ""

    def missing(self) -> str | None:
        """Why there is no order database to read, or None when there is one. A shop that only
        imports clickstream history has none, and its shop tables are then empty."""
        if self.dsn or (self.sqlite_path and Path(self.sqlite_path).exists()):
            return None
        return (
            f"no order database is configured: SHOPLAKE_PG_DSN is unset and there is no SQLite "
            f"shop database at {self.sqlite_path or '(none)'} ('shoplake simulate' writes one)"
        )

    def connect(self) -> tuple[Any, str]:
        """(DB-API connection, placeholder). Read-only use."""
        if self.dsn:
            import psycopg

            return psycopg.connect(self.dsn, autocommit=True), "%s"
        import sqlite3

        if (why := self.missing()) is not None:
            raise FileNotFoundError(why)
        return sqlite3.connect(f"file:{self.sqlite_path}?mode=ro", uri=True), "?"


class WarehouseResource(dg.ConfigurableResource):
    """Where dbt builds the marts: the DuckDB file, or Postgres when ``dsn`` is set."""

    path: str = ""
    dsn: str | None = None

    @property
    def target(self) -> str:
        return "postgres" if self.dsn else "duckdb"

    def query(self, sql: str, params: dict[str, Any] | None = None) -> pl.DataFrame:
        """Read-only, opened and closed per call (see shoplake.core.warehouse)."""
        return warehouse_query(sql, params, path=self.path, dsn=self.dsn)

    def dbt_env(self) -> dict[str, str]:
        """The variables dbt_project/profiles.yml reads for this warehouse."""
        if not self.dsn:
            return {"SHOPLAKE_DBT_TARGET": "duckdb", "SHOPLAKE_WAREHOUSE": self.path}
        from psycopg.conninfo import conninfo_to_dict

        info = conninfo_to_dict(self.dsn)
        return {
            "SHOPLAKE_DBT_TARGET": "postgres",
            "SHOPLAKE_PG_HOST": str(info.get("host", "127.0.0.1")),
            "SHOPLAKE_PG_PORT": str(info.get("port", 5432)),
            "SHOPLAKE_PG_USER": str(info.get("user", "postgres")),
            "SHOPLAKE_PG_PASSWORD": str(info.get("password", "")),
            "SHOPLAKE_PG_DB": str(info.get("dbname", "postgres")),
        }


class PIIResource(dg.ConfigurableResource):
    key: str
    key_id: str

    def pseudonymizer(self) -> Pseudonymizer:
        return Pseudonymizer(self.key.encode(), self.key_id)


class NotifierResource(dg.ConfigurableResource):
    """Slack (when a webhook is set) plus the local notification log under SHOPLAKE_HOME."""

    home: str
    webhook_url: str | None = None
    dagster_url: str = "http://127.0.0.1:3000"

    def notifier(self) -> Notifier:
        return Notifier(self.webhook_url, self.home)

    def send(self, note: Notification) -> bool:
        return self.notifier().send(note)


def _dbt(s: Settings) -> Any:
    return dbt_cli(str(s.dbt_state_dir))


def _local(s: Settings) -> dict[str, Any]:
    return {
        "dbt": _dbt(s),
        "lake": LakeResource(
            root=s.lake_root,
            s3_endpoint_url=s.s3_endpoint_url,
            speed_root=str(s.speed_lake_root),
        ),
        "kafka": KafkaResource(bootstrap_servers=s.bootstrap_servers),
        "shopdb": ShopDBResource(dsn=s.pg_dsn, sqlite_path=str(s.shopdb_sqlite_path)),
        "warehouse": WarehouseResource(path=str(s.home / "warehouse.duckdb"), dsn=s.warehouse_dsn),
        "pii": PIIResource(key=s.pii_key.decode(), key_id=s.pii_key_id),
        "notifier": NotifierResource(
            home=str(s.home), webhook_url=s.slack_webhook_url, dagster_url=s.dagster_url
        ),
        "mlflow": MlflowResource(
            tracking_uri=s.tracking_uri,
            artifact_dir=str(s.mlflow_dir / "artifacts"),
            ui_url=f"http://127.0.0.1:{s.mlflow_port}",
        ),
        "feast": FeastResource(
            feast_dir=str(s.feast_dir),
            lake_root=s.lake_root,
            s3_endpoint_url=s.s3_endpoint_url,
            pg_dsn=s.pg_dsn,
        ),
    }


def _prod(s: Settings) -> dict[str, Any]:
    return {
        **_local(s),
        "shopdb": ShopDBResource(dsn=dg.EnvVar("SHOPLAKE_PG_DSN"), sqlite_path=""),
        "pii": PIIResource(key=dg.EnvVar("SHOPLAKE_PII_KEY"), key_id=s.pii_key_id),
        "warehouse": WarehouseResource(
            path=str(s.home / "warehouse.duckdb"),
            dsn=dg.EnvVar("SHOPLAKE_WAREHOUSE_DSN") if s.warehouse_dsn else None,
        ),
        "notifier": NotifierResource(
            home=str(s.home),
            webhook_url=dg.EnvVar("SHOPLAKE_SLACK_WEBHOOK_URL") if s.slack_webhook_url else None,
            dagster_url=s.dagster_url,
        ),
        "feast": FeastResource(
            feast_dir=str(s.feast_dir),
            lake_root=s.lake_root,
            s3_endpoint_url=s.s3_endpoint_url,
            pg_dsn=dg.EnvVar("SHOPLAKE_PG_DSN") if s.pg_dsn else None,
        ),
    }


RESOURCES: dict[str, Callable[[Settings], dict[str, Any]]] = {
    "local": _local,
    "ci": _local,
    "prod": _prod,
}


def resources_for(settings: Settings | None = None) -> dict[str, Any]:
    settings = settings or get_settings()
    return RESOURCES[settings.env](settings)
