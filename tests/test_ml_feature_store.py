"""The Feast feature store on real stores: a hand-made feature lake (three days written with
write_partition), the repo definition applied, days materialized by the Dagster asset into SQLite
or Postgres, and read back online and point in time."""

from __future__ import annotations

import shutil
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from pipeline_assets.ml.feature_store import FEATURE_STORE, GROUP, SOURCES, feature_store
from resources import resources_for
from shoplake.core.lake.io import write_partition
from shoplake.core.ml import feature_store as fs
from shoplake.core.ml.features import PRODUCT_SCHEMA, USER_SCHEMA
from shoplake.core.settings import Settings, get_settings

D1, D2, D3 = date(2026, 3, 2), date(2026, 3, 3), date(2026, 3, 4)
DAYS = (D1, D2, D3)
# Who has a row on which day: v0 skips D2, v2 appears on D3 only, v3 on D1 only.
ACTIVE = {
    D1: ["v0", "v1", "v3"],
    D2: ["v1", "v4"],
    D3: ["v0", "v1", "v2", "v4"],
}
PRODUCTS = {D1: ["p1", "p2"], D2: ["p1"], D3: ["p2", "p3"]}
SEGMENTED = (D1, D3)  # ml/customer_segments has no partition for D2


def _value(dtype: pl.DataType, day: date, key: str, column: int) -> object:
    """A value that tells its day, entity and column apart from every other."""
    n = DAYS.index(day) * 1000 + int(key[1:]) * 10 + column
    if isinstance(dtype, pl.Boolean):
        return n % 2 == 0
    if isinstance(dtype, pl.String):
        return f"s{n}"
    return n if dtype.is_integer() else n / 4


def _rows(schema: dict[str, pl.DataType], key_col: str, day: date, keys: list[str]) -> pl.DataFrame:
    data: dict[str, list] = {key_col: keys}
    for i, (col, dtype) in enumerate(schema.items()):
        if isinstance(dtype, pl.Date):
            data[col] = [day] * len(keys)
        elif col == "feature_timestamp":
            data[col] = [fs.day_end(day)] * len(keys)
        elif col != key_col:
            data[col] = [_value(dtype, day, k, i) for k in keys]
    return pl.DataFrame(data, schema=schema)


def write_lake(settings: Settings) -> None:
    ml = Path(settings.lake_root) / "ml"
    for day in DAYS:
        users = _rows(USER_SCHEMA, "visitor_id", day, ACTIVE[day])
        write_partition(ml / "user_daily_features", day, users, {})
        products = _rows(PRODUCT_SCHEMA, "product_id", day, PRODUCTS[day])
        write_partition(ml / "product_daily_features", day, products, {})
        if day in SEGMENTED:
            segments = _rows(fs.SEGMENT_SCHEMA, "visitor_id", day, ACTIVE[day])
            write_partition(ml / "customer_segments", day, segments, {})


@pytest.fixture
def lake_settings(tmp_path: Path) -> Settings:
    settings = get_settings({"SHOPLAKE_HOME": str(tmp_path / "home")})
    write_lake(settings)
    return settings


def materialize(settings: Settings, first: date, last: date) -> dg.ExecuteInProcessResult:
    """The asset over first..last in one run (a single-run backfill)."""
    return dg.materialize(
        [feature_store],
        resources={"feast": resources_for(settings)["feast"]},
        tags={
            "dagster/asset_partition_range_start": first.isoformat(),
            "dagster/asset_partition_range_end": last.isoformat(),
        },
        raise_on_error=False,
    )


def offline_latest(settings: Settings, spec: fs.ViewSpec, through: date) -> pl.DataFrame:
    """Each entity's row of its latest day up to ``through``, straight from the Parquet."""
    folder = Path(settings.lake_root) / "ml" / spec.table
    if not folder.is_dir():
        return pl.DataFrame(schema={c: spec.schema[c] for c in [spec.join_key, *spec.features]})
    frame = pl.read_parquet(folder / "date=*" / "part-0.parquet", hive_partitioning=False)
    return (
        frame.filter(pl.col("feature_timestamp") <= fs.day_end(through))
        .sort("feature_timestamp")
        .group_by(spec.join_key)
        .last()
        .select(spec.join_key, *spec.features)
    )


