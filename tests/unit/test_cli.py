"""Every ``lambdarec`` subcommand's module offers the CLI's two hooks, and its --help parses."""

from __future__ import annotations

import subprocess
import sys

import pytest

from deploy.cli import SUBCOMMANDS

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_each_subcommand_module_has_the_cli_hooks(name):
    module = SUBCOMMANDS[name][0]()
    assert callable(module.add_arguments) and callable(module.command)


def test_train_help_parses_in_a_fresh_interpreter():
    done = subprocess.run([sys.executable, "-m", "deploy.cli", "train", "--help"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "--events-version" in done.stdout
