"""Hostile input against the whole running platform, as an attacker or a careless client would send it.

One platform for the module, started as a user starts it: `lambdarec up` (the embedded broker, the speed job
under spark-submit, serving) in keys mode on a temp root with a secret pseudonym key, over a history loaded
with `lambdarec import`. The tests run in file order, each one a kind of attack: routes without a key or with
the wrong scope, poison at the API, oversized heads and slow clients, poison written straight to the topics
the speed job and serving read, and a flood of new users and items. After each, ordinary events posted
afterwards still land in Delta exactly once; the last test trains, publishes and kills serving, which comes
back ready with the new model.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import secrets
import socket
import time
import uuid
from collections.abc import Iterator

import httpx
import pyarrow.compute as pc
import pytest
from kafka import KafkaProducer
from pydantic import SecretStr

from lambdarec import registry
from lambdarec.api_keys import SCOPES
from lambdarec.lake import Lake
from serving.metrics_text import samples
from lambdarec.processes import wait_for
from lambdarec.pseudonym import pseudonymise
from schemas.speed_updates import encode_interaction
from schemas.tables import DEAD_LETTER, EVENTS
from tests.support.platform import Platform, platform_on

pytestmark = [pytest.mark.integration, pytest.mark.spark]

VIEW_CAPS = {"user": 400, "item": 300}
OPEN_ROUTES = {"/health", "/ready", "/metrics", "/dashboard", "/dashboard/data"}
HISTORY = {"events": 12000, "users": 300, "items": 400}


class Hostile:
    """The running platform, its keys, and the checks every test ends with."""

    def __init__(self, platform: Platform, tokens: dict[str, str]):
        self.platform = platform
        self.settings = platform.settings
        self.tokens = tokens
        self.api = httpx.Client(base_url=platform.api, timeout=30)

    def diagnosis(self) -> str:
        return self.platform.diagnosis()

    def auth(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[name]}"}

    def pseudonym(self, user: str) -> str:
        return pseudonymise(user, self.settings.pseudonym_key)

    def post_events(self, events: list[dict]) -> list[str]:
        """POST ``events`` in batches of 500 with the backend's key; the ids accepted."""
        accepted: list[str] = []
        for start in range(0, len(events), 500):
            response = self.api.post("/v1/events/batch", json=events[start:start + 500], headers=self.auth("backend"))
            assert response.status_code == 202, response.text
            accepted += response.json()["accepted"]
        return accepted

    def still_lands(self, label: str) -> None:
        """Ordinary events posted now reach Delta ``events``, each once: the pipeline was not wedged."""
        ids = self.post_events(events(20, users=5, items=20, prefix=f"after-{label}"))
        lake = Lake(self.settings)

        def landed() -> list[str] | None:
            found = lake.read_arrow(EVENTS, filter=pc.field("event_id").isin(ids)).column("event_id").to_pylist()
            return found if len(set(found)) == len(ids) else None

        found = wait_for(landed, 240, f"the events posted after {label} to land", interval_s=1.0)
        assert len(found) == len(ids), f"duplicates after {label}"

    def metric(self, name: str, **labels: str) -> float:
        """The sum of ``name``'s samples that carry ``labels``, in serving's /metrics."""
        found = samples(self.api.get("/metrics").text)
        return sum(value for (sample, sample_labels), value in found.items()
                   if sample == name and set(labels.items()) <= set(sample_labels))


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def event(user: str, item: str, **overrides) -> dict:
    return {"event_id": str(uuid.uuid4()), "user_id": user, "item_id": item, "event_type": "click",
            "occurred_at": now(), "context": {"device": "web", "country": "DE"}, **overrides}


