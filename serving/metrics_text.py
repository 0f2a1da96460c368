"""Prometheus text exposition, read back: what the demo, the dashboard and tests take from /metrics."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    """Every sample of an exposition, keyed by (name, its labels sorted)."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def total(found: Samples, name: str) -> float:
    """The sum of ``name`` over all its label sets (0 when absent)."""
    return sum(value for (sample, _), value in found.items() if sample == name)
