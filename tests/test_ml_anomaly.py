"""ml/user_anomalies: the IsolationForest, its evidence and determinism on hand-made user-day
frames; the check and the notifying sensor on a hand-made lake with a real Dagster instance; and
the asset in the whole graph on the simulated ml_lake (labels from the simulator)."""

from __future__ import annotations

import hashlib
import io
import random
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest

from pipeline_assets.ml.anomaly import (
    BOTS_VS_RULE,
    MAX_NOTES_PER_TICK,
    MIN_PRECISION_VS_RULE,
    MIN_RECALL_VS_RULE,
    MIN_TRAIN_ROWS_JUDGED,
    PARAMS,
    USER_ANOMALIES,
    notify_user_anomalies,
    vs_rule_day,
)
from resources import LakeResource, NotifierResource
from shoplake.core.lake.io import DATA_FILE, partition_dir, read_partition, write_partition
from shoplake.core.ml import anomaly as A
from shoplake.core.ml.features import USER_SCHEMA, conform
from shoplake.core.notify import read_log

DAY = date(2026, 10, 20)


def _person(rng: random.Random, i: int, day: date) -> dict:
    """A visitor shaped like the simulator's people: a few events, a third of them pages and a
    third products, seconds to minutes apart, now and then two at once, mostly returning."""
    n = max(1, int(rng.lognormvariate(1.8, 0.8)))
    buys = int(rng.random() < 0.04)
    pages = min(n, round(n * rng.uniform(0.2, 0.5)))
    return {
        "feature_date": day,
        "visitor_id": f"u{i:04d}",
        "n_events": n,
        "n_sessions": 1,
        "n_page_views": pages,
        "n_product_views": min(n - pages, round(n * rng.uniform(0.2, 0.5))),
        "n_cart_adds": 0,
        "n_checkouts": buys,
        "n_purchases": buys,
        "revenue": buys * rng.uniform(20, 300),
        "median_gap_seconds": 1800.0 if n == 1 else rng.lognormvariate(2.8, 0.5),
        "fast_event_share": 0.0 if n == 1 else min(0.5, rng.expovariate(8.0)),
        "device_type": "mobile",
        "platform": "web",
        "days_since_first_seen": 0 if rng.random() < 0.2 else rng.randint(1, 40),
        "n_events_7d": n,
        "n_events_28d": n,
        "n_sessions_7d": 1,
        "n_sessions_28d": 1,
        "n_purchases_7d": buys,
        "n_purchases_28d": buys,
        "revenue_7d": 0.0,
        "revenue_28d": 0.0,
        "active_days_28d": 1,
        "is_rule_bot": False,
    }


def _bot(rng: random.Random, i: int, day: date) -> dict:
    """The simulator's bot_burst: 5-12 product views, 20-95 ms apart, from a fresh visitor."""
    n = rng.randint(5, 12)
    return {
        **_person(rng, 0, day),
        "visitor_id": f"b{i:04d}",
        "n_events": n,
        "n_sessions": 1,
        "n_page_views": 0,
        "n_product_views": n,
        "n_checkouts": 0,
        "n_purchases": 0,
        "revenue": 0.0,
        "median_gap_seconds": rng.uniform(0.02, 0.095),
        "fast_event_share": 1.0,
        "device_type": "desktop",
        "days_since_first_seen": 0,
        "is_rule_bot": True,
    }


def visitors(day: date, people: int = 300, bots: int = 0, seed: int = 0) -> pl.DataFrame:
    rng = random.Random(f"{day}-{seed}")
    rows = [_person(rng, i, day) for i in range(people)] + [_bot(rng, i, day) for i in range(bots)]
    return conform(pl.DataFrame(rows), USER_SCHEMA)


def history(day: date, bots_per_day: int = 1) -> pl.DataFrame:
    return pl.concat([visitors(day - timedelta(days=k), bots=bots_per_day) for k in range(1, 15)])


