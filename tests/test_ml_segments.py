"""Customer segments: the core on hand-made customers (ids follow yesterday's centroids whatever
order k-means finds the clusters in, labels follow the profile, a fit is deterministic), the
MLflow run on a real tracking store, and the asset on the simulated lake."""

from __future__ import annotations

import io
import json
from datetime import UTC, date, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from shoplake.core.ml import segments as S
from shoplake.core.ml.tracking import TrackingStore

DAY = date(2026, 10, 14)

# Four kinds of customer, far apart on the log scale: (recency, orders, spend, events in 28
# days, active days, share of active days with a cart add), and their expected label.
KINDS = {
    "high value": (3, 6, 1500.0, 150, 14, 0.3),
    "at risk": (45, 1, 200.0, 3, 1, 0.0),
    "focused shoppers": (10, 1, 250.0, 25, 2, 0.9),
    "engaged browsers": (15, 1, 60.0, 70, 9, 0.1),
}


def customers(seed: int, per_kind: int = 25, prefix: str = "v") -> tuple[pl.DataFrame, dict]:
    """Hand-made customers of the four kinds with ±15 % noise; visitor -> kind."""
    rng = np.random.default_rng(seed)
    rows, kind_of = [], {}
    for kind, centre in KINDS.items():
        for _ in range(per_kind):
            visitor = f"{prefix}{rng.integers(10**9):09d}"
            noisy = [v * rng.uniform(0.85, 1.15) for v in centre]
            rows.append(
                {
                    "visitor_id": visitor,
                    "recency_days": round(noisy[0]),
                    "frequency": max(1, round(noisy[1])),
                    "monetary": round(noisy[2], 2),
                    "n_events_28d": max(1, round(noisy[3])),
                    "active_days_28d": max(1, round(noisy[4])),
                    "cart_day_share_28d": min(1.0, noisy[5]),
                }
            )
            kind_of[visitor] = kind
    frame = pl.DataFrame(rows, schema=S.INPUT_SCHEMA)
    return frame.sample(fraction=1.0, shuffle=True, seed=seed), kind_of


def ids_by_kind(inputs: pl.DataFrame, seg: S.Segmentation, kind_of: dict) -> dict[str, int]:
    """Each kind's segment id; fails if a kind is split over segments."""
    table = S.segment_table(DAY, inputs, seg)
    found: dict[str, set[int]] = {}
    for visitor, segment in table.select("visitor_id", "segment_id").iter_rows():
        found.setdefault(kind_of[visitor], set()).add(segment)
    assert all(len(s) == 1 for s in found.values()), found
    return {kind: next(iter(s)) for kind, s in found.items()}


# --- core, on hand-made customers ------------------------------------------------------------


@pytest.mark.parametrize("permutation", [(0, 1, 2, 3), (3, 2, 1, 0), (1, 2, 3, 0), (2, 0, 3, 1)])
def test_ids_follow_yesterdays_centroids_whatever_order_the_clusters_come_out_in(permutation):
    """Yesterday's numbering is arbitrary here (any permutation of the ids); today's customers
    are new people with new names, so k-means finds its clusters in its own order. Every kind
    keeps yesterday's id."""
    yesterday_inputs, yesterday_kinds = customers(seed=1)
    yesterday = S.fit_segments(yesterday_inputs)
    before = ids_by_kind(yesterday_inputs, yesterday, yesterday_kinds)
    renumbered = S.PreviousDay({permutation[i]: c for i, c in yesterday.centroids.items()})

    today_inputs, today_kinds = customers(seed=2, prefix="w")
    today = S.fit_segments(today_inputs, renumbered)

    assert today.matched
    assert ids_by_kind(today_inputs, today, today_kinds) == {
        kind: permutation[i] for kind, i in before.items()
    }


def test_the_same_customers_keep_their_segment_from_day_to_day():
    inputs, _ = customers(seed=3)
    first = S.fit_segments(inputs)
    # The next day: everyone a day further from their last order, a few more events.
    later = inputs.with_columns(pl.col("recency_days") + 1, pl.col("n_events_28d") + 2)
    second = S.fit_segments(later, first.carry())
    assert S.kept_share(
        S.segment_table(DAY, inputs, first), S.segment_table(DAY, later, second)
    ) == pytest.approx(1.0)


def test_labels_come_from_the_centroid_profile():
    inputs, kinds = customers(seed=4)
    seg = S.fit_segments(inputs)
    assert {kind: seg.labels[i] for kind, i in ids_by_kind(inputs, seg, kinds).items()} == {
        kind: kind for kind in KINDS
    }
    assert seg.silhouette > 0.5  # well separated by construction


