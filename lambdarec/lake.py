"""Delta Lake I/O for every layer: delta-spark in Spark jobs, delta-rs everywhere else.

Spark jobs read with ``format("delta")`` (a pinned version is time travel,
``versionAsOf``) and append with ``format("delta")``; MERGE, DELETE, OPTIMIZE and
VACUUM run through delta-spark in the jobs that need them. Readers outside Spark
(serving, DuckDB, status) and writers outside Spark (the speed sinks' appenders,
the importer, the registry when no session is at hand) use delta-rs. Tables keep
deletion vectors and column mapping off (``lambdarec.spark`` pins the session
defaults) so delta-rs reads every one; ``check_readable`` refuses any that is not.

Every append can carry an app transaction ``(app_id, txn_version)``: the
commit records it atomically with the data, and an append whose transaction
is already recorded writes nothing. That is what makes a replayed micro-batch
or a re-run training job a no-op.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
from deltalake import CommitProperties, DeltaTable, Schema, Transaction, write_deltalake
from deltalake.exceptions import TableNotFoundError

from lambdarec.settings import Settings
from schemas.tables import TableSpec

if TYPE_CHECKING:
    from deltalake.table import TableMerger
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

# Reader features whose absence of handling cannot change which rows a reader sees.
SUPPORTED_READER_FEATURES = frozenset({"timestampNtz", "v2Checkpoint", "vacuumProtocolCheck"})
# commitInfo key naming the app transaction a commit carried, so it can be found again
# (delta-rs writes it into commitInfo, delta-spark into the JSON of commitInfo.userMetadata).
TXN_METADATA_KEY = "lambdarec.txn"
WRITE_METADATA_KEY = "lambdarec.write"  # a delta-spark append's own id, to find the version it created


class UnsupportedTableError(RuntimeError):
    """The table uses a Delta reader feature this lake layer would silently get wrong."""


class Lake:
    """The platform's Delta tables under ``settings.lake_root``."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.root = settings.lake_root.rstrip("/")
        self._watched: dict[str, DeltaTable] = {}  # uri -> snapshot that ``version`` moves forward
        self._watched_lock = threading.Lock()

    # -- locations and snapshots -------------------------------------------------

    def uri(self, spec: TableSpec) -> str:
        return f"{self.root}/{spec.name}"

    def exists(self, spec: TableSpec) -> bool:
        return DeltaTable.is_deltatable(self.uri(spec))

    def ensure(self, spec: TableSpec) -> None:
        """Create the empty table if it is missing (concurrent creators are fine)."""
        if self.exists(spec):
            return
        if "://" not in self.root:
            pafs.LocalFileSystem().create_dir(self.uri(spec), recursive=True)
        DeltaTable.create(
            self.uri(spec),
            schema=spec.schema,
            mode="ignore",
            partition_by=list(spec.partition_by) or None,
            name=spec.name,
            description=spec.description,
            configuration=table_configuration(spec),
        )

    def add_missing_columns(self, spec: TableSpec) -> list[str]:
        """Add the columns of ``spec`` an existing table lacks (a lake written by an older release),
        as nullable columns in one metadata commit, so writers of the new schema can append. Returns
        the names added."""
        table = DeltaTable(self.uri(spec))
        present = set(table.schema().to_arrow().names)
        missing = [field for field in spec.schema if field.name not in present]
        if missing:
            table.alter.add_columns(list(Schema.from_arrow(pa.schema(missing)).fields))
            log.info("%s: added columns %s", spec.name, [field.name for field in missing])
        return [field.name for field in missing]

    def version(self, spec: TableSpec) -> int | None:
        """The table's latest version (None: no table yet).

        Serving's pollers ask this every fraction of a second. Opening the table
        replays its whole log each time; the snapshot kept from the last call reads
        only the commits after it (as ``serving.views.log_tail`` does, a table deleted
        under it keeps its last version).
        """
        uri = self.uri(spec)
        with self._watched_lock:
            if (table := self._watched.get(uri)) is not None:
                try:
                    table.update_incremental()
                    return table.version()
                except Exception:  # a snapshot that cannot move forward is opened afresh
                    log.warning("%s: reopening its snapshot", spec.name, exc_info=True)
            try:
                self._watched[uri] = table = DeltaTable(uri)
            except TableNotFoundError:
                self._watched.pop(uri, None)
                return None
            return table.version()

    def open(self, spec: TableSpec, version: int | None = None) -> DeltaTable:
        """The table at ``version`` (latest if None), refused if we cannot read it faithfully."""
        table = DeltaTable(self.uri(spec), version=version)
        check_readable(table, spec.name)
        return table

    def committed(self, spec: TableSpec, app_id: str, txn_version: int) -> bool:
        """Whether an append keyed ``(app_id, txn_version)`` (or a later one) is in the table."""
        if not self.exists(spec):
            return False
        recorded = DeltaTable(self.uri(spec)).transaction_version(app_id)
        return recorded is not None and recorded >= txn_version

    def commit_version(self, spec: TableSpec, app_id: str, txn_version: int, search: int = 500) -> int | None:
        """The table version whose commit carried ``(app_id, txn_version)``, among the last ``search``."""
        entry = self.commit_entry(spec, app_id, txn_version, search)
        return None if entry is None else entry["version"]

    def commit_entry(self, spec: TableSpec, app_id: str, txn_version: int, search: int = 500) -> dict[str, Any] | None:
        """The history entry (commitInfo) of the commit that carried ``(app_id, txn_version)``."""
        if not self.exists(spec):
            return None
        wanted = f"{app_id}:{txn_version}"
        for entry in DeltaTable(self.uri(spec)).history(search):
            if entry.get(TXN_METADATA_KEY) == wanted or _metadata(entry).get(TXN_METADATA_KEY) == wanted:
                return entry
        return None

    # -- reads -------------------------------------------------------------------

    def dataset(self, spec: TableSpec, version: int | None = None) -> pads.Dataset:
        """A pyarrow dataset of the pinned snapshot, for DuckDB and serving."""
        return self.open(spec, version).to_pyarrow_dataset()

    def read_arrow(self, spec: TableSpec, version: int | None = None, filter: Any = None) -> pa.Table:  # noqa: A002 - pyarrow's name
        """The snapshot as an Arrow table (empty with the spec's schema if the table is missing)."""
        if not self.exists(spec):
            return spec.schema.empty_table()
        dataset = self.dataset(spec, version)
        try:
            return dataset.to_table(filter=filter)
        except pa.ArrowNotImplementedError:
            if filter is None:
                raise
            # delta-rs's MERGE (item_catalogue, user_profiles) writes strings as string_view, which pyarrow
            # cannot compare with a string yet: filter after the scan, which reads them as strings
            return dataset.to_table().filter(filter)

    def read_spark(self, spark: "SparkSession", spec: TableSpec, version: int | None = None) -> "DataFrame":
        """The snapshot at ``version`` (latest if None, time travel otherwise) as a Spark DataFrame
        with the spec's columns; empty with the spec's schema if the table is missing."""
        if not self.exists(spec):
            return spark.createDataFrame([], spark_schema(spec))
        reader = spark.read.format("delta")
        if version is not None:
            reader = reader.option("versionAsOf", version)
        return reader.load(spark_path(self.uri(spec))).select(*spec.columns)

    # -- writes ------------------------------------------------------------------

    def append_arrow(
        self,
        spec: TableSpec,
        table: pa.Table,
        app_id: str | None = None,
        txn_version: int | None = None,
    ) -> int | None:
        """Append Arrow rows in one commit; None if ``(app_id, txn_version)`` is already in."""
        appender = Appender(self, spec)
        if app_id is not None and appender.committed(app_id, _txn_version(txn_version)):
            return None
        return appender.append(table, app_id, txn_version)

    def merge_arrow(self, spec: TableSpec, source: pa.Table, predicate: str, app_id: str | None = None,
                    txn_version: int | None = None) -> "TableMerger | None":
        """A delta-rs MERGE of ``source`` (alias ``s``) into the table (alias ``t``), keyed by the app
        transaction: the caller adds its clauses and executes it. None if the transaction is already in."""
        if app_id is not None and self.committed(spec, app_id, _txn_version(txn_version)):
            return None
        self.ensure(spec)
        return self.open(spec).merge(source, predicate, source_alias="s", target_alias="t",
                                     commit_properties=_commit_properties(app_id, txn_version))

    def appender(self, spec: TableSpec) -> "Appender":
        """An appender that keeps ``spec``'s table open between commits (streaming sinks)."""
        return Appender(self, spec)

    def append_spark(
        self,
        spec: TableSpec,
        df: "DataFrame",
        app_id: str | None = None,
        txn_version: int | None = None,
    ) -> int | None:
        """Append a Spark DataFrame in one delta-spark commit; None if the transaction is already in.

        The commit carries the app transaction (``txnAppId``/``txnVersion``: Delta skips
        a write whose transaction it has recorded) and, in its ``userMetadata``, the
        transaction and a write id, by which the version it created is found.
        """
        if self._recorded(spec, app_id, txn_version):
            return None
        self.ensure(spec)
        write_id = uuid.uuid4().hex
        writer = (
            conform(df, spec)
            .write.format("delta")
            .mode("append")
            .partitionBy(*spec.partition_by)
            .option("userMetadata", json.dumps(_user_metadata(app_id, txn_version, write_id)))
        )
        if app_id is not None:
            writer = writer.option("txnAppId", app_id).option("txnVersion", txn_version)
        writer.save(spark_path(self.uri(spec)))
        return self._write_version(spec, write_id)

    def insert_new_spark(
        self,
        spec: TableSpec,
        df: "DataFrame",
        app_id: str | None = None,
        txn_version: int | None = None,
    ) -> int | None:
        """Insert the rows of ``df`` whose keys (``spec.keys``) the table lacks: a Delta MERGE with
        only ``whenNotMatchedInsertAll``, keyed by the app transaction like ``append_spark``.
        Returns the version the MERGE created; None if the transaction is already in."""
        from delta.tables import DeltaTable as SparkDeltaTable

        if self._recorded(spec, app_id, txn_version):
            return None
        self.ensure(spec)
        spark = df.sparkSession
        on = " AND ".join(f"t.`{key}` <=> s.`{key}`" for key in spec.keys)
        with delta_transaction(spark, app_id, txn_version) as write_id:
            target = SparkDeltaTable.forPath(spark, spark_path(self.uri(spec))).alias("t")
            target.merge(conform(df, spec).alias("s"), on).whenNotMatchedInsertAll().execute()
        return self._write_version(spec, write_id)

    def delete_spark(
        self,
        spark: "SparkSession",
        spec: TableSpec,
        condition: str,
        app_id: str | None = None,
        txn_version: int | None = None,
    ) -> int | None:
        """Delete the rows matching the SQL ``condition`` through delta-spark (files rewritten:
        deletion vectors are off). Returns the version created; None if nothing matched, the
        table is missing or the transaction is already in."""
        from delta.tables import DeltaTable as SparkDeltaTable

        if not self.exists(spec) or self._recorded(spec, app_id, txn_version):
            return None
        with delta_transaction(spark, app_id, txn_version) as write_id:
            SparkDeltaTable.forPath(spark, spark_path(self.uri(spec))).delete(condition)
        return self._write_version(spec, write_id)

    def _recorded(self, spec: TableSpec, app_id: str | None, txn_version: int | None) -> bool:
        """Whether a Spark write keyed ``(app_id, txn_version)`` is already in (False without a key)."""
        _commit_properties(app_id, txn_version)  # both or neither
        return app_id is not None and self.committed(spec, app_id, _txn_version(txn_version))

    def _write_version(self, spec: TableSpec, write_id: str, search: int = 50) -> int | None:
        """The version whose commit carries ``write_id``; None if Delta skipped the write
        (its transaction was recorded by another writer after our check)."""
        for entry in DeltaTable(self.uri(spec)).history(search):
            if _metadata(entry).get(WRITE_METADATA_KEY) == write_id:
                return entry["version"]
        return None


