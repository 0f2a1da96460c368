"""Follows an append-only Delta table by reading only the commits it has not seen.

Serving checks the model registry every few seconds, and reads it again when a
model is published, while requests are being served. Through delta-rs, even a poll
that finds one new commit reloads the table, on delta-rs's own threads as well as
this one, and on a small host that CPU queues requests behind a model swap (the
measurement is in docs/measurements.md).
A Delta log is a folder of numbered JSON commits, each written once and
atomically, so the next commit is one existence check away. An append commit
names the data files it added, and only those are read.

Anything other than a plain append makes the tail reload the snapshot through
delta-rs: compaction's removes, a schema or protocol change, deletion vectors,
or a missing commit that a checkpoint has replaced. The tail is therefore never
wrong, only sometimes slower.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from lambdarec.lake import Lake
from schemas.tables import TableSpec

APPEND_ACTIONS = {"commitInfo", "add", "txn"}  # what a plain append commit may hold


class LogTail:
    """The rows of one unpartitioned, append-only table at its newest version, kept up to date by ``poll``."""

    def __init__(self, lake: Lake, spec: TableSpec):
        if spec.partition_by:
            raise ValueError(f"{spec.name} is partitioned; a log tail reads unpartitioned tables")
        self.lake = lake
        self.spec = spec
        self.version: int | None = None
        self._files: dict[str, pa.Table] = {}  # data file (as the log names it) -> its rows
        self._fs, self._root = pafs.FileSystem.from_uri(lake.uri(spec))

    def poll(self, pause: Callable[[], object] = lambda: None) -> int | None:
        """Apply the commits since the last poll; returns the version now held (None: no table).

        ``pause()`` runs before each data file read (``serving.idle_gate``).
        """
        if self.version is None:
            return self._reload(pause)
        while (actions := self._commit(self.version + 1)) is not None:
            added = _appended_files(actions)
            if added is None:
                return self._reload(pause)
            for path in added:
                pause()
                self._files[path] = self._read(path)
            self.version += 1
        if self._checkpointed_beyond(self.version):  # the next commit was cleaned up after a checkpoint
            return self._reload(pause)
        return self.version

    def rows(self) -> pa.Table:
        """Every row of the version ``poll`` last returned."""
        tables = list(self._files.values())
        return pa.concat_tables(tables) if tables else self.spec.schema.empty_table()

    def _reload(self, pause: Callable[[], object]) -> int | None:
        """The snapshot from delta-rs (protocol checks included), keeping the files already read."""
        if not self.lake.exists(self.spec):
            self.version, self._files = None, {}
            return None
        table = self.lake.open(self.spec)
        paths = pa.table(table.get_add_actions(flatten=True)).column("path").to_pylist()
        files = {}
        for path in paths:
            if path in self._files:
                files[path] = self._files[path]
            else:
                pause()
                files[path] = self._read(path)
        self.version, self._files = table.version(), files
        return self.version

    def _commit(self, version: int) -> list[dict] | None:
        try:
            with self._fs.open_input_stream(f"{self._root}/_delta_log/{version:020d}.json") as stream:
                text = stream.read().decode()
        except FileNotFoundError:
            return None
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def _checkpointed_beyond(self, version: int) -> bool:
        try:
            with self._fs.open_input_stream(f"{self._root}/_delta_log/_last_checkpoint") as stream:
                return int(json.loads(stream.read())["version"]) > version
        except FileNotFoundError:
            return False

    def _read(self, path: str) -> pa.Table:
        fs, location = pafs.FileSystem.from_uri(path) if "://" in path else (self._fs, f"{self._root}/{unquote(path)}")
        with fs.open_input_file(location) as handle:
            return pq.read_table(handle, schema=self.spec.schema, use_threads=False)


def _appended_files(actions: list[dict]) -> list[str] | None:
    """The data files a plain append commit added; None for any other kind of commit."""
    added = []
    for action in actions:
        if not set(action) <= APPEND_ACTIONS:
            return None
        if "add" in action:
            if action["add"].get("deletionVector"):
                return None
            added.append(action["add"]["path"])
    return added
