"""The dashboard in a browser during a live run, and the same charts from a real Prometheus.

Live run: real processes for the data path: the embedded broker (Apache Kafka) and
``spark-submit speed/job.py``, whose driver serves its /metrics on a free port; serving
runs under uvicorn in this process with a published model (version 1) and a rejected
one (version 2) in the registry. A client thread posts events through the API (plus
invalid ones, 422, and requests to no route, 404) while raw bad records go straight to
Kafka (dead letters). Headless Chromium (Debian's /usr/bin/chromium, driven by
playwright) opens /dashboard; every chart must draw data points. The screenshot is kept
under the test's tmp folder, and in test-artifacts/dashboard.png when
LAMBDAREC_TEST_ARTIFACTS is set.

Prometheus: Debian's prometheus (`make prometheus`) scrapes a serving process and the
speed job's metrics (a ``speed.metrics.SpeedMetrics``, the class of the job's ``METRICS``, on a
prometheus_client endpoint in this process: the Spark job is not needed to check PromQL); a
second app with ``prometheus_url`` charts from it.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import subprocess
import threading
import uuid
from pathlib import Path

import httpx
import pytest

from lambdarec.lake import Lake
from serving.metrics_text import samples, total
from lambdarec.pseudonym import pseudonymise
from lambdarec.registry import CANDIDATE, REJECTED, record_status
from lambdarec.submit import PROJECT_ROOT, spark_submit_env, speed_job_command
from serving.dashboard.models import CHARTS
from tests.plugins.broker import free_port
from tests.support.serving import serving, wait_until, write_model
from tests.support.speed import BAD, produce

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
PROMETHEUS = "/usr/bin/prometheus"
REPO = Path(__file__).resolve().parents[2]
# Read at import: the test session clears every LAMBDAREC_* variable before tests run (tests/conftest.py).
ARTIFACTS = os.environ.get("LAMBDAREC_TEST_ARTIFACTS")
ITEMS = {**{f"a{n}": [1.0, 0.05 * n] for n in range(5)}, **{f"b{n}": [0.05 * n, 1.0] for n in range(5)}}
CHART_IDS = [spec.id for spec in CHARTS] + ["trending", "models"]
METRIC = "ndcg_at_10"
BAD_RECORDS = list(BAD)
SPEED_RESTARTS = 2


def publish_models(settings) -> None:
    """Version 1 evaluated and published; version 2 evaluated and rejected by the gate."""
    lake = Lake(settings)
    record_status(lake, 1, CANDIDATE, "evaluated", metrics={f"model_{METRIC}": 0.31, f"popularity_{METRIC}": 0.12})
    write_model(lake, 1, 0, ITEMS, {pseudonymise("alice", settings.pseudonym_key): {"a0": 3.0, "b1": 1.0}})
    record_status(lake, 2, REJECTED, "did not beat the champion",
                  metrics={f"model_{METRIC}": 0.27, f"popularity_{METRIC}": 0.12})


class Traffic(threading.Thread):
    """A product backend's traffic until stopped: event batches, recommendations, and some mistakes;
    now and then a raw bad record straight onto the events topic (the API would refuse it)."""

    def __init__(self, base_url: str, settings):
        super().__init__(daemon=True, name="traffic")
        self.base_url = base_url
        self.settings = settings
        self.stop = threading.Event()
        self.accepted = 0
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            with httpx.Client(base_url=self.base_url, timeout=30) as client:
                n = 0
                while not self.stop.is_set():
                    now = dt.datetime.now(dt.UTC).isoformat()
                    batch = [{"event_id": str(uuid.uuid4()), "user_id": f"user-{(n + k) % 13}",
                              "item_id": f"a{(n + k) % 3}" if k % 2 else f"b{k % 5}", "event_type": "click",
                              "occurred_at": now, "context": {"country": "DE", "device": "web"}} for k in range(5)]
                    response = client.post("/v1/events/batch", json=batch)
                    assert response.status_code == 202, response.text
                    self.accepted += len(response.json()["accepted"])
                    client.get(f"/v1/users/user-{n % 13}/recommendations")
                    client.get("/v1/trending")
                    if n % 5 == 0:
                        client.post("/v1/events", json={"item_id": "a0"})  # 422: no event_id, user_id, ...
                        client.get("/v1/no-such-route")  # 404
                        produce(self.settings, [BAD_RECORDS[n // 5 % len(BAD_RECORDS)]])
                    n += 1
                    self.stop.wait(0.2)  # pacing the offered load (about 25 events/s), not synchronisation
        except Exception as exc:  # surfaced by the test
            self.error = exc


class SpeedJob:
    """``spark-submit speed/job.py`` on its own master, in a session of its own (``os.killpg`` reaches its JVM),
    logging to ``log``. Started again on its checkpoints if it dies, as ``lambdarec up`` would (on a loaded
    2-core machine a Spark Python worker can miss its connect-back timeout), at most ``SPEED_RESTARTS`` times."""

    def __init__(self, settings, log: Path):
        self.settings = settings
        self.log = log
        self.restarts = 0
        self.process = self._start()

    def _start(self) -> subprocess.Popen:
        with self.log.open("a") as out:
            return subprocess.Popen(speed_job_command(self.settings), env=spark_submit_env(self.settings),
                                    cwd=PROJECT_ROOT, start_new_session=True, stdout=out, stderr=subprocess.STDOUT)

    def running(self) -> bool:
        if self.process.poll() is not None:
            assert self.restarts < SPEED_RESTARTS, f"the speed job kept exiting: {self.log.read_text()[-3000:]}"
            self.restarts += 1
            self.process = self._start()
        return True

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(60)


def speed_counters(url: str) -> dict[str, float]:
    try:
        found = samples(httpx.get(url, timeout=2).text)
    except httpx.HTTPError:
        return {}
    return {name: total(found, name) for name in ("lambdarec_speed_rows_landed_total", "lambdarec_dead_letters_total")}


def points_per_chart(data: dict) -> dict[str, int]:
    """Data points each chart of a /dashboard/data body has to draw."""
    counts = {chart["id"]: sum(len(series["y"]) for series in chart["series"]) for chart in data["charts"]}
    counts["trending"] = len(data["trending"]["items"])
    counts["models"] = sum(version["metric"] is not None for version in data["models"]["versions"])
    return counts


DRAWN = """() => Object.fromEntries([...document.querySelectorAll('[data-chart]')].map((element) => [
    element.dataset.chart,
    {attribute: Number(element.dataset.points),
     plotted: (element.data || []).filter((trace) => !['threshold', 'baseline'].includes(trace.meta))
                                  .reduce((n, trace) => n + (trace.y || []).length, 0)}]))"""
EVERY_CHART_DRAWN = f"""() => {{
    const charts = [...document.querySelectorAll('[data-chart]')];
    return charts.length === {len(CHART_IDS)} && charts.every((element) => Number(element.dataset.points) > 0);
}}"""


def screenshot_in_chromium(url: str, path: Path) -> dict:
    """Open the dashboard, wait until every chart has drawn points, save a screenshot; what each chart drew."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(url)
            page.wait_for_function(EVERY_CHART_DRAWN, timeout=60_000, polling=500)
            page.wait_for_timeout(500)  # let plotly finish its layout before the picture (not synchronisation)
            page.screenshot(path=str(path), full_page=True)
            drawn = page.evaluate(DRAWN)
            status = page.inner_text("#status")
        finally:
            browser.close()
    assert errors == []
    return {"drawn": drawn, "status": status}


