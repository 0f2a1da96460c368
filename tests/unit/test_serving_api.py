"""Request handling that needs no broker: validation, size limits, consent, ops routes.

The app runs without its lifespan (no broker, no lake polling); every request
here is rejected or answered before anything would be produced.
"""

import json
import uuid
from datetime import UTC, datetime

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from schemas.events import Event
from serving.app import create_app

pytestmark = pytest.mark.unit


@pytest.fixture
def client(settings):
    limited = settings.model_copy(update={"ingest_max_batch": 3, "ingest_max_body_bytes": 4096})
    return TestClient(create_app(limited))


def event(**overrides):
    body = {
        "event_id": str(uuid.uuid4()),
        "user_id": "alice",
        "item_id": "item-1",
        "event_type": "click",
        "occurred_at": datetime.now(UTC).isoformat(),  # within the window the edge accepts
    }
    body.update(overrides)
    return body


def test_invalid_event_gets_422_naming_the_field(client):
    response = client.post("/events", json=event(occurred_at="2024-05-01T12:00:00"))
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "occurred_at"]


def test_invalid_event_in_a_batch_names_its_position_and_field(client):
    response = client.post("/events/batch", json=[event(), event(), event(event_type="teleport")])
    assert response.status_code == 422
    assert [e["loc"] for e in response.json()["detail"]] == [["body", 2, "event_type"]]


def test_unknown_fields_and_malformed_json_are_422(client):
    response = client.post("/events", json=event(extra_field=1))
    assert response.json()["detail"][0]["loc"] == ["body", "extra_field"]
    response = client.post("/events", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422


def test_batch_over_the_count_limit_is_413(client):
    response = client.post("/events/batch", json=[event() for _ in range(4)])
    assert response.status_code == 413
    assert "at most 3" in response.json()["detail"]


def test_batch_over_the_count_limit_is_413_even_with_bad_events(client):
    response = client.post("/events/batch", json=[event(event_type="teleport") for _ in range(4)])
    assert response.status_code == 413


def test_the_batch_body_is_documented_as_fastapi_documents_a_list_of_events(settings):
    """The batch route reads its body itself (one parsing pass); its OpenAPI body and 422 must be what
    FastAPI would write for a ``list[Event]`` parameter."""
    reference = FastAPI()

    @reference.post("/batch")
    def batch(events: list[Event]) -> None: ...

    expected = reference.openapi()["paths"]["/batch"]["post"]
    ours = create_app(settings).openapi()["paths"]["/v1/events/batch"]["post"]
    assert ours["requestBody"] == expected["requestBody"]
    assert ours["responses"]["422"] == expected["responses"]["422"]


def test_body_over_the_byte_limit_is_413_by_content_length(client):
    response = client.post("/events", json=event(item_id="x" * 5000))
    assert response.status_code == 413
    assert response.json() == {"detail": "request body exceeds 4096 bytes"}


def test_body_over_the_byte_limit_is_413_when_streamed_without_length(client):
    def chunks():  # a generator body is sent chunked: no Content-Length to check
        yield b"["
        for _ in range(5):
            yield b" " * 1000  # valid JSON whitespace: only the size is wrong
        yield b"]"

    response = client.post("/events/batch", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert response.json() == {"detail": "request body exceeds 4096 bytes"}


def test_events_without_consent_are_acknowledged_but_not_produced(client):
    events = [event(context={"consent": False}), event(context={"consent": False})]
    response = client.post("/events/batch", json=events)
    assert response.status_code == 202
    assert response.json() == {"accepted": [], "dropped_no_consent": [e["event_id"] for e in events]}


def test_health_ready_and_metrics(client):
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 503 and ready.json()["ready"] is False
    client.get("/users/alice/recommendations")
    metrics = client.get("/metrics").text
    route = "/users/{user_id}/recommendations"
    assert f'lambdarec_request_seconds_count{{method="GET",route="{route}",status="200"}} 1.0' in metrics
    assert "lambdarec_model_version -1.0" in metrics
    assert "lambdarec_speed_view_age_seconds -1.0" in metrics


def test_recommendations_without_a_model_are_popular_not_an_error(client):
    response = client.get("/users/alice/recommendations", params={"k": 5})
    assert response.status_code == 200
    body = response.json()
    assert body["user_id"] == "alice"
    assert (body["strategy"], body["model_version"], body["items"]) == ("popular", None, [])


def test_bad_k_is_422_naming_the_parameter(client):
    response = client.get("/users/alice/recommendations", params={"k": 0})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "k"]


@pytest.mark.parametrize("token", [b"NaN", b"Infinity", b"-Infinity"])
def test_non_finite_value_is_422_naming_the_field(client, token):
    """JSON has no NaN or Infinity (Python's json module reads them anyway): refuse, naming ``value``."""
    body = json.dumps(event(event_type="rating", value=4.0)).replace('"value": 4.0', f'"value": {token.decode()}').encode()
    for path, payload in (("/v1/events", body), ("/v1/events/batch", b"[" + body + b"]")):
        response = client.post(path, content=payload, headers={"content-type": "application/json"})
        assert response.status_code == 422, (path, response.text)
        locs = [error["loc"] for error in response.json()["detail"]]
        assert locs == ([["body", "value"]] if path.endswith("events") else [["body", 0, "value"]])
