"""The erasure job: carry out pending erasure requests in every layer, then write one receipt each.

``lambdarec erase USER_ID`` records a request and runs this job on it;
``spark-submit batch/erasure.py`` works through every pending request (the API's
too), and ``--follow`` keeps doing so. Each request, in order:

1. waits until the speed job has stored every event sent before the request (its
   events checkpoint is past the request's offsets of the ``events`` topic, and past
   the user's stored consent changes: ``speed.consent`` never reads those again) and
   its features query has read them;
2. appends the speed-state marker (``lambdarec.privacy``) and waits until the
   features query has read it: the user's state is cleared; then appends ticks
   until the features checkpoint keeps no state version from before the clearing
   (``lambdarec.speed_state_retention``);
3. deletes the user's rows from every table that holds them
   (``lambdarec.erasure_rows``: one keyed MERGE per table, so a re-run after a kill
   deletes nothing twice and finds the first run's counts in the table's history;
   the speed sinks may delete from their own tables first);
4. rebuilds the published bundles of models that held the user;
5. VACUUMs (``LITE``: only files the log removed, never a writer's files in
   flight) every table it deleted from, with ``erasure_vacuum_retention_hours``;
6. nulls the pseudonym in ``privacy_requests`` and vacuums the files that held it;
7. reads how long each Kafka topic keeps the user's records (from the brokers) and
   whether the CDC users topic holds them, and appends the receipt
   (``batch.erasure_places``), once, keyed by the request: a request is
   pending until then. A run after a kill between 6 and 7 finds every delete in
   the tables' histories and writes the receipt without the pseudonym.

A request the speed job does not catch up with in ``erasure_speed_wait_s``, or
whose topics cannot be read, stays pending and is retried by the next run.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from batch import erasure_places, topic_retention
from lambdarec import audit, erasure_rows, privacy, registry, speed_state_retention
from lambdarec.checkpoint_files import CheckpointFiles, speed_checkpoint
from lambdarec.kafka_io import platform_topics
from lambdarec.key_fingerprint import verify_pseudonym_key
from lambdarec.lake import Lake, session_conf, spark_path
from lambdarec.model_bundle import model_bundle_exists, publish_model_bundle, remove_model_bundle
from lambdarec.settings import Settings
from schemas.cdc import USERS, topic as cdc_topic
from schemas.tables import (
    EVENTS,
    PRIVACY_RECEIPTS,
    PRIVACY_REQUESTS,
    USER_CONSENT,
    USER_FACTORS,
    TableSpec,
)

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger("lambdarec.batch.erasure")
DELTA_END_INDEX = 2**63 - 1 - 100  # DeltaSourceOffset.END_INDEX: the offset at the end of a version
WAIT_STEP_S = 0.5


class NotReady(RuntimeError):
    """A part the erasure depends on is behind or unreachable; the request stays pending and is retried."""


class SpeedNotCaughtUp(NotReady):
    """The speed job has not stored or read what the erasure must wait for."""


class TopicsUnreadable(NotReady):
    """The brokers did not say how long their topics keep records, so no receipt can state it."""


def run(spark: "SparkSession", settings: Settings) -> list[dict[str, Any]]:
    """Complete every pending request, oldest first; their receipts."""
    return [erase(spark, settings, request) for request in privacy.pending(Lake(settings))]


def erase(spark: "SparkSession", settings: Settings, request: privacy.ErasureRequest) -> dict[str, Any]:
    """Carry out one request and return its receipt (the existing one if a run before wrote it)."""
    lake = Lake(settings)
    request_id = request.request_id
    done = privacy.receipt(lake, request_id)
    if done is not None:
        return done
    started = datetime.now(UTC)
    clearing = _wait_for_speed(spark, settings, request)
    speed_done_at = datetime.now(UTC)
    removed, delete_versions, held = _delete_everywhere(spark, settings, request)
    if clearing is not None:
        delete_versions["speed_state"] = clearing.marker_version
    hours = settings.erasure_vacuum_retention_hours
    vacuums = _vacuum(spark, lake, [spec for spec in erasure_rows.TABLES if removed.get(spec.name)], hours)
    vacuumed_at = datetime.now(UTC)
    vacuums.update(_forget_pseudonym(spark, lake, request_id))
    forgotten_at = datetime.now(UTC)
    topic_places, places = _outside_the_lake(settings, lake, request, clearing, speed_done_at)
    places = [*erasure_places.lake_tables(removed, delete_versions, vacuums, vacuumed_at, settings),
              erasure_places.request_log(forgotten_at, vacuums.get(PRIVACY_REQUESTS.name), settings),
              erasure_places.models(lake, settings, delete_versions.get(EVENTS.name), held, vacuumed_at),
              *places]
    _write_receipt(lake, request, {
        "request_id": request_id, "subject_hash": request.subject_hash,
        "received_at": request.requested_at, "completed_at": datetime.now(UTC),
        "removed": removed, "delete_versions": delete_versions, "vacuum_versions": vacuums,
        "vacuum_retention_hours": hours, "kafka_expires_by": erasure_places.kafka_expires_by(topic_places),
        "places": places,
    })
    done = privacy.receipt(lake, request_id)
    assert done is not None
    _log("erased", request_id=request_id, seconds=round((datetime.now(UTC) - started).total_seconds(), 3),
         removed=removed)
    return done


# -- 1 and 2: the speed layer ------------------------------------------------------


def _wait_for_speed(spark: "SparkSession", settings: Settings, request: privacy.ErasureRequest
                    ) -> erasure_places.SpeedClearing | None:
    """Steps 1 and 2 (None without a features query). Needs no pseudonym: a re-run after it was nulled
    finds the marker it appended and checks the state again."""
    lake = Lake(settings)
    events = CheckpointFiles(spark, speed_checkpoint(settings, "events"))
    if events.list("offsets"):
        _wait(settings, "the speed job to store the events sent before the request",
              lambda: _past(events.committed_offsets(), settings.topic_events, request.events_end_offsets))
        changes = _consent_ends(lake, request)
        _wait(settings, "the speed job to commit past the user's consent changes",
              lambda: _past(events.committed_offsets(), settings.topic_consent, changes))
    features = CheckpointFiles(spark, speed_checkpoint(settings, "features"))
    if not features.list("offsets"):
        return None
    events_version = lake.version(EVENTS)
    events_id, requests_id = (str(lake.open(spec).metadata().id) for spec in (EVENTS, PRIVACY_REQUESTS))
    _wait(settings, "the speed features query to read those events",
          lambda: _read(features.committed_offsets(), events_id, events_version))
    marker = privacy.record_speed_marker(lake, request)
    if marker is None:
        raise RuntimeError(f"the speed-state marker of request {request.request_id} is beyond the history searched")
    _wait(settings, "the speed features query to clear the user's state",
          lambda: _read(features.committed_offsets(), requests_id, marker))
    read_at = datetime.now(UTC)
    batch = speed_state_retention.latest_batch(features)
    assert batch is not None  # it has just committed the batch that read the marker, or a later one
    cleared = batch + 1  # the state version a batch writes is its id + 1
    _wait(settings, f"the features checkpoint to drop the state versions before {cleared} (does the speed job run "
          f"with speed_state_versions_kept={settings.speed_state_versions_kept}?)",
          _ticking(settings, lake, request, features, requests_id, cleared))
    return erasure_places.SpeedClearing(marker, read_at, cleared, datetime.now(UTC))


def _ticking(settings: Settings, lake: Lake, request: privacy.ErasureRequest, features: CheckpointFiles,
             requests_id: str, cleared: int) -> Callable[[], bool]:
    """A check for ``_wait``: whether no state version before ``cleared`` is left; while the query has not
    run enough batches since, it appends a tick (and waits for it to be read) before answering."""
    kept = settings.speed_state_versions_kept
    ticked: list[int] = []

    def gone() -> bool:
        oldest = speed_state_retention.oldest_version(features)
        if oldest is not None and oldest >= cleared:
            return True
        latest = speed_state_retention.latest_batch(features)
        behind = latest is not None and latest + 2 - kept < cleared  # it keeps versions latest+2-kept .. latest+1
        if behind and (not ticked or _read(features.committed_offsets(), requests_id, ticked[-1])):
            ticked.append(privacy.record_speed_tick(lake, request))
        return False

    return gone


def _consent_ends(lake: Lake, request: privacy.ErasureRequest) -> dict[int, int]:
    """Per consent partition, the offset after the user's last stored change. Once the events query has
    committed past it, its consent state never reads those changes again (``speed.consent``), so they
    cannot come back after their rows are deleted. Empty once the pseudonym is nulled: the rows are gone."""
    if request.user_id is None or not lake.exists(USER_CONSENT):
        return {}
    rows = lake.read_arrow(USER_CONSENT, filter=pc.field("user_id") == request.user_id).to_pylist()
    ends: dict[int, int] = {}
    for row in rows:
        ends[row["kafka_partition"]] = max(ends.get(row["kafka_partition"], 0), row["kafka_offset"] + 1)
    return ends


def _wait(settings: Settings, what: str, done: Callable[[], bool]) -> None:
    deadline = time.monotonic() + settings.erasure_speed_wait_s
    while not done():
        if time.monotonic() > deadline:
            raise SpeedNotCaughtUp(f"waited {settings.erasure_speed_wait_s:.0f} s for {what}; is the speed job running?")
        time.sleep(WAIT_STEP_S)


def _past(offsets: list[Any] | None, topic: str, ends: dict[int, int]) -> bool:
    """Whether a Kafka source's committed offsets reach ``ends`` in every partition."""
    source = (offsets or [None])[0]
    if not isinstance(source, dict):
        return not any(ends.values())
    committed = source.get(topic, {})
    return all(int(committed.get(str(partition), 0)) >= end for partition, end in ends.items())


