"""Provisioning: idempotent start/stop of the local broker and Postgres, by pid, nothing else."""

from __future__ import annotations

import subprocess
import sys

import psycopg
import pytest

from shoplake.core.platform.kafka import LocalKafka
from shoplake.core.platform.postgres import LocalPostgres
from shoplake.core.platform.process import ProvisioningError, free_port
from shoplake.core.platform.topics import describe_topics

pytestmark = pytest.mark.integration


def test_kafka_start_is_idempotent_and_stop_only_stops_ours(kafka_broker: LocalKafka):
    again = kafka_broker.start()
    assert again.startswith("Kafka already running")
    topics = describe_topics(kafka_broker.bootstrap)
    assert topics["shop.events"]["partitions"] == 6 and topics["shop.events.dlq"]["partitions"] == 3
    # A second LocalKafka with another home knows nothing of this broker: stop does nothing.
    stranger = LocalKafka(
        home=kafka_broker.home / "elsewhere", port=free_port(), controller_port=free_port()
    )
    assert "not running" in stranger.stop()
    assert kafka_broker.running()


def test_kafka_refuses_a_port_someone_else_holds(kafka_broker: LocalKafka, tmp_path):
    other = LocalKafka(
        home=tmp_path, port=kafka_broker.port, controller_port=free_port(), cache=kafka_broker.cache
    )
    with pytest.raises(ProvisioningError, match="SHOPLAKE_KAFKA_BOOTSTRAP"):
        other.start(timeout=10)


def test_cli_topics_lists_the_declared_topics(kafka_bootstrap: str):
    out = subprocess.run(
        [sys.executable, "-m", "shoplake.cli", "kafka", "topics"],
        env={
            "SHOPLAKE_KAFKA_BOOTSTRAP": kafka_bootstrap,
            "PATH": "/usr/bin:/bin",
            "COLUMNS": "200",
        },
        capture_output=True,
        text=True,
        check=True,
    )
    assert "shop.events.dlq" in out.stdout and "30d" in out.stdout


def test_postgres_start_is_idempotent(pg_dsn: str, pg_cluster: LocalPostgres):
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("select current_database()").fetchone()[0] == "shoplake"
        # trust on loopback only
        assert (
            conn.execute(
                "select setting from pg_settings where name = 'listen_addresses'"
            ).fetchone()[0]
            == "127.0.0.1"
        )
    pg = LocalPostgres(home=pg_cluster.home)  # a second handle on the session's cluster
    assert pg.dsn == pg_dsn
    assert pg.start().startswith("Postgres already running")


def test_storage_formats_with_a_cluster_id_that_starts_with_a_dash(
    kafka_broker: LocalKafka, tmp_path
):
    broker = LocalKafka(
        home=tmp_path, port=free_port(), controller_port=free_port(), cache=kafka_broker.cache
    )
    broker._format(broker._write_config(), cluster_id="-AbCdEfGhIjKlMnOpQrStUw")
    assert "cluster.id=-AbCdEfGhIjKlMnOpQrStUw" in (broker.data / "meta.properties").read_text()