def assert_online_equals_offline(
    settings: Settings, through: date, views: tuple | list = fs.VIEWS
) -> None:
    config = fs.StoreConfig.from_settings(settings)
    store = fs.build_store(config)
    for spec in views:
        expected = offline_latest(settings, spec, through).sort(spec.join_key)
        keys = expected[spec.join_key].to_list()
        assert keys, spec.name
        online = fs.online_features(store, spec.name, keys).select(expected.columns)
        assert online.to_dicts() == expected.to_dicts(), spec.name


@pytest.mark.parametrize(
    "online_store", ["sqlite", pytest.param("postgres", marks=pytest.mark.integration)]
)
def test_online_values_are_the_offline_rows_of_the_latest_day(
    tmp_path: Path, online_store: str, request: pytest.FixtureRequest
):
    env = {"SHOPLAKE_HOME": str(tmp_path / "home")}
    if online_store == "postgres":
        env["SHOPLAKE_PG_DSN"] = request.getfixturevalue("fresh_pg_db")
    settings = get_settings(env)
    write_lake(settings)

    result = materialize(settings, D1, D2)
    assert result.success
    assert_online_equals_offline(settings, D2)  # v3 and segments still from D1

    result = materialize(settings, D3, D3)
    assert result.success
    assert_online_equals_offline(settings, D3)
    metadata = result.asset_materializations_for_node(FEATURE_STORE.to_python_identifier())
    assert metadata[0].metadata["online_store"].value == online_store
    if online_store == "sqlite":
        assert fs.StoreConfig.from_settings(settings).sqlite_path.is_file()


def test_unknown_entities_read_as_nulls(lake_settings: Settings):
    assert materialize(lake_settings, D1, D3).success
    store = fs.build_store(fs.StoreConfig.from_settings(lake_settings))
    online = fs.online_features(store, "user_daily_features", ["v1", "nobody"])
    assert online["visitor_id"].to_list() == ["v1", "nobody"]
    assert online["n_events"][0] is not None and online["n_events"][1] is None


def test_rerunning_an_old_day_keeps_the_newest_values(lake_settings: Settings):
    assert materialize(lake_settings, D1, D3).success
    assert materialize(lake_settings, D1, D1).success  # a backfill of the first day, afterwards
    assert_online_equals_offline(lake_settings, D3)


def test_a_day_without_segments_is_materialized_without_them(lake_settings: Settings):
    result = materialize(lake_settings, D1, D3)
    assert result.success
    metadata = result.asset_materializations_for_node(FEATURE_STORE.to_python_identifier())
    assert metadata[0].metadata["days_without_segments"].value == [D2.isoformat()]
    written = metadata[0].metadata["partitions"].value
    assert written[D2.isoformat()] == {"user_daily_features": 2, "product_daily_features": 1}
    assert written[D3.isoformat()]["visitor_segments"] == len(ACTIVE[D3])


def test_no_segments_table_yet(lake_settings: Settings):
    shutil.rmtree(Path(lake_settings.lake_root) / "ml" / "customer_segments")
    result = materialize(lake_settings, D1, D2)
    assert result.success
    metadata = result.asset_materializations_for_node(FEATURE_STORE.to_python_identifier())
    assert metadata[0].metadata["days_without_segments"].value == [D1.isoformat(), D2.isoformat()]
    assert_online_equals_offline(lake_settings, D2, [fs.USER_VIEW, fs.PRODUCT_VIEW])


def test_a_missing_feature_partition_fails_with_what_to_run(tmp_path: Path):
    settings = get_settings({"SHOPLAKE_HOME": str(tmp_path / "home")})
    write_lake(settings)
    result = materialize(settings, D3, D3 + timedelta(days=1))
    assert not result.success
    failure = result.failure_data_for_node(FEATURE_STORE.to_python_identifier())
    assert "ml/user_daily_features has no partition for 2026-03-05" in str(failure.error)


