"""The Prometheus alert rules in ops/prometheus/ are valid and every alert is unit-tested by promtool.

promtool comes from Debian's ``prometheus`` package (``make prometheus`` installs it); without it
these tests fail rather than skip, so broken rules cannot pass unnoticed.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
RULES = Path("ops/prometheus/alerts.yml")
RULE_TESTS = Path("ops/prometheus/alerts_test.yml")
CONFIG = Path("ops/prometheus/prometheus.yml")


def promtool() -> str:
    """promtool's path; a missing promtool fails the test (in its body, so it counts as a failure)."""
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not found: run `make prometheus` (installs Debian's prometheus package)")
    return path


@pytest.mark.parametrize(
    "args",
    [("check", "rules", str(RULES)), ("check", "config", str(CONFIG)), ("test", "rules", str(RULE_TESTS))],
    ids=["check-rules", "check-config", "test-rules"],
)
def test_promtool_accepts(args):
    done = subprocess.run([promtool(), *args], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"promtool {' '.join(args)} exited {done.returncode}\n{done.stdout}\n{done.stderr}"


def test_every_alert_has_a_firing_and_a_silent_case():
    rules = yaml.safe_load((ROOT / RULES).read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"] if "alert" in rule}
    assert alerts, "no alerts found in alerts.yml"

    cases = yaml.safe_load((ROOT / RULE_TESTS).read_text())
    assert cases["rule_files"] == [RULES.name]
    firing: set[str] = set()
    silent: set[str] = set()
    for test in cases["tests"]:
        for case in test.get("alert_rule_test") or []:
            (firing if case.get("exp_alerts") else silent).add(case["alertname"])

    assert not alerts - firing, f"alerts without a case where they fire: {sorted(alerts - firing)}"
    assert not alerts - silent, f"alerts without a case where they stay silent: {sorted(alerts - silent)}"
    assert not (firing | silent) - alerts, f"tests for alerts not in alerts.yml: {sorted((firing | silent) - alerts)}"
