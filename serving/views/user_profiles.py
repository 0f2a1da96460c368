"""Users' operational profiles (``user_profiles``, kept by CDC or imported): the segment of a user
with no events yet. Reloaded when the table has a new version."""

from __future__ import annotations

from typing import Any

from lambdarec.lake import Lake
from schemas.tables import USER_PROFILES

SEGMENT_FIELDS = ("country", "age_band")


class UserProfiles:
    def __init__(self, lake: Lake):
        self.lake = lake
        self.version: int | None = None
        self._profiles: dict[str, dict[str, Any]] = {}

    def reload(self) -> bool:
        version = self.lake.version(USER_PROFILES)
        if version is None or version == self.version:
            return False
        rows = self.lake.read_arrow(USER_PROFILES, version).select(["user_id", *SEGMENT_FIELDS]).to_pylist()
        self._profiles = {row.pop("user_id"): row for row in rows}  # one reference swap: readers never wait
        self.version = version
        return True

    def get(self, pseudonym: str) -> dict[str, Any] | None:
        return self._profiles.get(pseudonym)