def _read(offsets: list[Any] | None, table_id: str, version: int | None) -> bool:
    """Whether the query's Delta source on table ``table_id`` has read through ``version``."""
    if version is None:
        return True
    for source in offsets or []:
        if isinstance(source, dict) and source.get("reservoirId") == table_id:
            at, index = int(source["reservoirVersion"]), int(source["index"])
            return at > version or (at == version and index >= DELTA_END_INDEX)
    return False


# -- 3 and 4: the lake --------------------------------------------------------------


def _delete_everywhere(spark: "SparkSession", settings: Settings, request: privacy.ErasureRequest
                       ) -> tuple[dict[str, int], dict[str, int], list[int]]:
    """Steps 3 and 4: rows removed per table, the version of each table's DELETE, and the model versions
    that held the user. A table a speed sink writes may take a few tries (``lambdarec.erasure_rows``),
    within ``erasure_speed_wait_s``. Once the pseudonym is nulled every delete is done: they are read
    from the tables' histories."""
    lake = Lake(settings)
    pseudonym = request.user_id
    if pseudonym is None or erasure_rows.done(lake, request.request_id, USER_FACTORS) is not None:
        models = set(registry.current_statuses(lake))  # a re-run: their rows are gone, so any model may have
    else:
        models = set(lake.read_arrow(USER_FACTORS, filter=pc.field("user_id") == pseudonym)
                     .column("model_version").to_pylist())
    removed: dict[str, int] = {}
    versions: dict[str, int] = {}
    for spec in erasure_rows.TABLES:
        if not lake.exists(spec):
            continue
        found = (erasure_rows.done(lake, request.request_id, spec) if pseudonym is None
                 else _erase_table(spark, settings, request, spec))
        if found is not None:  # None: a table made after the user's rows went, which holds none of them
            versions[spec.name], removed[spec.name] = found
    if pseudonym is not None:
        _rebuild_bundles(lake, sorted(models))
    return removed, versions, sorted(models)


