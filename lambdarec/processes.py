"""Child processes the way an operator runs them: started, awaited on a condition, stopped.

The demo and the end-to-end tests start the broker, the speed job and serving
as real processes (``lambdarec broker``, ``spark-submit speed/job.py``,
``lambdarec serve``); this module keeps their logs, waits for readiness with a
deadline, and stops them with SIGTERM before resorting to SIGKILL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


class StageError(RuntimeError):
    """A stage of a multi-process run failed; the message says which and why."""


def wait_for(condition: Callable[[], T], timeout_s: float, what: str, interval_s: float = 0.05) -> T:
    """Poll ``condition`` until it returns something truthy; raise StageError at the deadline.

    Other errors from ``condition`` are retried (what it probes may not be up yet);
    a StageError (e.g. ``Child.check_alive``) ends the wait at once.
    """
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = condition()
            if result:
                return result
        except StageError:
            raise
        except Exception as exc:  # the condition may fail until the thing it probes is up
            last_error = exc
        time.sleep(interval_s)
    detail = f" (last error: {last_error})" if last_error else ""
    raise StageError(f"timed out after {timeout_s:.0f}s waiting for {what}{detail}")


@dataclass
class Child:
    """One managed child process with its log file."""

    name: str
    process: subprocess.Popen
    log_path: Path
    _log_file: object = field(repr=False, default=None)

    def alive(self) -> bool:
        return self.process.poll() is None

    def check_alive(self) -> None:
        if not self.alive():
            raise StageError(
                f"{self.name} exited with code {self.process.returncode}; last log lines:\n{self.log_tail()}"
            )

    def log_tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM the process group, wait, then SIGKILL; returns the exit code."""
        if self.alive():
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        if self._log_file is not None:
            self._log_file.close()
        return self.process.returncode


def start_child(name: str, argv: list[str], log_dir: Path, env: dict[str, str] | None = None) -> Child:
    """Start ``argv`` in its own process group (so stopping it stops its children too)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    log_file = open(log_path, "ab")  # noqa: SIM115 - closed by Child.stop
    process = subprocess.Popen(
        argv, stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    return Child(name, process, log_path, log_file)


def lambdarec_command(*args: str) -> list[str]:
    """``lambdarec ARGS`` with this interpreter, independent of PATH."""
    return [sys.executable, "-m", "lambdarec.cli", *args]
