"""The speed view's bookkeeping: dedupe, replays, the recent window, popularity."""

from datetime import UTC, datetime

import pytest

from schemas.speed_updates import GLOBAL_SEGMENT, encode_interaction, encode_progress, encode_rows, timestamp, timestamp_us
from serving.views.speed.view import BadUpdate, SpeedView

pytestmark = pytest.mark.unit


def update(batch_id, events_version, rows, query_id="q1"):
    return {
        "kind": "user_interactions",
        "query_id": query_id,
        "batch_id": batch_id,
        "events_version": events_version,
        "rows": [
            {
                "user_id": user,
                "item_id": item,
                "event_type": "click",
                "weight": weight,
                "occurred_at": "2024-01-01T00:00:00+00:00",
                "event_id": event_id,
            }
            for user, item, weight, event_id in rows
        ],
    }


@pytest.fixture
def view(settings):
    return SpeedView(settings.model_copy(update={"speed_recent_items": 3}))


def test_applies_rows_per_user_with_their_events_version(view):
    assert view.apply(update(0, 5, [("u1", "a", 2.0, "e1"), ("u2", "b", 1.0, "e2")])) == 2
    assert [(i.item_id, i.weight, i.events_version) for i in view.interactions("u1")] == [("a", 2.0, 5)]
    assert view.interactions("nobody") == []
    position = view.position()
    assert (position["events_version"], position["batch_id"]) == (5, 0)
    assert position["age_ms"] is not None and position["age_ms"] >= 0


def test_replayed_update_and_repeated_event_ids_change_nothing(view):
    first = update(0, 5, [("u1", "a", 2.0, "e1")])
    view.apply(first, key=b"u1")
    assert view.apply(first, key=b"u1") == 0
    assert view.apply(update(1, 6, [("u1", "a", 2.0, "e1"), ("u1", "b", 1.0, "e2")])) == 1
    assert [i.event_id for i in view.interactions("u1")] == ["e1", "e2"]
    assert view.popular(5) == [("a", 2.0), ("b", 1.0)]


def test_same_batch_for_another_key_is_not_a_replay(view):
    view.apply(update(0, 5, [("u1", "a", 1.0, "e1")]), key=b"u1")
    assert view.apply(update(0, 5, [("u2", "a", 1.0, "e2")]), key=b"u2") == 1


def test_keeps_only_the_most_recent_interactions(view):
    rows = [("u1", f"i{n}", 1.0, f"e{n}") for n in range(5)]
    view.apply(update(0, 1, rows))
    assert [i.item_id for i in view.interactions("u1")] == ["i2", "i3", "i4"]


def test_a_late_copy_of_an_event_that_left_the_recent_list_counts_nothing(view):
    for n in range(5):  # recent list of 3: e0 and e1 are pushed out
        assert view.apply(interaction(f"e{n}", item=f"i{n}")) == 1
    popular = view.popular(10)
    assert view.apply(interaction("e0", item="i0", events_version=9)) == 0  # the events query's copy, later
    assert [i.item_id for i in view.interactions("u1")] == ["i2", "i3", "i4"] and view.popular(10) == popular


def test_popular_excludes_items(view):
    view.apply(update(0, 1, [("u1", "a", 5.0, "e1"), ("u2", "b", 3.0, "e2"), ("u3", "c", 1.0, "e3")]))
    assert view.popular(2, exclude={"a"}) == [("b", 3.0), ("c", 1.0)]


def test_position_tracks_the_newest_events_version(view):
    view.apply(update(4, 9, [("u1", "a", 1.0, "e1")]))
    view.apply(update(3, 8, [("u1", "b", 1.0, "e2")]))
    assert (view.position()["events_version"], view.position()["batch_id"]) == (9, 4)


def test_other_kinds_are_ignored_and_malformed_updates_rejected(view):
    assert view.apply({"kind": "item_features", "rows": []}) == 0
    with pytest.raises(BadUpdate, match="events_version"):
        view.apply({"kind": "user_interactions", "query_id": "q", "batch_id": 0, "rows": []})
    with pytest.raises(BadUpdate, match="JSON object"):
        view.apply(["not", "an", "object"])


HOUR = "2024-05-01T12:00:00.000000+00:00"


def minute(offset: int) -> str:
    """The contract's text for HOUR + ``offset`` minutes."""
    return timestamp(timestamp_us(HOUR) + offset * 60_000_000)


def trending(batch_id, at, item, weight, segment=GLOBAL_SEGMENT, query_id="q1", events=1):
    """An item_trending message: ``item``'s count in the minute starting ``at`` minutes after HOUR."""
    return {"kind": "item_trending", "query_id": query_id, "batch_id": batch_id, "rows": [
        {"segment_type": segment[0], "segment": segment[1], "window_start": minute(at), "window_end": minute(at + 1),
         "item_id": item, "events": events, "weight": weight}]}


