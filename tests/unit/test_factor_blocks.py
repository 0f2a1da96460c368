"""The cached factor rows of narrow filters: always the rows asked for, and bounded in bytes."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest

from serving.views.catalogue import passing_positions
from serving.views.factor_blocks import FactorBlocks

pytestmark = pytest.mark.unit

FACTORS = np.random.default_rng(7).normal(size=(1_000, 8)).astype(np.float32)


def test_rows_are_the_factors_rows_and_a_repeated_filter_reuses_its_block():
    blocks = FactorBlocks(FACTORS)
    positions = np.arange(3, 1_000, 10, dtype=np.int64)
    first = blocks.rows(positions)
    np.testing.assert_array_equal(first, FACTORS[positions])
    assert first.flags.c_contiguous
    assert blocks.rows(positions.copy()) is first
    assert blocks.cached_bytes == positions.nbytes + first.nbytes


def test_a_block_gathered_for_a_swap_pauses_between_chunks_and_holds_the_same_rows(monkeypatch):
    monkeypatch.setattr("serving.views.factor_blocks.GATHER_CHUNK", 16)
    blocks, pauses = FactorBlocks(FACTORS), []
    positions = np.arange(5, 1_000, 20, dtype=np.int64)  # 50 rows: chunks of 16, 16, 16 and 2
    block = blocks.rows(positions, pause=lambda: pauses.append(1))
    np.testing.assert_array_equal(block, FACTORS[positions])
    assert len(pauses) == 4 and blocks.rows(positions) is block


def test_positions_that_collide_on_the_lookup_key_still_get_their_own_rows():
    blocks = FactorBlocks(FACTORS)
    one = np.asarray([0, 4, 6, 10], dtype=np.int64)
    other = np.asarray([0, 5, 5, 10], dtype=np.int64)  # same length, ends and sum
    blocks.rows(one)
    np.testing.assert_array_equal(blocks.rows(other), FACTORS[other])
    np.testing.assert_array_equal(blocks.rows(one), FACTORS[one])


def test_the_least_recently_used_blocks_go_first_when_the_budget_is_spent():
    per_block = 100 * 8 + 100 * 8 * 4  # positions and rows of 100 items
    blocks = FactorBlocks(FACTORS, budget_bytes=2 * per_block)
    a, b, c = (np.arange(start, start + 100, dtype=np.int64) for start in (0, 200, 400))
    kept_a = blocks.rows(a)
    blocks.rows(b)
    assert blocks.rows(a) is kept_a  # a is now the most recently used
    blocks.rows(c)  # evicts b
    assert blocks.cached_bytes == 2 * per_block
    assert blocks.rows(a) is kept_a
    np.testing.assert_array_equal(blocks.rows(b), FACTORS[b])  # b again, rebuilt
    too_big = np.arange(1_000, dtype=np.int64)
    np.testing.assert_array_equal(blocks.rows(too_big), FACTORS)  # answered, not kept
    assert blocks.cached_bytes <= 2 * per_block


def test_a_shared_masks_positions_are_found_once_and_freed_with_the_mask():
    mask = np.zeros(1_000, dtype=bool)
    mask[[3, 500]] = True
    assert list(passing_positions(mask)) == [3, 500]
    assert passing_positions(mask) is not passing_positions(mask)  # a writeable mask may change
    mask.flags.writeable = False  # as the filter masks serving caches
    positions = passing_positions(mask)
    assert passing_positions(mask) is positions and not positions.flags.writeable
    kept = weakref.ref(positions)
    del mask, positions
    gc.collect()
    assert kept() is None
