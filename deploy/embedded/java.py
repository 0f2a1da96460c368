"""What the JVM processes lambdarec runs (the Kafka broker, Kafka Connect) share: java, options, logging."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from lambdarec import jars
from lambdarec.settings import Settings

# Small and quick to start, for a laptop or a 2-core CI machine. The client JIT alone (C1) starts
# a JVM about a second sooner on 2 busy cores and is ample for these loads.
JVM_OPTIONS = (
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-XX:+ExitOnOutOfMemoryError",
    "-Xss1m",
    "-Djava.awt.headless=true",
)


class JavaMissing(RuntimeError):
    """No java to run the JVM processes with."""


def java_executable() -> str:
    """``$JAVA_HOME/bin/java`` if set, else ``java`` on PATH (Kafka 4 needs Java 17 or newer)."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and Path(java_home, "bin", "java").exists():
        return str(Path(java_home, "bin", "java"))
    found = shutil.which("java")
    if found is None:
        raise JavaMissing("no java: set JAVA_HOME or put java (17 or newer) on PATH (Kafka and Kafka Connect need it)")
    return found


def java_and_classpath(settings: Settings, group: str, error: type[Exception]) -> tuple[str, str]:
    """The java to run and the classpath of the jar ``group`` (``lambdarec jars``); what is missing as ``error``."""
    try:
        return java_executable(), ":".join(jars.classpath(settings, group))
    except (JavaMissing, jars.MissingJarsError) as exc:
        raise error(str(exc)) from exc


def log4j2_properties(log_path: Path, quiet: tuple[str, ...]) -> str:
    """A JVM's log at INFO into ``log_path``, the ``quiet`` loggers at WARN."""
    lines = [
        "# Written by lambdarec on every start of the process (deploy/embedded/java.py): edits are lost.",
        "status = warn",
        "appender.file.type = File",
        "appender.file.name = file",
        f"appender.file.fileName = {log_path}",
        "appender.file.append = true",
        "appender.file.layout.type = PatternLayout",
        "appender.file.layout.pattern = [%d] %p %m (%c)%n",
        "rootLogger.level = INFO",
        "rootLogger.appenderRef.file.ref = file",
    ]
    for name in quiet:
        key = re.sub(r"[^A-Za-z0-9]", "_", name)
        lines += [f"logger.{key}.name = {name}", f"logger.{key}.level = WARN"]
    return "\n".join(lines) + "\n"
