"""Availability applied from the CDC topic ahead of ``item_catalogue``, until the table holds the change."""

from __future__ import annotations

import json

import pytest

from lambdarec.lake import Lake
from schemas.cdc import AvailabilityChange, decode_availability
from serving.views.catalogue import build
from serving.views.item_attributes import ItemAttributes
from serving.views.model_store import ModelStore
from serving.views.speed.view import SpeedView
from tests.support.serving import write_model

pytestmark = pytest.mark.unit


def envelope(op: str, lsn: int | None, item: str = "i1", available: bool | None = False) -> bytes:
    row = {"item_id": item, "title": "Shoe", "available": available}
    return json.dumps({"op": op, "source": {"lsn": lsn}, "before": row if op == "d" else None,
                       "after": None if op == "d" else row}).encode()


def test_decodes_what_a_change_says_about_availability():
    assert decode_availability(envelope("u", 7)) == AvailabilityChange("i1", 7, False)
    assert decode_availability(envelope("r", 3, available=True)) == AvailabilityChange("i1", 3, True)
    assert decode_availability(envelope("d", 9)) == AvailabilityChange("i1", 9, None)


@pytest.mark.parametrize("value", [
    None,  # a tombstone
    b"{not json", b"[1]",
    envelope("x", 7), envelope("u", None),
    json.dumps({"op": "u", "source": {"lsn": 7}, "after": {"item_id": "i1", "available": "no"}}).encode(),
    json.dumps({"op": "c", "source": {"lsn": 7}, "after": {"title": "no key", "available": True}}).encode(),
])
def test_records_the_dimensions_query_dead_letters_say_nothing(value):
    assert decode_availability(value) is None


def row(item: str, available: bool, lsn: int | None, deleted: bool | None = None) -> dict:
    return {"item_id": item, "updated_at": 1, "attributes": {"colour": "red"}, "category": "shoes",
            "available": available, "source_lsn": lsn, "deleted": deleted}


def test_a_change_holds_until_the_table_has_it_or_a_newer_one(settings):
    attributes = ItemAttributes(Lake(settings))
    attributes.load([row("i1", True, 10), row("i2", False, 11)], version=1)
    attributes.apply(AvailabilityChange("i1", 12, False))
    attributes.apply(AvailabilityChange("i2", 5, True))  # older than the table's row: ignored
    assert not attributes.available("i1") and not attributes.available("i2")

    attributes.load([row("i1", True, 10), row("i2", False, 11)], version=2)  # the table lags behind
    assert not attributes.available("i1")
    attributes.load([row("i1", False, 12), row("i2", False, 11)], version=3)  # the table has it
    attributes.load([row("i1", True, 13), row("i2", False, 11)], version=4)  # then a newer restore
    assert attributes.available("i1")

    attributes.apply(AvailabilityChange("i2", 14, True))
    attributes.apply(AvailabilityChange("i2", 13, False))  # arrives late: the newer change stands
    assert attributes.available("i2")


def test_a_deleted_item_is_unavailable_from_its_change_on_and_matches_no_filter_once_the_table_has_it(settings):
    attributes = ItemAttributes(Lake(settings))
    attributes.load([row("i1", True, 10), row("i2", True, 10)], version=1)
    attributes.apply(AvailabilityChange("i1", 11, None))  # deleted in Postgres; the table lags
    assert not attributes.available("i1") and attributes.available("i2")

    # The dimensions query keeps the row, marked deleted and unavailable (speed.dimensions).
    attributes.load([row("i1", False, 11, deleted=True), row("i2", True, 10)], version=2)
    assert not attributes.available("i1")
    assert attributes._ahead == {}  # noqa: SLF001 - the table holds the delete: nothing left ahead of it
    assert "i1" not in attributes.items and "i1" not in attributes.categories
    assert attributes._by_category == {"shoes": ["i2"]}  # noqa: SLF001 - cold start offers live items only

    attributes.apply(AvailabilityChange("i1", 12, True))  # inserted again under the same id
    assert attributes.available("i1")


def test_an_item_set_unavailable_leaves_the_cached_positions_at_once(settings):
    lake = Lake(settings)
    write_model(lake, 1, 10, {"a": [1.0, 0.0], "b": [0.5, 0.5]}, {"u": {"a": 1.0}})
    store = ModelStore(settings, lake)
    store.reload()
    catalogue = build(store.current, SpeedView(settings))
    attributes = ItemAttributes(lake)
    attributes.load([row("a", True, 1), row("b", True, 1)], version=1)
    assert attributes.unavailable_positions(catalogue).tolist() == []
    attributes.apply(AvailabilityChange("b", 2, False))
    assert attributes.unavailable_positions(catalogue).tolist() == [catalogue.position("b")]
    attributes.apply(AvailabilityChange("b", 3, True))
    assert attributes.unavailable_positions(catalogue).tolist() == []
