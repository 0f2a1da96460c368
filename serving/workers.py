"""``lambdarec serve --workers N``: several serving processes on one port, under uvicorn's supervisor.

A Python process runs its requests' Python code one at a time (the GIL), so serving
uses more cores only through more processes. uvicorn's supervisor spawns N workers and restarts a
worker that dies or stops answering its health pipe. Each worker listens on a socket of its own
on the one port (SO_REUSEPORT), so the kernel spreads new connections evenly over them: with one
shared socket, whichever worker woke first accepted a whole burst of connections, and its
keep-alive clients kept it saturated while the other idled (README: measurements). A worker that
dies resets the connections still waiting in its socket's accept queue; clients retry those.
Each worker builds the whole app: it maps the same model files (built once per host,
``serving.views.model_store``), follows the speed view and the CDC topic itself and has its
own Kafka producer. What a worker holds apart:

- metrics live in prometheus_client's multiprocess files, one folder per port, so a
  scrape of any worker answers every worker's counters and histograms summed;
- ``/admin/reload`` swaps the model in the worker that takes it; the others find the
  new version on their next registry poll (``serve_model_poll_s``);
- the connection limits (``serving.http_server``) and the limit on requests in flight are
  each worker's own, so the port holds N times them.

What they share: the rate limits' buckets, in one memory-mapped table in the run's folder
(``serving.rate_limit``), so a caller gets its rate over all workers together, not N times it.
"""

from __future__ import annotations

import faulthandler
import os
import re
import shutil
import signal
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from uvicorn.supervisors import Multiprocess

from lambdarec.processes import exit_with_parent
from lambdarec.proc_tree import alive
from lambdarec.settings import Settings
from serving.http_server import uvicorn_config
from serving.logs import configure_logging
from serving.metrics import MULTIPROCESS_DIR_ENV
from serving.rate_limit import TABLE_ENV, BucketTable

if TYPE_CHECKING:
    from fastapi import FastAPI

PARENT_ENV = "LAMBDAREC_SERVE_PARENT_PID"
LOG_LEVEL_ENV = "LAMBDAREC_SERVE_LOG_LEVEL"
SWITCH_INTERVAL_S = 0.0005
LIVE_GAUGE_FILE = re.compile(r"gauge_live\w+?_(\d+)\.db")
RATE_TABLE_FILE = "rate-buckets.bin"  # prometheus_client reads only the folder's *.db files


def worker_count(requested: int) -> int:
    """``requested`` processes, or one per core this process may run on for 0."""
    return requested or len(os.sched_getaffinity(0))


def metrics_dir(settings: Settings, port: int) -> Path:
    return settings.root.resolve() / "serving-metrics" / str(port)


def tune_process() -> None:
    """Per-process settings every serving process needs before its first request."""
    from threadpoolctl import threadpool_limits

    # One BLAS thread: a request's matrix-vector product is too small to split, and numpy's
    # and scipy's OpenBLAS pools spinning on few cores slow every request (README: measurements).
    threadpool_limits(1, user_api="blas")
    # A model swap prepares the new model's caches on a worker thread beside the requests; numpy
    # drops and retakes the GIL on every call, and with the default switch interval each retake
    # waits behind that thread.
    sys.setswitchinterval(SWITCH_INTERVAL_S)


def dump_stacks_on_usr1() -> None:
    """``kill -USR1 <pid>`` of any serving process writes every thread's stack to its stderr (the component's
    log under ``lambdarec up``): what a stuck request or follower waits on, without stopping the process."""
    faulthandler.register(signal.SIGUSR1, all_threads=True)


class ReusePortSupervisor(Multiprocess):
    """uvicorn's supervisor, giving every worker it starts (or restarts) a listening socket of its own."""

    @property  # uvicorn's supervisor reads its sockets at each worker's start
    def sockets(self) -> list[socket.socket]:
        return [listening_socket(self.config.host, self.config.port, self.config.backlog)]

    @sockets.setter
    def sockets(self, shared: list[socket.socket]) -> None:
        """The supervisor's constructor sets the one socket all workers would share: there is none."""


def listening_socket(host: str, port: int, backlog: int) -> socket.socket:
    """A socket listening on ``host:port`` beside the other workers' (SO_REUSEPORT)."""
    sock = socket.socket(address_family(host), socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


def address_family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def claim_port(host: str, port: int) -> None:
    """Fail, as a plain bind would, when something listens on the port already: SO_REUSEPORT would
    otherwise let a second ``lambdarec serve`` of the same user join this one's port silently."""
    with socket.socket(address_family(host), socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))


def run_workers(settings: Settings, host: str, port: int, workers: int, log_level: str) -> None:
    """Serve with ``workers`` processes until stopped; a fresh metrics folder and rate table for each start."""
    claim_port(host, port)
    folder = metrics_dir(settings, port)
    shutil.rmtree(folder, ignore_errors=True)  # the last run's counters would add to this one's
    folder.mkdir(parents=True)
    BucketTable.create(folder / RATE_TABLE_FILE, settings.serve_rate_table_slots)
    os.environ.update({MULTIPROCESS_DIR_ENV: str(folder), PARENT_ENV: str(os.getpid()),
                       LOG_LEVEL_ENV: log_level.upper(), TABLE_ENV: str(folder / RATE_TABLE_FILE)})
    config = uvicorn_config(settings, f"{__name__}:worker_app", host, port, workers=workers)
    ReusePortSupervisor(config, sockets=[]).run()


def worker_app() -> "FastAPI":
    """uvicorn's app factory in each worker."""
    from serving.app import create_app

    exit_with_parent(int(os.environ[PARENT_ENV]), signal.SIGTERM)  # a killed parent leaves no worker holding the port
    dump_stacks_on_usr1()
    configure_logging(os.environ.get(LOG_LEVEL_ENV, "INFO"))
    tune_process()
    forget_dead_workers(Path(os.environ[MULTIPROCESS_DIR_ENV]))
    return create_app()


def forget_dead_workers(folder: Path) -> None:
    """Drop the view gauges of workers that died, which would otherwise show in the "live" modes forever.

    uvicorn replaces a dead worker without telling prometheus_client; its replacement
    clears up here. Dead workers' counters stay: they are counts the platform made.
    """
    from prometheus_client.multiprocess import mark_process_dead

    for path in folder.glob("gauge_live*.db"):
        found = LIVE_GAUGE_FILE.fullmatch(path.name)
        if found and not alive(int(found.group(1))):
            mark_process_dead(int(found.group(1)), str(folder))