def test_a_segment_between_two_archetypes_keeps_yesterdays_label():
    focused, new = S.ARCHETYPES["focused shoppers"], S.ARCHETYPES["new customers"]
    # A centroid a little nearer "new customers" than "focused shoppers".
    centre = np.array([[0.45 * focused[f] + 0.55 * new[f] for f in S.FEATURES]])
    assert S.label_segments(centre, S.FEATURES) == ["new customers"]
    assert S.label_segments(centre, S.FEATURES, {0: "focused shoppers"}) == ["focused shoppers"]
    assert S.label_segments(centre, S.FEATURES, {0: "focused shoppers"}, stickiness=0.0) == [
        "new customers"
    ]
    # Far from yesterday's label, the profile wins.
    high = np.array([[S.ARCHETYPES["high value"][f] for f in S.FEATURES]])
    assert S.label_segments(high, S.FEATURES, {0: "at risk"}) == ["high value"]


def test_without_previous_centroids_ids_go_by_value():
    inputs, kinds = customers(seed=5)
    seg = S.fit_segments(inputs)
    assert not seg.matched
    assert ids_by_kind(inputs, seg, kinds)["high value"] == 0


def test_previous_centroids_of_another_k_are_not_matched():
    inputs, _ = customers(seed=6)
    three = S.fit_segments(inputs, k=3)
    four = S.fit_segments(inputs, three.carry())
    assert not four.matched and sorted(four.centroids) == [0, 1, 2, 3]


def parquet_bytes(frame: pl.DataFrame) -> bytes:
    buf = io.BytesIO()
    frame.write_parquet(buf)
    return buf.getvalue()


def test_a_fit_is_deterministic_and_ignores_input_order():
    inputs, _ = customers(seed=7)
    previous = S.fit_segments(customers(seed=8)[0]).carry()
    fits = [
        S.fit_segments(frame, previous)
        for frame in (inputs, inputs, inputs.reverse(), inputs.sample(fraction=1.0, seed=9))
    ]
    tables = [parquet_bytes(S.segment_table(DAY, inputs, f)) for f in fits]
    assert len(set(tables)) == 1
    assert all(f.centroids == fits[0].centroids for f in fits)
    assert len({f.silhouette for f in fits}) == 1


@pytest.mark.parametrize("method", ["kmeans", "gmm"])
def test_the_fitted_model_predicts_segment_ids(method):
    inputs, _ = customers(seed=10)
    fitted = S.fit_segments(customers(seed=11)[0]).centroids
    previous = S.PreviousDay({new: fitted[old] for old, new in enumerate((2, 0, 3, 1))})
    seg = S.fit_segments(inputs, previous, method=method)
    x = inputs.sort("visitor_id").select(pl.col(S.FEATURES).cast(pl.Float64)).to_pandas()
    assert (seg.model.predict(x) == seg.segment_ids).all()
    assert seg.sizes == {i: int((seg.segment_ids == i).sum()) for i in range(S.K)}


def test_behaviour_sums_the_28_days_up_to_the_day():
    def day_rows(day: date, rows: list[tuple[str, int, int]]) -> pl.DataFrame:
        return pl.DataFrame(
            [(day, v, e, c) for v, e, c in rows],
            schema={
                "feature_date": pl.Date(),
                "visitor_id": pl.String(),
                "n_events": pl.Int64(),
                "n_cart_adds": pl.Int64(),
            },
            orient="row",
        )

    daily = [
        day_rows(DAY - timedelta(days=28), [("a", 100, 5)]),  # outside the window
        day_rows(DAY - timedelta(days=27), [("a", 4, 1), ("b", 2, 0)]),
        day_rows(DAY - timedelta(days=3), [("a", 6, 0)]),
        day_rows(DAY, [("a", 10, 2)]),
        day_rows(DAY + timedelta(days=1), [("a", 50, 5), ("b", 50, 5)]),  # after the day
    ]
    got = S.behaviour(daily, DAY)
    assert got.rows() == [("a", 20, 3, pytest.approx(2 / 3)), ("b", 2, 1, 0.0)]

    rfm = pl.DataFrame(
        {
            "visitor_id": ["c", "a"],
            "recency_days": [9, 0],
            "frequency": [1, 2],
            "monetary": [5.0, 7.0],
        }
    )
    inputs = S.segment_inputs(rfm, got)
    assert inputs["visitor_id"].to_list() == ["a", "c"]  # customers only, sorted
    assert inputs.row(1) == ("c", 9, 1, 5.0, 0, 0, 0.0)  # not seen lately: no behaviour
    assert dict(inputs.schema) == S.INPUT_SCHEMA


