"""The supervisor's loop on tiny Python children: start in order, restart what dies, give up, stop in reverse.

Real processes and seconds of backoff, so in the integration tier (tests/unit/test_platform.py has the pure parts)."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading

import pytest

from lambdarec import proc_tree
from deploy.components import Component
from deploy.state import BACKOFF, DONE, FAILED, RUNNING, STOPPED, read_state
from lambdarec.processes import wait_for
from deploy.readiness import LogLine
from lambdarec.restart_policy import RestartPolicy
from deploy.supervisor import Supervisor

pytestmark = pytest.mark.integration

# Prints ready, then runs until SIGTERM; a grandchild shares its process group, as a Spark driver's Python does.
SERVICE = ("import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
           "print('ready', flush=True); time.sleep(60)")
FAST = RestartPolicy(base_s=0.05, max_s=0.2, stable_s=60, start_attempts=2)


def python(name: str, code: str, after: tuple[str, ...] = (), ready: bool = True) -> Component:
    return Component(name, [sys.executable, "-c", code], dict(os.environ), LogLine("ready") if ready else None,
                     after=after)


@pytest.fixture(autouse=True)
def _restore_signals():
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def events(capsys) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]


def run_with(supervisor: Supervisor, drive) -> tuple[int, BaseException | None]:
    """``supervisor.run()`` on this (the main) thread while ``drive`` acts on it from another; then it stops."""
    failure: list[BaseException] = []

    def driver() -> None:
        try:
            drive()
        except BaseException as exc:  # reported by the test
            failure.append(exc)
        finally:
            supervisor.stop_requested.set()

    thread = threading.Thread(target=driver, daemon=True)
    thread.start()
    code = supervisor.run()
    thread.join(30)
    return code, (failure[0] if failure else None)


def test_starts_in_order_restarts_a_killed_child_and_stops_in_reverse(tmp_path, capsys):
    components = [python("migrate", "print('migrated')", ready=False), python("a", SERVICE, after=("migrate",)),
                  python("b", SERVICE, after=("a",))]
    supervisor = Supervisor(tmp_path, components, FAST, stop_timeout_s=5, urls={})
    seen: dict = {}

    def drive() -> None:
        state = wait_for(lambda: (s := read_state(tmp_path)) and s.status == RUNNING and s, 30, "the platform")
        seen["first"] = {c.name: (c.status, c.pid) for c in state.components}
        old = state.component("b")
        seen["tree"] = proc_tree.tree(old.pid)
        os.kill(old.pid, signal.SIGKILL)

        def back():
            now = read_state(tmp_path).component("b")
            return now.status == RUNNING and now.pid != old.pid and now

        seen["b"] = wait_for(back, 30, "b restarted")
        seen["trees"] = [pid for c in read_state(tmp_path).components if c.pid and c.alive()
                         for pid in proc_tree.tree(c.pid)]

    code, failure = run_with(supervisor, drive)
    assert failure is None and code == 0, failure
    assert seen["first"]["migrate"][0] == DONE and seen["first"]["a"][0] == RUNNING
    assert seen["b"].restarts == 1 and seen["b"].alive() is False  # stopped by now
    assert not any(proc_tree.alive(pid) for pid in seen["tree"])  # the killed one's grandchild went with it
    assert not any(proc_tree.alive(pid) for pid in seen["trees"])  # and down left nothing behind
    state = read_state(tmp_path)
    assert state.status == STOPPED
    assert {c.name: c.status for c in state.components} == {"migrate": DONE, "a": STOPPED, "b": STOPPED}
    log = events(capsys)
    started = [e["name"] for e in log if e["event"] == "component_started"]
    assert started == ["migrate", "a", "b", "b"]
    assert [e["name"] for e in log if e["event"] == "component_stopped"] == ["b", "a"]
    assert [e for e in log if e["event"] == "component_exited"][0]["code"] == -signal.SIGKILL
    assert (tmp_path / "platform" / "logs" / "b.log").read_text().count("--- lambdarec supervisor: start") == 2


def test_a_component_that_never_gets_ready_fails_the_platform_and_the_rest_is_stopped(tmp_path, capsys):
    components = [python("a", SERVICE), python("broken", "import sys; print('no'); sys.exit(3)", after=("a",))]
    supervisor = Supervisor(tmp_path, components, FAST, stop_timeout_s=5, urls={})
    code, failure = run_with(supervisor, lambda: wait_for(
        lambda: (s := read_state(tmp_path)) and s.status == FAILED, 30, "the platform to fail"))
    assert failure is None and code == 1
    state = read_state(tmp_path)
    assert state.status == FAILED and "broken exited with code 3 before it was ready, 2 times" in state.error
    assert "no" in state.error  # its log's tail
    assert {c.name: c.status for c in state.components} == {"a": STOPPED, "broken": FAILED}
    assert not state.component("a").alive()


def test_a_child_that_dies_after_it_was_ready_waits_its_backoff(tmp_path, capsys):
    dies = "import time; print('ready', flush=True); time.sleep(0.3)"
    policy = RestartPolicy(base_s=0.5, max_s=0.5, stable_s=60, start_attempts=1)
    supervisor = Supervisor(tmp_path, [python("flaky", dies)], policy, stop_timeout_s=5, urls={})

    def drive() -> None:
        wait_for(lambda: read_state(tmp_path).component("flaky").status == BACKOFF, 30, "a backoff")
        wait_for(lambda: read_state(tmp_path).component("flaky").restarts >= 2, 30, "two restarts")

    code, failure = run_with(supervisor, drive)
    assert failure is None and code == 0  # ready once: restarted for ever, never failed
    exits = [e for e in events(capsys) if e["event"] == "component_exited"]
    assert [e["restart_in_s"] for e in exits[:2]] == [0.5, 0.5]
