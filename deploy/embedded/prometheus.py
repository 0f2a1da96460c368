"""Prometheus for ``lambdarec up``: Debian's server, scraping this platform's processes.

The config is written from settings at plan time (the ports the components
really use), with the repository's alert rules (``ops/prometheus/alerts.yml``).
``ops/prometheus/prometheus.yml`` is the same for the default ports, kept for
users who run their own Prometheus.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from lambdarec.settings import Settings, dial, host_port

RULES = Path(__file__).resolve().parents[2] / "ops" / "prometheus" / "alerts.yml"


def executable() -> str:
    found = shutil.which("prometheus")
    if found is None:
        raise RuntimeError("prometheus is not installed: run `make prometheus` (Debian's package)")
    return found


def url(settings: Settings) -> str:
    return f"http://{dial(settings.prometheus_host, settings.prometheus_port)}"


def config(settings: Settings) -> dict:
    """Scrape serving and the speed job's driver every 5 s; evaluate the alert rules."""
    serving = dial(settings.serve_host, settings.serve_port)
    return {
        "global": {"scrape_interval": "5s", "evaluation_interval": "5s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {"job_name": "serving", "metrics_path": "/metrics", "static_configs": [{"targets": [serving]}]},
            {"job_name": "speed", "static_configs": [{"targets": [dial(settings.speed_metrics_host,
                                                                          settings.speed_metrics_port)]}]},
        ],
    }


def command(settings: Settings) -> list[str]:
    """The server's command line (listening on ``prometheus_host``, loopback by default); writes its config
    under ``<root>/prometheus``."""
    home = settings.root / "prometheus"
    home.mkdir(parents=True, exist_ok=True)
    path = home / "prometheus.yml"
    path.write_text(yaml.safe_dump(config(settings), sort_keys=False))
    return [executable(), f"--config.file={path}", f"--storage.tsdb.path={home / 'data'}",
            f"--web.listen-address={host_port(settings.prometheus_host, settings.prometheus_port)}",
            "--storage.tsdb.retention.time=15d"]
