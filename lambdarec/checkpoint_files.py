"""The speed queries' checkpoints: where they are, and small files read and kept beside them.

The checkpoint may be on local disk, HDFS or object storage (``s3a://``), so
these go through the same Hadoop filesystem Spark uses for the checkpoint
itself, never through a local path.
"""

from __future__ import annotations

import builtins
import json
from typing import TYPE_CHECKING, Any, cast

from lambdarec.settings import Settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


class CheckpointFiles:
    """Read, write (atomically where the filesystem can), list and delete files under a checkpoint."""

    def __init__(self, spark: "SparkSession", root: str):
        self._jvm: Any = cast(Any, spark._jvm)  # py4j's view of the JVM: untyped
        self._root = self._jvm.org.apache.hadoop.fs.Path(root)
        jsc: Any = cast(Any, spark._jsc)
        self._fs = self._root.getFileSystem(jsc.hadoopConfiguration())

    def _path(self, name: str):
        return self._jvm.org.apache.hadoop.fs.Path(self._root, name)

    def read(self, name: str) -> str | None:
        path = self._path(name)
        if not self._fs.exists(path):
            return None
        stream = self._fs.open(path)
        try:
            return bytes(self._jvm.org.apache.commons.io.IOUtils.toByteArray(stream)).decode()
        finally:
            stream.close()

    def write(self, name: str, text: str) -> None:
        """Write to a temporary name, then rename over ``name`` (atomic on HDFS and local disks)."""
        path, tmp = self._path(name), self._path(f"{name}.tmp")
        stream = self._fs.create(tmp, True)
        try:
            stream.write(bytearray(text.encode()))
        finally:
            stream.close()
        if self._fs.exists(path):
            self._fs.delete(path, False)
        if not self._fs.rename(tmp, path):
            raise OSError(f"could not rename {tmp} to {path}")

    def list(self, folder: str) -> list[str]:
        path = self._path(folder)
        if not self._fs.exists(path):
            return []
        return [status.getPath().getName() for status in self._fs.listStatus(path)]

    def delete(self, name: str) -> None:
        self._fs.delete(self._path(name), False)

    def discard_interrupted_first_offsets(self) -> "builtins.list[str]":
        """Remove what a query killed while writing its first batch's offsets left behind; the names removed.

        Spark writes a batch's offsets as a hidden temporary file and renames it to the batch
        number. A kill between the two, on a query's first batch, leaves only the temporary
        file; Spark 4.2 then finds no batch, checks that the checkpoint of a query with no
        batch is empty (``spark.sql.streaming.verifyCheckpointDirectoryEmptyOnStart``) and
        refuses every restart. No batch ran, so nothing depends on that file. Once any
        batch's offsets exist, nothing is removed.
        """
        names = self.list("offsets")
        if any(not name.startswith(".") for name in names):
            return []
        for name in names:
            self.delete(f"offsets/{name}")
        return names

    def query_id(self) -> str:
        """The query's id from the checkpoint's ``metadata``: stable across restarts of the same query."""
        text = self.read("metadata")
        if text is None:
            raise FileNotFoundError(f"no metadata in checkpoint {self._root}")
        return json.loads(text.splitlines()[0])["id"]

    def committed_offsets(self) -> "builtins.list[Any] | None":
        """Each source's end offset (parsed JSON, in the query's source order) as of the newest
        committed batch; None before the first commit."""
        committed = [int(name) for name in self.list("commits") if name.isdigit()]
        if not committed:
            return None
        text = self.read(f"offsets/{max(committed)}")
        if text is None:
            return None
        # v1, then the batch's metadata, then one line per source ("-" for a source with no offset yet)
        return [None if line.strip() == "-" else json.loads(line) for line in text.splitlines()[2:]]


def speed_checkpoint(settings: Settings, query: str) -> str:
    """Where a speed query keeps its checkpoint: ``query`` is ``events``, ``features``, ``realtime`` or
    ``dimensions``."""
    suffix = {"events": "", "features": "_features", "realtime": "_realtime", "dimensions": "_dimensions"}[query]
    return f"{settings.checkpoint_root}/speed{suffix}"
