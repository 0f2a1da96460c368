"""Delta Lake I/O for every layer, through delta-rs, with a bridge to Spark.

No Maven repository is reachable here, so Spark cannot load the Delta jars.
Instead Spark writes plain Parquet files into the table's folder and delta-rs
commits them as ``add`` actions in one transaction. Readers get the snapshot's
file list (Spark) or a pyarrow dataset (DuckDB, serving). Where the Delta jars
*are* on the classpath (a cluster), Spark writes through ``format("delta")``
instead; both paths produce the same Delta protocol tables.

Every append can carry an app transaction ``(app_id, txn_version)``: the
commit records it atomically with the data, and an append whose transaction
is already recorded writes nothing. That is what makes a replayed micro-batch
or a re-run training job a no-op.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections import defaultdict
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from deltalake.exceptions import TableNotFoundError
from deltalake.transaction import AddAction

from lambdarec.settings import Settings
from schemas.tables import TableSpec

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

# Reader features whose absence of handling cannot change which rows a reader sees.
SUPPORTED_READER_FEATURES = frozenset({"timestampNtz", "v2Checkpoint", "vacuumProtocolCheck"})
HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"
# commitInfo key naming the app transaction a commit carried, so it can be found again.
TXN_METADATA_KEY = "lambdarec.txn"


class UnsupportedTableError(RuntimeError):
    """The table uses a Delta reader feature this lake layer would silently get wrong."""


class Lake:
    """The platform's Delta tables under ``settings.lake_root``."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.root = settings.lake_root.rstrip("/")

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
        )

    def version(self, spec: TableSpec) -> int | None:
        try:
            return DeltaTable(self.uri(spec)).version()
        except TableNotFoundError:
            return None

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
        if not self.exists(spec):
            return None
        wanted = f"{app_id}:{txn_version}"
        for entry in DeltaTable(self.uri(spec)).history(search):
            if entry.get(TXN_METADATA_KEY) == wanted:
                return entry["version"]
        return None

    # -- reads -------------------------------------------------------------------

    def dataset(self, spec: TableSpec, version: int | None = None) -> pads.Dataset:
        """A pyarrow dataset of the pinned snapshot, for DuckDB and serving."""
        return self.open(spec, version).to_pyarrow_dataset()

    def read_arrow(self, spec: TableSpec, version: int | None = None, filter: Any = None) -> pa.Table:
        """The snapshot as an Arrow table (empty with the spec's schema if the table is missing)."""
        if not self.exists(spec):
            return spec.schema.empty_table()
        return self.dataset(spec, version).to_table(filter=filter)

    def read_spark(self, spark: "SparkSession", spec: TableSpec, version: int | None = None) -> "DataFrame":
        """The pinned snapshot as a Spark DataFrame with the spec's columns.

        Spark reads exactly the snapshot's data files; partition values come from
        the Delta log, not from folder names, as the protocol requires.
        """
        from pyspark.sql import functions as F
        from pyspark.sql.types import StructType

        schema = spark_schema(spec)
        if not self.exists(spec):
            return spark.createDataFrame([], schema)
        table = self.open(spec, version)
        data_fields = [f for f in schema.fields if f.name not in spec.partition_by]
        groups: dict[tuple, list[str]] = defaultdict(list)
        for action in pa.table(table.get_add_actions(flatten=True)).to_pylist():
            key = tuple(action.get(f"partition.{col}") for col in spec.partition_by)
            groups[key].append(self._file_uri(spec, action["path"]))
        if not groups:
            return spark.createDataFrame([], schema)
        frames = []
        for key, files in groups.items():
            frame = spark.read.schema(StructType(data_fields)).parquet(*files)
            for col, value in zip(spec.partition_by, key):
                frame = frame.withColumn(col, F.lit(value).cast(schema[col].dataType))
            frames.append(frame.select(*spec.columns))
        result = frames[0]
        for frame in frames[1:]:
            result = result.unionByName(frame)
        return result

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
        if app_id is not None and appender.committed(app_id, txn_version):
            return None
        return appender.append(table, app_id, txn_version)

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
        """Append a Spark DataFrame in one commit; None if the transaction is already in.

        Spark writes Parquet into a fresh folder inside the table; files that a
        crash leaves uncommitted are invisible to readers and removed by vacuum.
        """
        if app_id is not None and self.committed(spec, app_id, txn_version):
            return None
        self.ensure(spec)
        df = conform(df, spec)
        if delta_jars_available(df.sparkSession):
            return self._append_with_delta_spark(spec, df, app_id, txn_version)
        write_dir = f"data/{uuid.uuid4().hex}"
        df.write.partitionBy(*spec.partition_by).parquet(f"{self.uri(spec)}/{write_dir}")
        actions = self._add_actions(spec, write_dir)
        DeltaTable(self.uri(spec)).create_write_transaction(
            actions,
            mode="append",
            schema=spec.schema,
            partition_by=list(spec.partition_by) or None,
            commit_properties=_commit_properties(app_id, txn_version),
        )
        return self.version(spec)

    def _append_with_delta_spark(
        self, spec: TableSpec, df: "DataFrame", app_id: str | None, txn_version: int | None
    ) -> int | None:
        writer = df.write.format("delta").mode("append").partitionBy(*spec.partition_by)
        if app_id is not None:
            writer = writer.option("txnAppId", app_id).option("txnVersion", txn_version)
        writer.save(self.uri(spec))
        return self.version(spec)

    def _add_actions(self, spec: TableSpec, write_dir: str) -> list[AddAction]:
        filesystem, base = pafs.FileSystem.from_uri(self.uri(spec))
        selector = pafs.FileSelector(f"{base}/{write_dir}", recursive=True)
        now_ms = int(time.time() * 1000)
        actions = []
        for info in filesystem.get_file_info(selector):
            if info.type != pafs.FileType.File or not info.base_name.endswith(".parquet"):
                continue
            relative = info.path[len(base) + 1 :]
            with filesystem.open_input_file(info.path) as handle:
                num_rows = pq.ParquetFile(handle).metadata.num_rows
            actions.append(
                AddAction(
                    path=relative,
                    size=info.size,
                    partition_values=_partition_values(relative, spec.partition_by),
                    modification_time=now_ms,
                    data_change=True,
                    stats=json.dumps({"numRecords": num_rows}),
                )
            )
        return actions

    def _file_uri(self, spec: TableSpec, path: str) -> str:
        """A data file's absolute URI as Spark's Hadoop filesystems expect it."""
        if "://" in path or path.startswith("/"):
            return path
        table_uri = self.uri(spec)
        if "://" not in table_uri:
            table_uri = f"file://{table_uri}"
        elif table_uri.startswith("s3://"):
            table_uri = "s3a://" + table_uri[len("s3://") :]
        return f"{table_uri}/{unquote(path)}"


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


