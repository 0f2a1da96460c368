"""The embedded broker as a component a test kills and restarts: ``lambdarec broker`` as a child."""

from __future__ import annotations

import json
import os
import signal
import socket
from pathlib import Path

from lambdarec.processes import Child, start_child, wait_for
from deploy.cli import lambdarec_command
from lambdarec.settings import Settings
from tests.plugins.broker import broker_ports


def process_gone(pid: int) -> bool:
    """True once every thread of ``pid`` has exited (an unreaped zombie counts as gone).

    The group leader turns zombie before the JVM's other threads are done exiting
    and its sockets closed, so every task is checked, not the leader alone.
    """
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except FileNotFoundError:
        return True
    for task in tasks:
        try:
            state = (task / "stat").read_text().rpartition(")")[2].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            continue
        if state not in ("Z", "X"):
            return False
    return True


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class Component:
    """``lambdarec broker`` as a child process, with its settings and the JVM pid it reported."""

    def __init__(self, tmp_path: Path):
        self.ports = broker_ports()
        self.root = tmp_path / "lambdarec"
        self.logs = tmp_path / "logs"
        self.settings = Settings(root=self.root, kafka_bootstrap_servers="", topic_partitions=2, **self.ports)
        self.env = {
            **os.environ,
            "LAMBDAREC_ROOT": str(self.root),
            "LAMBDAREC_KAFKA_BOOTSTRAP_SERVERS": "",
            "LAMBDAREC_TOPIC_PARTITIONS": "2",
            "LAMBDAREC_EMBEDDED_BROKER_PORT": str(self.ports["embedded_broker_port"]),
            "LAMBDAREC_EMBEDDED_CONTROLLER_PORT": str(self.ports["embedded_controller_port"]),
        }
        self.starts = 0
        self.child: Child | None = None
        self.jvm_pid: int | None = None

    def start(self) -> None:
        self.starts += 1
        self.child = start_child(f"broker-{self.starts}", lambdarec_command("broker"), self.logs, self.env)
        ready = wait_for(lambda: self.child.check_alive() and self._ready_line(), 90, "lambdarec broker to be ready")
        self.jvm_pid = ready["pid"]
        assert self.jvm_pid != self.child.process.pid

    def _ready_line(self) -> dict | None:
        for line in self.child.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{") and json.loads(line).get("event") == "broker_ready":
                return json.loads(line)
        return None

    def kill_9(self) -> None:
        """SIGKILL ``lambdarec broker`` only; its JVM must follow on its own."""
        os.kill(self.child.process.pid, signal.SIGKILL)
        self.child.process.wait(timeout=10)
        wait_for(lambda: process_gone(self.jvm_pid), 10, f"the Kafka JVM (pid {self.jvm_pid}) to die with its parent")
        self.child.stop()  # already dead: closes the log

    def stop(self) -> None:
        if self.child is not None and self.child.alive():
            assert self.child.stop(timeout_s=60) == 0, self.child.log_tail()
        if self.jvm_pid is not None:
            wait_for(lambda: process_gone(self.jvm_pid), 30, "the Kafka JVM to exit")
