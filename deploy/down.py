"""``lambdarec down``: stop what ``lambdarec up`` started, and return only once every process is gone.

It signals the supervisor, which stops the components in reverse dependency
order (SIGTERM, SIGKILL after its timeout) and exits. If the supervisor itself
does not exit in time it is killed, and so are any component processes the
state file still names (they would die with it anyway, by their death signal).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import time
from pathlib import Path

from deploy.state import PlatformState, read_state
from lambdarec.processes import StageError, wait_for
from lambdarec.settings import Settings

POLL_S = 0.1


def _wait(condition, timeout_s: float) -> bool:
    """``processes.wait_for`` as a yes/no: whether ``condition`` held within ``timeout_s``."""
    try:
        wait_for(condition, timeout_s, "processes to exit", interval_s=POLL_S)
    except StageError:
        return False
    return True


def kill_leftovers(root: Path, timeout_s: float = 10.0) -> list[str]:
    """SIGKILL the process group of any component the state file names that still runs; the names."""
    state = read_state(root)
    left = [c for c in state.components if c.alive()] if state else []
    for record in left:
        assert record.pid is not None
        for kill in (os.killpg, os.kill):  # its group (workers, a driver), then itself if it left the group
            with contextlib.suppress(ProcessLookupError, PermissionError):
                kill(record.pid, signal.SIGKILL)
    _wait(lambda: not any(c.alive() for c in left), timeout_s)
    return [c.name for c in left]


def stop(root: Path, state: PlatformState, timeout_s: float) -> bool:
    """SIGTERM the supervisor and wait for it and its components; True if it stopped in time by itself."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(state.supervisor_pid, signal.SIGTERM)
    clean = _wait(lambda: not state.supervisor_alive(), timeout_s)
    if not clean and state.supervisor_alive():
        os.kill(state.supervisor_pid, signal.SIGKILL)
        _wait(lambda: not state.supervisor_alive(), 10)
    kill_leftovers(root)
    return clean


def exit_text(code: int | None) -> str:
    """How a component ended: `` (exit 0)``, `` (SIGTERM)`` for a signal (Popen's negative codes)."""
    if code is None:
        return ""
    if code < 0:
        try:
            return f" ({signal.Signals(-code).name})"
        except ValueError:
            return f" (signal {-code})"
    return f" (exit {code})"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="Seconds to wait for the supervisor to stop everything before killing it.")


def command(args: argparse.Namespace, settings: Settings) -> int:
    root = Path(settings.root).resolve()
    state = read_state(root)
    if state is None or not state.supervisor_alive():
        killed = kill_leftovers(root)
        print("lambdarec is not up" + (f"; killed what was left of {', '.join(killed)}" if killed else ""))
        return 0
    print(f"stopping lambdarec (supervisor pid {state.supervisor_pid}) …", flush=True)
    started = time.monotonic()
    clean = stop(root, state, args.timeout)
    final = read_state(root)
    for record in reversed(final.components if final else []):
        print(f"  {record.name}: {record.status}{exit_text(record.exit_code)}")
    print(f"lambdarec is down ({time.monotonic() - started:.1f} s)" +
          ("" if clean else f"; the supervisor did not stop within {args.timeout:.0f} s and was killed"))
    return 0 if clean else 1
