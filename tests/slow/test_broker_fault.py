"""Fault test: the whole broker component is kill -9'd 3 times under a steady stream through the API.

Real processes: ``lambdarec broker`` (its Kafka JVM dies with it), ``lambdarec serve``
taking POST /v1/events/batch, and ``spark-submit speed/job.py``. A batch the API
does not accept (503 while the broker is down) is sent again with the same event
ids until it is, as a client retrying would. At the end every accepted event is in
``events`` exactly once, and the speed job either carried on or restarted cleanly
on its checkpoints.
"""

from __future__ import annotations

import datetime as dt
import random
import threading
import uuid

import httpx
import pyarrow.compute as pc
import pytest

from lambdarec.lake import Lake
from lambdarec.processes import start_child, wait_for
from deploy.cli import lambdarec_command
from lambdarec.submit import spark_submit_env, speed_job_command
from schemas.tables import EVENTS
from tests.plugins.broker import free_port
from tests.support.broker_component import Component

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.spark]

KILLS = 3
BATCH = 20
ACCEPTED_BETWEEN_KILLS = 400


class RetryingSender(threading.Thread):
    """POSTs batches of new events; a batch that is not accepted is sent again, same ids, until it is."""

    def __init__(self, api: str):
        super().__init__(daemon=True)
        self.api = api
        self.accepted: list[str] = []
        self.refused = 0
        self.stop = threading.Event()
        self.rng = random.Random(7)

    def run(self) -> None:
        with httpx.Client(base_url=self.api, timeout=60) as client:
            pending: list[dict] = []
            while pending or not self.stop.is_set():
                pending = pending or [self.event() for _ in range(BATCH)]
                try:
                    response = client.post("/v1/events/batch", json=pending)
                except httpx.HTTPError:
                    response = None
                if response is not None and response.status_code == 202:
                    self.accepted.extend(response.json()["accepted"])
                    pending = []
                    self.stop.wait(0.05)  # pacing the offered load, not synchronisation
                else:
                    self.refused += 1
                    self.stop.wait(0.2)  # a client's back-off before it retries

    def event(self) -> dict:
        return {
            "event_id": str(uuid.uuid4()),
            "user_id": f"user-{self.rng.randrange(50)}",
            "item_id": f"item-{self.rng.randrange(80)}",
            "event_type": self.rng.choice(["view", "click", "purchase"]),
            "occurred_at": dt.datetime.now(dt.timezone.utc).isoformat(),
            "context": {"device": "web", "country": "DE"},
        }


def test_broker_killed_three_times_under_api_traffic_loses_and_duplicates_nothing(tmp_path):
    broker = Component(tmp_path)
    settings = broker.settings.model_copy(update={"serve_port": free_port()})
    env = {**spark_submit_env(settings), **broker.env}
    lake = Lake(settings)
    api = f"http://127.0.0.1:{settings.serve_port}"
    logs = tmp_path / "logs"
    broker.start()
    serving = start_child("serving", lambdarec_command("serve"), logs, env)
    jobs = [start_child("speed-0", speed_job_command(settings), logs, env)]
    sender = RetryingSender(api)

    def speed_job_running() -> None:
        """Restart the speed job on its checkpoints if it stopped (a clean restart is allowed)."""
        if not jobs[-1].alive():
            jobs.append(start_child(f"speed-{len(jobs)}", speed_job_command(settings), logs, env))

    def landed() -> int:
        speed_job_running()
        return lake.read_arrow(EVENTS).num_rows if lake.exists(EVENTS) else 0

    try:
        wait_for(lambda: serving.check_alive() and httpx.get(f"{api}/health", timeout=1).status_code == 200,
                 120, "serving /health")
        sender.start()
        for kill in range(KILLS):
            target = len(sender.accepted) + ACCEPTED_BETWEEN_KILLS
            wait_for(lambda target=target: landed() >= 1 and len(sender.accepted) >= target, 240,
                     f"{ACCEPTED_BETWEEN_KILLS} more accepted events before kill {kill + 1}", interval_s=0.2)
            broker.kill_9()
            broker.start()
        target = len(sender.accepted) + ACCEPTED_BETWEEN_KILLS
        wait_for(lambda: len(sender.accepted) >= target, 240, "accepted events after the last restart",
                 interval_s=0.2)
        sender.stop.set()
        sender.join(120)
        assert not sender.is_alive()
        accepted = len(sender.accepted)
        wait_for(lambda: landed() >= accepted, 300, "every accepted event in events", interval_s=0.5)
    finally:
        sender.stop.set()
        for job in jobs:
            job.stop()
        serving.stop()
        broker.stop()

    events = lake.read_arrow(EVENTS)
    ids = events.column("event_id")
    assert accepted == pc.count_distinct(ids).as_py() == events.num_rows
    assert set(ids.to_pylist()) == set(sender.accepted)
    print(f"broker fault test: kills={KILLS} accepted={accepted} rows={events.num_rows} "
          f"refused_requests={sender.refused} speed_job_starts={len(jobs)}")
