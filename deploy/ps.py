"""``lambdarec ps``: the components ``lambdarec up`` runs, from the state file, checked against ``/proc``.

The supervisor records what it started; ``ps`` checks each pid is still that
process (a dead supervisor's children are shown dead, not trusted) and adds
what only a live process can tell: uptime and the resident memory of its whole
process tree (a Spark driver's Python and workers, Airflow's executor workers).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from lambdarec import proc_tree
from deploy.state import FAILED, STOPPED, PlatformState, age_s, read_state, state_path
from lambdarec.settings import Settings

AIRFLOW_PREFIX = "airflow-"
COLUMNS = ("NAME", "STATUS", "PID", "RESTARTS", "UPTIME", "RSS", "PORT/URL")


def component_view(record, alive: bool, pids: list[int]) -> dict[str, Any]:
    """One row of ``ps --json``."""
    status = record.status if alive or record.status not in ("starting", "running", "stopping") else "dead"
    return {
        "name": record.name, "status": status, "alive": alive, "pid": record.pid, "restarts": record.restarts,
        "started_at": record.started_at, "uptime_s": round(age_s(record.started_at) or 0, 1) if alive else None,
        "exit_code": record.exit_code, "port": record.port, "url": record.url,
        "processes": len(pids), "rss_bytes": proc_tree.rss_bytes(pids), "log": record.log,
    }


def collect(root: Path) -> dict[str, Any]:
    """The platform as one JSON-ready object; ``up`` is False when no supervisor runs for this root."""
    state = read_state(root)
    if state is None:
        return {"up": False, "status": "not started", "root": str(root), "state_file": str(state_path(root)),
                "components": [], "rss_bytes": {"total": 0, "airflow": 0}}
    return view(state, root)


def view(state: PlatformState, root: Path) -> dict[str, Any]:
    up = state.supervisor_alive()
    components = []
    for record in state.components:
        alive = record.alive()
        components.append(component_view(record, alive, proc_tree.tree(record.pid) if alive and record.pid else []))
    status = state.status if up or state.status in (STOPPED, FAILED) else "dead"
    return {
        "up": up, "status": status, "supervisor_pid": state.supervisor_pid, "started_at": state.started_at,
        "error": state.error, "root": str(root), "state_file": str(state_path(root)), "urls": state.urls,
        "components": components,
        "rss_bytes": {"total": sum(c["rss_bytes"] for c in components),
                      "airflow": sum(c["rss_bytes"] for c in components if c["name"].startswith(AIRFLOW_PREFIX))},
    }


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def megabytes(n: int) -> str:
    return f"{n / 2**20:.0f} MiB" if n else "-"


def render_table(info: dict[str, Any]) -> str:
    """A plain-text table of ``collect``'s figures."""
    if not info["components"]:
        return f"lambdarec is not up (no state in {info['state_file']}); start it with `lambdarec up`"
    head = (f"supervisor pid {info['supervisor_pid']}: {info['status']}" if info["up"]
            else f"no supervisor running ({info['status']})")
    rows = [COLUMNS] + [
        (c["name"], c["status"], str(c["pid"] or "-") if c["alive"] else "-", str(c["restarts"]),
         duration(c["uptime_s"]), megabytes(c["rss_bytes"]), c["url"] or (str(c["port"]) if c["port"] else "-"))
        for c in info["components"]
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = [head, *("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in rows)]
    rss = info["rss_bytes"]
    lines.append(f"memory: {megabytes(rss['total'])} in all" +
                 (f", Airflow {megabytes(rss['airflow'])}" if rss["airflow"] else ""))
    if info.get("error"):
        lines.append(f"error: {info['error'].splitlines()[0]}")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="Print one JSON object instead of the table.")


def command(args: argparse.Namespace, settings: Settings) -> int:
    info = collect(Path(settings.root).resolve())
    print(json.dumps(info, indent=2) if args.json else render_table(info))
    return 0
