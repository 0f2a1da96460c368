"""``lambdarec generate --api``: events POSTed to the real serving API land on the real broker."""

from __future__ import annotations

import argparse
import json

import pytest

from deploy import generator
from lambdarec.settings import Settings
from tests.support.serving import read_topic, serving

pytestmark = pytest.mark.integration


def generate(settings: Settings, api: str, *extra: str) -> int:
    parser = argparse.ArgumentParser()
    generator.add_arguments(parser)
    args = parser.parse_args(
        ["--events", "1200", "--users", "40", "--items", "80", "--clusters", "4", "--api", api, *extra]
    )
    return generator.command(args, settings)


def test_generated_events_are_all_accepted_and_on_the_topic(broker_settings, capsys):
    with serving(broker_settings) as client:
        assert generate(broker_settings, str(client.base_url)) == 0
    assert json.loads(capsys.readouterr().out)["events"] == 1200
    records = read_topic(broker_settings, broker_settings.topic_events, 1200)
    assert len({json.loads(r.value)["event_id"] for r in records}) == 1200


def test_a_refused_batch_stops_with_the_servers_answer(broker_settings):
    oversized = str(broker_settings.ingest_max_batch + 1)
    with serving(broker_settings) as client, pytest.raises(RuntimeError, match="answered 413"):
        generate(broker_settings, str(client.base_url), "--batch-size", oversized)