def test_an_item_busy_all_hour_outranks_one_touched_once_in_the_last_minute(view):
    for n, at in enumerate(range(0, 40)):  # 400 interactions over 40 minutes of the hour
        view.apply(trending(n, at, "busy", 10.0, events=10))
    view.apply(trending(50, 59, "fresh", 3.0))  # once, in the newest minute
    ranked, window_start = view.trending(k=5)
    assert ranked == [("busy", 400.0), ("fresh", 3.0)]
    assert window_start == HOUR  # the hour ending after minute 59, the same for every item


def test_trending_slides_with_the_newest_minute_and_drops_what_slid_out(view):
    view.apply(trending(0, 0, "a", 5.0))
    view.apply(trending(1, 30, "b", 3.0))
    view.apply(trending(2, 30, "a", 1.0, segment=("country", "DE")))
    assert view.trending(k=5) == ([("a", 5.0), ("b", 3.0)], minute(-29))  # the hour ending after minute 30
    view.apply(trending(3, 61, "c", 1.0))  # the window now starts at minute 2: a's minute 0 slid out
    assert view.trending(k=5) == ([("b", 3.0), ("c", 1.0)], minute(2))
    assert view.trending(("country", "DE"), k=5) == ([("a", 1.0)], minute(2))  # one window for every segment
    view.apply(trending(4, 0, "late", 9.0))  # a minute older than the window: ignored
    view.apply(trending(5, 95, "d", 1.0))
    assert view.trending(k=5) == ([("c", 1.0), ("d", 1.0)], minute(36))
    assert view.trending(("country", "DE"), k=5) == ([], None)  # nothing in DE this hour
    assert view.trending(("device", "ios"), k=5) == ([], None)


def test_trending_keeps_the_newest_batch_per_item_and_minute(view):
    view.apply(trending(2, 10, "b", 3.0))
    view.apply(trending(1, 10, "b", 9.0))  # an older batch arriving late changes nothing
    view.apply(trending(3, 11, "b", 1.0))
    view.apply(trending(0, 10, "a", 2.0))
    assert view.trending(k=5, exclude={"x"}) == ([("b", 4.0), ("a", 2.0)], minute(-48))
    view.apply(trending(0, 10, "b", 0.5, query_id="q2"))  # a restarted job's row replaces it
    assert view.trending(k=1) == ([("a", 2.0)], minute(-48))
    assert view.trending(k=5, exclude={"a"})[0] == [("b", 1.5)]


def test_profiles_and_progress(view):
    features = {"kind": "user_features", "query_id": "q1", "batch_id": 2,
                "rows": [{"user_id": "u1", "country": "DE", "device": "ios"}]}
    view.apply(features)
    view.apply({**features, "batch_id": 1, "rows": [{"user_id": "u1", "country": "FR"}]})
    assert view.profile("u1")["country"] == "DE" and view.profile("u2") is None
    view.apply({"kind": "progress", "query_id": "q1", "batch_id": 5, "progress": {"batch_id": 5, "source_lag": 7}})
    assert view.position()["speed_job_lag_records"] == 7


def test_batches_loaded_from_a_table_are_skipped_on_the_topic(view):
    rows = [{"user_id": "u1", "item_id": "a", "event_type": "click", "weight": 2.0,
             "occurred_at": "2024-01-01T00:00:00+00:00", "event_id": "e1", "events_version": 5}]
    assert view.load_batch("user_interactions", "q1", 0, rows) == 1
    assert view.apply(update(0, 5, [("u1", "b", 1.0, "e9")])) == 0  # same batch: already in the table
    assert view.apply(update(1, 6, [("u1", "b", 1.0, "e2")])) == 1
    assert [i.item_id for i in view.interactions("u1")] == ["a", "b"]
    assert view.position()["events_version"] == 6


def test_malformed_rows_of_the_new_kinds_are_rejected(view):
    with pytest.raises(BadUpdate, match="segment_type"):
        view.apply({"kind": "item_trending", "query_id": "q", "batch_id": 0, "rows": [{"item_id": "a"}]})
    with pytest.raises(BadUpdate, match="progress"):
        view.apply({"kind": "progress", "query_id": "q", "batch_id": 0})


def interaction(event_id, user="u1", item="a", weight=2.0, events_version=None):
    message = {"kind": "interaction", "event_id": event_id, "user_id": user, "item_id": item,
               "event_type": "click", "weight": weight, "occurred_at": "2024-01-01T00:00:00.000000+00:00"}
    return message if events_version is None else {**message, "events_version": events_version}


def test_a_realtime_interaction_counts_once_and_takes_its_version_when_it_lands(view):
    assert view.apply(interaction("e1")) == 1
    assert view.apply(interaction("e1")) == 0  # at-least-once repeat from the real-time path
    assert [(i.item_id, i.events_version) for i in view.interactions("u1")] == [("a", None)]
    assert view.apply(interaction("e1", events_version=7)) == 0  # the events query's copy, after its commit
    assert [(i.item_id, i.weight, i.events_version) for i in view.interactions("u1")] == [("a", 2.0, 7)]
    assert view.position()["events_version"] == 7
    assert view.popular(5) == [("a", 2.0)]  # its weight counted once


