"""The read, reload and ingestion-limit routes over a model in a real Delta lake (credentials: test_serving_auth.py).

The app runs without its lifespan (no broker, no polling): the test loads the
model and applies speed updates to the app's services itself, as the followers would.
"""

import json
from datetime import UTC, datetime

import pyarrow as pa
import pytest
from fastapi.testclient import TestClient

from lambdarec.lake import Lake
from lambdarec.pseudonym import pseudonymise
from schemas.speed_updates import GLOBAL_SEGMENT, KIND_ITEM_TRENDING, encode_rows, segments
from schemas.tables import ITEM_CATALOGUE, USER_PROFILES
from serving.app import create_app
from tests.support.serving import INDEX_ON_AND_OFF, write_model

pytestmark = pytest.mark.unit

ITEMS = {
    **{f"a{n}": [1.0, 0.05 * n] for n in range(5)},
    **{f"b{n}": [0.05 * n, 1.0] for n in range(5)},
}


@pytest.fixture
def app(settings):
    settings = settings.model_copy(update={"ingest_rate_limit_per_s": 1.0,
                                           "ingest_rate_burst": 3})
    key = settings.pseudonym_key
    write_model(Lake(settings), 1, 10, ITEMS, {
        pseudonymise("alice", key): {"a0": 3.0, "a1": 2.0},
        pseudonymise("bob", key): {"b0": 4.0, "b1": 1.0, "a0": 1.0},
    })
    app = create_app(settings)
    assert app.state.services.model_store.reload()
    return app


@pytest.fixture
def client(app):
    return TestClient(app, raise_server_exceptions=False)


def apply(app, kind, rows, batch_id=0, **extra):
    app.state.services.speed_view.apply({"kind": kind, "query_id": "q", "batch_id": batch_id, "rows": rows, **extra})


def trending_row(segment_type, segment, item, weight):
    """``item``'s count in the minute 12:59 of 2024-05-01."""
    return {"segment_type": segment_type, "segment": segment, "window_start": "2024-05-01T12:59:00.000000+00:00",
            "window_end": "2024-05-01T13:00:00.000000+00:00", "item_id": item, "events": 1, "weight": weight}


def ids(body):
    return [item["item_id"] for item in body["items"]]


@pytest.mark.parametrize("path", ["/admin/reload", "/v1/admin/reload"])
def test_the_reload_answers_the_served_version(client, path):
    ok = client.post(path)  # open mode (tests/conftest.py): no credential checked
    assert ok.status_code == 200 and ok.json() == {"reloaded": False, "model_version": 1}


def test_ingestion_over_the_rate_limit_is_429_with_retry_after(client):
    def no_consent(n):  # dropped without a broker, but they still count against the limit
        return [{"event_id": f"00000000-0000-4000-8000-00000000000{i}", "user_id": "u", "item_id": "i",
                 "event_type": "click", "occurred_at": datetime.now(UTC).isoformat(),
                 "context": {"consent": False}} for i in range(n)]

    assert client.post("/v1/events/batch", json=no_consent(3)).status_code == 202
    refused = client.post("/v1/events", json=no_consent(1)[0])
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1 and "rate limit" in refused.json()["detail"]


def test_versioned_and_unversioned_paths_answer_the_same(client):
    v1 = client.get("/v1/users/alice/recommendations", params={"k": 3}).json()
    legacy = client.get("/users/alice/recommendations", params={"k": 3}).json()
    assert ids(v1) == ids(legacy) == ["a2", "a3", "a4"]
    assert v1["strategy"] == "model" and v1["model_version"] == 1 and "age_ms" in v1["speed_view"]


def test_explain_names_the_users_items_and_sums_to_the_score(client):
    body = client.get("/v1/users/bob/recommendations", params={"k": 3, "explain": True}).json()
    assert body["strategy"] == "model"
    for item in body["items"]:
        because = item["because"]
        assert because and {b["item_id"] for b in because} <= {"b0", "b1", "a0"}
        contributions = [b["contribution"] for b in because]
        assert contributions == sorted(contributions, reverse=True)
    # every rated item is listed for the top item here (3 rated, 3 shown) when all add to it
    top = body["items"][0]
    if len(top["because"]) == 3:
        assert sum(b["contribution"] for b in top["because"]) == pytest.approx(top["score"], rel=1e-4)
    plain = client.get("/v1/users/bob/recommendations", params={"k": 3}).json()
    assert ids(plain) == ids(body) and plain["items"][0]["because"] is None


