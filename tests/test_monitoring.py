"""Monitoring as code: Prometheus config and alert rules (promtool), Alertmanager (amtool),
Grafana dashboards whose every metric is one the code exports, and the Dagster exporter."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from datetime import date
from pathlib import Path

import dagster as dg
from prometheus_client import CollectorRegistry

from pipeline_assets.ops.exporter import METRICS as DAGSTER_METRICS
from pipeline_assets.ops.exporter import DagsterMetrics
from shoplake.collector.metrics import CollectorMetrics
from shoplake.core.settings import REPO_ROOT
from tests.conftest import unavailable

INFRA = REPO_ROOT / "infra"
METRIC = re.compile(r"\b((?:shoplake|process|python)_[a-z0-9_]+|up)\b")


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        unavailable(name, "install Debian's prometheus and prometheus-alertmanager packages")
    return path


def run(*cmd: str, cwd: Path | None = None) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def test_prometheus_config_and_rules_are_valid():
    out = run(tool("promtool"), "check", "config", str(INFRA / "prometheus/prometheus.yml"))
    assert "SUCCESS" in out and "11 rules found" in out


def test_every_alert_rule_has_a_passing_unit_test():
    out = run(
        tool("promtool"), "test", "rules", "alert_rules_test.yml", cwd=INFRA / "prometheus/tests"
    )
    assert "SUCCESS" in out
    rules = (INFRA / "prometheus/alert_rules.yml").read_text()
    tests = (INFRA / "prometheus/tests/alert_rules_test.yml").read_text()
    names = re.findall(r"- alert: (\w+)", rules)
    fired = set(re.findall(r"alertname: (\w+)\n\s+exp_alerts:\n\s+- exp_labels", tests))
    assert len(names) == 11 and set(names) == fired


def test_alertmanager_routes_to_slack_and_pagerduty():
    out = run(tool("amtool"), "check-config", str(INFRA / "alertmanager/alertmanager.yml"))
    assert "SUCCESS" in out
    text = (INFRA / "alertmanager/alertmanager.yml").read_text()
    assert "slack_configs" in text and "pagerduty_configs" in text and "hooks.slack" not in text


def exported_names() -> set[str]:
    """Every sample name the code serves: collector, speed layer, Dagster exporter."""
    from prometheus_client import REGISTRY

    import streaming.prom  # noqa: F401 - registers the stream's metrics in the default registry

    names = {"up"}
    for registry in (CollectorMetrics().registry, REGISTRY):
        for family in registry.collect():
            # labelled metrics have no samples until used: derive the sample names from the type
            suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
            names.update(family.name + x for x in suffixes.get(family.type, ("",)))
            names.update(s.name for s in family.samples)
    names.update(DAGSTER_METRICS)
    return names


def test_every_metric_in_dashboards_and_rules_is_exported():
    dashboards = sorted((INFRA / "grafana/dashboards").glob("*.json"))
    assert dashboards
    exported = exported_names()
    used: set[str] = set()
    for path in dashboards:
        board = json.loads(path.read_text())
        assert board["uid"] and board["panels"]
        for panel in board["panels"]:
            assert panel["targets"], panel["title"]
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == "prometheus"
                used.update(METRIC.findall(target["expr"]))
    used.update(METRIC.findall((INFRA / "prometheus/alert_rules.yml").read_text()))
    assert {
        "shoplake_collector_events_accepted_total",
        "shoplake_stream_consumer_lag_messages",
        "shoplake_dagster_asset_check_failed",
        "process_resident_memory_bytes",
    } <= used
    assert used - exported == set()


def test_compose_mounts_the_monitoring_config():
    compose = (REPO_ROOT / "docker-compose.yml").read_text()
    for path in (
        "infra/prometheus",
        "infra/grafana/provisioning",
        "infra/grafana/dashboards",
        "infra/alertmanager",
    ):
        assert path in compose


@dg.asset(partitions_def=dg.DailyPartitionsDefinition(start_date="2026-11-01"))
def events() -> None:
    pass


@dg.asset_check(asset=events)
def contract() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.WARN)


@dg.op
def boom() -> None:
    raise RuntimeError("boom")


@dg.job
def nightly() -> None:
    boom()


def test_dagster_exporter_reports_runs_checks_and_freshness():
    instance = dg.DagsterInstance.ephemeral()
    for day in ("2026-11-18", "2026-11-19"):
        dg.materialize([events, contract], partition_key=day, instance=instance)
    nightly.execute_in_process(instance=instance, raise_on_error=False)
    registry = CollectorRegistry()
    registry.register(
        DagsterMetrics(lambda: instance, [events.key], today=lambda: date(2026, 11, 22))
    )
    value = registry.get_sample_value
    assert value("shoplake_dagster_latest_partition_age_days", {"asset": "events"}) == 3
    assert (
        value(
            "shoplake_dagster_asset_check_failed",
            {"asset": "events", "check": "contract", "check_severity": "WARN"},
        )
        == 1
    )
    assert value("shoplake_dagster_last_run_failed", {"dagster_job": "nightly"}) == 1
    assert value("shoplake_dagster_runs", {"dagster_job": "nightly", "status": "FAILURE"}) == 1
    # the failed step's duration was measured (not a default of 0) and is plausible
    assert (
        0
        < value(
            "shoplake_dagster_step_duration_seconds", {"dagster_job": "nightly", "step": "boom"}
        )
        < 60
    )
    assert 0 <= value("shoplake_dagster_last_materialization_age_seconds", {"asset": "events"}) < 60
