"""`lambdarec up` / `ps` / `down` driven through the CLI on a temp root and free ports, as a user runs them."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lambdarec import proc_tree
from lambdarec.processes import StageError, wait_for
from lambdarec.settings import Settings
from tests.plugins.broker import free_ports
from tests.support.listeners import listeners

UP_TIMEOUT_S = 480


class Platform:
    """The ``lambdarec`` CLI on one temp root and its own free ports."""

    def __init__(self, tmp_path: Path, postgres_home: Path):
        broker, controller, serve, postgres, connect, self.airflow_port, speed_metrics, prometheus = free_ports(8)
        self.root = tmp_path / "lambdarec"
        self.env = {
            **os.environ,
            "LAMBDAREC_ROOT": str(self.root),
            "LAMBDAREC_EMBEDDED_BROKER_PORT": str(broker),
            "LAMBDAREC_EMBEDDED_CONTROLLER_PORT": str(controller),
            "LAMBDAREC_SERVE_PORT": str(serve),
            "LAMBDAREC_EMBEDDED_POSTGRES_PORT": str(postgres),
            "LAMBDAREC_CDC_CONNECT_PORT": str(connect),
            "LAMBDAREC_EMBEDDED_POSTGRES_DIR": str(postgres_home),
            "LAMBDAREC_SPEED_METRICS_PORT": str(speed_metrics),
            "LAMBDAREC_PROMETHEUS_PORT": str(prometheus),
        }
        self.ports = {broker, controller, serve, postgres, connect, speed_metrics, prometheus}
        self.prometheus = f"http://127.0.0.1:{prometheus}"
        self.api = f"http://127.0.0.1:{serve}"
        self.settings = Settings(root=self.root, embedded_broker_port=broker, embedded_controller_port=controller,
                                 serve_port=serve, embedded_postgres_port=postgres)

    def run(self, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "deploy.cli", *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout_s)

    def up(self, *args: str) -> subprocess.CompletedProcess:
        done = self.run("up", "--airflow-port", str(self.airflow_port), "--timeout", str(UP_TIMEOUT_S), *args,
                        timeout_s=UP_TIMEOUT_S + 120)
        assert done.returncode == 0, done.stdout + done.stderr + self.logs()
        return done

    def ps(self) -> dict:
        done = self.run("ps", "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def component(self, name: str, info: dict | None = None) -> dict:
        return next(c for c in (info or self.ps())["components"] if c["name"] == name)

    def pids(self) -> set[int]:
        """Every live process of every component's tree."""
        return {pid for c in self.ps()["components"] if c["alive"] for pid in proc_tree.tree(c["pid"])}

    def kill_9(self, name: str) -> int:
        """SIGKILL the process the supervisor started for ``name``; wait until ps shows it back, with a new pid."""
        old = self.component(name)
        assert old["status"] == "running" and old["alive"], old
        os.kill(old["pid"], signal.SIGKILL)

        def restarted() -> dict | None:
            now = self.component(name)
            back = now["status"] == "running" and now["alive"] and now["pid"] != old["pid"]
            return now if back and now["restarts"] >= old["restarts"] + 1 else None

        new = wait_for(restarted, 300, f"the supervisor to restart {name}", interval_s=0.5)
        assert not proc_tree.alive(old["pid"])
        return new["pid"]

    def listeners(self) -> set[tuple[int, str, int]]:
        """(pid, address, port) of every TCP listener of the supervisor and its components' process trees."""
        return listeners(self.pids() | {self.ps()["supervisor_pid"]})

    def logs(self, lines: int = 30) -> str:
        folder = self.root / "platform" / "logs"
        tails = [f"\n--- {path.name} ---\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
                 for path in sorted(folder.glob("*.log"))] if folder.exists() else []
        return "".join(tails)

    def diagnosis(self) -> str:
        """For a failed test's report: serving's thread stacks (``kill -USR1``, into its log), then every log's tail."""
        serving = next((c for c in self.ps()["components"] if c["name"] == "serving" and c["alive"]), None)
        if serving is not None:
            log = self.root / "platform" / "logs" / "serving.log"
            dumps = log.read_text(errors="replace").count("most recent call first")
            for pid in proc_tree.tree(serving["pid"]):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGUSR1)
            with contextlib.suppress(StageError):  # a report without the stacks still has the logs
                wait_for(lambda: log.read_text(errors="replace").count("most recent call first") > dumps, 5,
                         "serving's thread stacks in its log", interval_s=0.1)
        return self.logs(lines=120)

    def create_key(self, name: str, *scopes: str) -> str:
        """``lambdarec keys create``: the token it prints once."""
        done = self.run("keys", "create", "--name", name, *(arg for scope in scopes for arg in ("--scope", scope)))
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout.strip().splitlines()[-1]


@contextmanager
def platform_on(tmp_path: Path) -> Iterator[Platform]:
    """A Platform on ``tmp_path``; on the way out `lambdarec down`, which must leave nothing up."""
    # Run as root, Postgres runs as the postgres user, who must reach its cluster: not under pytest's tmp_path.
    postgres_home = Path(tempfile.mkdtemp(prefix="lambdarec-postgres-"))
    postgres_home.chmod(0o711)
    platform = Platform(tmp_path, postgres_home)
    try:
        yield platform
    finally:
        down = platform.run("down", timeout_s=400)
        leftovers = platform.run("ps", "--json")
        shutil.rmtree(postgres_home, ignore_errors=True)
    assert down.returncode == 0, down.stdout + down.stderr
    assert json.loads(leftovers.stdout)["up"] is False
