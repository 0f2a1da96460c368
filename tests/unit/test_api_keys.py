"""The key store (lambdarec.api_keys): tokens, hashing, create/list/revoke, rotation, and the CLI."""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import pytest

from lambdarec import api_keys, audit
from lambdarec.api_keys import KeyRing, UnknownKey
from lambdarec.lake import Lake
from schemas.tables import API_KEYS

pytestmark = pytest.mark.unit


@pytest.fixture
def lake(settings):
    return Lake(settings)


def table_bytes(lake: Lake) -> bytes:
    """Every file of the api_keys table (data and log), concatenated."""
    return b"".join(path.read_bytes() for path in sorted(Path(lake.uri(API_KEYS)).rglob("*")) if path.is_file())


def test_a_token_names_its_key_and_carries_256_random_bits():
    key_id, token = api_keys.new_token()
    prefix, found_id, secret = token.split("_", 2)
    assert (prefix, found_id) == ("lrk", key_id) and api_keys.key_id_of(token) == key_id
    assert len(key_id) == 16 and len(secret) >= 43  # 32 bytes, URL-safe base64
    assert api_keys.new_token()[1] != token
    for malformed in ("", "lrk", "lrk_", f"lrk_{key_id}_", f"xyz_{key_id}_abc", "lrk_short_abc", "Bearer x"):
        assert api_keys.key_id_of(malformed) is None, malformed


def test_the_table_keeps_only_the_tokens_sha256(lake):
    key, token = api_keys.create(lake, "backend", ["ingest", "read"])
    assert key.token_sha256 == hashlib.sha256(token.encode()).hexdigest()
    stored = api_keys.keys(lake)[key.key_id]
    assert stored.token_sha256 == key.token_sha256 and stored.scopes == {"ingest", "read"} and stored.live
    files = table_bytes(lake)
    secret = token.split("_", 2)[2]
    assert secret.encode() not in files and token.encode() not in files
    assert key.key_id.encode() in files  # the scan reads the table: the id is there, the secret is not


def test_two_keys_live_at_once_then_one_revoked(lake):
    old, old_token = api_keys.create(lake, "backend", ["read"])
    new, new_token = api_keys.create(lake, "backend v2", ["read"])
    ring = KeyRing(lake)
    assert ring.reload()
    assert ring.authenticate(old_token) == old and ring.authenticate(new_token) == new
    revoked = api_keys.revoke(lake, old.key_id)
    assert revoked.revoked_at is not None and not revoked.live
    assert ring.reload()  # the table's version moved
    assert ring.authenticate(old_token) is None and ring.authenticate(new_token) == new
    assert not ring.reload()  # nothing changed since
    assert api_keys.revoke(lake, old.key_id).revoked_at == revoked.revoked_at  # again: stays as it was
    with pytest.raises(UnknownKey):
        api_keys.revoke(lake, "0" * 16)


def test_only_the_whole_token_of_a_live_key_authenticates(lake):
    key, token = api_keys.create(lake, "backend", ["read"])
    ring = KeyRing(lake)
    ring.reload()
    other_id, forged = api_keys.new_token()
    tampered = token[:-1] + ("A" if token[-1] != "A" else "B")
    same_id_other_secret = f"lrk_{key.key_id}_{forged.split('_', 2)[2]}"
    for wrong in (forged, tampered, same_id_other_secret, token + "x", key.token_sha256, key.key_id, ""):
        assert ring.authenticate(wrong) is None, wrong
    assert ring.authenticate(token) == key


def test_names_and_scopes_are_checked(lake):
    for name, scopes in (("", ["read"]), ("x" * 65, ["read"]), ("tab\there", ["read"]), ("ok", []),
                         ("ok", ["read", "write"])):
        with pytest.raises(ValueError):
            api_keys.create(lake, name, scopes)
    assert not lake.exists(API_KEYS)


def test_rotate_leaves_one_live_key_of_a_name(lake):
    first, _ = api_keys.create(lake, "lambdarec up: airflow", ["admin"])
    other, _ = api_keys.create(lake, "someone else", ["admin"])
    second, token = api_keys.rotate(lake, "lambdarec up: airflow", ["admin"])
    found = api_keys.keys(lake)
    assert not found[first.key_id].live and found[second.key_id].live and found[other.key_id].live
    ring = KeyRing(lake)
    ring.reload()
    assert ring.authenticate(token) == second


def test_provision_keeps_an_operators_key_and_bearer_presents_it(settings):
    provisioned = api_keys.provision(settings, "demo", ["read"])
    token = provisioned.api_key.get_secret_value()
    assert api_keys.keys(Lake(settings))[api_keys.key_id_of(token)].scopes == {"read"}
    assert api_keys.bearer(provisioned) == {"Authorization": f"Bearer {token}"}
    assert api_keys.provision(provisioned, "demo", ["read"]) is provisioned  # one is set: kept
    assert api_keys.bearer(settings) == {}


def test_each_key_change_is_audited_without_its_secret(lake):
    key, token = api_keys.create(lake, "backend", ["read"])
    api_keys.revoke(lake, key.key_id)
    rows = audit.read(lake)
    assert [(r["action"], r["outcome"], r["source"], r["subject"]) for r in rows] == [
        ("key.create", "created", "cli", None), ("key.revoke", "revoked", "cli", None)]
    assert all(key.key_id in r["detail"] and token.split("_", 2)[2] not in r["detail"] for r in rows)


def run_cli(settings, *argv: str) -> int:
    parser = argparse.ArgumentParser()
    api_keys.add_arguments(parser)
    return api_keys.command(parser.parse_args(argv), settings)


def test_the_cli_prints_a_token_once_lists_no_secret_and_revokes(settings, capsys):
    assert run_cli(settings, "create", "--name", "backend", "--scope", "ingest", "--scope", "read") == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]
    key_id = api_keys.key_id_of(token)
    assert key_id is not None
    assert run_cli(settings, "list") == 0
    listed = capsys.readouterr().out
    assert key_id in listed and "ingest,read" in listed and token.split("_", 2)[2] not in listed
    assert run_cli(settings, "revoke", token) == 0  # the whole token names its key too
    assert "revoked" in capsys.readouterr().out
    assert not api_keys.keys(Lake(settings))[key_id].live
    assert run_cli(settings, "revoke", "f" * 16) == 1
    with pytest.raises(SystemExit):  # argparse refuses a scope that does not exist
        run_cli(settings, "create", "--name", "x", "--scope", "write")
