"""The training job's command line, shared by ``lambdarec train``, spark-submit and the Airflow DAG."""

from __future__ import annotations

import argparse
from typing import get_args

from lambdarec.settings import AlsEngine, Settings


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="batch/train.py", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return parser.parse_args(argv)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--events-version",
        type=int,
        default=None,
        help="Train on this events table version (default: latest).",
    )
    parser.add_argument(
        "--model-version",
        type=int,
        default=None,
        help="Redo this model version (default: resume an interrupted one, else the next).",
    )
    parser.add_argument(
        "--run-key",
        default=None,
        help="Idempotency key, e.g. the scheduler's data interval: a re-run finds its model again.",
    )
    parser.add_argument(
        "--engine", choices=get_args(AlsEngine), default=None, help="ALS engine (default: settings)."
    )
    parser.add_argument(
        "--candidate-only",
        action="store_true",
        help="Stop after recording the candidate; the publish gate runs as its own step.",
    )


def job_args(args: argparse.Namespace) -> list[str]:
    """The job's own arguments, as spark-submit passes them on."""
    out = []
    if args.events_version is not None:
        out += ["--events-version", str(args.events_version)]
    if args.model_version is not None:
        out += ["--model-version", str(args.model_version)]
    if args.run_key is not None:
        out += ["--run-key", args.run_key]
    if args.engine is not None:
        out += ["--engine", args.engine]
    if args.candidate_only:
        out += ["--candidate-only"]
    return out


def with_engine(settings: Settings, name: str | None) -> Settings:
    return settings if name is None else settings.model_copy(update={"als_engine": name})
