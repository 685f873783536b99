"""The Feast feature store, defined in Python from settings: entities ``visitor`` and ``product``,
one feature view per ML table of the lake, the local provider.

Offline store: Feast's file (Dask) offline store, reading the feature Parquet where the ML assets
write it. Each ``FileSource`` points at the table folder itself (``<lake>/ml/<table>``): Feast
hands the path to ``dask.dataframe.read_parquet``, whose pyarrow dataset discovery reads every
``date=YYYY-MM-DD/part-0.parquet`` below it. Names starting with ``_`` or ``.`` are skipped, so
neither the ``_manifest.json`` files nor the ``.tmp-*``/``.old-*`` folders of a partition being
replaced are read. Discovery adds the hive key as a ``date`` column (categorical strings); no
feature view declares it, so Feast never selects it, and a row's time is its ``feature_timestamp``
(the last microsecond of its day), not the folder name. A glob (``date=*/part-0.parquet``) reads
the same rows through Dask, but Feast's own checks of a source (pyarrow's ``FileSystem`` and
``ParquetDataset``, used to validate a source and infer its schema) take a glob for a missing
file; the folder passes both. One folder holds the table's whole history, so a new day needs no
change to the definition and a point-in-time join sees every stored day; the price is that each
read scans the whole table (one row per visitor or product and day: small next to the events).

Online store: SQLite under ``settings.feast_dir``, or Feast's Postgres online store when
``SHOPLAKE_PG_DSN`` is set (it needs psycopg 3 with psycopg_pool: feast's ``postgres`` extra). The
registry is a file under ``settings.feast_dir`` either way.

Materialization is by day: the window is the day's rows. Feast's online stores keep one value per
entity and overwrite it whatever its timestamp, so a day older than the newest day already
materialized is loaded together with the days after it (Feast keeps each entity's latest row in
the window): re-running an old day never takes the online store back in time.

Feast is imported inside the functions that use it (as MLflow is in tracking.py): loading the
Dagster code location does not pay for it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from shoplake.core.lake.io import LakePath, has_partition, lake_location, read_partition
from shoplake.core.ml.features import PRODUCT_SCHEMA, USER_SCHEMA
from shoplake.core.settings import Settings

if TYPE_CHECKING:
    from feast import Entity, FeatureStore, FeatureView, RepoConfig

PROJECT = "shoplake"
TIMESTAMP_FIELD = "feature_timestamp"
# A row older than this says nothing about its entity now: the longest rolling window.
FEATURE_TTL = timedelta(days=28)

# ml/customer_segments, as agreed with the segments asset (only the served columns are declared).
SEGMENT_SCHEMA: dict[str, pl.DataType] = {
    "as_of_date": pl.Date(),
    "visitor_id": pl.String(),
    "segment_id": pl.Int64(),
    "segment_label": pl.String(),
    "feature_timestamp": pl.Datetime("us", "UTC"),
}


@dataclass(frozen=True)
class StoreConfig:
    """What the repo definition is built from (FeastResource holds the same fields)."""

    feast_dir: Path
    lake_root: str
    s3_endpoint_url: str | None = None
    pg_dsn: str | None = None  # set: Feast's Postgres online store; unset: SQLite in feast_dir

    @classmethod
    def from_settings(cls, settings: Settings) -> StoreConfig:
        return cls(
            feast_dir=settings.feast_dir,
            lake_root=settings.lake_root,
            s3_endpoint_url=settings.s3_endpoint_url,
            pg_dsn=settings.pg_dsn,
        )

    @property
    def online_store_kind(self) -> str:
        return "postgres" if self.pg_dsn else "sqlite"

    @property
    def sqlite_path(self) -> Path:
        return self.feast_dir / "online_store.db"


@dataclass(frozen=True)
class EntitySpec:
    name: str
    join_key: str
    description: str


VISITOR = EntitySpec(
    "visitor",
    "visitor_id",
    "A visitor: user_id when signed in, else anonymous_id (gold's user_key).",
)
PRODUCT = EntitySpec("product", "product_id", "A product of the catalog.")
ENTITIES = (VISITOR, PRODUCT)


@dataclass(frozen=True)
class ViewSpec:
    """A feature view: its lake table (``ml/<table>``), entity and the Parquet columns it serves."""

    name: str
    table: str
    entity: EntitySpec
    schema: dict[str, pl.DataType]
    description: str
    required: bool = True  # False: a day without a partition is skipped, not an error

    @property
    def join_key(self) -> str:
        return self.entity.join_key

    @property
    def features(self) -> list[str]:
        """Every served column: all but the key, the date and the timestamp."""
        return [
            c
            for c, t in self.schema.items()
            if c not in (self.join_key, TIMESTAMP_FIELD) and not isinstance(t, pl.Date)
        ]

    def refs(self) -> list[str]:
        return [f"{self.name}:{f}" for f in self.features]


USER_VIEW = ViewSpec(
    "user_daily_features",
    "user_daily_features",
    VISITOR,
    USER_SCHEMA,
    "A visitor's activity on their latest active day, with 7/28-day rolling sums.",
)
PRODUCT_VIEW = ViewSpec(
    "product_daily_features",
    "product_daily_features",
    PRODUCT,
    PRODUCT_SCHEMA,
    "A product's views, sales, conversion, price and rolling popularity on its latest day.",
)
SEGMENT_VIEW = ViewSpec(
    "visitor_segments",
    "customer_segments",
    VISITOR,
    {c: SEGMENT_SCHEMA[c] for c in ("visitor_id", "segment_id", "segment_label")},
    "A customer's segment (clusters on RFM and behaviour) as of its latest day.",
    required=False,
)
VIEWS = (USER_VIEW, PRODUCT_VIEW, SEGMENT_VIEW)
VIEWS_BY_NAME = {v.name: v for v in VIEWS}


def table_dir(config: StoreConfig, spec: ViewSpec) -> LakePath:
    return lake_location(config.lake_root, config.s3_endpoint_url) / "ml" / spec.table


def _feast_type(dtype: pl.DataType) -> Any:
    from feast import types

    if dtype.is_integer():
        return types.Int64
    if dtype.is_float():
        return types.Float64
    if isinstance(dtype, pl.Boolean):
        return types.Bool
    if isinstance(dtype, pl.String):
        return types.String
    raise TypeError(f"no Feast type for {dtype}: serve it as a number, a string or a boolean")


def repo_objects(config: StoreConfig) -> tuple[list[Entity], list[FeatureView]]:
    """The repo definition: the two entities and one feature view per ML table."""
    from feast import Entity, FeatureView, Field, FileSource, ValueType
    from feast.data_format import ParquetFormat

    entities = {
        e.name: Entity(
            name=e.name,
            join_keys=[e.join_key],
            value_type=ValueType.STRING,
            description=e.description,
        )
        for e in ENTITIES
    }
    views = [
        FeatureView(
            name=spec.name,
            entities=[entities[spec.entity.name]],
            ttl=FEATURE_TTL,
            schema=[Field(name=c, dtype=_feast_type(spec.schema[c])) for c in spec.features],
            source=FileSource(
                name=spec.table,
                path=str(table_dir(config, spec)),
                timestamp_field=TIMESTAMP_FIELD,
                file_format=ParquetFormat(),
                s3_endpoint_override=config.s3_endpoint_url,
                description=f"The lake's ml/{spec.table}: one date=YYYY-MM-DD folder a day.",
            ),
            online=True,
            description=spec.description,
        )
        for spec in VIEWS
    ]
    return list(entities.values()), views


def _postgres_online_store(dsn: str) -> Any:
    from feast.infra.online_stores.postgres_online_store.postgres import (
        PostgreSQLOnlineStoreConfig,
    )
    from psycopg.conninfo import conninfo_to_dict

    info = conninfo_to_dict(dsn)
    return PostgreSQLOnlineStoreConfig(
        host=str(info.get("host", "127.0.0.1")),
        port=int(info.get("port", 5432)),
        database=str(info.get("dbname", "postgres")),
        user=str(info.get("user", "postgres")),
        password=str(info.get("password", "")),
        sslmode=str(info.get("sslmode", "prefer")),
    )


def repo_config(config: StoreConfig) -> RepoConfig:
    """Local provider, file registry and offline store, SQLite or Postgres online store."""
    from feast import RepoConfig
    from feast.infra.offline_stores.dask import DaskOfflineStoreConfig
    from feast.infra.online_stores.sqlite import SqliteOnlineStoreConfig
    from feast.repo_config import RegistryConfig

    online = (
        _postgres_online_store(config.pg_dsn)
        if config.pg_dsn
        else SqliteOnlineStoreConfig(path=str(config.sqlite_path))
    )
    return RepoConfig(
        project=PROJECT,
        provider="local",
        registry=RegistryConfig(path=str(config.feast_dir / "registry.db"), cache_ttl_seconds=60),
        online_store=online,
        offline_store=DaskOfflineStoreConfig(type="file"),
        entity_key_serialization_version=3,
        repo_path=config.feast_dir,
    )


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Feast's own chatter off: its prints and progress bars, INFO logs, library warnings."""
    loggers = [logging.getLogger(n) for n in ("feast", "dask", "distributed")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    sink = io.StringIO()
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(sink),
            contextlib.redirect_stderr(sink),
        ):
            for module in ("feast", "dask", "pandas", "pyarrow", "google", "pydantic", "psycopg"):
                warnings.filterwarnings("ignore", module=module)
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def build_store(config: StoreConfig) -> FeatureStore:
    """The store (nothing is registered until :func:`apply`)."""
    config.feast_dir.mkdir(parents=True, exist_ok=True)
    with quiet():
        from feast import FeatureStore

        return FeatureStore(config=repo_config(config))


