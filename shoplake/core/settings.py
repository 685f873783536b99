"""All runtime settings, read from ``SHOPLAKE_*`` environment variables with local defaults.

One module so that the CLI, the collector, Dagster resources, docker-compose and the tests
agree on names. Read with :func:`get_settings` each time; nothing is cached, so tests can
change the environment.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
ENVIRONMENTS = ("local", "ci", "prod")
DEV_PII_KEY = "shoplake-local-development-key"
DEV_WRITE_KEY = "dev-write-key"
DEV_REPLAY_KEY = "dev-replay-key"

# Every variable the project reads, with its default (None: unset means "provision/derive").
ENV_VARS: dict[str, str | None] = {
    "SHOPLAKE_ENV": "local",
    "SHOPLAKE_HOME": None,  # default: <repo>/.shoplake
    "SHOPLAKE_LAKE_ROOT": None,  # batch lake: a folder or s3://bucket/prefix; default: <home>/lake
    "SHOPLAKE_S3_ENDPOINT_URL": None,  # S3-compatible store (MinIO, ...); unset: AWS S3
    "SHOPLAKE_KAFKA_BOOTSTRAP": None,  # set: use that cluster, provision nothing
    "SHOPLAKE_KAFKA_PORT": "9092",
    "SHOPLAKE_KAFKA_CONTROLLER_PORT": "9093",
    "SHOPLAKE_PG_DSN": None,  # set: use that server, provision nothing
    "SHOPLAKE_PII_KEY": None,  # required when SHOPLAKE_ENV=prod
    "SHOPLAKE_PII_KEY_ID": None,  # default: derived from the key
    "SHOPLAKE_WRITE_KEYS": None,  # comma-separated; default: dev-write-key outside prod
    "SHOPLAKE_COLLECTOR_HOST": "127.0.0.1",
    "SHOPLAKE_COLLECTOR_PORT": "8080",
    "SHOPLAKE_COLLECTOR_URL": None,  # default: http://<host>:<port>
    "SHOPLAKE_REPLAY_KEYS": None,  # keys that may replay history; default: dev-replay-key outside prod
    "SHOPLAKE_RATE_LIMIT": "2000",  # requests per second per write key
    "SHOPLAKE_RATE_BURST": "4000",
    "SHOPLAKE_RATE_LIMIT_EVENTS": "100000",  # events per second per write key (burst: 2 s of it)
    "SHOPLAKE_RATE_CLIENT_SHARE": "0.5",  # the share of a key's events one client address may use
    "SHOPLAKE_COLLECTOR_HEADER_TIMEOUT": "10",  # seconds to receive a request's headers
    "SHOPLAKE_COLLECTOR_BODY_TIMEOUT": "30",  # seconds to receive a whole body
    "SHOPLAKE_COLLECTOR_IDLE_TIMEOUT": "5",  # seconds a kept-alive connection may wait idle
    "SHOPLAKE_COLLECTOR_MAX_UPLOADS": "256",  # bodies being received at once, per process
    "SHOPLAKE_DELIVERY_TIMEOUT_MS": "10000",
    "SHOPLAKE_DATASETS": None,  # default: <repo>/../shared/datasets
    "SHOPLAKE_PARTITIONS_START": "2026-01-01",  # first daily partition (it also loads all history)
    "SHOPLAKE_LATENESS_DAYS": "2",  # how many arrival days after an event day silver re-reads
    "SHOPLAKE_DLQ_ALERT_THRESHOLD": "100",  # DLQ growth between sensor checks that alerts
    "SHOPLAKE_DAGSTER_PG_URL": None,  # ci/prod: Dagster's own storage (infra/dagster/dagster.postgres.yaml)
    "SHOPLAKE_WAREHOUSE_DSN": None,  # set: dbt builds the marts in this Postgres (dbt-postgres)
    "SHOPLAKE_SLACK_WEBHOOK_URL": None,  # Slack incoming webhook; unset: notifications go to the log
    "SHOPLAKE_DAGSTER_URL": "http://127.0.0.1:3000",  # links in notifications
    "SHOPLAKE_DAGSTER_PORT": "3000",  # make demo: Dagster UI
    "SHOPLAKE_DASHBOARD_PORT": "8501",  # make demo: dashboards (Streamlit)
    "SHOPLAKE_DAGSTER_EXPORTER_PORT": "9200",  # Prometheus metrics of the Dagster instance
    "SHOPLAKE_STREAM_LAG_ALERT": "10000",  # speed-layer lag (messages) that the sensor alerts on
    "SHOPLAKE_SILVER_SPILL_ROWS": "2000000",  # bronze rows a day above which silver goes out of core
    "SHOPLAKE_SILVER_BUCKETS": "32",  # hash buckets of an out-of-core silver day
    "SHOPLAKE_MLFLOW_TRACKING_URI": None,  # an MLflow server; default: SQLite under <home>/mlflow
    "SHOPLAKE_MLFLOW_PORT": "5000",  # make demo: MLflow UI
}


class ConfigError(RuntimeError):
    """A setting is missing or wrong; the message says which variable to set."""


@dataclass(frozen=True)
class Settings:
    env: str
    home: Path
    kafka_bootstrap: str | None
    kafka_port: int
    kafka_controller_port: int
    pg_dsn: str | None
    pii_key: bytes
    pii_key_id: str
    write_keys: tuple[str, ...]
    collector_host: str
    collector_port: int
    collector_url: str
    rate_limit: float
    rate_burst: int
    delivery_timeout_ms: int
    datasets: Path
    warehouse_dsn: str | None = None
    slack_webhook_url: str | None = None
    dagster_url: str = "http://127.0.0.1:3000"
    lake_root: str = ""
    s3_endpoint_url: str | None = None
    partitions_start: date = date(2026, 1, 1)
    lateness_days: int = 2
    replay_keys: tuple[str, ...] = ()
    rate_limit_events: float = 100_000.0
    rate_client_share: float = 0.5
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    idle_timeout_s: float = 5.0
    max_uploads: int = 256
    dlq_alert_threshold: int = 100
    stream_lag_alert: int = 10_000
    silver_spill_rows: int = 2_000_000
    silver_buckets: int = 32
    dagster_port: int = 3000
    dashboard_port: int = 8501
    dagster_exporter_port: int = 9200
    mlflow_tracking_uri: str | None = None
    mlflow_port: int = 5000
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def kafka_provisioned(self) -> bool:
        """True when shoplake runs its own broker (no external bootstrap given)."""
        return self.kafka_bootstrap is None

    @property
    def bootstrap_servers(self) -> str:
        return self.kafka_bootstrap or f"127.0.0.1:{self.kafka_port}"

    def client_key(self, replay: bool) -> str:
        """The key shoplake's own clients send with: a replay key to replay history."""
        if not replay:
            return self.write_keys[0]
        if not self.replay_keys:
            raise ConfigError(
                "replaying history needs a replay key: set SHOPLAKE_REPLAY_KEYS (and give the "
                "collector the same), or send live traffic (shoplake simulate --live)"
            )
        return self.replay_keys[0]

    @property
    def speed_lake_root(self) -> Path:
        """The speed layer's tables stay on local disk whatever the batch lake root is."""
        return self.home / "lake"

    @property
    def dbt_state_dir(self) -> Path:
        """Each dbt run's artifacts and logs, and the parse state the next run starts from."""
        return self.home / "dbt"

    @property
    def stream_recovery_dir(self) -> Path:
        """Where ``shoplake stream`` keeps Bytewax's recovery partitions."""
        return self.home / "stream" / "recovery"

    @property
    def mlflow_dir(self) -> Path:
        """The default MLflow store: a SQLite backend and the artifacts beside it."""
        return self.home / "mlflow"

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.mlflow_dir / 'mlflow.db'}"

    @property
    def feast_dir(self) -> Path:
        """The Feast registry and, without SHOPLAKE_PG_DSN, its SQLite online store."""
        return self.home / "feast"

    @property
    def shopdb_sqlite_path(self) -> Path:
        return self.home / "shopdb.sqlite"


