"""What the servers lambdarec embeds (the Kafka broker, Postgres, Kafka Connect) share: one process each,
started once and waited for, its output appended to one log, stopped with its own signal and then killed.

A subclass builds its command and says when it is ready; this base launches it in a process group of its
own (a terminal Ctrl-C reaches the caller's handler, which stops it in order) that dies with its parent,
stops it if getting ready fails, and reports a process that exits during startup with its log's tail.
"""

from __future__ import annotations

import logging
import signal
from abc import ABC, abstractmethod
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

from lambdarec.processes import StageError, die_with_parent, wait_for

log = logging.getLogger(__name__)


class EmbeddedProcess(ABC):
    """One embedded server for the life of a ``with`` block."""

    name = "process"  # in messages and log events: "the {name} exited …", event={event}_started
    event = "process"
    error: type[Exception] = RuntimeError
    stop_signal = signal.SIGTERM
    log_lines = 20

    def __init__(self, log_path: Path, startup_timeout_s: float, stop_timeout_s: float):
        self.log_path = log_path
        self.startup_timeout_s = startup_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self._process: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log_tail(self, lines: int | None = None) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-(lines or self.log_lines):])

    def stop(self) -> None:
        """``stop_signal``, then SIGKILL after ``stop_timeout_s``; safe to call twice."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            self._stopped(clean=False)
            return
        process.send_signal(self.stop_signal)
        clean = False
        try:
            process.wait(timeout=self.stop_timeout_s)
            clean = True
        except subprocess.TimeoutExpired:
            log.warning("event=%s_kill pid=%d reason=no_exit_after_%s", self.event, process.pid,
                        signal.Signals(self.stop_signal).name.lower())
            process.kill()
            process.wait()
        finally:
            self._stopped(clean=clean)
        log.info("event=%s_stopped pid=%d", self.event, process.pid)

    def _launch(self, command: list[str], cwd: Path, **popen: Any) -> None:
        """Start ``command`` with its output appended to the log; refuse a second start."""
        if self._process is not None:
            raise self.error(f"this {self.name} has already been started")
        with self.log_path.open("ab") as log_file:
            self._process = subprocess.Popen(
                command, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=cwd,
                process_group=0, preexec_fn=die_with_parent(), **popen,
            )

    def _get_ready(self, ready: Callable[[], object], detail: str = "") -> Self:
        """Run ``ready()`` (it waits until the server answers); stop the process if it fails."""
        try:
            ready()
        except BaseException:
            self.stop()
            raise
        log.info("event=%s_started %spid=%d", self.event, f"{detail} " if detail else "", self.pid)
        return self

    def _wait_until(self, probe: Callable[[], object], what: str, interval_s: float,
                    detail: Callable[[], str] = lambda: "") -> None:
        """``probe()`` until it holds, within the startup deadline; a deadline passed becomes ``error`` with
        ``detail()`` and the log's tail (the probe's own ``error`` passes through)."""
        try:
            wait_for(probe, self.startup_timeout_s, what, interval_s)
        except self.error:
            raise
        except StageError as exc:  # the deadline
            raise self.error(f"{exc}{detail()}; log tail:\n{self.log_tail()}") from exc

    def _check_alive(self) -> None:
        """Raise ``error`` with the log's tail if the process has exited (a probe's first step while starting)."""
        if self._process is not None and self._process.poll() is not None:
            raise self.error(f"the {self.name} exited with code {self._process.returncode} during startup; "
                             f"its log ({self.log_path}) ends with:\n{self.log_tail()}")

    def _stopped(self, clean: bool) -> None:  # noqa: B027 - an optional hook: most servers need nothing here
        """After a stop: ``clean`` when the process exited on its stop signal in time."""

    @abstractmethod
    def start(self) -> Self:
        """Start the server and return once it is ready (``_launch``, then ``_get_ready``)."""

    def __enter__(self) -> Self:
        return self if self.running() else self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
