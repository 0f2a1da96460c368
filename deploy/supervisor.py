"""The supervisor ``lambdarec up`` leaves running: starts the components, restarts the ones that die, stops them all.

It runs detached (a session of its own, started by ``up``) and is the parent
of every component, so each dies with it (``processes.die_with_parent``) and
none is ever orphaned holding a port. One loop, on the main thread, moves each
component along waiting → starting → running, polls its readiness probe and
notices its exit; a dead component's process group is killed (a Spark driver's
Python and workers) and it starts again after the restart policy's backoff,
with the same plan. SIGTERM (``lambdarec down``) stops them in reverse
dependency order: SIGTERM to each process group, SIGKILL after the timeout,
and waits until every process of its tree is gone. Everything it knows goes
into the state file (``platform_state``) for ``ps``; its own log is
``<root>/platform/logs/supervisor.log``, one JSON object a line.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lambdarec import proc_tree
from deploy.components import OPTIONAL, Component, plan
from deploy.state import (
    BACKOFF, DONE, FAILED, RUNNING, STARTING, STOPPED, STOPPING, WAITING, ComponentRecord, PlatformState, lock_path,
    logs_dir, now_iso, write_state,
)
from lambdarec.processes import Child, start_child
from deploy.readiness import Launch
from lambdarec.restart_policy import RestartPolicy
from lambdarec.settings import Settings

TICK_S = 0.25
ALREADY_RUNNING = 3
"""Exit code of a supervisor that found another one holding the root's lock."""


def say(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, "at": now_iso(), **fields}), flush=True)


@dataclass
class Slot:
    """One component at run time: its plan, its record in the state file, its current process."""

    spec: Component
    record: ComponentRecord
    child: Child | None = None
    launch: Launch | None = None
    starts: int = 0
    failures: int = 0
    ever_ready: bool = False
    started_mono: float = 0.0
    ready_mono: float | None = None
    next_start_mono: float = 0.0


