"""What serving knows of erasures: whose model row it must not use, and whom to forget in the speed view.

The API's own requests apply at once (``erase``); requests made elsewhere (the
CLI, another replica) arrive with the registry poll (``reload``), from the
privacy tables. A model trained on ``events`` older than a subject's DELETE
still holds them, so serving scores them as a new user until one that is not; a
cached copy of such a model's bundle is dropped once the receipt is in.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from lambdarec import privacy
from lambdarec.lake import Lake
from schemas.tables import PRIVACY_RECEIPTS, PRIVACY_REQUESTS
from serving.views.speed.view import SpeedView


class Erasures:
    def __init__(self, lake: Lake, speed_view: SpeedView,
                 on_receipts: Callable[[list[tuple[int, float]]], object] = lambda completed: None):
        """``on_receipts(completed)`` runs whenever receipts were added, with every receipt's (events version
        of its DELETE, completion time as a timestamp): the model store drops cached bundles made before."""
        self.lake = lake
        self.speed_view = speed_view
        self.on_receipts = on_receipts
        self._lock = threading.Lock()
        self._subjects: dict[str, int | None] = {}  # subject_hash -> events version of the DELETE (None: pending)
        self._forgotten: set[str] = set()  # request ids applied to the speed view
        self._read_versions: tuple[int | None, int | None] | None = None  # of the privacy tables, when last read

    def erase(self, request: privacy.ErasureRequest) -> None:
        """Apply a request just recorded (a pending one): drop the user now."""
        with self._lock:
            self._subjects.setdefault(request.subject_hash, None)
            self._forget(request)

    def reload(self) -> None:
        """Take in requests and receipts written by anyone (the poller calls this); the tables are
        read only when one has a new version."""
        versions = (self.lake.version(PRIVACY_REQUESTS), self.lake.version(PRIVACY_RECEIPTS))
        if versions == self._read_versions:
            return
        subjects = privacy.erased_subjects(self.lake)
        with self._lock:
            for request in privacy.pending(self.lake):
                self._forget(request)
            self._subjects = subjects
        if self._read_versions is None or versions[1] != self._read_versions[1]:
            self.on_receipts(privacy.completed_deletes(self.lake))
        self._read_versions = versions

    def hides(self, pseudonym: str, model_events_version: int) -> bool:
        """Whether a model trained on ``events`` version ``model_events_version`` still holds an erased user."""
        if not self._subjects:
            return False
        subject = privacy.subject_hash(pseudonym)
        if subject not in self._subjects:
            return False
        deleted = self._subjects[subject]
        return deleted is None or model_events_version < deleted

    def _forget(self, request: privacy.ErasureRequest) -> None:
        if request.request_id not in self._forgotten and request.user_id:
            self.speed_view.forget(request.user_id, request.requested_at)
            self._forgotten.add(request.request_id)
