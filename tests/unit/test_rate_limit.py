"""Rate limits: token buckets per caller in one fixed-size table, shared by processes through a file.

Real processes (multiprocessing, spawn, as uvicorn starts its workers) draw from one
table file; the routes' limits run on the real app with a real lake (no broker: every
request here is refused, or dropped without consent, before anything is produced).
"""

from __future__ import annotations

import multiprocessing
import os
import uuid
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from starlette.requests import Request

from lambdarec import api_keys
from lambdarec.lake import Lake
from serving.app import create_app
from serving.rate_limit import BucketTable, RateLimiter, caller
from tests.support.rate_draws import SLOW, draw_until_refused

pytestmark = pytest.mark.unit

def test_two_processes_draw_from_one_bucket(tmp_path):
    burst = 20_000
    BucketTable.create(tmp_path / "buckets", 64)
    spawn = multiprocessing.get_context("spawn")
    start, drawn = spawn.Barrier(2), spawn.Queue()
    workers = [spawn.Process(target=draw_until_refused, args=(str(tmp_path / "buckets"), start, burst, drawn))
               for _ in range(2)]
    for worker in workers:
        worker.start()
    counts = [drawn.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(30)
    # one bucket between them, and no draw lost or granted twice while both drew at once
    assert sum(counts) == burst, counts


def test_each_caller_and_each_route_kind_has_its_own_bucket():
    table = BucketTable.in_memory(64)
    events = RateLimiter(table, "events", SLOW, 10, "events")
    consent = RateLimiter(table, "consent", SLOW, 10, "consent changes")
    assert events.take("key:a", 10) is None
    assert events.take("key:a", 1) is not None
    assert events.take("key:b", 10) is None
    assert events.take("address:127.0.0.1", 10) is None
    assert consent.take("key:a", 10) is None  # a's consent changes draw from a bucket of their own


def test_a_bucket_refills_at_its_rate_and_says_how_long_to_wait():
    table = BucketTable.in_memory(64)
    assert table.take("c", 10, 2.0, 10, now=100.0) is None
    assert table.take("c", 4, 2.0, 10, now=100.0) == pytest.approx(2.0)  # 4 tokens at 2 a second
    assert table.take("c", 4, 2.0, 10, now=101.0) == pytest.approx(1.0)
    assert table.take("c", 4, 2.0, 10, now=102.0) is None
    assert table.take("c", 100, 2.0, 10, now=1000.0) is None  # a full bucket lets one request over the burst...
    assert table.take("c", 1, 2.0, 10, now=1000.0) == pytest.approx(45.5)  # ...which runs it into debt


def test_the_table_holds_a_fixed_number_of_buckets_reusing_the_least_recently_used(tmp_path):
    BucketTable.create(tmp_path / "buckets", 8)  # one set: every caller competes for the same 8 slots
    table = BucketTable.open(tmp_path / "buckets")
    size = os.path.getsize(tmp_path / "buckets")
    assert table.take("drained", 5, SLOW, 5, now=1.0) is None
    for n in range(7):
        table.take(f"other-{n}", 1, SLOW, 5, now=2.0 + n)
    assert table.take("drained", 1, SLOW, 5, now=9.0) is not None  # 8 callers, 8 slots: still remembered
    for n in range(7, 15):  # the 8th newcomer takes the slot of the one used longest ago
        table.take(f"other-{n}", 1, SLOW, 5, now=10.0 + n)
    assert table.take("other-14", 5, SLOW, 5, now=30.0) is not None  # the newest keeps its bucket
    assert table.take("drained", 5, SLOW, 5, now=30.0) is None  # the least recently used gave its slot away

    for n in range(10_000):
        table.take(f"flood-{n}", 1, SLOW, 5)
    assert os.path.getsize(tmp_path / "buckets") == size


def test_a_table_file_refuses_what_is_not_one(tmp_path):
    (tmp_path / "other").write_bytes(b"\0" * 4096)
    with pytest.raises(ValueError, match="not a rate-limit table"):
        BucketTable.open(tmp_path / "other")


def request_from(key_id: str | None, host: str) -> Request:
    scope = {"type": "http", "method": "POST", "path": "/", "headers": [], "client": (host, 5555),
             "state": {} if key_id is None else {"key_id": key_id}}
    return Request(scope)


def test_a_request_draws_from_its_keys_bucket_or_in_open_mode_its_addresss():
    assert caller(request_from("k1", "10.0.0.1")) == caller(request_from("k1", "10.0.0.2")) == "key:k1"
    assert caller(request_from(None, "10.0.0.1")) == "address:10.0.0.1"
    assert caller(request_from(None, "10.0.0.1")) != caller(request_from("10.0.0.1", "10.0.0.1"))


def no_consent_events(n: int) -> list[dict]:
    """Dropped without a broker, but they still count against the limit."""
    return [{"event_id": str(uuid.uuid4()), "user_id": "u", "item_id": "i", "event_type": "click",
             "occurred_at": datetime.now(UTC).isoformat(), "context": {"consent": False}} for _ in range(n)]


def test_the_ingestion_limit_is_per_key(settings):
    limited = settings.model_copy(update={"auth": "keys", "ingest_rate_limit_per_s": SLOW, "ingest_rate_burst": 4})
    lake = Lake(limited)
    _, first = api_keys.create(lake, "backend-a", ["ingest"])
    _, second = api_keys.create(lake, "backend-b", ["ingest"])
    app = create_app(limited)
    app.state.services.keys.reload()
    client = TestClient(app)

    def post(token: str, n: int):
        return client.post("/v1/events/batch", json=no_consent_events(n), headers={"Authorization": f"Bearer {token}"})

    assert post(first, 4).status_code == 202
    refused = post(first, 1)
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert "rate limit" in refused.json()["detail"]
    answer = post(second, 4)
    assert answer.status_code == 202, answer.text  # the same address, another key: its own bucket


def test_consent_changes_have_a_limit_of_their_own(settings):
    limited = settings.model_copy(update={"auth": "open", "consent_rate_limit_per_s": SLOW, "consent_rate_burst": 2})
    app = create_app(limited)
    client = TestClient(app)
    app.state.services.consent_rate.take(caller(request_from(None, "testclient")), 2)  # as if two had gone through
    refused = client.post("/v1/users/alice/consent", json={"purpose": "personalisation", "granted": False})
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert "consent changes/s" in refused.json()["detail"]
    assert client.post("/v1/events/batch", json=no_consent_events(3)).status_code == 202  # events: another bucket
