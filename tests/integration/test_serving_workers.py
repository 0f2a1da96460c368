"""``lambdarec serve --workers 2``, started as a user starts it: two processes on one port.

A real broker, a published model in a real lake, the real command line. Both
workers take requests; /metrics from either sums both; a killed worker is
replaced and its counts are kept; a new model reaches both workers; a killed
parent takes its workers with it, so nothing holds the port.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import httpx
import pytest

from lambdarec.lake import Lake
from serving.metrics_text import samples
from lambdarec.proc_tree import alive, tree
from lambdarec.processes import start_child
from deploy.cli import lambdarec_command
from lambdarec.submit import spark_submit_env
from serving.workers import metrics_dir
from tests.plugins.broker import free_port
from tests.support.serving import wait_until, write_model

pytestmark = pytest.mark.integration

ITEMS = {f"i{n}": [1.0, 0.1 * n] for n in range(10)}
RATINGS = {f"u{n}": {f"i{n}": 3.0} for n in range(5)}
ACCEPTED = ("lambdarec_ingested_events_total", (("outcome", "accepted"),))
BATCH = 20


def batch() -> list[dict]:
    return [{"event_id": str(uuid.uuid4()), "user_id": f"user-{n}", "item_id": f"i{n % 10}", "event_type": "click",
             "occurred_at": datetime.now(UTC).isoformat()} for n in range(BATCH)]


def post_batches(api: str, count: int) -> None:
    """``count`` batches from 8 threads, each on a new connection, so that any worker may take them."""
    def post(_: int) -> int:
        return httpx.post(f"{api}/v1/events/batch", json=batch(), timeout=30).status_code

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(post, range(count))) == {202}


def metric(api: str, key: tuple) -> float:
    return samples(httpx.get(f"{api}/metrics", timeout=10).text).get(key, 0.0)


def workers(parent: int) -> set[int]:
    """uvicorn's worker processes under ``parent`` (multiprocessing's spawned children)."""
    def cmdline(pid: int) -> str:
        try:
            return open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace")
        except OSError:
            return ""
    return {pid for pid in tree(parent) if pid != parent and "spawn_main" in cmdline(pid)}


def request_pids(log: str) -> set[int]:
    """The pids that logged an ingestion request."""
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    return {line["pid"] for line in lines if line.get("route") == "/v1/events/batch"}


def test_two_workers_share_the_port_sum_their_metrics_and_are_replaced_when_killed(broker_settings, tmp_path):
    settings = broker_settings.model_copy(update={"serve_port": free_port(), "serve_model_poll_s": 1.0})  # open
    lake = Lake(settings)
    write_model(lake, 1, 10, ITEMS, RATINGS)
    api = f"http://127.0.0.1:{settings.serve_port}"
    server = start_child("serving", lambdarec_command("serve", "--workers", "2"), tmp_path / "logs",
                         spark_submit_env(settings))
    try:
        parent = server.process.pid
        wait_until(lambda: server.check_alive() and len(workers(parent)) == 2, "two workers", 60)
        posted = [0]

        def serving_from(pids: set[int]) -> bool:
            """Post 4 batches; True once each of ``pids`` has taken one of the batches posted so far."""
            post_batches(api, 4)
            posted[0] += 4
            return pids <= request_pids(server.log_path.read_text())

        wait_until(lambda: serving_from(workers(parent)), "both workers taking requests", 120)
        # whichever worker answers, the count is both workers'
        assert [metric(api, ACCEPTED) for _ in range(6)] == [posted[0] * BATCH] * 6

        killed = next(iter(workers(parent)))
        survivors = workers(parent) - {killed}
        assert list(metrics_dir(settings, settings.serve_port).glob(f"gauge_live*_{killed}.db"))
        os.kill(killed, signal.SIGKILL)
        wait_until(lambda: killed not in workers(parent) and len(workers(parent)) == 2,
                   "uvicorn to replace the killed worker", 60)
        wait_until(lambda: serving_from(workers(parent) - survivors), "the replacement taking requests", 120)
        assert [metric(api, ACCEPTED) for _ in range(6)] == [posted[0] * BATCH] * 6  # the killed worker's counts kept
        # its replacement dropped the killed worker's view gauges, which the "live" modes would show forever
        assert not list(metrics_dir(settings, settings.serve_port).glob(f"gauge_live*_{killed}.db"))

        write_model(lake, 2, 20, ITEMS, RATINGS)
        reload = httpx.post(f"{api}/v1/admin/reload", timeout=60)
        assert reload.status_code == 200 and reload.json()["model_version"] == 2
        # the worker the reload missed finds version 2 on its next registry poll; the gauge is the oldest served
        wait_until(lambda: metric(api, ("lambdarec_model_version", ())) == 2, "both workers on model 2")

        children = workers(parent)
        os.kill(parent, signal.SIGKILL)
        wait_until(lambda: not any(alive(pid) for pid in children), "the workers to leave with their parent")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", settings.serve_port))  # nothing holds the port
    finally:
        server.stop()
