"""Keyed pseudonyms for user ids: raw ids never leave the ingestion edge.

A keyed HMAC (not a plain hash) so that nobody without the key can confirm a
guessed id by hashing it; deterministic so one user keeps one pseudonym across
the stream, the lake and the model.

The key may carry a version, ``"<n>:<secret>"`` (``LAMBDAREC_PSEUDONYM_KEY=2:...``);
a key without one is version 1. Version 1 pseudonyms read ``u_<32 hex>``, later
versions ``u<n>_<32 hex>``, so a lake shows which key made each row. Rotating the
key starts new pseudonyms: history under the old key stays under the old
pseudonyms, unlinkable to the new ones without the old key (docs/privacy.md: key rotation).
Each lake records which keys made its pseudonyms, and every command that
pseudonymises refuses any other (``lambdarec.key_fingerprint``).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
from typing import TYPE_CHECKING

from pydantic import SecretStr

if TYPE_CHECKING:
    from pyspark.sql import Column

PREFIX = "u_"
HEX_CHARS = 32  # 128 bits: collisions are negligible at any realistic user count
DEVELOPMENT_KEY = "lambdarec-dev-key-change-me"
_VERSIONED = re.compile(r"^([1-9][0-9]*):(.*)$", re.DOTALL)
_BLOCK = 64  # SHA-256's block size, which HMAC pads the key to


class PseudonymKeyRefused(ValueError):
    """The configured key is not one this lake's pseudonyms were made with (``lambdarec.key_fingerprint``)."""


def pseudonymise(user_id: str, key: SecretStr | bytes | str) -> str:
    """The key version's prefix + the first 32 hex characters of HMAC-SHA256(secret, user_id)."""
    if not isinstance(user_id, str) or not user_id:
        raise ValueError("user_id must be a non-empty string")
    version, secret = key_version(key)
    return prefix(version) + hmac.digest(secret, user_id.encode("utf-8"), "sha256").hex()[:HEX_CHARS]


def prefix(version: int) -> str:
    return PREFIX if version == 1 else f"u{version}_"


def key_version(key: SecretStr | bytes | str) -> tuple[int, bytes]:
    """(version, secret bytes) of a configured key; an empty secret is refused."""
    if isinstance(key, SecretStr):
        key = key.get_secret_value()
    return _parsed(key.decode("utf-8") if isinstance(key, bytes) else key)


@functools.lru_cache(maxsize=8)  # the ingestion edge asks once per event, always about the same key
def _parsed(text: str) -> tuple[int, bytes]:
    found = _VERSIONED.match(text)
    version, secret = (int(found.group(1)), found.group(2)) if found else (1, text)
    if not secret:
        raise ValueError("the pseudonym key must not be empty")
    return version, secret.encode("utf-8")


def is_development_key(key: SecretStr | bytes | str) -> bool:
    return key_version(key)[1] == DEVELOPMENT_KEY.encode()


def spark_pseudonym(user_id: "Column", key: SecretStr | bytes | str) -> "Column":
    """``pseudonymise`` as a Spark expression (built-in functions only, no Python UDF): HMAC is
    SHA-256 over the key padded with the inner and outer pads, RFC 2104. Null stays null."""
    from pyspark.sql import functions as F

    version, secret = key_version(key)
    secret = hashlib.sha256(secret).digest() if len(secret) > _BLOCK else secret
    padded = secret.ljust(_BLOCK, b"\0")
    inner, outer = (bytes(b ^ pad for b in padded) for pad in (0x36, 0x5C))
    inner_hash = F.unhex(F.sha2(F.concat(F.lit(inner), F.encode(user_id, "UTF-8")), 256))
    digest = F.sha2(F.concat(F.lit(outer), inner_hash), 256)
    return F.when(user_id.isNotNull(), F.concat(F.lit(prefix(version)), F.substring(digest, 1, HEX_CHARS)))
