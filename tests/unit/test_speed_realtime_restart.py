"""The speed job restarts a failed real-time query with backoff and counts it.

A stand-in query object replaces Spark's here: making real-time mode's Kafka
sink fail on cue would take minutes of a real job per case. The job's real
queries run through this code in the slow fault test (tests/slow/test_speed_fault.py).
"""

from __future__ import annotations

import pytest

from lambdarec.restart_policy import RestartPolicy
from speed.metrics import METRICS
from speed.realtime_restart import RestartingQuery

pytestmark = pytest.mark.unit

NAME = "lambdarec_speed_realtime"


class StandInQuery:
    name = NAME

    def __init__(self) -> None:
        self.isActive = True
        self.error: str | None = None
        self.stopped = False

    def fail(self, error: str) -> None:
        self.isActive, self.error = False, error

    def exception(self) -> str | None:
        return self.error

    def stop(self) -> None:
        self.stopped = True


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def restarts() -> float:
    return METRICS.registry.get_sample_value("lambdarec_speed_query_restarts_total", {"query": NAME}) or 0.0


def test_a_failed_query_is_started_again_after_a_growing_backoff_and_counted():
    started: list[StandInQuery] = []

    def start() -> StandInQuery:
        started.append(StandInQuery())
        return started[-1]

    clock = Clock()
    before = restarts()
    restarting = RestartingQuery(start, RestartPolicy(base_s=1.0, max_s=60.0, stable_s=300.0), clock)
    restarting.check()
    assert len(started) == 1  # running: nothing to do

    started[-1].fail("Kafka write failed")
    restarting.check()
    assert len(started) == 1 and restarts() == before + 1  # counted, waiting out 1 s
    clock.now += 1.0
    restarting.check()
    assert len(started) == 2 and restarting.query is started[-1]

    clock.now += 10  # failed again soon after: the wait doubles
    started[-1].fail("again")
    restarting.check()
    clock.now += 1.5
    restarting.check()
    assert len(started) == 2
    clock.now += 0.5
    restarting.check()
    assert len(started) == 3 and restarts() == before + 2

    clock.now += 400  # ran longer than stable_s: the next failure waits 1 s again
    started[-1].fail("much later")
    restarting.check()
    clock.now += 1.0
    restarting.check()
    assert len(started) == 4


def test_a_restart_that_cannot_start_is_tried_again_later():
    attempts: list[str] = []
    clock = Clock()
    first = StandInQuery()

    def start() -> StandInQuery:
        attempts.append("start")
        if len(attempts) == 1:
            return first
        if len(attempts) == 2:
            raise RuntimeError("broker unreachable")
        return StandInQuery()

    restarting = RestartingQuery(start, RestartPolicy(base_s=1.0, max_s=60.0, stable_s=300.0), clock)
    first.fail("lost the broker")
    restarting.check()
    clock.now += 1.0
    restarting.check()  # the start raises: logged, tried again after a longer wait
    assert len(attempts) == 2 and restarting.query is first
    clock.now += 1.0
    restarting.check()
    assert len(attempts) == 2
    clock.now += 1.0
    restarting.check()
    assert len(attempts) == 3 and restarting.query is not first and restarting.query.isActive