class Appender:
    """Appends Arrow rows to one table through a ``DeltaTable`` kept open between commits.

    A streaming sink commits every micro-batch: re-opening the table each time
    replays its log, while an open table reads only the commits since its last
    state. The version a commit landed in is the table's own state right after the
    write, exact even when another writer committed in between.
    """

    def __init__(self, lake: Lake, spec: TableSpec):
        self.lake = lake
        self.spec = spec
        self._table: DeltaTable | None = None

    def table(self) -> DeltaTable:
        """The table at its newest version (created if missing)."""
        if self._table is None:
            self.lake.ensure(self.spec)
            self._table = self.lake.open(self.spec)
        else:
            self._table.update_incremental()
        return self._table

    def committed(self, app_id: str, txn_version: int) -> bool:
        """Whether an append keyed ``(app_id, txn_version)`` (or a later one) is in the table."""
        recorded = self.table().transaction_version(app_id)
        return recorded is not None and recorded >= txn_version

    def append(self, rows: pa.Table, app_id: str | None = None, txn_version: int | None = None) -> int:
        """Commit ``rows``; returns the version the commit created."""
        table = self.table()
        write_deltalake(
            table,
            rows.select(self.spec.columns).cast(self.spec.schema),
            mode="append",
            partition_by=list(self.spec.partition_by) or None,
            commit_properties=_commit_properties(app_id, txn_version),
        )
        return table.version()

    def append_once(self, rows: pa.Table, app_id: str, txn_version: int) -> int | None:
        """Commit ``rows`` keyed ``(app_id, txn_version)`` unless already in; returns the version that
        carries the key: the new commit's, or on a replay the earlier one's (None if beyond the search)."""
        if self.committed(app_id, txn_version):
            return self.lake.commit_version(self.spec, app_id, txn_version)
        return self.append(rows, app_id, txn_version)


