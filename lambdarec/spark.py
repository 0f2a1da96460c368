"""The one place Spark sessions are built, so every job and test gets the same settings."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

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
    }
    if not _under_spark_submit():
        conf.update(
            {
                "spark.master": settings.spark_master,
                "spark.driver.memory": settings.spark_driver_memory,
                "spark.ui.enabled": "false",
                "spark.driver.bindAddress": "127.0.0.1",
                "spark.driver.host": "127.0.0.1",
            }
        )
    conf.update(extra_conf or {})
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark


def _under_spark_submit() -> bool:
    """True when spark-submit launched this driver: its JVM is up and owns the master setting."""
    return bool(os.environ.get("PYSPARK_GATEWAY_PORT"))
