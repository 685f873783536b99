"""Notifications from Dagster: run failures, failed asset checks, and the daily summary.

All three go through the ``notifier`` resource (Slack when a webhook is set, and always the local
notification log the dashboard shows). They run by default: they only report.
"""

from typing import Any

import dagster as dg

from pipeline_assets.jobs import daily_etl_job
from resources import NotifierResource, WarehouseResource
from shoplake.core.notify import Notification

RANGE_END = "dagster/asset_partition_range_end"
PARTITION = "dagster/partition"
MAX_CHECKS_PER_TICK = 1000


def run_link(base: str, run_id: str) -> str:
    return f"{base.rstrip('/')}/runs/{run_id}"


def root_cause(error: Any) -> str:
    """The innermost error of Dagster's wrapped chain: the user's exception, not the wrapper."""
    while getattr(error, "cause", None) is not None:
        error = error.cause
    return error.message.strip()


def run_partition(tags: dict[str, str]) -> str | None:
    return tags.get(PARTITION) or tags.get(RANGE_END)


@dg.run_failure_sensor(
    name="notify_run_failure",
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Posts every failed run (job, partition, first error) to Slack and the log.",
)
def notify_run_failure(context: dg.RunFailureSensorContext, notifier: NotifierResource):
    run = context.dagster_run
    error = context.failure_event.message or "no message"
    step_errors = [
        f"{e.step_key}: {root_cause(e.event_specific_data.error)[:300]}"
        for e in context.get_step_failure_events()
        if e.event_specific_data and e.event_specific_data.error
    ]
    notifier.send(
        Notification(
            title=f"Run failed: {run.job_name}",
            text="\n".join(step_errors[:5]) or error[:500],
            severity="critical",
            source="dagster",
            fields={
                "partition": run_partition(run.tags) or "-",
                "run": run.run_id[:8],
                "failed steps": len(step_errors),
            },
            link=run_link(notifier.dagster_url, run.run_id),
        )
    )


def failed_check_notes(records: list[Any], dagster_url: str) -> list[Notification]:
    """One notification per run that had failing checks, listing them with their evidence."""
    by_run: dict[str, list[Any]] = {}
    for rec in records:
        evaluation = rec.event_log_entry.dagster_event.event_specific_data
        if not evaluation.passed:
            by_run.setdefault(rec.event_log_entry.run_id, []).append(evaluation)
    notes = []
    for run_id, failed in by_run.items():
        lines = []
        for ev in failed[:10]:
            evidence = ", ".join(
                f"{k}={getattr(v, 'value', v)}" for k, v in list(ev.metadata.items())[:4]
            )
            lines.append(
                f"- `{ev.asset_key.to_user_string()}` *{ev.check_name}*"
                f" ({ev.severity.value.lower()}){': ' + evidence if evidence else ''}"
            )
        if len(failed) > 10:
            lines.append(f"... and {len(failed) - 10} more")
        blocking = any(ev.severity == dg.AssetCheckSeverity.ERROR for ev in failed)
        notes.append(
            Notification(
                title=f"{len(failed)} data-quality check(s) failed",
                text="\n".join(lines),
                severity="critical" if blocking else "warning",
                source="dagster",
                fields={"run": run_id[:8]},
                link=run_link(dagster_url, run_id),
            )
        )
    return notes


@dg.sensor(
    name="notify_check_failures",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Posts failed asset checks (data contracts) with their evidence.",
)
def notify_check_failures(context: dg.SensorEvaluationContext, notifier: NotifierResource):
    after = int(context.cursor) if context.cursor else None
    records = list(
        context.instance.event_log_storage.get_event_records(
            dg.EventRecordsFilter(
                event_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION, after_cursor=after
            ),
            limit=MAX_CHECKS_PER_TICK,
            ascending=True,
        )
    )
    if not records:
        return dg.SkipReason("no new check evaluations")
    notes = failed_check_notes(records, notifier.dagster_url)
    for note in notes:
        notifier.send(note)
    context.update_cursor(str(records[-1].storage_id))
    return dg.SkipReason(f"{len(records)} check evaluations read, {len(notes)} notification(s)")


def daily_kpis(warehouse: WarehouseResource, day: str) -> dict[str, Any] | None:
    """The day's row of gold.mart_daily_kpis; None when it is not there (yet)."""
    frame = warehouse.query(
        "select daily_active_visitors as visitors, n_sessions as sessions, n_orders as orders, "
        "revenue, conversion_rate, bounce_rate from gold.mart_daily_kpis where kpi_date = $day",
        {"day": day},
    )
    return frame.row(0, named=True) if frame.height else None


@dg.run_status_sensor(
    name="notify_daily_summary",
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[daily_etl_job],
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="After a successful daily_etl run: the day's KPIs to Slack and the log.",
)
def notify_daily_summary(
    context: dg.RunStatusSensorContext, notifier: NotifierResource, warehouse: WarehouseResource
):
    run = context.dagster_run
    day = run_partition(run.tags)
    if day is None:
        return dg.SkipReason("not a partitioned run")
    try:
        kpis = daily_kpis(warehouse, day)
    except Exception as exc:  # a locked or unreachable warehouse must not stop the summary
        kpis, problem = None, f"KPIs unavailable: {exc}"
    else:
        problem = None if kpis else f"no mart_daily_kpis row for {day}"
    fields = {}
    if kpis:
        fields = {
            "visitors": f"{kpis['visitors']:,}",
            "sessions": f"{kpis['sessions']:,}",
            "orders": f"{kpis['orders']:,}",
            "revenue": f"{kpis['revenue']:,.2f}",
            "conversion": f"{(kpis['conversion_rate'] or 0):.2%}",
            "bounce": f"{(kpis['bounce_rate'] or 0):.2%}",
        }
    notifier.send(
        Notification(
            title=f"Daily summary {day}",
            text=problem or f"daily_etl finished for {day}.",
            severity="info" if kpis else "warning",
            source="dagster",
            fields=fields,
            link=run_link(notifier.dagster_url, run.run_id),
        )
    )


defs = dg.Definitions(sensors=[notify_run_failure, notify_check_failures, notify_daily_summary])
