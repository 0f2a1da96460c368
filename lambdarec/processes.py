"""Child processes the way an operator runs them: started, awaited on a condition, stopped.

The demo and the end-to-end tests start the broker, the speed job and serving
as real processes (``lambdarec broker``, ``spark-submit speed/job.py``,
``lambdarec serve``); this module keeps their logs, waits for readiness with a
deadline, and stops them with SIGTERM before resorting to SIGKILL.

A child never outlives the process that started it: on Linux each one is
started with ``PR_SET_PDEATHSIG`` (see ``die_with_parent``), so a parent killed
with SIGKILL, which runs no cleanup, still takes its children with it.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol, TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
JAVA_FRAME = re.compile(r"\s+(at \S+\(|\.\.\. \d+ more$)")
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None


def die_with_parent(sig: int = signal.SIGKILL) -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child receive ``sig`` when this process dies.

    Linux delivers the signal when the *thread* that forked the child exits, so
    this returns None (no death signal, with a warning) when called off the main
    thread, where a finished worker thread would otherwise kill a healthy child;
    it returns None on other systems too. The death signal survives ``exec``
    (``spark-submit`` execs java), and a parent that died between fork and prctl
    is caught by comparing the parent pid afterwards.
    """
    if _prctl is None:
        return None
    if threading.current_thread() is not threading.main_thread():
        log.warning("event=no_pdeathsig reason=started_off_the_main_thread thread=%s",
                    threading.current_thread().name)
        return None
    parent = os.getpid()
    return lambda: exit_with_parent(parent, sig)  # runs in the child between fork and exec: no locks, no logging


def exit_with_parent(parent: int, sig: int = signal.SIGKILL) -> None:
    """Have this process receive ``sig`` when ``parent``, its parent, dies (and at once if it already has).

    Linux only (a no-op elsewhere). The same caveat as ``die_with_parent``: the signal
    comes when the parent's thread that started this process exits.
    """
    if _prctl is None:
        return
    _prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    if os.getppid() != parent:  # the parent is already gone
        os.kill(os.getpid(), sig)


class StageError(RuntimeError):
    """A stage of a multi-process run failed; the message says which and why."""


def wait_for(condition: Callable[[], T | None], timeout_s: float, what: str, interval_s: float = 0.05) -> T:
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
    _log_file: IO[bytes] | None = field(repr=False, default=None)

    def alive(self) -> bool:
        return self.process.poll() is None

    def check_alive(self) -> bool:
        """True while the process runs; a StageError with its last log lines once it has exited."""
        if not self.alive():
            raise StageError(
                f"{self.name} exited with code {self.process.returncode}; last log lines:\n{self.log_tail()}"
            )
        return True

    def log_tail(self, lines: int = 25) -> str:
        """The log's last ``lines`` lines, Java stack frames left out: a JVM's failure then shows its
        exception and every ``Caused by`` rather than 25 frames of one trace."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join([line for line in text.splitlines() if not JAVA_FRAME.match(line)][-lines:])

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
    """Start ``argv`` in its own process group (so stopping it stops its children too).

    The child gets SIGKILL if this process dies (``die_with_parent``): a killed
    demo or test leaves no broker, Spark job or server behind holding ports.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    log_file = open(log_path, "ab")  # noqa: SIM115 - closed by Child.stop
    process = subprocess.Popen(
        argv, stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        preexec_fn=die_with_parent(),
    )
    return Child(name, process, log_path, log_file)


def free_port(preferred: int = 0) -> int:
    """``preferred`` if nothing listens there on loopback, else any free port (0: any)."""
    for port in (preferred, 0):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return sock.getsockname()[1]
    raise StageError("no free port")


class Service(Protocol):
    """A process lambdarec runs in the foreground: the embedded broker, Postgres, Kafka Connect."""

    def running(self) -> bool: ...

    def log_tail(self, lines: int = ...) -> str: ...

    def stop(self) -> None: ...


S = TypeVar("S", bound=Service)


def run_until_signalled(name: str, start: Callable[[], S], ready: Callable[[S], dict],
                        errors: tuple[type[Exception], ...]) -> int:
    """A ``lambdarec <name>`` command: start the service, print ``<name>_ready`` with ``ready(service)``,
    run until SIGINT or SIGTERM, stop it and print ``<name>_stopped``; 1 if it cannot start or dies."""
    stop_requested = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop_requested.set())
    try:
        service = start()
    except errors as exc:
        print(json.dumps({"event": f"{name}_failed", "error": str(exc)}), file=sys.stderr, flush=True)
        return 1
    try:
        print(json.dumps({"event": f"{name}_ready", **ready(service)}), flush=True)
        while not stop_requested.wait(0.5):
            if not service.running():
                print(json.dumps({"event": f"{name}_died", "log_tail": service.log_tail()}), flush=True)
                return 1
    finally:
        service.stop()
    print(json.dumps({"event": f"{name}_stopped"}), flush=True)
    return 0
