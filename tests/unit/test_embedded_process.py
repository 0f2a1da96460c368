"""The lifecycle every embedded server shares (deploy.embedded.process), on a stand-in Python process."""

from __future__ import annotations

import os
import sys
import time

import pytest

from deploy.embedded.process import EmbeddedProcess
from lambdarec.processes import wait_for

pytestmark = pytest.mark.unit


class StandIn(EmbeddedProcess):
    name, event, error = "stand-in", "stand_in", ValueError

    def __init__(self, tmp_path, script: str, ready=lambda: None, stop_timeout_s: float = 5.0):
        super().__init__(tmp_path / "stand-in.log", startup_timeout_s=5, stop_timeout_s=stop_timeout_s)
        self.script, self.ready, self.home = script, ready, tmp_path
        self.stops: list[bool] = []

    def start(self):
        self._launch([sys.executable, "-c", self.script], cwd=self.home)
        return self._get_ready(self.ready)

    def _stopped(self, clean: bool) -> None:
        self.stops.append(clean)


def test_it_runs_for_the_with_block_and_stops_cleanly_on_its_signal(tmp_path):
    with StandIn(tmp_path, "import time; print('up', flush=True); time.sleep(60)") as process:
        assert process.running() and process.pid
        pid = process.pid
    assert not process.running() and process.pid is None and process.stops == [True]
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_a_process_that_ignores_its_signal_is_killed_after_the_deadline(tmp_path):
    script = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"
    process = StandIn(tmp_path, script, stop_timeout_s=0.5)
    process.start()
    wait_for(lambda: "up" in process.log_tail(), 5, "the stand-in to ignore SIGTERM")
    started = time.monotonic()
    process.stop()
    assert time.monotonic() - started < 5 and process.stops == [False]
    process.stop()  # twice is safe
    assert process.stops == [False, False]


def test_a_process_that_exits_while_starting_is_reported_with_its_log(tmp_path):
    process = StandIn(tmp_path, "print('bad config: port'); raise SystemExit(3)")

    def ready() -> None:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            process._check_alive()
            time.sleep(0.05)

    process.ready = ready
    with pytest.raises(ValueError, match=r"the stand-in exited with code 3 during startup; its log .* ends with:\nbad config: port"):
        process.start()
    assert not process.running()


def test_a_second_start_is_refused(tmp_path):
    with StandIn(tmp_path, "import time; time.sleep(60)") as process, pytest.raises(ValueError, match="already been started"):
        process.start()


def test_getting_ready_failing_stops_the_process(tmp_path):
    def never() -> None:
        raise TimeoutError("never ready")

    process = StandIn(tmp_path, "import time; time.sleep(60)", ready=never)
    with pytest.raises(TimeoutError):
        process.start()
    assert process._process is None and process.stops == [True]
