"""The ``lambdarec`` command line.

Each subcommand lives in the module that owns the work; that module exposes
``add_arguments(parser)`` and ``command(args, settings) -> int``. Modules are
imported only when their subcommand runs, so ``lambdarec --help`` starts fast
and no subcommand pays for another's imports (Spark above all).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import NoReturn

from lambdarec.pseudonym import PseudonymKeyRefused
from lambdarec.settings import Settings

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "jars": ("lambdarec.jars", "Resolve the JVM jars (Kafka broker, Spark's Kafka connector, Delta, Kafka Connect "
             "with Debezium) with Maven."),
    "broker": ("lambdarec.broker", "Run the embedded single-node Apache Kafka broker (KRaft) on loopback."),
    "postgres": ("lambdarec.postgres", "Run the embedded Postgres (the operational database) on loopback."),
    "cdc": ("lambdarec.cdc", "Run Kafka Connect with Debezium's Postgres connector (catalogue and users into Kafka)."),
    "serve": ("serving.cli", "Run the serving API (FastAPI under uvicorn), in one process or several (--workers)."),
    "speed": ("speed.job", "Run the speed layer streaming job in this process."),
    "train": ("batch.train", "Train every model family, refit the best on the whole snapshot, gate and publish it."),
    "status": ("lambdarec.status", "Show the speed job's progress, lag and the published model."),
    "evaluate": ("lambdarec.evaluate", "Benchmark the product on an interactions file: split, import, train, serve, score."),
    "erase": ("batch.erasure", "Erase a user from every layer (or complete pending erasures) and write the receipt."),
    "export": ("lambdarec.export", "Print everything held on a user as one JSON document (right of access)."),
    "keys": ("lambdarec.api_keys", "Create, list or revoke serving's API keys (bearer tokens with scopes: ingest, "
             "consent, read, admin)."),
    "audit": ("lambdarec.audit", "Print the audit log: every consent change, erasure, export, reload and key change."),
    "import": ("batch.importer", "Backfill historical interactions into events, or load a catalogue or user profiles (--kind)."),
    "generate": ("lambdarec.generator", "Write or send synthetic events with a planted structure."),
    "demo": ("lambdarec.demo", "Run the whole platform on embedded defaults, end to end."),
    "up": ("lambdarec.platform_up", "Start the long-running platform (broker, CDC, speed job, serving, Airflow) under "
           "a supervisor that restarts what dies; returns once it is ready."),
    "down": ("lambdarec.platform_down", "Stop what `lambdarec up` started; returns once every process is gone."),
    "ps": ("lambdarec.platform_ps", "List the components `lambdarec up` runs: status, pid, restarts, uptime, memory."),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lambdarec", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="subcommand", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(_module=module_name)
        if name in _requested(sys.argv[1:]):
            importlib.import_module(module_name).add_arguments(sub)
    return parser


def _requested(argv: list[str]) -> set[str]:
    return {arg for arg in argv if arg in SUBCOMMANDS}


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
    module = importlib.import_module(args._module)
    try:
        return int(module.command(args, Settings()) or 0)
    except PseudonymKeyRefused as exc:  # a wrong key is the user's to fix: the reason, not a traceback
        print(f"lambdarec {args.subcommand}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    run()
