"""API keys: scoped bearer tokens for serving, kept hashed in the lake's ``api_keys`` table.

A token reads ``lrk_<key_id>_<secret>``: the key id (16 hex digits) names the key
in logs, the audit log and ``lambdarec keys list``, and the secret is 256 random
bits. The table keeps only the SHA-256 of the whole token, which is enough to
check a token and useless for making one: a 256-bit secret cannot be searched
for from its hash.

The table is an append-only log (a ``create`` row per key, a ``revoke`` row when
it goes), so creating and revoking never rewrite a file and any number of writers
may append at once. Several keys can be live together, which is how a key is
rotated with no downtime: create the new one, move the clients over, revoke the
old one. Serving reloads the table whenever its Delta version moves
(``KeyRing.reload``, on its catalogue poll), so a change reaches every worker
within a poll.

``lambdarec keys create|list|revoke`` is the command line; each change is audited.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, get_args

import pyarrow as pa
from pydantic import SecretStr

from lambdarec import audit
from lambdarec.lake import Lake
from lambdarec.settings import Settings
from schemas.tables import API_KEYS

Scope = Literal["ingest", "consent", "read", "admin"]
SCOPES: tuple[Scope, ...] = get_args(Scope)
"""What a key may do: ``ingest`` (POST events), ``consent`` (consent changes), ``read`` (recommendations,
similar items, trending, explanations and segments), ``admin`` (erasure, receipts, export, model reload)."""

PREFIX = "lrk"
CREATE, REVOKE = "create", "revoke"
NAME_MAX = 64
MISS_RELOAD_INTERVAL_S = 1.0  # the most often a token of an unknown key makes serving read the keys table


class UnknownKey(LookupError):
    """No key has this id."""


@dataclass(frozen=True)
class ApiKey:
    """One key as the table's log folds it: never the token, only its hash."""

    key_id: str
    name: str
    scopes: frozenset[str]
    created_at: datetime
    token_sha256: str
    revoked_at: datetime | None = None

    @property
    def live(self) -> bool:
        return self.revoked_at is None

    def matches(self, token: str) -> bool:
        """Whether ``token`` is this key's, compared in constant time."""
        return hmac.compare_digest(digest(token), self.token_sha256)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> tuple[str, str]:
    """A fresh ``(key_id, token)``."""
    key_id = secrets.token_hex(8)
    return key_id, f"{PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"


def key_id_of(token: str) -> str | None:
    """The key id a token names, or None when it is not shaped like one of ours."""
    prefix, _, rest = token.partition("_")
    key_id, _, secret = rest.partition("_")
    if prefix != PREFIX or len(key_id) != 16 or not secret:
        return None
    return key_id


def check_scopes(scopes: Iterable[str]) -> frozenset[str]:
    found = frozenset(scopes)
    if not found or not found <= set(SCOPES):
        raise ValueError(f"scopes must be one or more of {', '.join(SCOPES)}; got {sorted(found) or 'none'}")
    return found


def check_name(name: str) -> str:
    if not name or len(name) > NAME_MAX or not name.isprintable():
        raise ValueError(f"a key's name must be 1 to {NAME_MAX} printable characters")
    return name


def create(lake: Lake, name: str, scopes: Iterable[str], source: str = "cli") -> tuple[ApiKey, str]:
    """Create a key; returns it and its token, which exists nowhere else: show it once."""
    name, found = check_name(name), check_scopes(scopes)
    key_id, token = new_token()
    key = ApiKey(key_id, name, found, datetime.now(UTC), digest(token))
    _append(lake, [_row(key.key_id, CREATE, key.created_at, name, sorted(found), key.token_sha256)])
    _audit(lake, "key.create", source, key, "created")
    return key, token


def revoke(lake: Lake, key_id: str, source: str = "cli") -> ApiKey:
    """Revoke a key (a key already revoked stays as it was); raises ``UnknownKey``."""
    key = keys(lake).get(key_id)
    if key is None:
        raise UnknownKey(f"no API key has id {key_id!r} (`lambdarec keys list` shows them)")
    if not key.live:
        return key
    at = datetime.now(UTC)
    _append(lake, [_row(key_id, REVOKE, at, key.name, None, None)])
    revoked = ApiKey(key.key_id, key.name, key.scopes, key.created_at, key.token_sha256, at)
    _audit(lake, "key.revoke", source, revoked, "revoked")
    return revoked


def rotate(lake: Lake, name: str, scopes: Iterable[str], source: str = "cli") -> tuple[ApiKey, str]:
    """A new key named ``name``, then every older live key of that name revoked: how ``lambdarec up``
    hands its parts a fresh key each start without leaving the last start's live."""
    key, token = create(lake, name, scopes, source)
    for old in keys(lake).values():
        if old.live and old.name == name and old.key_id != key.key_id:
            revoke(lake, old.key_id, source)
    return key, token


def keys(lake: Lake, version: int | None = None) -> dict[str, ApiKey]:
    """Every key ever created, by id, revoked ones included."""
    if not lake.exists(API_KEYS):
        return {}
    return fold(lake.read_arrow(API_KEYS, version=version).to_pylist())


def fold(rows: Sequence[dict[str, Any]]) -> dict[str, ApiKey]:
    """The keys a log of create and revoke rows describes."""
    created = {row["key_id"]: row for row in rows if row["change"] == CREATE}
    revoked: dict[str, datetime] = {}
    for row in rows:
        if row["change"] == REVOKE and row["key_id"] in created:
            revoked[row["key_id"]] = min(row["at"], revoked.get(row["key_id"], row["at"]))
    return {key_id: ApiKey(key_id, row["name"], frozenset(row["scopes"] or ()), row["at"], row["token_sha256"],
                           revoked.get(key_id))
            for key_id, row in created.items()}


