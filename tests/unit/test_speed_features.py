"""Speed feature folds and progress rows, driven directly: no Spark, no broker."""

from __future__ import annotations

import itertools
import json
import random
from types import SimpleNamespace

import pytest

from schemas.speed_updates import GLOBAL_SEGMENT, KIND_ITEM_TRENDING, encode_rows
from serving.views.speed import state as serving_speed_state
from speed import features
from speed.progress import progress_row, source_lag
from speed.transforms import interval_seconds

pytestmark = pytest.mark.unit

MIN = features.MINUTE_US
T0 = 1_700_000_000 * 1_000_000 - (1_700_000_000 * 1_000_000) % MIN


def ev(minute: float, event_type: str = "view", country: str | None = "DE", weight: float = 1.0, n: int = 0):
    return {"occurred_at": T0 + int(minute * MIN), "event_type": event_type, "event_id": f"e{minute}-{n}",
            "country": country, "device": "ios", "weight": weight}


def user(events, gap_s: int = 1800):
    return features.user_features("u", features.fold_user(features.new_user(), events), gap_s)


def test_user_counts_session_and_last_seen():
    row = user([ev(0, "view"), ev(10, "click"), ev(100, "view"), ev(110, "purchase", country="FR")])
    assert row["counts_24h"] == [("click", 1), ("purchase", 1), ("view", 2)]
    assert row["counts_1h"] == [("purchase", 1), ("view", 1)]
    assert row["session_start"] == T0 + 100 * MIN and row["session_events"] == 2  # 90 min gap ends a session
    assert row["last_seen"] == T0 + 110 * MIN and row["country"] == "FR"


def test_user_category_affinities_count_the_items_categories_per_window():
    events = [{**ev(0, n=1), "category": "shoes"}, {**ev(100, n=2), "category": "shoes"},
              {**ev(110, n=3), "category": "hats"}, {**ev(111, n=4), "category": None}]
    row = user(events)
    assert row["categories_24h"] == [("hats", 1), ("shoes", 2)]  # an item without a category counts in none
    assert row["categories_1h"] == [("hats", 1), ("shoes", 1)]
    assert row["counts_24h"] == [("view", 4)]


def test_a_state_from_before_category_counts_folds_new_events():
    old = {"buckets": {str(T0): [{"view": 1}, T0, T0]}, "last_seen": T0, "last_event_id": "e0", "country": "DE",
           "device": "ios"}  # a stored bucket of three fields: no category counts yet
    row = features.user_features("u", features.fold_user(old, [{**ev(0.5, n=9), "category": "shoes"}]), 1800)
    assert row["counts_24h"] == [("view", 2)] and row["categories_24h"] == [("shoes", 1)]


def test_user_features_do_not_depend_on_order_or_batching():
    events = [{**ev(m, t, n=i), "category": ("a", "b", None)[i % 3]}
              for i, (m, t) in enumerate(itertools.product([0, 5, 50, 61, 1500, 1510], ["view", "click"]))]
    expected = user(events)
    rng = random.Random(7)
    for _ in range(20):
        rng.shuffle(events)
        state = features.new_user()
        cut = rng.randrange(len(events))
        for part in (events[:cut], events[cut:]):
            state = json.loads(json.dumps(features.fold_user(state, part)))  # state round-trips as JSON
        assert features.user_features("u", state, 1800) == expected


def test_item_minutes_are_its_counts_per_minute_within_its_window():
    state = features.fold_item(features.new_item(), [ev(0, weight=2.0), ev(30), ev(30.5, n=1), ev(75, weight=0.5)],
                               3600)
    rows = features.item_minutes(GLOBAL_SEGMENT, "i1", state)
    assert [(r["window_start"], r["window_end"], r["events"], r["weight"]) for r in rows] == [
        (T0 + 30 * MIN, T0 + 31 * MIN, 2, 2.0),  # minute 0 is outside the hour ending after minute 75
        (T0 + 75 * MIN, T0 + 76 * MIN, 1, 0.5),
    ]
    assert {(r["segment_type"], r["segment"], r["item_id"]) for r in rows} == {("global", "*", "i1")}
    touched = features.touched_minutes([ev(75), ev(0)])  # minute 0 was pruned: no row for it
    assert [r["window_start"] for r in features.item_minutes(GLOBAL_SEGMENT, "i1", state, touched)] == [T0 + 75 * MIN]


