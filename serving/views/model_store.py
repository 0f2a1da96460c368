"""Keeps the serving model in step with the registry, swapping versions atomically.

A published model comes with a model bundle (``lambdarec.model_bundle``) that the
publish gate wrote into the lake; the store memory-maps it (copying it first when
the lake is remote) beside the serving model, prepares the caches requests derive
from it, and swaps it in with one reference assignment: a request sees the old
model or the new one, never a mix. A model published without a bundle gets one
built by an idle-priority loader process (``python -m lambdarec.model_bundle``), so
the work never competes with requests for this process's GIL. A failed load keeps
the old model. Local bundles are cached per lake and version, so a restarted server
(or a second one on the same host) maps them at once.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import pickle
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lambdarec.lake import Lake
from serving.views.log_tail import LogTail
from lambdarec.model_bundle import (
    LOAD_ERROR_EXIT,
    ModelLoadError,
    copy_model_bundle,
    local_path,
    model_bundle_uri,
    read_meta,
)
from lambdarec.registry import latest_published_in
from lambdarec.settings import Settings
from schemas.tables import MODELS
from serving.views.model import Model, open_model

__all__ = ["Model", "ModelLoadError", "ModelStore"]

log = logging.getLogger(__name__)
KEPT_BUNDLES = 2  # the serving version and the one before it
SWAP_LOCK = ".swap.lock"  # in the bundle cache: held by the one serving process of the host that is swapping
# Runs lambdarec.model_bundle as __main__ after dropping to SCHED_IDLE (nice 19 where there is none),
# before any heavy import: a merely niced loader still takes CPU time from requests on a small
# host, while an idle-class one runs only on CPU time that requests leave unused.
LOADER_BOOTSTRAP = """
import os, runpy
try:
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
except (AttributeError, OSError):
    os.nice(19)
