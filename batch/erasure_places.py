"""Every place an erased user's data was, and when each is gone: the body of an erasure's receipt.

Each place says how it stands (``status``) and when it is gone, and its detail
says what was checked and where the time comes from. A receipt claims only
what the erasure job did or read:

- ``removed``: gone, at ``gone_by`` (the lake's tables, the speed state, the
  request log's pseudonym);
- ``expires``: gone by ``gone_by``, a bound the job computed but cannot hasten
  (a Kafka topic, from the retention its brokers report; serving replicas);
- ``operator``: lambdarec does not own it; it is gone within ``within_ms`` (null:
  no bound known) of the action ``after`` (the operational database, and the CDC
  topic fed from it);
- ``kept``: nothing bounds it (a topic without time-based deletion);
- ``not_held``: checked, and nothing of the user is there.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from kafka.errors import KafkaTimeoutError

from lambdarec import privacy, registry
from lambdarec.lake import Lake
from lambdarec.settings import Settings
from batch.topic_retention import TopicRetention
from schemas.cdc import DELETE, USERS

REMOVED, EXPIRES, OPERATOR, KEPT, NOT_HELD = "removed", "expires", "operator", "kept", "not_held"
STATUSES = (REMOVED, EXPIRES, OPERATOR, KEPT, NOT_HELD)
EXPIRED_MODEL = "expired"  # batch.maintenance's status of a model whose factor data it deleted
CDC_READ_TIMEOUT_MS = 500
CDC_READ_DEADLINE_S = 120


@dataclass(frozen=True)
class SpeedClearing:
    """How the speed layer let go of the user: what the erasure job waited for and saw."""

    marker_version: int  # the privacy_requests version of the marker the features query read
    read_at: datetime  # when the features query had read it: nothing of the user was pushed after
    cleared_version: int  # the features state version the clearing is in, or a later one
    gone_at: datetime  # when the checkpoint kept no state version older than cleared_version


@dataclass(frozen=True)
class CdcRecords:
    """What the CDC users topic holds of one subject, read through."""

    records: int
    newest_at: datetime | None
    deleted: bool  # the newest record is a delete, or its tombstone


def place(name: str, status: str, detail: str, gone_by: datetime | None = None, after: str | None = None,
          within_ms: int | None = None) -> dict[str, Any]:
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}")
    return {"place": name, "status": status, "gone_by": gone_by, "after": after, "within_ms": within_ms,
            "detail": detail}


def lake_tables(removed: dict[str, int], delete_versions: dict[str, int], vacuum_versions: dict[str, int],
                vacuumed_at: datetime, settings: Settings) -> list[dict[str, Any]]:
    """One place per table the erasure deleted from (or found nothing in)."""
    hours = settings.erasure_vacuum_retention_hours
    found = []
    for table, rows in removed.items():
        if not rows:
            found.append(place(f"lake:{table}", NOT_HELD, f"no row of the user (checked at version "
                                                          f"{delete_versions.get(table)})"))
            continue
        deleted = f"{rows} rows deleted at version {delete_versions.get(table)}"
        if hours == 0:
            found.append(place(f"lake:{table}", REMOVED, f"{deleted}; the files that held them vacuumed (VACUUM END at "
                                                         f"version {vacuum_versions.get(table)})", gone_by=vacuumed_at))
            continue
        found.append(place(f"lake:{table}", KEPT, (
            f"{deleted}; the files that held them stay until a VACUUM runs with a retention they have outlived "
            f"(erasure_vacuum_retention_hours={hours}, the maintenance DAG's vacuum_retention_hours="
            f"{settings.vacuum_retention_hours}): no time is promised")))
    return found


def request_log(forgotten_at: datetime, vacuum_version: int | None, settings: Settings) -> dict[str, Any]:
    nulled = "the request keeps only the one-way subject hash: its pseudonym was nulled"
    if settings.erasure_vacuum_retention_hours:
        return place("lake:privacy_requests", KEPT, f"{nulled}; the files that held it stay until a VACUUM runs with "
                     "a retention they have outlived (erasure_vacuum_retention_hours="
                     f"{settings.erasure_vacuum_retention_hours}): no time is promised")
    return place("lake:privacy_requests", REMOVED, f"{nulled} and the files that held it vacuumed (VACUUM END at "
                 f"version {vacuum_version})", gone_by=forgotten_at)


def speed_state(clearing: SpeedClearing | None, checkpoint: str) -> dict[str, Any]:
    if clearing is None:
        return place("speed_state", NOT_HELD, f"no features query has a checkpoint at {checkpoint}")
    return place("speed_state", REMOVED, (
        f"the features query cleared the user's state on reading the marker (privacy_requests version "
        f"{clearing.marker_version}); its checkpoint at {checkpoint} keeps no state version before "
        f"{clearing.cleared_version} (checked), and each version is compacted as it is committed"),
        gone_by=clearing.gone_at)


def serving(settings: Settings, requested_at: datetime) -> dict[str, Any]:
    return place("serving", EXPIRES, (
        "not checked by the erasure job: the replica that took DELETE /v1/users/{id} forgot the user at once; "
        f"every other replica takes erasures from the privacy tables at its next poll (serve_model_poll_s="
        f"{settings.serve_model_poll_s} s). A model trained before the erasure stays mapped in memory, with the "
        "user's row unused, until a newer model is loaded"),
        gone_by=requested_at + timedelta(seconds=settings.serve_model_poll_s))


def topics(retention: dict[str, TopicRetention | None], last_writes: dict[str, datetime]) -> list[dict[str, Any]]:
    """The topics that carry the pseudonym: each record of the user written by ``last_writes[topic]``."""
    found = []
    for topic, written in last_writes.items():
        config = retention.get(topic)
        if config is None:
            found.append(place(f"kafka:{topic}", NOT_HELD, "no such topic on the brokers"))
            continue
        gone = config.gone_by(written)
        detail = f"the user's records, written by {written.isoformat()}, are {config.describe()}"
        found.append(place(f"kafka:{topic}", EXPIRES if gone else KEPT, detail, gone_by=gone))
    return found


def cdc_users(topic: str, config: TopicRetention | None, held: CdcRecords | None) -> list[dict[str, Any]]:
    """The CDC users topic (raw ids) and the operational database it comes from; none without that topic."""
    if config is None or held is None:
        return []
    system_of_record = (
        "the operational database is the system of record for users, and lambdarec does not delete there: delete "
        "the user in it. Debezium then writes a delete (and a tombstone) to the CDC topic, and the dimensions query "
        "keeps their profile out of the lake; until then any change to their row brings their profile back")
    database = place("operational_db", OPERATOR, f"{system_of_record}. The database's own files keep a deleted row "
                     "until its VACUUM and WAL recycling", after="the operator deletes the user there")
    bound = config.bound_ms()
    if held.records == 0:
        return [place(f"kafka:{topic}", NOT_HELD, f"read through: no record of the user ({config.describe()})"),
                database]
    if held.deleted and held.newest_at is not None:
        gone = config.gone_by(held.newest_at)
        return [place(f"kafka:{topic}", EXPIRES if gone else KEPT,
                      f"{held.records} records hold the user's raw id; the newest, a delete at "
                      f"{held.newest_at.isoformat()}, and all before it are {config.describe()}", gone_by=gone),
                place("operational_db", OPERATOR, "the CDC topic's newest record of the user is their deletion in the "
                      "operational database, whose files keep the row until its VACUUM and WAL recycling",
                      after="the operational database's VACUUM and WAL recycling")]
    return [place(f"kafka:{topic}", OPERATOR if bound is not None else KEPT,
                  f"{held.records} records hold the user's raw id, who is still in the operational database: "
                  f"{system_of_record}. After that delete they are {config.describe()}",
                  after="the operator deletes the user in the operational database", within_ms=bound),
            database]


def models(lake: Lake, settings: Settings, events_delete_version: int | None, held_user: Sequence[int],
           vacuumed_at: datetime) -> dict[str, Any]:
    """The models: the user's own rows are gone; what their events taught the others stays until expired."""
    statuses = registry.current_statuses(lake)
    taught = sorted(version for version, row in statuses.items()
                    if row["status"] != EXPIRED_MODEL and row["source_events_version"] is not None
                    and (events_delete_version is None or row["source_events_version"] < events_delete_version))
    first = privacy.first_model_without(lake, events_delete_version)
    return place("models", REMOVED, (
        f"the user's rows of user_factors, user_ids and model_interactions are deleted from model versions "
        f"{sorted(held_user)} and their published bundles rebuilt; model versions {taught} were trained on events "
        f"before the erasure: their item factors, which hold no id of the user, stay until the maintenance DAG "
        f"expires them (model_retention={settings.model_retention} newer versions); the first model trained "
        f"without the user is {first if first is not None else 'not trained yet'}"), gone_by=vacuumed_at)


