"""The pure parts of ``lambdarec up``/``ps``/``down``: state file, restart backoff, readiness, plan, ps table."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lambdarec import proc_tree

from deploy.embedded import airflow as airflow_platform
from deploy.components import plan
from deploy.down import exit_text
from deploy.ps import collect, duration, render_table, view
from deploy.state import (
    FAILED, RUNNING, STOPPED, ComponentRecord, PlatformState, now_iso, read_state, state_path, write_state,
)
from deploy.readiness import Launch, LogLine
from lambdarec.restart_policy import RestartPolicy

pytestmark = pytest.mark.unit


def me() -> tuple[int, int | None]:
    return os.getpid(), proc_tree.start_ticks(os.getpid())


def dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def test_the_state_file_round_trips_and_is_replaced_whole(tmp_path):
    pid, ticks = me()
    state = PlatformState(pid, ticks, status=RUNNING, urls={"serving": "http://127.0.0.1:8000"}, components=[
        ComponentRecord("broker", RUNNING, pid, ticks, restarts=2, started_at=now_iso(), port=19092,
                        url="127.0.0.1:19092", log="/x/broker.log")])
    write_state(tmp_path, state)
    assert read_state(tmp_path) == state
    assert [p.name for p in state_path(tmp_path).parent.iterdir()] == ["state.json"]  # no partial file left
    assert json.loads(state_path(tmp_path).read_text())["components"][0]["restarts"] == 2
    assert read_state(tmp_path / "elsewhere") is None


def test_a_pid_is_alive_only_while_it_is_the_same_process():
    pid, ticks = me()
    assert proc_tree.alive(pid) and proc_tree.alive(pid, ticks)
    assert ticks is not None and not proc_tree.alive(pid, ticks + 1)  # the pid reused by a later process
    gone = dead_pid()
    assert not proc_tree.alive(gone) and proc_tree.start_ticks(gone) is None
    assert not proc_tree.alive(None) and not proc_tree.alive(0)


def test_a_process_tree_and_its_memory():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert {os.getpid(), child.pid} <= set(proc_tree.tree(os.getpid()))
        assert proc_tree.rss_bytes([os.getpid()]) > 10 * 2**20
        assert proc_tree.rss_bytes([os.getpid(), child.pid]) > proc_tree.rss_bytes([os.getpid()])
    finally:
        child.kill()
        child.wait()
    assert child.pid not in proc_tree.tree(os.getpid())


def test_restart_backoff_doubles_to_its_cap_and_starts_afresh_after_a_stable_run():
    policy = RestartPolicy(base_s=1, max_s=60, stable_s=60, start_attempts=3)
    assert [policy.delay(n) for n in range(9)] == [0, 1, 2, 4, 8, 16, 32, 60, 60]
    assert policy.delay(10_000) == 60
    assert policy.failures_after_exit(4, ready_for_s=5) == 5  # died again soon: waits longer
    assert policy.failures_after_exit(4, ready_for_s=None) == 5
    assert policy.failures_after_exit(4, ready_for_s=600) == 1  # ran a long while: back at once
    assert not policy.gives_up(ever_ready=False, starts=2)
    assert policy.gives_up(ever_ready=False, starts=3)
    assert not policy.gives_up(ever_ready=True, starts=300)  # once it was ready, it is restarted for ever


def test_a_log_probe_reads_only_what_this_start_wrote(tmp_path):
    log = tmp_path / "broker.log"
    log.write_text('{"event": "broker_ready"}\nthe previous run, killed\n')
    launch = Launch.begin(log)
    probe = LogLine('"broker_ready"')
    assert not probe(launch)
    with log.open("a") as out:
        out.write('starting\n{"event": "broker')  # the line half written: found once it is whole
    assert not probe(launch)
    with log.open("a") as out:
        out.write('_ready"}\n')
    assert probe(launch)
    assert not probe(Launch.begin(tmp_path / "none.log"))


def test_airflow_is_sized_by_the_cores():
    assert airflow_platform.sizing(2)["AIRFLOW__CORE__PARALLELISM"] == "1"
    assert airflow_platform.sizing(1)["AIRFLOW__CORE__PARALLELISM"] == "1"
    assert airflow_platform.sizing(16)["AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG"] == "8"
    assert airflow_platform.sizing(16)["AIRFLOW__API__WORKERS"] == "1"
    assert airflow_platform.sizing(16)["AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES"] == "1"


def test_the_airflow_password_is_generated_once(settings):
    first = airflow_platform.admin_password(settings)
    assert len(first) >= 12 and airflow_platform.admin_password(settings) == first
    assert airflow_platform.passwords_file(settings).stat().st_mode & 0o077 == 0


def test_the_plan_is_in_dependency_order_with_the_ports_it_needs(settings):
    components = plan(settings, without={"speed", "airflow"})
    assert [c.name for c in components] == ["broker", "postgres", "cdc", "serving", "prometheus"]
    named = {c.name: c for c in components}
    assert named["cdc"].after == ("broker", "postgres") and named["serving"].after == ("broker",)
    assert list(named["broker"].ports) == [settings.embedded_broker_port, settings.embedded_controller_port]
    assert named["serving"].url == f"http://127.0.0.1:{settings.serve_port}"
    # the DAG's reload reaches this serving, and every child gets the same settings
    assert named["broker"].env["LAMBDAREC_SERVING_URL"] == named["serving"].url
    assert named["broker"].env == named["serving"].env
    assert ":***@" in named["postgres"].url  # no password in the state file
    # Prometheus scrapes this serving and speed job with the repository's alert rules; the dashboard reads it
    assert named["serving"].env["LAMBDAREC_PROMETHEUS_URL"] == named["prometheus"].url
    scraped = yaml.safe_load((settings.root / "prometheus" / "prometheus.yml").read_text())
    assert [job["static_configs"][0]["targets"] for job in scraped["scrape_configs"]] == [
        [f"127.0.0.1:{settings.serve_port}"], [f"127.0.0.1:{settings.speed_metrics_port}"]]
    assert Path(scraped["rule_files"][0]).is_file()
    external = settings.model_copy(update={"kafka_bootstrap_servers": "kafka:9092"})
    assert [c.name for c in plan(external, without={"speed", "airflow", "cdc", "prometheus"})] == ["serving"]


def test_the_airflow_components_get_make_airflows_environment(settings):
    components = plan(settings, without={"speed", "serving", "cdc", "prometheus"}, airflow_port=18080)
    airflow = [c for c in components if c.name.startswith("airflow-")]
    assert [c.name for c in airflow] == ["airflow-db-migrate", "airflow-api-server", "airflow-dag-processor",
                                         "airflow-scheduler", "airflow-triggerer"]
    assert airflow[0].oneshot and airflow[0].argv[1:] == ["db", "migrate"]
    env = airflow[1].env
    assert env["AIRFLOW_HOME"] == str(settings.root.resolve() / "airflow")
    assert env["AIRFLOW__CORE__DAGS_FOLDER"].endswith("/dags") and env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert env["AIRFLOW__API__PORT"] == "18080" and airflow[1].port == 18080
    assert env["AIRFLOW__CORE__PARALLELISM"] == airflow_platform.sizing()["AIRFLOW__CORE__PARALLELISM"]
    assert env["PATH"].split(os.pathsep)[0] == os.path.dirname(sys.executable)


def state_with(components: list[ComponentRecord], status: str = RUNNING) -> PlatformState:
    pid, ticks = me()
    return PlatformState(pid, ticks, status=status, components=components)


def test_ps_checks_each_pid_and_adds_uptime_and_memory(tmp_path):
    pid, ticks = me()
    started = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=75)).isoformat()
    state = state_with([
        ComponentRecord("broker", RUNNING, pid, ticks, restarts=1, started_at=started, port=19092, url="127.0.0.1:19092"),
        ComponentRecord("speed", RUNNING, dead_pid(), None, started_at=started),
    ])
    info = view(state, tmp_path)
    broker, speed = info["components"]
    assert info["up"] and info["status"] == RUNNING
    assert broker["alive"] and broker["status"] == RUNNING and broker["restarts"] == 1
    assert 74 <= broker["uptime_s"] < 120 and broker["rss_bytes"] > 0 and broker["processes"] >= 1
    assert not speed["alive"] and speed["status"] == "dead" and speed["uptime_s"] is None and speed["rss_bytes"] == 0
    assert info["rss_bytes"]["total"] == broker["rss_bytes"]

    table = render_table(info).splitlines()
    assert table[0] == f"supervisor pid {pid}: running"
    assert table[1].split() == ["NAME", "STATUS", "PID", "RESTARTS", "UPTIME", "RSS", "PORT/URL"]
    assert table[2].split()[:5] == ["broker", "running", str(pid), "1", "1m15s"]
    assert table[2].endswith("127.0.0.1:19092")
    assert table[3].split() == ["speed", "dead", "-", "0", "-", "-", "-"]
    assert table[4].startswith("memory: ")


def test_ps_of_a_root_that_was_never_up(tmp_path):
    info = collect(tmp_path)
    assert info["up"] is False and info["components"] == []
    assert "not up" in render_table(info)


def test_ps_of_a_stopped_platform(tmp_path):
    state = state_with([ComponentRecord("broker", STOPPED, dead_pid(), None)], status=STOPPED)
    state.supervisor_pid = dead_pid()
    info = view(state, tmp_path)
    assert info["up"] is False and info["status"] == STOPPED
    assert info["components"][0]["status"] == STOPPED
    assert render_table(info).splitlines()[0] == "no supervisor running (stopped)"


def test_ps_of_a_platform_that_failed_to_come_up(tmp_path):
    state = state_with([ComponentRecord("speed", FAILED, dead_pid(), None, restarts=2)], status=FAILED)
    state.supervisor_pid = dead_pid()
    state.error = "speed exited with code 1 before it was ready, 3 times; its log /x/speed.log ends with:\nboom"
    info = view(state, tmp_path)
    assert info["status"] == FAILED and info["error"].endswith("boom")
    table = render_table(info).splitlines()
    assert table[2].split()[:4] == ["speed", FAILED, "-", "2"]
    assert table[-1] == "error: speed exited with code 1 before it was ready, 3 times; its log /x/speed.log ends with:"


def test_how_a_component_ended():
    assert [exit_text(code) for code in (None, 0, 143, -15, -9)] == ["", " (exit 0)", " (exit 143)", " (SIGTERM)",
                                                                       " (SIGKILL)"]


@pytest.mark.parametrize(("seconds", "text"), [(None, "-"), (0, "0s"), (59.9, "59s"), (61, "1m01s"), (3600, "1h00m"),
                                               (90061, "25h01m")])
def test_durations(seconds, text):
    assert duration(seconds) == text
