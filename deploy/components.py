"""What ``lambdarec up`` runs: each long-running component's command, environment, port and readiness.

The plan is built once, when the supervisor starts, and every restart reuses
it: the same command line, ports and folders, so a restarted broker finds its
log dirs and a restarted speed job its checkpoints, and nothing is lost. The
list is in dependency order: a component starts once those it comes ``after``
are ready, and ``down`` stops them in the reverse order (producers before
the broker they write to). The commands are the demo's (``lambdarec broker``,
``spark-submit speed/job.py``, ``lambdarec serve`` …) and so are the signs of
readiness.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lambdarec import secret_files

from deploy.embedded import airflow as airflow_platform

from deploy.embedded import prometheus as prometheus_server
from deploy.cli import lambdarec_command
from deploy.readiness import AirflowHeartbeat, HttpOk, LogLine, Probe
from lambdarec.settings import Settings, dial
from lambdarec.submit import spark_submit_env, speed_job_command

API_KEY_ENV = "LAMBDAREC_API_KEY"

OPTIONAL = ("cdc", "speed", "serving", "airflow", "prometheus")
"""What ``up --without`` can leave out (``cdc`` is Postgres with Kafka Connect). The broker is left out by
pointing the platform at a Kafka cluster (LAMBDAREC_KAFKA_BOOTSTRAP_SERVERS)."""


@dataclass(frozen=True)
class Component:
    name: str
    argv: list[str]
    env: dict[str, str] = field(repr=False)
    ready: Probe | None  # None: a one-shot step, done when it exits 0
    after: tuple[str, ...] = ()
    ports: dict[int, str] = field(default_factory=dict)  # port -> the setting that moves it
    url: str | None = None
    ready_timeout_s: float = 300.0

    @property
    def oneshot(self) -> bool:
        return self.ready is None

    @property
    def port(self) -> int | None:
        return next(iter(self.ports), None)


def platform_settings(settings: Settings, without: set[str]) -> Settings:
    """Settings the components share: the DAG's reload goes to this serving and the dashboard reads
    this Prometheus, unless told otherwise."""
    update = {}
    if "serving" not in without and not settings.serving_url:
        update["serving_url"] = f"http://{settings.serve_host}:{settings.serve_port}"
    if "prometheus" not in without and not settings.prometheus_url:
        update["prometheus_url"] = prometheus_server.url(settings)
    return settings.model_copy(update=update) if update else settings


def plan(settings: Settings, without: set[str], airflow_port: int = airflow_platform.DEFAULT_PORT) -> list[Component]:
    """The components to run, in dependency order. Raises if one cannot be planned (jars or Airflow missing)."""
    settings = platform_settings(settings, without)
    airflow_env = spark_submit_env(settings)
    # Only the Airflow tasks call serving's protected routes (the batch DAG's reload): only they get the API key.
    env = {name: value for name, value in airflow_env.items() if name != API_KEY_ENV}
    found: list[Component] = []
    if settings.uses_embedded_broker:
        found.append(Component(
            "broker", lambdarec_command("broker"), env, LogLine('"broker_ready"'),
            ports={settings.embedded_broker_port: "LAMBDAREC_EMBEDDED_BROKER_PORT",
                   settings.embedded_controller_port: "LAMBDAREC_EMBEDDED_CONTROLLER_PORT"},
            url=settings.bootstrap_servers))
    if "cdc" not in without:
        if not settings.operational_db_url:
            found.append(Component(
                "postgres", lambdarec_command("postgres"), env, LogLine('"postgres_ready"'),
                ports={settings.embedded_postgres_port: "LAMBDAREC_EMBEDDED_POSTGRES_PORT"},
                url=secret_files.redacted(settings.operational_db)))
        found.append(Component(
            "cdc", lambdarec_command("cdc"), env, LogLine('"cdc_ready"'), after=("broker", "postgres"),
            ports={settings.cdc_connect_port: "LAMBDAREC_CDC_CONNECT_PORT"},
            url=f"http://{dial(settings.cdc_connect_host, settings.cdc_connect_port)}"))
    if "speed" not in without:
        found.append(Component("speed", speed_job_command(settings), env, LogLine('"event": "started"'),
                               after=("broker",)))
    if "serving" not in without:
        api = f"http://{settings.serve_host}:{settings.serve_port}"
        found.append(Component(
            "serving", lambdarec_command("serve"), env, HttpOk(f"{api}/health"), after=("broker",),
            ports={settings.serve_port: "LAMBDAREC_SERVE_PORT"}, url=api))
    if "prometheus" not in without:
        found.append(Component(
            "prometheus", prometheus_server.command(settings), env,
            HttpOk(f"{prometheus_server.url(settings)}/-/ready"),
            ports={settings.prometheus_port: "LAMBDAREC_PROMETHEUS_PORT"}, url=prometheus_server.url(settings)))
    if "airflow" not in without:
        found += airflow_components(settings, airflow_env, airflow_port)
    return found


def airflow_components(settings: Settings, base_env: dict[str, str], port: int) -> list[Component]:
    """``airflow db migrate`` once, then the API server, the dag-processor, the scheduler and the triggerer."""
    airflow = airflow_platform.executable()
    airflow_platform.admin_password(settings)
    env = airflow_platform.environment(settings, port, base_env)
    health = airflow_platform.health_url(port)
    return [
        Component("airflow-db-migrate", [airflow, "db", "migrate"], env, None),
        Component("airflow-api-server", [airflow, "api-server"], env, HttpOk(health), after=("airflow-db-migrate",),
                  ports={port: "--airflow-port"}, url=airflow_platform.api_url(port)),
        # Their readiness is their heartbeat, as the API server reports it.
        Component("airflow-dag-processor", [airflow, "dag-processor"], env,
                  AirflowHeartbeat(health, "dag_processor"), after=("airflow-api-server",)),
        # No log server (a 140 MB process on a fixed port, 8793): task logs are files in AIRFLOW_HOME on this
        # machine, which the API server reads itself.
        Component("airflow-scheduler", [airflow, "scheduler", "--skip-serve-logs"], env,
                  AirflowHeartbeat(health, "scheduler"), after=("airflow-api-server",)),
        # The DAGs defer nothing, but Airflow's UI reports a deployment without a triggerer as unhealthy; one
        # running a few triggers at most costs a small process.
        Component("airflow-triggerer", [airflow, "triggerer", "--skip-serve-logs", "--capacity", "10"], env,
                  AirflowHeartbeat(health, "triggerer"), after=("airflow-api-server",)),
    ]