def test_item_minutes_in_the_newest_window_do_not_depend_on_batching():
    events = [ev(m, n=i, weight=0.1 * i) for i, m in enumerate([0, 5, 5, 50, 61, 70, 70, 119, 120, 121])]
    expected = {r["window_start"]: r for r in features.item_minutes(GLOBAL_SEGMENT, "i", features.fold_item(
        features.new_item(), events, 3600))}
    rng = random.Random(11)
    for _ in range(20):
        rng.shuffle(events)
        state, emitted = features.new_item(), {}
        cut = sorted(rng.sample(range(1, len(events)), 3))  # four non-empty batches
        for part in (events[:cut[0]], events[cut[0]:cut[1]], events[cut[1]:cut[2]], events[cut[2]:]):
            state = json.loads(json.dumps(features.fold_item(state, part, 3600)))
            for row in features.item_minutes(GLOBAL_SEGMENT, "i", state, features.touched_minutes(part)):
                emitted[row["window_start"]] = row  # the newest row per minute, as the changelog keeps
        newest = max(emitted)
        live = {m: r for m, r in emitted.items() if m >= features.item_window_start(newest, 3600)}
        assert live == expected


def test_an_item_minutes_weight_stays_finite_whatever_the_weights():
    huge = features.WEIGHT_LIMIT / 2
    state = features.fold_item(features.new_item(), [ev(0, weight=huge, n=i) for i in range(3)], 3600)
    state = features.fold_item(state, [ev(0, weight=float("inf"), n=3), ev(0, weight=float("nan"), n=4)], 3600)
    (row,) = features.item_minutes(GLOBAL_SEGMENT, "i", state)
    assert row["events"] == 5 and row["weight"] == features.WEIGHT_LIMIT  # saturated; inf and NaN add nothing
    low = features.fold_item(features.new_item(), [ev(0, weight=-huge, n=i) for i in range(3)], 3600)
    assert features.item_minutes(GLOBAL_SEGMENT, "i", low)[0]["weight"] == -features.WEIGHT_LIMIT


def test_a_non_finite_weight_kept_in_state_before_the_bound_starts_again_from_zero():
    kept = json.loads(json.dumps(features.fold_item(features.new_item(), [ev(0)], 3600)))
    kept["buckets"][str(T0)][1] = float("inf")  # as a state written before values were bounded holds it
    state = features.fold_item(json.loads(json.dumps(kept)), [ev(0.5, weight=2.0, n=1)], 3600)
    assert features.item_minutes(GLOBAL_SEGMENT, "i", state)[0]["weight"] == 2.0
    encode_rows(KIND_ITEM_TRENDING, "q", 0, features.item_minutes(GLOBAL_SEGMENT, "i", state))  # JSON can carry it


def test_segments_are_global_country_and_device_with_the_contracts_names():
    assert features.segments("DE", "ios") == [GLOBAL_SEGMENT, ("country", "DE"), ("device", "ios")]
    assert features.segments("DE", "ios", "25-34") == [GLOBAL_SEGMENT, ("country", "DE"), ("age_band", "25-34"),
                                                       ("device", "ios")]
    assert features.segments(None, "web") == [("global", "*"), ("device", "web")]
    assert features.segments(None, None) == [("global", "*")]
    assert GLOBAL_SEGMENT == serving_speed_state.GLOBAL_SEGMENT  # one constant, both layers


def test_source_lag_sums_latest_minus_processed_per_partition():
    kafka = "KafkaV2[Subscribe[events]]"
    sources = [SimpleNamespace(description=kafka, latestOffset='{"events": {"0": 120, "1": 40}}',
                               endOffset='{"events": {"0": 100, "1": 40}}')]
    assert source_lag(sources) == 20
    assert source_lag([SimpleNamespace(description=kafka, latestOffset=None, endOffset='{"events": {"0": 1}}')]) is None
    delta = SimpleNamespace(description="DeltaSource[file:/lake/events]", latestOffset=None,
                            endOffset='{"sourceVersion": 1, "reservoirVersion": 2, "index": -1}')
    assert source_lag([delta]) is None


def test_progress_row_from_a_query_progress():
    progress = SimpleNamespace(
        id="q", name="lambdarec_speed", runId="r", batchId=7, timestamp="2026-01-01T00:00:00.000Z",
        numInputRows=500, inputRowsPerSecond=1000.0, processedRowsPerSecond=None, batchDuration=250,
        eventTime={"watermark": "2026-01-01T00:00:00.000Z"},
        sources=[SimpleNamespace(description="KafkaV2[Subscribe[events]]", latestOffset='{"events": {"0": 900}}',
                                 endOffset='{"events": {"0": 880}}')],
    )
    row = progress_row(progress)
    assert (row["batch_id"], row["rows_in"], row["batch_duration_ms"], row["source_lag"]) == (7, 500, 250, 20)
    assert row["processed_rows_per_s"] == 0.0 and row["watermark"].year == 2026


@pytest.mark.parametrize(("text", "seconds"), [("10 minutes", 600), ("30 s", 30), ("500 ms", 0.5), ("2 hours", 7200)])
def test_dedupe_window_intervals_parse(text, seconds):
    assert interval_seconds(text) == seconds


def test_an_unknown_interval_unit_is_a_clear_error():
    with pytest.raises(ValueError, match="not an interval"):
        interval_seconds("3 fortnights")