def _commit_properties(app_id: str | None, txn_version: int | None) -> CommitProperties | None:
    if app_id is None:
        return None
    if txn_version is None:
        raise ValueError("an app transaction needs both app_id and txn_version")
    return CommitProperties(
        app_transactions=[Transaction(app_id, txn_version)],
        custom_metadata={TXN_METADATA_KEY: f"{app_id}:{txn_version}"},
    )


def _partition_values(relative_path: str, partition_by: tuple[str, ...]) -> dict[str, str | None]:
    """Partition values from Spark's ``col=value`` folders (Spark escapes values like URLs)."""
    found: dict[str, str | None] = {}
    for segment in relative_path.split("/")[:-1]:
        name, sep, value = segment.partition("=")
        if sep and name in partition_by:
            value = unquote(value)
            found[name] = None if value == HIVE_NULL else value
    missing = set(partition_by) - set(found)
    if missing:
        raise RuntimeError(f"Spark output {relative_path} lacks partition folders for {sorted(missing)}")
    return found


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


def delta_jars_available(spark: "SparkSession") -> bool:
    """True where delta-spark's classes are on the JVM classpath (clusters), never here."""
    try:
        spark._jvm.java.lang.Class.forName("io.delta.tables.DeltaTable")
    except Exception:  # py4j raises a generic error for ClassNotFoundException
        return False
    return True


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
