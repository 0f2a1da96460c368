"""Credentials on every route (serving.api.security), in keys mode over a real Delta lake.

Every route that changes or reveals a user's data is called with no key, a key of
every other scope, a revoked key of its scope, and a live key of its scope. The app
runs without its lifespan (no broker): with the right key each route is called so
that it answers without one (events without consent, a body or request id the
route then refuses). The consent change and the erasure themselves, which need a
broker, are in tests/integration/test_serving_keys.py.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from lambdarec import api_keys, audit
from lambdarec.api_keys import SCOPES
from lambdarec.lake import Lake
from lambdarec.pseudonym import pseudonymise
from lambdarec.settings import Settings
from schemas.tables import AUDIT_LOG
from serving.app import create_app
from serving.api.security import ScopeGuard, UnsafeAuth, check_startup
from tests.support.serving import write_model

pytestmark = pytest.mark.unit

ITEMS = {"a0": [1.0, 0.0], "a1": [0.9, 0.1], "b0": [0.0, 1.0]}
OPEN = {"/health", "/ready", "/metrics", "/dashboard", "/dashboard/data", "/dashboard/assets/{name}",
        "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
"""Routes that reveal no user's data and take no credential."""
SCOPE_OF = {
    "/events": "ingest", "/events/batch": "ingest",
    "/users/{user_id}/consent": "consent",
    "/users/{user_id}/recommendations": "read", "/items/{item_id}/similar": "read", "/trending": "read",
    "/users/{user_id}": "admin", "/admin/erasures/{request_id}": "admin", "/admin/users/{user_id}/export": "admin",
    "/admin/reload": "admin",
}


def no_consent_event() -> dict:
    """Acknowledged and dropped without a broker."""
    return {"event_id": str(uuid.uuid4()), "user_id": "alice", "item_id": "a0", "event_type": "click",
            "occurred_at": datetime.now(UTC).isoformat(), "context": {"consent": False}}


# (method, path, request arguments, status with a live key of the route's scope)
CALLS = {
    "/events": ("POST", "/events", lambda: {"json": no_consent_event()}, 202),
    "/events/batch": ("POST", "/events/batch", lambda: {"json": [no_consent_event()]}, 202),
    # past the guard the body is checked; a change itself needs the broker
    "/users/{user_id}/consent": ("POST", "/users/alice/consent", lambda: {"json": {"granted": "maybe"}}, 422),
    "/users/{user_id}/recommendations": ("GET", "/users/alice/recommendations?explain=true&country=DE", dict, 200),
    "/items/{item_id}/similar": ("GET", "/items/a0/similar", dict, 200),
    "/trending": ("GET", "/trending", dict, 200),
    # past the guard the request id is checked; recording an erasure reads the broker's offsets
    "/users/{user_id}": ("DELETE", "/users/alice?request_id=" + "r" * 200, dict, 422),
    "/admin/erasures/{request_id}": ("GET", "/admin/erasures/no-such-request", dict, 404),
    "/admin/users/{user_id}/export": ("GET", "/admin/users/alice/export", dict, 200),
    "/admin/reload": ("POST", "/admin/reload", dict, 200),
}
CASES = [(template, prefix) for template in CALLS for prefix in ("/v1", "")]


def keyed_app(settings: Settings):
    """An app in keys mode over a model, and a live key per scope (plus a revoked key of every scope)."""
    settings = settings.model_copy(update={"auth": "keys"})
    lake = Lake(settings)
    write_model(lake, 1, 10, ITEMS, {pseudonymise("alice", settings.pseudonym_key): {"a0": 3.0, "a1": 1.0}})
    tokens = {scope: api_keys.create(lake, f"only {scope}", [scope])[1] for scope in SCOPES}
    revoked, tokens["revoked"] = api_keys.create(lake, "revoked", SCOPES)
    api_keys.revoke(lake, revoked.key_id)
    app = create_app(settings)
    services = app.state.services
    assert services.model_store.reload() and services.keys.reload()
    yield app, TestClient(app, raise_server_exceptions=False), tokens
    services.audit.close()


