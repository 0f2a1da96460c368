"""CDC under faults: ``kill -9`` of Kafka Connect, and separately of the speed job that MERGEs the
changes, while Postgres keeps changing. After the restarts the lake equals Postgres, row for row:
no change lost, none applied twice, nothing dead-lettered."""

from __future__ import annotations

import os
import random
import signal
import threading

import psycopg
import pytest

from deploy.embedded.cdc import KafkaConnect
from lambdarec.lake import Lake
from deploy.embedded.postgres import EmbeddedPostgres
from schemas.tables import DEAD_LETTER, ITEM_CATALOGUE
from tests.support.cdc import lake_matches_postgres
from tests.support.jobs import start_job
from tests.support.serving import wait_until

pytestmark = pytest.mark.integration


class Writer(threading.Thread):
    """Inserts, updates and deletes items in Postgres until stopped, one transaction each."""

    def __init__(self, settings):
        super().__init__(daemon=True)
        self.settings = settings
        self.stop = threading.Event()
        self.changes = 0
        self.error: Exception | None = None

    def run(self) -> None:
        rng = random.Random(3)
        try:
            with psycopg.connect(self.settings.operational_db, autocommit=True) as db:
                while not self.stop.is_set():
                    n = self.changes
                    db.execute("INSERT INTO items (item_id, title, price) VALUES (%s, %s, %s)",
                               [f"i{n}", f"Item {n}", rng.randint(1, 99)])
                    if n % 3 == 0:
                        db.execute("UPDATE items SET price = price + 1, available = NOT available "
                                   "WHERE item_id = %s", [f"i{rng.randrange(n + 1)}"])
                    if n % 5 == 4:
                        db.execute("DELETE FROM items WHERE item_id = %s", [f"i{rng.randrange(n + 1)}"])
                    if n % 7 == 0:
                        db.execute("INSERT INTO users (user_id, country) VALUES (%s, 'DE') "
                                   "ON CONFLICT (user_id) DO UPDATE SET country = 'FR'", [f"u{n % 20}"])
                    self.changes += 1
                    self.stop.wait(0.02)
        except Exception as exc:  # surfaced by the test
            self.error = exc


def speed_job(settings):
    return start_job(settings, "speed/job.py")


def kill(pid: int) -> None:
    os.killpg(pid, signal.SIGKILL)


def test_kill_9_of_connect_and_of_the_merge_job_loses_and_doubles_nothing(cdc_settings):
    settings = cdc_settings.model_copy(update={"speed_realtime": False, "speed_trigger_ms": 500,
                                               "speed_spark_master": "local[2]"})
    lake = Lake(settings)
    with EmbeddedPostgres(settings):
        writer = Writer(settings)
        connect = KafkaConnect(settings).start()
        job = speed_job(settings)
        try:
            writer.start()
            wait_until(lambda: lake.exists(ITEM_CATALOGUE) and lake.read_arrow(ITEM_CATALOGUE).num_rows > 20,
                       "the first changes in the lake", timeout_s=180)

            os.kill(connect.pid, signal.SIGKILL)  # Connect, mid-stream
            connect.stop()
            wait_until(lambda: writer.changes > 150, "more changes while Connect is down", timeout_s=60)
            connect = KafkaConnect(settings).start()

            kill(job.pid)  # the speed job and its MERGE, mid-stream
            job.wait(timeout=60)
            wait_until(lambda: writer.changes > 300, "more changes while the MERGE job is down", timeout_s=60)
            job = speed_job(settings)
            wait_until(lambda: writer.changes > 400, "more changes after both restarts", timeout_s=60)
        finally:
            writer.stop.set()
            writer.join(30)
        try:
            assert writer.error is None, writer.error
            wait_until(lambda: lake_matches_postgres(settings), "the lake to equal Postgres", timeout_s=240)
        finally:
            kill(job.pid)
            job.wait(timeout=60)
            connect.stop()
    rows = lake.read_arrow(ITEM_CATALOGUE)
    assert len(set(rows.column("item_id").to_pylist())) == rows.num_rows  # one row per item
    assert lake.read_arrow(DEAD_LETTER).num_rows == 0
