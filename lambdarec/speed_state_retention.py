"""How long an erased user's speed state outlives its clearing in the features query's checkpoint.

The features query keeps its state in RocksDB, checkpointed as one version per
micro-batch (``<version>.zip`` naming that version's SST files). Clearing a
user's state writes a deletion: left alone, RocksDB keeps the old value and
the deletion (which holds the key, the pseudonym) in SST files until some
later compaction, and Spark keeps every file of the last
``spark.sql.streaming.minBatchesToRetain`` versions (100 by default). So the
query runs with (``FEATURES_CONF``):

- ``compactOnCommit``: every commit compacts the whole database, so the version a
  batch writes holds neither the deleted value nor the deletion;
- changelog checkpointing off: every version is a snapshot, so no older
  snapshot must be kept to rebuild a newer version;
- ``minBatchesToRetain`` = ``speed_state_versions_kept``: the versions kept, and
  the state store maintenance, every ``speed_state_maintenance_s``, deletes the
  older ones and the SST files only they name (``session_conf``: the maintenance
  thread is shared by every query of the process).

After the batch that cleared the user commits version V, the pseudonym is gone
from the checkpoint once every version before V is deleted: after
``speed_state_versions_kept - 1`` more batches and one maintenance run. The
erasure job drives those batches and checks which versions are left
(``oldest_version``).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from lambdarec.settings import Settings

if TYPE_CHECKING:
    from lambdarec.checkpoint_files import CheckpointFiles

STATE_FILE = re.compile(r"^(\d+)(?:_[^.]*)?\.(zip|changelog|delta|snapshot)$")
"""A state version's file: RocksDB's ``<v>.zip`` and ``<v>.changelog`` (``<v>_<id>`` in checkpoint format 2),
the HDFS-backed store's ``<v>.delta`` and ``<v>.snapshot``."""


def features_conf(settings: Settings) -> dict[str, str]:
    """Spark SQL settings the features query starts with (beside its state store provider)."""
    prefix = "spark.sql.streaming.stateStore.rocksdb."
    return {
        "spark.sql.streaming.minBatchesToRetain": str(settings.speed_state_versions_kept),
        f"{prefix}compactOnCommit": "true",
        f"{prefix}changelogCheckpointing.enabled": "false",
    }


def session_conf(settings: Settings) -> dict[str, str]:
    """Spark SQL settings of the whole speed job: the state store maintenance interval is read when the
    first query of the process loads a state store, whichever query that is."""
    return {"spark.sql.streaming.stateStore.maintenanceInterval": f"{settings.speed_state_maintenance_s}s"}


def bound_s(settings: Settings) -> float:
    """About how long after the clearing batch the pseudonym is gone from the checkpoint, if batches run
    back to back (the erasure job makes them run): the later batches, then one maintenance run."""
    batches = settings.speed_state_versions_kept - 1
    return batches * settings.speed_features_trigger_ms / 1000 + settings.speed_state_maintenance_s


def oldest_version(files: "CheckpointFiles") -> int | None:
    """The oldest state version any partition of any stateful operator still keeps (None: no state yet)."""
    oldest: int | None = None
    for operator in _numbered(files.list("state")):
        for partition in _numbered(files.list(f"state/{operator}")):
            for name in files.list(f"state/{operator}/{partition}"):
                found = STATE_FILE.match(name)
                if found:
                    version = int(found.group(1))
                    oldest = version if oldest is None else min(oldest, version)
    return oldest


def latest_batch(files: "CheckpointFiles") -> int | None:
    """The newest committed batch id of a query (None before its first commit)."""
    committed = [int(name) for name in files.list("commits") if name.isdigit()]
    return max(committed) if committed else None


def _numbered(names: list[str]) -> list[str]:
    return [name for name in names if name.isdigit()]
