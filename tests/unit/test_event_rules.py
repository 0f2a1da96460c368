"""The event rules' Python spelling (``schemas.event_rules``): what the API edge refuses, rule by rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from lambdarec.settings import Settings
from schemas.event_rules import (
    BROKER_SLACK,
    OCCURRED_AT_IN_FUTURE,
    OCCURRED_AT_TOO_OLD,
    UNBOUNDED_AGE,
    EventLimits,
    occurred_at_problem,
    text_problem,
    value_problem,
)

pytestmark = pytest.mark.unit

LIMITS = EventLimits(value_max=1e6, max_age=timedelta(days=1), max_skew=timedelta(minutes=5))
NOW = datetime(2026, 12, 7, 18, 0, tzinfo=UTC)


@pytest.mark.parametrize("text", [
    "item\x00", "\x1b[31mred\x1b[0m", "a\x7f", "a\x85b", "tab\there", "line\nbreak",  # Cc: NUL, escapes, DEL, C1
    "a\u202eb", "a\u2066b", "x\u200by", "\ufeffitem", "a\u00adb",  # Cf: bidi override and isolate, zero width, BOM
    "e\u0301",  # NFD: e and a combining acute, which NFC composes
])
def test_text_with_control_or_format_characters_or_not_in_nfc_is_refused(text):
    assert text_problem(text) is not None


@pytest.mark.parametrize("text", ["item-1", "Käse", "\u00e9", "日本語", "😀", "a b", "user@example.com", ""])
def test_printable_nfc_text_passes(text):
    assert text_problem(text) is None


def test_the_problem_names_the_character():
    assert "U+0000" in text_problem("a\x00")
    assert "NFC" in text_problem("e\u0301")


@pytest.mark.parametrize("value", [1.7e308, -1.7e308, float("inf"), float("-inf"), float("nan"), 1e6 + 1, -1e6 - 1])
def test_values_not_finite_or_beyond_the_bound_are_refused(value):
    assert value_problem(value, LIMITS) is not None


@pytest.mark.parametrize("value", [None, 0.0, 4.5, 1e6, -1e6])
def test_values_within_the_bound_pass(value):
    assert value_problem(value, LIMITS) is None


@pytest.mark.parametrize(("occurred", "reason"), [
    (datetime(1, 1, 1, tzinfo=UTC), OCCURRED_AT_TOO_OLD),
    (NOW - timedelta(days=1, seconds=1), OCCURRED_AT_TOO_OLD),
    (NOW - timedelta(days=1) + timedelta(seconds=1), None),
    (NOW, None),
    (NOW + timedelta(minutes=5), None),
    (NOW + timedelta(minutes=5, seconds=1), OCCURRED_AT_IN_FUTURE),
    (datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC), OCCURRED_AT_IN_FUTURE),
])
def test_occurred_at_must_lie_within_the_retention_before_and_the_skew_after(occurred, reason):
    assert occurred_at_problem(occurred, NOW, LIMITS) == reason


def test_a_later_clock_moves_the_future_bound_and_the_time_received_the_past_one():
    """The speed job reads a record after it was received: its past bound counts from the record's
    Kafka time, its future bound from its own clock."""
    later = NOW + timedelta(hours=2)
    assert occurred_at_problem(NOW + timedelta(hours=1), NOW, LIMITS, now=later) is None
    assert occurred_at_problem(later + timedelta(minutes=6), NOW, LIMITS, now=later) == OCCURRED_AT_IN_FUTURE
    assert occurred_at_problem(NOW - timedelta(hours=23), NOW, LIMITS, now=later) is None
    assert occurred_at_problem(NOW - timedelta(hours=25), NOW, LIMITS, now=later) == OCCURRED_AT_TOO_OLD


def test_without_an_age_bound_only_the_epoch_bounds_the_past():
    forever = EventLimits(value_max=1e6, max_age=None, max_skew=timedelta(minutes=5))
    assert occurred_at_problem(datetime(1971, 1, 1, tzinfo=UTC), NOW, forever) is None
    assert occurred_at_problem(datetime(1969, 12, 31, 23, 59, tzinfo=UTC), NOW, forever) == OCCURRED_AT_TOO_OLD


def test_limits_refuse_an_unbounded_value_and_treat_a_century_as_no_age_bound():
    with pytest.raises(ValueError, match="finite"):
        EventLimits(value_max=float("inf"), max_age=None, max_skew=timedelta(0))
    assert EventLimits(value_max=1.0, max_age=UNBOUNDED_AGE, max_skew=timedelta(0)).max_age is None


def test_the_speed_job_allows_the_produce_time_on_top_of_the_edges_age_bound():
    assert LIMITS.at_broker().max_age == timedelta(days=1, minutes=5)
    no_skew = EventLimits(value_max=1.0, max_age=timedelta(hours=1), max_skew=timedelta(0))
    assert no_skew.at_broker().max_age == timedelta(hours=1) + BROKER_SLACK


def test_settings_give_the_value_bound_the_retention_and_the_skew(settings):
    limits = settings.model_copy(update={"event_value_max": 500.0, "topic_retention_ms": 3_600_000,
                                         "speed_max_clock_skew_s": 30}).event_limits
    assert limits == EventLimits(value_max=500.0, max_age=timedelta(hours=1), max_skew=timedelta(seconds=30))
    assert settings.model_copy(update={"topic_retention_ms": -1}).event_limits.max_age is None
    with pytest.raises(ValueError):
        Settings(event_value_max=float("inf"))
