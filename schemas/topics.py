"""Kafka topics and message formats.

``events``: one JSON object per record, the event v1 fields with ``user_id``
pseudonymised plus ``schema_version`` and ``received_at`` (see
``schemas.events.Event.to_message``). Key: the pseudonymous user id, so one user's
events stay ordered within a partition.

``speed-updates``: one JSON object per record, produced by the speed job after its
Delta commit: ``{"kind": "user_interactions", "query_id", "batch_id",
"events_version", "rows": [{user_id, item_id, event_type, weight, occurred_at,
event_id}, ...]}``. Key: the pseudonymous user id.
"""

from __future__ import annotations

from lambdarec.settings import Settings

SPEED_UPDATE_KIND_USER_INTERACTIONS = "user_interactions"


def platform_topics(settings: Settings) -> list[str]:
    """Every topic the platform creates on start."""
    return [settings.topic_events, settings.topic_speed_updates]
