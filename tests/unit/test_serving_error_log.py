"""Raw user ids never reach a log: a 500 is logged under its route template, its trace masked."""

from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.services import get_services
from serving.logs import JsonFormatter

pytestmark = pytest.mark.unit

RAW_ID = "alice.raw@example.com"


def test_a_500_logs_the_route_template_and_no_raw_user_id(settings, caplog):
    app = create_app(settings)

    def broken_services(user_id: str):
        raise RuntimeError(f"no services for {user_id}")

    app.dependency_overrides[get_services] = broken_services
    client = TestClient(app, raise_server_exceptions=False)
    with caplog.at_level(logging.DEBUG):
        response = client.get(f"/v1/users/{RAW_ID}/recommendations")
    assert response.status_code == 500
    assert response.json() == {"detail": "internal server error"}
    assert RAW_ID not in response.text

    # Every server-side line (the test client's own httpx line is the client's, not the server's).
    lines = [JsonFormatter().format(record) for record in caplog.records if not record.name.startswith("httpx")]
    assert lines
    assert not [line for line in lines if RAW_ID in line]
    (error,) = [r for r in caplog.records if r.getMessage() == "unhandled error"]
    assert error.route == "/v1/users/{user_id}/recommendations"
    assert "RuntimeError: no services for {user_id}" in error.trace
