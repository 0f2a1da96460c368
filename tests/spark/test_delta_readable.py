"""Every table Spark jobs write through delta-spark stays readable by delta-rs (serving, DuckDB),
with the same rows Spark reads, before and after OPTIMIZE, VACUUM and DELETE."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow.compute as pc
import pytest
from deltalake import DeltaTable

from batch import maintenance, train
from lambdarec import registry
from deploy.generator import bronze_table, generate_events
from lambdarec.lake import Lake
from lambdarec.settings import Settings
from schemas.tables import (
    EVENTS,
    ITEM_FACTORS,
    ITEM_IDS,
    ITEM_NEIGHBOURS,
    MODEL_INTERACTIONS,
    MODELS,
    USER_FACTORS,
    USER_IDS,
)
from tests.support.delta import assert_delta_rs_reads_what_spark_reads, canonical

pytestmark = pytest.mark.spark

END = datetime(2025, 3, 1, tzinfo=UTC)
SPARK_WRITTEN = (EVENTS, USER_FACTORS, ITEM_FACTORS, ITEM_NEIGHBOURS, MODEL_INTERACTIONS, MODELS, USER_IDS, ITEM_IDS)
MODEL_DATA = (USER_FACTORS, ITEM_FACTORS, MODEL_INTERACTIONS)


@pytest.fixture(scope="module")
def trained(spark, tmp_path_factory):
    """Two models trained by the job on events the lake got through delta-spark: ALS, then EASE."""
    settings = Settings(
        root=tmp_path_factory.mktemp("readable") / "lambdarec",
        spark_shuffle_partitions=2, als_rank=8, als_iterations=4, model_retention=1, vacuum_retention_hours=0,
        model_families=["als"], tune_trials=0,
    )
    lake = Lake(settings)
    events = bronze_table(generate_events(1500, n_users=80, n_items=150, n_clusters=4, seed=7, end=END), settings)
    assert lake.append_spark(EVENTS, spark.createDataFrame(events), app_id="test-events", txn_version=1) == 1
    first = train.run(spark, settings)
    more = bronze_table(generate_events(300, n_users=100, n_items=150, n_clusters=4, seed=8, end=END), settings)
    assert lake.append_spark(EVENTS, spark.createDataFrame(more), app_id="test-events", txn_version=2) == 2
    second = train.run(spark, settings.model_copy(update={"model_families": ["ease"]}))
    assert (first["engine"], second["engine"]) == ("implicit", "ease")
    assert (first["model_version"], second["model_version"]) == (1, 2)
    champion = registry.latest_published(lake)
    if champion is None or champion["model_version"] != 2:  # so that the expiry has model 1 to delete
        registry.record_status(lake, 2, registry.PUBLISHED, "test: champion", app_id="test-publish", spark=spark)
    return settings, lake


def test_every_table_the_jobs_write_reads_the_same_through_delta_rs(spark, trained):
    _, lake = trained
    for spec in SPARK_WRITTEN:
        assert assert_delta_rs_reads_what_spark_reads(spark, lake, spec) > 0, spec.name
    for spec in (*MODEL_DATA, USER_IDS, ITEM_IDS, EVENTS):
        newest = DeltaTable(lake.uri(spec)).history(1)[0]
        assert "Delta-Lake" in newest["engineInfo"], (spec.name, newest)  # delta-spark wrote it
    assert DeltaTable(lake.uri(USER_IDS)).history(1)[0]["operation"] == "MERGE"


def test_maintenance_keeps_every_table_readable_by_delta_rs(spark, trained):
    settings, lake = trained
    small_files = len(DeltaTable(lake.uri(EVENTS)).file_uris())
    rows = {spec.name: canonical(lake.read_arrow(spec), spec) for spec in SPARK_WRITTEN}

    done = maintenance.run(spark, settings)

    compacted = done["compacted"][EVENTS.name]
    assert 0 < compacted["numFilesAdded"] < compacted["numFilesRemoved"] <= small_files
    assert len(DeltaTable(lake.uri(EVENTS)).file_uris()) < small_files
    assert done["vacuumed"][EVENTS.name] >= compacted["numFilesRemoved"]  # retention 0: all compacted away
    assert done["expired"] == [1]
    for spec in SPARK_WRITTEN:
        assert_delta_rs_reads_what_spark_reads(spark, lake, spec)
    for spec in (EVENTS, USER_IDS, ITEM_IDS):  # compaction and vacuum change no row
        assert canonical(lake.read_arrow(spec), spec) == rows[spec.name]
    for spec in MODEL_DATA:
        versions = set(lake.read_arrow(spec).column("model_version").to_pylist())
        assert versions == {2}, spec.name
        delete = next(e for e in DeltaTable(lake.uri(spec)).history(5) if e["operation"] == "DELETE")
        assert delete["operationMetrics"]["numDeletionVectorsAdded"] == "0"  # files rewritten, no vectors
        assert lake.committed(spec, f"expire-{spec.name}", 1)
    assert registry.current_statuses(lake)[1]["status"] == maintenance.EXPIRED


def test_a_second_maintenance_pass_finds_nothing_to_do(spark, trained):
    settings, lake = trained
    versions = {spec.name: lake.version(spec) for spec in MODEL_DATA}
    assert maintenance.run(spark, settings, ("expire",)) == {"expired": []}
    assert {spec.name: lake.version(spec) for spec in MODEL_DATA} == versions
    maintenance.compact(spark, lake)  # the registry row the expiry appended, if any
    assert maintenance.compact(spark, lake) == {}
    assert lake.read_arrow(MODELS, filter=pc.field("status") == maintenance.EXPIRED).num_rows == 1
