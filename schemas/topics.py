"""Kafka topics and message formats.

``events``: one JSON object per record, the event v1 fields with ``user_id``
pseudonymised plus ``schema_version`` and ``received_at`` (see
``schemas.events.Event.to_message``). Key: the pseudonymous user id, so one user's
events stay ordered within a partition.

``speed-updates``: the speed layer's output for serving. Its message kinds, row
shapes, segment names, timestamp form, encoder and decoder are code in
``schemas.speed_updates``, which both sides import; in short, each message
carries ``kind`` (and, but for ``interaction``, ``query_id`` and ``batch_id``, so
a replayed batch is recognised and ignored downstream):

- ``interaction``: one accepted event, flat. The real-time query sends each event
  within milliseconds without ``events_version`` (at least once); the events
  query sends it again with the ``events`` version holding it, after its Delta
  commit. Serving keeps one copy per event id and takes the version. Key: the user id.
- ``user_interactions``: rows of ``speed_user_interactions`` (what serving
  bootstraps from; no longer sent on the topic by the speed job);
- ``user_features``: rows of ``speed_user_features``;
- ``item_trending``: rows of ``speed_item_trending``, one per (segment, item,
  minute) the batch changed; an item's trending count over a window is the sum
  of its minutes in it (serving ranks the window ending at the newest minute it has);
- ``progress``: one row of ``speed_progress``, for the events query only (the
  features query reads the events table, not this topic).

The ``query_id`` of ``user_features``/``item_trending`` is the features query's,
not the events query's: each query numbers its batches independently. Row
messages are keyed by chunk number within their batch.
"""

from __future__ import annotations

from schemas.speed_updates import (
    KIND_INTERACTION as SPEED_UPDATE_KIND_INTERACTION,
    KIND_ITEM_TRENDING as SPEED_UPDATE_KIND_ITEM_TRENDING,
    KIND_PROGRESS as SPEED_UPDATE_KIND_PROGRESS,
    KIND_USER_FEATURES as SPEED_UPDATE_KIND_USER_FEATURES,
    KIND_USER_INTERACTIONS as SPEED_UPDATE_KIND_USER_INTERACTIONS,
)

__all__ = [
    "SPEED_UPDATE_KIND_INTERACTION",
    "SPEED_UPDATE_KIND_ITEM_TRENDING",
    "SPEED_UPDATE_KIND_PROGRESS",
    "SPEED_UPDATE_KIND_USER_FEATURES",
    "SPEED_UPDATE_KIND_USER_INTERACTIONS",
]
