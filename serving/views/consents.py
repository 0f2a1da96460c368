"""What serving knows of consent: who has withdrawn personalisation, and so gets non-personal answers.

A change made through this API applies at once (``change``); changes from the
consent topic's other producers, or another replica, arrive with the poll
(``reload``) once the speed job has stored them in ``user_consent``. Until then
an API change is kept here, so a poll cannot undo it.
"""

from __future__ import annotations

import threading
from typing import Any

from lambdarec import consent
from lambdarec.lake import Lake
from schemas.consent import ConsentChange
from schemas.tables import USER_CONSENT
from serving.views.speed.view import SpeedView


class Consents:
    def __init__(self, lake: Lake, speed_view: SpeedView):
        self.lake = lake
        self.speed_view = speed_view
        self._lock = threading.Lock()
        self._stored: list[dict[str, Any]] = []  # user_consent rows, in effect order
        self._unstored: list[dict[str, Any]] = []  # this replica's changes not yet in user_consent
        self._withdrawn: frozenset[str] = frozenset()
        self._stored_version: int | None = None  # of user_consent, when last read

    def change(self, change: ConsentChange, at: Any) -> None:
        """Apply a change this replica just produced (``at``: its Kafka timestamp)."""
        with self._lock:
            self._unstored.append({**change.model_dump(), "kafka_timestamp": at})
            self._update()

    def reload(self) -> None:
        """Take in the changes the speed job stored (the poller calls this); the table is read
        only when it has a new version."""
        version = self.lake.version(USER_CONSENT)
        if version == self._stored_version:
            return
        stored = consent.history(self.lake)
        ids = {row["change_id"] for row in stored}
        with self._lock:
            self._stored, self._stored_version = stored, version
            self._unstored = [row for row in self._unstored if row["change_id"] not in ids]
            self._update()

    def personalises(self, pseudonym: str) -> bool:
        return pseudonym not in self._withdrawn

    def _update(self) -> None:
        changes = sorted([*self._stored, *self._unstored], key=lambda row: row["kafka_timestamp"])
        self._withdrawn = frozenset(consent.withdrawn(changes))
        self.speed_view.withhold(self._withdrawn)
