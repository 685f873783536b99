"""The production dataflow, configured from the environment:

    python -m bytewax.run streaming.run:flow -r <recovery dir> -s 5 -b 0

(``shoplake stream`` runs exactly this.) Reads the topics in SHOPLAKE_STREAM_TOPICS from the
beginning of retention on a first start (SHOPLAKE_STREAM_START=end to skip history); a resumed
run continues from the offsets in its recovery snapshot. SHOPLAKE_STREAM_EOF=1 stops at the end
of the topics and makes results independent of partition interleaving.
"""

from __future__ import annotations

import logging
import threading
import time

from bytewax.connectors.kafka import KafkaSink, KafkaSource
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from prometheus_client import start_http_server

from shoplake.core.kafka_io import client_config
from shoplake.core.platform.kafka import wait_for_broker
from shoplake.core.stream_config import RuntimeConfig, runtime_from_env
from streaming import prom
from streaming.events import all_shards
from streaming.flows import Sinks, build_flow
from streaming.sinks import table_sink

log = logging.getLogger("shoplake.stream")


def partition_counts(bootstrap: str, topics: tuple[str, ...]) -> dict[str, int]:
    md = AdminClient(client_config(bootstrap)).list_topics(timeout=10)
    missing = [t for t in topics if t not in md.topics or md.topics[t].error is not None]
    if missing:
        raise RuntimeError(
            f"topic(s) {missing} do not exist at {bootstrap}; create them with 'shoplake kafka topics'"
        )
    return {t: len(md.topics[t].partitions) for t in topics}


def make_flow(runtime: RuntimeConfig):
    config = runtime.stream
    # Every shard is awaited before a window closes, so a replay's results depend on its input
    # only; a live run stops waiting for shards that stay idle (see streaming.windows).
    counts = partition_counts(runtime.bootstrap, runtime.topics)
    config = config.with_(
        expected_shards=all_shards(
            counts[config.events_topic], config.sub_shards, counts.get(config.dlq_topic, 0)
        )
    )
    source = KafkaSource(
        [runtime.bootstrap],
        list(runtime.topics),
        tail=not runtime.eof,
        starting_offset=OFFSET_BEGINNING if runtime.start == "beginning" else OFFSET_END,
        batch_size=2000,
        raise_on_errors=False,
    )
    producer = {
        "enable.idempotence": "true",
        "acks": "all",
        "linger.ms": "20",
        "compression.type": "lz4",
    }
    sinks = Sinks(
        tables=table_sink(
            runtime.lake_root if "parquet" in runtime.sinks else None,
            runtime.pg_dsn if "postgres" in runtime.sinks else None,
        ),
        kafka=KafkaSink([runtime.bootstrap], None, producer) if "kafka" in runtime.sinks else None,
        dlq=KafkaSink([runtime.bootstrap], None, producer),
    )
    return build_flow(source, sinks, config)


def _watch_lag(bootstrap: str, every: float = 15.0) -> None:
    """Sets the consumer-lag gauge from the broker's high watermarks and the decode positions."""
    consumer = Consumer(client_config(bootstrap, **{"group.id": "shoplake-stream-lag"}))
    while True:
        for (topic, partition), position in list(prom.positions.items()):
            try:
                _, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=5
                )
            except Exception as exc:  # the broker may be briefly away; try next round
                log.debug("lag: %s", exc)
                continue
            prom.CONSUMER_LAG.labels(topic, str(partition)).set(max(0, high - position))
        time.sleep(every)


def serve_metrics(runtime: RuntimeConfig) -> int | None:
    if runtime.metrics_port <= 0:
        return None
    port = runtime.metrics_port + runtime.process_id
    start_http_server(port)
    threading.Thread(target=_watch_lag, args=(runtime.bootstrap,), name="lag", daemon=True).start()
    return port


_runtime = runtime_from_env()
wait_for_broker(_runtime.bootstrap, timeout=30)
flow = make_flow(_runtime)
serve_metrics(_runtime)