def _txn_version(txn_version: int | None) -> int:
    """The version of an app transaction whose app id is given: both or neither."""
    if txn_version is None:
        raise ValueError("an app transaction needs both app_id and txn_version")
    return txn_version


def _commit_properties(app_id: str | None, txn_version: int | None) -> CommitProperties | None:
    if app_id is None:
        return None
    if txn_version is None:
        raise ValueError("an app transaction needs both app_id and txn_version")
    return CommitProperties(
        app_transactions=[Transaction(app_id, txn_version)],
        custom_metadata={TXN_METADATA_KEY: f"{app_id}:{txn_version}"},
    )


@contextmanager
def delta_transaction(spark: "SparkSession", app_id: str | None, txn_version: int | None) -> Iterator[str]:
    """Session settings that key the delta-spark DML (MERGE, DELETE) run inside: the app
    transaction (``spark.databricks.delta.write.txnAppId``/``txnVersion``) and the commit's
    ``userMetadata``. Yields the write id the commit carries. One DML at a time per session."""
    _commit_properties(app_id, txn_version)  # both or neither
    write_id = uuid.uuid4().hex
    settings = {"spark.databricks.delta.commitInfo.userMetadata": json.dumps(_user_metadata(app_id, txn_version, write_id))}
    if app_id is not None:
        settings["spark.databricks.delta.write.txnAppId"] = app_id
        settings["spark.databricks.delta.write.txnVersion"] = str(txn_version)
    with session_conf(spark, settings):
        yield write_id