runpy.run_module("lambdarec.model_bundle", run_name="__main__", alter_sys=True)
"""


class ModelStore:
    """Holds the serving model and keeps it in step with the registry."""

    def __init__(
        self,
        settings: Settings,
        lake: Lake | None = None,
        prepare: Callable[[Model], None] | None = None,
        pause: Callable[[], object] = lambda: None,
    ):
        """``prepare(model)`` builds what requests derive from a model (caches) before it is swapped
        in; ``pause()`` runs between the short steps of a load (``serving.idle_gate``)."""
        self.lake = lake or Lake(settings)  # the lake's settings are the ones the store uses
        self.prepare = prepare
        self.pause = pause
        self.current: Model | None = None
        self.last_error: str | None = None
        self.last_checked_at: float | None = None
        self._reload_lock = threading.Lock()
        self._registry = LogTail(self.lake, MODELS)
        self._registry_seen: int | None = None  # the registry version the serving model reflects
        self.registry_rows = MODELS.schema.empty_table()  # the registry as last polled (for /metrics)

    def reload(self) -> bool:
        """Load the published model if it differs from the serving one; True if swapped."""
        with self._reload_lock:
            try:
                self.pause()
                seen = self._registry.poll(self.pause)  # reads only new commits: polls stay cheap
                if seen != self._registry_seen:
                    self.registry_rows = self._registry.rows()
                if seen is None or seen == self._registry_seen:
                    self.last_checked_at = time.time()
                    return False
                self.pause()
                row = latest_published_in(self._registry.rows())
            except Exception as exc:
                self.last_error = f"registry read failed: {exc}"
                raise
            self.last_checked_at = time.time()
            serving = self.current
            if row is None or (serving is not None and serving.version == int(row["model_version"])):
                self._registry_seen = seen
                return False
            try:
                self.pause()
                bundle = self._model_bundle(row)
                with self._host_turn():
                    model = open_model(bundle, loaded_at=time.time(), pause=self.pause,
                                       ann_ef=self.lake.settings.serve_ann_ef)
                    model.touch(self.pause)
                    if serving is not None:
                        model.carry_blocks(serving, self.pause)
                    self.pause()
                    if self.prepare is not None:
                        self.prepare(model)
            except Exception as exc:
                self.last_error = f"loading model {row['model_version']} failed: {exc}"
                raise
            self.current = model
            self._registry_seen = seen  # a failed load leaves it, so the next poll retries
            self.last_error = None
            self._prune()
            log.info(
                "model loaded",
                extra={
                    "model_version": model.version,
                    "source_events_version": model.source_events_version,
                    "n_users": len(model.user_positions),
                    "n_items": len(model.item_ids),
                    "previous_version": serving.version if serving else None,
                },
            )
            return True

    def _model_bundle(self, row: dict[str, Any]) -> Path:
        """The model's bundle: the lake's published one when the lake is local, else a local copy
        (cached per lake and version) of the published one, or one built here when there is none."""
        version = int(row["model_version"])
        published = local_path(model_bundle_uri(self.lake.settings, version))
        if published is not None and self._is_complete(published, row):
            return published
        bundle = self._cache() / f"v{version}-{self._lake_key()}"
        if self._is_complete(bundle, row):
            return bundle
        shutil.rmtree(bundle, ignore_errors=True)  # partial or stale; open maps of it stay valid
        building = bundle.with_name(f".building-{bundle.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        try:
            how = self._fill(row, building)
            try:
                building.rename(bundle)
            except OSError:  # another server on this host finished the same version first
                if not self._is_complete(bundle, row):
                    raise
        finally:
            shutil.rmtree(building, ignore_errors=True)
        log.info("model bundle ready", extra={"model_version": version, "how": how})
        return bundle

    def _fill(self, row: dict[str, Any], building: Path) -> str:
        """Copy the published bundle from remote storage or, without one, build it; says which."""
        if local_path(self.lake.settings.lake_root) is None:
            try:
                copy_model_bundle(model_bundle_uri(self.lake.settings, int(row["model_version"])), building)
                if self._is_complete(building, row):
                    return "copied"
            except OSError as exc:
                log.info("no published model bundle to copy", extra={"error": str(exc)})
            shutil.rmtree(building, ignore_errors=True)
        seconds = self._build_in_loader(row, building)
        return f"built in {seconds:.1f} s"

    def _build_in_loader(self, row: dict[str, Any], bundle: Path) -> float:
        """Run ``lambdarec.model_bundle`` in a fresh interpreter at idle priority (nothing of this process is copied)."""
        done = subprocess.run(
            [sys.executable, "-c", LOADER_BOOTSTRAP, str(bundle)],
            input=pickle.dumps((self.lake.settings, row)),
            capture_output=True,
            check=False,
        )
        message = done.stderr.decode(errors="replace").strip()
        if done.returncode == LOAD_ERROR_EXIT:
            raise ModelLoadError(message)
        if done.returncode != 0:
            last = message.splitlines()[-1] if message else "no output"
            raise ModelLoadError(f"model {row['model_version']}: loader exited {done.returncode}: {last}")
        return float(done.stdout.split()[-1])  # the seconds, printed last

    @contextmanager
    def _host_turn(self) -> Iterator[None]:
        """One swap at a time among the serving processes of this host (they share its bundle cache):
        a swap's CPU comes out of the requests' share, and two workers swapping at once queued
        requests on a 2-core host where one at a time did not (README: measurements)."""
        with (self._cache() / SWAP_LOCK).open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or the process dies
            yield

    def _is_complete(self, bundle: Path, row: dict[str, Any]) -> bool:
        meta = read_meta(bundle)
        return (
            meta is not None
            and meta.get("version") == int(row["model_version"])
            and meta.get("source_events_version") == int(row["source_events_version"])
            and meta.get("lake") == self.lake.settings.lake_root
        )

    def drop_cached(self, erasures: list[tuple[int, float]]) -> list[int]:
        """Delete this lake's cached bundles that may hold an erased user: those of models trained on ``events``
        before an erasure's delete, cached before that erasure completed (``erasures``: (the delete's events
        version, its completion as a timestamp)). The erasure rebuilt the published bundle, but a cached copy
        of the same version still looks complete. Open maps stay valid; a later load copies or builds afresh.
        The versions dropped."""
        trained = {int(row["model_version"]): row["source_events_version"] for row in self.registry_rows.to_pylist()
                   if row["source_events_version"] is not None}
        dropped = []
        for bundle in self._cache().glob(f"v*-{self._lake_key()}"):
            version = int(bundle.name[1:].split("-", 1)[0])
            built = bundle.stat().st_mtime
            if version in trained and any(trained[version] < deleted and built < completed
                                          for deleted, completed in erasures):
                shutil.rmtree(bundle, ignore_errors=True)
                dropped.append(version)
        return sorted(dropped)

    def _prune(self) -> None:
        """Remove this lake's cached bundles older than the newest ``KEPT_BUNDLES`` versions."""
        bundles = sorted(
            self._cache().glob(f"v*-{self._lake_key()}"),
            key=lambda path: int(path.name[1:].split("-", 1)[0]),
        )
        for bundle in bundles[:-KEPT_BUNDLES]:
            shutil.rmtree(bundle, ignore_errors=True)

    def _cache(self) -> Path:
        root = self.lake.settings.model_cache_root
        root.mkdir(parents=True, exist_ok=True)
        return root

    def _lake_key(self) -> str:
        return hashlib.sha256(self.lake.settings.lake_root.encode()).hexdigest()[:12]
