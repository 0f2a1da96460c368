"""schemathesis against the served OpenAPI document: no server errors, no schema violations.

The server is real (uvicorn over a socket, an embedded broker, a model in a Delta
lake), so POST /events really produces. Every documented operation is fuzzed
from its schema; admin routes are called without the token and must refuse.
"""

from __future__ import annotations

import hypothesis
import pytest
import schemathesis
from pydantic import SecretStr
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

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
ITEMS = {f"i{n}": [1.0, 0.1 * n] for n in range(6)}


def fuzzer(operation, base_url: str, calls: list[int], failures: list[str]):
    """A hypothesis test that calls ``operation`` with generated data and checks each answer."""
    name = f"{operation.method.upper()} {operation.path}"

    @hypothesis.settings(
        max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
        suppress_health_check=list(hypothesis.HealthCheck), phases=[hypothesis.Phase.generate],
    )
    @hypothesis.given(case=operation.as_strategy())
    def fuzz(case):
        response = case.call(base_url=base_url)
        calls.append(response.status_code)
        try:
            case.validate_response(response, checks=CHECKS)
        except Exception as exc:  # collect every operation's failures, report them all
            failures.append(f"{name}: {exc}")
        if operation.path.endswith("/admin/reload") and response.status_code not in (401, 403):
            failures.append(f"{name} without the token answered {response.status_code}")

    return fuzz


def test_every_operation_conforms_to_the_openapi_document(broker_settings):
    settings = broker_settings.model_copy(update={"admin_token": SecretStr("fuzz-token")})
    write_model(Lake(settings), 1, 1, ITEMS, {"u": {"i0": 1.0}})
    with serving(settings) as client:
        wait_until(lambda: client.get("/ready").status_code == 200, "ready")
        schema = schemathesis.openapi.from_url(f"{client.base_url}/openapi.json")
        failures: list[str] = []
        operations = 0
        calls: list[int] = []
        for result in schema.get_all_operations():
            operations += 1
            fuzzer(result.ok(), str(client.base_url), calls, failures)()
    assert operations >= 9 and len(calls) >= operations * 5
    assert 500 not in calls
    assert failures == []
