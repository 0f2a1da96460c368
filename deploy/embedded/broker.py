"""The embedded broker: a single-node Apache Kafka (KRaft, broker and controller in one JVM).

It gives a laptop or CI run a real Kafka over a socket with one command, from
the ``kafka`` jar group (``lambdarec jars``). Everything lives under
``<root>/broker/``:

- ``server.properties``: the broker config, rewritten on every start from settings;
- ``log4j2.properties``: logging, the server log at INFO into ``kafka.log``;
- ``cluster.id``: the KRaft cluster id, generated once;
- ``data/``: the log dirs (records and metadata), formatted on the first start only.

Records are on disk, so a restart, even after a kill -9, keeps every record the
broker acknowledged. Both listeners are on loopback by default: the clients'
PLAINTEXT one on ``embedded_broker_host``:``embedded_broker_port`` (the address it
advertises, too) and the KRaft controller's, which only the broker itself uses, on
127.0.0.1:``embedded_controller_port`` always. The JVM gets SIGKILL if the process that started
it dies (``processes.die_with_parent``), so it is never orphaned holding the
ports. With ``kafka_bootstrap_servers`` set there is nothing to embed and the
same client code talks to that cluster instead.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import logging
import os
import socket
import subprocess
import uuid
from pathlib import Path

from lambdarec import jars, kafka_io
from deploy.embedded.java import JVM_OPTIONS, java_and_classpath, log4j2_properties
from deploy.embedded.process import EmbeddedProcess
from lambdarec.processes import die_with_parent, run_until_signalled
from lambdarec.settings import LOOPBACK, WILDCARD_HOSTS, Settings, host_port


log = logging.getLogger(__name__)

NODE_ID = 1
FORMAT_TIMEOUT_S = 60.0


class BrokerError(RuntimeError):
    """The embedded broker cannot be started here, or it died."""


class PortInUseError(BrokerError):
    """Something else listens on one of the embedded broker's ports."""


