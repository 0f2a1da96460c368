"""The JVM jars the platform runs on, resolved from Maven Central and cached on disk.

Three groups, each a Maven profile of ``lambdarec/jvm/pom.xml`` with pinned
coordinates, copied by ``mvn dependency:copy-dependencies`` into a folder of
``settings.jars_dir``:

- ``kafka``: the Apache Kafka broker that ``lambdarec broker`` runs;
- ``spark``: Spark's Kafka connector and Delta Lake, on every Spark job's classpath;
- ``cdc``: Kafka Connect and Debezium's Postgres connector, which ``lambdarec cdc`` runs.

``lambdarec jars`` (run by ``make``) resolves what is missing; a group is reused
while the pom it came from is unchanged. Jars the pyspark wheel already ships
are left out of the spark group, so Spark's own versions are the only ones.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from lambdarec.settings import Settings

POM = Path(__file__).with_name("jvm") / "pom.xml"
GROUPS = ("kafka", "spark", "cdc")
STAMP = ".pom-sha256"


class MissingJarsError(RuntimeError):
    """A jar group is not resolved (or came from an older pom)."""


def group_dir(settings: Settings, group: str) -> Path:
    return settings.jars_root / group


def _pom_digest() -> str:
    return hashlib.sha256(POM.read_bytes()).hexdigest()


def resolved(settings: Settings, group: str) -> bool:
    stamp = group_dir(settings, group) / STAMP
    return stamp.exists() and stamp.read_text().strip() == _pom_digest()


def classpath(settings: Settings, group: str) -> list[str]:
    """The group's jar paths; raises MissingJarsError naming the command that fetches them."""
    if group not in GROUPS:
        raise ValueError(f"unknown jar group {group!r}; one of {GROUPS}")
    if not resolved(settings, group):
        raise MissingJarsError(
            f"the {group} jars are not in {group_dir(settings, group)} (or the pom changed since they were "
            "fetched). Run `make jars` (or `lambdarec jars`), which resolves them from Maven Central with mvn."
        )
    return sorted(str(path) for path in group_dir(settings, group).glob("*.jar"))


def _pyspark_artifacts() -> set[str]:
    import pyspark

    return {_artifact(path.name) for path in (Path(pyspark.__file__).parent / "jars").glob("*.jar")}


def _artifact(file_name: str) -> str:
    """``kafka-clients-3.9.2.jar`` → ``kafka-clients`` (the name up to the version)."""
    stem = file_name.removesuffix(".jar")
    parts = stem.split("-")
    for index in range(1, len(parts)):
        if parts[index][:1].isdigit():
            return "-".join(parts[:index])
    return stem


def resolve(settings: Settings, group: str, quiet: bool = True) -> Path:
    """Fetch ``group`` with mvn into a temporary folder, then move it into place whole."""
    mvn = shutil.which("mvn")
    if mvn is None:
        raise MissingJarsError("mvn is not on PATH: install Maven (Debian: apt-get install maven), then rerun")
    target = group_dir(settings, group)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{group}-", dir=target.parent))
    try:
        command = [mvn, *(["-q"] if quiet else []), "-B", "-f", str(POM), "-P", group,
                   "dependency:copy-dependencies", f"-DoutputDirectory={staging}", "-DincludeScope=runtime"]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise MissingJarsError(f"mvn could not resolve the {group} jars:\n{(result.stdout + result.stderr)[-4000:]}")
        if group == "spark":
            shipped = _pyspark_artifacts()
            for jar in staging.glob("*.jar"):
                if _artifact(jar.name) in shipped:
                    jar.unlink()
        (staging / STAMP).write_text(_pom_digest())
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--force", action="store_true", help="Fetch again even if the jars are in place.")


def command(args: argparse.Namespace, settings: Settings) -> int:
    """``lambdarec jars``: resolve every group that is missing; print where each one is."""
    for group in GROUPS:
        if args.force or not resolved(settings, group):
            print(json.dumps({"event": "jars_resolving", "group": group}), flush=True)
            try:
                resolve(settings, group)
            except MissingJarsError as exc:
                print(json.dumps({"event": "jars_failed", "group": group, "error": str(exc)}), file=sys.stderr)
                return 1
        jars = classpath(settings, group)
        print(json.dumps({"event": "jars_ready", "group": group, "folder": str(group_dir(settings, group)),
                          "jars": len(jars)}), flush=True)
    return 0
