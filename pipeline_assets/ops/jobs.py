"""DLQ retry job and DLQ growth sensor (the seeds' "DLQ retry" and "DLQ alert" DAGs)."""

import dagster as dg

from pipeline_assets.ops.dlq import dlq_size, retry_dlq
from pipeline_assets.sources.kafka_topics import topic_key
from resources import KafkaResource, LakeResource, PIIResource
from shoplake.core.ingest import Ingestor
from shoplake.core.platform.topics import DLQ_TOPIC
from shoplake.core.settings import get_settings

DLQ_GROWTH_THRESHOLD = get_settings().dlq_alert_threshold


@dg.op(
    retry_policy=dg.RetryPolicy(
        max_retries=3, delay=2, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.FULL
    )
)
def retry_dead_letters(
    context: dg.OpExecutionContext, kafka: KafkaResource, lake: LakeResource, pii: PIIResource
):
    """Re-validate DLQ records with today's contracts; re-produce the ones that pass."""
    report = retry_dlq(
        kafka.bootstrap_servers,
        Ingestor(pii.pseudonymizer()),
        lake.table_dir("ops", "dlq_retry_history"),
    )
    context.log.info(f"DLQ retry: {report}")
    context.log_event(
        dg.AssetObservation(asset_key=topic_key(DLQ_TOPIC), metadata=dict(report.__dict__))
    )


@dg.job(
    description="Re-validate dead letters against the current contracts and replay those that pass."
)
def dlq_retry():
    retry_dead_letters()


@dg.sensor(
    job=dlq_retry, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.STOPPED
)
def dlq_growth_sensor(context: dg.SensorEvaluationContext, kafka: KafkaResource):
    """Watches the DLQ: records its size; above the threshold it alerts and asks for a retry run."""
    size = dlq_size(kafka.bootstrap_servers)
    previous = int(context.cursor) if context.cursor else size
    growth = size - previous
    observation = dg.AssetObservation(
        asset_key=topic_key(DLQ_TOPIC),
        metadata={"dlq_records": size, "growth_since_last_check": growth},
    )
    context.update_cursor(str(size))
    if growth > DLQ_GROWTH_THRESHOLD:
        context.log.warning(
            f"DLQ grew by {growth} records (threshold {DLQ_GROWTH_THRESHOLD}): requesting a retry run"
        )
        return dg.SensorResult(
            run_requests=[dg.RunRequest(run_key=f"dlq-{size}")], asset_events=[observation]
        )
    return dg.SensorResult(
        asset_events=[observation],
        skip_reason=f"DLQ grew by {growth} (threshold {DLQ_GROWTH_THRESHOLD})",
    )


defs = dg.Definitions(jobs=[dlq_retry], sensors=[dlq_growth_sensor])