def _erase_table(spark: "SparkSession", settings: Settings, request: privacy.ErasureRequest, spec: TableSpec) -> tuple[int, int]:
    """(version, rows) of the table's erasure commit, trying until it is in (by us or by a speed sink)."""
    found: list[tuple[int, int]] = []

    def attempt() -> bool:
        result = erasure_rows.erase_rows(spark, Lake(settings), request, spec)
        found.extend([result] if result is not None else [])
        return bool(found)

    _wait(settings, f"concurrent writes to {spec.name} to let the erasure in", attempt)
    return found[0]


def _rebuild_bundles(lake: Lake, models: list[int]) -> None:
    """Rebuild the published bundles of models that held the user, from their tables without the user."""
    statuses = registry.current_statuses(lake)
    for version in models:
        row = statuses.get(version)
        if row is None or row["status"] != registry.PUBLISHED:
            remove_model_bundle(lake.settings, version)  # serving rebuilds one it needs
            continue
        if model_bundle_exists(lake.settings, version):
            publish_model_bundle(lake.settings, registry.parsed(row))


# -- 5, 6 and 7: vacuum, the request log and the receipt ---------------------------------


def _vacuum(spark: "SparkSession", lake: Lake, specs: list[TableSpec], retention_hours: int) -> dict[str, int]:
    """``VACUUM ... LITE``: remove the files the log dropped; the version of each ``VACUUM END``."""
    versions: dict[str, int] = {}
    with session_conf(spark, {"spark.databricks.delta.retentionDurationCheck.enabled": "false"}):
        for spec in specs:
            before = lake.version(spec)
            spark.sql(f"VACUUM delta.`{spark_path(lake.uri(spec))}` LITE RETAIN {int(retention_hours)} HOURS").collect()
            for entry in lake.open(spec).history(4):
                if entry["version"] > (before or -1) and entry.get("operation") == "VACUUM END":
                    versions[spec.name] = entry["version"]
                    break
    return versions


