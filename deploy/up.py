"""``lambdarec up``: start the long-running platform under a detached supervisor, and return once it is ready.

The broker, Postgres with CDC, the speed job, serving and Airflow (API server,
dag-processor, scheduler) run under ``deploy.supervisor``, which outlives
this command and restarts what dies. ``up`` checks first what would make a
start fail for a reason it can name (a port in use, missing jars or Airflow,
the development key), then waits until every component is ready and prints
where to reach them. A platform already up is left alone (exit 0); one that
fails to come up is stopped again, its failing component's log shown.

Each start creates the API key its own parts present to serving (``provision_keys``:
Airflow's, with the admin scope, for the batch DAG's reload) and revokes the one
the last start made. The token travels only in the environment of the supervisor
and the Airflow processes: never in a log, state.json or a file.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import time
from pathlib import Path

from pydantic import SecretStr

from lambdarec import api_keys, jars, secret_files

from deploy.embedded import airflow as airflow_platform

from deploy import down as platform_down

from deploy import ps as platform_ps
from deploy.embedded.airflow import AirflowMissing
from lambdarec.lake import Lake
from deploy.components import OPTIONAL, Component, plan
from deploy.state import DONE, FAILED, RUNNING, logs_dir, read_state
from lambdarec.pseudonym import is_development_key
from lambdarec.settings import Settings, is_loopback
from lambdarec.submit import spark_submit_env
from deploy.supervisor import ALREADY_RUNNING, command_line

POLL_S = 0.25


def port_problems(components: list[Component]) -> list[str]:
    """A line for each port a component needs that something else already listens on."""
    problems = []
    for component in components:
        for port, setting in component.ports.items():
            with socket.socket() as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as a server binds
                try:
                    probe.bind(("127.0.0.1", port))
                except OSError:
                    problems.append(f"port {port} ({component.name}) is in use: stop what holds it, or set {setting}")
    return problems


def preflight(settings: Settings, without: set[str], airflow_port: int) -> tuple[list[Component], list[str]]:
    """The plan, and the reasons it cannot start (empty if none)."""
    try:
        components = plan(settings, without, airflow_port)
    except (jars.MissingJarsError, AirflowMissing, FileNotFoundError) as exc:
        return [], [str(exc)]
    problems = port_problems(components)
    if "serving" not in without and is_development_key(settings.pseudonym_key) and not settings.allow_development_key:
        problems.append("serving refuses the built-in development pseudonym key: set LAMBDAREC_PSEUDONYM_KEY "
                        "(production), or LAMBDAREC_ALLOW_DEVELOPMENT_KEY=true on a laptop (`make up` does)")
    if "serving" not in without and settings.auth == "open" and not is_loopback(settings.serve_host):
        problems.append(f"serving refuses auth=open on {settings.serve_host}, which is not loopback: set "
                        "LAMBDAREC_AUTH=keys (the default), or LAMBDAREC_SERVE_HOST=127.0.0.1")
    if "airflow" not in without and (problem := operator_key_problem(settings)):
        problems.append(problem)
    return components, problems


UP_KEY_NAME = "lambdarec up: airflow"
"""The name of the key each ``up`` creates for its Airflow tasks (``lambdarec keys list`` shows it)."""


def operator_key_problem(settings: Settings) -> str | None:
    """Why the operator's own LAMBDAREC_API_KEY cannot serve the Airflow tasks (None: it can, or none is set)."""
    token = settings.api_key.get_secret_value()
    if not token or settings.auth == "open":
        return None
    key = api_keys.keys(Lake(settings)).get(api_keys.key_id_of(token) or "")
    if key is None or not key.live or not key.matches(token):
        return "LAMBDAREC_API_KEY is not a live key of this lake (`lambdarec keys list`); unset it and `up` makes one"
    if "admin" not in key.scopes:
        return f"LAMBDAREC_API_KEY (key {key.key_id}) lacks the admin scope the batch DAG's reload needs"
    return None


def provision_keys(settings: Settings, without: set[str]) -> Settings:
    """``settings`` with ``api_key`` set to a new admin key for the Airflow tasks (the batch DAG reloads serving),
    the last start's revoked; unchanged where the operator set one, or with no serving, Airflow or key check."""
    if "airflow" in without or "serving" in without or settings.auth == "open" or settings.api_key.get_secret_value():
        return settings
    _, token = api_keys.rotate(Lake(settings), UP_KEY_NAME, ["admin"])
    return settings.model_copy(update={"api_key": SecretStr(token)})