class EmbeddedBroker(EmbeddedProcess):
    """Run Kafka on loopback for the life of a ``with`` block, platform topics created.

    Startup formats the storage if it is new, starts the JVM, waits until the
    broker answers metadata and creates the platform topics. Stop sends SIGTERM
    (Kafka shuts down cleanly) and kills the JVM if it has not exited by the deadline.
    """

    name, event, error = "broker", "broker", BrokerError

    def __init__(self, settings: Settings, startup_timeout_s: float = 60.0, stop_timeout_s: float = 30.0):
        if not settings.uses_embedded_broker:
            raise BrokerError(
                f"kafka_bootstrap_servers is set ({settings.kafka_bootstrap_servers}); "
                "the platform uses that cluster and there is no broker to embed. "
                "Unset LAMBDAREC_KAFKA_BOOTSTRAP_SERVERS to run the embedded one."
            )
        if settings.embedded_broker_port == settings.embedded_controller_port:
            raise BrokerError(
                f"embedded_broker_port and embedded_controller_port are both {settings.embedded_broker_port}; "
                "the broker needs two ports (LAMBDAREC_EMBEDDED_CONTROLLER_PORT or --controller-port)"
            )
        if settings.embedded_broker_host in WILDCARD_HOSTS:
            raise BrokerError(
                f"embedded_broker_host is {settings.embedded_broker_host!r}, but the broker advertises the address it "
                "binds and clients must reach it: set LAMBDAREC_EMBEDDED_BROKER_HOST to 127.0.0.1 (the default), "
                "or to this machine's address or name"
            )
        if settings.topic_replication_factor > 1:
            raise BrokerError(
                f"topic_replication_factor is {settings.topic_replication_factor}, but the embedded broker is "
                "a single node; set it to 1 (LAMBDAREC_TOPIC_REPLICATION_FACTOR) or use a cluster"
            )
        self.home = Path(settings.root).resolve() / "broker"
        super().__init__(self.home / "kafka.log", startup_timeout_s, stop_timeout_s)
        self.settings = settings
        self.host = settings.embedded_broker_host
        self.port = settings.embedded_broker_port
        self.controller_port = settings.embedded_controller_port
        self.data_dir = self.home / "data"
        self.config_path = self.home / "server.properties"
        self.log4j_path = self.home / "log4j2.properties"
        self.cluster_id_path = self.home / "cluster.id"
        self._archive: _ClassArchive | None = None

    @property
    def bootstrap_servers(self) -> str:
        return host_port(self.host, self.port)

    def start(self) -> "EmbeddedBroker":
        """Format on first use, start the JVM, wait for it to answer, and create the platform topics."""
        if self._process is not None:
            raise BrokerError("this embedded broker has already been started")
        _require_free_port(self.host, self.port, "LAMBDAREC_EMBEDDED_BROKER_PORT or --port")
        _require_free_port(LOOPBACK, self.controller_port, "LAMBDAREC_EMBEDDED_CONTROLLER_PORT or --controller-port")
        java, classpath = java_and_classpath(self.settings, "kafka", BrokerError)
        self.home.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self._server_properties())
        self.log4j_path.write_text(log4j2_properties(self.log_path, QUIET_LOGGERS))
        base = [java, *self._jvm_options(), "-cp", classpath]
        self._archive = _ClassArchive(self.settings, java)
        if not (self.data_dir / "meta.properties").exists():
            self._format([*base, *self._archive.read_options()])
        self._launch([*base, *self._archive.options(), "kafka.Kafka", str(self.config_path)], cwd=self.home)
        return self._get_ready(self._wait_ready, f"bootstrap={self.bootstrap_servers}")

    def _wait_ready(self) -> None:
        kafka_io.wait_for_broker(self.bootstrap_servers, self.startup_timeout_s, check=self._check_alive)
        kafka_io.ensure_topics(self.settings, kafka_io.platform_topics(self.settings), self.settings.topic_partitions)

    def _stopped(self, clean: bool) -> None:
        """A clean exit recorded the class archive whole; anything else may have left half of one."""
        if self._archive is not None:
            if clean:
                self._archive.keep()
            self._archive.discard()

    def cluster_id(self) -> str:
        """This broker's KRaft cluster id, generated on first use and kept beside the data."""
        if self.cluster_id_path.exists():
            return self.cluster_id_path.read_text().strip()
        cluster_id = _new_cluster_id()
        self.home.mkdir(parents=True, exist_ok=True)
        partial = self.cluster_id_path.with_suffix(".partial")
        partial.write_text(cluster_id + "\n")
        partial.replace(self.cluster_id_path)
        return cluster_id

    def _format(self, base: list[str]) -> None:
        """``StorageTool format`` the log dirs (first start only), with a static single voter."""
        command = [*base, "kafka.tools.StorageTool", "format", "--ignore-formatted",
                   "-t", self.cluster_id(), "-c", str(self.config_path)]
        try:
            result = subprocess.run(
                command, capture_output=True, text=True, stdin=subprocess.DEVNULL, cwd=self.home,
                timeout=FORMAT_TIMEOUT_S, preexec_fn=die_with_parent(),
            )
        except subprocess.TimeoutExpired as exc:
            raise BrokerError(f"formatting the broker storage in {self.data_dir} took over {FORMAT_TIMEOUT_S:.0f}s") from exc
        with self.log_path.open("a") as log_file:
            log_file.write(result.stdout + result.stderr)
        if result.returncode != 0:
            raise BrokerError(
                f"formatting the broker storage in {self.data_dir} failed (exit {result.returncode}):\n"
                f"{(result.stdout + result.stderr)[-4000:]}"
            )
        log.info("event=broker_storage_formatted dir=%s cluster_id=%s", self.data_dir, self.cluster_id())

    def _jvm_options(self) -> list[str]:
        heap = self.settings.embedded_broker_heap
        amount, unit = int(heap[:-1]), heap[-1]
        initial = f"{max(amount // 2, 1)}{unit}" if amount > 1 else heap
        return [f"-Xmx{heap}", f"-Xms{initial}", *JVM_OPTIONS, f"-Dlog4j2.configurationFile={self.log4j_path}"]

    def _server_properties(self) -> str:
        controller = f"{LOOPBACK}:{self.controller_port}"
        properties = {
            "process.roles": "broker,controller",
            "node.id": NODE_ID,
            "controller.quorum.voters": f"{NODE_ID}@{controller}",
            "listeners": f"PLAINTEXT://{self.bootstrap_servers},CONTROLLER://{controller}",
            "advertised.listeners": f"PLAINTEXT://{self.bootstrap_servers}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "log.dirs": self.data_dir,
            "num.partitions": self.settings.topic_partitions,
            "default.replication.factor": 1,
            "min.insync.replicas": 1,
            "offsets.topic.replication.factor": 1,
            "offsets.topic.num.partitions": 1,
            "transaction.state.log.replication.factor": 1,
            "transaction.state.log.min.isr": 1,
            "transaction.state.log.num.partitions": 1,
            "share.coordinator.state.topic.replication.factor": 1,
            "share.coordinator.state.topic.min.isr": 1,
            "group.initial.rebalance.delay.ms": 0,
            "auto.create.topics.enable": "false",
            "num.network.threads": 2,
            "num.io.threads": 4,
            "num.recovery.threads.per.data.dir": 1,
            "log.retention.ms": self.settings.topic_retention_ms,
            "log.roll.ms": self.settings.topic_segment_ms,
            # After a kill -9 the restarted controller refuses the new broker incarnation
            # (DUPLICATE_BROKER_REGISTRATION) until the old one's session expires: 9 s by default.
            "broker.session.timeout.ms": 3000,
            "broker.heartbeat.interval.ms": 500,
        }
        lines = [
            "# Written by lambdarec on every start of the embedded broker (deploy/embedded/broker.py): edits are lost.",
            *(f"{key}={value}" for key, value in properties.items()),
        ]
        return "\n".join(lines) + "\n"


