"""Real components for the tests: a Kafka broker, a PostgreSQL cluster, the collector and an
S3-compatible server (moto).

Each is started once per session in a throw-away home (ports chosen free). Under CI=true a
component that cannot be started fails the run; elsewhere the tests that need it are skipped
with the reason and the command that fixes it.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

# The broker and collector helpers live with the benchmarks, which start the same processes; the
# tests import them from here.
from bench.support import (
    RunningCollector,
    clean_env,  # noqa: F401 (the tests import it from here)
    collector_env,
    session_environment,
    start_broker,
)
from shoplake.core import clock
from shoplake.core.platform.kafka import LocalKafka
from shoplake.core.platform.postgres import LocalPostgres
from shoplake.core.settings import REPO_ROOT
from shoplake.simulator import FaultRates, SimConfig

if TYPE_CHECKING:
    from bench.sim_lake import SimLake

# The shell's settings must not reach the tests (a developer's SHOPLAKE_HOME or DAGSTER_HOME would
# point them at real state): every test starts from the defaults, and sets what it needs. The same
# data on every day: the session runs on a fixed date (SHOPLAKE_CLOCK moves it, as CI does for
# month and year ends), on one timeline shared with every process it starts. The local brokers it
# starts neither delete nor refuse records by their own (real) clock.
session_environment()
TODAY = clock.today()
# The end-to-end test's first day: recent enough for Kafka's 7-day retention.
E2E_D0 = TODAY - timedelta(days=5)
# Other tests that replay history into the shared shop.events use this day: inside the 7-day
# retention (older replays make Kafka delete segments) and outside the end-to-end test's window.
REPLAY_DAY = TODAY - timedelta(days=6)

CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
DATASETS = Path(os.environ.get("SHOPLAKE_DATASETS", REPO_ROOT.parent / "shared" / "datasets"))


def unavailable(component: str, exc: BaseException) -> None:
    """Fail under CI (a real component is required there), skip with the fix elsewhere."""
    if CI:
        pytest.fail(
            f"{component} is required under CI=true but could not be started: {exc}", pytrace=False
        )
    pytest.skip(f"{component} unavailable ({exc}); run 'make test' to provision it")


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    try:
        broker = start_broker(tmp_path_factory.mktemp("kafka"))
    except Exception as exc:
        unavailable("Kafka", exc)
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: LocalKafka) -> str:
    return kafka_broker.bootstrap


@pytest.fixture(scope="session")
def pg_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPostgres]:
    pg = LocalPostgres(home=tmp_path_factory.mktemp("pg"))
    try:
        pg.start()
    except Exception as exc:
        unavailable("PostgreSQL", exc)
    yield pg
    pg.destroy()


@pytest.fixture(scope="session")
def pg_dsn(pg_cluster: LocalPostgres) -> str:
    return pg_cluster.dsn


@pytest.fixture
def fresh_pg_db(pg_dsn: str) -> Iterator[str]:
    """A new empty database in the session's cluster."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield pg_dsn.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture(scope="session")
def collector(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningCollector]:
    c = RunningCollector(collector_env(tmp_path_factory.mktemp("collector"), kafka_bootstrap))
    yield c
    c.stop()


# The ML layer's lake: five weeks of a small shop (the revenue forecast needs 35 days of history),
# before the end-to-end test's days.
ML_CONFIG = SimConfig(
    start=TODAY - timedelta(days=45),
    days=36,
    users=400,
    seed=13,
    faults=FaultRates(bot_burst=0.02),
)


@pytest.fixture(scope="session")
def ml_lake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimLake]:
    """Five simulated weeks through their own broker and the whole graph, ML layer included, in
    one run (a single-run backfill): the lake, the run and the simulator's bot visitors."""
    # Dagster and the code location load only for the tests that use this lake.
    from bench.sim_lake import (
        SimLake,
        arrival_days,
        graph_part,
        lake_settings,
        materialize_range,
        simulate_into,
    )
    from pipeline_assets.definitions import defs
    from resources import resources_for

    root = tmp_path_factory.mktemp("ml_lake")
    try:
        broker = start_broker(root / "kafka")
    except Exception as exc:
        unavailable("Kafka", exc)
    settings = lake_settings(root / "home", broker.bootstrap)
    report, bots = simulate_into(settings, ML_CONFIG)
    resources = resources_for(settings)
    first, last = arrival_days(ML_CONFIG)
    run = materialize_range(graph_part(defs), resources, first, last)
    days = [ML_CONFIG.start + timedelta(days=i) for i in range(ML_CONFIG.days)]
    yield SimLake(root / "home", settings, resources, days, bots, run=run, report=report)
    broker.stop()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on a free loopback port, with throw-away AWS credentials in the
    environment for the session (s3fs here and in dbt's subprocess read them from there)."""
    try:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)  # any free port
        server.start()
    except Exception as exc:
        unavailable("S3 (moto server)", exc)
    env = pytest.MonkeyPatch()
    env.setenv("AWS_ACCESS_KEY_ID", "test-key")
    env.setenv("AWS_SECRET_ACCESS_KEY", "test-secret")
    env.setenv("AWS_DEFAULT_REGION", "us-east-1")
    env.delenv("AWS_ENDPOINT_URL", raising=False)
    env.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    env.undo()
    server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> str:
    """A new empty bucket on the session's S3 server."""
    import s3fs

    name = f"t-{uuid.uuid4().hex[:10]}"
    s3fs.S3FileSystem(endpoint_url=s3_endpoint, skip_instance_cache=True).mkdir(name)
    return name
