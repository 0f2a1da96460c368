"""The docs name only settings that exist, and the configuration page's reference is generated from them."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from bench.report import DOCUMENTS
from lambdarec.settings import Settings

pytestmark = pytest.mark.unit

PROJECT = Path(__file__).resolve().parents[2]
NOT_SETTINGS = {"LAMBDAREC_TEST_ARTIFACTS"}  # a test's switch (tests/integration/test_dashboard.py), not a setting


def load_hook():
    spec = importlib.util.spec_from_file_location("settings_reference", PROJECT / "docs" / "_hooks" / "settings_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_setting_the_docs_name_exists():
    fields = {f"LAMBDAREC_{name.upper()}" for name in Settings.model_fields}
    named = {match for document in DOCUMENTS for match in re.findall(r"LAMBDAREC_[A-Z0-9_]+\*?", document.read_text())}
    assert len(named) > 30
    unknown = sorted(name for name in named - NOT_SETTINGS
                     if name not in fields and not (name.endswith("*") and any(f.startswith(name[:-1]) for f in fields)))
    assert unknown == [], f"the docs name settings that do not exist: {unknown}"


def test_the_reference_has_every_setting_with_its_default():
    hook = load_hook()
    page = "# Configuration\n\n" + hook.MARKER + "\n"
    table = hook.on_page_markdown(page, None, None, None)
    rows = {line.split("|")[1].strip(" `"): line for line in table.splitlines() if line.startswith("| `LAMBDAREC_")}
    assert set(rows) == {f"LAMBDAREC_{name.upper()}" for name in Settings.model_fields}
    assert "| `8000` |" in rows["LAMBDAREC_SERVE_PORT"] and "`int`" in rows["LAMBDAREC_SERVE_PORT"]
    assert "| `local[4]` |" in rows["LAMBDAREC_SPEED_SPARK_MASTER"]
    assert "hidden" in rows["LAMBDAREC_PSEUDONYM_KEY"]  # a secret's default is never printed
    assert all(line.count(" | ") == 3 for line in rows.values())  # no description broke out of its cell
    assert hook.MARKER in (PROJECT / "docs" / "configuration.md").read_text()


def test_a_page_without_the_marker_is_left_alone():
    assert load_hook().on_page_markdown("# Other\n", None, None, None) == "# Other\n"