class _ClassArchive:
    """A class-data-sharing archive of the broker's classes: the JVM starts about a second sooner.

    The first broker that finds none records one as it exits cleanly (a unique
    file, moved into place whole, so brokers starting side by side do not clash);
    later starts map it. It lives in the kafka jar folder, named after the java
    binary, so new jars or another JDK get a new one; the JVM ignores an archive
    that does not match (``-Xshare:auto``), and a folder that cannot be written
    only means no archive.
    """

    def __init__(self, settings: Settings, java: str):
        folder = jars.group_dir(settings, "kafka")
        digest = hashlib.sha256(str(Path(java).resolve()).encode()).hexdigest()[:12]
        self.path = folder / f"broker-classes-{digest}.jsa"
        self.recording: Path | None = None
        if not self.path.exists() and os.access(folder, os.W_OK):
            self.recording = folder / f".broker-classes-{digest}.{os.getpid()}.{uuid.uuid4().hex[:8]}.partial"

    def options(self) -> list[str]:
        """JVM options for the broker: record an archive, or map the one there is."""
        if self.recording is not None:
            return [f"-XX:ArchiveClassesAtExit={self.recording}", "-Xlog:cds*=off"]
        return self.read_options()

    def read_options(self) -> list[str]:
        """JVM options that map the archive if there is one (a mismatch is ignored, quietly)."""
        return [f"-XX:SharedArchiveFile={self.path}", "-Xshare:auto", "-Xlog:cds*=off"] if self.path.exists() else []

    def keep(self) -> None:
        """After a clean exit: move the recorded archive into place."""
        if self.recording is not None and self.recording.exists() and self.recording.stat().st_size > 0:
            try:
                self.recording.replace(self.path)
                log.info("event=broker_class_archive_saved path=%s", self.path)
            except OSError as exc:
                log.warning("event=broker_class_archive_not_saved path=%s error=%s", self.path, exc)
        self.recording = None

    def discard(self) -> None:
        if self.recording is not None:
            self.recording.unlink(missing_ok=True)
            self.recording = None


def _new_cluster_id() -> str:
    """A random KRaft cluster id as Kafka writes one (16 bytes, URL-safe base64), never starting with '-'."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):  # it would read as an option on the command line
            return cluster_id


# Loggers below the server's INFO: per-request, per-partition and client chatter.
QUIET_LOGGERS = (
    "kafka.request.logger", "state.change.logger", "kafka.authorizer.logger", "kafka.log.LogCleaner",
    "kafka.controller", "kafka.coordinator", "kafka.network", "kafka.cluster", "kafka.log", "kafka.utils",
    "org.apache.kafka",
)


def _require_free_port(host: str, port: int, how_to_change: str) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        # Bind as a server does, so connections of a stopped broker lingering in TIME_WAIT do not count.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise PortInUseError(
                f"port {host_port(host, port)} is already in use ({exc.strerror}); stop whatever holds it "
                f"or choose another with {how_to_change}"
            ) from exc


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--port", type=int, default=None,
        help="Loopback port of the client listener (default: settings.embedded_broker_port).",
    )
    parser.add_argument(
        "--controller-port", type=int, default=None,
        help="Loopback port of the KRaft controller listener (default: settings.embedded_controller_port).",
    )


def command(args: argparse.Namespace, settings: Settings) -> int:
    """``lambdarec broker``: run the embedded broker until SIGINT or SIGTERM; non-zero if it dies."""
    if args.port is not None:
        settings = settings.model_copy(update={"embedded_broker_port": args.port})
    if getattr(args, "controller_port", None) is not None:
        settings = settings.model_copy(update={"embedded_controller_port": args.controller_port})
    return run_until_signalled("broker", EmbeddedBroker(settings).start, lambda broker: {
        "bootstrap_servers": broker.bootstrap_servers,
        "controller_port": broker.controller_port,
        "topics": kafka_io.platform_topics(settings),
        "partitions": settings.topic_partitions,
        "pid": broker.pid,
        "data": str(broker.data_dir),
        "log": str(broker.log_path),
    }, (BrokerError, kafka_io.BrokerUnavailableError))
