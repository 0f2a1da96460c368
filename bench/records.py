"""A bench's dated JSON record: what ran where (host, cores, memory, commit), its arguments and its figures.

Records go under ``bench/records/<bench>-<UTC time>.json``; ``bench/report.py`` renders the newest
of each into the docs.
"""

from __future__ import annotations

import json
import platform
import socket
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

PROJECT = Path(__file__).resolve().parent.parent
RECORDS = PROJECT / "bench" / "records"


def start(bench: str, args: dict[str, Any]) -> dict[str, Any]:
    """A new record of ``bench``: when, on what, from which commit, with which arguments."""
    return {
        "bench": bench, "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": socket.gethostname(), "cores": psutil.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1), "python": platform.python_version(),
        **_commit(), "args": {name: (str(value) if isinstance(value, Path) else value) for name, value in args.items()},
    }


def write(record: dict[str, Any], records: Path = RECORDS) -> Path:
    """Write ``record`` as ``<records>/<bench>-<UTC time>.json`` and print it; the path."""
    records.mkdir(parents=True, exist_ok=True)
    path = records / f"{record['bench']}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record))
    return path


def _commit() -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=PROJECT, capture_output=True, text=True).stdout.strip()

    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
