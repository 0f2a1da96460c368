"""``lambdarec import`` into a real Delta events table: layouts, idempotency, clear errors."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batch.importer import BadImportFile, import_file
from deploy.cli import main
from lambdarec.lake import Lake
from lambdarec.pseudonym import pseudonymise
from schemas.tables import EVENTS

pytestmark = pytest.mark.unit


def events(settings):
    return Lake(settings).read_arrow(EVENTS).sort_by("occurred_at").to_pylist()


def test_movielens_udata_twice_adds_nothing_the_second_time(settings, tmp_path, monkeypatch, capsys):
    path = tmp_path / "u.data"
    path.write_text("196\t242\t3\t881250949\n186\t302\t3\t891717742\n196\t242\t3\t881250949\n")
    monkeypatch.setenv("LAMBDAREC_ROOT", str(settings.root))
    assert main(["import", str(path)]) == 0
    assert '"imported": 3' in capsys.readouterr().out
    assert main(["import", str(path)]) == 0
    assert '"imported": 0' in capsys.readouterr().out
    rows = events(settings)
    assert len(rows) == 3 and len({r["event_id"] for r in rows}) == 3  # identical rows stay distinct
    first = rows[0]
    assert first["user_id"] == pseudonymise("196", settings.pseudonym_key) and first["item_id"] == "242"
    assert (first["event_type"], first["value"]) == ("rating", 3.0)
    assert first["occurred_at"] == datetime.fromtimestamp(881250949, UTC)
    assert first["context"] == [("source", "import:u.data")]


def test_movielens_ratings_csv_and_content_derived_ids(settings, tmp_path):
    path = tmp_path / "ratings.csv"
    path.write_text("userId,movieId,rating,timestamp\n1,31,2.5,1260759144\n1,1029,3.0,1260759179\n")
    assert import_file(path, settings)["format"] == "movielens-ratings"
    copy = tmp_path / "copy" / "ratings.csv"
    copy.parent.mkdir()
    copy.write_text(path.read_text() + "2,10,4.0,1260759200\n")  # another file, same first rows
    import_file(copy, settings)
    rows = events(settings)
    assert len(rows) == 5 and len({r["event_id"] for r in rows}) == 3  # same content, same ids


def test_generic_csv_with_weights_and_iso_times(settings, tmp_path):
    path = tmp_path / "history.csv"
    path.write_text("user,item,weight,timestamp\nalice,sku-1,2,2025-03-01T10:00:00Z\nbob,sku-2,1.5,2025-03-01T11:00:00+01:00\n")
    summary = import_file(path, settings, event_type="purchase")
    assert (summary["format"], summary["imported"]) == ("csv", 2)
    rows = events(settings)
    assert [(r["event_type"], r["value"]) for r in rows] == [("purchase", 2.0), ("purchase", 1.5)]
    assert rows[1]["occurred_at"] == datetime(2025, 3, 1, 10, tzinfo=UTC)


def test_what_the_generator_writes_imports_as_it_would_have_been_posted(settings, tmp_path, monkeypatch, capsys):
    """`lambdarec generate --out x.jsonl` then `lambdarec import x.jsonl`: one row per event, types and values kept."""
    path = tmp_path / "history.jsonl"
    monkeypatch.setenv("LAMBDAREC_ROOT", str(settings.root))
    assert main(["generate", "--out", str(path), "--events", "200", "--users", "20", "--items", "40", "--days", "3"]) == 0
    assert main(["import", str(path)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (summary["format"], summary["imported"]) == ("jsonl", 200)
    sent = [json.loads(line) for line in path.read_text().splitlines()]
    rows = events(settings)
    assert Counter((r["user_id"], r["item_id"], r["event_type"], r["value"]) for r in rows) == Counter(
        (pseudonymise(e["user_id"], settings.pseudonym_key), e["item_id"], e["event_type"],
         1.0 if e["value"] is None else e["value"]) for e in sent)


def test_parquet_with_event_types(settings, tmp_path):
    path = tmp_path / "history.parquet"
    pq.write_table(
        pa.table({"user": ["a", "b"], "item": ["x", "y"], "weight": [1.0, 1.0],
                  "event_type": ["click", "like"], "timestamp": [1700000000, 1700000001]}),
        path,
    )
    assert import_file(path, settings)["imported"] == 2
    assert [r["event_type"] for r in events(settings)] == ["click", "like"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("user,item,timestamp\na,b,1\n", "weight or rating"),
        ("user,item,rating\na,b,1\n", "'timestamp'"),
        ("user,item,rating,timestamp\na,b,,1\n", "empty or non-numeric"),
        ("user,item,rating,timestamp\na,b,1,yesterday\n", "neither unix seconds nor ISO"),
        ("user,item,rating,timestamp\na,b,1,2025-03-01T10:00:00\n", "UTC offset"),
        ("user,item,weight,event_type,timestamp\na,b,1,teleport,1\n", "unknown event_type"),
    ],
)
def test_bad_files_get_a_clear_error_and_write_nothing(settings, tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(BadImportFile, match=message):
        import_file(path, settings)
    assert Lake(settings).version(EVENTS) is None


def test_the_cli_exits_2_with_the_reason(settings, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LAMBDAREC_ROOT", str(settings.root))
    assert main(["import", str(tmp_path / "nope.csv")]) == 2
    assert "no such file" in capsys.readouterr().err
