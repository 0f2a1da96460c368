"""A serving follower on a real broker: a record its handler cannot apply is logged and passed, and the
records after it are applied (from that offset it would otherwise fail for ever)."""

from __future__ import annotations

import pytest

from lambdarec.kafka_io import make_producer, send_all
from lambdarec.processes import wait_for
from serving.views.topic_follower import TopicFollower

pytestmark = pytest.mark.integration


def test_a_record_that_raises_is_passed_and_the_next_ones_are_applied(broker_settings):
    topic = broker_settings.topic_speed_updates
    applied: list[bytes] = []

    def on_record(record) -> None:
        if record.value == b"poison":
            raise KeyError("a handler's bug, not a bad update")
        applied.append(record.value)

    send_all(make_producer(broker_settings), topic, [(None, b"first"), (None, b"poison"), (None, b"after")])
    follower = TopicFollower(broker_settings.bootstrap_servers, topic, "test-follower", 3600, on_record)
    follower.start()
    try:
        wait_for(lambda: sum(follower.position()[0].values()) == 3 and follower.position()[1] == 0, 60,
                 "the follower to pass all three records", interval_s=0.1)
        assert sorted(applied) == [b"after", b"first"] and follower.skipped == 1 and follower.following
    finally:
        follower.stop()
