"""How far the stream has durably got: the Kafka offsets in Bytewax's recovery partitions.

A resumed run restarts from exactly these offsets, so ``high watermark - offset`` is the lag a
sensor should watch (the Prometheus gauge shows the in-memory position, which runs ahead).
"""

from __future__ import annotations

import pickle
import sqlite3
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition

from shoplake.core.kafka_io import client_config

INPUT_STEP = "shoplake_speed.read_records"


def resume_epoch(conns: list[sqlite3.Connection]) -> int | None:
    """The epoch a restart would resume from: Bytewax's rule (the slowest worker's frontier in the
    latest execution), evaluated over all partitions."""
    try:
        exs = [
            r
            for c in conns
            for r in c.execute("select ex_num, worker_count, resume_epoch from exs")
        ]
    except sqlite3.OperationalError as exc:
        if "no such table" not in str(exc):
            raise
        return None  # a partition being created right now (the stream is starting): no progress yet
    if not exs:
        return None
    ex_num, workers, start = max(exs)
    progress = dict.fromkeys(range(workers), start)
    for c in conns:
        for worker, front in c.execute(
            "select worker_index, worker_frontier from fronts where ex_num = ?", (ex_num,)
        ):
            progress[worker] = max(progress.get(worker, start), front)
    return min(progress.values())


def read_offsets(recovery_dir: Path, step_id: str = INPUT_STEP) -> dict[tuple[str, int], int]:
    """``{(topic, partition): next offset}`` that a restart would resume from.

    Empty if the stream has never snapshotted, is creating its partitions right now, or the
    directory does not exist.
    """
    parts = sorted(Path(recovery_dir).glob("part-*.sqlite3"))
    conns = [sqlite3.connect(f"file:{p}?mode=ro", uri=True) for p in parts]
    try:
        resume = resume_epoch(conns)
        if resume is None:
            return {}
        latest: dict[str, tuple[int, bytes | None]] = {}
        for c in conns:
            for key, epoch, change in c.execute(
                "select state_key, snap_epoch, ser_change from snaps where step_id = ? and snap_epoch < ?",
                (step_id, resume),
            ):
                if key not in latest or epoch > latest[key][0]:
                    latest[key] = (epoch, change)
    finally:
        for c in conns:
            c.close()
    out = {}
    for key, (_, change) in latest.items():
        offset = pickle.loads(change) if change is not None else None
        if isinstance(offset, int) and offset >= 0:
            idx, topic = key.split("-", 1)
            out[(topic, int(idx))] = offset
    return out


def consumer_lag(
    bootstrap: str, offsets: dict[tuple[str, int], int], timeout: float = 10
) -> dict[tuple[str, int], int]:
    """``{(topic, partition): high watermark - committed offset}`` for the given offsets."""
    consumer = Consumer(client_config(bootstrap, **{"group.id": "shoplake-stream-lag"}))
    try:
        return {
            (topic, p): consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)[1]
            - offset
            for (topic, p), offset in offsets.items()
        }
    finally:
        consumer.close()