def provision(settings: Settings, name: str, scopes: Iterable[str]) -> Settings:
    """``settings`` with ``api_key`` set to a key created for ``name`` in their lake (an operator's own key,
    when one is set, is kept): how the demo and the benchmarks call their serving as a deployment would."""
    if settings.api_key.get_secret_value():
        return settings
    _, token = rotate(Lake(settings), name, scopes)
    return settings.model_copy(update={"api_key": SecretStr(token)})


def bearer(settings: Settings) -> dict[str, str]:
    """The header that presents ``settings.api_key``; none when it is empty."""
    token = settings.api_key.get_secret_value()
    return {"Authorization": f"Bearer {token}"} if token else {}


class KeyRing:
    """The live keys as serving checks them, read again only when the table's version moves."""

    def __init__(self, lake: Lake, miss_reload_interval_s: float = MISS_RELOAD_INTERVAL_S):
        self.lake = lake
        self.miss_reload_interval_s = miss_reload_interval_s
        self._version: int | None = None
        self._live: dict[str, ApiKey] = {}
        self._lock = threading.Lock()  # one reload at a time (the poller, and the start's first load)
        self._last_miss_reload = float("-inf")

    def reload(self) -> bool:
        """Load the table if it changed since the last load; whether it did."""
        with self._lock:
            version = self.lake.version(API_KEYS)
            if version == self._version:
                return False
            found = {} if version is None else keys(self.lake, version)
            self._live = {key_id: key for key_id, key in found.items() if key.live}  # swapped whole: readers see one
            self._version = version
            return True

    def reload_after_miss(self) -> bool:
        """A token of an unknown key may be one created a moment ago (``keys create``, then a request at once):
        reload now, unless a miss did in the last ``miss_reload_interval_s``, so forged tokens cost at most
        one table check that often. Whether the table changed."""
        now = time.monotonic()
        if now - self._last_miss_reload < self.miss_reload_interval_s:
            return False
        self._last_miss_reload = now
        return self.reload()

    @property
    def live(self) -> list[ApiKey]:
        return list(self._live.values())

    def authenticate(self, token: str) -> ApiKey | None:
        """The live key ``token`` belongs to, or None (unknown, malformed, revoked)."""
        key_id = key_id_of(token)
        key = self._live.get(key_id) if key_id is not None else None
        return key if key is not None and key.matches(token) else None


def _row(key_id: str, change: str, at: datetime, name: str, scopes: list[str] | None, sha: str | None) -> dict:
    return {"key_id": key_id, "change": change, "at": at, "name": name, "scopes": scopes, "token_sha256": sha}


def _append(lake: Lake, rows: list[dict]) -> None:
    lake.ensure(API_KEYS)
    lake.append_arrow(API_KEYS, pa.Table.from_pylist(rows, schema=API_KEYS.schema))


def _audit(lake: Lake, action: str, source: str, key: ApiKey, outcome: str) -> None:
    audit.append(lake, [audit.Entry(action=action, outcome=outcome, source=source,
                                    detail=f"key {key.key_id} ({key.name}: {','.join(sorted(key.scopes))})"
                                    f"{f' by {audit.operator()}' if source == 'cli' else ''}")])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    make = actions.add_parser("create", help="Create a key and print its token (shown this once, never stored).")
    make.add_argument("--name", required=True, help="Who or what uses the key (shown in `keys list` and the audit log).")
    make.add_argument("--scope", action="append", required=True, choices=SCOPES, dest="scopes",
                      help="A scope the key grants (repeat for several).")
    actions.add_parser("list", help="List the keys: id, name, scopes, created, revoked (never a secret).")
    drop = actions.add_parser("revoke", help="Revoke a key: serving refuses it within a poll (about a second).")
    drop.add_argument("key_id", help="The key's id (`keys list`), or its whole token.")


def command(args: argparse.Namespace, settings: Settings) -> int:
    """``lambdarec keys create|list|revoke``."""
    lake = Lake(settings)
    if args.action == "create":
        try:
            key, token = create(lake, args.name, args.scopes)
        except ValueError as exc:
            print(f"cannot create the key: {exc}")
            return 2
        print(f"created key {key.key_id} ({key.name}; scopes {', '.join(sorted(key.scopes))}). Its token, shown "
              "this once (serving keeps only its hash):")
        print(token)
        return 0
    if args.action == "list":
        print(render(keys(lake).values()))
        return 0
    try:
        key = revoke(lake, key_id_of(args.key_id) or args.key_id)
    except UnknownKey as exc:
        print(exc)
        return 1
    print(f"key {key.key_id} ({key.name}) is revoked since {key.revoked_at:%Y-%m-%d %H:%M:%S} UTC; serving refuses "
          f"it after its next key poll (settings serve_catalogue_poll_s)")
    return 0


def render(found: Iterable[ApiKey]) -> str:
    """A table of keys, oldest first."""
    lines = [f"{'KEY ID':16}  {'NAME':24}  {'SCOPES':28}  {'CREATED (UTC)':19}  REVOKED (UTC)"]
    for key in sorted(found, key=lambda k: k.created_at):
        revoked = f"{key.revoked_at:%Y-%m-%d %H:%M:%S}" if key.revoked_at else "-"
        lines.append(f"{key.key_id:16}  {key.name[:24]:24}  {','.join(sorted(key.scopes)):28}  "
                     f"{key.created_at:%Y-%m-%d %H:%M:%S}  {revoked}")
    return "\n".join(lines)
