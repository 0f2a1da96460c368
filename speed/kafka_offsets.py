"""Offset arithmetic of the Kafka stream source, kept free of I/O so it is tested alone.

A source offset is ``{partition: next offset to read}``. In the Spark checkpoint
it is JSON, so partitions are strings there (``{"0": 120, "1": 98}``); here they
are ints.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

log = logging.getLogger(__name__)


class DataLossError(RuntimeError):
    """Records the query has not read yet are no longer on the broker (or never were)."""


def to_json(offsets: Mapping[int, int]) -> dict[str, int]:
    return {str(partition): int(offsets[partition]) for partition in sorted(offsets)}


def from_json(offsets: Mapping[str, int]) -> dict[int, int]:
    try:
        return {int(partition): int(offset) for partition, offset in offsets.items()}
    except (TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"not a Kafka source offset {{partition: offset}}: {offsets!r}") from exc


def checked_start(
    topic: str,
    partition: int,
    start: int,
    earliest: int,
    end: int,
    fail_on_data_loss: bool,
) -> int:
    """Where to resume ``partition``: ``start`` if the broker still holds it, else data loss.

    A start below the earliest offset means records were deleted before they were
    read; a start above the end means the broker lost its log (a memory broker
    restarted). Either raises DataLossError, or with ``fail_on_data_loss`` off is
    logged and reading resumes at the earliest offset.
    """
    if earliest <= start <= end:
        return start
    reason = "below the earliest available offset" if start < earliest else "beyond the end of the partition"
    message = (
        f"data loss on topic {topic!r} partition {partition}: checkpointed offset {start} is {reason} "
        f"(earliest {earliest}, end {end})"
    )
    if fail_on_data_loss:
        raise DataLossError(
            message + ". Set failOnDataLoss=false to skip to the earliest offset, or start a new checkpoint."
        )
    log.warning("event=kafka_data_loss topic=%s partition=%d start=%d earliest=%d end=%d action=reset_to_earliest",
                topic, partition, start, earliest, end)
    return earliest


def admit(start: Mapping[int, int], available: Mapping[int, int], max_rows: int | None) -> dict[int, int]:
    """End offsets for the next micro-batch: all of ``available``, or at most ``max_rows`` records.

    Under a limit each partition gets a share proportional to its backlog, so a
    busy partition cannot starve a quiet one; the rounding remainder goes to the
    partitions with the most left over, so the batch always makes progress.
    """
    if max_rows is not None and max_rows < 1:
        raise ValueError(f"max_rows must be at least 1, got {max_rows}")
    backlog = {p: max(available[p] - start[p], 0) for p in available}
    total = sum(backlog.values())
    if max_rows is None or total <= max_rows:
        return {p: start[p] + backlog[p] for p in available}
    shares = {p: backlog[p] * max_rows // total for p in backlog}
    left = max_rows - sum(shares.values())
    for p in sorted(backlog, key=lambda p: (shares[p] - backlog[p], p)):
        if left == 0:
            break
        if shares[p] < backlog[p]:
            shares[p] += 1
            left -= 1
    return {p: start[p] + shares[p] for p in available}


def split(start: int, end: int, max_records: int) -> list[tuple[int, int]]:
    """Cut ``[start, end)`` into consecutive ranges of at most ``max_records`` offsets."""
    if max_records < 1:
        raise ValueError(f"max_records must be at least 1, got {max_records}")
    return [(lo, min(lo + max_records, end)) for lo in range(start, end, max_records)]
