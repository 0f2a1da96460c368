"""One key, one lake: the first command that uses a key records its fingerprint, every later one is checked.

The commands are run as a user runs them (``deploy.cli.main`` with the key in the
environment), on a lake whose key another command recorded: the refusal must come
before any work, so a wrong key leaves no request, no receipt and no row behind.
"""

from __future__ import annotations

import argparse
import threading

import pytest
from pydantic import SecretStr

from lambdarec import key_fingerprint
from deploy.cli import main
from lambdarec.key_fingerprint import fingerprint, verify_pseudonym_key
from lambdarec.lake import Lake
from lambdarec.pseudonym import PseudonymKeyRefused
from schemas.tables import EVENTS, PRIVACY_RECEIPTS, PRIVACY_REQUESTS, PSEUDONYM_KEYS

pytestmark = pytest.mark.unit

REAL_KEY = "the operator's real secret"


def keyed(settings, key: str):
    return settings.model_copy(update={"pseudonym_key": SecretStr(key)})


def rows(settings, spec) -> list[dict]:
    lake = Lake(settings)
    return lake.read_arrow(spec).to_pylist() if lake.exists(spec) else []


def test_the_fingerprint_tells_keys_apart_and_does_not_contain_them():
    assert fingerprint(REAL_KEY) == fingerprint(SecretStr(REAL_KEY)) == fingerprint(f"1:{REAL_KEY}")
    assert fingerprint(REAL_KEY) != fingerprint("another secret")
    assert len(fingerprint(REAL_KEY)) == key_fingerprint.FINGERPRINT_CHARS
    assert REAL_KEY.encode().hex() not in fingerprint(REAL_KEY)


def test_the_first_use_records_the_key_and_the_same_key_passes_after(settings):
    first = verify_pseudonym_key(keyed(settings, REAL_KEY), "serving")
    again = verify_pseudonym_key(keyed(settings, REAL_KEY), "erase")
    [row] = rows(settings, PSEUDONYM_KEYS)
    assert (row["key_version"], row["fingerprint"], row["recorded_by"]) == (1, fingerprint(REAL_KEY), "serving")
    assert REAL_KEY not in str(row)
    assert first.note is None and again.recorded == first.recorded


def test_another_key_of_the_same_version_is_refused_with_the_versions_the_lake_knows(settings):
    verify_pseudonym_key(keyed(settings, REAL_KEY), "speed")
    with pytest.raises(PseudonymKeyRefused) as refused:
        verify_pseudonym_key(keyed(settings, "a mistyped secret"), "export")
    message = str(refused.value)
    assert fingerprint(REAL_KEY) in message and fingerprint("a mistyped secret") in message
    assert "first used by speed" in message and '"2:<secret>"' in message
    assert "development key" not in message
    with pytest.raises(PseudonymKeyRefused, match="built-in development key"):
        verify_pseudonym_key(settings, "erase")  # the fixture's key: what runs when .env was not loaded
    assert len(rows(settings, PSEUDONYM_KEYS)) == 1


def test_a_rotation_is_recorded_beside_the_old_key_which_still_reaches_its_rows(settings):
    verify_pseudonym_key(keyed(settings, REAL_KEY), "serving")
    rotated = verify_pseudonym_key(keyed(settings, "2:the new secret"), "serving")
    assert sorted(rotated.recorded) == [1, 2]
    assert rotated.note is not None and "key versions [1]" in rotated.note  # which older key applies

    old = verify_pseudonym_key(keyed(settings, f"1:{REAL_KEY}"), "erase")  # erasing rows made before the rotation
    assert old.note is not None and "older than this lake's newest, 2" in old.note
    with pytest.raises(PseudonymKeyRefused, match="version 1"):
        verify_pseudonym_key(keyed(settings, "1:not the old secret"), "erase")
    with pytest.raises(PseudonymKeyRefused, match="fingerprint"):
        verify_pseudonym_key(keyed(settings, "2:not the new secret"), "serving")
    assert sorted(r["key_version"] for r in rows(settings, PSEUDONYM_KEYS)) == [1, 2]