def _outside_the_lake(settings: Settings, lake: Lake, request: privacy.ErasureRequest,
                      clearing: erasure_places.SpeedClearing | None, speed_done_at: datetime
                      ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Step 7's places beyond the lake: (the topics that carry the pseudonym, every place outside the lake).

    Each topic's retention is read from its brokers. The pseudonym's records were all written by the
    request (``events``, ``consent``) or by the time the speed layer let go of the user (``speed-updates``).
    """
    from kafka.errors import KafkaError

    users_topic = cdc_topic(settings.cdc_topic_prefix, USERS.table)
    carried = platform_topics(settings)
    try:
        retention = topic_retention.read(settings, [*carried, users_topic])
        cdc = (erasure_places.read_cdc_users(settings, users_topic, request.subject_hash)
               if retention[users_topic] is not None else None)
    except (KafkaError, LookupError) as exc:
        raise TopicsUnreadable(f"the brokers' topic settings could not be read ({exc})") from exc
    written = {topic: request.requested_at for topic in carried}
    written[settings.topic_speed_updates] = speed_done_at
    topics = erasure_places.topics(retention, written)
    checkpoint = speed_checkpoint(settings, "features")
    return topics, [erasure_places.speed_state(clearing, checkpoint),
                    erasure_places.serving(settings, request.requested_at), *topics,
                    *erasure_places.cdc_users(users_topic, retention[users_topic], cdc)]


def _write_receipt(lake: Lake, request: privacy.ErasureRequest, receipt: dict[str, Any]) -> None:
    for name in ("removed", "delete_versions", "vacuum_versions"):
        receipt[name] = list(receipt[name].items())
    lake.ensure(PRIVACY_RECEIPTS)
    lake.add_missing_columns(PRIVACY_RECEIPTS)  # a lake from a release whose receipts had no places
    lake.append_arrow(PRIVACY_RECEIPTS, pa.Table.from_pylist([receipt], schema=PRIVACY_RECEIPTS.schema),
                      app_id=f"privacy-receipt-{request.request_id}", txn_version=0)


def _forget_pseudonym(spark: "SparkSession", lake: Lake, request_id: str) -> dict[str, int]:
    """Step 6: null the pseudonym in the request's rows (by request id, never by pseudonym) and vacuum the
    files that held it (again, on a re-run: a kill may have come between the two); the VACUUM END version."""
    from pyspark.sql import functions as F

    if lake.read_arrow(PRIVACY_REQUESTS, filter=(pc.field("request_id") == request_id)
                       & pc.field("user_id").is_valid()).num_rows:
        from delta.tables import DeltaTable

        source = spark.createDataFrame([(request_id,)], "request_id string")
        (DeltaTable.forPath(spark, spark_path(lake.uri(PRIVACY_REQUESTS))).alias("t")
         .merge(source.alias("s"), "t.request_id = s.request_id")
         .whenMatchedUpdate(set={"user_id": F.lit(None).cast("string")}).execute())
    return _vacuum(spark, lake, [PRIVACY_REQUESTS], lake.settings.erasure_vacuum_retention_hours)


def _log(event: str, **fields: Any) -> None:
    log.info(json.dumps({"event": event, **fields}, default=str))


# -- entry points --------------------------------------------------------------------


def follow(spark: "SparkSession", settings: Settings, stop: Callable[[], bool] = lambda: False) -> None:
    """Process requests as they arrive until ``stop()``; a request the speed job lags on is retried."""
    while not stop():
        try:
            run(spark, settings)
        except NotReady as exc:
            _log("erasure_waiting", reason=str(exc))
        time.sleep(settings.erasure_poll_s)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("user_id", nargs="?", help="The raw user id to erase (pseudonymised here, never stored). "
                        "Without it, complete the pending requests.")
    parser.add_argument("--request-id", help="Idempotency key: repeating it repeats nothing (default: a new id).")
    parser.add_argument("--follow", action="store_true", help="Keep processing requests as they arrive.")


def command(args: argparse.Namespace, settings: Settings) -> int:
    """``lambdarec erase``: record the request (if a user is given), then run this job through spark-submit."""
    from lambdarec.pseudonym import pseudonymise
    from lambdarec.submit import run_spark_job

    verify_pseudonym_key(settings, "erase")  # under another key the user is not found: no request, no receipt
    if args.user_id:
        request_id = privacy.check_request_id(args.request_id or privacy.new_request_id())
        Lake(settings).ensure(PRIVACY_REQUESTS)
        pseudonym = pseudonymise(args.user_id, settings.pseudonym_key)
        privacy.record_erasure(Lake(settings), pseudonym, request_id, "cli", privacy.events_end_offsets(settings))
        audit.append(Lake(settings), [audit.Entry(action="user.erase", outcome="pending", source="cli",
                                                  subject=audit.subject_of(pseudonym),
                                                  detail=f"request {request_id} by {audit.operator()}")])
        print(json.dumps({"request_id": request_id}), flush=True)
    return run_spark_job(settings, "batch/erasure.py", ["--follow"] if args.follow else [])


def main(argv: list[str]) -> int:
    """spark-submit entry point: wiring only. Prints each receipt as a JSON line."""
    from lambdarec.spark import build_spark

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(prog="batch/erasure.py", description=__doc__.splitlines()[0])
    parser.add_argument("--follow", action="store_true", help="Keep processing requests as they arrive.")
    args = parser.parse_args(argv)
    settings = Settings()
    verify_pseudonym_key(settings, "erase")
    spark = build_spark(settings, "lambdarec-erasure")
    try:
        if args.follow:
            follow(spark, settings)
            return 0
        for receipt in run(spark, settings):
            print(json.dumps(receipt, default=str), flush=True)
    except NotReady as exc:
        _log("erasure_waiting", reason=str(exc))
        return 3
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
