"""When a component the supervisor started is ready: the same signs the demo waits for.

A probe is polled from the supervisor's loop, so it must answer at once: it
reads what the log gained since the last look, or makes one short HTTP request.
Each start has its own ``Launch``: a restarted component's log still holds the
previous run's ready line, so a probe reads only what this start wrote, and an
Airflow job is ready once it has heartbeated *since* this start.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import httpx

HTTP_TIMEOUT_S = 1.0


@dataclass
class Launch:
    """One start of a component: where its log stood then, and when."""

    log_path: Path
    offset: int
    started_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc))
    scanned: int = -1  # how far a log probe has read; -1: from ``offset``

    @classmethod
    def begin(cls, log_path: Path) -> Launch:
        return cls(log_path, log_path.stat().st_size if log_path.exists() else 0)


class Probe(Protocol):
    def __call__(self, launch: Launch) -> bool: ...


@dataclass(frozen=True)
class LogLine:
    """Ready once this start's log holds ``marker`` (``lambdarec broker`` prints ``broker_ready``)."""

    marker: str

    def __call__(self, launch: Launch) -> bool:
        start = launch.offset if launch.scanned < 0 else max(launch.offset, launch.scanned - len(self.marker))
        try:
            with launch.log_path.open("rb") as log:
                log.seek(start)
                text = log.read()
        except FileNotFoundError:
            return False
        launch.scanned = start + len(text)
        return self.marker.encode() in text


@dataclass(frozen=True)
class HttpOk:
    """Ready once ``url`` answers 200."""

    url: str

    def __call__(self, launch: Launch) -> bool:
        try:
            return httpx.get(self.url, timeout=HTTP_TIMEOUT_S).status_code == 200
        except httpx.HTTPError:
            return False


@dataclass(frozen=True)
class AirflowHeartbeat:
    """Ready once the API server's health says ``job`` (``scheduler``, ``dag_processor``, ``triggerer``) is healthy and has
    heartbeated since this start: the previous run's heartbeat stays healthy for half a minute after it died."""

    health_url: str
    job: str

    def __call__(self, launch: Launch) -> bool:
        try:
            response = httpx.get(self.health_url, timeout=HTTP_TIMEOUT_S)
        except httpx.HTTPError:
            return False
        if response.status_code != 200:
            return False
        info = response.json().get(self.job) or {}
        beat = info.get(f"latest_{self.job}_heartbeat")
        if info.get("status") != "healthy" or beat is None:
            return False
        at = dt.datetime.fromisoformat(beat)
        return (at if at.tzinfo else at.replace(tzinfo=dt.timezone.utc)) >= launch.started_at
