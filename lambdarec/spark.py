"""The one place Spark sessions are built, so every job and test gets the same settings.

Every session has Delta Lake (``format("delta")``, MERGE, time travel, OPTIMIZE,
VACUUM) and Spark's Kafka connector (``format("kafka")``) from the jars that
``lambdarec jars`` resolves (``lambdarec.jars``).
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from lambdarec import jars
from lambdarec.settings import Settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def build_spark(settings: Settings, app_name: str, extra_conf: dict[str, str] | None = None) -> "SparkSession":
    """Get or create a session tuned for this platform.

    Under ``spark-submit`` the master and memory come from the command line; from
    Python (tests, the CLI) they come from settings. Parquet timestamps are written
    as microseconds, which is what the Delta protocol stores.
    """
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    if not _under_spark_submit():
        for name, value in local_ip_env(settings).items():
            os.environ.setdefault(name, value)
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(app_name)
    conf = {
        "spark.sql.shuffle.partitions": str(settings.spark_shuffle_partitions),
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
        "spark.sql.sources.partitionOverwriteMode": "dynamic",
        "spark.hadoop.mapreduce.fileoutputcommitter.marksuccessfuljobs": "false",
        "spark.hadoop.parquet.enable.summary-metadata": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.python.worker.reuse": "true",
        **DELTA_CONF,
    }
    if not _under_spark_submit():
        conf.update(
            {
                "spark.jars": ",".join(jars.classpath(settings, "spark")),
                "spark.master": settings.spark_master,
                "spark.driver.memory": settings.spark_driver_memory,
                "spark.ui.enabled": "false",
                **driver_address_conf(settings),
            }
        )
    conf.update(extra_conf or {})
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark


# Delta in every session. New tables keep deletion vectors and column mapping off (Delta 4.4's
# defaults, pinned here) so delta-rs readers (serving, DuckDB, status) can read every table;
# the log is replayed in a couple of tasks, not 50, on a small machine.
DELTA_CONF = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
    "spark.databricks.delta.properties.defaults.enableDeletionVectors": "false",
    "spark.databricks.delta.properties.defaults.columnMapping.mode": "none",
    "spark.databricks.delta.snapshotPartitions": "2",
}


def driver_address_conf(settings: Settings) -> dict[str, str]:
    """Where a driver binds and what it advertises: ``spark_driver_host``, loopback by default, so its RPC and
    block manager (and a UI, if one is turned on: it binds SPARK_LOCAL_IP, see ``local_ip_env``) are not on
    every interface."""
    return {"spark.driver.bindAddress": settings.spark_driver_host, "spark.driver.host": settings.spark_driver_host}


def local_ip_env(settings: Settings) -> dict[str, str]:
    """``SPARK_LOCAL_IP`` for a driver's process: the address Spark's web UI binds (0.0.0.0 without it)."""
    return {"SPARK_LOCAL_IP": settings.spark_driver_host}


def _under_spark_submit() -> bool:
    """True when spark-submit launched this driver: its JVM is up and owns the master setting."""
    return bool(os.environ.get("PYSPARK_GATEWAY_PORT"))
