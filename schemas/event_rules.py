"""What the pipeline can carry, beyond an event's types: one rule set in two spellings.

One valid-looking event once stopped the platform: a purchase worth 1.7e308 made an
infinite trending row the speed job could not encode, a NUL in an item id failed every
later model bundle, and a date in year 1 made a partition of its own. These rules say
what no part of the pipeline has to fear:

- ``value`` is finite and at most ``EventLimits.value_max`` either side of zero;
- ids and context text hold no control (Unicode Cc, NUL and terminal escapes included)
  or format (Cf: bidi overrides, zero-width characters) characters, and are in NFC;
- ``occurred_at`` is no older than ``EventLimits.max_age`` (the topic's retention: older
  history belongs in ``lambdarec import``) before the time the event was received, never
  before 1970, and no further ahead than ``EventLimits.max_skew`` (clock skew) of the clock
  that checks it (the same instant at the edge).

The API edge applies the Python spelling to a parsed event (``schemas.events.Event``); the
speed job and training apply the Spark spelling (``spark_*``: built-in functions only, as
Spark's real-time mode requires). ``tests/spark/test_event_rules_contract.py`` checks that
the two agree. This module imports nothing of ours; Spark is imported where columns are built.
"""

from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import Column

OLDEST_OCCURRED_AT = datetime(1970, 1, 1, tzinfo=UTC)
"""No event happened before the epoch: Kafka's record timestamps and the speed layer's µs start there."""
UNBOUNDED_AGE = timedelta(days=36_500)
"""A ``max_age`` this long or longer reaches past the epoch from any date this century: no bound but the epoch."""
BROKER_SLACK = timedelta(minutes=1)
"""How much older than at the edge an event may look to the speed job, at the least (``EventLimits.at_broker``)."""

OCCURRED_AT_TOO_OLD = "occurred_at_too_old"
OCCURRED_AT_IN_FUTURE = "occurred_at_in_future"
"""Dead-letter reasons (and the edge's messages) of an ``occurred_at`` outside the window."""

_CONTROL = r"[\p{Cc}\p{Cf}]"  # Java regex: the Spark spelling of ``_control_character``
_NOT_ASCII = r"[^\x00-\x7F]"  # ASCII text is always in NFC: only other text pays for the NFC check
_ICU_NORMALIZER = "com.ibm.icu.text.Normalizer"  # ICU4J ships with Spark (its collations use it)


@dataclass(frozen=True)
class EventLimits:
    """The bounds of the rules that depend on settings (``lambdarec.settings.Settings.event_limits``)."""

    value_max: float
    max_age: timedelta | None  # None: bounded only by the epoch (topics that keep records forever)
    max_skew: timedelta

    def __post_init__(self) -> None:
        if not (math.isfinite(self.value_max) and self.value_max > 0):
            raise ValueError(f"value_max must be finite and positive, got {self.value_max}")
        if self.max_age is not None and self.max_age >= UNBOUNDED_AGE:
            object.__setattr__(self, "max_age", None)

    def at_broker(self) -> EventLimits:
        """The limits the speed job checks against a record's Kafka timestamp: the edge checked
        ``occurred_at`` against its clock before producing, so the broker's later timestamp may find
        an accepted event older by the produce time; the past bound is wider by the clock skew
        allowance (at least ``BROKER_SLACK``), so no event the edge accepted is dead-lettered."""
        if self.max_age is None:
            return self
        return replace(self, max_age=self.max_age + max(self.max_skew, BROKER_SLACK))


# -- the Python spelling (the API edge) ------------------------------------------------


def text_problem(text: str) -> str | None:
    """Why ``text`` (an id, a context key or value) cannot enter the pipeline, or None."""
    if not text.isprintable():  # C speed; only text that holds a non-printable character looks closer
        for char in text:
            if unicodedata.category(char) in ("Cc", "Cf"):
                return f"must not contain the control or format character U+{ord(char):04X}"
    if not text.isascii() and not unicodedata.is_normalized("NFC", text):
        return "must be in Unicode NFC (normalise it before sending)"
    return None


def value_problem(value: float | None, limits: EventLimits) -> str | None:
    """Why ``value`` cannot enter the pipeline (not finite, or beyond ``value_max``), or None."""
    if value is None or (math.isfinite(value) and abs(value) <= limits.value_max):
        return None
    return f"must be a finite number from {-limits.value_max:g} to {limits.value_max:g}"


def occurred_at_problem(occurred: datetime, received: datetime, limits: EventLimits,
                        now: datetime | None = None) -> str | None:
    """``OCCURRED_AT_TOO_OLD`` when ``occurred`` is older than ``max_age`` before ``received`` (or
    before 1970), ``OCCURRED_AT_IN_FUTURE`` when it is more than ``max_skew`` after ``now`` (the
    checking clock; ``received`` when not given, as at the edge), else None."""
    if occurred < _earliest(received, limits):
        return OCCURRED_AT_TOO_OLD
    if occurred > (received if now is None else now) + limits.max_skew:
        return OCCURRED_AT_IN_FUTURE
    return None


def _earliest(received: datetime, limits: EventLimits) -> datetime:
    if limits.max_age is None:
        return OLDEST_OCCURRED_AT
    return max(OLDEST_OCCURRED_AT, received - limits.max_age)


# -- the Spark spelling (the speed job, training) ----------------------------------------


def spark_has_control(column: "Column") -> "Column":
    """True where the text holds a control (Cc) or format (Cf) character (``text_problem``'s first rule)."""
    return column.rlike(_CONTROL)


def spark_not_nfc(column: "Column") -> "Column":
    """True where the text is not in NFC (``text_problem``'s second rule), through ICU's normaliser;
    ASCII text never reaches it."""
    from pyspark.sql import functions as F

    composed = F.reflect(F.lit(_ICU_NORMALIZER), F.lit("compose"), F.coalesce(column, F.lit("")), F.lit(False))
    return F.when(column.rlike(_NOT_ASCII), column != composed).otherwise(F.lit(False))


def spark_text_problem(column: "Column") -> "Column":
    """True where ``text_problem`` would name a problem (null text has none)."""
    return spark_has_control(column) | spark_not_nfc(column)


def spark_value_problem(column: "Column", limits: EventLimits) -> "Column":
    """True where ``value_problem`` would name a problem: NaN, an infinity, or beyond ``value_max``."""
    from pyspark.sql import functions as F

    return column.isNotNull() & (F.isnan(column) | (F.abs(column) > F.lit(float(limits.value_max))))


def spark_occurred_at_problem(occurred: "Column", received: "Column", limits: EventLimits,
                              now: "Column | None" = None) -> "Column":
    """``occurred_at_problem`` over timestamp columns: the reason, or null."""
    from pyspark.sql import functions as F

    earliest = F.lit(OLDEST_OCCURRED_AT)
    if limits.max_age is not None:
        earliest = F.greatest(earliest, received - spark_interval(limits.max_age))
    latest = (received if now is None else now) + spark_interval(limits.max_skew)
    return F.when(occurred < earliest, F.lit(OCCURRED_AT_TOO_OLD)).when(occurred > latest, F.lit(OCCURRED_AT_IN_FUTURE))


def spark_interval(span: timedelta) -> "Column":
    """``span`` as a Spark interval."""
    from pyspark.sql import functions as F

    return F.make_interval(secs=F.lit(round(span.total_seconds(), 6)))
