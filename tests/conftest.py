"""Shared fixtures. Marker tiers: unit (no JVM), spark, integration, slow.

Every test gets its own settings rooted in a temp folder, so nothing touches
./.lambdarec, and no test sees the developer's shell: ``LAMBDAREC_*`` variables
are cleared and ``.env`` is ignored, for the whole run and again for each test.
The Spark session is shared per test run (starting one costs seconds) and sized
for a 2-core machine. Helpers that several test modules share live in
``tests/support``, never in a test module.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from lambdarec.settings import Settings, get_settings

pytest_plugins = ["tests.plugins.broker", "tests.plugins.cdc"]

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
# The suite starts well over a hundred short-lived JVMs (spark-submit jobs, the broker, Connect) on two cores, where
# the C2 compiler's threads take cores from the work under test; C1 alone finished test_train_kill in 88 s against
# 112 s. Tests only: the product's JVMs keep Java's default tiered compilation, and so does the run's one in-process
# Spark session (the ``spark`` fixture), whose tests were slower under C1.
os.environ.setdefault("JAVA_TOOL_OPTIONS", "-XX:TieredStopAtLevel=1")


def _isolate(monkeypatch: pytest.MonkeyPatch) -> None:
    """Clear every ``LAMBDAREC_*`` variable and make Settings ignore ``.env``. Tests run in development
    mode: serving takes the development pseudonym key (tests/unit/test_pseudonym.py checks the refusal)
    and, on loopback, checks no credential (auth=open); the tests of credentials themselves set auth=keys
    (tests/unit/test_serving_auth.py, tests/integration/test_serving_keys.py)."""
    for name in [name for name in os.environ if name.upper().startswith("LAMBDAREC_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("LAMBDAREC_ALLOW_DEVELOPMENT_KEY", "true")
    monkeypatch.setenv("LAMBDAREC_AUTH", "open")
    monkeypatch.setitem(Settings.model_config, "env_file", None)
    get_settings.cache_clear()


@pytest.fixture(scope="session", autouse=True)
def _isolated_run():
    """The developer's shell, isolated for session-scoped fixtures (the Spark session, the broker)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        _isolate(monkeypatch)
        yield


@pytest.fixture(autouse=True)
def _isolated_test(monkeypatch: pytest.MonkeyPatch):
    """Each test starts from the isolated environment, whatever an earlier test left behind."""
    _isolate(monkeypatch)
    yield
    get_settings.cache_clear()


@pytest.fixture
def settings(tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    """Settings rooted in this test's temp folder, on small defaults; a test parametrised over
    ``settings`` (``tests.support.serving.INDEX_ON_AND_OFF``) gets that ``serve_ann_ef``."""
    search = {"serve_ann_ef": request.param} if hasattr(request, "param") else {}
    return Settings(root=tmp_path / "lambdarec", spark_shuffle_partitions=2, topic_partitions=2, **search)


@pytest.fixture(scope="session")
def spark():
    """One Spark session for the whole run, UI off: 2 shuffle partitions, and local[4] because the
    speed job's real-time query holds a task slot per events partition (threads, not cores)."""
    from lambdarec.spark import build_spark

    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.delenv("JAVA_TOOL_OPTIONS", raising=False)  # this JVM lives all run and does heavy work: C2 pays
        session = build_spark(
            Settings(spark_shuffle_partitions=2, spark_master="local[4]"),
            "lambdarec-tests",
            {"spark.default.parallelism": "2", "spark.sql.adaptive.enabled": "false"},
        )
    yield session
    session.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """A failed test's report gains what its fixtures can tell of the processes under test: any fixture
    value with a ``diagnosis()`` (``tests.support.platform.Platform``: thread stacks and log tails)."""
    report = yield
    if report.failed and report.when in ("setup", "call"):
        for name, value in getattr(item, "funcargs", {}).items():
            diagnosis = getattr(value, "diagnosis", None)
            if callable(diagnosis):
                try:
                    report.sections.append((f"diagnosis of {name}", diagnosis()))
                except Exception as exc:  # a diagnosis must never hide the failure it explains
                    report.sections.append((f"diagnosis of {name}", f"could not be taken: {exc!r}"))
    return report
