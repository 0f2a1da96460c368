"""spark-submit jobs as child processes, the way a scheduler starts them (so a test can kill one)."""

from __future__ import annotations

import subprocess

from lambdarec.settings import Settings
from lambdarec.submit import PROJECT_ROOT, spark_submit_command, spark_submit_env


def start_job(settings: Settings, script: str, args: list[str] | None = None) -> subprocess.Popen:
    """``spark-submit script args`` in a session of its own: ``os.killpg`` reaches its JVM too."""
    return subprocess.Popen(
        spark_submit_command(settings, script, args), env=spark_submit_env(settings), cwd=PROJECT_ROOT,
        start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def finish(process: subprocess.Popen, timeout_s: float = 300) -> str:
    """Wait for a job; its output, after asserting it succeeded."""
    output, _ = process.communicate(timeout=timeout_s)
    assert process.returncode == 0, output[-4000:]
    return output
