"""Test helpers for the lake: bronze ``events`` rows and small seeded lakes for training."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa

from deploy.generator import bronze_table, generate_events
from lambdarec.lake import Lake
from lambdarec.settings import Settings
from schemas.tables import EVENTS

NOW = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.timezone.utc)
END = dt.datetime(2025, 3, 1, tzinfo=dt.UTC)  # the generated events' end, for training tests


def event_rows(n: int, start: int = 0) -> pa.Table:
    """``n`` rows of the ``events`` table (event ids ``e<start>``...), over two event dates."""
    rows = [
        {
            "event_id": f"e{i}",
            "user_id": f"u{i % 3}",
            "item_id": f"i{i % 5}",
            "event_type": "view",
            "value": None,
            "occurred_at": NOW,
            "received_at": NOW,
            "device": "web",
            "country": "DE",
            "context": [("campaign", "x")],
            "kafka_topic": "events",
            "kafka_partition": 0,
            "kafka_offset": i,
            "event_date": (NOW + dt.timedelta(days=i % 2)).date(),
        }
        for i in range(start, start + n)
    ]
    return pa.Table.from_pylist(rows, schema=EVENTS.schema)


def small_settings(root) -> Settings:
    """Settings for a quick Spark ALS training on a small lake at ``root``: one family, no tuning, the
    confidence Spark ML's own docs use (linear), so these tests pin Spark's engine; tests/spark/test_families.py
    trains with the default families."""
    return Settings(
        root=root, spark_shuffle_partitions=2, model_families=["als"], als_engine="spark", als_rank=16,
        als_iterations=8, als_reg=0.05, als_alpha=10.0, confidence_scaling="linear", tune_trials=0,
    )


def seed_lake(settings: Settings, seed: int = 3, n_events: int = 4000) -> Lake:
    """A lake holding ``n_events`` generated events (150 users, 300 items, 6 planted clusters)."""
    lake = Lake(settings)
    events = generate_events(n_events, n_users=150, n_items=300, n_clusters=6, seed=seed, end=END)
    lake.append_arrow(EVENTS, bronze_table(events, settings))
    return lake