def apply(store: FeatureStore, config: StoreConfig) -> list[str]:
    """Register the entities and feature views and create their online tables; the view names."""
    entities, views = repo_objects(config)
    with quiet():
        store.apply([*entities, *views])
    return [v.name for v in views]


def day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def day_end(day: date) -> datetime:
    """The last microsecond of ``day``: the feature_timestamp of its rows."""
    return datetime.combine(day, time.max, tzinfo=UTC)


def latest_materialized_day(store: FeatureStore, view: str) -> date | None:
    """The last day the online store holds for ``view`` (from the registry), or None."""
    with quiet():
        end = store.get_feature_view(view).most_recent_end_time
    return None if end is None else end.astimezone(UTC).date()


def missing_days(config: StoreConfig, view: str, days: Sequence[date]) -> list[date]:
    """The days of ``days`` with no partition of the view's table in the lake."""
    folder = table_dir(config, VIEWS_BY_NAME[view])
    return [d for d in days if not has_partition(folder, d)]


@dataclass(frozen=True)
class Materialized:
    view: str
    first: date  # the window loaded: first..last, whole days
    last: date
    entities: int  # entities written to the online store (one value each)


def materialize_day(
    store: FeatureStore, config: StoreConfig, day: date, views: Sequence[str]
) -> list[Materialized]:
    """Load ``day``'s rows of ``views`` into the online store (with the days after it that are
    materialized already, when ``day`` is older: see the module docstring)."""
    done = []
    for name in views:
        last = max(day, latest_materialized_day(store, name) or day)
        with quiet():
            store.materialize(day_start(day), day_end(last), feature_views=[name])
        entities = _entities(config, VIEWS_BY_NAME[name], day, last)
        done.append(Materialized(name, day, last, entities))
    return done


