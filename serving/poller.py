"""A daemon thread that calls reload functions every few seconds (registry, item catalogue)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Poller:
    """Calls each ``reloads`` function every ``interval_s``; a failure is logged and retried next time."""

    def __init__(self, interval_s: float, reloads: list[Callable[[], object]]):
        self.interval_s = interval_s
        self.reloads = reloads
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="serving-poller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            for reload in self.reloads:
                try:
                    reload()
                except Exception:
                    log.exception("reload failed; serving what was loaded before", extra={"reload": reload.__qualname__})
            self._stop.wait(self.interval_s)
