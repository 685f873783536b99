"""Reading whole topics back in tests (assign + seek, no consumer group state)."""

from __future__ import annotations

import uuid

from confluent_kafka import Consumer, Message, TopicPartition


def consume_all(bootstrap: str, topic: str, timeout: float = 20.0) -> list[Message]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        md = consumer.list_topics(topic, timeout=10).topics[topic]
        ends = {}
        parts = []
        for p in md.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high > low:
                ends[p] = high
                parts.append(TopicPartition(topic, p, low))
        if not parts:
            return []
        consumer.assign(parts)
        out: list[Message] = []
        import time

        deadline = time.monotonic() + timeout
        while ends and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                raise RuntimeError(msg.error())
            out.append(msg)
            if msg.offset() + 1 >= ends.get(msg.partition(), 0):
                ends.pop(msg.partition(), None)
        if ends:
            raise TimeoutError(f"did not reach the end of {topic} partitions {sorted(ends)}")
        return out
    finally:
        consumer.close()


def high_watermarks(bootstrap: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "test-hw"})
    try:
        md = consumer.list_topics(topic, timeout=10).topics[topic]
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in md.partitions
        )
    finally:
        consumer.close()
