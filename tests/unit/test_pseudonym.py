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


def test_a_versioned_key_marks_its_pseudonyms_and_version_1_keeps_the_old_form():
    import re

    from lambdarec.pseudonym import key_version
    from schemas.events import PSEUDONYM_PATTERN

    assert key_version("s3cret") == (1, b"s3cret")
    assert key_version(SecretStr("2:s3cret")) == (2, b"s3cret")
    assert pseudonymise("alice", "1:s3cret") == pseudonymise("alice", "s3cret")
    rotated = pseudonymise("alice", "2:s3cret")
    assert rotated.startswith("u2_") and rotated[3:] == pseudonymise("alice", "s3cret")[2:]
    for good in (pseudonymise("alice", "k"), rotated, pseudonymise("bob", "12:k")):
        assert re.fullmatch(PSEUDONYM_PATTERN, good), good
    for raw in ("alice", "u_abc", "u1_" + "a" * 32, "u_" + "A" * 32, "u_" + "a" * 33, "u0_" + "a" * 32):
        assert not re.fullmatch(PSEUDONYM_PATTERN, raw), raw
    with pytest.raises(ValueError, match="empty"):
        key_version("3:")


def test_serving_refuses_the_development_key_unless_development_mode_allows_it(tmp_path):
    from lambdarec.settings import Settings
    from serving.app import DevelopmentKeyRefused, create_app

    with pytest.raises(DevelopmentKeyRefused, match="LAMBDAREC_PSEUDONYM_KEY"):
        create_app(Settings(root=tmp_path, allow_development_key=False))
    create_app(Settings(root=tmp_path, allow_development_key=False, pseudonym_key=SecretStr("a real secret")))
    create_app(Settings(root=tmp_path, allow_development_key=True))
