"""Declarative topic config (topics.yaml) and its application to a cluster."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from shoplake.core.kafka_io import client_config

TOPICS_FILE = Path(__file__).with_name("topics.yaml")
EVENTS_TOPIC = "shop.events"
DLQ_TOPIC = "shop.events.dlq"
ALERTS_TOPIC = "shop.alerts"


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    retention_ms: int
    cleanup: str
    description: str = ""

    @property
    def configs(self) -> dict[str, str]:
        return {"retention.ms": str(self.retention_ms), "cleanup.policy": self.cleanup}


def parse_retention(value: str | int) -> int:
    """'7d' -> milliseconds; -1 keeps forever."""
    if isinstance(value, int):
        return value
    m = re.fullmatch(r"(-1|\d+)\s*([dhm]?)", str(value).strip())
    if not m:
        raise ValueError(f"retention {value!r}: use <n>d, <n>h, <n>m or -1")
    n, unit = int(m.group(1)), m.group(2)
    if n == -1:
        return -1
    return n * {"d": 86_400_000, "h": 3_600_000, "m": 60_000, "": 1}[unit]


def load_topics(path: Path = TOPICS_FILE) -> dict[str, TopicSpec]:
    doc = yaml.safe_load(path.read_text())
    specs = {}
    for name, spec in doc["topics"].items():
        if spec.get("cleanup", "delete") not in ("delete", "compact", "compact,delete"):
            raise ValueError(f"topic {name}: cleanup must be delete or compact")
        specs[name] = TopicSpec(
            name=name,
            partitions=int(spec["partitions"]),
            retention_ms=parse_retention(spec.get("retention", "7d")),
            cleanup=spec.get("cleanup", "delete"),
            description=spec.get("description", ""),
        )
    return specs


def ensure_topics(
    bootstrap: str, specs: dict[str, TopicSpec] | None = None, timeout: float = 30
) -> list[str]:
    """Create missing topics, raise partition counts, apply configs. Returns what changed."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import (
        AdminClient,
        AlterConfigOpType,
        ConfigEntry,
        ConfigResource,
        NewPartitions,
        NewTopic,
    )

    specs = load_topics() if specs is None else specs
    admin = AdminClient(client_config(bootstrap))
    existing = admin.list_topics(timeout=timeout).topics
    changes: list[str] = []

    new = [
        NewTopic(s.name, num_partitions=s.partitions, replication_factor=-1, config=s.configs)
        for s in specs.values()
        if s.name not in existing
    ]
    if new:
        for name, fut in admin.create_topics(new, request_timeout=timeout).items():
            try:
                fut.result()
                changes.append(f"created {name}")
            except KafkaException as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise

    grow = [
        NewPartitions(s.name, s.partitions)
        for s in specs.values()
        if s.name in existing and len(existing[s.name].partitions) < s.partitions
    ]
    if grow:
        for name, fut in admin.create_partitions(grow, request_timeout=timeout).items():
            fut.result()
            changes.append(f"partitions raised on {name}")

    resources = [
        ConfigResource(
            ConfigResource.Type.TOPIC,
            s.name,
            incremental_configs=[
                ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET)
                for k, v in s.configs.items()
            ],
        )
        for s in specs.values()
        if s.name in existing
    ]
    if resources:
        for fut in admin.incremental_alter_configs(resources).values():
            fut.result()
    return changes


def describe_topics(bootstrap: str, timeout: float = 10) -> dict[str, dict[str, int]]:
    """Per topic: partitions and total messages currently held (sum of high - low watermarks)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "shoplake-describe",
            "enable.auto.commit": False,
        }
    )
    try:
        md = consumer.list_topics(timeout=timeout)
        out: dict[str, dict[str, int]] = {}
        for name, topic in sorted(md.topics.items()):
            if name.startswith("__"):
                continue
            total = 0
            for p in topic.partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(name, p), timeout=timeout)
                total += high - low
            out[name] = {"partitions": len(topic.partitions), "messages": total}
        return out
    finally:
        consumer.close()