def events(count: int, users: int, items: int, prefix: str) -> list[dict]:
    return [event(f"{prefix}-u{n % users}", f"{prefix}-i{n % items}") for n in range(count)]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> Iterator[Hostile]:
    tmp = tmp_path_factory.mktemp("hostile")
    with platform_on(tmp) as platform:
        key = secrets.token_urlsafe(32)
        platform.env.update({
            "LAMBDAREC_AUTH": "keys",
            "LAMBDAREC_PSEUDONYM_KEY": key,
            "LAMBDAREC_ALLOW_DEVELOPMENT_KEY": "false",
            "LAMBDAREC_SPEED_VIEW_MAX_USERS": str(VIEW_CAPS["user"]),
            "LAMBDAREC_SPEED_VIEW_MAX_ITEMS": str(VIEW_CAPS["item"]),
            "LAMBDAREC_SERVE_MAX_CONNECTIONS": "64",
            "LAMBDAREC_SERVE_HEADER_TIMEOUT_S": "3",
            "LAMBDAREC_MODEL_FAMILIES": '["als"]', "LAMBDAREC_TUNE_TRIALS": "0",
            "LAMBDAREC_ALS_RANK": "16", "LAMBDAREC_ALS_ITERATIONS": "5",
            "LAMBDAREC_SPARK_SHUFFLE_PARTITIONS": "2", "LAMBDAREC_SPEED_FEATURES_TRIGGER_MS": "2000",
        })
        platform.settings = platform.settings.model_copy(update={"pseudonym_key": SecretStr(key), "auth": "keys"})
        history = tmp / "history.jsonl"
        made = platform.run("generate", "--out", str(history), "--events", str(HISTORY["events"]),
                            "--users", str(HISTORY["users"]), "--items", str(HISTORY["items"]), "--days", "3")
        assert made.returncode == 0, made.stdout + made.stderr
        imported = platform.run("import", str(history), timeout_s=600)
        assert imported.returncode == 0, imported.stdout + imported.stderr
        tokens = {name: platform.create_key(name, *scopes) for name, scopes in
                  {"backend": ("ingest", "consent", "read"), "operator": ("admin",)}.items()}
        platform.up("--without", "airflow,cdc,prometheus")
        hostile = Hostile(platform, tokens)
        try:
            yield hostile
        finally:
            hostile.api.close()


def lacking(scope: str) -> str:
    """A key of the module's that lacks ``scope``."""
    return "operator" if scope != "admin" else "backend"


def request_for(path: str, method: str) -> dict:
    """Arguments that make a well-formed request of the operation (so only the credential can fail it)."""
    url = path.replace("{user_id}", "someone").replace("{item_id}", "some-item").replace("{request_id}", "some-id")
    body = {"/v1/events": event("someone", "some-item"), "/v1/events/batch": [event("someone", "some-item")],
            "/v1/users/{user_id}/consent": {"granted": True}}.get(path)
    return {"method": method.upper(), "url": url, **({"json": body} if body is not None else {})}


def test_every_route_that_changes_or_reveals_a_users_data_refuses_no_key_and_the_wrong_scope(hostile):
    document = hostile.api.get("/openapi.json").json()
    protected, open_ = [], []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            (protected if operation.get("security") else open_).append((path, method))
    assert {path for path, _ in open_} <= OPEN_ROUTES | {"/dashboard/assets/{name}"}, open_
    assert len(protected) >= 10, protected
    for path, method in protected:
        with timed_out_names(method, path):
            refuses_without_the_scope_and_accepts_with_it(hostile, path, method)
    # the unversioned twins of the routes need the same scopes
    assert hostile.api.post("/events", json=event("someone", "x")).status_code == 401
    assert hostile.api.get("/users/someone/recommendations", params={"explain": "true"}).status_code == 401
    hostile.still_lands("credentials")


@contextlib.contextmanager
def timed_out_names(method: str, path: str) -> Iterator[None]:
    try:
        yield
    except httpx.TimeoutException as exc:
        pytest.fail(f"{method.upper()} {path} got no answer in time: {exc!r}")


def refuses_without_the_scope_and_accepts_with_it(hostile: Hostile, path: str, method: str) -> None:
    request = request_for(path, method)
    missing = hostile.api.request(**request)
    assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Bearer"), (path, missing.text)
    scope = missing.json()["required_scope"]
    assert scope in SCOPES
    forged = hostile.api.request(**request, headers={"Authorization": f"Bearer lrk_{'0' * 16}_{'x' * 43}"})
    assert forged.status_code == 401, (path, forged.text)
    wrong = hostile.api.request(**request, headers=hostile.auth(lacking(scope)))
    assert wrong.status_code == 403 and wrong.json()["required_scope"] == scope, (path, wrong.text)
    right = hostile.api.request(**request, headers=hostile.auth(lacking("admin") if scope != "admin" else "operator"))
    assert right.status_code not in (401, 403), (path, right.text)


POISON_AT_THE_EDGE = [
    ("value", {"event_type": "purchase", "value": 1.7e308}),
    ("value", {"event_type": "purchase", "value": -1.7e308}),
    ("item_id", {"item_id": "nul\x00item"}),
    ("item_id", {"item_id": "\x1b[2J\x1b[31mred"}),
    ("item_id", {"item_id": "cafe\u0301"}),  # not NFC
    ("user_id", {"user_id": "bidi\u202eevil"}),
    ("occurred_at", {"occurred_at": "0001-01-01T00:00:00+00:00"}),
    ("occurred_at", {"occurred_at": "9999-12-31T23:59:59+00:00"}),
]


