"""The log tail that serving follows the model registry with, on real Delta tables on disk."""

from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from lambdarec.registry import PUBLISHED, TRAINING, record_status
from lambdarec.lake import Lake
from serving.views.log_tail import LogTail
from schemas.tables import EVENTS, MODELS

pytestmark = pytest.mark.unit


@pytest.fixture
def lake(settings):
    return Lake(settings)


def rows(table: pa.Table) -> list[dict]:
    return sorted(table.to_pylist(), key=lambda row: (row["model_version"], row["status"]))


def polled(tail: LogTail) -> tuple[int | None, int]:
    """(version, data files read) of one poll."""
    reads = []
    version = tail.poll(lambda: reads.append(1))
    return version, len(reads)


def test_a_poll_reads_only_the_files_the_new_commits_added(lake):
    tail = LogTail(lake, MODELS)
    assert tail.poll() is None and tail.rows().num_rows == 0
    record_status(lake, 1, TRAINING, "t")
    record_status(lake, 1, PUBLISHED, "t")
    assert polled(tail) == (lake.version(MODELS), 2)
    record_status(lake, 2, TRAINING, "t")
    assert polled(tail) == (lake.version(MODELS), 1)
    assert rows(tail.rows()) == rows(lake.read_arrow(MODELS))
    assert polled(tail) == (lake.version(MODELS), 0)  # nothing new: nothing read


def test_compaction_makes_it_reload_the_snapshot(lake):
    tail = LogTail(lake, MODELS)
    for version in (1, 2, 3):
        record_status(lake, version, TRAINING, "t")
    tail.poll()
    DeltaTable(lake.uri(MODELS)).optimize.compact()  # removes the three files, adds one
    record_status(lake, 4, TRAINING, "t")
    assert tail.poll() == lake.version(MODELS)
    assert rows(tail.rows()) == rows(lake.read_arrow(MODELS))
    assert len(tail._files) == len(DeltaTable(lake.uri(MODELS)).file_uris())


def test_commits_cleaned_up_after_a_checkpoint_make_it_reload(lake):
    tail = LogTail(lake, MODELS)
    record_status(lake, 1, TRAINING, "t")
    tail.poll()
    seen = tail.version
    for version in (2, 3):
        record_status(lake, version, TRAINING, "t")
    DeltaTable(lake.uri(MODELS)).create_checkpoint()
    log = Path(lake.uri(MODELS)) / "_delta_log"
    (log / f"{seen + 1:020d}.json").unlink()  # as log retention would, once the checkpoint covers it
    assert tail.poll() == lake.version(MODELS)
    assert rows(tail.rows()) == rows(lake.read_arrow(MODELS))


def test_partitioned_tables_are_refused(lake):
    with pytest.raises(ValueError, match="partitioned"):
        LogTail(lake, EVENTS)
