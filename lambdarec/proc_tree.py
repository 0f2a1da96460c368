"""Process facts read from ``/proc``: identity, liveness, descendants and resident memory.

``lambdarec ps`` and ``down`` look at pids written by another process, maybe long
ago, so a pid alone could name a stranger that reused it: a process is named by
its pid *and* its start time (``/proc/<pid>/stat`` field 22). A component is
a tree (a JVM with its Python driver and workers), so its memory is the sum over
the tree. Read from ``/proc`` directly, like the rest of the platform's process
handling (``prctl``), so the core needs no psutil.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

PROC = Path("/proc")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
GONE_STATES = ("Z", "X")  # a zombie holds no memory and runs nothing


def _stat_fields(pid: int) -> list[str] | None:
    """``/proc/<pid>/stat`` after the command name (which may hold spaces): field 3 onwards."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return text.rpartition(")")[2].split()


def start_ticks(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks since boot; None if there is no such process."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def alive(pid: int | None, started: int | None = None) -> bool:
    """True while ``pid`` runs (not a zombie) and, given ``started``, is still the process that started then."""
    if not pid:
        return False
    fields = _stat_fields(pid)
    if fields is None or fields[0] in GONE_STATES:
        return False
    return started is None or int(fields[19]) == started


def _parents() -> dict[int, int]:
    """Every process's parent pid."""
    parents = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields:
                parents[int(entry.name)] = int(fields[1])
    return parents


def tree(pid: int) -> list[int]:
    """``pid`` and every live descendant of it (children whose parent died are reparented, so not found)."""
    children: dict[int, list[int]] = {}
    for child, parent in _parents().items():
        children.setdefault(parent, []).append(child)
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        if alive(current):
            found.append(current)
        todo.extend(children.get(current, []))
    return found


def rss_bytes(pids: Iterable[int]) -> int:
    """Resident memory of ``pids`` added up (pages shared between them count once per process)."""
    total = 0
    for pid in pids:
        try:
            resident = int((PROC / str(pid) / "statm").read_text().split()[1])
        except (FileNotFoundError, ProcessLookupError, PermissionError, IndexError):
            continue
        total += resident * PAGE_BYTES
    return total
