"""One key, one lake: the pseudonym key's fingerprint, recorded in the lake and checked before every use.

A lake's pseudonyms mean something only under the key that made them. A command run
with another key (from another folder without ``.env``, with the development key, with
a mistyped secret) finds nobody: an erasure would complete, receipt and all, having
erased nothing, and serving would give every user a second pseudonym that nothing links
to the first. So the first command that uses a key version records its fingerprint in
the Delta table ``pseudonym_keys``, and every command that pseudonymises (serving, the
speed job, ``erase``, ``export``, ``import``) calls ``verify_pseudonym_key`` at start:

- a version the lake records under the same fingerprint passes;
- a version the lake records under another fingerprint is refused, with the versions
  the lake knows;
- a version newer than every recorded one is a rotation (``"2:<secret>"``, docs/privacy.md: key
  rotation): it is recorded beside the older ones, which stay valid for the rows made
  under them, and the log says which older versions hold rows this key cannot reach;
- a version older than the newest recorded one that the lake never saw is refused:
  nothing in it was pseudonymised with that key.

A fingerprint is HMAC-SHA256 of a fixed label under the key, truncated: equal keys have
equal fingerprints, and it tells no more about the key than any pseudonym in the lake
does. Recording is a MERGE that inserts the version's row only if there is none, so of two
commands starting at once on a new lake one records and the other checks against it.
"""

from __future__ import annotations

import hmac
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timezone

import pyarrow as pa
from deltalake.exceptions import CommitFailedError
from pydantic import SecretStr

from lambdarec.lake import Lake
from lambdarec.pseudonym import PseudonymKeyRefused, is_development_key, key_version
from lambdarec.settings import Settings
from schemas.tables import PSEUDONYM_KEYS

log = logging.getLogger(__name__)

LABEL = b"lambdarec pseudonym key fingerprint"
FINGERPRINT_CHARS = 16  # 64 bits: enough to tell keys apart, not to stand in for one
RECORD_ATTEMPTS = 5  # commits that fail because another command created the table or recorded at once


@dataclass(frozen=True)
class Recorded:
    """A key version as the lake records it."""

    fingerprint: str
    recorded_at: datetime
    recorded_by: str


@dataclass(frozen=True)
class KeyCheck:
    """A key that passed: its version and fingerprint, and every version the lake records."""

    version: int
    fingerprint: str
    recorded: dict[int, Recorded]

    @property
    def newest(self) -> int:
        return max(self.recorded)

    @property
    def note(self) -> str | None:
        """What an operator must know when several key versions are in play (None when there is one)."""
        if self.version < self.newest:
            return (f"pseudonym key version {self.version} is older than this lake's newest, {self.newest}: it "
                    "reaches only the rows pseudonymised before the rotation, and new rows must use the newest key")
        older = sorted(v for v in self.recorded if v < self.version)
        if older:
            return (f"this lake also holds pseudonyms made with key versions {older}, which key version "
                    f"{self.version} cannot reach: erase or export a user once with each of those keys too "
                    "(docs/privacy.md: key rotation)")
        return None


def fingerprint(key: SecretStr | bytes | str) -> str:
    """HMAC-SHA256(secret, ``LABEL``), truncated: the same for the same key, and no way back to it."""
    return hmac.digest(key_version(key)[1], LABEL, "sha256").hex()[:FINGERPRINT_CHARS]


def verify_pseudonym_key(settings: Settings, command: str) -> KeyCheck:
    """Check ``settings.pseudonym_key`` against the lake, recording its version on first use; raises
    ``PseudonymKeyRefused`` for a key the lake's pseudonyms were not made with. ``command`` names the caller
    in the record and the log."""
    version, mine = key_version(settings.pseudonym_key)[0], fingerprint(settings.pseudonym_key)
    lake = Lake(settings)
    recorded = _recorded(lake)
    if version not in recorded:
        if recorded and version < max(recorded):
            raise PseudonymKeyRefused(
                f"pseudonym key version {version} was never used on the lake at {lake.root}, whose pseudonyms "
                f"were made with key versions {sorted(recorded)}: nothing in it was pseudonymised with this key. "
                f"{_advice(settings, recorded)}")
        _record(lake, version, mine, command)
        recorded = _recorded(lake)
    check = KeyCheck(version, mine, recorded)
    known = recorded[version]
    if known.fingerprint != mine:
        raise PseudonymKeyRefused(
            f"LAMBDAREC_PSEUDONYM_KEY is not the key this lake's pseudonyms were made with: the lake at {lake.root} "
            f"records key version {version} with fingerprint {known.fingerprint} (first used by {known.recorded_by} "
            f"at {known.recorded_at:%Y-%m-%d %H:%M} UTC), this key's is {mine}. {_advice(settings, recorded)}")
    (log.warning if check.note else log.info)(json.dumps({
        "event": "pseudonym_key_checked", "command": command, "key_version": version, "fingerprint": mine,
        "recorded_versions": sorted(recorded), **({"note": check.note} if check.note else {})}))
    return check


def _recorded(lake: Lake) -> dict[int, Recorded]:
    if not lake.exists(PSEUDONYM_KEYS):
        return {}
    rows = sorted(lake.read_arrow(PSEUDONYM_KEYS).to_pylist(), key=lambda row: row["recorded_at"])
    found: dict[int, Recorded] = {}
    for row in rows:  # one row per version (the app transaction); the first recorded would win regardless
        found.setdefault(row["key_version"], Recorded(row["fingerprint"], row["recorded_at"], row["recorded_by"]))
    return found


def _record(lake: Lake, version: int, fingerprint_: str, command: str) -> None:
    """Insert the version's row unless one is there: a MERGE, so of two commands recording at once (or creating
    the table at once) one commits and the other fails and finds the winner's row."""
    row = pa.Table.from_pylist([{"key_version": version, "fingerprint": fingerprint_, "recorded_by": command,
                                 "recorded_at": datetime.now(timezone.utc)}], schema=PSEUDONYM_KEYS.schema)
    for attempt in range(1, RECORD_ATTEMPTS + 1):
        try:
            merger = lake.merge_arrow(PSEUDONYM_KEYS, row, "t.key_version = s.key_version")
            assert merger is not None  # no app transaction: never skipped
            inserted = merger.when_not_matched_insert_all().execute().get("num_target_rows_inserted")
        except CommitFailedError:
            if version in _recorded(lake):  # another command's row won: the caller checks against it
                return
            if attempt == RECORD_ATTEMPTS:
                raise
            continue
        if inserted:
            log.info(json.dumps({"event": "pseudonym_key_recorded", "command": command, "key_version": version,
                                 "fingerprint": fingerprint_, "lake": lake.root}))
        return


def _advice(settings: Settings, recorded: dict[int, Recorded]) -> str:
    known = ", ".join(f"{v} (fingerprint {r.fingerprint})" for v, r in sorted(recorded.items()))
    development = ("This is the built-in development key: was the real key's setting (LAMBDAREC_PSEUDONYM_KEY, or "
                   ".env in the folder you run from) not loaded? " if is_development_key(settings.pseudonym_key) else "")
    return (f"{development}The lake knows key versions {known}. Set LAMBDAREC_PSEUDONYM_KEY to the key of one of "
            f"them (the newest, {max(recorded)}, for new data); a new key needs a new version, "
            f"\"{max(recorded) + 1}:<secret>\" (docs/privacy.md: key rotation).")