@pytest.mark.parametrize("field, overrides", POISON_AT_THE_EDGE, ids=[repr(o)[:40] for _, o in POISON_AT_THE_EDGE])
def test_poison_events_at_the_api_get_a_422_naming_the_field(hostile, field, overrides):
    single = hostile.api.post("/v1/events", json=event("edge-user", "edge-item", **overrides), headers=hostile.auth("backend"))
    assert single.status_code == 422 and any(error["loc"][-1] == field for error in single.json()["detail"]), single.text
    batch = [event("edge-user", "edge-item"), event("edge-user", "edge-item", **overrides)]
    many = hostile.api.post("/v1/events/batch", json=batch, headers=hostile.auth("backend"))
    assert many.status_code == 422 and any(error["loc"][:2] == ["body", 1] and error["loc"][-1] == field
                                           for error in many.json()["detail"]), many.text


def test_deep_nesting_and_non_finite_numbers_are_422_not_500(hostile):
    depth = 5000
    deep = json.dumps(event("edge-user", "edge-item")).replace(
        '"context": {', '"context": {"note": ' + '{"x": ' * depth + "{}" + "}" * depth + ", ", 1)
    for path, body in (("/v1/events", deep), ("/v1/events/batch", f"[{deep}]")):
        answer = hostile.api.post(path, content=body, headers={**hostile.auth("backend"), "Content-Type": "application/json"})
        assert answer.status_code == 422, (path, answer.text[:300])
    nan = json.dumps(event("edge-user", "edge-item", event_type="rating")).replace('"rating"', '"rating", "value": NaN')
    answer = hostile.api.post("/v1/events", content=nan, headers={**hostile.auth("backend"), "Content-Type": "application/json"})
    assert answer.status_code == 422, answer.text
    hostile.still_lands("poison at the API")


def dribble(host: str, port: int, count: int) -> list[socket.socket]:
    """``count`` connections that each send the start of a request head and then stall."""
    sockets = []
    for _ in range(count):
        conn = socket.create_connection((host, port), timeout=5)
        conn.sendall(b"GET /v1/trending HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        sockets.append(conn)
    return sockets


def test_oversized_heads_and_slow_clients_leave_health_answering(hostile):
    big = hostile.api.get("/health", headers={"X-Big": "a" * 20_000})
    assert big.status_code == 431, big.text
    long_url = hostile.api.get("/v1/trending?" + "a=1&" * 3000)
    assert long_url.status_code == 414, long_url.text
    host, port = "127.0.0.1", hostile.settings.serve_port
    slow = dribble(host, port, 150)  # over the connection cap of 64
    try:
        deadline = time.monotonic() + 8
        probes = 0
        while time.monotonic() < deadline:
            for conn in slow[:20]:
                with contextlib.suppress(OSError):  # cut by serving: that is the point
                    conn.sendall(b"a")
            started = time.monotonic()
            assert httpx.get(f"{hostile.platform.api}/health", timeout=2).status_code == 200
            assert time.monotonic() - started < 2
            probes += 1
            time.sleep(0.2)  # pacing of the probes, not a synchronisation
        assert probes >= 10
    finally:
        for conn in slow:
            conn.close()
    hostile.still_lands("slow clients")


def straight_to_kafka(settings, topic: str, values: list[bytes], compression: str | None = None) -> None:
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap_servers, compression_type=compression)
    try:
        for value in values:
            producer.send(topic, value)
        producer.flush(30)
    finally:
        producer.close(5)


def topic_record(hostile: Hostile, **overrides) -> bytes:
    body = {"schema_version": 1, "event_id": str(uuid.uuid4()), "user_id": hostile.pseudonym("kafka-user"),
            "item_id": "kafka-item", "event_type": "click", "value": None, "occurred_at": now(), "received_at": now(),
            "context": {"device": "web", "country": "DE"}}
    body.update(overrides)
    return json.dumps(body).encode()