def _bytes(frame: pl.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def scored() -> A.DayScores:
    return A.score_day(visitors(DAY, bots=6), history(DAY))


def test_bots_are_flagged_and_people_are_not(scored: A.DayScores) -> None:
    frame = scored.frame
    assert frame.height == 306 and not scored.cold_start
    bots = frame.filter(pl.col("visitor_id").str.starts_with("b"))
    people = frame.filter(pl.col("visitor_id").str.starts_with("u"))
    assert bots["is_anomaly"].all(), bots.select("visitor_id", "anomaly_score")
    assert people["is_anomaly"].sum() <= 3  # at most 1 % of ordinary visitors
    assert bots["anomaly_score"].min() > people["anomaly_score"].median()
    assert A.versus_rule(frame).recall == 1.0


def test_evidence_names_the_pace_of_the_bots(scored: A.DayScores) -> None:
    bots = scored.frame.filter(pl.col("visitor_id").str.starts_with("b"))
    for row in bots.iter_rows(named=True):
        assert len(row["top_features"]) == PARAMS.top_k
        assert {"fast_event_share", "median_gap_seconds"} <= set(row["top_features"]), row
        assert "fast_event_share 1 (typical" in row["evidence"]
    # Evidence is given for everyone; a visitor at the typical value of every input has none.
    assert set(scored.frame.columns) == set(A.ANOMALY_SCHEMA)


def test_the_kept_model_predicts_the_flag(scored: A.DayScores) -> None:
    """The Pipeline MLflow keeps scores raw feature rows and says -1 for exactly the flagged."""
    today = visitors(DAY, bots=6).sort("visitor_id")
    predicted = scored.model.predict(A.model_inputs(today, PARAMS))
    assert ((predicted == -1) == scored.frame["is_anomaly"].to_numpy()).all()


def test_same_input_same_bytes(tmp_path: Path) -> None:
    today, past = visitors(DAY, bots=3), history(DAY)
    first = A.score_day(today, past)
    # The same rows in another order, as another read of the lake could give them.
    again = A.score_day(today.reverse(), past.sample(fraction=1.0, shuffle=True, seed=1))
    assert _bytes(first.frame) == _bytes(again.frame)
    written = [
        write_partition(tmp_path / name, DAY, s.frame, {"rows": s.frame.height}).path / DATA_FILE
        for name, s in (("a", first), ("b", again))
    ]
    assert written[0].read_bytes() == written[1].read_bytes()


def test_cold_start_trains_on_the_day_itself() -> None:
    empty = pl.DataFrame(schema=USER_SCHEMA)
    scores = A.score_day(visitors(DAY, bots=3), empty)
    assert scores.cold_start and scores.train_days == (DAY,) and scores.train_rows == 303
    assert scores.training.startswith("cold start: trained on 2026-10-20 itself")
    assert scores.frame.filter(pl.col("visitor_id").str.starts_with("b"))["is_anomaly"].all()
    # A window thinner than min_train_rows counts as no window.
    thin = visitors(DAY - timedelta(days=1), people=PARAMS.min_train_rows - 1)
    assert A.score_day(visitors(DAY), thin).cold_start
    assert not A.score_day(visitors(DAY), visitors(DAY - timedelta(days=1))).cold_start


def test_a_day_without_visitors_trains_nothing() -> None:
    scores = A.score_day(pl.DataFrame(schema=USER_SCHEMA), history(DAY))
    assert scores.model is None and scores.frame.is_empty() and scores.n_flagged == 0
    assert dict(scores.frame.schema) == A.ANOMALY_SCHEMA


def test_window_is_the_days_before() -> None:
    days = A.window_days(DAY, PARAMS)
    assert (
        len(days) == 14 and days[0] == DAY - timedelta(days=14) and days[-1] == DAY - timedelta(1)
    )


def test_robust_z_falls_back_when_the_mad_is_zero() -> None:
    # Column 0: spread; column 1: mostly 0 (MAD 0, mean AD > 0); column 2: constant.
    train = np.array([[1.0, 0.0, 5.0], [2.0, 0.0, 5.0], [3.0, 0.0, 5.0], [4.0, 1.0, 5.0]])
    base = A.baseline(train, train)
    assert base.scale[0] == pytest.approx(1.0 * A.MAD_TO_SD)
    assert base.scale[1] == pytest.approx(0.25 * A.MEANAD_TO_SD)
    assert base.scale[2] == 0
    z = A.robust_z(np.array([[2.5, 1.0, 5.0], [2.5, 0.0, 6.0]]), base)
    assert z[0, 0] == 0 and z[0, 1] == pytest.approx(1 / (0.25 * A.MEANAD_TO_SD))
    assert z[0, 2] == 0 and z[1, 2] == A.Z_CAP


def test_agreement_counts() -> None:
    a = A.agreement(["x", "y", "z"], ["y", "z", "w", "v"])
    assert (a.tp, a.fp, a.fn) == (2, 1, 2)
    assert a.precision == pytest.approx(2 / 3) and a.recall == pytest.approx(0.5)
    assert A.agreement([], []).precision is None and A.agreement([], []).recall is None


def test_params_refuse_unknown_inputs() -> None:
    with pytest.raises(ValueError, match="not model inputs"):
        A.AnomalyParams(inputs=("n_events", "device_type"))


# -- the check and the sensor, on a hand-made lake ------------------------------------------------


def anomalies(day: date, flags: list[tuple[str, bool, bool]]) -> pl.DataFrame:
    """An ml/user_anomalies partition: (visitor, is_anomaly, is_rule_bot) per row."""
    stamp = pl.datetime(day.year, day.month, day.day, 23, 59, 59, 999999, time_zone="UTC")
    return pl.DataFrame(
        {
            "feature_date": [day] * len(flags),
            "visitor_id": [v for v, _, _ in flags],
            "anomaly_score": [0.7 if f else 0.45 for _, f, _ in flags],
            "is_anomaly": [f for _, f, _ in flags],
            "top_features": [["fast_event_share"] for _ in flags],
            "evidence": ["fast_event_share 1 (typical 0.1, z +6.0)" for _ in flags],
            "is_rule_bot": [r for _, _, r in flags],
        }
    ).with_columns(feature_timestamp=stamp.dt.cast_time_unit("us"))


def test_check_skips_a_day_without_rule_bots(tmp_path: Path) -> None:
    write_partition(tmp_path, DAY, anomalies(DAY, [("a", True, False), ("b", False, False)]), {})
    result = vs_rule_day(tmp_path, DAY)
    assert result.passed and "no rule-flagged bots" in result.metadata["skipped"].value


def test_check_fails_when_the_model_misses_rule_bots(tmp_path: Path) -> None:
    rows = [(f"bot{i}", i < 3, True) for i in range(5)] + [("p", False, False)]
    write_partition(tmp_path, DAY, anomalies(DAY, rows), {})
    result = vs_rule_day(tmp_path, DAY)
    assert not result.passed and result.metadata["recall"].value == 0.6 < MIN_RECALL_VS_RULE
    assert len(result.metadata["rule_bots_not_flagged"].value) == 2


def test_check_judges_precision_once_enough_are_flagged(tmp_path: Path) -> None:
    few = [("bot", True, True), ("p1", True, False), ("p2", True, False)]
    write_partition(tmp_path, DAY, anomalies(DAY, few), {})
    result = vs_rule_day(tmp_path, DAY)  # precision 1/3, but only 3 flagged
    assert result.passed and not result.metadata["precision_judged"].value
    many = [("bot", True, True)] + [(f"p{i}", True, False) for i in range(5)]
    write_partition(tmp_path, DAY, anomalies(DAY, many), {})
    result = vs_rule_day(tmp_path, DAY)
    assert not result.passed and result.metadata["precision"].value < MIN_PRECISION_VS_RULE


def test_check_does_not_judge_a_model_warming_up(tmp_path: Path) -> None:
    rows = [("bot", False, True), ("p", True, False)]  # missed the bot, flagged a person
    write_partition(tmp_path, DAY, anomalies(DAY, rows), {"train_rows": 94})
    result = vs_rule_day(tmp_path, DAY)
    assert result.passed and "warm-up" in result.metadata["skipped"].value
    write_partition(tmp_path, DAY, anomalies(DAY, rows), {"train_rows": MIN_TRAIN_ROWS_JUDGED})
    assert not vs_rule_day(tmp_path, DAY).passed


def test_check_fails_on_a_missing_partition(tmp_path: Path) -> None:
    assert not vs_rule_day(tmp_path, DAY).passed


class SensorHarness:
    """The notifying sensor against a real (ephemeral) instance, a lake folder and the notifier's
    local log; materializations are reported as a run would report them."""

    def __init__(self, root: Path):
        self.lake = LakeResource(root=str(root / "lake"))
        self.home = root / "home"
        self.instance = dg.DagsterInstance.ephemeral()
        self.cursor: str | None = None

    def materialize(self, day: date, frame: pl.DataFrame) -> None:
        write_partition(self.lake.table_dir(*USER_ANOMALIES.path), day, frame, {})
        self.instance.report_runless_asset_event(
            dg.AssetMaterialization(asset_key=USER_ANOMALIES, partition=str(day))
        )

    def tick(self) -> list[dict]:
        """One sensor evaluation; the notifications it sent."""
        before = len(read_log(self.home, limit=10_000))
        context = dg.build_sensor_context(
            instance=self.instance,
            cursor=self.cursor,
            resources={"lake": self.lake, "notifier": NotifierResource(home=str(self.home))},
        )
        notify_user_anomalies(context)
        self.cursor = context.cursor
        log = read_log(self.home, limit=10_000)  # newest first
        return log[: len(log) - before]


def test_each_flagged_visitor_is_notified_once(tmp_path: Path) -> None:
    sensor = SensorHarness(tmp_path)
    assert sensor.tick() == []  # nothing materialized yet
    rows = [("bot1", True, True), ("odd", True, False), ("calm", False, False)]
    sensor.materialize(DAY, anomalies(DAY, rows))
    sent = sensor.tick()
    assert sorted(n["title"] for n in sent) == [
        f"Anomalous visitor bot1 on {DAY}",
        f"Anomalous visitor odd on {DAY}",
    ]
    assert all(n["source"] == A.NOTIFY_SOURCE and n["fields"]["score"] == "0.700" for n in sent)
    assert sensor.tick() == []  # no new materialization
    sensor.materialize(DAY, anomalies(DAY, rows))  # a re-run of the same partition
    assert sensor.tick() == []
    sensor.materialize(DAY, anomalies(DAY, [*rows, ("late", True, False)]))
    assert [n["title"] for n in sensor.tick()] == [f"Anomalous visitor late on {DAY}"]
    # The next day's visitors are that day's: the same id flagged again is a new visitor-day.
    sensor.materialize(DAY + timedelta(days=1), anomalies(DAY + timedelta(days=1), rows[:1]))
    assert [n["title"] for n in sensor.tick()] == [
        f"Anomalous visitor bot1 on {DAY + timedelta(days=1)}"
    ]


def test_a_burst_beyond_the_budget_is_counted_in_one_note(tmp_path: Path) -> None:
    sensor = SensorHarness(tmp_path)
    rows = [(f"bot{i:02d}", True, True) for i in range(MAX_NOTES_PER_TICK + 7)]
    sensor.materialize(DAY, anomalies(DAY, rows))
    sent = sensor.tick()
    assert len(sent) == MAX_NOTES_PER_TICK + 1
    assert sent[0]["title"] == "7 more anomalous visitors" and f"{DAY}: 7" in sent[0]["text"]
    sensor.materialize(DAY, anomalies(DAY, rows))
    assert sensor.tick() == []  # the counted ones were sent too


def test_the_ledger_forgets_old_days() -> None:
    ledger = A.NotifiedLedger()
    for k in range(A.KEEP_NOTIFIED_DAYS + 3):
        ledger.mark(str(DAY + timedelta(days=k)), ["v"])
    assert len(ledger.sent) == A.KEEP_NOTIFIED_DAYS and str(DAY) not in ledger.sent
    again = A.NotifiedLedger.from_json(ledger.to_json())
    assert again == ledger


# -- the asset in the whole graph, on the simulated lake -----------------------------------------


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_user_anomalies_on_the_simulated_lake(ml_lake, tmp_path: Path) -> None:
    import mlflow

    lake = ml_lake.resources["lake"]
    table = lake.table_dir(*USER_ANOMALIES.path)
    features = lake.table_dir("ml", "user_daily_features")
    frames = [read_partition(table, day) for day in ml_lake.days]
    assert all(f is not None for f in frames), "a day of ml/user_anomalies is missing"
    frame = pl.concat(frames)
    assert frame.height == sum(read_partition(features, d).height for d in ml_lake.days)

    # Against the simulator's labels: the bots the features hold (not those of the cold start).
    scored = frame.filter(pl.col("feature_date") > ml_lake.days[0])
    truth = set(scored["visitor_id"]) & ml_lake.bot_visitors
    found = A.agreement(scored.filter("is_anomaly")["visitor_id"], truth)
    assert len(truth) >= 10, "too few bots in the simulated lake to measure anything"
    assert found.recall >= MIN_RECALL_VS_RULE and found.precision >= MIN_PRECISION_VS_RULE, found
    bots = scored.filter(pl.col("visitor_id").is_in(list(truth)) & pl.col("is_anomaly"))
    assert bots["top_features"].list.contains("fast_event_share").mean() >= 0.9

    # The check ran in the same run and passed.
    checks = [c for c in ml_lake.run.get_asset_check_evaluations() if c.check_name == BOTS_VS_RULE]
    assert checks and all(c.passed for c in checks), [c.metadata for c in checks]

    # Every day's training is an MLflow run; the metadata links the last one; models registered.
    events = [
        e.event_specific_data.materialization
        for e in ml_lake.run.get_asset_materialization_events()
        if e.asset_key == USER_ANOMALIES
    ]
    metadata = events[-1].metadata
    client = mlflow.MlflowClient(tracking_uri=ml_lake.settings.tracking_uri)
    run = client.get_run(metadata["mlflow_run_id"].value)
    assert run.data.params["scored_day"] == str(ml_lake.days[-1])
    assert run.data.metrics["n_train_rows"] > 0 and "n_flagged" in run.data.metrics
    assert metadata["mlflow_run"].value.endswith(run.info.run_id)
    versions = client.search_model_versions(f"name='{A.REGISTERED_MODEL}'")
    assert len(versions) >= len(ml_lake.days)

    # Recomputing the last day from the same features gives the same bytes.
    day = ml_lake.days[-1]
    again = A.score_day(read_partition(features, day), A.load_history(features, day, PARAMS))
    rewritten = write_partition(tmp_path, day, again.frame, {}).path / DATA_FILE
    assert _digest(rewritten) == _digest(partition_dir(table, day) / DATA_FILE)
