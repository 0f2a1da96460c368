"""schemathesis against the served OpenAPI document: no server errors, no schema violations.

The server is real (uvicorn over a socket, an embedded broker, a model in a Delta
lake), so POST /events really produces. Every documented operation is fuzzed
from its schema with a key of every scope; each protected one is called again with
a key serving does not know, and must refuse it with the documented 401.
"""

from __future__ import annotations

import hypothesis
import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from lambdarec import api_keys
from lambdarec.api_keys import SCOPES
from lambdarec.lake import Lake
from tests.support.serving import serving, wait_until, write_model

pytestmark = pytest.mark.integration

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
EXAMPLES_PER_OPERATION = 25
OPEN = {"/health", "/ready", "/metrics", "/dashboard", "/dashboard/data"}  # they reveal no user's data
ITEMS = {f"i{n}": [1.0, 0.1 * n] for n in range(6)}


def fuzzer(operation, base_url: str, token: str, calls: list[int], failures: list[str]):
    """A hypothesis test that calls ``operation`` with generated data and checks each answer."""
    name = f"{operation.method.upper()} {operation.path}"

    @hypothesis.settings(
        max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
        suppress_health_check=list(hypothesis.HealthCheck), phases=[hypothesis.Phase.generate],
    )
    @hypothesis.given(case=operation.as_strategy())
    def fuzz(case):
        response = case.call(base_url=base_url, headers={"Authorization": f"Bearer {token}"})
        calls.append(response.status_code)
        try:
            case.validate_response(response, checks=CHECKS)
        except Exception as exc:  # collect every operation's failures, report them all
            failures.append(f"{name}: {exc}")
        if operation.path in OPEN:
            return
        refused = case.call(base_url=base_url, headers={"Authorization": "Bearer lrk_0123456789abcdef_unknown"})
        try:
            case.validate_response(refused, checks=CHECKS)
        except Exception as exc:
            failures.append(f"{name} with an unknown key: {exc}")
        if refused.status_code != 401:
            failures.append(f"{name} with an unknown key answered {refused.status_code}")

    return fuzz


def test_every_operation_conforms_to_the_openapi_document(broker_settings):
    settings = broker_settings.model_copy(update={"auth": "keys"})
    write_model(Lake(settings), 1, 1, ITEMS, {"u": {"i0": 1.0}})
    _, token = api_keys.create(Lake(settings), "fuzzer", SCOPES)
    with serving(settings) as client:
        wait_until(lambda: client.get("/ready").status_code == 200, "ready")
        schema = schemathesis.openapi.from_url(f"{client.base_url}/openapi.json")
        failures: list[str] = []
        operations = 0
        calls: list[int] = []
        for result in schema.get_all_operations():
            operations += 1
            fuzzer(result.ok(), str(client.base_url), token, calls, failures)()
    assert operations >= 9 and len(calls) >= operations * 5
    assert 500 not in calls
    assert failures == []
