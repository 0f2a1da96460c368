"""A lake holding rows the edge now refuses still trains, gates and publishes a model.

Before the event rules, poison reached ``events`` (or came in through an import): an
item id ending in NUL failed every later model bundle (``lambdarec.id_index`` refuses
it), and a value of 1.7e308 made every factor NaN, so the gate rejected every later
model. Now a training run leaves such rows out, counts them by reason in the registry
row's metrics, and the model it trains on the rest publishes, bundle and all.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from batch import train
from lambdarec import registry
from deploy.generator import bronze_table, item_id, user_id
from lambdarec.model_bundle import model_bundle_exists
from schemas.tables import EVENTS
from serving.views.model_store import ModelStore
from tests.support.lake import END, seed_lake, small_settings

pytestmark = pytest.mark.spark


def poison(n: int, **overrides) -> list[dict]:
    """``n`` events of an active user, as the generator writes them, with ``overrides``."""
    at = (END - timedelta(hours=1)).isoformat()
    return [{"event_id": str(uuid.uuid4()), "user_id": user_id(k % 5), "item_id": item_id(1),
             "event_type": "purchase", "value": None, "occurred_at": at, "context": {}, **overrides} for k in range(n)]


def test_bad_rows_are_dropped_counted_and_the_model_publishes(spark, tmp_path):
    settings = small_settings(tmp_path / "lambdarec")
    lake = seed_lake(settings)
    bad = [
        *poison(3, item_id="item\x00"),  # ends in NUL: no id index can hold it
        *poison(2, item_id="\x1b[2J\x1b[31mred"),
        *poison(2, value=1.7e308),  # an infinite rating sum: NaN factors
        *poison(1, occurred_at="9999-12-31T00:00:00+00:00", received_at=END.isoformat()),
    ]
    lake.append_arrow(EVENTS, bronze_table(bad, settings))

    summary = train.run(spark, settings, run_key="2025-03-01T00:00:00+00:00")

    assert summary["status"] == registry.PUBLISHED, summary["status_reason"]
    row = registry.current_statuses(lake)[summary["model_version"]]
    assert summary["metrics"]["dropped_events"] == {"invalid_field:item_id": 5, "invalid_field:value": 2,
                                                    "occurred_at_in_future": 1}
    assert '"dropped_events"' in row["metrics"]  # the registry row keeps the counts
    assert summary["metrics"].get("nan_factors", 0) == 0
    assert model_bundle_exists(settings, summary["model_version"])
    store = ModelStore(settings, lake)
    assert store.reload() and store.current.version == summary["model_version"]
    items = set(store.current.item_ids.tolist())
    assert item_id(1) in items and not {"item\x00", "\x1b[2J\x1b[31mred"} & items
