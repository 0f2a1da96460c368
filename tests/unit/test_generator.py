"""The synthetic generator: reproducible, schema-valid, and with the structure it promises."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from deploy import generator
from deploy.generator import World, bronze_table, generate_events
from schemas.events import Event
from schemas.tables import EVENTS

pytestmark = pytest.mark.unit

END = datetime(2025, 3, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def world() -> World:
    return World(n_users=300, n_items=600, n_clusters=10, seed=11)


@pytest.fixture(scope="module")
def events(world: World) -> list[dict]:
    return list(world.events(5000, affinity=0.85, days=7, end=END))


def test_same_seed_same_events_and_other_seed_differs():
    first = generate_events(500, 50, 100, 5, seed=1, end=END)
    assert first == generate_events(500, 50, 100, 5, seed=1, end=END)
    assert first != generate_events(500, 50, 100, 5, seed=2, end=END)


def test_every_event_is_a_valid_event(events):
    for event in events:
        Event.model_validate(event)
    assert len({e["event_id"] for e in events}) == len(events)
    assert all(e["user_id"].startswith("user-") and e["item_id"].startswith("item-") for e in events)
    assert all(len(e["context"]["country"]) == 2 for e in events)


def test_most_events_stay_in_the_users_cluster(world, events):
    own = [world.user_cluster(e["user_id"]) == world.item_cluster(e["item_id"]) for e in events]
    # affinity 0.85 plus the stray events that land in the own cluster by chance (1/10 of 0.15)
    assert 0.83 <= np.mean(own) <= 0.90
    per_user = Counter(e["user_id"] for e in events)
    in_own = Counter(e["user_id"] for e, hit in zip(events, own, strict=True) if hit)
    active = [u for u, n in per_user.items() if n >= 5]
    assert np.mean([in_own[u] / per_user[u] > 0.5 for u in active]) > 0.95


def test_item_popularity_is_skewed(events):
    counts = np.array(sorted(Counter(e["item_id"] for e in events).values(), reverse=True))
    top_tenth = counts[: 60].sum() / counts.sum()  # the top 10% of 600 items
    assert top_tenth > 0.4
    assert counts[0] > 10 * np.median(counts)


def test_event_types_and_rating_values(events):
    types = Counter(e["event_type"] for e in events)
    assert types.most_common(1)[0][0] == "view"
    assert types["purchase"] / len(events) < 0.06
    ratings = [e["value"] for e in events if e["event_type"] == "rating"]
    assert ratings and set(ratings) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    assert all(e["value"] is None for e in events if e["event_type"] != "rating")


def test_times_fall_in_the_window_and_increase_per_user(events):
    times = [datetime.fromisoformat(e["occurred_at"]) for e in events]
    assert min(times) >= END - timedelta(days=7) and max(times) < END
    last: dict[str, datetime] = {}
    for event, at in zip(events, times, strict=True):
        assert at > last.get(event["user_id"], datetime.min.replace(tzinfo=UTC))
        last[event["user_id"]] = at


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda w: w.user_cluster("user-300"), "not a valid user id"),
        (lambda w: w.item_cluster("user-1"), "not a valid item id"),
        (lambda w: next(w.events(10, affinity=1.5)), "affinity"),
        (lambda w: next(w.events(10, end=datetime(2025, 1, 1))), "timezone-aware"),
    ],
)
def test_bad_input_is_refused_clearly(world, call, message):
    with pytest.raises(ValueError, match=message):
        call(world)


def test_world_needs_items_for_every_cluster():
    with pytest.raises(ValueError, match="cannot exceed n_items"):
        World(n_users=5, n_items=3, n_clusters=4, seed=0)


def test_bronze_table_pseudonymises_and_matches_the_events_schema(settings, events):
    table = bronze_table(events[:50], settings)
    assert table.schema == EVENTS.schema
    assert not any(u.startswith("user-") for u in table.column("user_id").to_pylist())
    first = table.slice(0, 1).to_pylist()[0]
    # Device and country are lifted into columns and consent is dropped, as the speed layer does.
    assert (first["device"], first["country"]) == (events[0]["context"]["device"], events[0]["context"]["country"])
    assert first["context"] == []


def test_cli_writes_json_lines(tmp_path, settings, capsys):
    parser = argparse.ArgumentParser()
    generator.add_arguments(parser)
    out = tmp_path / "events.jsonl"
    args = parser.parse_args(
        ["--events", "120", "--users", "10", "--items", "20", "--clusters", "2", "--out", str(out)]
    )
    assert generator.command(args, settings) == 0
    lines = out.read_text().splitlines()
    assert len(lines) == 120
    Event.model_validate(json.loads(lines[0]))
    assert json.loads(capsys.readouterr().out)["events"] == 120


def test_cli_needs_exactly_one_target():
    parser = argparse.ArgumentParser()
    generator.add_arguments(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(["--events", "10"])
    with pytest.raises(SystemExit):
        parser.parse_args(["--out", "a.jsonl", "--api", "http://x"])


def test_interactions_are_the_events_draws_without_the_dicts():
    world = World(50, 80, 4, seed=9)
    events = list(world.events(400, end=datetime(2025, 3, 1, tzinfo=UTC)))
    users, items = world.interactions(400)
    assert [f"user-{u}" for u in users] == [e["user_id"] for e in events]
    assert [f"item-{i}" for i in items] == [e["item_id"] for e in events]


def test_a_batch_refused_for_now_is_sent_again_after_retry_after_and_other_refusals_are_not():
    """429 and 503 carry Retry-After: the same batch goes again. httpx's MockTransport stands in for serving here
    (the rate limit itself is tested against the real app in tests/unit/test_rate_limit.py)."""
    import httpx

    answers = [httpx.Response(429, headers={"Retry-After": "0"}), httpx.Response(503, headers={"Retry-After": "0"}),
               httpx.Response(202, json={"accepted": ["e1"], "dropped_no_consent": []})]
    bodies: list[bytes] = []

    def serve(request: httpx.Request) -> httpx.Response:
        bodies.append(request.content)
        return answers.pop(0)

    with httpx.Client(transport=httpx.MockTransport(serve)) as client:
        response = generator.post_batch(client, "http://serving/v1/events/batch", [{"event_id": "e1"}])
    assert response.status_code == 202 and len(bodies) == 3 and len(set(bodies)) == 1

    refused = [httpx.Response(422, json={"detail": []}), httpx.Response(202)]
    with httpx.Client(transport=httpx.MockTransport(lambda request: refused.pop(0))) as client:
        assert generator.post_batch(client, "http://serving/v1/events/batch", []).status_code == 422
    assert len(refused) == 1


def test_events_for_the_api_stay_within_the_age_it_accepts(settings, capsys):
    """The API refuses an occurred_at older than the events topic's retention (schemas.event_rules): events
    sent to it span half of that, and a span reaching past it stops before sending, pointing to the import."""
    assert generator.live_days(settings) == 0.5  # the default retention is a day
    assert generator.live_days(settings.model_copy(update={"topic_retention_ms": 30 * 86_400_000})) == 7.0
    assert generator.live_days(settings.model_copy(update={"topic_retention_ms": -1})) == 7.0
    parser = argparse.ArgumentParser()
    generator.add_arguments(parser)
    too_old = parser.parse_args(["--events", "10", "--days", "2", "--api", "http://127.0.0.1:9"])
    with pytest.raises(SystemExit, match="lambdarec import"):
        generator.command(too_old, settings)