def _get(name: str, env: dict[str, str]) -> str | None:
    value = env.get(name)
    if value is None or value == "":
        return ENV_VARS[name]
    return value


MIN_PROD_KEY_BYTES = 32


def _check_prod_secrets(pii_key: str | None, write_keys: str | None) -> None:
    """Every problem with prod's secrets at once, so one restart fixes them all."""
    problems = []
    if pii_key is None:
        problems.append(
            f"SHOPLAKE_PII_KEY is not set: export SHOPLAKE_PII_KEY=<{MIN_PROD_KEY_BYTES}+ random "
            "bytes from your secret store>"
        )
    elif len(pii_key.encode()) < MIN_PROD_KEY_BYTES:
        problems.append(
            f"SHOPLAKE_PII_KEY is {len(pii_key.encode())} bytes: give {MIN_PROD_KEY_BYTES} or more "
            "(for example: openssl rand -base64 48)"
        )
    if write_keys is None or not write_keys.strip(" ,"):
        problems.append("SHOPLAKE_WRITE_KEYS is not set: give a comma-separated list")
    if problems:
        raise ConfigError("SHOPLAKE_ENV=prod: " + "; ".join(problems))


def _date(name: str, env: dict[str, str]) -> date:
    raw = _get(name, env) or ""
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a date: give it as YYYY-MM-DD") from None


