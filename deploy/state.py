"""The platform's state file: what the supervisor runs, for ``lambdarec ps``, ``up`` and ``down`` to read.

Only the supervisor writes it, whole, through a rename, so a reader never sees
half a file. It lives with the logs under ``<root>/platform/``:

- ``state.json``: the supervisor and each component (pid, status, restarts,
  started_at, port, url, log);
- ``supervisor.lock``: held by the running supervisor, so two never share a root;
- ``logs/<name>.log``: each component's output, appended across restarts.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lambdarec import proc_tree

STATE_VERSION = 1

# A component's status, as the supervisor sees it.
WAITING = "waiting"      # for the components it depends on
STARTING = "starting"    # started, not ready yet
RUNNING = "running"      # ready
BACKOFF = "backoff"      # exited; started again after a delay
DONE = "done"            # a one-shot step that succeeded
FAILED = "failed"        # never got ready: up fails
STOPPING = "stopping"
STOPPED = "stopped"


def platform_dir(root: Path) -> Path:
    return Path(root).resolve() / "platform"


def state_path(root: Path) -> Path:
    return platform_dir(root) / "state.json"


def lock_path(root: Path) -> Path:
    return platform_dir(root) / "supervisor.lock"


def logs_dir(root: Path) -> Path:
    return platform_dir(root) / "logs"


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def age_s(iso: str | None, now: dt.datetime | None = None) -> float | None:
    """Seconds since the ISO timestamp ``iso`` (None for None)."""
    if not iso:
        return None
    now = now or dt.datetime.now(dt.timezone.utc)
    return max(0.0, (now - dt.datetime.fromisoformat(iso)).total_seconds())


@dataclass
class ComponentRecord:
    """One component as ``ps`` shows it."""

    name: str
    status: str = WAITING
    pid: int | None = None
    pid_started: int | None = None  # /proc start time: tells the process from a later one with its pid
    restarts: int = 0
    started_at: str | None = None
    ready_at: str | None = None
    exit_code: int | None = None
    port: int | None = None
    url: str | None = None
    log: str | None = None

    def alive(self) -> bool:
        return proc_tree.alive(self.pid, self.pid_started)


@dataclass
class PlatformState:
    """The whole file: the supervisor, its components in start order, and the URLs ``up`` prints."""

    supervisor_pid: int
    supervisor_pid_started: int | None
    status: str = STARTING  # starting, running, failed, stopping, stopped
    started_at: str = field(default_factory=now_iso)
    updated_at: str = field(default_factory=now_iso)
    error: str | None = None
    components: list[ComponentRecord] = field(default_factory=list)
    urls: dict[str, str] = field(default_factory=dict)
    version: int = STATE_VERSION

    def supervisor_alive(self) -> bool:
        return proc_tree.alive(self.supervisor_pid, self.supervisor_pid_started)

    def component(self, name: str) -> ComponentRecord | None:
        return next((c for c in self.components if c.name == name), None)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PlatformState:
        components = [ComponentRecord(**c) for c in data.get("components", [])]
        return cls(**{**data, "components": components})


def read_state(root: Path) -> PlatformState | None:
    """The state file under ``root``; None if there is none."""
    try:
        return PlatformState.from_json(json.loads(state_path(root).read_text()))
    except FileNotFoundError:
        return None


def write_state(root: Path, state: PlatformState) -> None:
    """Replace the state file whole (write beside it, then rename)."""
    path = state_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    state.updated_at = now_iso()
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_text(json.dumps(state.to_json(), indent=2) + "\n")
    partial.replace(path)
