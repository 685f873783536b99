"""Feast online read latency: p50/p99 of ``get_online_features`` for 1 and for 100 visitors
(all 23 features of ``user_daily_features``), SQLite online store, next to peers in the same run.

    .venv/bin/python -m bench.ml_feast --home /work/scratch/mlhome [--runs 1000]

``--home`` is a SHOPLAKE_HOME whose lake holds ml/user_daily_features (and product features), as
the ML assets write them; its ``lake/ml`` folder is copied to a scratch home, so it is only read.
Every stored day is materialized there, one day at a time as the asset does. Each read asks for
entities drawn at random (seeded) from the visitors in the online store. The peers:

- ``sqlite3 on Feast's table``: the same rows read straight from Feast's SQLite online table
  (keys serialized and values decoded as Feast does): what Feast's own Python layer adds.
- ``sqlite3 wide table``: a plain table of the same latest rows, one row per visitor, keyed by
  visitor_id: what a hand-made online table costs.
- ``DuckDB on the Parquet``: the latest row per visitor straight from the offline feature Parquet
  (every day scanned): what a lookup costs without an online store.
"""

from __future__ import annotations

import argparse
import importlib
import random
import shutil
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import duckdb
import polars as pl

from shoplake.core.lake.io import stored_days
from shoplake.core.ml import feature_store as fs
from shoplake.core.settings import get_settings

VIEW = fs.USER_VIEW


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def feast_read(store) -> Callable[[Sequence[str]], int]:
    refs = VIEW.refs()

    def read(keys: Sequence[str]) -> int:
        rows = [{VIEW.join_key: k} for k in keys]
        out = store.get_online_features(features=refs, entity_rows=rows).to_dict()
        return len(out[VIEW.join_key])

    return read


def feast_table_read(config: fs.StoreConfig, store) -> Callable[[Sequence[str]], int]:
    """Feast's own online table, read and decoded without Feast's request/response layer."""
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    con = sqlite3.connect(config.sqlite_path, check_same_thread=False)
    table = con.execute(
        "select name from sqlite_master where type = 'table' and name like ?",
        (f"%{VIEW.name}",),
    ).fetchone()[0]
    version = store.config.entity_key_serialization_version

    def read(keys: Sequence[str]) -> int:
        wanted = [
            serialize_entity_key(
                EntityKey(join_keys=[VIEW.join_key], entity_values=[Value(string_val=k)]),
                entity_key_serialization_version=version,
            )
            for k in keys
        ]
        found: dict[bytes, dict[str, object]] = {}
        for key, name, blob, _ in con.execute(
            f'select entity_key, feature_name, value, event_ts from "{table}" '
            f"where entity_key in ({','.join('?' * len(wanted))})",
            wanted,
        ):
            value = Value()
            value.ParseFromString(blob)
            kind = value.WhichOneof("val")
            found.setdefault(key, {})[name] = getattr(value, kind) if kind else None
        return len([found.get(k) for k in wanted])

    return read


def wide_table_read(latest: pl.DataFrame, path: Path) -> Callable[[Sequence[str]], int]:
    con = sqlite3.connect(path, check_same_thread=False)
    columns = [VIEW.join_key, *VIEW.features]
    con.execute(
        f"create table features ({VIEW.join_key} text primary key, "
        + ", ".join(VIEW.features)
        + ")"
    )
    con.executemany(
        f"insert into features values ({','.join('?' * len(columns))})",
        latest.select(columns).iter_rows(),
    )
    con.commit()

    def read(keys: Sequence[str]) -> int:
        sql = f"select * from features where {VIEW.join_key} in ({','.join('?' * len(keys))})"
        return len(con.execute(sql, list(keys)).fetchall())

    return read


def parquet_read(folder: Path) -> Callable[[Sequence[str]], int]:
    con = duckdb.connect()
    files = str(folder / "date=*" / "part-0.parquet")
    columns = ", ".join([VIEW.join_key, *VIEW.features])

    def read(keys: Sequence[str]) -> int:
        return len(
            con.execute(
                f"select {columns} from read_parquet($files, hive_partitioning = false) "
                f"where {VIEW.join_key} in (select unnest($keys)) "
                f"qualify row_number() over (partition by {VIEW.join_key} "
                "order by feature_timestamp desc) = 1",
                {"files": files, "keys": list(keys)},
            ).fetchall()
        )

    return read


def measure(read: Callable[[Sequence[str]], int], draws: list[list[str]]) -> list[float]:
    for keys in draws[:20]:  # warm up
        read(keys)
    times = []
    for keys in draws:
        t = time.perf_counter()
        n = read(keys)
        times.append((time.perf_counter() - t) * 1000)
        assert n == len(keys)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--home", type=Path, required=True, help="a SHOPLAKE_HOME with ML features")
    ap.add_argument("--runs", type=int, default=1000, help="reads per method and batch size")
    ap.add_argument("--seed", type=int, default=13)
    args = ap.parse_args()
    source = args.home / "lake" / "ml"
    if not (source / VIEW.table).is_dir():
        raise SystemExit(f"no {source / VIEW.table}: build the ML features into {args.home} first")

    with tempfile.TemporaryDirectory(prefix="bench-feast-") as scratch:
        home = Path(scratch)
        shutil.copytree(source, home / "lake" / "ml")
        config = fs.StoreConfig.from_settings(get_settings({"SHOPLAKE_HOME": str(home)}))
        folder = home / "lake" / "ml" / VIEW.table
        days = stored_days(folder)

        t = time.perf_counter()
        importlib.import_module("feast")
        t_import = time.perf_counter() - t
        t = time.perf_counter()
        store = fs.build_store(config)
        fs.apply(store, config)
        t_apply = time.perf_counter() - t
        t = time.perf_counter()
        for day in days:
            fs.materialize_day(store, config, day, [VIEW.name, fs.PRODUCT_VIEW.name])
        t_materialize = time.perf_counter() - t

        latest = (
            pl.read_parquet(folder / "date=*" / "part-0.parquet", hive_partitioning=False)
            .sort("feature_timestamp")
            .group_by(VIEW.join_key)
            .last()
        )
        visitors = sorted(latest[VIEW.join_key].to_list())
        print(
            f"{len(days)} days {days[0]}..{days[-1]}, {len(visitors)} visitors, "
            f"{len(VIEW.features)} features; import feast {t_import:.1f} s, apply {t_apply:.1f} s, "
            f"materialize "
            f"{t_materialize:.1f} s ({t_materialize / len(days):.2f} s a day, 2 views); "
            f"{args.runs} reads each"
        )
        methods = {
            "Feast get_online_features": feast_read(store),
            "sqlite3 on Feast's table": feast_table_read(config, store),
            "sqlite3 wide table": wide_table_read(latest, home / "wide.db"),
            "DuckDB on the Parquet": parquet_read(folder),
        }
        rng = random.Random(args.seed)
        print(
            f"{'method':28s} {'entities':>8s} {'p50 ms':>8s} {'p99 ms':>8s} {'p50 vs Feast':>13s}"
        )
        for size in (1, 100):
            draws = [rng.sample(visitors, size) for _ in range(args.runs)]
            base = None
            for name, read in methods.items():
                times = measure(read, draws)
                p50 = statistics.median(times)
                base = base or p50
                print(
                    f"{name:28s} {size:8d} {p50:8.2f} {percentile(times, 0.99):8.2f} "
                    f"{p50 / base:12.2f}x"
                )


if __name__ == "__main__":
    main()
