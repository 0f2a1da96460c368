"""Pseudonyms: keyed, deterministic, and not reversible without the key."""

import hashlib
import hmac

import pytest
from pydantic import SecretStr

from lambdarec.pseudonym import pseudonymise

pytestmark = pytest.mark.unit


def test_is_the_keyed_hmac_sha256_truncated_to_128_bits():
    expected = "u_" + hmac.new(b"k3y", b"alice", hashlib.sha256).hexdigest()[:32]
    assert pseudonymise("alice", SecretStr("k3y")) == expected
    assert pseudonymise("alice", b"k3y") == expected


def test_is_deterministic_and_distinguishes_users():
    key = SecretStr("k")
    assert pseudonymise("alice", key) == pseudonymise("alice", key)
    assert pseudonymise("alice", key) != pseudonymise("bob", key)
    assert len(pseudonymise("alice", key)) == 34


def test_depends_on_the_key_and_hides_the_raw_id():
    a, b = pseudonymise("alice", SecretStr("one")), pseudonymise("alice", SecretStr("two"))
    assert a != b
    assert "alice" not in a
    assert a != "u_" + hashlib.sha256(b"alice").hexdigest()[:32]  # not an unkeyed hash


def test_uses_the_settings_key(settings):
    assert pseudonymise("alice", settings.pseudonym_key) == pseudonymise(
        "alice", settings.pseudonym_key.get_secret_value().encode()
    )


@pytest.mark.parametrize("user_id, key", [("", SecretStr("k")), ("alice", SecretStr("")), ("alice", b"")])
def test_rejects_empty_ids_and_keys(user_id, key):
    with pytest.raises(ValueError):
        pseudonymise(user_id, key)