def at(day: date, hour: int = 0, minute: int = 0, micro: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC) + timedelta(
        microseconds=micro
    )


def test_historical_features_are_point_in_time_correct(lake_settings: Settings):
    config = fs.StoreConfig.from_settings(lake_settings)
    store = fs.build_store(config)
    fs.apply(store, config)
    # (visitor, entity time, the day whose row it must get or None)
    cases = [
        ("v0", at(D1, 12), None),  # D1's row is stamped at the end of D1: not yet
        ("v0", at(D2, 6), D1),
        ("v0", fs.day_end(D2), D1),  # v0 has no D2 row: still D1's
        ("v0", fs.day_end(D3), D3),  # exactly at D3's timestamp
        ("v1", at(D2, 12), D1),
        ("v1", at(D3), D2),  # the first microsecond of D3: D2's row, nothing of D3
        ("v2", at(D2, 12), None),  # v2's only row is later
        ("v3", at(D3, 18), D1),
        ("v1", fs.day_end(D3) + fs.FEATURE_TTL + timedelta(seconds=1), None),  # past the TTL
        ("nobody", at(D3, 12), None),
    ]
    entity_df = pl.DataFrame(
        {
            "visitor_id": [c[0] for c in cases],
            "event_timestamp": pl.Series([c[1] for c in cases], dtype=pl.Datetime("us", "UTC")),
        }
    )
    got = fs.historical_features(store, "user_daily_features", entity_df)
    assert got.height == len(cases)
    assert got["visitor_id"].to_list() == entity_df["visitor_id"].to_list()
    features = fs.USER_VIEW.features
    for row, (visitor, when, day) in zip(got.iter_rows(named=True), cases, strict=True):
        if day is None:
            assert all(row[f] is None for f in features), (visitor, when)
            continue
        expected = _rows(USER_SCHEMA, "visitor_id", day, [visitor]).row(0, named=True)
        assert {f: row[f] for f in features} == {f: expected[f] for f in features}, (visitor, when)


def test_the_asset_is_defined_as_agreed():
    from pipeline_assets.definitions import defs

    spec = next(s for s in defs.resolve_all_asset_specs() if s.key == FEATURE_STORE)
    assert spec.group_name == GROUP == "ml_serving"
    assert {d.asset_key for d in spec.deps} == set(SOURCES.values())
    assert set(SOURCES.values()) == {
        dg.AssetKey(["ml", t])
        for t in ("user_daily_features", "product_daily_features", "customer_segments")
    }
    assert spec.partitions_def is not None
    assert feature_store.backfill_policy == dg.BackfillPolicy.single_run()
    assert [(e.name, e.join_key) for e in fs.ENTITIES] == [
        ("visitor", "visitor_id"),
        ("product", "product_id"),
    ]


@pytest.mark.integration
def test_the_simulated_lake_is_served_as_stored(ml_lake):
    """The whole graph's run materialized the store for every day; a sample of visitors and
    products reads online as their latest offline rows."""
    node = FEATURE_STORE.to_python_identifier()
    materialized = {m.partition for m in ml_lake.run.asset_materializations_for_node(node)}
    assert {d.isoformat() for d in ml_lake.days} <= materialized
    config = fs.StoreConfig.from_settings(ml_lake.settings)
    store = fs.build_store(config)
    last = date.fromisoformat(max(materialized))  # the run goes on past the simulated days
    for spec in fs.VIEWS:
        expected = offline_latest(ml_lake.settings, spec, last)
        if spec is fs.SEGMENT_VIEW and expected.is_empty():
            continue
        sample = expected.sample(n=min(50, expected.height), seed=13).sort(spec.join_key)
        online = fs.online_features(store, spec.name, sample[spec.join_key].to_list())
        assert online.select(sample.columns).to_dicts() == sample.to_dicts(), spec.name