@contextmanager
def session_conf(spark: "SparkSession", settings: dict[str, str]) -> Iterator[None]:
    """Set Spark SQL settings for the block only, restoring what was there before."""
    before: dict[str, str | None] = {key: spark.conf.get(key, None) for key in settings}
    for key, value in settings.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, old in before.items():
            if old is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, old)


def _user_metadata(app_id: str | None, txn_version: int | None, write_id: str) -> dict[str, str]:
    found = {WRITE_METADATA_KEY: write_id}
    if app_id is not None:
        found[TXN_METADATA_KEY] = f"{app_id}:{txn_version}"
    return found


def _metadata(entry: dict[str, Any]) -> dict[str, Any]:
    """The lambdarec keys a delta-spark commit stored as JSON in its ``userMetadata``."""
    text = entry.get("userMetadata")
    if not text:
        return {}
    try:
        found = json.loads(text)
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def table_configuration(spec: TableSpec) -> dict[str, str | None] | None:
    """Delta table properties a new table gets: identifying columns out of the file statistics, and
    the change data feed where the spec asks for it."""
    stats = spec.stats_columns
    config: dict[str, str | None] = {} if stats is None else {"delta.dataSkippingStatsColumns": ",".join(stats)}
    if spec.change_data_feed:
        config["delta.enableChangeDataFeed"] = "true"
    return config or None