def test_the_stored_table_has_the_agreed_columns_and_end_of_day_timestamps():
    inputs, _ = customers(seed=12)
    table = S.segment_table(DAY, inputs, S.fit_segments(inputs))
    assert dict(table.schema) == S.SEGMENT_SCHEMA
    assert table["visitor_id"].is_unique().all() and table.height == inputs.height
    assert table["feature_timestamp"].unique().to_list() == [
        datetime(2026, 10, 14, 23, 59, 59, 999999, tzinfo=UTC)
    ]
    empty = S.segment_table(DAY, inputs, None)
    assert empty.is_empty() and dict(empty.schema) == S.SEGMENT_SCHEMA


def test_the_manifest_carries_the_centroids_the_next_day_matches():
    inputs, _ = customers(seed=13)
    seg = S.fit_segments(inputs)
    stored = json.loads(json.dumps(S.manifest(seg, inputs.height, DAY - timedelta(days=1))))
    assert S.stored_previous(stored) == seg.carry()
    assert stored["labels"] == {str(i): label for i, label in seg.labels.items()}
    assert stored["matched_to"] is None  # fitted without previous centroids
    skipped = S.manifest(None, 3, None)
    assert "skipped" in skipped and S.stored_previous(skipped) is None


def test_kept_share_counts_the_customers_of_both_days():
    before = pl.DataFrame({"visitor_id": ["a", "b", "c", "d"], "segment_id": [0, 1, 2, 3]})
    after = pl.DataFrame({"visitor_id": ["b", "c", "d", "e"], "segment_id": [1, 2, 0, 0]})
    assert S.kept_share(before, after) == pytest.approx(2 / 3)


def test_a_training_is_an_mlflow_run_with_a_registered_model(tmp_path):
    import mlflow
    import mlflow.sklearn

    inputs, _ = customers(seed=14)
    seg = S.fit_segments(inputs)
    store = TrackingStore(f"sqlite:///{tmp_path}/mlflow.db", tmp_path / "artifacts")
    run = S.log_run(store, DAY, seg, inputs.height)

    client = mlflow.MlflowClient(tracking_uri=store.tracking_uri)
    logged = client.get_run(run.run_id).data
    assert logged.params["k"] == str(S.K)
    assert logged.params["features"] == ",".join(S.FEATURES)
    assert logged.metrics["silhouette"] == pytest.approx(seg.silhouette)
    assert [logged.metrics[f"size_{i}"] for i in range(S.K)] == [seg.sizes[i] for i in range(S.K)]
    assert run.registered_version == "1"
    model = mlflow.sklearn.load_model(run.model_uri)
    x = inputs.sort("visitor_id").select(pl.col(S.FEATURES).cast(pl.Float64)).to_pandas()
    assert (model.predict(x) == seg.segment_ids).all()


# --- the asset, on the simulated lake --------------------------------------------------------


@pytest.mark.integration
def test_the_asset_segments_every_customer_with_ids_matched_day_to_day(ml_lake):
    from pipeline_assets.ml import segments as A
    from shoplake.core.lake.io import read_manifest, read_partition

    checks = {
        e.check_name: e.passed
        for e in ml_lake.run.get_asset_check_evaluations()
        if e.asset_key == A.SEGMENTS
    }
    assert checks == {A.ONE_SEGMENT_PER_CUSTOMER: True, A.SILHOUETTE_FLOOR: True}

    lake, warehouse = ml_lake.resources["lake"], ml_lake.resources["warehouse"]
    table = lake.table_dir(*A.SEGMENTS.path)
    day, previous_day = ml_lake.days[-1], ml_lake.days[-2]
    frame, stored = read_partition(table, day), read_manifest(table, day)
    assert frame is not None and stored is not None and frame.height > 0
    assert dict(frame.schema) == S.SEGMENT_SCHEMA
    customers_today = S.rfm_customers(warehouse.query, day)
    assert frame["visitor_id"].to_list() == customers_today["visitor_id"].to_list()
    assert stored["matched_to"] == previous_day.isoformat()
    assert stored["silhouette"] >= A.MIN_SILHOUETTE
    assert set(frame["segment_id"].unique()) == set(range(S.K))

    # The stored day is what the core gives on the same inputs and the previous day's centroids.
    inputs = S.segment_inputs(
        customers_today, A.BehaviourReader(lake.table_dir("ml", "user_daily_features"))(day)
    )
    again = S.fit_segments(inputs, S.stored_previous(read_manifest(table, previous_day)))
    assert parquet_bytes(S.segment_table(day, inputs, again)) == parquet_bytes(frame)

    # Most customers of both days keep their segment.
    yesterday = read_partition(table, previous_day)
    assert S.kept_share(yesterday, frame) > 0.6

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=ml_lake.settings.tracking_uri)
    assert client.get_run(stored["mlflow_run_id"]).data.params["as_of_date"] == str(day)
