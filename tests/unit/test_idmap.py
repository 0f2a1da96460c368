"""The stable id -> index mapping on a real Delta table (delta-rs, no JVM)."""

from __future__ import annotations

import pytest

from batch import idmap
from lambdarec.lake import Lake
from schemas.tables import USER_IDS

pytestmark = pytest.mark.unit


def as_dict(table):
    return dict(zip(table.column("user_id").to_pylist(), table.column("user_index").to_pylist(), strict=True))


def test_new_ids_are_numbered_after_the_old_ones_and_old_ones_keep_theirs(settings):
    lake = Lake(settings)
    first = idmap.ensure_mapped(lake, USER_IDS, ["c", "a", "b", "a"], model_version=1)
    assert as_dict(first) == {"a": 0, "b": 1, "c": 2}
    second = idmap.ensure_mapped(lake, USER_IDS, ["b", "z", "d"], model_version=2)
    assert as_dict(second) == {"b": 1, "d": 3, "z": 4}
    rows = lake.read_arrow(USER_IDS).to_pylist()
    assert sorted((r["user_id"], r["user_index"], r["first_model_version"]) for r in rows) == [
        ("a", 0, 1), ("b", 1, 1), ("c", 2, 1), ("d", 3, 2), ("z", 4, 2)
    ]


def test_a_rerun_of_the_same_version_adds_nothing(settings):
    lake = Lake(settings)
    idmap.ensure_mapped(lake, USER_IDS, ["a", "b"], model_version=1)
    version = lake.version(USER_IDS)
    assert as_dict(idmap.ensure_mapped(lake, USER_IDS, ["a", "b"], model_version=1)) == {"a": 0, "b": 1}
    assert lake.version(USER_IDS) == version


def test_nulls_are_never_mapped(settings):
    assert as_dict(idmap.ensure_mapped(Lake(settings), USER_IDS, ["a", None], model_version=1)) == {"a": 0}
