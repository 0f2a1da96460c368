"""Keyed pseudonyms for user ids: raw ids never leave the ingestion edge.

A keyed HMAC (not a plain hash) so that nobody without the key can confirm a
guessed id by hashing it; deterministic so one user keeps one pseudonym across
the stream, the lake and the model.
"""

from __future__ import annotations

import hashlib
import hmac

from pydantic import SecretStr

PREFIX = "u_"
HEX_CHARS = 32  # 128 bits: collisions are negligible at any realistic user count


def pseudonymise(user_id: str, key: SecretStr | bytes | str) -> str:
    """``"u_"`` + the first 32 hex characters of HMAC-SHA256(key, user_id)."""
    if not isinstance(user_id, str) or not user_id:
        raise ValueError("user_id must be a non-empty string")
    secret = _key_bytes(key)
    if not secret:
        raise ValueError("the pseudonym key must not be empty")
    digest = hmac.new(secret, user_id.encode("utf-8"), hashlib.sha256).hexdigest()
    return PREFIX + digest[:HEX_CHARS]


def _key_bytes(key: SecretStr | bytes | str) -> bytes:
    if isinstance(key, SecretStr):
        key = key.get_secret_value()
    return key.encode("utf-8") if isinstance(key, str) else bytes(key)
