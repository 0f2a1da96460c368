"""Change data capture: a Kafka Connect worker running Debezium's Postgres connector.

``lambdarec cdc`` runs Connect in standalone mode (the ``cdc`` jar group) with one
connector, ``lambdarec-cdc``. It reads the operational database's publication
``lambdarec_cdc`` through ``pgoutput`` (a replication slot of the same name), takes
a snapshot of the tables the first time, then streams every change to
``<cdc_topic_prefix>.<schema>.<table>`` in Debezium's envelope (``before``,
``after``, ``op``, ``source`` with the LSN), as JSON without schemas, keyed by the
row's primary key; a delete is followed by a tombstone. Connect keeps its source
offsets in ``<root>/cdc/connect.offsets``: a restart resumes after the last change
it flushed, so delivery is at least once and the consumer upserts by key and LSN.

Everything lives under ``<root>/cdc/``: the worker's and the connector's
properties (rewritten on every start), the offsets and ``connect.log``. The REST API
listens on ``cdc_connect_host`` (loopback by default).

The database password is in none of them, nor in the REST API's answers: the
connector's ``database.password`` is the placeholder ``${file:<path>:database.password}``,
which the worker's FileConfigProvider (``config.providers=file``, allowed to read only
``secrets_root``) resolves when it starts the connector, from a mode-600 file in
``secrets_root`` written at every start. Connect stores and shows the placeholder. On
a Connect cluster, post ``connector_config(settings)`` to its REST API, with the same
provider in its workers' config and the secrets file (``connector_secrets``) on each.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit

import httpx

from lambdarec import secret_files
from deploy.embedded.java import JVM_OPTIONS, java_and_classpath, log4j2_properties
from deploy.embedded.postgres import PUBLICATION
from deploy.embedded.process import EmbeddedProcess
from lambdarec.processes import StageError, run_until_signalled
from lambdarec.settings import Settings, dial, host_port
from schemas.cdc import TABLES as CDC_TABLES, topics

log = logging.getLogger(__name__)

CONNECTOR = "lambdarec-cdc"
SLOT = PUBLICATION
CONFIG_PROVIDER = "file"
SECRET_KEYS = ("database.password",)
"""The connector's settings that come from the secrets file, never from its configuration."""
QUIET_LOGGERS = ("org.reflections", "org.apache.kafka.clients", "org.eclipse.jetty", "org.glassfish",
                 "org.apache.kafka.connect.runtime.WorkerConfig", "io.debezium.connector.common.BaseSourceTask")


class ConnectError(StageError):
    """Kafka Connect or its connector cannot be started, or failed."""


def secrets_path(settings: Settings) -> Path:
    return settings.secrets_root / secret_files.CDC_CONNECTOR_SECRETS


def connector_secrets(settings: Settings) -> dict[str, str]:
    """The connector's secret settings (``SECRET_KEYS``), from the operational database's URL."""
    return {"database.password": unquote(_database_url(settings).password or "")}


def connector_config(settings: Settings) -> dict[str, str]:
    """The Debezium connector's configuration for the operational database in settings; its secrets are
    placeholders that the worker's config provider resolves from ``secrets_path``."""
    url = _database_url(settings)
    placeholders = {key: f"${{{CONFIG_PROVIDER}:{secrets_path(settings)}:{key}}}" for key in SECRET_KEYS}
    return {
        "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
        "tasks.max": "1",
        "plugin.name": "pgoutput",
        "database.hostname": str(url.hostname),  # present: _database_url checked it
        "database.port": str(url.port or 5432),
        "database.user": unquote(url.username or ""),
        **placeholders,
        "database.dbname": url.path.strip("/"),
        "topic.prefix": settings.cdc_topic_prefix,
        "table.include.list": ",".join(CDC_TABLES),
        "slot.name": SLOT,
        "publication.name": PUBLICATION,
        "publication.autocreate.mode": "disabled",  # the database's owner creates it (deploy.embedded.postgres)
        "snapshot.mode": "initial",
        "decimal.handling.mode": "string",  # prices as "9.50", not base64 bytes
        "poll.interval.ms": "100",  # hand changes to Connect every 100 ms, not 500: availability is a latency
        "topic.creation.default.partitions": str(settings.topic_partitions),
        "topic.creation.default.replication.factor": str(settings.topic_replication_factor),
        "topic.creation.default.retention.ms": str(settings.topic_retention_ms),
    }


def _database_url(settings: Settings) -> SplitResult:
    url = urlsplit(settings.operational_db)
    if url.scheme not in ("postgresql", "postgres") or not url.hostname or not url.path.strip("/"):
        raise ConnectError(f"operational_db_url must be postgresql://user:password@host:port/database, "
                           f"not {secret_files.redacted(settings.operational_db_url)!r}")
    return url