def start_supervisor(settings: Settings, args: argparse.Namespace) -> subprocess.Popen:
    """The supervisor in a session of its own, so it outlives this command; its output into its log."""
    log_dir = logs_dir(settings.root)
    log_dir.mkdir(parents=True, exist_ok=True)
    with (log_dir / "supervisor.log").open("ab") as log:
        return subprocess.Popen(command_line(set(args.without), args.airflow_port, args.stop_timeout),
                                env=spark_submit_env(settings), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def wait_ready(root: Path, supervisor: subprocess.Popen, timeout_s: float) -> str | None:
    """Print each component as it gets ready; None once all are, else why not."""
    started, shown = time.monotonic(), set()
    while True:
        state = read_state(root)
        if state is not None and state.supervisor_pid == supervisor.pid:
            for record in state.components:
                if record.status in (RUNNING, DONE) and record.name not in shown:
                    shown.add(record.name)
                    print(f"  ✓ {record.name} ({time.monotonic() - started:.0f} s)", flush=True)
            if state.status == RUNNING:
                return None
            if state.status == FAILED:
                supervisor.wait()
                return state.error or "the supervisor failed"
        code = supervisor.poll()
        if code == ALREADY_RUNNING:
            return "another supervisor holds this root"
        if code is not None:
            log = logs_dir(root) / "supervisor.log"
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
            return f"the supervisor exited with code {code}; {log} ends with:\n{tail}"
        if time.monotonic() - started > timeout_s:
            waiting = [r.name for r in state.components if r.status not in (RUNNING, DONE)] if state else []
            return f"not ready after {timeout_s:.0f} s: {', '.join(waiting) or 'the supervisor'} (logs in {logs_dir(root)})"
        time.sleep(POLL_S)  # poll interval of a condition with a deadline


def print_urls(settings: Settings, components: list[Component], airflow_port: int) -> None:
    names = {c.name: c for c in components}
    print(f"Kafka bootstrap: {settings.bootstrap_servers}")
    if "serving" in names:
        print(f"serving API:     {names['serving'].url}  (POST /v1/events, GET /v1/users/<id>/recommendations; "
              f"docs at {names['serving'].url}/docs)")
        print("API keys:        no credential is checked (auth=open, loopback only)" if settings.auth == "open" else
              "API keys:        `lambdarec keys create --name NAME --scope ingest --scope read` prints a token to send "
              "as Authorization: Bearer <token>")
    if "airflow-api-server" in names:
        print(f"Airflow UI:      {airflow_platform.api_url(airflow_port)}  login: {airflow_platform.ADMIN}  "
              f"password: {airflow_platform.admin_password(settings)}")
    if "cdc" in names:
        print(f"Kafka Connect:   {names['cdc'].url}  (Postgres: {secret_files.redacted(settings.operational_db)})")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--without", action="append", default=[], metavar="NAME",
                        type=lambda text: [n.strip() for n in text.split(",") if n.strip()],
                        help=f"Leave components out (repeat, or comma-separate): {', '.join(OPTIONAL)}.")
    parser.add_argument("--airflow-port", type=int, default=airflow_platform.DEFAULT_PORT,
                        help="Loopback port of Airflow's API server and UI.")
    parser.add_argument("--timeout", type=float, default=900.0, help="Seconds to wait for every component.")
    parser.add_argument("--stop-timeout", type=float, default=30.0,
                        help="Seconds a component gets to exit on SIGTERM before SIGKILL (down, and a failed up).")


def command(args: argparse.Namespace, settings: Settings) -> int:
    args.without = {name for names in args.without for name in names}
    unknown = args.without - set(OPTIONAL)
    if unknown:
        print(f"--without takes {', '.join(OPTIONAL)}; not {', '.join(sorted(unknown))}")
        return 2
    settings = settings.model_copy(update={"root": Path(settings.root).resolve()})
    root = settings.root
    state = read_state(root)
    if state is not None and state.supervisor_alive():
        print(f"lambdarec is already up (supervisor pid {state.supervisor_pid}); `lambdarec down` stops it")
        print(platform_ps.render_table(platform_ps.view(state, root)))
        return 0
    components, problems = preflight(settings, args.without, args.airflow_port)
    if problems:
        print("cannot start lambdarec:\n" + "\n".join(f"  - {p}" for p in problems))
        return 2
    print(f"starting lambdarec under {root} ({len(components)} components; logs in {logs_dir(root)}) …", flush=True)
    started = time.monotonic()
    settings = provision_keys(settings, args.without)
    supervisor = start_supervisor(settings, args)
    try:
        problem = wait_ready(root, supervisor, args.timeout)
    except KeyboardInterrupt:  # Ctrl-C while it comes up: the user changed their mind
        problem = "interrupted"
    if supervisor.poll() == ALREADY_RUNNING:
        print("lambdarec is already being started by another `lambdarec up`; `lambdarec ps` shows it")
        return 0
    if problem is not None:
        print(f"lambdarec did not come up: {problem}")
        if supervisor.poll() is None:
            state = read_state(root)
            if state is not None and state.supervisor_pid == supervisor.pid:
                platform_down.stop(root, state, args.stop_timeout * (len(components) + 1))
            else:
                supervisor.kill()
        print("stopped what had started; `lambdarec ps` shows the last state")
        return 1
    print(f"lambdarec is up in {time.monotonic() - started:.0f} s (supervisor pid {supervisor.pid})")
    print_urls(settings, components, args.airflow_port)
    print(platform_ps.render_table(platform_ps.collect(root)))
    print("`lambdarec ps` shows it again, `lambdarec down` stops it.")
    return 0