def kafka_expires_by(topic_places: Iterable[dict[str, Any]]) -> datetime | None:
    """When the last copy on the topics that carry the pseudonym (``topics``) is gone (None: one keeps it)."""
    times = [p["gone_by"] for p in topic_places if p["status"] != NOT_HELD]
    return None if not times or None in times else max(times)


def read_cdc_users(settings: Settings, topic: str, subject: str) -> CdcRecords:
    """Read the CDC users topic through and find the subject's records: the raw id in each key,
    pseudonymised as the dimensions query does, has the subject's hash."""
    from kafka import TopicPartition

    from lambdarec.kafka_io import make_consumer
    from lambdarec.pseudonym import pseudonymise

    consumer = make_consumer(settings.bootstrap_servers)
    records, newest, deleted = 0, None, False
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        starts = consumer.beginning_offsets(partitions) if partitions else {}
        todo = {tp: end for tp, end in (consumer.end_offsets(partitions) if partitions else {}).items()
                if end > starts[tp]}
        consumer.assign(list(todo))
        for tp in todo:
            consumer.seek(tp, starts[tp])
        deadline = time.monotonic() + CDC_READ_DEADLINE_S
        while todo:
            if time.monotonic() > deadline:
                raise KafkaTimeoutError(f"{topic} was not read through in {CDC_READ_DEADLINE_S} s")
            for batch in consumer.poll(timeout_ms=CDC_READ_TIMEOUT_MS).values():
                for record in batch:
                    raw = _user_key(record.key)
                    if raw and privacy.subject_hash(pseudonymise(raw, settings.pseudonym_key)) == subject:
                        records += 1
                        at = datetime.fromtimestamp(record.timestamp / 1000, UTC)
                        if newest is None or at >= newest:
                            newest, deleted = at, _is_delete(record.value)
            for tp in [tp for tp, end in todo.items() if consumer.position(tp) >= end]:
                todo.pop(tp)
                consumer.pause(tp)
    finally:
        consumer.close()
    return CdcRecords(records, newest, deleted)


def _user_key(key: bytes | None) -> str | None:
    """The raw user id in a CDC users record's key (``{"user_id": ...}``, Debezium's JSON without schemas)."""
    try:
        value = json.loads(key or b"")
    except ValueError:
        return None
    user = value.get(USERS.key) if isinstance(value, dict) else None
    return user if isinstance(user, str) and user else None


def _is_delete(value: bytes | None) -> bool:
    if value is None:
        return True  # the tombstone after a delete
    try:
        envelope = json.loads(value)
    except ValueError:
        return False
    return isinstance(envelope, dict) and envelope.get("op") == DELETE
