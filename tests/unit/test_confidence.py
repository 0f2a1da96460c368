"""The confidence scalings on values worked by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lambdarec.confidence import Confidence

pytestmark = pytest.mark.unit

RATINGS = np.array([0.0, 1.0, 4.0, -2.0])


def test_linear_is_alpha_times_the_weight():
    assert Confidence("linear", alpha=10.0).extra(RATINGS).tolist() == [0.0, 10.0, 40.0, 20.0]


def test_log_follows_hu_koren_volinsky():
    got = Confidence("log", alpha=2.0, epsilon=0.5).extra(RATINGS)
    assert got == pytest.approx([0.0, 2 * math.log(3.0), 2 * math.log(9.0), 2 * math.log(5.0)])


def test_binary_counts_any_interaction_the_same():
    assert Confidence("binary", alpha=3.0).extra(RATINGS).tolist() == [0.0, 3.0, 3.0, 3.0]


def test_positive_drops_dislikes_and_nothing_else():
    assert Confidence("linear", alpha=1.0).positive(RATINGS).tolist() == [0.0, 1.0, 4.0, 0.0]


def test_a_record_round_trips_and_rows_before_scalings_read_as_linear():
    confidence = Confidence("log", alpha=4.0, epsilon=2.0)
    assert Confidence.from_record(confidence.record(), Confidence()) == confidence
    assert Confidence.from_record({"alpha": 10.0}, Confidence("log", 1.0)) == Confidence("linear", 10.0, 1.0)


def test_bad_scalings_are_refused_by_name():
    with pytest.raises(ValueError, match="scaling must be one of"):
        Confidence("square")
    with pytest.raises(ValueError, match="must be positive"):
        Confidence("log", alpha=0.0)