def spark_path(uri: str) -> str:
    """A table URI as Spark's Hadoop filesystems name it (``s3://`` is ``s3a://`` there)."""
    return "s3a://" + uri[len("s3://") :] if uri.startswith("s3://") else uri


def check_readable(table: DeltaTable, name: str) -> None:
    """Refuse tables whose reader features would make our readers return wrong rows."""
    protocol = table.protocol()
    config = table.metadata().configuration or {}
    mapping = config.get("delta.columnMapping.mode", "none")
    if mapping != "none":
        raise UnsupportedTableError(
            f"table {name!r} uses column mapping (mode {mapping!r}); lambdarec reads Parquet "
            "columns by physical name and cannot honour it. Rewrite the table without column mapping."
        )
    features = set(protocol.reader_features or [])
    unsupported = features - SUPPORTED_READER_FEATURES
    if protocol.min_reader_version > 3 or unsupported:
        raise UnsupportedTableError(
            f"table {name!r} needs reader version {protocol.min_reader_version} with features "
            f"{sorted(unsupported)} (e.g. deletionVectors); lambdarec would return wrong rows. "
            "Purge them (REORG TABLE ... APPLY (PURGE)) or disable the feature."
        )


def spark_schema(spec: TableSpec):
    """The Spark StructType of a table spec (the pyarrow schema is the source)."""
    from pyspark.sql.types import StructField, StructType

    return StructType([StructField(f.name, _spark_type(f.type), True) for f in spec.schema])


def _spark_type(arrow_type: pa.DataType):
    from pyspark.sql import types as T

    if pa.types.is_list(arrow_type):
        return T.ArrayType(_spark_type(arrow_type.value_type))
    if pa.types.is_map(arrow_type):
        return T.MapType(_spark_type(arrow_type.key_type), _spark_type(arrow_type.item_type))
    if pa.types.is_timestamp(arrow_type):
        return T.TimestampType()
    simple = {
        pa.string(): T.StringType(),
        pa.float64(): T.DoubleType(),
        pa.float32(): T.FloatType(),
        pa.int32(): T.IntegerType(),
        pa.int64(): T.LongType(),
        pa.date32(): T.DateType(),
        pa.binary(): T.BinaryType(),
        pa.bool_(): T.BooleanType(),
    }
    if arrow_type in simple:
        return simple[arrow_type]
    raise TypeError(f"no Spark type for Arrow type {arrow_type}")


def conform(df: "DataFrame", spec: TableSpec) -> "DataFrame":
    """Select the spec's columns in order, cast to its types; missing columns are an error."""
    from pyspark.sql import functions as F

    missing = [name for name in spec.columns if name not in df.columns]
    if missing:
        raise ValueError(f"DataFrame for table {spec.name!r} lacks columns {missing}")
    schema = spark_schema(spec)
    return df.select([F.col(f.name).cast(f.dataType).alias(f.name) for f in schema.fields])