keyed = pytest.fixture(keyed_app)
"""A fresh keyed app, for tests that count what the app did."""


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One keyed app for the route matrix, whose calls leave nothing another case reads."""
    yield from keyed_app(Settings(root=tmp_path_factory.mktemp("auth") / "lambdarec"))


def call(client: TestClient, template: str, prefix: str, token: str | None = None):
    method, path, arguments, _ = CALLS[template]
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    return client.request(method, prefix + path, headers=headers, **arguments())


def test_every_route_is_guarded_by_its_scope_or_open_by_design(settings):
    app = create_app(settings.model_copy(update={"auth": "keys"}))
    seen = set()
    for route in app.routes:
        if not isinstance(route, APIRoute):
            continue
        guards = [d.call.scope for d in route.dependant.dependencies if isinstance(d.call, ScopeGuard)]
        template = route.path.removeprefix("/v1")
        if route.path in OPEN:
            assert guards == [], route.path
        else:
            assert guards == [SCOPE_OF[template]], route.path
            seen.add(template)
    assert seen == set(SCOPE_OF) == set(CALLS)


@pytest.mark.parametrize("template, prefix", CASES)
def test_no_key_or_an_unknown_one_is_401_naming_the_scope(shared, template, prefix):
    _, client, _ = shared
    scope = SCOPE_OF[template]
    for token in (None, "", "not-a-key", api_keys.new_token()[1]):
        answer = call(client, template, prefix, token)
        assert answer.status_code == 401, (token, answer.text)
        assert answer.headers["www-authenticate"].startswith("Bearer")
        assert answer.json()["required_scope"] == scope and answer.json()["detail"]
    basic = client.request(CALLS[template][0], prefix + CALLS[template][1], headers={"Authorization": "Basic eDp5"})
    assert basic.status_code == 401


@pytest.mark.parametrize("template, prefix", CASES)
def test_a_key_without_the_scope_is_403_naming_the_scope(shared, template, prefix):
    _, client, tokens = shared
    scope = SCOPE_OF[template]
    for other in (s for s in SCOPES if s != scope):
        answer = call(client, template, prefix, tokens[other])
        assert answer.status_code == 403, (other, answer.text)
        assert answer.json()["required_scope"] == scope and scope in answer.json()["detail"]
        assert f'scope="{scope}"' in answer.headers["www-authenticate"]


@pytest.mark.parametrize("template, prefix", CASES)
def test_a_revoked_key_is_401(shared, template, prefix):
    _, client, tokens = shared
    answer = call(client, template, prefix, tokens["revoked"])
    assert answer.status_code == 401 and answer.json()["required_scope"] == SCOPE_OF[template]
    assert "invalid_token" in answer.headers["www-authenticate"]


@pytest.mark.parametrize("template, prefix", CASES)
def test_a_key_with_the_scope_reaches_the_route(shared, template, prefix):
    _, client, tokens = shared
    answer = call(client, template, prefix, tokens[SCOPE_OF[template]])
    assert answer.status_code == CALLS[template][3], answer.text


def test_the_explanation_and_segment_reach_a_read_key_only(shared):
    _, client, tokens = shared
    path = "/v1/users/alice/recommendations?explain=true"
    assert client.get(path, headers={"Authorization": f"Bearer {tokens['ingest']}"}).status_code == 403
    body = client.get(path, headers={"Authorization": f"Bearer {tokens['read']}"}).json()
    assert body["items"] and all(item["because"] is not None for item in body["items"])


def test_a_key_revoked_while_serving_is_refused_after_the_reload(keyed, settings):
    app, client, _ = keyed
    lake = Lake(settings)
    key, token = api_keys.create(lake, "rotating", ["read"])
    assert app.state.services.keys.reload()
    assert client.get("/v1/trending", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    api_keys.revoke(lake, key.key_id)
    assert app.state.services.keys.reload()  # what the catalogue poller does every serve_catalogue_poll_s
    assert client.get("/v1/trending", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_a_key_created_after_the_last_poll_works_on_its_first_request(keyed, settings):
    """`lambdarec keys create` and a request at once: serving reads the keys table on the unknown key."""
    _, client, _ = keyed
    _, token = api_keys.create(Lake(settings), "just made", ["read"])
    assert client.get("/v1/trending", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_forged_tokens_make_serving_read_the_keys_table_at_most_once_a_second(keyed, monkeypatch):
    app, client, _ = keyed
    ring = app.state.services.keys
    reads = []
    original = ring.reload
    monkeypatch.setattr(ring, "reload", lambda: reads.append(1) or original())
    for n in range(50):
        forged = f"lrk_{n:016d}_{'x' * 43}"
        assert client.get("/v1/trending", headers={"Authorization": f"Bearer {forged}"}).status_code == 401
    assert len(reads) <= 2  # fifty misses well inside two intervals
    assert client.get("/v1/trending", headers={"Authorization": "Bearer not-one-of-ours"}).status_code == 401


def test_refusals_are_counted_by_reason_and_scope(keyed):
    _, client, tokens = keyed
    client.post("/v1/admin/reload")
    client.post("/v1/admin/reload", headers={"Authorization": f"Bearer {tokens['read']}"})
    metrics = client.get("/metrics").text
    assert 'lambdarec_auth_refused_total{reason="no_key",scope="admin"} 1.0' in metrics
    assert 'lambdarec_auth_refused_total{reason="scope",scope="admin"} 1.0' in metrics


def test_audited_actions_name_the_key_and_hold_no_raw_id_or_pseudonym(keyed, settings):
    app, client, tokens = keyed
    admin = {"Authorization": f"Bearer {tokens['admin']}"}
    admin_id = api_keys.key_id_of(tokens["admin"])
    assert client.post("/v1/admin/reload", headers=admin).status_code == 200
    assert client.get("/v1/admin/users/alice/export", headers=admin).status_code == 200
    assert client.get("/v1/admin/users/bob-nobody/export", headers=admin).status_code == 404
    assert client.get("/v1/admin/erasures/no-such-request", headers=admin).status_code == 404
    app.state.services.audit.close()
    lake = Lake(settings)
    alice = pseudonymise("alice", settings.pseudonym_key)
    rows = [(r["action"], r["outcome"], r["key_id"], r["subject"]) for r in audit.read(lake) if r["source"] == "api"]
    assert rows == [
        ("model.reload", "unchanged", admin_id, None),
        ("user.export", "ok", admin_id, audit.subject_of(alice)),
        ("user.export", "not_found", admin_id, audit.subject_of(pseudonymise("bob-nobody", settings.pseudonym_key))),
        ("erasure.read", "not_found", admin_id, None),
    ]
    files = b"".join(p.read_bytes() for p in Path(lake.uri(AUDIT_LOG)).rglob("*") if p.is_file())
    assert admin_id.encode() in files  # the scan reads the table
    for secret in (b"alice", b"bob-nobody", alice.encode(), tokens["admin"].split("_", 2)[2].encode()):
        assert secret not in files


def test_open_mode_checks_no_credential_and_audits_with_no_key(settings):
    app = create_app(settings.model_copy(update={"auth": "open"}))
    assert app.state.services.settings.auth == "open"
    client = TestClient(app, raise_server_exceptions=False)
    assert client.post("/v1/admin/reload").status_code == 200
    assert client.post("/v1/events", json=no_consent_event()).status_code == 202
    app.state.services.audit.close()
    assert [(r["action"], r["key_id"]) for r in audit.read(Lake(settings))] == [("model.reload", None)]


def test_the_openapi_document_lists_401_and_403_on_every_protected_route(settings):
    document = create_app(settings).openapi()
    assert document["components"]["securitySchemes"]["ApiKey"]["scheme"] == "bearer"
    for path, operations in document["paths"].items():
        for operation in operations.values():
            if path in OPEN:
                assert "security" not in operation, path
                continue
            assert operation["security"] == [{"ApiKey": []}], path
            for status in ("401", "403"):
                schema = operation["responses"][status]["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/AuthRefusal"}, (path, status)
            assert SCOPE_OF[path.removeprefix("/v1")] in operation["responses"]["403"]["description"]


def test_open_mode_is_refused_off_loopback_and_warned_on_it(settings, caplog):
    opened = settings.model_copy(update={"auth": "open"})
    for host in ("0.0.0.0", "::", "10.1.2.3", "example.com"):
        with pytest.raises(UnsafeAuth, match="loopback"):
            check_startup(opened, host)
    with caplog.at_level(logging.WARNING, logger="serving.api.security"):
        for host in ("127.0.0.1", "localhost", "::1", "[::1]"):
            check_startup(opened, host)
    assert len(caplog.records) == 4 and all("NO credential" in r.getMessage() for r in caplog.records)


def test_keys_mode_needs_a_live_key_off_loopback(settings, caplog):
    keyed = settings.model_copy(update={"auth": "keys"})
    with pytest.raises(UnsafeAuth, match="no live API key"):
        check_startup(keyed, "0.0.0.0")
    with caplog.at_level(logging.WARNING, logger="serving.api.security"):
        check_startup(keyed, "127.0.0.1")
    assert "no live API key" in caplog.text
    key, _ = api_keys.create(Lake(keyed), "backend", ["read"])
    check_startup(keyed, "0.0.0.0")
    api_keys.revoke(Lake(keyed), key.key_id)
    with pytest.raises(UnsafeAuth):
        check_startup(keyed, "0.0.0.0")


def test_lambdarec_serve_refuses_open_mode_on_every_interface(settings):
    env = {**os.environ, "LAMBDAREC_ROOT": str(settings.root), "LAMBDAREC_AUTH": "open"}
    done = subprocess.run([sys.executable, "-m", "deploy.cli", "serve", "--host", "0.0.0.0", "--port", "9"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "refuses to start" in done.stdout and "loopback" in done.stdout


def test_an_unprintable_request_id_is_a_422_naming_it(shared):
    _, client, tokens = shared
    answer = client.delete("/v1/users/alice", params={"request_id": "5\x8a\r"},
                           headers={"Authorization": f"Bearer {tokens['admin']}"})
    assert answer.status_code == 422 and answer.json()["detail"][0]["loc"] == ["query", "request_id"]
