"""An EASE model as the training job writes it, served: batch's rows in, neighbour scores out.

The model is fitted by ``batch.ease`` and turned into lake rows by ``batch.families``
(the job's own code, minus Spark), published through the model bundle, and loaded by
the serving store, so both sides of the contract run on each other's real output.
Two groups of items never share a user, so the right answers are known.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest

from batch.ease import EaseParams, fit_ease
from batch.families import Candidate, TrainedEase
from lambdarec.lake import Lake
from lambdarec.model_bundle import publish_model_bundle
from lambdarec.registry import PUBLISHED, record_status
from schemas.tables import MODEL_INTERACTIONS
from serving.views.catalogue import build
from serving.views.item_attributes import ItemAttributes
from serving.views.model_store import ModelStore
from serving.recommend import Query, recommend, similar
from serving.views.speed.view import SpeedView
from tests.support.serving import speed_rows

pytestmark = pytest.mark.unit

PARAMS = EaseParams(l2=5.0, scaling="binary")
GROUP_A = [f"a{n}" for n in range(6)]
GROUP_B = [f"b{n}" for n in range(6)]


def interactions(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Users 0-29 use 4 of the a-items (indexes 0-5), users 30-59 4 of the b-items (6-11)."""
    users, items = [], []
    for user in range(60):
        base = 0 if user < 30 else 6
        users += [user] * 4
        items += [base + int(i) for i in rng.choice(6, size=4, replace=False)]
    return np.array(users), np.array(items), np.ones(len(users))


@pytest.fixture
def served(settings):
    lake = Lake(settings)
    users, items, ratings = interactions(np.random.default_rng(11))
    trained = TrainedEase(fit_ease(users, items, ratings, PARAMS), np.unique(users), PARAMS)
    mapping = SimpleNamespace(
        users=pa.table({"user_id": [f"u{n}" for n in range(60)], "user_index": pa.array(range(60), pa.int32())}),
        items=pa.table({"item_id": GROUP_A + GROUP_B, "item_index": pa.array(range(12), pa.int32())}),
    )
    for spec, table in trained.tables(1, mapping).items():
        lake.append_arrow(spec, table)
    lake.append_arrow(MODEL_INTERACTIONS, pa.table({
        "model_version": pa.array([1] * len(users), pa.int64()), "user_index": pa.array(users, pa.int32()),
        "item_index": pa.array(items, pa.int32()), "rating": pa.array(ratings, pa.float32()),
    }))
    row = {"model_version": 1, "source_events_version": 4, "engine": "ease",
           "params": Candidate("ease", PARAMS).record(settings)}
    publish_model_bundle(settings, row)
    record_status(lake, 1, PUBLISHED, "written by a test", source_events_version=4, engine="ease", params=row["params"])
    store = ModelStore(settings, lake)
    assert store.reload()
    return store.current, trained.weights.by_index(12).toarray(), users, items


def ask(model, view, user, **query):
    return recommend(build(model, view), view, ItemAttributes(Lake(view.settings)), user, Query(**query))


def test_a_training_users_scores_are_their_items_rows_of_b_summed(served, settings):
    model, b, users, items = served
    assert model.family == "ease" and model.item_factors.shape == (12, 0)
    result = ask(model, SpeedView(settings), "u0", k=2, explain=True)
    assert (result.strategy, result.model_family, result.fresh_interactions) == ("neighbours", "ease", 0)
    own = items[users == 0]
    expected = b[own].sum(axis=0)  # binary confidence: x = 1 on each of the user's items
    expected[own] = -np.inf
    best = np.argsort(-expected, kind="stable")[:2]
    assert [i.item_id for i in result.items] == [(GROUP_A + GROUP_B)[p] for p in best]
    assert [i.score for i in result.items] == pytest.approx(expected[best], abs=1e-5)
    assert all(i.item_id in GROUP_A for i in result.items)  # never the other group
    for item, position in zip(result.items, best, strict=True):  # "because": x_j * B[j, item]
        assert item.because, item
        top = item.because[0]
        assert top.contribution == pytest.approx(b[own, position].max(), abs=1e-5)
        assert (GROUP_A + GROUP_B).index(top.item_id) in own


def test_a_fresh_interaction_scores_its_neighbours_at_once(served, settings):
    model, b, _, _ = served
    view = SpeedView(settings)
    speed_rows(view, 9, [("newcomer", "b2", 2.0, "e1")])
    result = ask(model, view, "newcomer", k=3)
    assert (result.strategy, result.fresh_interactions) == ("neighbours", 1)
    assert {i.item_id for i in result.items} <= set(GROUP_B) - {"b2"}
    assert result.items[0].score == pytest.approx(np.delete(b[8], 8).max(), abs=1e-5)  # b2 is index 8


def test_similar_items_are_the_items_its_row_scores(served, settings):
    model, b, _, _ = served
    found = similar(build(model, SpeedView(settings)), ItemAttributes(Lake(settings)), "a1", Query(k=3))
    assert found and all(i.item_id in GROUP_A and i.item_id != "a1" for i in found)
    assert [i.score for i in found] == pytest.approx(sorted(b[1][b[1] > 0], reverse=True)[:3], abs=1e-5)


def test_an_item_only_the_speed_layer_knows_is_not_recommended_by_ease(served, settings):
    model, _, _, _ = served
    view = SpeedView(settings)
    speed_rows(view, 9, [("u0", "zz", 3.0, "e1"), ("u1", "zz", 3.0, "e2")])
    catalogue = build(model, view)
    assert len(catalogue.new_ids) == 0 and catalogue.position("zz") is None
    assert "zz" not in {i.item_id for i in ask(model, view, "u2", k=12).items}
