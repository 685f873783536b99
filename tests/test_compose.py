"""docker-compose.yml cannot run here; this keeps it in agreement with the settings module."""

from __future__ import annotations

import re

import yaml

from shoplake.core.settings import ENV_VARS, REPO_ROOT, get_settings

COMPOSE = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())


def test_services():
    assert {
        "kafka",
        "postgres",
        "collector",
        "stream",
        "dagster-webserver",
        "dagster-daemon",
    } <= set(COMPOSE["services"])
    assert COMPOSE["services"]["kafka"]["image"].startswith("apache/kafka:4")
    assert COMPOSE["services"]["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"


def test_every_shoplake_variable_is_one_the_settings_module_reads():
    text = (REPO_ROOT / "docker-compose.yml").read_text()
    used = set(re.findall(r"\b(SHOPLAKE_[A-Z_]+)\b", text))
    assert used and used <= set(ENV_VARS), used - set(ENV_VARS)


def test_ports_agree_with_the_settings_defaults():
    defaults = get_settings({})
    ports = {name: svc.get("ports", []) for name, svc in COMPOSE["services"].items()}
    assert f"{defaults.collector_port}:{defaults.collector_port}" in ports["collector"]
    assert f"{defaults.kafka_port}:9092" in ports["kafka"]
    env = COMPOSE["services"]["collector"]["environment"]
    assert env["SHOPLAKE_COLLECTOR_PORT"] == str(defaults.collector_port)
    command = COMPOSE["services"]["collector"]["command"]
    assert command[command.index("--port") + 1] == str(defaults.collector_port)


def test_services_reach_kafka_and_postgres_by_their_compose_names():
    env = COMPOSE["x-shoplake-env"]
    host = env["SHOPLAKE_KAFKA_BOOTSTRAP"].split(":")[0]
    assert host in COMPOSE["services"]
    internal = COMPOSE["services"]["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert env["SHOPLAKE_KAFKA_BOOTSTRAP"] in internal
    assert "@postgres:5432/" in env["SHOPLAKE_PG_DSN"]
    pg = COMPOSE["services"]["postgres"]["environment"]
    assert env["SHOPLAKE_PG_DSN"].endswith("/" + pg["POSTGRES_DB"])
