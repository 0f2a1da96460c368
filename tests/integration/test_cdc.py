"""CDC on the real parts: the embedded Postgres, Kafka Connect with Debezium's connector, the embedded broker.

Rows inserted, updated and deleted in Postgres arrive on ``cdc.public.<table>`` in
Debezium's envelope, in order per key with increasing LSNs; a restarted Connect
goes on after the last change it delivered, without a new snapshot.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import psycopg
import pytest

from lambdarec.cdc import KafkaConnect, topic
from lambdarec.kafka_io import make_consumer
from lambdarec.postgres import EmbeddedPostgres
from lambdarec.processes import free_port
from tests.support.serving import read_topic, wait_until

pytestmark = pytest.mark.integration


def changes(settings, table: str, expected: int) -> list[tuple[dict, dict | None]]:
    """(key, value) of every record on the table's topic, in offset order per partition."""
    name = topic(settings, table)
    consumer = make_consumer(settings.bootstrap_servers)
    try:
        wait_until(lambda: consumer.partitions_for_topic(name), f"the topic {name}")
    finally:
        consumer.close()
    records = sorted(read_topic(settings, name, expected), key=lambda r: (r.partition, r.offset))
    return [(json.loads(r.key), json.loads(r.value) if r.value is not None else None) for r in records]


@pytest.fixture
def cdc_settings(broker_settings):
    """Settings for a fresh Postgres and Connect beside the test's broker. The cluster lives outside
    pytest's tmp_path (mode 700): run as root, Postgres runs as the postgres user, who must reach it."""
    home = Path(tempfile.mkdtemp(prefix="lambdarec-postgres-"))
    home.chmod(0o711)
    yield broker_settings.model_copy(update={"embedded_postgres_port": free_port(), "cdc_connect_port": free_port(),
                                             "embedded_postgres_dir": str(home)})
    shutil.rmtree(home, ignore_errors=True)


def test_row_changes_arrive_in_debezium_envelopes_and_a_restart_resumes(cdc_settings):
    settings = cdc_settings
    with EmbeddedPostgres(settings), psycopg.connect(settings.operational_db, autocommit=True) as db:
        db.execute("INSERT INTO items (item_id, title, category, price) VALUES ('i1', 'Trail shoe', 'shoes', 9.50)")
        with KafkaConnect(settings):  # i1 is there before Connect starts: it comes as a snapshot read
            db.execute("INSERT INTO items (item_id, title, category, price, attributes) "
                       "VALUES ('i2', 'Sock', 'socks', 2.00, '{\"colour\": \"red\"}')")
            db.execute("UPDATE items SET available = false, price = 12.34 WHERE item_id = 'i1'")
            db.execute("DELETE FROM items WHERE item_id = 'i2'")
            db.execute("INSERT INTO users (user_id, country, age_band) VALUES ('alice@example.com', 'DE', '25-34')")
            items = changes(settings, "public.items", 5)
            [(user_key, user)] = changes(settings, "public.users", 1)
        db.execute("UPDATE items SET title = 'Trail shoe 2' WHERE item_id = 'i1'")  # while Connect is down
        with KafkaConnect(settings):
            after_restart = changes(settings, "public.items", 6)

    by_key = [(key["item_id"], value and value["op"]) for key, value in items]
    assert [op for key, op in by_key if key == "i1"] == ["r", "u"]
    assert [op for key, op in by_key if key == "i2"] == ["c", "d", None]  # a delete, then its tombstone
    envelope = {key["item_id"] + value["op"]: value for key, value in items if value}
    assert envelope["i1r"]["before"] is None and envelope["i1r"]["after"]["price"] == "9.50"
    assert envelope["i1u"]["before"]["available"] is True and envelope["i1u"]["after"]["available"] is False
    assert envelope["i1u"]["after"]["price"] == "12.34"
    assert json.loads(envelope["i2c"]["after"]["attributes"]) == {"colour": "red"}
    assert envelope["i2d"]["after"] is None and envelope["i2d"]["before"]["item_id"] == "i2"
    streamed = [envelope[k]["source"]["lsn"] for k in ("i2c", "i1u", "i2d")]
    assert streamed == sorted(streamed) and len(set(streamed)) == 3  # LSNs order the changes
    assert (user_key, user["op"], user["after"]["country"]) == ({"user_id": "alice@example.com"}, "c", "DE")

    assert len(after_restart) == 6 and all(change in after_restart for change in items)  # no repeat, no snapshot
    [(key, value)] = [change for change in after_restart if change not in items]
    assert (key, value["op"], value["after"]["title"]) == ({"item_id": "i1"}, "u", "Trail shoe 2")
