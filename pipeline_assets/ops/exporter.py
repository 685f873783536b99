"""Prometheus exporter for Dagster: run and check outcomes, partition freshness, step durations.

    python -m pipeline_assets.ops.exporter [--port 9200]     (or: shoplake dagster-exporter)

Reads the Dagster instance (DAGSTER_HOME) at scrape time, so it holds no state and can restart
at will. The metric names are the ones infra/prometheus/alert_rules.yml and the Grafana
dashboards use (a test checks that they agree).
"""

import argparse
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, date, datetime

import dagster as dg
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from shoplake.core import clock

RUN_WINDOW_SECONDS = 24 * 3600
CHECK_EVENTS_SCANNED = 5000

METRICS = (
    "shoplake_dagster_runs",
    "shoplake_dagster_last_run_failed",
    "shoplake_dagster_step_duration_seconds",
    "shoplake_dagster_asset_check_failed",
    "shoplake_dagster_latest_partition_age_days",
    "shoplake_dagster_last_materialization_age_seconds",
)


class DagsterMetrics(Collector):
    def __init__(
        self,
        instance: Callable[[], dg.DagsterInstance],
        assets: Iterable[dg.AssetKey],
        today: Callable[[], date] = clock.today,
    ):
        self.instance = instance
        self.assets = list(assets)
        self.today = today

    def collect(self) -> Iterator[GaugeMetricFamily]:
        instance = self.instance()
        yield from self._runs(instance)
        yield from self._checks(instance)
        yield from self._freshness(instance)

    def _runs(self, instance: dg.DagsterInstance) -> Iterator[GaugeMetricFamily]:
        since = datetime.fromtimestamp(time.time() - RUN_WINDOW_SECONDS, UTC)
        runs = instance.get_runs(filters=dg.RunsFilter(created_after=since))
        counts: dict[tuple[str, str], int] = {}
        latest: dict[str, dg.DagsterRun] = {}  # get_runs is newest first
        for run in runs:
            key = (run.job_name, run.status.value)
            counts[key] = counts.get(key, 0) + 1
            if run.is_finished:
                latest.setdefault(run.job_name, run)
        total = GaugeMetricFamily(
            "shoplake_dagster_runs",
            "Runs created in the last 24 h by job and status",
            labels=["dagster_job", "status"],
        )
        for (job, status), n in sorted(counts.items()):
            total.add_metric([job, status], n)
        failed = GaugeMetricFamily(
            "shoplake_dagster_last_run_failed",
            "1 if the job's latest finished run failed",
            labels=["dagster_job"],
        )
        steps = GaugeMetricFamily(
            "shoplake_dagster_step_duration_seconds",
            "Step (asset) durations of each job's latest finished run",
            labels=["dagster_job", "step"],
        )
        for job, run in sorted(latest.items()):
            failed.add_metric([job], 1.0 if run.status == dg.DagsterRunStatus.FAILURE else 0.0)
            for stat in instance.get_run_step_stats(run.run_id):
                if stat.start_time and stat.end_time:
                    steps.add_metric([job, stat.step_key], stat.end_time - stat.start_time)
        yield total
        yield failed
        yield steps

    def _checks(self, instance: dg.DagsterInstance) -> Iterator[GaugeMetricFamily]:
        records = instance.event_log_storage.get_event_records(
            dg.EventRecordsFilter(event_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION),
            limit=CHECK_EVENTS_SCANNED,
            ascending=False,
        )
        latest: dict[tuple[str, str], object] = {}
        for rec in records:
            ev = rec.event_log_entry.dagster_event.event_specific_data
            latest.setdefault((ev.asset_key.to_user_string(), ev.check_name), ev)
        fam = GaugeMetricFamily(
            "shoplake_dagster_asset_check_failed",
            "1 if the check's latest evaluation failed (data contract broken)",
            labels=["asset", "check", "check_severity"],
        )
        for (asset, check), ev in sorted(latest.items()):
            fam.add_metric([asset, check, ev.severity.value], 0.0 if ev.passed else 1.0)
        yield fam

    def _freshness(self, instance: dg.DagsterInstance) -> Iterator[GaugeMetricFamily]:
        age_days = GaugeMetricFamily(
            "shoplake_dagster_latest_partition_age_days",
            "Days between today (UTC) and the newest materialized daily partition",
            labels=["asset"],
        )
        age_seconds = GaugeMetricFamily(
            "shoplake_dagster_last_materialization_age_seconds",
            "Seconds since the asset was last materialized",
            labels=["asset"],
        )
        now = time.time()
        for key in self.assets:
            name = key.to_user_string()
            event = instance.get_latest_materialization_event(key)
            if event is None:
                continue
            age_seconds.add_metric([name], now - event.timestamp)
            partitions = instance.get_materialized_partitions(key)
            days = [date.fromisoformat(p) for p in partitions if _is_date(p)]
            if days:
                age_days.add_metric([name], (self.today() - max(days)).days)
        yield age_days
        yield age_seconds


def _is_date(key: str) -> bool:
    try:
        date.fromisoformat(key)
    except ValueError:
        return False
    return True


def watched_assets() -> list[dg.AssetKey]:
    """One asset per layer: enough to see a layer fall behind, cheap to scrape."""
    return [
        dg.AssetKey(["bronze", "events"]),
        dg.AssetKey(["silver", "events"]),
        dg.AssetKey(["silver", "sessions"]),
        dg.AssetKey(["gold", "fct_events"]),
        dg.AssetKey(["gold", "mart_daily_kpis"]),
    ]


def serve(port: int) -> None:
    registry = CollectorRegistry()
    registry.register(DagsterMetrics(dg.DagsterInstance.get, watched_assets()))
    start_http_server(port, registry=registry)
    print(f"Dagster metrics on http://127.0.0.1:{port}/metrics (Ctrl-C stops)")
    while True:
        time.sleep(3600)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, default=9200, help="HTTP port for /metrics")
    serve(ap.parse_args().port)


if __name__ == "__main__":
    main()
