"""The dashboard's own history when no Prometheus runs: a reading every few seconds, in a ring.

Rates and quantiles need history, which a process's /metrics does not keep. A
poller thread (``serving.poller``) reads serving's registry in-process and the
speed job's /metrics over HTTP every ``SAMPLE_S``, off the request path and
between requests (``pause``), and turns the newest readings into one point per
chart series. Only the last ``POINTS`` points and ``RATE_INTERVALS`` readings are
kept, so memory stays bounded however long serving runs.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

import httpx
from prometheus_client import CollectorRegistry

from serving.metrics_text import Samples, samples
from serving.dashboard.readings import Point, Reading, point, read

SAMPLE_S = 2.0
POINTS = 300  # ten minutes at SAMPLE_S
RATE_INTERVALS = 5  # rates and quantiles over the last five intervals (about 10 s): readable, still recent
SPEED_TIMEOUT_S = 1.0

SeriesMap = dict[str, dict[str, tuple[list[float], list[float]]]]
"""chart id -> series name -> (unix seconds, values)."""


def registry_samples(registry: CollectorRegistry) -> Samples:
    """Every sample of an in-process registry, keyed as ``serving.metrics_text.samples`` keys them."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for family in registry.collect() for s in family.samples}


def fetch_samples(client: httpx.Client, url: str) -> Samples:
    """A /metrics endpoint's samples; raises ``httpx.HTTPError`` or ``ValueError`` when it cannot be read."""
    response = client.get(url)
    response.raise_for_status()
    return samples(response.text)


def series(points: list[tuple[float, Point]]) -> SeriesMap:
    """Points as chart series; a series has a value only at the times it was known."""
    out: SeriesMap = {}
    for at, values in points:
        for (chart, name), value in values.items():
            t, y = out.setdefault(chart, {}).setdefault(name, ([], []))
            t.append(at)
            y.append(value)
    return out


class Sampler:
    """Keeps the dashboard's recent points; ``sample`` is the poller's work, ``series`` the route's read."""

    def __init__(self, registry: CollectorRegistry, job_lag: Callable[[], float | None], speed_url: str | None,
                 pause: Callable[[], object] = lambda: None, clock: Callable[[], float] = time.time,
                 points: int = POINTS):
        self.registry = registry
        self.job_lag = job_lag
        self.speed_url = speed_url
        self.pause = pause
        self.clock = clock
        self._readings: deque[Reading] = deque(maxlen=RATE_INTERVALS)  # the new reading spans them with the oldest
        self._points: deque[tuple[float, Point]] = deque(maxlen=points)
        self._lock = threading.Lock()
        self.speed_error: str | None = None
        # one client for every sample: a new one builds an SSL context, about 40 ms holding the GIL
        self._client: httpx.Client | None = None

    def sample(self) -> None:
        """Take one reading and add the point it makes with the oldest reading kept."""
        speed = self._speed()
        self.pause()  # the rest is CPU: let in-flight requests finish first
        reading = read(self.clock(), registry_samples(self.registry), speed, self.job_lag())
        with self._lock:
            if self._readings:
                self._points.append((reading.at, point(self._readings[0], reading)))
            self._readings.append(reading)

    def _speed(self) -> Samples | None:
        if not self.speed_url:
            self.speed_error = "the speed job's metrics are off (speed_metrics_port 0, no speed_metrics_url)"
            return None
        try:
            self._client = self._client or httpx.Client(timeout=SPEED_TIMEOUT_S)
            found = fetch_samples(self._client, self.speed_url)
        except (httpx.HTTPError, ValueError) as exc:
            self.speed_error = f"the speed job's metrics at {self.speed_url} did not answer: {exc}"
            return None
        self.speed_error = None
        return found

    def series(self) -> SeriesMap:
        with self._lock:
            points = list(self._points)
        return series(points)

    def notes(self) -> list[str]:
        return [self.speed_error] if self.speed_error else []
