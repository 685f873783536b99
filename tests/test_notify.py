"""Notifications over real HTTP to a local receiver that records what it gets (no mock client)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import duckdb
import pytest

from pipeline_assets.ops.notify import (
    notify_check_failures,
    notify_daily_summary,
    notify_run_failure,
)
from resources import NotifierResource, WarehouseResource
from shoplake.core.notify import Notification, Notifier, read_log
from shoplake.core.platform.process import free_port


class Receiver:
    """A Slack-webhook stand-in over real HTTP: records bodies, answers with scripted codes."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        self.codes: list[int] = []  # answered in order, then 200
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                code = receiver.codes.pop(0) if receiver.codes else 200
                if code == 200:
                    receiver.bodies.append(json.loads(body))
                self.send_response(code)
                self.end_headers()
                self.wfile.write(b"ok" if code == 200 else b"error")

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/services/T000/B000/XXXX"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def test_a_notification_reaches_the_webhook_as_slack_blocks(receiver, tmp_path):
    note = Notification(
        "Run failed: daily_etl",
        "bronze__events: boom",
        "critical",
        fields={"partition": "2026-11-20"},
        link="http://x/runs/1",
    )
    assert Notifier(receiver.url, tmp_path).send(note) is True
    (body,) = receiver.bodies
    assert "Run failed: daily_etl" in body["text"] and "boom" in body["text"]
    assert body["blocks"][1]["fields"][0]["text"] == "*partition*\n2026-11-20"
    assert read_log(tmp_path)[0]["slack"] == "delivered"


def test_server_errors_are_retried_and_client_errors_are_not(receiver, tmp_path):
    notifier = Notifier(receiver.url, tmp_path, backoff=0.01)
    receiver.codes = [500, 503]
    assert notifier.send(Notification("t", "retried")) is True
    assert [b["text"] for b in receiver.bodies] == [":information_source: *t*\nretried"]
    receiver.codes = [404, 200]
    assert notifier.send(Notification("t", "bad url")) is False
    assert receiver.codes == [200]  # the 404 was not retried
    log = read_log(tmp_path)
    assert log[0]["slack"] == "failed" and log[0]["error"] == "HTTP 404"


def test_an_unreachable_webhook_or_none_never_raises_and_keeps_the_log(tmp_path):
    dead = f"http://127.0.0.1:{free_port()}/hook"
    assert Notifier(dead, tmp_path, timeout=1, backoff=0.01).send(Notification("a", "x")) is False
    assert Notifier(None, tmp_path).send(Notification("b", "y", "warning")) is False
    log = read_log(tmp_path)
    assert [(r["title"], r["slack"]) for r in log] == [("b", "disabled"), ("a", "failed")]


def run_event(instance: dg.DagsterInstance, run_id: str, kind: dg.DagsterEventType):
    (entry,) = instance.all_logs(run_id, of_type=kind)
    return entry.dagster_event


@dg.op
def explode():
    raise RuntimeError("the shop database is gone")


@dg.job
def failing_job():
    explode()


def test_run_failure_sensor_posts_the_failed_step(receiver, tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    result = failing_job.execute_in_process(
        instance=instance, raise_on_error=False, tags={"dagster/partition": "2026-11-20"}
    )
    assert not result.success
    failure = run_event(instance, result.run_id, dg.DagsterEventType.RUN_FAILURE)
    context = dg.build_run_status_sensor_context(
        sensor_name="notify_run_failure",
        dagster_event=failure,
        dagster_instance=instance,
        dagster_run=result.dagster_run,
        resources={"notifier": NotifierResource(home=str(tmp_path), webhook_url=receiver.url)},
    ).for_run_failure()
    notify_run_failure(context)
    (body,) = receiver.bodies
    assert "Run failed: failing_job" in body["text"]
    assert "explode" in body["text"] and "the shop database is gone" in body["text"]
    assert "2026-11-20" in json.dumps(body["blocks"])


@dg.asset
def orders_table():
    return 1


@dg.asset_check(asset=orders_table, blocking=True)
def no_negative_totals():
    return dg.AssetCheckResult(passed=False, metadata={"bad_rows": 3})


@dg.asset_check(asset=orders_table)
def has_rows():
    return dg.AssetCheckResult(passed=True)


def test_check_failure_sensor_posts_each_failed_check_once(receiver, tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    dg.materialize(
        [orders_table, no_negative_totals, has_rows], instance=instance, raise_on_error=False
    )
    resources = {"notifier": NotifierResource(home=str(tmp_path), webhook_url=receiver.url)}
    context = dg.build_sensor_context(instance=instance, resources=resources)
    notify_check_failures(context)
    (body,) = receiver.bodies
    assert "1 data-quality check(s) failed" in body["text"]
    assert "no_negative_totals" in body["text"] and "bad_rows=3" in body["text"]
    assert "has_rows" not in body["text"]
    # the cursor moved past them: the next tick sends nothing
    again = dg.build_sensor_context(instance=instance, resources=resources, cursor=context.cursor)
    notify_check_failures(again)
    assert len(receiver.bodies) == 1


@dg.op
def noop():
    return None


@dg.job
def daily_like_job():
    noop()


def test_daily_summary_reads_the_kpis_of_the_run_partition(receiver, tmp_path):
    wh = tmp_path / "warehouse.duckdb"
    con = duckdb.connect(str(wh))
    con.sql("create schema gold")
    con.sql(
        "create table gold.mart_daily_kpis as select date '2026-11-20' as kpi_date, 812 as daily_active_visitors, "
        "1004 as n_sessions, 37 as n_orders, 4210.5 as revenue, 0.0368 as conversion_rate, 0.41 as bounce_rate"
    )
    con.close()
    instance = dg.DagsterInstance.ephemeral()
    result = daily_like_job.execute_in_process(
        instance=instance, tags={"dagster/partition": "2026-11-20"}
    )
    success = run_event(instance, result.run_id, dg.DagsterEventType.RUN_SUCCESS)
    context = dg.build_run_status_sensor_context(
        sensor_name="notify_daily_summary",
        dagster_event=success,
        dagster_instance=instance,
        dagster_run=result.dagster_run,
        resources={
            "notifier": NotifierResource(home=str(tmp_path), webhook_url=receiver.url),
            "warehouse": WarehouseResource(path=str(wh)),
        },
    )
    notify_daily_summary(context)
    (body,) = receiver.bodies
    assert "Daily summary 2026-11-20" in body["text"]
    fields = json.dumps(body["blocks"])
    assert "4,210.50" in fields and "3.68%" in fields and "1,004" in fields
