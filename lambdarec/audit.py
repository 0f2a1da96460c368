"""The audit log: one row in the Delta table ``audit_log`` per admin or data-access action.

Serving appends a row for every consent change, erasure request, receipt read,
export and model reload; the command line for each key change and export. A row
says when, which API key (its id, never its token), what, on whom, and how it
ended. "On whom" is the subject hash (``lambdarec.privacy.subject_hash``), never
a raw id or a pseudonym: an erased user's pseudonym must be gone from the lake,
and the hash is what the erasure receipt keeps too, so an auditor holding a raw
id can still find that user's rows (``lambdarec audit --user``).

A request must not wait on a Delta commit of its own: ``GroupWriter`` commits
whatever requests queued in one append, at most one every ``GROUP_WINDOW_S``,
on its own thread, and each request awaits the commit that carries its row.
Appends from several serving processes (``--workers``) and the command line are
blind appends, which Delta commits side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc

from lambdarec import privacy
from lambdarec.lake import Lake
from lambdarec.settings import Settings
from schemas.tables import AUDIT_LOG

log = logging.getLogger(__name__)

GROUP_WINDOW_S = 0.05
"""Least time between two of a writer's commits: under load a commit carries every row queued meanwhile, so
the table gains at most 20 commits a second per process, and an idle writer commits a lone row at once."""
DETAIL_MAX = 200


def _now() -> datetime:
    return datetime.now(UTC)


def _new_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class Entry:
    """One audited action. ``subject`` is a subject hash (``subject_of``), never an id."""

    action: str
    outcome: str
    key_id: str | None = None
    subject: str | None = None
    detail: str = ""
    source: str = "api"
    at: datetime = field(default_factory=_now)
    audit_id: str = field(default_factory=_new_id)

    def row(self) -> dict:
        return {**asdict(self), "detail": self.detail[:DETAIL_MAX]}


def operator() -> str:
    """Who runs this command, for the detail of the command line's rows."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container)
        return "an unnamed user"


def subject_of(pseudonym: str) -> str:
    """The audit log's subject for a user: the same one-way hash the privacy tables keep."""
    return privacy.subject_hash(pseudonym)


def append(lake: Lake, entries: Sequence[Entry]) -> int:
    """Append ``entries`` in one commit; returns the version it created."""
    lake.ensure(AUDIT_LOG)
    version = lake.append_arrow(AUDIT_LOG, _table(entries))
    assert version is not None  # an append without an app transaction always commits
    return version


def _table(entries: Sequence[Entry]) -> pa.Table:
    return pa.Table.from_pylist([entry.row() for entry in entries], schema=AUDIT_LOG.schema)


class GroupWriter:
    """Commits the rows of concurrent requests together, off the event loop (see the module's docstring).

    ``submit`` queues a row and returns a future that completes once a commit holds
    it (or fails with that commit's error); ``record`` awaits it from async code.
    The thread starts with the first row, and ``close`` commits what is queued.
    """

    def __init__(self, lake: Lake, window_s: float = GROUP_WINDOW_S):
        self.lake = lake
        self.window_s = window_s
        self._queue: list[tuple[Entry, Future[None]]] = []
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._appender = lake.appender(AUDIT_LOG)  # keeps the table open: a commit reads only the log's new entries
        self.commits = 0  # how many commits carried the rows: fewer than rows under concurrency

    def submit(self, entry: Entry) -> Future[None]:
        done: Future[None] = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError("the audit writer is closed")
            self._queue.append((entry, done))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
                self._thread.start()
            self._cond.notify()
        return done

    async def record(self, entry: Entry) -> None:
        await asyncio.wrap_future(self.submit(entry))

    def close(self, timeout_s: float = 10.0) -> None:
        """Commit what is queued and stop the thread."""
        with self._cond:
            self._closed = True
            self._cond.notify()
            thread = self._thread
        if thread is not None:
            thread.join(timeout_s)

    def _run(self) -> None:
        last = 0.0
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:
                    return
            wait = last + self.window_s - time.monotonic()
            if wait > 0:  # rows keep queueing meanwhile and share the next commit
                time.sleep(wait)
            with self._cond:
                batch, self._queue = self._queue, []
            last = time.monotonic()
            self._commit(batch)

    def _commit(self, batch: list[tuple[Entry, Future[None]]]) -> None:
        try:
            self._appender.append(_table([entry for entry, _ in batch]))
        except Exception as exc:  # each waiting request learns it; the next batch tries again
            log.error("audit rows not committed", extra={"rows": len(batch), "error": repr(exc)})
            for _, done in batch:
                done.set_exception(exc)
            return
        self.commits += 1
        for _, done in batch:
            done.set_result(None)


def read(lake: Lake, subject: str | None = None, action: str | None = None,
         since: datetime | None = None) -> list[dict]:
    """The log's rows, oldest first, narrowed to a subject hash, an action and a start time."""
    if not lake.exists(AUDIT_LOG):
        return []
    conditions = [condition for condition in (
        None if subject is None else pc.field("subject") == subject,
        None if action is None else pc.field("action") == action,
        None if since is None else pc.field("at") >= pa.scalar(since, AUDIT_LOG.schema.field("at").type),
    ) if condition is not None]
    where = None
    for condition in conditions:
        where = condition if where is None else where & condition
    return sorted(lake.read_arrow(AUDIT_LOG, filter=where).to_pylist(), key=lambda row: row["at"])


SINCE = re.compile(r"^(\d+)([smhd])$")
UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``--since``: an ISO time (UTC unless it says otherwise) or an age such as ``90m``, ``24h``, ``7d``."""
    if match := SINCE.match(text):
        return (now or _now()) - timedelta(**{UNITS[match[2]]: int(match[1])})
    try:
        found = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--since takes an ISO time or an age like 24h or 7d, not {text!r}") from None
    return found if found.tzinfo else found.replace(tzinfo=UTC)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--user", metavar="RAW_ID", help="Only this user's rows (the id is hashed here, never stored).")
    parser.add_argument("--action", help="Only this action (consent.change, user.erase, erasure.read, "
                        "user.export, model.reload, key.create, key.revoke).")
    parser.add_argument("--since", type=parse_since, help="Only rows from then on: an ISO time, or an age (24h, 7d).")
    parser.add_argument("--json", action="store_true", help="One JSON object per line instead of a table.")


def command(args: argparse.Namespace, settings: Settings) -> int:
    """``lambdarec audit``: print the audit log."""
    from lambdarec.pseudonym import pseudonymise

    subject = subject_of(pseudonymise(args.user, settings.pseudonym_key)) if args.user else None
    rows = read(Lake(settings), subject, args.action, args.since)
    if args.json:
        for row in rows:
            print(json.dumps({**row, "at": row["at"].isoformat()}))
        return 0
    print(f"{'AT (UTC)':23}  {'ACTION':14}  {'OUTCOME':12}  {'KEY ID':16}  {'SOURCE':6}  {'SUBJECT':12}  DETAIL")
    for row in rows:
        print(f"{row['at']:%Y-%m-%d %H:%M:%S.%f}"[:23] + f"  {row['action']:14}  {row['outcome']:12}  "
              f"{row['key_id'] or '-':16}  {row['source']:6}  {(row['subject'] or '-')[:12]:12}  {row['detail']}")
    print(f"{len(rows)} row{'' if len(rows) == 1 else 's'}")
    return 0
