"""API keys on a real server: made and revoked with `lambdarec keys`, refused within a key poll, audited.

A real broker, uvicorn over a socket, a model in a Delta lake, keys mode. The keys
are made and revoked through the command's own code (``lambdarec.api_keys.command``),
and a revoked key is refused once serving's key poll (serve_catalogue_poll_s) has
seen the table move, by every worker of ``lambdarec serve --workers 2`` too.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from lambdarec import api_keys, audit
from lambdarec.lake import Lake
from lambdarec.processes import start_child
from deploy.cli import lambdarec_command
from lambdarec.pseudonym import pseudonymise
from lambdarec.submit import spark_submit_env
from schemas.tables import AUDIT_LOG
from tests.plugins.broker import free_port
from tests.support.serving import serving, wait_until, write_model

pytestmark = pytest.mark.integration

ITEMS = {f"i{n}": [1.0, 0.1 * n] for n in range(6)}
POLL_DEADLINE_S = 15.0  # generous for a loaded 2-core machine; the poll itself is serve_catalogue_poll_s


def keys_cli(settings, capsys, *argv: str) -> str:
    """Run ``lambdarec keys ARGV`` as the command line does; what it printed."""
    parser = argparse.ArgumentParser()
    api_keys.add_arguments(parser)
    assert api_keys.command(parser.parse_args(argv), settings) == 0
    return capsys.readouterr().out


def created_token(settings, capsys, name: str, *scopes: str) -> str:
    printed = keys_cli(settings, capsys, "create", "--name", name, *(arg for s in scopes for arg in ("--scope", s)))
    return printed.strip().splitlines()[-1]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_keys_from_the_cli_open_the_api_and_a_revoked_one_is_refused_within_the_poll(
        broker_settings, capsys, record_property):
    settings = broker_settings.model_copy(update={"auth": "keys", "serve_catalogue_poll_s": 0.5})
    lake = Lake(settings)
    alice = pseudonymise("alice", settings.pseudonym_key)
    write_model(lake, 1, 1, ITEMS, {alice: {"i0": 1.0}})
    backend = created_token(settings, capsys, "backend", "ingest", "consent", "read")
    operator = created_token(settings, capsys, "operator", "admin")
    with serving(settings) as client:
        wait_until(lambda: client.get("/ready").status_code == 200, "serving ready")
        event = {"event_id": str(uuid.uuid4()), "user_id": "alice", "item_id": "i1", "event_type": "click",
                 "occurred_at": datetime.now(UTC).isoformat()}
        assert client.post("/v1/events", json=event).status_code == 401
        assert client.post("/v1/events", json=event, headers=bearer(backend)).status_code == 202
        withdrawn = client.post("/v1/users/alice/consent", json={"granted": False}, headers=bearer(backend))
        assert withdrawn.status_code == 202, withdrawn.text
        assert client.get("/v1/users/alice/recommendations", headers=bearer(backend)).status_code == 200
        assert client.delete("/v1/users/alice", headers=bearer(backend)).status_code == 403
        erased = client.delete("/v1/users/alice", params={"request_id": "r1"}, headers=bearer(operator))
        assert erased.status_code == 202, erased.text

        successor = created_token(settings, capsys, "backend v2", "read")  # rotation: both live for a while
        backend_id = api_keys.key_id_of(backend)
        assert backend_id is not None
        revoked_at = time.monotonic()
        assert "revoked" in keys_cli(settings, capsys, "revoke", backend_id)
        wait_until(lambda: client.get("/v1/trending", headers=bearer(backend)).status_code == 401,
                   "serving to refuse the revoked key", POLL_DEADLINE_S)
        record_property("revoked_key_refused_after_s", round(time.monotonic() - revoked_at, 2))
        refused = client.get("/v1/trending", headers=bearer(backend))
        assert refused.json()["required_scope"] == "read"
        assert client.get("/v1/trending", headers=bearer(successor)).status_code == 200  # no downtime

    listed = keys_cli(settings, capsys, "list")
    assert backend_id in listed and backend.split("_", 2)[2] not in listed
    rows = [(r["action"], r["outcome"], r["key_id"]) for r in audit.read(lake) if r["source"] == "api"]
    assert rows == [("consent.change", "accepted", backend_id),
                    ("user.erase", "pending", api_keys.key_id_of(operator))]
    assert {r["subject"] for r in audit.read(lake) if r["source"] == "api"} == {audit.subject_of(alice)}
    assert [r["action"] for r in audit.read(lake) if r["source"] == "cli"] == ["key.create"] * 3 + ["key.revoke"]
    files = b"".join(p.read_bytes() for p in Path(lake.uri(AUDIT_LOG)).rglob("*") if p.is_file())
    for needle in (b"alice", alice.encode(), *(t.split("_", 2)[2].encode() for t in (backend, operator, successor))):
        assert needle not in files, needle


def request_log(log: str, route: str) -> list[dict]:
    return [line for line in (json.loads(text) for text in log.splitlines() if text.startswith("{"))
            if line.get("route") == route]


def test_every_worker_refuses_a_revoked_key(broker_settings, tmp_path, capsys):
    settings = broker_settings.model_copy(update={"auth": "keys", "serve_port": free_port()})
    write_model(Lake(settings), 1, 1, ITEMS, {"u": {"i0": 1.0}})
    token = created_token(settings, capsys, "backend", "read")
    key_id = api_keys.key_id_of(token)
    api = f"http://127.0.0.1:{settings.serve_port}"
    server = start_child("serving", lambdarec_command("serve", "--workers", "2"), tmp_path / "logs",
                         spark_submit_env(settings))

    def pids_answering(status: int) -> set[int]:
        """Send a few requests on new connections (any worker may take each); the workers that answered
        ``status`` with this key so far."""
        server.check_alive()
        for _ in range(8):
            with contextlib.suppress(httpx.TransportError):  # not listening yet
                httpx.get(f"{api}/v1/trending", headers=bearer(token), timeout=10)
        return {line["pid"] for line in request_log(server.log_path.read_text(), "/v1/trending")
                if line["status"] == status and line["key_id"] == (key_id if status == 200 else None)}

    try:
        wait_until(lambda: len(pids_answering(200)) == 2, "both workers to serve the key", 120)
        keys_cli(settings, capsys, "revoke", key_id)
        wait_until(lambda: len(pids_answering(401)) == 2, "both workers to refuse the revoked key", POLL_DEADLINE_S)
        assert {httpx.get(f"{api}/v1/trending", headers=bearer(token), timeout=10).status_code
                for _ in range(16)} == {401}
    finally:
        server.stop()


APPENDER = """
import sys
from lambdarec import audit
from lambdarec.lake import Lake
from lambdarec.settings import Settings

writer = audit.GroupWriter(Lake(Settings(root=sys.argv[1])))
done = [writer.submit(audit.Entry(action="test", outcome="ok", detail=f"{sys.argv[2]}-{n}")) for n in range(60)]
for future in done:
    future.result(120)
writer.close()
print(writer.commits)
"""


def test_audit_appends_from_several_processes_at_once_all_land(settings):
    Lake(settings).ensure(AUDIT_LOG)
    writers = [subprocess.Popen([sys.executable, "-c", APPENDER, str(settings.root), f"p{n}"],
                                stdout=subprocess.PIPE, text=True) for n in range(4)]
    outputs = [writer.communicate(timeout=300)[0] for writer in writers]
    assert [writer.returncode for writer in writers] == [0] * 4, outputs
    details = [row["detail"] for row in audit.read(Lake(settings))]
    assert sorted(details) == sorted(f"p{p}-{n}" for p in range(4) for n in range(60))
