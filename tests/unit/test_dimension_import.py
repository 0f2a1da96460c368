"""``lambdarec import --kind catalogue|profiles``: files into item_catalogue and user_profiles, upserted."""

from __future__ import annotations

import argparse
import json

import pyarrow.compute as pc
import pytest

from batch.importer import command, import_dimension
from batch.interaction_files import BadImportFile
from lambdarec.lake import Lake
from lambdarec.pseudonym import pseudonymise
from schemas.tables import ITEM_CATALOGUE, USER_PROFILES

pytestmark = pytest.mark.unit


def u_item(*rows: tuple[str, str, list[int]]) -> str:
    lines = []
    for item, title, genres in rows:
        flags = ["1" if n in genres else "0" for n in range(19)]
        lines.append("|".join([item, title, "01-Jan-1995", "", "http://x", *flags]))
    return "\n".join(lines) + "\n"


def test_a_catalogue_csv_is_upserted_with_its_extra_columns_as_attributes(settings, tmp_path):
    path = tmp_path / "items.csv"
    path.write_text("item_id,title,category,price,available,brand\ni1,Shoe,shoes,9.5,true,acme\ni2,Sock,,,no,\n")
    assert import_dimension(path, settings, "catalogue")["inserted"] == 2
    path.write_text("item_id,title,category,price,available,brand\ni1,Shoe,shoes,11,false,acme\n")
    assert import_dimension(path, settings, "catalogue")["updated"] == 1
    rows = {r["item_id"]: r for r in Lake(settings).read_arrow(ITEM_CATALOGUE).to_pylist()}
    assert (rows["i1"]["price"], rows["i1"]["available"], dict(rows["i1"]["attributes"])) == (11.0, False,
                                                                                              {"brand": "acme"})
    assert (rows["i2"]["category"], rows["i2"]["price"], rows["i2"]["available"]) == (None, None, False)
    assert rows["i1"]["source_lsn"] is None
    # delta-rs's MERGE writes string_view columns; filtered reads still work
    assert Lake(settings).read_arrow(ITEM_CATALOGUE, filter=pc.field("item_id") == "i1").num_rows == 1


def test_movielens_files_are_recognised_and_user_ids_pseudonymised(settings, tmp_path):
    (tmp_path / "u.item").write_text(u_item(("1", "Toy Story (1995)", [3, 4, 5]), ("2", "GoldenEye (1995)", [1])))
    (tmp_path / "u.user").write_text("1|24|M|technician|85711\n2|53|F|other|94043\n")
    args = argparse.Namespace(format="auto", event_type="view", kind=None)
    assert command(argparse.Namespace(**vars(args), path=tmp_path / "u.item"), settings) == 0
    assert command(argparse.Namespace(**vars(args), path=tmp_path / "u.user"), settings) == 0
    lake = Lake(settings)
    items = {r["item_id"]: r for r in lake.read_arrow(ITEM_CATALOGUE).to_pylist()}
    assert items["1"]["category"] == "Animation"
    assert dict(items["1"]["attributes"]) == {"genres": "Animation|Children's|Comedy", "year": "1995"}
    users = {r["user_id"]: r["age_band"] for r in lake.read_arrow(USER_PROFILES).to_pylist()}
    assert users == {pseudonymise("1", settings.pseudonym_key): "18-24", pseudonymise("2", settings.pseudonym_key): "45-54"}


def test_json_profiles_and_clear_errors(settings, tmp_path):
    good = tmp_path / "users.json"
    good.write_text(json.dumps([{"user_id": "alice", "country": "DE", "age": 30, "signup_date": "2024-02-29"}]))
    assert import_dimension(good, settings, "profiles")["inserted"] == 1
    [row] = Lake(settings).read_arrow(USER_PROFILES).to_pylist()
    assert (row["country"], row["age_band"], str(row["signup_date"])) == ("DE", "25-34", "2024-02-29")
    bad = tmp_path / "items.csv"
    for text, message in (("item_id,title,price\ni1,Shoe,cheap\n", "price 'cheap' is not a number"),
                          ("item_id,price\ni1,3\n", "item_id and title are required"),
                          ("item_id,title\ni1,A\ni1,B\n", "appears twice")):
        bad.write_text(text)
        with pytest.raises(BadImportFile, match=message):
            import_dimension(bad, settings, "catalogue")
    (tmp_path / "users.json").write_text('[{"user_id": "bob", "signup_date": "yesterday"}]')
    with pytest.raises(BadImportFile, match="signup_date"):
        import_dimension(tmp_path / "users.json", settings, "profiles")