def keep_artifact(path: Path) -> None:
    if ARTIFACTS:
        target = REPO / "test-artifacts"
        target.mkdir(exist_ok=True)
        shutil.copyfile(path, target / path.name)


def live_run(settings, client: httpx.Client, job: SpeedJob) -> dict:
    """Wait, under traffic, until the speed job lands events and dead-letters bad records and
    /dashboard/data has points for every chart; that body."""
    speed_url = settings.speed_metrics_endpoint
    assert speed_url is not None

    def counted(name: str):
        return lambda: job.running() and speed_counters(speed_url).get(name)

    # Deadlines for a loaded 2-core machine, where a first micro-batch can take minutes; within pytest's 900 s.
    wait_until(counted("lambdarec_speed_rows_landed_total"), "the speed job to land events", timeout_s=360)
    wait_until(counted("lambdarec_dead_letters_total"), "the speed job to dead-letter bad records", timeout_s=180)

    def every_chart_has_points():
        job.running()
        data = client.get("/dashboard/data").json()
        counts = points_per_chart(data)
        return data if all(counts.get(chart) for chart in CHART_IDS) else None

    return wait_until(every_chart_has_points, "data points for every chart", timeout_s=300)


def test_the_dashboard_charts_a_live_run_in_a_browser(broker_settings, tmp_path):
    assert Path(CHROMIUM).exists(), "Debian's chromium is missing: `make chromium` installs it"
    settings = broker_settings.model_copy(update={  # no CDC here: its dimensions query would only idle
        "serve_model_poll_s": 0.5, "speed_metrics_port": free_port(), "speed_cdc": False,
        "speed_trigger_ms": 500, "speed_features_trigger_ms": 2000})
    publish_models(settings)
    job = SpeedJob(settings, tmp_path / "speed-job.log")
    screenshot = tmp_path / "dashboard.png"
    try:
        with serving(settings) as client:
            wait_until(lambda: client.get("/ready").status_code == 200, "model 1 loaded, speed view following")
            traffic = Traffic(str(client.base_url), settings)
            traffic.start()
            try:
                data = live_run(settings, client, job)
                page = client.get("/dashboard")
                assert page.status_code == 200 and "text/html" in page.headers["content-type"]
                seen = screenshot_in_chromium(f"{client.base_url}/dashboard", screenshot)
                keep_artifact(screenshot)
            finally:
                traffic.stop.set()
                traffic.join(30)
            assert traffic.error is None, traffic.error
    finally:
        job.kill()

    assert data["source"] == "local" and data["notes"] == []
    assert screenshot.stat().st_size > 50_000
    assert set(seen["drawn"]) == set(CHART_IDS)
    for chart, drawn in seen["drawn"].items():  # what plotly holds is what the page says it drew
        assert drawn["attribute"] == drawn["plotted"] > 0, (chart, drawn)
    assert "serving model v1" in seen["status"]
    charts = {chart["id"]: {series["name"] for series in chart["series"]} for chart in data["charts"]}
    assert {"accepted", "landed"} <= charts["events"]
    assert {"p50", "p95"} <= charts["freshness"]
    assert "/v1/events/batch" in charts["requests"] and "p99 /v1/events/batch" in charts["latency"]
    assert {"all", "4xx /v1/events", "4xx unmatched"} <= charts["errors"]
    assert {"malformed_json", "raw_user_id"} <= charts["dead_letters"]
    assert not [name for names in charts.values() for name in names if "/dashboard" in name]
    versions = {v["model_version"]: (v["status"], v["metric"], v["serving"]) for v in data["models"]["versions"]}
    assert versions == {1: ("published", 0.31, True), 2: ("rejected", 0.27, False)}
    assert {item["item_id"] for item in data["trending"]["items"]} <= set(ITEMS)


