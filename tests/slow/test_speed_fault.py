"""Fault test: the speed job is kill -9'd at 3 random moments under a steady stream of API events.

Real processes: the embedded broker, ``lambdarec serve`` taking POST /events/batch,
and ``spark-submit speed/job.py``, killed with SIGKILL (its whole process group:
JVM, Python driver, Python workers) whenever ``events`` has grown by a random
number of rows since its last start, and started again on the same checkpoints.
At the end every accepted event is in ``events`` exactly once, and the speed
tables equal a batch recomputation from ``events``.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import signal
import threading
import time
import uuid

import httpx
import pyarrow.compute as pc
import pytest

from lambdarec.lake import Lake
from lambdarec.processes import Child, start_child, wait_for
from deploy.cli import lambdarec_command
from lambdarec.submit import spark_submit_env, speed_job_command
from schemas.tables import EVENTS, SPEED_USER_INTERACTIONS
from speed.recompute import current, recompute
from tests.plugins.broker import free_port

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.spark]

KILLS = 3
BATCH = 10  # events per POST; about 10 POSTs a second


class Sender(threading.Thread):
    """POSTs batches of events to serving until stopped; counts what the API accepted."""

    def __init__(self, api: str, rng: random.Random):
        super().__init__(daemon=True)
        self.api, self.rng = api, rng
        self.accepted: list[str] = []
        self.stop = threading.Event()
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            with httpx.Client(base_url=self.api, timeout=30) as client:
                while not self.stop.is_set():
                    events = [self.event() for _ in range(BATCH)]
                    response = client.post("/events/batch", json=events)
                    response.raise_for_status()
                    self.accepted.extend(response.json()["accepted"])
                    self.stop.wait(0.1)  # pacing the offered load, not synchronisation
        except Exception as exc:  # surfaced by the test's checks
            self.error = exc

    def event(self) -> dict:
        return {
            "event_id": str(uuid.uuid4()),
            "user_id": f"user-{self.rng.randrange(40)}",
            "item_id": f"item-{self.rng.randrange(60)}",
            "event_type": self.rng.choice(["view", "click", "add_to_cart", "purchase"]),
            "occurred_at": dt.datetime.now(dt.timezone.utc).isoformat(),
            "context": {"device": "web", "country": self.rng.choice(["DE", "FR", "US"])},
        }


def until(condition, what: str, job: Child, sender: Sender, timeout_s: float = 240.0, interval_s: float = 0.05):
    """Poll ``condition`` with a deadline; fail at once if the speed job or the sender died."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job.check_alive()
        assert sender.error is None, sender.error
        if condition():
            return
        time.sleep(interval_s)  # poll interval of a condition with a deadline
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def rows(lake: Lake, spec) -> int:
    return lake.read_arrow(spec).num_rows if lake.exists(spec) else 0


def test_kill_9_three_times_loses_and_duplicates_nothing(spark, embedded_broker, tmp_path):
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    settings = embedded_broker.settings.model_copy(update={"serve_port": free_port()})
    env = spark_submit_env(settings)
    lake = Lake(settings)
    api = f"http://127.0.0.1:{settings.serve_port}"
    logs = tmp_path / "logs"
    serving = start_child("serving", lambdarec_command("serve"), logs, env)
    sender = Sender(api, rng)
    job = None
    try:
        wait_for(lambda: serving.check_alive() and httpx.get(f"{api}/health", timeout=1).status_code == 200,
                 120, "serving /health")
        sender.start()
        for kill in range(KILLS + 1):
            job = start_child(f"speed-{kill}", speed_job_command(settings), logs, env)
            if kill == KILLS:
                break
            target = rows(lake, EVENTS) + rng.randint(20, 400)
            until(lambda target=target: rows(lake, EVENTS) >= target, f"events to reach {target} before kill {kill + 1}",
                  job, sender)
            time.sleep(rng.uniform(0, 2))  # a random moment within the next batches (fault timing, not a sync)
            os.killpg(job.process.pid, signal.SIGKILL)
            job.process.wait(30)
        restarted_at = rows(lake, EVENTS)
        until(lambda: rows(lake, EVENTS) > restarted_at, "the last restart to commit a batch", job, sender)
        sender.stop.set()
        sender.join(30)
        accepted = len(sender.accepted)
        until(lambda: rows(lake, EVENTS) >= accepted, "every accepted event in events", job, sender)
        until(lambda: current(settings) == recompute(spark, settings),
              "the speed features to equal the batch recomputation", job, sender, interval_s=1.0)
    finally:
        sender.stop.set()
        if job is not None:
            job.stop()
        serving.stop()

    events = lake.read_arrow(EVENTS)
    ids = events.column("event_id")
    assert accepted == pc.count_distinct(ids).as_py() == events.num_rows
    assert set(ids.to_pylist()) == set(sender.accepted)
    interactions = lake.read_arrow(SPEED_USER_INTERACTIONS).column("event_id")
    assert pc.count_distinct(interactions).as_py() == len(interactions) == accepted
    users, items = current(settings)
    print(f"fault test: kills={KILLS} accepted={accepted} distinct={accepted} rows={events.num_rows} "
          f"users={len(users)} item_segments={len(items)}")
