"""What an erasure's receipt says about the places it cannot empty at once: Kafka topics (by the retention their
brokers report), the CDC users topic and the operational database, and the speed state's checkpoint versions."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from batch import erasure_places
from batch.topic_retention import LONG_MAX, TopicRetention
from lambdarec import speed_state_retention

pytestmark = pytest.mark.unit

AT = dt.datetime(2026, 11, 30, 12, tzinfo=dt.UTC)
HOUR, DAY = 3_600_000, 86_400_000


def retention(**changes) -> TopicRetention:
    """A topic as Kafka 4.1 reports the platform's defaults: 1 day, 1-hour segments, CreateTime up to 1 h ahead."""
    return TopicRetention(**{"topic": "events", "cleanup_policy": "delete", "retention_ms": DAY,
                             "segment_ms": HOUR, "timestamp_type": "CreateTime", "timestamp_after_max_ms": HOUR,
                             "file_delete_delay_ms": 60_000, "check_interval_ms": 300_000, **changes})


def test_a_record_is_gone_within_segment_skew_retention_check_and_delete_delay():
    assert retention().gone_by(AT) == AT + dt.timedelta(hours=1 + 2 + 24, minutes=5 + 1)
    assert retention(timestamp_type="LogAppendTime").bound_ms() == HOUR + DAY + 300_000 + 60_000
    assert retention(retention_ms=-1).gone_by(AT) is None
    assert retention(cleanup_policy="compact").bound_ms() is None
    assert retention(cleanup_policy="compact,delete").bound_ms() is not None
    assert retention(timestamp_after_max_ms=LONG_MAX).bound_ms() is None  # a record stamped years ahead
    assert "retention.ms=86400000" in retention().describe() and "read from the topic" in retention().describe()


def test_each_topic_that_carries_the_pseudonym_is_listed_with_its_own_bound():
    short = retention(topic="speed-updates", retention_ms=HOUR)
    places = erasure_places.topics({"events": retention(), "speed-updates": short, "consent": None},
                                   {"events": AT, "speed-updates": AT + dt.timedelta(minutes=2), "consent": AT})
    by_name = {p["place"]: p for p in places}
    assert by_name["kafka:events"]["gone_by"] == retention().gone_by(AT)
    assert by_name["kafka:speed-updates"]["gone_by"] == short.gone_by(AT + dt.timedelta(minutes=2))
    assert by_name["kafka:consent"]["status"] == erasure_places.NOT_HELD
    assert erasure_places.kafka_expires_by(places) == retention().gone_by(AT)
    kept = erasure_places.topics({"events": retention(retention_ms=-1)}, {"events": AT})
    assert kept[0]["status"] == erasure_places.KEPT and erasure_places.kafka_expires_by(kept) is None


def test_the_cdc_users_topic_names_the_operator_until_the_user_is_deleted_in_the_database():
    topic, config = "cdc.public.users", retention(topic="cdc.public.users")
    held = erasure_places.cdc_users(topic, config, erasure_places.CdcRecords(3, AT, deleted=False))
    cdc, database = held
    assert cdc["status"] == erasure_places.OPERATOR and cdc["within_ms"] == config.bound_ms() and cdc["after"]
    assert database["place"] == "operational_db" and database["status"] == erasure_places.OPERATOR
    deleted = erasure_places.cdc_users(topic, config, erasure_places.CdcRecords(4, AT, deleted=True))
    assert deleted[0]["gone_by"] == config.gone_by(AT) and "VACUUM" in deleted[1]["after"]
    nothing = erasure_places.cdc_users(topic, config, erasure_places.CdcRecords(0, None, deleted=False))
    assert nothing[0]["status"] == erasure_places.NOT_HELD
    assert erasure_places.cdc_users(topic, None, None) == []  # no CDC topic: no operational database feeds the lake


def test_the_delete_record_and_its_tombstone_count_as_a_deletion():
    assert erasure_places._is_delete(None)
    assert erasure_places._is_delete(b'{"op": "d", "before": {"user_id": "x"}}')
    assert not erasure_places._is_delete(b'{"op": "u", "after": {"user_id": "x"}}')
    assert erasure_places._user_key(b'{"user_id": "raw-7"}') == "raw-7"
    assert erasure_places._user_key(b"not json") is None and erasure_places._user_key(None) is None


def test_lake_places_say_removed_with_the_vacuum_or_not_held(settings):
    places = erasure_places.lake_tables({"events": 4, "dead_letter": 0}, {"events": 7, "dead_letter": 3},
                                        {"events": 9}, AT, settings)
    events, dead = places
    assert (events["place"], events["status"], events["gone_by"]) == ("lake:events", erasure_places.REMOVED, AT)
    assert "version 7" in events["detail"] and "version 9" in events["detail"]
    assert dead["status"] == erasure_places.NOT_HELD
    # files kept past the erasure's VACUUM: no time promised, since only a later VACUUM removes them
    kept = erasure_places.lake_tables({"events": 4}, {"events": 7}, {"events": 9}, AT,
                                      settings.model_copy(update={"erasure_vacuum_retention_hours": 24}))[0]
    assert kept["status"] == erasure_places.KEPT and kept["gone_by"] is None
    with pytest.raises(ValueError, match="status"):
        erasure_places.place("x", "gone", "")


class LocalCheckpoint:
    """``CheckpointFiles.list`` over a local folder (the real class needs a JVM; the erasure test uses it)."""

    def __init__(self, root: Path):
        self.root = root

    def list(self, folder: str) -> list[str]:
        path = self.root / folder
        return sorted(p.name for p in path.iterdir()) if path.is_dir() else []


def test_the_oldest_state_version_is_the_oldest_any_partition_keeps(tmp_path):
    files = LocalCheckpoint(tmp_path)
    assert speed_state_retention.oldest_version(files) is None and speed_state_retention.latest_batch(files) is None
    for name in ("state/0/0/4.zip", "state/0/0/.4.zip.crc", "state/0/0/5.zip", "state/0/1/3_ab12.zip",
                 "state/0/1/SSTs/000009.sst", "state/0/_metadata/v2/0", "commits/6", "commits/.6.crc"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    assert speed_state_retention.oldest_version(files) == 3
    assert speed_state_retention.latest_batch(files) == 6
