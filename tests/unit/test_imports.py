"""Every module of the product imports: lint cannot see a broken first-party import (mypy is told to ignore
missing modules, for third-party ones without stubs, and import-linter skips what it cannot resolve)."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

pytestmark = pytest.mark.unit

PACKAGES = ["lambdarec", "schemas", "batch", "speed", "serving", "deploy"]


def modules() -> list[str]:
    found = []
    for name in PACKAGES:
        package = importlib.import_module(name)
        found += [name] + [info.name for info in pkgutil.walk_packages(package.__path__, f"{name}.")]
    return found


@pytest.mark.parametrize("module", modules())
def test_the_module_imports(module):
    importlib.import_module(module)
