"""Idle cost: the share of a core that serving and the broker burn with nothing to do.

Starts the embedded broker and ``lambdarec serve`` in a temporary root, lets them
settle, then reads each process's CPU time (user + system, children included)
over --seconds, --runs times. Serving's Kafka followers long-poll the broker, so
with no traffic both should be close to zero. Prints one JSON object: the share
of one core per process, median and each run.

    .venv/bin/python bench/idle.py [--seconds 30] [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deploy.embedded.broker import EmbeddedBroker  # noqa: E402
from bench import records
from lambdarec.processes import free_port, start_child, wait_for  # noqa: E402
from deploy.cli import lambdarec_command
from lambdarec.settings import Settings  # noqa: E402
from lambdarec.submit import spark_submit_env  # noqa: E402

SETTLE_S = 10.0  # after /health: the followers' catch-up and the first samples are startup, not idle


def cpu_seconds(pid: int) -> float:
    process = psutil.Process(pid)
    return sum(sum(p.cpu_times()[:2]) for p in [process, *process.children(recursive=True)])


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--records", type=Path, default=records.RECORDS, help="Where the dated record goes.")
    args = parser.parse_args(argv)
    record = records.start("idle", vars(args))
    root = Path(tempfile.mkdtemp(prefix="lambdarec-bench-idle-"))
    settings = Settings(root=root, embedded_broker_port=free_port(), embedded_controller_port=free_port(),
                        serve_port=free_port(), allow_development_key=True)
    api = f"http://127.0.0.1:{settings.serve_port}"
    with EmbeddedBroker(settings) as broker:
        serving = start_child("serving", lambdarec_command("serve", "--log-level", "warning"), root / "logs",
                              spark_submit_env(settings))
        try:
            wait_for(lambda: serving.check_alive() and httpx.get(f"{api}/health", timeout=1).status_code == 200,
                     120, "serving")
            time.sleep(SETTLE_S)
            assert broker.pid is not None, "the broker runs"
            pids = {"serving": serving.process.pid, "broker": broker.pid}
            runs: dict[str, list[float]] = {name: [] for name in pids}
            for _ in range(args.runs):
                before = {name: cpu_seconds(pid) for name, pid in pids.items()}
                time.sleep(args.seconds)  # the measured idle window
                serving.check_alive()
                for name, pid in pids.items():
                    runs[name].append(round((cpu_seconds(pid) - before[name]) / args.seconds, 3))
            records.write({**record, "figures": {f"{name}_core_share": {"median": statistics.median(shares), "runs": shares}
                              for name, shares in runs.items()} | {"seconds": args.seconds}}, args.records)
        finally:
            serving.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
