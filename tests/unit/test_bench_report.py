"""The docs' measured figures are the newest bench records' (bench/report.py), never typed by hand."""

from __future__ import annotations

import json
import shutil

import pytest

from bench import report

pytestmark = pytest.mark.unit


def test_the_docs_show_the_newest_records():
    assert report.main(["--check", *map(str, report.DOCUMENTS)]) == 0
    assert any("<!-- bench:" in document.read_text() for document in report.DOCUMENTS)


def test_a_newer_record_changes_the_block_and_check_fails_until_it_is_filled(tmp_path, monkeypatch):
    records = tmp_path / "records"
    shutil.copytree(report.RECORDS, records)
    newest = report.newest("serving_memory", records)
    newest.pop("file")
    newest["figures"]["rss_peak_mb"] = 4321.0
    (records / "serving_memory-29991231T000000Z.json").write_text(json.dumps(newest))
    monkeypatch.setattr(report, "RECORDS", records)
    document = tmp_path / "doc.md"
    document.write_text("before\n<!-- bench:serving_memory -->\nstale\n<!-- /bench:serving_memory -->\nafter\n")

    assert report.main(["--check", str(document)]) == 1
    assert report.main([str(document)]) == 0
    filled = document.read_text()
    assert "| RSS peak while the events flowed | 4321 MB |" in filled
    assert "serving_memory-29991231T000000Z.json" in filled and "stale" not in filled
    assert filled.startswith("before\n") and filled.endswith("after\n")
    assert report.main(["--check", str(document)]) == 0