def _positive(name: str, env: dict[str, str]) -> float:
    raw = _get(name, env) or ""
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ConfigError(f"{name}={raw!r} is not a positive number; unset it for the default")
    return value


def _whole_number(name: str, env: dict[str, str]) -> int:
    raw = _get(name, env) or ""
    if not raw.isdigit():
        raise ConfigError(f"{name}={raw!r} is not a whole number of days (0 or more)")
    return int(raw)


def _lake_root(raw: str | None, home: Path) -> str:
    """A URL as given (checked where the lake is opened), a folder made absolute."""
    if raw is None:
        return str(home / "lake")
    return raw.rstrip("/") if "://" in raw else str(Path(raw).resolve())


def get_settings(env: dict[str, str] | None = None) -> Settings:
    """Build settings from ``env`` (default: ``os.environ``)."""
    env = dict(os.environ if env is None else env)
    name = _get("SHOPLAKE_ENV", env) or "local"
    if name not in ENVIRONMENTS:
        raise ConfigError(f"SHOPLAKE_ENV={name!r} is not one of {', '.join(ENVIRONMENTS)}")

    home = Path(_get("SHOPLAKE_HOME", env) or REPO_ROOT / ".shoplake").resolve()

    pii_key = _get("SHOPLAKE_PII_KEY", env)
    raw_keys = _get("SHOPLAKE_WRITE_KEYS", env)
    if name == "prod":
        _check_prod_secrets(pii_key, raw_keys)
    pii_key = pii_key or DEV_PII_KEY
    raw_keys = raw_keys or DEV_WRITE_KEY
    key_id = _get("SHOPLAKE_PII_KEY_ID", env) or (
        "k" + hashlib.sha256(b"shoplake-key-id:" + pii_key.encode()).hexdigest()[:8]
    )

    write_keys = tuple(k.strip() for k in raw_keys.split(",") if k.strip())
    if not write_keys:
        raise ConfigError("SHOPLAKE_WRITE_KEYS is empty: give at least one write key.")

    raw_replay = _get("SHOPLAKE_REPLAY_KEYS", env)
    if raw_replay is None:
        raw_replay = "" if name == "prod" else DEV_REPLAY_KEY
    replay_keys = tuple(k.strip() for k in raw_replay.split(",") if k.strip())

    host = _get("SHOPLAKE_COLLECTOR_HOST", env) or "127.0.0.1"
    port = int(_get("SHOPLAKE_COLLECTOR_PORT", env) or 8080)
    datasets = _get("SHOPLAKE_DATASETS", env) or str(REPO_ROOT.parent / "shared" / "datasets")
    return Settings(
        env=name,
        home=home,
        kafka_bootstrap=_get("SHOPLAKE_KAFKA_BOOTSTRAP", env),
        kafka_port=int(_get("SHOPLAKE_KAFKA_PORT", env) or 9092),
        kafka_controller_port=int(_get("SHOPLAKE_KAFKA_CONTROLLER_PORT", env) or 9093),
        pg_dsn=_get("SHOPLAKE_PG_DSN", env),
        pii_key=pii_key.encode(),
        pii_key_id=key_id,
        write_keys=write_keys,
        collector_host=host,
        collector_port=port,
        collector_url=_get("SHOPLAKE_COLLECTOR_URL", env) or f"http://{host}:{port}",
        rate_limit=float(_get("SHOPLAKE_RATE_LIMIT", env) or 2000),
        rate_burst=int(_get("SHOPLAKE_RATE_BURST", env) or 4000),
        delivery_timeout_ms=int(_get("SHOPLAKE_DELIVERY_TIMEOUT_MS", env) or 10000),
        datasets=Path(datasets),
        warehouse_dsn=_get("SHOPLAKE_WAREHOUSE_DSN", env),
        slack_webhook_url=_get("SHOPLAKE_SLACK_WEBHOOK_URL", env),
        dagster_url=_get("SHOPLAKE_DAGSTER_URL", env) or "http://127.0.0.1:3000",
        lake_root=_lake_root(_get("SHOPLAKE_LAKE_ROOT", env), home),
        s3_endpoint_url=_get("SHOPLAKE_S3_ENDPOINT_URL", env),
        replay_keys=replay_keys,
        rate_limit_events=_positive("SHOPLAKE_RATE_LIMIT_EVENTS", env),
        rate_client_share=min(1.0, _positive("SHOPLAKE_RATE_CLIENT_SHARE", env)),
        header_timeout_s=_positive("SHOPLAKE_COLLECTOR_HEADER_TIMEOUT", env),
        body_timeout_s=_positive("SHOPLAKE_COLLECTOR_BODY_TIMEOUT", env),
        idle_timeout_s=_positive("SHOPLAKE_COLLECTOR_IDLE_TIMEOUT", env),
        max_uploads=int(_positive("SHOPLAKE_COLLECTOR_MAX_UPLOADS", env)),
        partitions_start=_date("SHOPLAKE_PARTITIONS_START", env),
        lateness_days=_whole_number("SHOPLAKE_LATENESS_DAYS", env),
        dlq_alert_threshold=_whole_number("SHOPLAKE_DLQ_ALERT_THRESHOLD", env),
        stream_lag_alert=_whole_number("SHOPLAKE_STREAM_LAG_ALERT", env),
        silver_spill_rows=_whole_number("SHOPLAKE_SILVER_SPILL_ROWS", env),
        silver_buckets=int(_positive("SHOPLAKE_SILVER_BUCKETS", env)),
        dagster_port=int(_positive("SHOPLAKE_DAGSTER_PORT", env)),
        dashboard_port=int(_positive("SHOPLAKE_DASHBOARD_PORT", env)),
        dagster_exporter_port=int(_positive("SHOPLAKE_DAGSTER_EXPORTER_PORT", env)),
        mlflow_tracking_uri=_get("SHOPLAKE_MLFLOW_TRACKING_URI", env),
        mlflow_port=int(_positive("SHOPLAKE_MLFLOW_PORT", env)),
    )
