"""The erasure job: carry out pending erasure requests in every layer, then write one receipt each.

``lambdarec erase USER_ID`` records a request and runs this job on it;
``spark-submit batch/erasure.py`` works through every pending request (the API's
too), and ``--follow`` keeps doing so. Each request, in order:

1. waits until the speed job has stored every event sent before the request (its
   events checkpoint is past the request's offsets of the ``events`` topic) and its
   features query has read them;
2. appends the speed-state marker (``lambdarec.privacy``) and waits until the
   features query has read it: the user's state is cleared, in the checkpoint;
3. deletes the user's rows from every table that holds them
   (``lambdarec.erasure_rows``: one keyed MERGE per table, so a re-run after a kill
   deletes nothing twice and finds the first run's counts in the table's history;
   the speed sinks may delete from their own tables first);
4. rebuilds the published bundles of models that held the user;
5. VACUUMs (``LITE``: only files the log removed, never a writer's files in
   flight) every table it deleted from, with ``erasure_vacuum_retention_hours``;
6. appends the receipt (once, keyed by the request) and nulls the pseudonym in
   ``privacy_requests``, whose old files it vacuums too.

A request the speed job does not catch up with in ``erasure_speed_wait_s`` stays
pending and is retried by the next run.
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

from lambdarec import erasure_rows, privacy, registry
from lambdarec.checkpoint_files import CheckpointFiles, speed_checkpoint
from lambdarec.lake import Lake, session_conf, spark_path
from lambdarec.model_bundle import model_bundle_exists, publish_model_bundle, remove_model_bundle
from lambdarec.settings import Settings
from schemas.tables import (
    EVENTS,
    PRIVACY_RECEIPTS,
    PRIVACY_REQUESTS,
    USER_FACTORS,
    TableSpec,
)

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger("lambdarec.batch.erasure")
DELTA_END_INDEX = 2**63 - 1 - 100  # DeltaSourceOffset.END_INDEX: the offset at the end of a version
WAIT_STEP_S = 0.5


class SpeedNotCaughtUp(RuntimeError):
    """The speed job has not stored or read what the erasure must wait for; the request stays pending."""


def run(spark: "SparkSession", settings: Settings) -> list[dict[str, Any]]:
    """Complete every pending request, oldest first; their receipts."""
    return [erase(spark, settings, request) for request in privacy.pending(Lake(settings))]


def erase(spark: "SparkSession", settings: Settings, request: dict[str, Any]) -> dict[str, Any]:
    """Carry out one request and return its receipt (the existing one if a run before wrote it)."""
    lake = Lake(settings)
    request_id = request["request_id"]
    done = privacy.receipt(lake, request_id)
    if done is None:
        received = datetime.now(UTC)
        delete_versions: dict[str, int] = {}
        marker = _wait_for_speed(spark, settings, request)
        if marker is not None:
            delete_versions["speed_state"] = marker
        removed, versions = _delete_everywhere(spark, settings, request)
        delete_versions.update(versions)
        vacuums = _vacuum(spark, lake, [spec for spec in erasure_rows.TABLES if removed.get(spec.name)],
                          settings.erasure_vacuum_retention_hours)
        _write_receipt(lake, request, {
            "request_id": request_id, "subject_hash": request["subject_hash"],
            "received_at": request["requested_at"], "completed_at": datetime.now(UTC),
            "removed": removed, "delete_versions": delete_versions, "vacuum_versions": vacuums,
            "vacuum_retention_hours": settings.erasure_vacuum_retention_hours,
            "kafka_expires_by": privacy.kafka_expires_by(settings, request["requested_at"]),
        })
        done = privacy.receipt(lake, request_id)
        assert done is not None
        _log("erased", request_id=request_id, seconds=round((datetime.now(UTC) - received).total_seconds(), 3),
             removed=removed)
    _forget_pseudonym(spark, lake, request_id)
    return done


# -- 1 and 2: the speed layer ------------------------------------------------------


def _wait_for_speed(spark: "SparkSession", settings: Settings, request: dict[str, Any]) -> int | None:
    """Steps 1 and 2; the ``privacy_requests`` version of the marker (None without a features query)."""
    lake = Lake(settings)
    events = CheckpointFiles(spark, speed_checkpoint(settings, "events"))
    if events.list("offsets"):
        _wait(settings, "the speed job to store the events sent before the request",
              lambda: _past(events.committed_offsets(), settings.topic_events, request["events_end_offsets"]))
    features = CheckpointFiles(spark, speed_checkpoint(settings, "features"))
    if not features.list("offsets"):
        return None
    events_version = lake.version(EVENTS)
    events_id, requests_id = (str(lake.open(spec).metadata().id) for spec in (EVENTS, PRIVACY_REQUESTS))
    _wait(settings, "the speed features query to read those events",
          lambda: _read(features.committed_offsets(), events_id, events_version))
    marker = privacy.record_speed_marker(lake, request)
    if marker is None:
        raise RuntimeError(f"the speed-state marker of request {request['request_id']} is beyond the history searched")
    _wait(settings, "the speed features query to clear the user's state",
          lambda: _read(features.committed_offsets(), requests_id, marker))
    return marker


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


def _delete_everywhere(spark: "SparkSession", settings: Settings, request: dict[str, Any]
                       ) -> tuple[dict[str, int], dict[str, int]]:
    """Steps 3 and 4: rows removed per table and the version of each table's DELETE. A table a speed
    sink writes may take a few tries (``lambdarec.erasure_rows``), within ``erasure_speed_wait_s``."""
    lake = Lake(settings)
    pseudonym = request["user_id"]
    models = set(lake.read_arrow(USER_FACTORS, filter=pc.field("user_id") == pseudonym).column("model_version")
                 .to_pylist())
    if erasure_rows.done(lake, request["request_id"], USER_FACTORS) is not None:  # a re-run: rows already gone
        models = set(registry.current_statuses(lake))
    removed: dict[str, int] = {}
    versions: dict[str, int] = {}
    for spec in erasure_rows.TABLES:
        if not lake.exists(spec):
            continue
        versions[spec.name], removed[spec.name] = _erase_table(spark, settings, request, spec)
    _rebuild_bundles(lake, sorted(models))
    return removed, versions


def _erase_table(spark: "SparkSession", settings: Settings, request: dict[str, Any], spec: TableSpec) -> tuple[int, int]:
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


# -- 5 and 6: vacuum and receipt ------------------------------------------------------


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


def _write_receipt(lake: Lake, request: dict[str, Any], receipt: dict[str, Any]) -> None:
    for name in ("removed", "delete_versions", "vacuum_versions"):
        receipt[name] = list(receipt[name].items())
    lake.ensure(PRIVACY_RECEIPTS)
    lake.append_arrow(PRIVACY_RECEIPTS, pa.Table.from_pylist([receipt], schema=PRIVACY_RECEIPTS.schema),
                      app_id=f"privacy-receipt-{request['request_id']}", txn_version=0)


def _forget_pseudonym(spark: "SparkSession", lake: Lake, request_id: str) -> None:
    """Null the pseudonym in the request's rows (by request id, never by pseudonym) and vacuum the old files."""
    from pyspark.sql import functions as F

    if not lake.read_arrow(PRIVACY_REQUESTS, filter=(pc.field("request_id") == request_id)
                           & pc.field("user_id").is_valid()).num_rows:
        return
    from delta.tables import DeltaTable

    source = spark.createDataFrame([(request_id,)], "request_id string")
    (DeltaTable.forPath(spark, spark_path(lake.uri(PRIVACY_REQUESTS))).alias("t")
     .merge(source.alias("s"), "t.request_id = s.request_id")
     .whenMatchedUpdate(set={"user_id": F.lit(None).cast("string")}).execute())
    _vacuum(spark, lake, [PRIVACY_REQUESTS], lake.settings.erasure_vacuum_retention_hours)


def _log(event: str, **fields: Any) -> None:
    log.info(json.dumps({"event": event, **fields}, default=str))


# -- entry points --------------------------------------------------------------------


def follow(spark: "SparkSession", settings: Settings, stop: Callable[[], bool] = lambda: False) -> None:
    """Process requests as they arrive until ``stop()``; a request the speed job lags on is retried."""
    while not stop():
        try:
            run(spark, settings)
        except SpeedNotCaughtUp as exc:
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

    if args.user_id:
        request_id = privacy.check_request_id(args.request_id or privacy.new_request_id())
        Lake(settings).ensure(PRIVACY_REQUESTS)
        privacy.record_erasure(Lake(settings), pseudonymise(args.user_id, settings.pseudonym_key), request_id, "cli",
                               privacy.events_end_offsets(settings))
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
    spark = build_spark(settings, "lambdarec-erasure")
    try:
        if args.follow:
            follow(spark, settings)
            return 0
        for receipt in run(spark, settings):
            print(json.dumps(receipt, default=str), flush=True)
    except SpeedNotCaughtUp as exc:
        _log("erasure_waiting", reason=str(exc))
        return 3
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
