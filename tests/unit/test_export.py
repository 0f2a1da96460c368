"""Right of access: the export document from the lake, through the admin route and the CLI."""

from __future__ import annotations

import argparse
import json

import pyarrow as pa
import pytest
from fastapi.testclient import TestClient

from lambdarec import api_keys, audit

from serving import export
from deploy.generator import user_id
from lambdarec.pseudonym import pseudonymise
from schemas.consent import ConsentChange
from schemas.tables import USER_CONSENT
from serving.app import create_app
from serving.recommend import Query
from tests.support.privacy import NOW, lake_with, rows_of

pytestmark = pytest.mark.unit


@pytest.fixture
def held(settings):
    """A lake holding user 3 in every table, with one consent change; (settings, lake, pseudonym, counts)."""
    settings = settings.model_copy(update={"auth": "keys", "serve_port": 9})  # nothing listens on port 9
    lake, user, _ = lake_with(settings, user_id(3), user_id(4))
    settings = api_keys.provision(settings, "export-tests", ["admin", "read"])
    change = ConsentChange(change_id="c1", user_id=user, purpose="personalisation", granted=False, changed_at=NOW)
    lake.ensure(USER_CONSENT)
    lake.append_arrow(USER_CONSENT, pa.Table.from_pylist([change.to_row(0, 7, NOW)], schema=USER_CONSENT.schema))
    return settings, lake, user, rows_of(lake, user)


def test_the_route_returns_everything_held_and_404_for_a_stranger(held):
    settings, lake, user, counts = held
    app = create_app(settings)
    assert app.state.services.model_store.reload()  # as the poller would
    assert app.state.services.recommend(user, Query()).strategy == "model"
    app.state.services.consents.reload()
    app.state.services.keys.reload()
    client = TestClient(app, raise_server_exceptions=False)
    admin = api_keys.bearer(settings)
    url = f"/v1/admin/users/{user_id(3)}/export"
    assert client.get(url).status_code in (401, 403)
    answer = client.get(url, headers=admin)
    assert answer.status_code == 200, answer.text
    document = answer.json()
    assert document["user_id"] == user_id(3) and document["pseudonym"] == user
    assert len(document["events"]) == counts["events"] and {e["user_id"] for e in document["events"]} == {user}
    assert len(document["speed_interactions"]) == counts["speed_user_interactions"]
    assert document["speed_profile"]["user_id"] == user and len(document["features"]) == counts["speed_user_features"]
    assert document["profile"] is None  # no user_profiles row: the operational database has none for them
    assert [c["change_id"] for c in document["consent_history"]] == ["c1"]
    assert document["consent"] == {"personalisation": False}
    assert document["models_trained_on_their_data"] == [1]
    assert len(document["dead_letters"]) == 2  # the two whose raw bytes hold the pseudonym
    recommendations = document["serving"]["recommendations"]
    assert (recommendations["strategy"], recommendations["model_version"]) == ("popular", 1)  # withdrawn
    assert client.get("/v1/admin/users/nobody-at-all/export", headers=admin).status_code == 404
    app.state.services.audit.close()  # its last commit in
    rows = [(r["action"], r["outcome"], r["subject"], r["source"]) for r in audit.read(lake, action="user.export")]
    assert rows == [("user.export", "ok", audit.subject_of(user), "api"),
                    ("user.export", "not_found", audit.subject_of(pseudonymise("nobody-at-all", settings.pseudonym_key)),
                     "api")]


def test_the_cli_prints_the_same_document_and_fails_for_a_stranger(held, tmp_path, capsys):
    settings, lake, user, _ = held
    out = tmp_path / "export.json"
    assert export.command(argparse.Namespace(user_id=user_id(3), output=out), settings) == 0
    document = json.loads(out.read_text())
    assert document == {**document, "user_id": user_id(3), **export.user_data(lake, user)}
    assert document["serving"]["recommendations"] is None and "did not answer" in document["serving"]["unavailable"]
    assert export.command(argparse.Namespace(user_id="nobody-at-all", output=None), settings) == 1
    assert "nothing is held" in capsys.readouterr().err
    key_id = api_keys.key_id_of(settings.api_key.get_secret_value())
    assert [(r["outcome"], r["source"], r["key_id"], r["subject"]) for r in audit.read(lake, action="user.export")] == [
        ("ok", "cli", key_id, audit.subject_of(user)),
        ("not_found", "cli", key_id, audit.subject_of(pseudonymise("nobody-at-all", settings.pseudonym_key)))]
