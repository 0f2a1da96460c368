"""The audit log (lambdarec.audit): group commits off the caller's thread, reads, and `lambdarec audit`."""

from __future__ import annotations

import argparse
import threading
from datetime import UTC, datetime, timedelta

import pytest
from deltalake import DeltaTable

from lambdarec import audit
from lambdarec.lake import Lake
from lambdarec.pseudonym import pseudonymise
from schemas.tables import AUDIT_LOG

pytestmark = pytest.mark.unit


@pytest.fixture
def lake(settings):
    return Lake(settings)


def test_concurrent_rows_share_commits_and_each_caller_learns_its_row_is_in(lake):
    writer = audit.GroupWriter(lake, window_s=0.2)
    first = writer.submit(audit.Entry(action="model.reload", outcome="unchanged"))
    first.result(30)  # an idle writer commits a lone row at once
    futures = []

    def submit(n: int) -> None:
        futures.append(writer.submit(audit.Entry(action="consent.change", outcome="accepted", detail=f"row {n}")))

    threads = [threading.Thread(target=submit, args=(n,)) for n in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for future in futures:
        future.result(30)
    writer.close()
    rows = audit.read(lake)
    assert len(rows) == 41 and {r["detail"] for r in rows} >= {f"row {n}" for n in range(40)}
    # the 40 rows came while the window after the first commit was open: they share far fewer commits
    assert 2 <= writer.commits <= 5
    assert DeltaTable(lake.uri(AUDIT_LOG)).version() == writer.commits  # version 0 created the table


def test_a_failed_commit_fails_each_waiting_caller_and_the_writer_goes_on(lake, tmp_path):
    writer = audit.GroupWriter(lake)
    lake.ensure(AUDIT_LOG)
    original = writer._appender.append
    calls = []

    def failing_once(rows):
        calls.append(rows.num_rows)
        if len(calls) == 1:
            raise OSError("disk full")  # stands in for a storage failure, which cannot be caused here on demand
        return original(rows)

    writer._appender.append = failing_once  # type: ignore[method-assign]
    with pytest.raises(OSError, match="disk full"):
        writer.submit(audit.Entry(action="user.export", outcome="ok")).result(30)
    writer.submit(audit.Entry(action="user.export", outcome="not_found")).result(30)
    writer.close()
    assert [r["outcome"] for r in audit.read(lake)] == ["not_found"]


def test_close_commits_what_is_queued_and_refuses_more(lake):
    writer = audit.GroupWriter(lake, window_s=1.0)
    writer.submit(audit.Entry(action="a", outcome="ok")).result(30)
    pending = writer.submit(audit.Entry(action="b", outcome="ok"))  # waits for the window
    writer.close()
    assert pending.done() and pending.exception() is None
    assert [r["action"] for r in audit.read(lake)] == ["a", "b"]
    with pytest.raises(RuntimeError):
        writer.submit(audit.Entry(action="c", outcome="ok"))


def test_reads_narrow_by_subject_action_and_time(lake):
    old = datetime(2026, 1, 1, tzinfo=UTC)
    audit.append(lake, [
        audit.Entry(action="user.erase", outcome="pending", subject="s1", at=old),
        audit.Entry(action="user.export", outcome="ok", subject="s1", at=old + timedelta(hours=2)),
        audit.Entry(action="user.export", outcome="ok", subject="s2", at=old + timedelta(hours=3)),
    ])
    assert [r["action"] for r in audit.read(lake, subject="s1")] == ["user.erase", "user.export"]
    assert [r["subject"] for r in audit.read(lake, action="user.export")] == ["s1", "s2"]
    assert [r["subject"] for r in audit.read(lake, since=old + timedelta(hours=1))] == ["s1", "s2"]
    assert audit.read(lake, subject="s2", action="user.erase") == []


def test_since_takes_an_iso_time_or_an_age():
    now = datetime(2026, 5, 1, 12, tzinfo=UTC)
    assert audit.parse_since("90m", now) == now - timedelta(minutes=90)
    assert audit.parse_since("7d", now) == now - timedelta(days=7)
    assert audit.parse_since("2026-04-30T08:00:00") == datetime(2026, 4, 30, 8, tzinfo=UTC)
    with pytest.raises(argparse.ArgumentTypeError):
        audit.parse_since("last tuesday")


def test_the_detail_is_cut_short(lake):
    audit.append(lake, [audit.Entry(action="a", outcome="ok", detail="x" * 1000)])
    assert len(audit.read(lake)[0]["detail"]) == audit.DETAIL_MAX


def test_the_cli_finds_a_users_rows_by_their_raw_id(settings, lake, capsys):
    mine = audit.subject_of(pseudonymise("alice", settings.pseudonym_key))
    audit.append(lake, [audit.Entry(action="user.export", outcome="ok", subject=mine, key_id="k1" * 8),
                        audit.Entry(action="user.export", outcome="ok", subject="someone else")])
    parser = argparse.ArgumentParser()
    audit.add_arguments(parser)
    assert audit.command(parser.parse_args(["--user", "alice"]), settings) == 0
    out = capsys.readouterr().out
    assert "k1k1k1k1k1k1k1k1" in out and "1 row" in out and "alice" not in out
    assert audit.command(parser.parse_args(["--json", "--action", "user.export"]), settings) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 2
