"""The suite is isolated from the developer's shell (tests/conftest.py)."""

from __future__ import annotations

import os

import pytest

from lambdarec.settings import Settings

pytestmark = pytest.mark.unit


def test_no_lambdarec_variable_reaches_a_test_but_development_mode():
    found = sorted(name for name in os.environ if name.upper().startswith("LAMBDAREC_"))
    assert found == ["LAMBDAREC_ALLOW_DEVELOPMENT_KEY", "LAMBDAREC_AUTH"]
    assert Settings().auth == "open"  # on loopback only: serving.api.security.check_startup


def test_settings_ignore_a_dotenv_file(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text("LAMBDAREC_SERVE_PORT=1234\nLAMBDAREC_ALS_RANK=3\n")
    monkeypatch.chdir(tmp_path)
    settings = Settings()
    assert (settings.serve_port, settings.als_rank) != (1234, 3)


def test_a_variable_set_by_one_test_is_gone_in_the_next_part_one():
    os.environ["LAMBDAREC_SERVE_PORT"] = "1234"  # not through monkeypatch: as a careless test would


def test_a_variable_set_by_one_test_is_gone_in_the_next_part_two():
    assert "LAMBDAREC_SERVE_PORT" not in os.environ
    assert Settings().serve_port != 1234
