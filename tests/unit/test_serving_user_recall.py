"""A user the speed view's cap evicted is read back from the lake on their next request (real Delta on
disk through delta-rs; the app through its ASGI client)."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest
from fastapi.testclient import TestClient

from lambdarec.lake import Lake
from serving.metrics_text import samples
from lambdarec.pseudonym import pseudonymise
from schemas.speed_updates import timestamp
from schemas.tables import SPEED_USER_INTERACTIONS
from serving.app import create_app
from serving.views.speed.view import SpeedView
from serving.views.speed.recall import FAILED, LATE, RESTORED, UserRecall
from tests.support.serving import wait_until, write_model

pytestmark = pytest.mark.unit

ITEMS = {**{f"a{n}": [1.0, 0.05 * n] for n in range(5)}, **{f"b{n}": [0.05 * n, 1.0] for n in range(5)}}
NOW = datetime.now(UTC).replace(microsecond=0)


def landed(lake: Lake, view: SpeedView, user: str, items: list[str], events_version: int, batch_id: int,
           minutes: int = 0) -> None:
    """As the speed job's events query: the rows into ``speed_user_interactions``, then the batch to serving."""
    rows = [{"user_id": user, "item_id": item, "event_type": "purchase", "weight": 8.0,
             "occurred_at": NOW + timedelta(minutes=minutes), "event_id": f"{user}-{item}",
             "events_version": events_version, "query_id": "q", "batch_id": batch_id} for item in items]
    lake.append_arrow(SPEED_USER_INTERACTIONS, pa.Table.from_pylist(rows, schema=SPEED_USER_INTERACTIONS.schema))
    view.apply({"kind": "user_interactions", "query_id": "q", "batch_id": batch_id, "events_version": events_version,
                "rows": [{**row, "occurred_at": timestamp(row["occurred_at"])} for row in rows]})


@pytest.fixture
def capped(settings):
    return settings.model_copy(update={"speed_view_max_users": 1})


def test_a_user_evicted_by_the_cap_is_answered_with_their_interactions_read_back(capped):
    lake = Lake(capped)
    write_model(lake, 1, 10, ITEMS, {"alice": {"a0": 3.0, "a1": 2.0}, "bob": {"b0": 4.0}})
    app = create_app(capped)
    services = app.state.services
    assert services.model_store.reload()
    carol, dave = (pseudonymise(name, capped.pseudonym_key) for name in ("carol", "dave"))
    landed(lake, services.speed_view, carol, ["b0", "b1"], events_version=11, batch_id=0)
    landed(lake, services.speed_view, dave, ["a2"], events_version=12, batch_id=1, minutes=1)
    assert services.speed_view.interactions(carol) == []  # the cap of one user evicted her

    client = TestClient(app)
    body = client.get("/v1/users/carol/recommendations", params={"k": 3}).json()
    assert (body["strategy"], body["fresh_interactions"]) == ("fold_in", 2)  # both of hers, from the lake
    assert [item["item_id"][0] for item in body["items"]] == ["b", "b", "b"]  # her taste, her items excluded
    assert not {"b0", "b1"} & {item["item_id"] for item in body["items"]}
    metrics = samples(client.get("/metrics").text)
    assert metrics[("lambdarec_speed_view_recalls_total", (("outcome", RESTORED),))] == 1
    assert metrics[("lambdarec_speed_view_evictions_total", (("entry", "user"), ("reason", "cap")))] >= 2

    again = client.get("/v1/users/carol/recommendations", params={"k": 3}).json()
    assert again["fresh_interactions"] == 2  # still hers: read back once, then held
    assert samples(client.get("/metrics").text)[("lambdarec_speed_view_recalls_total", (("outcome", RESTORED),))] == 1


def test_no_read_back_once_the_serving_model_covers_what_was_evicted(capped):
    lake = Lake(capped)
    view = SpeedView(capped)
    landed(lake, view, "carol", ["b0"], events_version=11, batch_id=0)
    landed(lake, view, "dave", ["a2"], events_version=12, batch_id=1, minutes=1)
    recall = UserRecall(lake, view, timeout_s=5)
    reads = []
    recall.read = lambda users: reads.append(users) or {}  # any read fails the test below
    asyncio.run(recall.ensure("carol", covered_version=11))
    assert reads == [] and view.interactions("carol") == []


def test_a_slow_lake_answers_without_them_in_time_and_brings_them_back_after(capped):
    """The slow lake is a real read held back by a test gate: how long a read takes cannot be arranged here."""
    lake = Lake(capped)
    view = SpeedView(capped)
    landed(lake, view, "carol", ["b0", "b1"], events_version=11, batch_id=0)
    landed(lake, view, "dave", ["a2"], events_version=12, batch_id=1, minutes=1)
    outcomes: list[str] = []
    recall = UserRecall(lake, view, timeout_s=0.2, on_outcome=outcomes.append)
    gate, real_read = threading.Event(), recall.read

    def held_read(users):
        gate.wait(30)
        return real_read(users)

    recall.read = held_read
    asyncio.run(recall.ensure("carol", covered_version=10))
    assert outcomes == [LATE] and view.interactions("carol") == []
    gate.set()
    wait_until(lambda: len(view.interactions("carol")) == 2, "the late read to bring carol back")
    assert not view.needs_recall("carol", 10)
    recall.close()


def test_users_waiting_together_are_read_in_one_scan_and_a_failed_read_is_tried_again(capped):
    lake = Lake(capped)
    view = SpeedView(capped)
    for n, user in enumerate(["u0", "u1", "u2", "u3"]):  # each evicts the one before
        landed(lake, view, user, [f"a{n}"], events_version=11 + n, batch_id=n, minutes=n)
    outcomes: list[str] = []
    recall = UserRecall(lake, view, timeout_s=10, on_outcome=outcomes.append)
    entered, gate, real_read, scans = threading.Event(), threading.Event(), recall.read, []

    def counted_read(users):
        scans.append(sorted(users))
        entered.set()
        gate.wait(30)
        if len(scans) == 1:
            raise OSError("the lake is away")
        return real_read(users)

    recall.read = counted_read

    async def two_waves() -> None:
        first = asyncio.create_task(recall.ensure("u0", None))
        assert await asyncio.to_thread(entered.wait, 30)  # the reader is busy with u0
        second = [asyncio.create_task(recall.ensure(user, None)) for user in ("u1", "u2")]
        await asyncio.to_thread(wait_until, lambda: len(recall._pending) == 2, "u1 and u2 to wait for the reader")
        gate.set()
        await asyncio.gather(first, *second)

    asyncio.run(two_waves())
    assert scans == [["u0"], ["u1", "u2"]] and sorted(outcomes) == [FAILED, RESTORED, RESTORED]
    assert view.needs_recall("u0", None) and view.interactions("u0") == []  # still remembered
    assert [i.item_id for i in view.interactions("u2")] == ["a2"]
    asyncio.run(recall.ensure("u0", None))
    assert outcomes[-1] == RESTORED and [i.item_id for i in view.interactions("u0")] == ["a0"]
    recall.close()
