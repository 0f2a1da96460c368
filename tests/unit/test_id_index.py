"""``IdIndex``: one id's scalar lookup agrees with the vectorised one on every kind of key."""

import numpy as np
import pytest

from lambdarec.id_index import IdIndex

pytestmark = pytest.mark.unit


def test_get_agrees_with_lookup():
    ids = ["b", "a", "abc", "ab", "zz", "é", "user-10", "user-1"]
    index = IdIndex.build(ids)
    keys = [*ids, "", "a\0", "abcd", "user-100", "user-", "c", "zzz", "\0", "ab\0"]
    assert [index.get(key) for key in keys] == [
        None if found < 0 else int(found) for found in index.lookup(keys)]
    assert [index.get(key) for key in ids] == list(range(len(ids)))
    assert index.get("abcd", -1) == -1 and "ab\0" not in index and "ab" in index


def test_an_empty_index_finds_nothing():
    index = IdIndex(np.array([], dtype="S1"), np.array([], dtype=np.int64))
    assert index.get("a") is None and len(index.lookup(["a"])) == 1
