"""The speed view's bounds: users and items leave after the horizon or past the caps, trending rows past
theirs, every eviction is counted, and the cap's evictions are remembered for a read-back."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from schemas.speed_updates import GLOBAL_SEGMENT, timestamp
from serving.views.speed.state import EvictedUsers
from serving.views.speed.view import SpeedView

pytestmark = pytest.mark.unit

T0 = datetime(2024, 5, 1, 12, tzinfo=UTC)


def at(minutes: float) -> str:
    return timestamp(T0 + timedelta(minutes=minutes))


def event(event_id, user, item, minutes=0.0, events_version=None, weight=1.0):
    message = {"kind": "interaction", "event_id": event_id, "user_id": user, "item_id": item,
               "event_type": "click", "weight": weight, "occurred_at": at(minutes)}
    return message if events_version is None else {**message, "events_version": events_version}


@pytest.fixture
def evictions():
    return Counter()


def bounded(settings, evictions, **bounds) -> SpeedView:
    settings = settings.model_copy(update={"speed_view_horizon_s": 600, **bounds})
    return SpeedView(settings, on_evict=lambda entry, reason, n: evictions.update({(entry, reason): n}))


def test_users_and_items_older_than_the_horizon_leave_and_are_counted(settings, evictions):
    view = bounded(settings, evictions)
    view.apply(event("e1", "old", "a", minutes=0))
    view.apply(event("e2", "kept", "b", minutes=5))
    view.apply(event("e3", "new", "b", minutes=11))  # the view's now: 12:11, so 12:00 is past the 10-minute horizon
    assert view.interactions("old") == [] and [i.item_id for i in view.interactions("kept")] == ["b"]
    assert view.item_ids()[1] == ["b"] and view.item_users(["a"]) == {}
    assert evictions == {("user", "ttl"): 1}  # its item left with its only user
    assert view.sizes() == {"user": 2, "interaction": 2, "item": 1, "trending": 0, "recall_record": 0}
    assert not view.needs_recall("old", None)  # past the horizon a published model holds them, not the lake


def test_an_item_nobody_touched_within_the_horizon_leaves_though_its_users_stay(settings, evictions):
    view = bounded(settings, evictions)
    view.apply(event("e1", "u1", "a", minutes=0))
    view.apply(event("e2", "u1", "b", minutes=11))
    assert view.item_ids()[1] == ["b"] and [i.item_id for i in view.interactions("u1")] == ["a", "b"]
    assert evictions == {("item", "ttl"): 1}


def test_past_the_user_cap_the_least_recently_active_go(settings, evictions):
    view = bounded(settings, evictions, speed_view_max_users=2)
    view.apply(event("e1", "u1", "a"))
    view.apply(event("e2", "u2", "b"))
    view.apply(event("e3", "u1", "c", minutes=1))  # u1 active again: u2 is now the least recent
    view.apply(event("e4", "u3", "d", minutes=2))
    assert view.interactions("u2") == [] and len(view.interactions("u1")) == 2 and view.interactions("u3")
    assert evictions == {("user", "cap"): 1}
    assert view.item_users(["b"]) == {}  # u2's item left with its only user
    assert view.popular(10) == [("a", 1.0), ("c", 1.0), ("d", 1.0)]


def test_past_the_interaction_cap_users_go_until_it_holds(settings, evictions):
    view = bounded(settings, evictions, speed_view_max_interactions=3)
    for n, item in enumerate("abc"):
        view.apply(event(f"e{n}", "heavy", item))
    view.apply(event("e9", "light", "d", minutes=1))
    assert view.interactions("heavy") == [] and [i.item_id for i in view.interactions("light")] == ["d"]
    assert evictions[("user", "cap")] == 1 and view.sizes()["interaction"] == 1


def test_past_the_item_cap_the_least_recent_item_stops_being_folded_in(settings, evictions):
    view = bounded(settings, evictions, speed_view_max_items=2)
    view.apply(event("e1", "u1", "a"))
    view.apply(event("e2", "u2", "b"))
    view.apply(event("e3", "u3", "c", minutes=1))
    assert sorted(view.item_ids()[1]) == ["b", "c"] and view.item_users(["a"]) == {}
    assert [i.item_id for i in view.interactions("u1")] == ["a"]  # still u1's history: excluded, folded into u1
    assert evictions == {("item", "cap"): 1}
    view.apply(event("e4", "u1", "d", minutes=2))  # u1 is not hurt by having an evicted item
    assert [i.item_id for i in view.interactions("u1")] == ["a", "d"] and "a" not in view.item_ids()[1]


def test_a_far_future_event_does_not_move_the_clock_past_this_hosts(settings, evictions):
    view = bounded(settings, evictions)
    now = datetime.now(UTC)
    view.apply({**event("e1", "u1", "a"), "occurred_at": timestamp(now)})
    view.apply({**event("e2", "u2", "b"), "occurred_at": "9999-12-31T00:00:00.000000+00:00"})
    assert [i.item_id for i in view.interactions("u1")] == ["a"]  # the horizon runs on this host's time at most
    assert view.now_us() <= int((now + timedelta(minutes=6)).timestamp() * 1e6)


def test_trending_rows_past_their_cap_lose_the_lightest_items(settings, evictions):
    view = bounded(settings, evictions, speed_view_max_trending_rows=10)
    rows = [{"segment_type": GLOBAL_SEGMENT[0], "segment": GLOBAL_SEGMENT[1], "window_start": at(minute),
             "window_end": at(minute + 1), "item_id": f"i{n}", "events": 1, "weight": float(n)}
            for n in range(6) for minute in (0, 1)]  # 12 rows: 6 items x 2 minutes
    view.apply({"kind": "item_trending", "query_id": "q", "batch_id": 0, "rows": rows})
    assert view.sizes()["trending"] == 8 and evictions == {("trending", "cap"): 4}  # down to 9 at most: 2 items
    assert view.trending(k=10)[0] == [("i5", 10.0), ("i4", 8.0), ("i3", 6.0), ("i2", 4.0)]


def test_profiles_leave_with_their_user(settings, evictions):
    view = bounded(settings, evictions, speed_view_max_users=1)
    view.apply({"kind": "user_features", "query_id": "q", "batch_id": 0,
                "rows": [{"user_id": "u1", "last_seen": at(0), "country": "DE"}]})
    view.apply({"kind": "user_features", "query_id": "q", "batch_id": 1,
                "rows": [{"user_id": "u2", "last_seen": at(1), "country": "FR"}]})
    assert view.profile("u1") is None and view.profile("u2")["country"] == "FR"
    assert evictions == {("user", "cap"): 1}
    assert not view.needs_recall("u1", None)  # nothing of theirs to read back: no interactions were evicted


def test_the_cap_remembers_who_to_read_back_until_a_model_covers_them(settings, evictions):
    view = bounded(settings, evictions, speed_view_max_users=1, speed_view_recall_users=4)  # a generation a user
    view.apply(event("e1", "landed", "a", events_version=7))
    view.apply(event("e2", "other", "b", minutes=1, events_version=8))
    assert view.needs_recall("landed", None) and view.needs_recall("landed", 6)
    assert not view.needs_recall("landed", 7)  # a model trained on events version 7 holds e1
    view.apply(event("e3", "unlanded", "c", minutes=2))  # not in Delta yet: no model can be known to hold it
    view.apply(event("e4", "other", "d", minutes=3, events_version=9))
    assert view.needs_recall("unlanded", 9) and view.needs_recall("unlanded", 10**6)
    assert not view.needs_recall("other", 8)  # evicted by "unlanded" with e2 (version 8), then back with e4


def test_the_record_of_evicted_users_is_bounded_and_erasure_clears_it(settings, evictions):
    view = bounded(settings, evictions, speed_view_max_users=1, speed_view_recall_users=2)
    for n in range(4):
        view.apply(event(f"e{n}", f"u{n}", "a", minutes=n, events_version=n))
    assert [view.needs_recall(f"u{n}", None) for n in range(4)] == [False, True, True, False]
    assert evictions[("recall_record", "cap")] == 1 and view.sizes()["recall_record"] == 2
    view.forget("u1", T0 + timedelta(hours=1))
    assert not view.needs_recall("u1", None)


def test_a_restored_user_gets_their_newest_interactions_back_once(settings, evictions):
    view = bounded(settings, evictions, speed_view_max_users=1)
    view.apply(event("e1", "u1", "a", events_version=3))
    view.apply(event("e2", "u2", "b", minutes=1, events_version=3))
    rows = [{"user_id": "u1", "item_id": item, "event_type": "click", "weight": 2.0, "occurred_at": at(minute),
             "event_id": event_id, "events_version": 3} for event_id, item, minute in (("e1", "a", 0), ("e0", "z", -1))]
    assert view.restore("u1", rows) == 2
    assert [i.item_id for i in view.interactions("u1")] == ["z", "a"] and not view.needs_recall("u1", None)
    assert view.restore("u1", rows) == 0  # the same rows again change nothing


def test_the_record_is_a_few_bytes_a_user_and_misses_none_of_them():
    record = EvictedUsers(40_000)
    users = [f"u1_{n:032x}" for n in range(40_000)]
    for n, user in enumerate(users):
        assert record.add(user, needs_version=n // 1000) == 0
    assert all(record.needs(user, None) for user in users)  # no false negative: nobody evicted is missed
    strangers = sum(record.needs(f"stranger-{n}", None) for n in range(10_000))
    assert strangers < 300  # about 1% read needlessly
    assert sum(len(generation.bits) for generation in record._generations) < 70_000  # 1.6 bytes a user
    assert record.add("one-more", needs_version=40) == 10_000  # past the cap the oldest quarter goes
    assert not record.needs(users[0], None) and record.needs(users[10_000], None)
    assert record.needs(users[-1], 38) and not record.needs(users[-1], 39)  # a model on version 39 covers them
    assert len(record) == 1  # and their generations are let go: only the open one is left
