"""CDC on the real parts: the embedded Postgres, Kafka Connect with Debezium's connector, the embedded broker.

Rows inserted, updated and deleted in Postgres arrive on ``cdc.public.<table>`` in
Debezium's envelope, in order per key with increasing LSNs; a restarted Connect
goes on after the last change it delivered, without a new snapshot.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest

from deploy.embedded.cdc import CONNECTOR, KafkaConnect, secrets_path
from schemas.cdc import topic
from lambdarec.kafka_io import make_consumer, make_producer, send_all
from lambdarec.lake import Lake
from deploy.embedded.postgres import EmbeddedPostgres
from schemas.cdc import AvailabilityChange, decode_availability
from schemas.tables import DEAD_LETTER, ITEM_CATALOGUE
from serving.views.catalogue_changes import CatalogueChanges
from serving.views.item_attributes import ItemAttributes
from speed.job import run_dimensions
from tests.support.cdc import lake_matches_postgres
from tests.support.privacy import traces
from tests.support.serving import read_topic, wait_until

pytestmark = pytest.mark.integration


def changes(settings, table: str, expected: int) -> list[tuple[dict, dict | None]]:
    """(key, value) of every record on the table's topic, in offset order per partition."""
    name = topic(settings.cdc_topic_prefix, table)
    consumer = make_consumer(settings.bootstrap_servers)
    try:
        wait_until(lambda: consumer.partitions_for_topic(name), f"the topic {name}")
    finally:
        consumer.close()
    records = sorted(read_topic(settings, name, expected), key=lambda r: (r.partition, r.offset))
    return [(json.loads(r.key), json.loads(r.value) if r.value is not None else None) for r in records]


def test_row_changes_arrive_in_debezium_envelopes_and_a_restart_resumes(cdc_settings):
    settings = cdc_settings
    attributes = ItemAttributes(Lake(settings))  # serving's view of availability, fed by the topic alone
    following = CatalogueChanges(settings, attributes)
    with EmbeddedPostgres(settings), psycopg.connect(settings.operational_db, autocommit=True) as db:
        db.execute("INSERT INTO items (item_id, title, category, price) VALUES ('i1', 'Trail shoe', 'shoes', 9.50)")
        following.start()
        with KafkaConnect(settings):  # i1 is there before Connect starts: it comes as a snapshot read
            db.execute("INSERT INTO items (item_id, title, category, price, attributes) "
                       "VALUES ('i2', 'Sock', 'socks', 2.00, '{\"colour\": \"red\"}')")
            db.execute("UPDATE items SET available = false, price = 12.34 WHERE item_id = 'i1'")
            db.execute("DELETE FROM items WHERE item_id = 'i2'")
            db.execute("INSERT INTO users (user_id, country, age_band) VALUES ('alice@example.com', 'DE', '25-34')")
            items = changes(settings, "public.items", 5)
            [(user_key, user)] = changes(settings, "public.users", 1)
            wait_until(lambda: following.applied == 4, "serving to apply the items' changes")
            following.stop()
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
    decoded = {name: decode_availability(json.dumps(value).encode()) for name, value in envelope.items()}
    lsn = {name: value["source"]["lsn"] for name, value in envelope.items()}
    assert decoded == {"i1r": AvailabilityChange("i1", lsn["i1r"], True), "i2c": AvailabilityChange("i2", lsn["i2c"], True),
                       "i1u": AvailabilityChange("i1", lsn["i1u"], False), "i2d": AvailabilityChange("i2", lsn["i2d"], None)}
    assert attributes.unavailable == {"i1", "i2"}  # i1 was set unavailable; i2 came and was deleted

    assert len(after_restart) == 6 and all(change in after_restart for change in items)  # no repeat, no snapshot
    [(key, value)] = [change for change in after_restart if change not in items]
    assert (key, value["op"], value["after"]["title"]) == ({"item_id": "i1"}, "u", "Trail shoe 2")