class Supervisor:
    def __init__(self, root: Path, components: list[Component], policy: RestartPolicy, stop_timeout_s: float,
                 urls: dict[str, str]):
        self.root = root
        self.logs = logs_dir(root)
        self.policy = policy
        self.stop_timeout_s = stop_timeout_s
        self.slots = [Slot(c, ComponentRecord(c.name, port=c.port, url=c.url, log=str(self.logs / f"{c.name}.log")))
                      for c in components]
        self.state = PlatformState(os.getpid(), proc_tree.start_ticks(os.getpid()),
                                   components=[s.record for s in self.slots], urls=urls)
        self.stop_requested = threading.Event()  # set by another thread (tests); a signal sets ``signalled``
        self.signalled: int | None = None

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            # Only a plain assignment: Event.set() in a handler could wait on the lock the interrupted wait holds.
            signal.signal(signum, lambda signum, _frame: setattr(self, "signalled", signum))
        self._save()
        say("supervisor_started", pid=os.getpid(), components=[s.spec.name for s in self.slots])
        try:
            while self.signalled is None and not self.stop_requested.is_set() and self.state.status != FAILED:
                self._tick()
                self.stop_requested.wait(TICK_S)  # the loop's poll interval
        finally:
            self._stop_all()
        return 1 if self.state.status == FAILED else 0

    # -- the loop ----------------------------------------------------------------------

    def _tick(self) -> None:
        now = time.monotonic()
        for slot in self.slots:
            status = slot.record.status
            if status in (WAITING, BACKOFF):
                if now >= slot.next_start_mono and self._dependencies_ready(slot):
                    self._start(slot)
            elif status in (STARTING, RUNNING):
                assert slot.child is not None
                code = slot.child.process.poll()
                if code is not None:
                    self._exited(slot, code)
                elif status == STARTING and not slot.spec.oneshot:
                    self._check_ready(slot, now)
            if self.state.status == FAILED:
                return
        if self.state.status == STARTING and all(s.record.status in (RUNNING, DONE) for s in self.slots):
            self.state.status = RUNNING
            self._save()
            say("platform_ready")

    def _dependencies_ready(self, slot: Slot) -> bool:
        planned = {s.spec.name: s for s in self.slots}
        return all(planned[name].record.status in (RUNNING, DONE) for name in slot.spec.after if name in planned)

    def _start(self, slot: Slot) -> None:
        spec, record = slot.spec, slot.record
        self.logs.mkdir(parents=True, exist_ok=True)
        log_path = self.logs / f"{spec.name}.log"
        with log_path.open("a") as log:
            log.write(f"--- lambdarec supervisor: start {slot.starts + 1} of {spec.name} at {now_iso()} ---\n")
        slot.launch = Launch.begin(log_path)
        slot.starts += 1
        slot.started_mono, slot.ready_mono = time.monotonic(), None
        record.restarts = slot.starts - 1
        record.started_at, record.ready_at, record.exit_code = now_iso(), None, None
        try:
            slot.child = start_child(spec.name, spec.argv, self.logs, env=spec.env)
        except OSError as exc:  # no such executable: a failed start like any other
            with log_path.open("a") as log:
                log.write(f"cannot start {spec.argv[0]}: {exc}\n")
            slot.child = None
            record.pid = record.pid_started = None
            self._exited(slot, 127)
            return
        record.pid = slot.child.process.pid
        record.pid_started = proc_tree.start_ticks(record.pid)
        record.status = STARTING
        self._save()
        say("component_started", name=spec.name, pid=record.pid, start=slot.starts)

    def _check_ready(self, slot: Slot, now: float) -> None:
        assert slot.launch is not None and slot.spec.ready is not None
        try:
            ready = slot.spec.ready(slot.launch)
        except Exception as exc:  # a probe that cannot tell yet, e.g. a half-written answer
            say("probe_error", name=slot.spec.name, error=str(exc))
            ready = False
        if ready:
            slot.ever_ready, slot.ready_mono = True, now
            slot.record.status, slot.record.ready_at = RUNNING, now_iso()
            self._save()
            say("component_ready", name=slot.spec.name, pid=slot.record.pid,
                seconds=round(now - slot.started_mono, 1))
        elif now - slot.started_mono > slot.spec.ready_timeout_s:
            say("component_not_ready", name=slot.spec.name, seconds=slot.spec.ready_timeout_s)
            self._kill_group(slot.record.pid, signal.SIGKILL)  # noticed as an exit on the next tick

    def _exited(self, slot: Slot, code: int) -> None:
        spec, record = slot.spec, slot.record
        if slot.child is not None:
            self._kill_group(slot.child.process.pid, signal.SIGKILL)  # what it leaves behind: workers, a driver
            slot.child.stop()  # closes its log
        record.exit_code = code
        if spec.oneshot and code == 0:
            record.status = DONE
            self._save()
            say("component_done", name=spec.name)
            return
        now = time.monotonic()
        ready_for = None if slot.ready_mono is None else now - slot.ready_mono
        if self.policy.gives_up(slot.ever_ready, slot.starts):
            record.status = FAILED
            self.state.status = FAILED
            tail = self._log_since_start(slot)
            self.state.error = (f"{spec.name} exited with code {code} before it was ready, {slot.starts} times; "
                                f"its log {record.log} ends with:\n{tail}")
            self._save()
            say("component_failed", name=spec.name, code=code, starts=slot.starts)
            return
        slot.failures = self.policy.failures_after_exit(slot.failures, ready_for)
        delay = self.policy.delay(slot.failures)
        slot.next_start_mono = now + delay
        record.status = BACKOFF
        self._save()
        say("component_exited", name=spec.name, code=code, restart_in_s=delay, failures=slot.failures)

    # -- stopping ------------------------------------------------------------------------

    def _stop_all(self) -> None:
        if self.state.status != FAILED:
            self.state.status = STOPPING
        self._save()
        say("supervisor_stopping", signal=self.signalled)
        for slot in reversed(self.slots):
            child = slot.child
            if child is not None and child.alive():
                slot.record.status = STOPPING
                self._save()
                tree = proc_tree.tree(child.process.pid)
                slot.record.exit_code = child.stop(self.stop_timeout_s)
                self._wait_gone(tree)
                say("component_stopped", name=slot.spec.name, code=slot.record.exit_code)
            elif child is not None:
                child.stop()
            if slot.record.status not in (FAILED, DONE):
                slot.record.status = STOPPED
            self._save()
        if self.state.status != FAILED:
            self.state.status = STOPPED
        self._save()
        say("supervisor_stopped")

    def _wait_gone(self, pids: list[int]) -> None:
        """Until every process of a stopped component's tree has exited (a JVM in a group of its own included)."""
        started = {pid: proc_tree.start_ticks(pid) for pid in pids}
        deadline = time.monotonic() + self.stop_timeout_s
        while any(proc_tree.alive(pid, ticks) for pid, ticks in started.items()):
            if time.monotonic() > deadline:
                for pid, ticks in started.items():
                    if proc_tree.alive(pid, ticks):
                        os.kill(pid, signal.SIGKILL)
                deadline = time.monotonic() + self.stop_timeout_s
            time.sleep(0.05)  # poll interval while processes exit

    @staticmethod
    def _log_since_start(slot: Slot, lines: int = 20) -> str:
        """The last lines the component's latest start wrote to its log."""
        if slot.launch is None:
            return ""
        with slot.launch.log_path.open("rb") as log:
            log.seek(slot.launch.offset)
            return "\n".join(log.read().decode(errors="replace").splitlines()[-lines:])

    @staticmethod
    def _kill_group(pid: int | None, sig: int) -> None:
        if pid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, sig)

    def _save(self) -> None:
        write_state(self.root, self.state)


def urls(components: list[Component]) -> dict[str, str]:
    return {c.name: c.url for c in components if c.url}


def lock(root: Path) -> int | None:
    """Hold the root's supervisor lock for this process's life; None if another supervisor holds it."""
    path = lock_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def command_line(without: set[str], airflow_port: int, stop_timeout_s: float) -> list[str]:
    """How ``up`` starts the supervisor (the settings travel in the environment)."""
    args = [sys.executable, "-m", "deploy.supervisor", "--airflow-port", str(airflow_port),
            "--stop-timeout", str(stop_timeout_s)]
    return args + [f"--without={name}" for name in sorted(without)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.supervisor", description=__doc__.splitlines()[0])
    parser.add_argument("--without", action="append", default=[], choices=OPTIONAL)
    parser.add_argument("--airflow-port", type=int, required=True)
    parser.add_argument("--stop-timeout", type=float, default=30.0)
    args = parser.parse_args(argv)
    settings = Settings()
    root = Path(settings.root).resolve()
    held = lock(root)
    if held is None:
        say("supervisor_already_running", root=str(root))
        return ALREADY_RUNNING
    components = plan(settings, set(args.without), args.airflow_port)
    return Supervisor(root, components, RestartPolicy(), args.stop_timeout, urls(components)).run()


if __name__ == "__main__":
    from deploy.cli import exit_now

    exit_now(main())
