"""Fixture for tests of CDC: settings for a fresh embedded Postgres and Connect beside the test's broker."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from lambdarec.processes import free_port


@pytest.fixture
def cdc_settings(broker_settings):
    """Settings for a fresh Postgres and Connect beside the test's broker. The cluster lives outside
    pytest's tmp_path (mode 700): run as root, Postgres runs as the postgres user, who must reach it."""
    home = Path(tempfile.mkdtemp(prefix="lambdarec-postgres-"))
    home.chmod(0o711)
    yield broker_settings.model_copy(update={"embedded_postgres_port": free_port(), "cdc_connect_port": free_port(),
                                             "embedded_postgres_dir": str(home)})
    shutil.rmtree(home, ignore_errors=True)