@pytest.mark.spark
def test_the_dimensions_query_keeps_the_lake_equal_to_postgres(spark, cdc_settings):
    settings = cdc_settings.model_copy(update={"speed_trigger_ms": 200})
    lake = Lake(settings)

    def lake_items() -> dict:
        return {r["item_id"]: r for r in lake.read_arrow(ITEM_CATALOGUE).to_pylist()}

    def matches() -> bool:
        return lake_matches_postgres(settings)

    with EmbeddedPostgres(settings), psycopg.connect(settings.operational_db, autocommit=True) as db:
        db.execute("INSERT INTO items (item_id, title, category, price, attributes) VALUES "
                   "('i1', 'Trail shoe', 'shoes', 9.50, '{\"size\": 42}'), ('i2', 'Sock', 'socks', 2.00, '{}')")
        db.execute("INSERT INTO users (user_id, country, age_band, signup_date) VALUES "
                   "('alice@example.com', 'DE', '25-34', '2024-02-29')")
        with KafkaConnect(settings):
            query = run_dimensions(spark, settings)
            try:
                wait_until(matches, "the snapshot in the lake", timeout_s=120)
                db.execute("UPDATE items SET available = false, price = 12.34 WHERE item_id = 'i1'")
                db.execute("DELETE FROM items WHERE item_id = 'i2'")
                db.execute("INSERT INTO items (item_id, title, price) VALUES ('i3', 'Cap', 5)")
                db.execute("UPDATE users SET country = 'FR' WHERE user_id = 'alice@example.com'")
                db.execute("INSERT INTO users (user_id, country, signup_date) VALUES ('bob', 'US', '2025-01-01')")
                db.execute("DELETE FROM users WHERE user_id = 'bob'")
                wait_until(matches, "the changes in the lake", timeout_s=120)
                assert lake_items()["i1"]["available"] is False
                assert (lake_items()["i2"]["deleted"], lake_items()["i2"]["available"]) == (True, False)

                # Changes that cannot be applied: dead-lettered with a reason; the rest still applies.
                producer = make_producer(settings)
                try:
                    send_all(producer, topic(settings.cdc_topic_prefix, "public.items"), [
                        (b'{"item_id":"i9"}', b"{not json"),
                        (b'{"item_id":"i9"}', json.dumps({"op": "c", "source": {"lsn": 1}, "after": {
                            "item_id": "i9", "title": "Bad", "price": "cheap", "available": True,
                            "attributes": "{}", "updated_at": "2026-01-01T00:00:00Z"}}).encode())])
                    send_all(producer, topic(settings.cdc_topic_prefix, "public.users"), [(b'{"user_id":"carol"}', json.dumps(
                        {"op": "u", "source": {"lsn": 2}, "after": {"user_id": "carol", "updated_at": "soon"}}
                    ).encode())])
                finally:
                    producer.close(timeout=5)
                db.execute("UPDATE items SET title = 'Trail shoe 2' WHERE item_id = 'i1'")
                wait_until(lambda: lake_items()["i1"]["title"] == "Trail shoe 2", "a change after the bad ones")
                dead = wait_until(lambda: (t := lake.read_arrow(DEAD_LETTER).to_pylist()) and len(t) == 3 and t,
                                  "the dead letters")
                assert query.isActive and query.exception() is None
            finally:
                query.stop()
        assert matches()
    assert sorted(d["reason"] for d in dead) == ["cdc_invalid:after.price", "cdc_invalid:after.updated_at",
                                                 "malformed_json"]
    assert all(b"carol" not in d["raw"] for d in dead)  # a user's raw id is redacted
    assert traces(Path(lake.root), [b"alice@example.com"]) == []  # pseudonymised before the lake


def test_the_database_password_is_in_no_answer_of_connect_and_no_file_others_can_read(cdc_settings):
    settings = cdc_settings
    password = urlsplit(settings.operational_db).password
    assert password and len(password) >= 24
    with EmbeddedPostgres(settings):
        address = f"{settings.embedded_postgres_host}:{settings.embedded_postgres_port}"
        for url, kwargs in [(f"postgresql://lambdarec@{address}/operational", {}),
                            (f"postgresql://lambdarec:wrong@{address}/operational", {}),
                            (f"postgresql://postgres:wrong@{address}/postgres", {}),
                            (f"postgresql://lambdarec:wrong@{address}/operational", {"replication": "database"})]:
            with pytest.raises(psycopg.OperationalError, match="password"):
                psycopg.connect(url, connect_timeout=5, **kwargs)
        with KafkaConnect(settings) as connect:  # RUNNING: Debezium logged in with the password from the file
            config = httpx.get(f"{connect.rest}/connectors/{CONNECTOR}/config", timeout=10).json()
            assert config["database.password"] == f"${{file:{secrets_path(settings)}:database.password}}"
            answers = [httpx.get(f"{connect.rest}{path}", timeout=10).text for path in (
                f"/connectors/{CONNECTOR}", f"/connectors/{CONNECTOR}/tasks", f"/connectors/{CONNECTOR}/status",
                "/connectors?expand=info&expand=status")]
            assert all(CONNECTOR in answer for answer in answers)
            assert not [answer for answer in answers if password in answer]
            holders = {Path(settings.root) / p for p in traces(Path(settings.root), [password.encode()])}
            holders |= {Path(settings.embedded_postgres_dir) / p
                        for p in traces(Path(settings.embedded_postgres_dir), [password.encode()])}
    assert holders == {settings.secrets_root / "postgres-lambdarec.password", secrets_path(settings)}
    assert {oct(path.stat().st_mode & 0o777) for path in holders} == {"0o600"}
    assert oct(settings.secrets_root.stat().st_mode & 0o777) == "0o700"