def _entities(config: StoreConfig, spec: ViewSpec, first: date, last: date) -> int:
    folder = table_dir(config, spec)
    days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    keys = [
        frame[spec.join_key]
        for d in days
        if (frame := read_partition(folder, d, [spec.join_key])) is not None
    ]
    return pl.concat(keys).n_unique() if keys else 0


def online_features(
    store: FeatureStore, view: str, keys: Sequence[str], with_timestamps: bool = False
) -> pl.DataFrame:
    """The online values of every feature of ``view`` for ``keys``, in the order given (nulls for
    an unknown key); with ``with_timestamps``, each feature's event time (epoch seconds) as
    ``<feature>__ts``."""
    spec = VIEWS_BY_NAME[view]
    # Not under quiet(): an online read prints nothing, and swapping sys.stdout is not thread-safe.
    response = store.get_online_features(
        features=spec.refs(), entity_rows=[{spec.join_key: k} for k in keys]
    )
    return pl.DataFrame(response.to_dict(include_event_timestamps=with_timestamps), strict=False)


_ROW = "__entity_row"


def historical_features(
    store: FeatureStore,
    view: str,
    entity_df: pl.DataFrame,
    timestamp_column: str = "event_timestamp",
) -> pl.DataFrame:
    """Point-in-time join from the offline Parquet: each entity row gets the latest feature row
    at or before its timestamp (within the TTL); one row out per row in, in order.

    Feast's file offline store drops an entity row whose key has rows in the table but none at or
    before its timestamp (it merges on the key, then filters on time); such rows come back here
    with nulls, as a point-in-time join defines them.
    """
    spec = VIEWS_BY_NAME[view]
    rows = entity_df.with_row_index(_ROW)
    frame = rows.select(_ROW, spec.join_key, pl.col(timestamp_column).alias("event_timestamp"))
    with quiet():
        out = store.get_historical_features(entity_df=frame.to_pandas(), features=spec.refs())
        found = pl.from_pandas(out.to_df()).select(_ROW, *spec.features)
    return rows.join(found, on=_ROW, how="left").sort(_ROW).drop(_ROW)
