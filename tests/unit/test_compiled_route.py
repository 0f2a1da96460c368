"""The compiled recommendations route answers every request exactly as FastAPI's own parameter handling does.

One app over a real Delta lake, without its lifespan. Each request is sent twice:
through the compiled route, and with a dependency override set, which sends it
through FastAPI's handler; status and body must be the same.
"""

from datetime import UTC, datetime

import pyarrow as pa
import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from lambdarec.lake import Lake
from lambdarec.pseudonym import pseudonymise
from schemas.tables import ITEM_CATALOGUE
from serving.app import create_app
from serving.api.compiled_route import CompiledParams
from serving.services import get_services
from tests.support.serving import write_model

pytestmark = pytest.mark.unit

ITEMS = {f"i{n}": [1.0 - 0.1 * n, 0.1 * n] for n in range(8)}
QUERIES = [
    "", "k=3", "k=3&k=2", "k=0", "k=1001", "k=abc", "k=", "k=2.5",
    "exclude_seen=false", "exclude_seen=0", "exclude_seen=maybe",
    "include=i1&include=i5", "include=", "exclude=i0&exclude=i2&k=4",
    "filter=colour:red", "filter=colour:red&filter=colour:blue", "filter=colour:red&filter=size:l", "filter=bad",
    "filter=" + "&filter=".join(["colour:red"] * 51),
    "explain=true&k=2", "explain=yes", "country=DE", "country=de", "device=ios&age_band=25-34", "device=",
    "unknown=1&k=2", "k=2&country=FR&filter=colour:blue&include=i3&include=i4&exclude_seen=true",
]


@pytest.fixture
def app(settings):
    key = settings.pseudonym_key
    lake = Lake(settings)
    write_model(lake, 1, 10, ITEMS, {pseudonymise("alice", key): {"i0": 3.0, "i6": 1.0}})
    lake.append_arrow(ITEM_CATALOGUE, pa.Table.from_pylist(
        [{"item_id": item, "attributes": [("colour", "red" if n % 2 else "blue"), ("size", "l" if n < 4 else "s")],
          "updated_at": datetime(2024, 1, 1, tzinfo=UTC)} for n, item in enumerate(ITEMS)],
        schema=ITEM_CATALOGUE.schema))
    app = create_app(settings)
    assert app.state.services.model_store.reload() and app.state.services.attributes.reload()
    return app


def answer(client, url: str) -> tuple[int, object]:
    response = client.get(url)
    return response.status_code, response.json()


@pytest.mark.parametrize("path", ["/v1/users/alice/recommendations", "/users/alice/recommendations",
                                  "/v1/users/" + "x" * 129 + "/recommendations"])
def test_a_compiled_request_is_answered_as_fastapi_answers_it(app, path, monkeypatch):
    compiled_calls = []
    arguments = CompiledParams.arguments

    async def counted(self, request):
        compiled_calls.append(request.url.path)
        return await arguments(self, request)

    monkeypatch.setattr(CompiledParams, "arguments", counted)
    client = TestClient(app, raise_server_exceptions=False)
    compiled = {query: answer(client, f"{path}?{query}") for query in QUERIES}
    assert compiled_calls == [path] * len(QUERIES)  # the compiled route took each (and handed the invalid to FastAPI)
    app.dependency_overrides[get_services] = get_services  # any override: FastAPI's handler
    try:
        standard = {query: answer(client, f"{path}?{query}") for query in QUERIES}
    finally:
        app.dependency_overrides.clear()
    assert len(compiled_calls) == len(QUERIES)
    for query in QUERIES:
        assert compiled[query] == standard[query], query
    statuses = {status for status, _ in compiled.values()}
    assert statuses == ({422} if len(path) > 140 else {200, 422})


def test_only_the_simple_routes_are_compiled(app):
    compiled = {route.path for route in app.routes
                if isinstance(route, APIRoute) and CompiledParams.of(route.dependant) is not None}
    # similar and trending return pydantic models for FastAPI to serialise: they keep FastAPI's handler
    assert compiled == {"/v1/users/{user_id}/recommendations", "/users/{user_id}/recommendations"}


def test_an_invalid_parameter_is_named_in_the_422(app):
    response = TestClient(app).get("/v1/users/alice/recommendations?k=0&country=de")
    assert response.status_code == 422
    assert {tuple(error["loc"]) for error in response.json()["detail"]} == {("query", "k"), ("query", "country")}