@INDEX_ON_AND_OFF
def test_include_exclude_exclude_seen_and_attribute_filters(app, client, settings):
    rows = [{"item_id": f"a{n}", "attributes": [("colour", "red" if n % 2 else "blue")],
             "updated_at": datetime(2024, 1, 1, tzinfo=UTC)} for n in range(5)]
    rows.append({"item_id": "a2", "attributes": [("colour", "red")], "updated_at": datetime(2024, 2, 1, tzinfo=UTC)})
    Lake(settings).append_arrow(ITEM_CATALOGUE, pa.Table.from_pylist(rows, schema=ITEM_CATALOGUE.schema))
    assert app.state.services.attributes.reload()

    def get(**params):
        return ids(client.get("/v1/users/alice/recommendations", params={"k": 10, **params}).json())

    assert get(filter="colour:red") == ["a2", "a3"]  # a1 is red but seen; a2 turned red later
    assert get(filter=["colour:red", "colour:blue"]) == ["a2", "a3", "a4"]
    assert get(filter="colour:green") == []
    assert get(include=["b4", "a0", "a3"]) == ["a3", "b4"]
    assert "a2" not in get(exclude="a2")
    assert {"a0", "a1"} <= set(get(exclude_seen=False))
    bad = client.get("/v1/users/alice/recommendations", params={"filter": "no-colon"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "filter", 0]


@INDEX_ON_AND_OFF
def test_an_item_the_catalogue_marks_unavailable_is_never_recommended(app, client, settings):
    apply(app, "item_trending", [trending_row(*GLOBAL_SEGMENT, "a4", 9.0), trending_row(*GLOBAL_SEGMENT, "b3", 5.0)])
    lake = Lake(settings)

    def catalogue(available: bool, day: int) -> None:
        lake.append_arrow(ITEM_CATALOGUE, pa.Table.from_pylist(
            [{"item_id": "a3", "category": "hats", "available": available,
              "updated_at": datetime(2024, 1, day, tzinfo=UTC)}], schema=ITEM_CATALOGUE.schema))
        assert app.state.services.attributes.reload()

    def seen() -> set[str]:
        answers = [client.get("/v1/users/alice/recommendations", params={"k": 10}).json(),
                   client.get("/v1/items/a0/similar", params={"k": 10}).json(),
                   client.get("/v1/trending", params={"k": 10}).json(),
                   client.get("/v1/users/stranger/recommendations", params={"k": 10}).json()]
        return {item for answer in answers for item in ids(answer)}

    catalogue(True, 1)
    assert "a3" in seen()
    assert ids(client.get("/v1/users/alice/recommendations", params={"filter": "category:hats"}).json()) == ["a3"]
    catalogue(False, 2)
    assert "a3" not in seen() and "a4" in seen()
    catalogue(True, 3)  # back in stock
    assert "a3" in seen()


@INDEX_ON_AND_OFF
def test_a_new_item_with_only_attributes_is_offered_to_users_of_its_category(app, client, settings):
    day = datetime(2024, 1, 1, tzinfo=UTC)
    rows = [{"item_id": f"a{n}", "category": "alpha", "available": True, "updated_at": day} for n in range(5)]
    rows += [{"item_id": f"b{n}", "category": "beta", "available": True, "updated_at": day} for n in range(5)]
    rows += [{"item_id": "new-alpha", "category": "alpha", "available": True, "updated_at": day},
             {"item_id": "gone-alpha", "category": "alpha", "available": False, "updated_at": day},
             {"item_id": "new-beta", "category": "beta", "available": True, "updated_at": day}]
    Lake(settings).append_arrow(ITEM_CATALOGUE, pa.Table.from_pylist(rows, schema=ITEM_CATALOGUE.schema))
    assert app.state.services.attributes.reload()

    def items(user, **params):
        return client.get(f"/v1/users/{user}/recommendations", params={"k": 4, **params}).json()["items"]

    alice = items("alice")  # she used a0 and a1: alpha is her category
    assert len(alice) == 4 and alice[-1]["item_id"] == "new-alpha" and alice[-1]["via"] == "category:alpha"
    assert all(item["via"] is None for item in alice[:-1])
    assert [i["item_id"] for i in items("bob")][-1] == "new-beta"  # b0 weighs most in his history
    assert "new-alpha" not in [i["item_id"] for i in items("alice", exclude="new-alpha")]
    assert items("alice", explain=True)[-1]["because"] == []  # no item of hers scored it: it is new
    assert all(i["via"] is None for i in items("stranger"))  # no history, no category
    alice_key = pseudonymise("alice", settings.pseudonym_key)
    apply(app, "user_features", [{"user_id": alice_key, "last_seen": "2024-05-01T12:59:00.000000+00:00",
                                  "categories_24h": {"beta": 3, "alpha": 1}}])
    assert items("alice")[-1] == {**items("alice")[-1], "item_id": "new-beta", "via": "category:beta"}  # today: beta


def test_a_new_user_with_only_an_operational_profile_gets_their_country_s_trending(app, client, settings):
    apply(app, "item_trending", [trending_row(*GLOBAL_SEGMENT, "a4", 9.0), trending_row("country", "FR", "b1", 3.0)])
    dora = pseudonymise("dora", settings.pseudonym_key)
    Lake(settings).append_arrow(USER_PROFILES, pa.Table.from_pylist(
        [{"user_id": dora, "country": "FR", "age_band": "25-34", "updated_at": datetime(2024, 1, 1, tzinfo=UTC)}],
        schema=USER_PROFILES.schema))

    def get(user, **params):
        body = client.get(f"/v1/users/{user}/recommendations", params=params).json()
        return body["strategy"], body["segment"], ids(body)

    assert get("dora") == ("trending_global", None, ["a4"])  # before serving has read the profile
    assert app.state.services.profiles.reload()
    assert get("dora") == ("trending_segment", "country:FR", ["b1"])
    assert get("dora", country="DE") == ("trending_global", None, ["a4"])  # the request's segment first
    assert get("stranger") == ("trending_global", None, ["a4"])
    apply(app, "item_trending", [trending_row("age_band", "25-34", "b2", 4.0)], batch_id=1)
    assert get("dora", country="DE") == ("trending_segment", "age_band:25-34", ["b2"])  # her profile's age band
    trending = client.get("/v1/trending", params={"age_band": "25-34"}).json()
    assert (trending["segment"], ids(trending)) == ("age_band:25-34", ["b2"])


def test_cold_start_uses_the_segment_from_the_request_or_the_profile(app, client, settings):
    apply(app, "item_trending", [trending_row(*GLOBAL_SEGMENT, "b3", 5.0), trending_row(*GLOBAL_SEGMENT, "a4", 9.0),
                                 trending_row("country", "DE", "b2", 7.0), trending_row("device", "ios", "a3", 2.0)])
    carol = pseudonymise("carol", settings.pseudonym_key)
    apply(app, "user_features", [{"user_id": carol, "country": "DE", "device": "ios"}], batch_id=1)

    def get(user, **params):
        body = client.get(f"/v1/users/{user}/recommendations", params=params).json()
        return body["strategy"], body["segment"], ids(body)

    assert get("stranger") == ("trending_global", None, ["a4", "b3"])
    assert get("stranger", country="DE") == ("trending_segment", "country:DE", ["b2"])
    assert get("stranger", device="ios") == ("trending_segment", "device:ios", ["a3"])
    assert get("stranger", country="FR") == ("trending_global", None, ["a4", "b3"])
    assert get("carol") == ("trending_segment", "country:DE", ["b2"])  # from her profile

    trending = client.get("/v1/trending", params={"country": "DE"}).json()
    assert (trending["strategy"], trending["segment"], ids(trending)) == ("trending_segment", "country:DE", ["b2"])
    assert trending["window_start"] == "2024-05-01T12:00:00.000000+00:00"  # the hour ending 13:00
    assert ids(client.get("/v1/trending", params={"k": 1}).json()) == ["a4"]


class _State:
    """The processor's value state, held in a dict as Spark's state store would hold it."""

    def __init__(self, store, key):
        self.store, self.key = store, key

    def get(self):
        return self.store.get(self.key)

    def update(self, value):
        self.store[self.key] = value


def speed_trending_messages(settings, batches):
    """``item_trending`` messages as the features query makes them: ``FeatureProcessor`` (no Spark)
    folds each batch per entity (an item in each of its event's segments) and emits minute rows,
    pushed with the contract's encoder as the features sink pushes them."""
    from pyspark.sql import Row

    from speed.features import MINUTE_US
    from speed.stateful import OUTPUT_COLUMNS, SEP, FeatureProcessor

    processor = FeatureProcessor(settings.speed_session_gap_s, settings.speed_trending_window_s, 0)
    store: dict = {}
    for batch_id, events in enumerate(batches):
        by_entity: dict = {}
        for item, minute, weight, country, device in events:
            for segment in segments(country, device):
                by_entity.setdefault(SEP.join(["i", *segment, item]), []).append(Row(
                    occurred_at=T0_US + minute * MINUTE_US, event_type="click", weight=weight,
                    event_id=f"{item}-{minute}-{len(by_entity)}", country=country, device=device))
        rows = []
        for entity, entity_rows in by_entity.items():
            processor.state = _State(store, entity)
            rows += [dict(zip(OUTPUT_COLUMNS, out, strict=True)) for out in processor.handleInputRows((entity,), iter(entity_rows),
                                                                                     None)]
        yield encode_rows(KIND_ITEM_TRENDING, "features-q", batch_id, rows)


T0_US = 1_714_564_800 * 1_000_000  # 2024-05-01T12:00Z


def test_trending_from_the_speed_layers_rows_globally_per_country_and_per_device(app, client, settings):
    busy = [("b1", m, 1.0, "DE", "ios") for m in range(0, 40) for _ in range(10)]  # 400 in the hour
    batches = [busy, [("a1", 59, 3.0, "FR", "web")], [("a2", 59, 2.0, None, "ios"), ("b1", 10, 1.0, "DE", "ios")]]
    for message in speed_trending_messages(settings, batches):
        app.state.services.speed_view.apply(json.loads(message), key=b"0")  # as decoded JSON; bytes: contract test

    def trending(**params):
        body = client.get("/v1/trending", params=params).json()
        return body["strategy"], body["segment"], [(i["item_id"], i["score"]) for i in body["items"]], \
            body["window_start"]

    hour = "2024-05-01T12:00:00.000000+00:00"  # the hour ending after minute 59, for every segment
    assert trending() == ("trending_global", None, [("b1", 401.0), ("a1", 3.0), ("a2", 2.0)], hour)
    assert trending(country="DE") == ("trending_segment", "country:DE", [("b1", 401.0)], hour)
    assert trending(device="ios") == ("trending_segment", "device:ios", [("b1", 401.0), ("a2", 2.0)], hour)
    assert trending(device="web") == ("trending_segment", "device:web", [("a1", 3.0)], hour)
    assert trending(country="US")[:2] == ("trending_global", None)
    body = client.get("/v1/users/stranger/recommendations", params={"device": "web"}).json()
    assert (body["strategy"], ids(body)) == ("trending_segment", ["a1"])


def test_similar_items_and_unknown_items(client):
    body = client.get("/v1/items/a0/similar", params={"k": 3}).json()
    assert body["model_version"] == 1 and ids(body) == ["a1", "a2", "a3"]
    assert body["items"][0]["score"] <= 1.0 + 1e-6
    missing = client.get("/v1/items/nope/similar")
    assert missing.status_code == 404 and "nope" in missing.json()["detail"]


def test_a_bug_answers_500_without_a_stack_trace(app, client, monkeypatch):
    def broken():
        raise RuntimeError("secret internals")

    monkeypatch.setattr(app.state.services, "catalogue", broken)
    response = client.get("/v1/users/alice/recommendations")
    assert response.status_code == 500
    assert response.json() == {"detail": "internal server error"}
    assert "Traceback" not in response.text and "secret" not in response.text


def test_metrics_report_model_version_and_speed_view(app, client):
    apply(app, "progress", None, batch_id=3, progress={"batch_id": 3, "source_lag": 42})
    client.get("/v1/users/alice/recommendations")
    metrics = client.get("/metrics").text
    assert "lambdarec_model_version 1.0" in metrics
    assert "lambdarec_speed_job_lag_records 42.0" in metrics
    assert 'route="/v1/users/{user_id}/recommendations"' in metrics
