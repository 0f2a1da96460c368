"""Shared fixtures. Marker tiers: unit (no JVM), spark, integration, slow.

Every test gets its own settings rooted in a temp folder, so nothing touches
./.lambdarec. The Spark session is shared per test run (starting one costs
seconds) and sized for a 2-core machine.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from lambdarec.settings import Settings

pytest_plugins = ["tests.plugins.broker"]

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings rooted in this test's temp folder, on small defaults."""
    return Settings(root=tmp_path / "lambdarec", spark_shuffle_partitions=2, topic_partitions=2)


@pytest.fixture(scope="session")
def spark():
    """One Spark session for the whole run, UI off: 2 shuffle partitions, and local[4] because the
    speed job's real-time query holds a task slot per events partition (threads, not cores)."""
    from lambdarec.spark import build_spark

    session = build_spark(
        Settings(spark_shuffle_partitions=2, spark_master="local[4]"),
        "lambdarec-tests",
        {"spark.default.parallelism": "2", "spark.sql.adaptive.enabled": "false"},
    )
    yield session
    session.stop()
