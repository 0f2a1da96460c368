"""The ``lambdarec`` command line.

Each subcommand lives in the module that owns the work; that module exposes
``add_arguments(parser)`` and ``command(args, settings) -> int``. Modules are
imported only when their subcommand runs, so ``lambdarec --help`` starts fast
and no subcommand pays for another's imports (Spark above all).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from types import ModuleType
from typing import NoReturn

from lambdarec.pseudonym import PseudonymKeyRefused
from lambdarec.settings import Settings

# Each subcommand's module, imported only when that subcommand runs (a real import, which the import
# contracts see): `lambdarec --help` starts fast and no subcommand pays for another's imports.
def _jars() -> ModuleType:
    from lambdarec import jars

    return jars


def _broker() -> ModuleType:
    from deploy.embedded import broker

    return broker


def _postgres() -> ModuleType:
    from deploy.embedded import postgres

    return postgres


def _cdc() -> ModuleType:
    from deploy.embedded import cdc

    return cdc


def _serve() -> ModuleType:
    from serving import cli

    return cli


def _speed() -> ModuleType:
    from speed import job

    return job


def _train() -> ModuleType:
    from batch import train

    return train


def _status() -> ModuleType:
    from deploy import status

    return status


def _evaluate() -> ModuleType:
    from deploy import evaluate

    return evaluate


def _erase() -> ModuleType:
    from batch import erasure

    return erasure


def _export() -> ModuleType:
    from serving import export

    return export


def _keys() -> ModuleType:
    from lambdarec import api_keys

    return api_keys


def _audit() -> ModuleType:
    from lambdarec import audit

    return audit


def _import() -> ModuleType:
    from batch import importer

    return importer


def _generate() -> ModuleType:
    from deploy import generator

    return generator


def _demo() -> ModuleType:
    from deploy import demo

    return demo


def _up() -> ModuleType:
    from deploy import up

    return up


def _down() -> ModuleType:
    from deploy import down

    return down


def _ps() -> ModuleType:
    from deploy import ps

    return ps


SUBCOMMANDS: dict[str, tuple[Callable[[], ModuleType], str]] = {
    "jars": (_jars, "Resolve the JVM jars (Kafka broker, Spark's Kafka connector, Delta, Kafka Connect with Debezium) with Maven."),
    "broker": (_broker, "Run the embedded single-node Apache Kafka broker (KRaft) on loopback."),
    "postgres": (_postgres, "Run the embedded Postgres (the operational database) on loopback."),
    "cdc": (_cdc, "Run Kafka Connect with Debezium's Postgres connector (catalogue and users into Kafka)."),
    "serve": (_serve, "Run the serving API (FastAPI under uvicorn), in one process or several (--workers)."),
    "speed": (_speed, "Run the speed layer streaming job in this process."),
    "train": (_train, "Train every model family, refit the best on the whole snapshot, gate and publish it."),
    "status": (_status, "Show the speed job's progress, lag and the published model."),
    "evaluate": (_evaluate, "Benchmark the product on an interactions file: split, import, train, serve, score."),
    "erase": (_erase, "Erase a user from every layer (or complete pending erasures) and write the receipt."),
    "export": (_export, "Print everything held on a user as one JSON document (right of access)."),
    "keys": (_keys, "Create, list or revoke serving's API keys (bearer tokens with scopes: ingest, consent, read, admin)."),
    "audit": (_audit, "Print the audit log: every consent change, erasure, export, reload and key change."),
    "import": (_import, "Backfill historical interactions into events, or load a catalogue or user profiles (--kind)."),
    "generate": (_generate, "Write or send synthetic events with a planted structure."),
    "demo": (_demo, "Run the whole platform on embedded defaults, end to end."),
    "up": (_up, "Start the long-running platform (broker, CDC, speed job, serving, Airflow) under a supervisor that restarts what dies; returns once it is ready."),
    "down": (_down, "Stop what `lambdarec up` started; returns once every process is gone."),
    "ps": (_ps, "List the components `lambdarec up` runs: status, pid, restarts, uptime, memory."),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lambdarec", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="subcommand", required=True)
    for name, (load, help_text) in SUBCOMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(_module=load)
        if name in _requested(sys.argv[1:]):
            load().add_arguments(sub)
    return parser


def _requested(argv: list[str]) -> set[str]:
    return {arg for arg in argv if arg in SUBCOMMANDS}


def lambdarec_command(*args: str) -> list[str]:
    """``lambdarec ARGS`` with this interpreter, independent of PATH."""
    return [sys.executable, "-m", "deploy.cli", *args]


def run() -> NoReturn:
    """The ``lambdarec`` console script: ``main``, then an exit that skips interpreter teardown."""
    exit_now(main())


def exit_now(code: int) -> NoReturn:
    """Flush and leave without tearing the interpreter down. delta-rs's runtime threads can abort a
    process that has finished its work (SIGABRT, "terminate called without an active exception":
    delta-io/delta-rs#2184) while Python finalises around them, and a scheduler would then fail a
    task that succeeded. Every command has stopped its children and closed its files by now."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    sys.argv = [sys.argv[0], *argv]
    args = build_parser().parse_args(argv)
    module = args._module()
    try:
        return int(module.command(args, Settings()) or 0)
    except PseudonymKeyRefused as exc:  # a wrong key is the user's to fix: the reason, not a traceback
        print(f"lambdarec {args.subcommand}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    run()