def test_a_versioned_copy_first_makes_the_realtime_copy_a_no_op(view):
    assert view.apply(interaction("e2", events_version=3)) == 1
    assert view.apply(interaction("e2")) == 0
    assert [i.events_version for i in view.interactions("u1")] == [3]


def test_a_malformed_interaction_is_a_bad_update(view):
    with pytest.raises(BadUpdate):
        view.apply({"kind": "interaction", "event_id": "e3", "user_id": "u1"})
    with pytest.raises(BadUpdate):
        view.apply(interaction("e4", weight=float("nan")))


def test_the_view_takes_the_bytes_the_contract_encodes(view):
    at = datetime(2024, 5, 1, 12, 30, 15, 250, tzinfo=UTC)
    event = {"event_id": "e1", "user_id": "u1", "item_id": "a", "event_type": "click", "weight": 2.0,
             "occurred_at": at, "country": "DE", "device": None}
    assert view.apply(encode_interaction(event)) == 1
    assert view.apply(encode_interaction(event, events_version=4), key=b"u1") == 0
    assert [(i.occurred_at, i.events_version) for i in view.interactions("u1")] == [
        ("2024-05-01T12:30:15.000250+00:00", 4)]
    rows = [{"segment_type": "device", "segment": "ios", "window_start": at.replace(second=0, microsecond=0),
             "window_end": at.replace(minute=31, second=0, microsecond=0), "item_id": "a", "events": 2,
             "weight": 3.0, "query_id": "ignored", "batch_id": 99}]
    assert view.apply(encode_rows("item_trending", "q1", 0, rows), key=b"0") == 1
    assert view.trending(("device", "ios")) == ([("a", 3.0)], "2024-05-01T11:31:00.000000+00:00")
    progress = {"batch_id": 3, "source_lag": 5, "recorded_at": at}
    assert view.apply(encode_progress("q1", 3, progress)) == 1
    assert view.position()["speed_job_lag_records"] == 5


def test_records_that_break_the_contract_are_bad_updates(view):
    for record in (b"{broken", b"\xff", b"null", b'{"kind": "interaction", "event_id": "e1"}',
                   b'{"kind": "item_trending", "query_id": "q", "batch_id": 1.5, "rows": []}',
                   b'{"kind": "interaction", "event_id": "e", "user_id": "u", "item_id": "i", "event_type": "view",'
                   b' "weight": NaN, "occurred_at": "2024-05-01T12:00:00Z"}',
                   b'{"kind": "interaction", "event_id": "e", "user_id": "u", "item_id": "i", "event_type": "view",'
                   b' "weight": 1, "occurred_at": "yesterday"}'):
        with pytest.raises(BadUpdate):
            view.apply(record)
    assert view.apply(b'{"kind": "something_newer"}') == 0  # a newer producer's kind: ignored


def test_minutes_that_slid_out_are_dropped_from_segments_nobody_asks_for(view):
    for n in range(30):
        view.apply(trending(n, 10 * n, f"i{n}", 1.0, segment=("device", f"d{n}")))
    segments = view._trending.segments
    assert len(segments) <= 7 and ("device", "d29") in segments  # about an hour of minutes, not five


def test_forget_drops_a_user_at_once_and_ignores_their_older_updates_after(view):
    view.apply(update(0, 5, [("u1", "a", 2.0, "e1"), ("u2", "a", 1.0, "e2")]))
    view.apply(encode_rows("user_features", "q2", 0, [{"user_id": "u1", "last_seen": "2024-01-01T00:00:00+00:00",
                                                         "country": "DE"}]))
    assert view.profile("u1") is not None
    assert view.forget("u1", datetime(2024, 1, 2, tzinfo=UTC)) == 1
    assert view.interactions("u1") == [] and view.profile("u1") is None
    assert view.item_users(["a"]) == {"a": {"u2": 1.0}}
    # the speed job's second copy of an event sent before the request: ignored
    assert view.apply(update(1, 6, [("u1", "b", 1.0, "e3")])) == 0
    assert view.apply(encode_interaction({"user_id": "u1", "item_id": "c", "event_type": "click", "weight": 1.0,
                                          "occurred_at": "2024-01-01T12:00:00+00:00", "event_id": "e4"})) == 0
    # a later event is the user's new life
    view.apply(encode_interaction({"user_id": "u1", "item_id": "d", "event_type": "click", "weight": 1.0,
                                   "occurred_at": "2024-01-03T00:00:00+00:00", "event_id": "e5"}))
    assert [i.item_id for i in view.interactions("u1")] == ["d"]


def test_freshness_is_heard_once_per_event_from_its_acceptance(settings):
    heard: list[float] = []
    view = SpeedView(settings, on_fresh=heard.append)
    accepted = timestamp(timestamp_us(timestamp(datetime.now(UTC))) - 2_000_000)  # two seconds ago
    assert view.apply({**interaction("e1"), "received_at": accepted}) == 1
    assert view.apply({**interaction("e1", events_version=4), "received_at": accepted}) == 0  # a copy: not again
    assert view.apply(interaction("e2")) == 1  # no received_at (an older producer): nothing to hear
    assert len(heard) == 1 and 2.0 <= heard[0] < 10.0
