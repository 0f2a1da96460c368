"""Test helpers for the serving layer: a published model written with pyarrow, a live server.

No Spark: the factor tables and registry rows are written directly, and the user
vectors are the exact ALS solution for the given item vectors (what Spark's
last half-iteration produces), so the stored and folded-in vectors agree.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
import numpy as np
import pyarrow as pa
import pytest
import uvicorn
from fastapi import FastAPI
from kafka import TopicPartition

from lambdarec.kafka_io import make_consumer, make_producer, send_all
from lambdarec.lake import Lake
from lambdarec.model_bundle import gram, publish_model_bundle
from lambdarec.processes import wait_for
from lambdarec.registry import PUBLISHED, record_status
from lambdarec.settings import Settings
from schemas.tables import ITEM_FACTORS, MODEL_INTERACTIONS, USER_FACTORS
from serving.app import create_app
from serving.foldin import fold_in
from serving.http_server import uvicorn_config
from tests.plugins.broker import free_port
from lambdarec.confidence import Confidence

# A test of what recommendations may hold runs with ALS served through the item index and through exact scoring.
INDEX_ON_AND_OFF = pytest.mark.parametrize("settings", [256, 0], indirect=True, ids=["index", "exact"])

REG, ALPHA = 0.1, 5.0
CONFIDENCE = Confidence("linear", ALPHA)  # rows without a scaling were linear
DEADLINE_S = 30.0


def _factor_table(version: int, kind: str, ids: list[str], vectors: list[np.ndarray]) -> pa.Table:
    """Rows of ``user_factors`` or ``item_factors``: index = position in ``ids``."""
    return pa.table(
        {
            "model_version": [version] * len(ids),
            f"{kind}_index": list(range(len(ids))),
            f"{kind}_id": ids,
            "factors": [v.tolist() for v in vectors],
        }
    )


def wait_until(condition: Callable[[], object], what: str, timeout_s: float = DEADLINE_S):
    """Poll ``condition`` until it returns something truthy; fail after the deadline."""
    return wait_for(condition, timeout_s, what)


@contextmanager
def serving(settings: Settings, app: FastAPI | None = None) -> Iterator[httpx.Client]:
    """uvicorn running ``app`` (a new one on ``settings`` if None) on a free loopback port, in this process,
    with the config and HTTP limits ``lambdarec serve`` runs with."""
    port = free_port()
    server = uvicorn.Server(uvicorn_config(settings, app or create_app(settings), "127.0.0.1", port))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, "uvicorn to start")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=DEADLINE_S) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(DEADLINE_S)


def logged_pids(log: str, route: str) -> set[int]:
    """The pids of the serving processes that logged a request to ``route`` (a route template) in ``log``."""
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    return {line["pid"] for line in lines if line.get("route") == route}


def read_topic(settings: Settings, topic: str, expected: int) -> list:
    """Every record on ``topic``, read with assign() from the beginning (no consumer group)."""
    consumer = make_consumer(settings.bootstrap_servers, auto_offset_reset="earliest")
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        records: list = []

        def drained():
            for batch in consumer.poll(timeout_ms=100).values():
                records.extend(batch)
            return len(records) >= expected

        wait_until(drained, f"{expected} records on {topic}")
        return records
    finally:
        consumer.close()


def speed_update(settings: Settings, user: str, batch_id: int, events_version: int, items: list[str]) -> None:
    """Push one user_interactions update to speed-updates, as the speed job would."""
    rows = [
        {"user_id": user, "item_id": item, "event_type": "purchase", "weight": 8.0,
         "occurred_at": "2024-05-02T00:00:00+00:00", "event_id": str(uuid.uuid4())}
        for item in items
    ]
    message = {"kind": "user_interactions", "query_id": "query-1", "batch_id": batch_id,
               "events_version": events_version, "rows": rows}
    producer = make_producer(settings)
    try:
        send_all(producer, settings.topic_speed_updates, [(user.encode(), json.dumps(message).encode())])
    finally:
        producer.close()


def speed_rows(view, events_version: int, rows: list[tuple[str, str, float, str]], batch_id: int = 0) -> None:
    """Apply one user_interactions update of (user, item, weight, event id) rows to a speed view."""
    view.apply(
        {
            "kind": "user_interactions",
            "query_id": "q",
            "batch_id": batch_id,
            "events_version": events_version,
            "rows": [
                {"user_id": u, "item_id": i, "event_type": "click", "weight": w,
                 "occurred_at": "2024-01-01T00:00:00+00:00", "event_id": e}
                for u, i, w, e in rows
            ],
        }
    )


def write_model(
    lake: Lake,
    version: int,
    source_events_version: int,
    item_vectors: dict[str, list[float]],
    ratings: dict[str, dict[str, float]],
    bundle: bool = True,
) -> dict[str, np.ndarray]:
    """Publish a model over ``item_vectors`` trained on ``ratings`` (user -> item -> rating).

    With ``bundle`` its model bundle goes into the lake first, as the publish
    gate does; without, serving has to build it. Returns the user vectors it stored.
    """
    item_ids = sorted(item_vectors)
    y = np.asarray([item_vectors[i] for i in item_ids], dtype=np.float32)
    item_pos = {item: i for i, item in enumerate(item_ids)}
    user_ids = sorted(ratings)
    yty = gram(y)
    users = {}
    for user in user_ids:
        positions = np.asarray([item_pos[i] for i in ratings[user]])
        values = np.asarray(list(ratings[user].values()))
        users[user] = fold_in(y, yty, positions, values, REG, CONFIDENCE).astype(np.float32)
    lake.append_arrow(ITEM_FACTORS, _factor_table(version, "item", item_ids, list(y)))
    lake.append_arrow(USER_FACTORS, _factor_table(version, "user", user_ids, [users[u] for u in user_ids]))
    rows = [(u, item_pos[i], r) for u in user_ids for i, r in ratings[u].items()]
    lake.append_arrow(
        MODEL_INTERACTIONS,
        pa.table(
            {
                "model_version": [version] * len(rows),
                "user_index": [user_ids.index(u) for u, _, _ in rows],
                "item_index": [p for _, p, _ in rows],
                "rating": [r for _, _, r in rows],
            }
        ),
    )
    params = {"regParam": REG, "alpha": ALPHA, "rank": y.shape[1]}
    if bundle:  # as the publish gate does
        publish_model_bundle(lake.settings, {"model_version": version, "source_events_version": source_events_version, "params": params})
    record_status(
        lake,
        version,
        PUBLISHED,
        "written by a test",
        source_events_version=source_events_version,
        params=params,
        n_users=len(user_ids),
        n_items=len(item_ids),
        n_interactions=len(rows),
    )
    return users