def prometheus_config(path: Path, serving_port: int, speed_port: int) -> Path:
    path.write_text(f"""global:
  scrape_interval: 1s
scrape_configs:
  - job_name: serving
    static_configs: [{{targets: ['127.0.0.1:{serving_port}']}}]
  - job_name: speed
    static_configs: [{{targets: ['127.0.0.1:{speed_port}']}}]
""")
    return path


def test_the_dashboard_reads_the_same_charts_from_prometheus(broker_settings, tmp_path):
    assert Path(PROMETHEUS).exists(), "Debian's prometheus is missing: `make prometheus` installs it"
    from prometheus_client import start_http_server

    from speed.metrics import SpeedMetrics

    speed_port, prometheus_port = free_port(), free_port()
    speed_metrics = SpeedMetrics()  # the speed job's metrics, fresh: the process-wide METRICS stays untouched
    speed_server, _ = start_http_server(speed_port, addr="127.0.0.1", registry=speed_metrics.registry)
    speed_metrics.landed.labels("events").inc(0)
    speed_metrics.dead_letters.labels("malformed_json").inc(0)
    speed_metrics.source_lag.labels("events").set(7)
    prometheus: subprocess.Popen | None = None
    try:
        with serving(broker_settings) as scraped:
            config = prometheus_config(tmp_path / "prometheus.yml", scraped.base_url.port, speed_port)
            prometheus = subprocess.Popen(
                [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{prometheus_port}"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            reading = broker_settings.model_copy(update={"prometheus_url": f"http://127.0.0.1:{prometheus_port}"})
            with serving(reading) as dashboard:

                def charted():
                    assert prometheus is not None and prometheus.poll() is None, "prometheus exited"
                    scraped.post("/v1/events", json={"item_id": "a0"})  # a 422, counted by the scraped serving
                    scraped.get("/health")
                    speed_metrics.landed.labels("events").inc(50)
                    speed_metrics.dead_letters.labels("malformed_json").inc(1)
                    data = dashboard.get("/dashboard/data").json()
                    counts = points_per_chart(data)
                    wanted = ("events", "lag", "requests", "latency", "errors", "dead_letters")
                    return data if all(counts.get(chart) for chart in wanted) else None

                data = wait_until(charted, "charts from Prometheus", timeout_s=90)
    finally:
        if prometheus is not None:
            prometheus.terminate()
            prometheus.wait(30)
        speed_server.shutdown()
    assert data["source"] == "prometheus" and data["notes"] == []
    charts = {chart["id"]: {series["name"]: series["y"] for series in chart["series"]} for chart in data["charts"]}
    assert charts["events"]["landed"][-1] > 0
    assert charts["lag"]["events"][-1] == 7
    assert "4xx /v1/events" in charts["errors"] and charts["errors"]["all"][-1] > 0
    assert "p99 /health" in charts["latency"] and "/health" in charts["requests"]
    assert charts["dead_letters"]["malformed_json"][-1] > 0