def test_an_older_version_the_lake_never_saw_is_refused(settings):
    verify_pseudonym_key(keyed(settings, "3:the current secret"), "serving")
    with pytest.raises(PseudonymKeyRefused, match=r"version 2 was never used .* key versions \[3\]"):
        verify_pseudonym_key(keyed(settings, "2:some secret"), "erase")
    assert [r["key_version"] for r in rows(settings, PSEUDONYM_KEYS)] == [3]


def test_two_commands_starting_at_once_on_a_new_lake_agree_on_one_key(settings):
    outcomes: dict[str, str] = {}
    start = threading.Barrier(4)

    def use(key: str) -> None:
        start.wait()
        try:
            verify_pseudonym_key(keyed(settings, key), "serving")
            outcomes[key] = "passed"
        except PseudonymKeyRefused:
            outcomes[key] = "refused"

    threads = [threading.Thread(target=use, args=(key,)) for key in ("key a", "key b", "key c", "key d")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    [row] = rows(settings, PSEUDONYM_KEYS)
    winner = next(key for key in outcomes if fingerprint(key) == row["fingerprint"])
    assert outcomes == {key: "passed" if key == winner else "refused" for key in outcomes}


@pytest.fixture
def lake_of_the_real_key(settings, monkeypatch):
    """A lake whose pseudonyms were made with ``REAL_KEY``, and a shell whose key is another (no .env)."""
    verify_pseudonym_key(keyed(settings, REAL_KEY), "serving")
    monkeypatch.setenv("LAMBDAREC_ROOT", str(settings.root))
    monkeypatch.setenv("LAMBDAREC_PSEUDONYM_KEY", "not the real key")
    return settings


@pytest.mark.parametrize("argv", [["erase", "alice"], ["erase"], ["erase", "alice", "--follow"]])
def test_erase_with_a_wrong_key_refuses_and_writes_no_request_and_no_receipt(lake_of_the_real_key, argv, capsys):
    assert main(argv) == 2
    assert "not the key this lake's pseudonyms were made with" in capsys.readouterr().err
    assert rows(lake_of_the_real_key, PRIVACY_REQUESTS) == [] and rows(lake_of_the_real_key, PRIVACY_RECEIPTS) == []


def test_the_erasure_job_refuses_a_wrong_key_before_it_starts_spark(lake_of_the_real_key):
    from batch import erasure

    with pytest.raises(PseudonymKeyRefused):
        erasure.main([])  # spark-submit's entry point (the privacy DAG's task)
    assert rows(lake_of_the_real_key, PRIVACY_RECEIPTS) == []


def test_export_and_import_refuse_a_wrong_key(lake_of_the_real_key, tmp_path, capsys):
    assert main(["export", "alice"]) == 2
    events = tmp_path / "events.csv"
    events.write_text("user_id,item_id,timestamp\nalice,i1,2026-01-01T00:00:00Z\n")
    assert main(["import", str(events)]) == 2
    assert capsys.readouterr().err.count("not the key this lake's pseudonyms were made with") == 2
    assert rows(lake_of_the_real_key, EVENTS) == []


def test_the_speed_job_refuses_a_wrong_key_before_it_starts_spark(lake_of_the_real_key):
    from lambdarec.settings import Settings
    from speed import job

    with pytest.raises(PseudonymKeyRefused):
        job.command(argparse.Namespace(available_now=True), Settings())


def test_serving_refuses_to_start_on_a_wrong_key(lake_of_the_real_key):
    from fastapi.testclient import TestClient

    from serving.app import create_app

    app = create_app(keyed(lake_of_the_real_key, "not the real key"))
    with pytest.raises(PseudonymKeyRefused), TestClient(app):
        pass  # the lifespan refuses before it starts a follower
