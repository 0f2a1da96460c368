"""Lake housekeeping without a JVM: which models expire, the job's arguments, the DAG's command.

OPTIMIZE, VACUUM and DELETE themselves run through delta-spark: tests/spark/test_delta_readable.py.
"""

from __future__ import annotations

import importlib.util
import shlex

import pytest

from batch import maintenance
from lambdarec import registry
from lambdarec.submit import PROJECT_ROOT

pytestmark = pytest.mark.unit


def statuses(*pairs):
    return {version: {"status": status} for version, status in pairs}


def test_expiry_keeps_the_newest_models_and_the_champion():
    found = statuses((1, registry.PUBLISHED), (2, registry.REJECTED), (3, registry.REJECTED),
                     (4, registry.FAILED), (5, registry.REJECTED))
    assert maintenance.expirable(found, keep=2, champion=1) == [2, 3]
    assert maintenance.expirable(found, keep=2, champion=None) == [1, 2, 3]
    assert maintenance.expirable(found, keep=10, champion=1) == []


def test_expired_models_are_not_expired_again():
    found = statuses((1, maintenance.EXPIRED), (2, maintenance.EXPIRED), (3, registry.PUBLISHED), (4, registry.REJECTED))
    assert maintenance.expirable(found, keep=1, champion=3) == []


def test_the_job_runs_all_steps_by_default_or_the_ones_named():
    assert maintenance.parse_args([]).steps is None
    assert maintenance.parse_args(["--step", "vacuum", "--step", "expire"]).steps == ["vacuum", "expire"]
    with pytest.raises(SystemExit):
        maintenance.parse_args(["--step", "defrag"])


def test_an_unknown_step_is_a_clear_error_before_any_work(settings):
    with pytest.raises(ValueError, match="unknown maintenance steps"):
        maintenance.run(None, settings, ("defrag",))


def test_each_dag_task_spark_submits_one_step_without_secrets(settings, monkeypatch):
    monkeypatch.setenv("LAMBDAREC_ROOT", str(settings.root))
    monkeypatch.setenv("LAMBDAREC_PSEUDONYM_KEY", "very-secret-key")
    spec = importlib.util.spec_from_file_location("maintenance_dag", PROJECT_ROOT / "dags" / "lambdarec_maintenance.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    line = module.submit("vacuum")
    words = shlex.split(line)
    assert words[:2] == ["cd", str(PROJECT_ROOT)]
    assert any(word.endswith("spark-submit") for word in words)
    assert words[-3:] == [str(PROJECT_ROOT / "batch" / "maintenance.py"), "--step", "vacuum"]
    assert f"LAMBDAREC_ROOT={settings.root.resolve()}" in words
    assert "very-secret-key" not in line
