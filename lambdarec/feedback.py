"""Implicit feedback: what one event weighs, defined once for the batch and the speed layer.

Training (batch/interactions.py) and the speed view (speed/transforms.py) must
weigh an event the same way, or serving's fold-in would mix two scales.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import Column


def event_weight(
    event_type: "Column", value: "Column", event_weights: dict[str, float], rating_center: float | None = None
) -> "Column":
    """The type's weight times the event's ``value`` (1 when absent); null for unweighted types.

    A rating's value is the rating, or ``value - rating_center`` when a center is
    set, so a poor rating becomes a negative weight (a dislike).
    """
    from pyspark.sql import functions as F

    if not event_weights:
        raise ValueError("event_weights is empty: no event type would count as an interaction")
    weights = F.create_map(*[F.lit(x) for pair in sorted(event_weights.items()) for x in pair])
    if rating_center is not None:
        value = F.when(event_type == "rating", value - F.lit(float(rating_center))).otherwise(value)
    return weights[event_type].cast("double") * F.coalesce(value, F.lit(1.0))
