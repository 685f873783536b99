"""The Kafka topics the lake reads from, declared as external assets so lineage starts there."""

from __future__ import annotations

import dagster as dg

from shoplake.core.platform.topics import DLQ_TOPIC, EVENTS_TOPIC, load_topics


def topic_key(topic: str) -> dg.AssetKey:
    return dg.AssetKey(["kafka", topic.replace(".", "_")])


def topic_spec(topic: str) -> dg.AssetSpec:
    spec = load_topics()[topic]
    return dg.AssetSpec(
        key=topic_key(topic),
        group_name="kafka",
        kinds={"kafka"},
        description=spec.description,
        metadata={
            "topic": topic,
            "partitions": spec.partitions,
            "retention_ms": spec.retention_ms,
            "cleanup.policy": spec.cleanup,
        },
    )


defs = dg.Definitions(assets=[topic_spec(EVENTS_TOPIC), topic_spec(DLQ_TOPIC)])