def test_poison_written_straight_to_the_events_topic_is_dead_lettered_and_nothing_else_is_lost(hostile):
    poison = {
        topic_record(hostile, event_type="purchase", value=1.7e308): "invalid_field:value",
        topic_record(hostile, item_id="nul\x00item"): "invalid_field:item_id",
        topic_record(hostile, item_id="\x1b[2Jclear"): "invalid_field:item_id",
        topic_record(hostile, occurred_at="0001-01-01T00:00:00+00:00"): "occurred_at_too_old",
        topic_record(hostile, occurred_at="9999-12-31T23:59:59+00:00"): "occurred_at_in_future",
        topic_record(hostile, user_id="alice@example.com"): "raw_user_id",
        b'{"value": NaN, "event_id": "' + str(uuid.uuid4()).encode() + b'"}': "malformed_json",
        b"\xff\xfe not even text": "malformed_json",
    }
    lake = Lake(hostile.settings)
    before = lake.read_arrow(DEAD_LETTER).num_rows if lake.exists(DEAD_LETTER) else 0
    straight_to_kafka(hostile.settings, hostile.settings.topic_events, list(poison))

    def dead() -> list[dict] | None:
        rows = lake.read_arrow(DEAD_LETTER).to_pylist() if lake.exists(DEAD_LETTER) else []
        return rows if len(rows) >= before + len(poison) else None

    rows = wait_for(dead, 240, "the poison to be dead-lettered", interval_s=1.0)
    for raw, reason in poison.items():
        event_id = json.loads(raw)["event_id"].encode() if raw.startswith(b'{"schema_version"') else None
        [found] = [row for row in rows if bytes(row["raw"]) == raw or (event_id and event_id in bytes(row["raw"]))]
        assert found["reason"].startswith(reason), (raw[:60], found["reason"])
        assert b"alice@example.com" not in bytes(found["raw"])  # a raw id is redacted even in a dead letter
    hostile.still_lands("poison on the events topic")


def test_what_serving_follows_cannot_stop_it(hostile):
    """Garbage on speed-updates and the consent topic, and valid updates in every codec a producer may use."""
    settings = hostile.settings
    straight_to_kafka(settings, settings.topic_speed_updates, [b"\x00garbage", b'{"kind": "interaction"}', b"[]"])
    straight_to_kafka(settings, settings.topic_consent, [b"not a consent change"])
    for codec in ("gzip", "snappy", "lz4", "zstd"):
        user = f"codec-{codec}"
        update = encode_interaction({"event_id": str(uuid.uuid4()), "user_id": hostile.pseudonym(user),
                                     "item_id": "codec-item", "event_type": "click", "weight": 2.0,
                                     "occurred_at": now(), "country": "DE", "device": "web", "received_at": now()})
        straight_to_kafka(settings, settings.topic_speed_updates, [update], compression=codec)

        def applied(user=user) -> bool:
            answer = hostile.api.get(f"/v1/users/{user}/recommendations", headers=hostile.auth("backend"))
            return answer.status_code == 200 and answer.json()["fresh_interactions"] >= 1

        wait_for(applied, 60, f"serving to apply an update compressed with {codec}", interval_s=0.5)
    assert hostile.api.get("/ready").json()["speed_view"]["following"]
    hostile.still_lands("garbage on the topics serving follows")


def test_a_flood_of_new_users_and_items_stays_within_the_view_caps(hostile):
    flood = events(2000, users=1000, items=800, prefix=f"flood-{uuid.uuid4().hex[:6]}")  # past the caps of 400, 300
    accepted = hostile.post_events(flood)
    assert len(accepted) == len(flood)
    wait_for(lambda: hostile.metric("lambdarec_speed_view_evictions_total", entry="user") > 0, 120,
             "the speed view to evict users past its cap", interval_s=1.0)
    for entry, cap in VIEW_CAPS.items():
        held = hostile.metric("lambdarec_speed_view_entries", entry=entry)
        assert 0 < held <= cap, (entry, held)
    hostile.still_lands("a flood of users and items")


def test_after_it_all_a_model_publishes_and_a_killed_serving_comes_back_ready(hostile):
    platform = hostile.platform
    trained = platform.run("train", timeout_s=900)
    assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-3000:]
    published = registry.latest_published(Lake(hostile.settings))
    assert published is not None
    version = published["model_version"]
    assert all(math.isfinite(value) for value in published["metrics"].values() if isinstance(value, float))

    def serving_model() -> int | None:
        answer = hostile.api.get("/ready")
        return answer.json().get("model_version") if answer.status_code == 200 else None

    wait_for(lambda: serving_model() == version, 120, "serving to load the new model", interval_s=1.0)
    platform.kill_9("serving")
    wait_for(lambda: serving_model() == version, 300, "a restarted serving to be ready with the model", interval_s=1.0)
    user = "user-0"  # a user of the imported history
    answer = hostile.api.get(f"/v1/users/{user}/recommendations", headers=hostile.auth("backend"))
    assert answer.status_code == 200 and answer.json()["model_version"] == version, answer.text
    hostile.still_lands("a publish and a serving restart")
