"""The ingestion edge refuses what the pipeline cannot carry: a 422 whose ``loc`` names the field.

The issue's poison events (a value of ±1.7e308, an item id with a NUL or terminal
escapes, years 1 and 9999) and the rest of ``schemas.event_rules``, each on both
ingestion routes; a body nested deeper than the schema allows, at every depth a
parser treats differently, is a 422 too, and nothing is logged as an error. The app
runs without its lifespan (no broker): every request here is refused, or dropped
for lack of consent, before anything would be produced.
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from lambdarec.settings import Settings
from serving.app import create_app
from serving.json_depth import too_deep_at

pytestmark = pytest.mark.unit

NOW = datetime.now(UTC)


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    """One app for the module: no request here changes its state."""
    return TestClient(create_app(Settings(root=tmp_path_factory.mktemp("edge"))), raise_server_exceptions=False)


def event(**overrides) -> dict:
    """A valid event, dropped at the edge for lack of consent (no broker needed), with ``overrides``."""
    return {"event_id": str(uuid.uuid4()), "user_id": "alice", "item_id": "item-1", "event_type": "purchase",
            "occurred_at": NOW.isoformat(), "context": {"consent": False}, **overrides}


POISON = [  # (overrides, the field the 422 names, below "body" or "body", <position>)
    ({"value": 1.7e308}, ("value",)),
    ({"value": -1.7e308}, ("value",)),
    ({"value": 1_000_001.0}, ("value",)),
    ({"item_id": "item\x00"}, ("item_id",)),
    ({"item_id": "\x1b[2J\x1b[31mred"}, ("item_id",)),
    ({"user_id": "bob\u202e"}, ("user_id",)),
    ({"item_id": "cafe\u0301"}, ("item_id",)),  # NFD
    ({"occurred_at": "0001-01-01T00:00:00+00:00"}, ("occurred_at",)),
    ({"occurred_at": (NOW - timedelta(days=2)).isoformat()}, ("occurred_at",)),  # older than the 1-day retention
    ({"occurred_at": "9999-12-31T23:59:59+00:00"}, ("occurred_at",)),
    ({"occurred_at": (NOW + timedelta(hours=1)).isoformat()}, ("occurred_at",)),  # past the 5-minute skew
    ({"context": {"consent": False, "campaign": "spring\x00"}}, ("context", "campaign")),
    ({"context": {"consent": False, "note\x1b": "x"}}, ("context", "note\x1b")),
    ({"context": {"consent": False, "device": "ios\u200b"}}, ("context", "device")),
]


@pytest.mark.parametrize(("overrides", "field"), POISON, ids=[str(p[1]) + repr(p[0])[:40] for p in POISON])
def test_a_poison_event_is_a_422_naming_its_field(client, overrides, field):
    single = client.post("/v1/events", json=event(**overrides))
    assert single.status_code == 422, single.text
    assert [e["loc"] for e in single.json()["detail"]] == [["body", *field]]

    batch = client.post("/v1/events/batch", json=[event(), event(**overrides), event()])
    assert batch.status_code == 422, batch.text
    assert [e["loc"] for e in batch.json()["detail"]] == [["body", 1, *field]]


def test_events_at_the_edges_of_the_limits_are_taken(client):
    edges = [event(value=1e6), event(value=-1e6), event(item_id="Käse 日本 😀"),
             event(occurred_at=(NOW - timedelta(hours=23)).isoformat()),
             event(occurred_at=(NOW + timedelta(minutes=4)).isoformat())]
    answer = client.post("/v1/events/batch", json=edges)
    assert answer.status_code == 202, answer.text
    assert len(answer.json()["dropped_no_consent"]) == len(edges)


def test_the_limits_follow_the_settings(settings):
    client = TestClient(create_app(settings.model_copy(update={"event_value_max": 10.0, "topic_retention_ms": -1})))
    assert client.post("/v1/events", json=event(value=11.0)).status_code == 422
    assert client.post("/v1/events", json=event(occurred_at="1999-01-01T00:00:00+00:00")).status_code == 202
    assert client.post("/v1/events", json=event(occurred_at="1969-12-31T00:00:00+00:00")).status_code == 422


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


# Each parser gives up at its own depth: pydantic's JSON reader at a few hundred, Python's json (the
# single route's, through FastAPI) near a thousand; the echo of a bad input must not recurse either.
@pytest.mark.parametrize("depth", [10, 300, 600, 990, 100_000])
def test_a_body_nested_too_deep_is_a_422_naming_the_field_and_logs_no_error(client, caplog, depth):
    caplog.set_level(logging.DEBUG)
    body = json.dumps(event())[:-1] + ', "extra": {"deep": ' + _nested(depth) + "}}"
    in_context = json.dumps(event())[:-2] + ', "note": ' + _nested(depth) + "}}"

    for path, content, loc in (("/v1/events", body, ["body", "extra"]),
                               ("/v1/events", in_context, ["body", "context", "note"]),
                               ("/v1/events/batch", f"[{json.dumps(event())}, {in_context}]", ["body", 1, "context", "note"])):
        answer = client.post(path, content=content, headers={"content-type": "application/json"})
        assert answer.status_code == 422, (path, depth, answer.text[:300])
        locs = [e["loc"] for e in answer.json()["detail"]]
        assert any(found[:len(loc)] == loc for found in locs), (path, depth, locs)

    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info], caplog.text
    assert "Traceback" not in caplog.text


def test_a_bare_deep_array_is_a_422_on_both_routes(client):
    for path in ("/v1/events", "/v1/events/batch"):
        answer = client.post(path, content=_nested(50_000), headers={"content-type": "application/json"})
        assert answer.status_code == 422, answer.text[:300]


def test_a_lone_surrogate_is_a_422_echoed_as_text_json_can_carry(client):
    body = json.dumps(event())[:-1] + ', "item_id": "a\\ud800"}'  # a later key wins in Python's json
    answer = client.post("/v1/events", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 422 and answer.json()["detail"][0]["loc"] == ["body", "item_id"]


@pytest.mark.parametrize(("body", "depth", "path"), [
    (b'{"a": 1, "b": {"c": [1, 2]}}', 2, ("b", "c")),
    (b'[{"x": 1}, {"y": "]", "z": {"q": {}}}]', 3, (1, "z", "q")),
    (b'{"k\\"ey": [[]]}', 2, ("k\"ey", 0)),
    (b'{"a": {"b": "s"}}', 2, None),
])
def test_the_depth_scan_finds_the_first_container_past_the_limit(body, depth, path):
    assert too_deep_at(body, depth) == path
