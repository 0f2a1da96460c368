"""Safe by default: every listener the platform opens binds loopback unless its setting says otherwise, and
secrets live in files only their owner can read. What each component is told to bind is checked here
from the command lines and configs it gets; tests/integration/test_platform_up.py reads what really
listens after ``lambdarec up``."""

from __future__ import annotations

import os
import stat
import threading

import pytest

from lambdarec import secret_files

from deploy.embedded import airflow as airflow_platform

from deploy.embedded import prometheus as prometheus_server
from deploy.embedded.broker import BrokerError, EmbeddedBroker
from deploy.embedded.cdc import KafkaConnect
from lambdarec.settings import Settings, dial, host_port
from lambdarec.submit import spark_submit_command, spark_submit_env

pytestmark = pytest.mark.unit


def test_every_listeners_host_setting_defaults_to_loopback():
    hosts = {name: field.default for name, field in Settings.model_fields.items() if name.endswith("_host")}
    assert set(hosts) >= {"serve_host", "speed_metrics_host", "spark_driver_host", "embedded_broker_host",
                          "embedded_postgres_host", "cdc_connect_host", "prometheus_host"}
    assert set(hosts.values()) == {"127.0.0.1"}, hosts


def test_each_component_is_told_to_bind_its_host_setting(settings):
    exposed = settings.model_copy(update={
        "speed_metrics_host": "0.0.0.0", "spark_driver_host": "10.0.0.5", "embedded_broker_host": "10.0.0.5",
        "prometheus_host": "::", "cdc_connect_host": "0.0.0.0"})
    for current, driver, prometheus, connect, broker in (
            (settings, "127.0.0.1", "127.0.0.1:", "http://127.0.0.1:", "PLAINTEXT://127.0.0.1:"),
            (exposed, "10.0.0.5", "[::]:", "http://0.0.0.0:", "PLAINTEXT://10.0.0.5:")):
        submit = spark_submit_command(current, "speed/job.py")
        assert f"spark.driver.bindAddress={driver}" in submit and f"spark.driver.host={driver}" in submit
        assert "spark.ui.enabled=false" in submit
        assert spark_submit_env(current)["SPARK_LOCAL_IP"] == driver  # where a UI, if turned on, would bind
        assert f"--web.listen-address={prometheus}{current.prometheus_port}" in prometheus_server.command(current)
        assert KafkaConnect(current)._worker_config()["listeners"] == f"{connect}{current.cdc_connect_port}"
        server = EmbeddedBroker(current)._server_properties()
        assert f"listeners={broker}{current.embedded_broker_port},CONTROLLER://127.0.0.1:" in server
    assert airflow_platform.environment(settings, 8080, {})["AIRFLOW__API__HOST"] == "127.0.0.1"
    assert airflow_platform.environment(settings, 8080, {"AIRFLOW__API__HOST": "0.0.0.0"})["AIRFLOW__API__HOST"] \
        == "0.0.0.0"


def test_clients_dial_loopback_for_a_wildcard_bind_and_bracket_ipv6():
    assert dial("0.0.0.0", 9108) == dial("", 9108) == "127.0.0.1:9108"
    assert dial("::", 9090) == "127.0.0.1:9090" and dial("::1", 9090) == "[::1]:9090"
    assert host_port("10.0.0.5", 1) == "10.0.0.5:1"
    assert Settings(speed_metrics_host="0.0.0.0").speed_metrics_endpoint == "http://127.0.0.1:9108/metrics"


def test_the_embedded_broker_refuses_a_wildcard_it_could_not_advertise(settings):
    with pytest.raises(BrokerError, match="LAMBDAREC_EMBEDDED_BROKER_HOST"):
        EmbeddedBroker(settings.model_copy(update={"embedded_broker_host": "0.0.0.0"}))


def test_a_generated_secret_is_made_once_in_a_private_file(tmp_path):
    path = tmp_path / "secrets" / "db.password"
    found: list[str] = []
    start = threading.Barrier(4)

    def generate() -> None:
        start.wait()
        found.append(secret_files.generated(path))

    threads = [threading.Thread(target=generate) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(found)) == 1 and len(found[0]) >= 32 and path.read_text() == found[0]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert [p.name for p in path.parent.iterdir()] == ["db.password"]  # no partial file left behind
    path.chmod(0o644)
    assert secret_files.generated(path) == found[0] and stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_written_secret_is_private_even_under_a_lax_umask(tmp_path):
    old = os.umask(0)
    try:
        secret_files.write(tmp_path / "s" / "x.properties", "k=v\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "s" / "x.properties").stat().st_mode) == 0o600


def test_the_embedded_databases_password_is_generated_under_the_root_and_redacted_for_display(settings):
    url = settings.operational_db
    password = (settings.secrets_root / secret_files.POSTGRES_PASSWORD).read_text()
    assert url == f"postgresql://lambdarec:{password}@127.0.0.1:{settings.embedded_postgres_port}/operational"
    assert settings.operational_db == url  # generated once
    assert secret_files.redacted(url) == f"postgresql://lambdarec:***@127.0.0.1:{settings.embedded_postgres_port}/operational"
    assert secret_files.redacted("postgresql://u@h/db") == "postgresql://u@h/db"
    external = settings.model_copy(update={"operational_db_url": "postgresql://shop:s3cret@db:5432/shop"})
    assert external.operational_db == "postgresql://shop:s3cret@db:5432/shop"