class KafkaConnect(EmbeddedProcess):
    """Run a standalone Connect worker with the CDC connector for the life of a ``with`` block.
    Its stop is SIGTERM: Connect flushes its offsets."""

    name, event, error, log_lines = "Kafka Connect worker", "connect", ConnectError, 30

    def __init__(self, settings: Settings, startup_timeout_s: float = 120.0, stop_timeout_s: float = 30.0):
        self.home = Path(settings.root).resolve() / "cdc"
        super().__init__(self.home / "connect.log", startup_timeout_s, stop_timeout_s)
        self.settings = settings

    @property
    def rest(self) -> str:
        return f"http://{dial(self.settings.cdc_connect_host, self.settings.cdc_connect_port)}"

    def start(self) -> "KafkaConnect":
        """Write the configs, start the JVM and wait until the connector and its task are RUNNING."""
        if self._process is not None:
            raise ConnectError("this Connect worker has already been started")
        java, classpath = java_and_classpath(self.settings, "cdc", ConnectError)
        self.home.mkdir(parents=True, exist_ok=True)
        worker, connector, log4j = self.home / "worker.properties", self.home / "connector.properties", \
            self.home / "log4j2.properties"
        secret_files.write(secrets_path(self.settings), _properties(connector_secrets(self.settings)))
        worker.write_text(_properties(self._worker_config()))
        connector.write_text(_properties({"name": CONNECTOR, **connector_config(self.settings)}))
        log4j.write_text(log4j2_properties(self.log_path, QUIET_LOGGERS))
        self._launch([java, f"-Xmx{self.settings.cdc_connect_heap}", *JVM_OPTIONS,
                      f"-Dlog4j2.configurationFile={log4j}", "-cp", classpath,
                      "org.apache.kafka.connect.cli.ConnectStandalone", str(worker), str(connector)], cwd=self.home)
        return self._get_ready(self._wait_running, f"rest={self.rest}")

    def status(self) -> dict[str, Any] | None:
        """The connector's status from the worker's REST API; None while the API does not answer it."""
        try:
            response = httpx.get(f"{self.rest}/connectors/{CONNECTOR}/status", timeout=5)
        except httpx.HTTPError:
            return None
        return response.json() if response.status_code == 200 else None

    def _worker_config(self) -> dict[str, str]:
        return {
            "bootstrap.servers": self.settings.bootstrap_servers,
            "key.converter": "org.apache.kafka.connect.json.JsonConverter",
            "value.converter": "org.apache.kafka.connect.json.JsonConverter",
            "key.converter.schemas.enable": "false",
            "value.converter.schemas.enable": "false",
            "offset.storage.file.filename": str(self.home / "connect.offsets"),
            "offset.flush.interval.ms": "1000",
            "listeners": f"http://{host_port(self.settings.cdc_connect_host, self.settings.cdc_connect_port)}",
            "plugin.discovery": "service_load",  # Debezium ships service manifests: no classpath scan
            "config.providers": CONFIG_PROVIDER,
            f"config.providers.{CONFIG_PROVIDER}.class": "org.apache.kafka.common.config.provider.FileConfigProvider",
            # Only the secrets folder: a connector posted to the REST API cannot read other files through it.
            f"config.providers.{CONFIG_PROVIDER}.param.allowed.paths": str(self.settings.secrets_root),
        }

    def _wait_running(self) -> None:
        def running() -> bool:
            self._check_alive()
            found = self.status()
            states = [] if found is None else [found["connector"]["state"],
                                               *(task["state"] for task in found.get("tasks", []))]
            if "FAILED" in states:
                traces = [task.get("trace", "") for task in found.get("tasks", [])] if found else []
                raise ConnectError(f"the {CONNECTOR} connector failed: {traces or found}")
            return len(states) > 1 and set(states) == {"RUNNING"}

        self._wait_until(running, f"the {CONNECTOR} connector and its task to be RUNNING", 0.2,
                         detail=lambda: f" (status {self.status()})")


def _properties(values: dict[str, str]) -> str:
    header = "# Written by lambdarec on every start of `lambdarec cdc` (deploy/embedded/cdc.py): edits are lost."
    return "\n".join([header, *(f"{key}={_escaped(value)}" for key, value in values.items())]) + "\n"


def _escaped(value: str) -> str:
    """A value as java.util.Properties reads it back: backslashes doubled, a leading space and any
    character outside printable ASCII as an escape."""
    text = "".join(ch if " " <= ch <= "~" else _utf16_escapes(ch) for ch in value.replace("\\", "\\\\"))
    return "\\" + text if text.startswith(" ") else text


def _utf16_escapes(ch: str) -> str:
    units = ch.encode("utf-16-be")  # two units (a surrogate pair) beyond the Basic Multilingual Plane
    return "".join(f"\\u{int.from_bytes(units[i:i + 2], 'big'):04x}" for i in range(0, len(units), 2))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=None, help="Loopback port of Connect's REST API "
                        "(default: settings.cdc_connect_port).")


def command(args: argparse.Namespace, settings: Settings) -> int:
    """``lambdarec cdc``: run Connect with the CDC connector until SIGINT or SIGTERM; non-zero if it dies."""
    if args.port is not None:
        settings = settings.model_copy(update={"cdc_connect_port": args.port})
    return run_until_signalled("cdc", KafkaConnect(settings).start, lambda connect: {
        "rest": connect.rest, "connector": CONNECTOR, "topics": topics(settings.cdc_topic_prefix), "pid": connect.pid,
        "log": str(connect.log_path),
    }, (ConnectError,))
