"""Kafka topics and message formats.

``events``: one JSON object per record, the event v1 fields with ``user_id``
pseudonymised plus ``schema_version`` and ``received_at`` (see
``schemas.events.Event.to_message``). Key: the pseudonymous user id, so one user's
events stay ordered within a partition.

``speed-updates``: one JSON object per record, produced by the speed job after its
Delta commits, each carrying ``kind``, ``query_id`` and ``batch_id`` so a replayed
batch is recognised and ignored downstream:

- ``interaction``: one accepted event, flat: ``{event_id, user_id, item_id,
  event_type, weight, occurred_at, country, device}`` and, once the event is in
  Delta, ``events_version`` (the ``events`` version holding it). Key: the user id.
  The real-time query sends each event within milliseconds without a version
  (at least once); the events query sends it again with its version after the
  Delta commit. Serving keeps one copy per event id and takes the version.
- ``user_interactions``: ``{"events_version", "rows": [{user_id, item_id,
  event_type, weight, occurred_at, event_id, country, device}, ...]}`` (rows of
  ``speed_user_interactions``, plus the event's country and device, which the
  features query keys trending segments by);
- ``user_features``: ``{"rows": [...]}`` (rows of ``speed_user_features``, all
  columns; ``counts_1h``/``counts_24h`` are ``{event_type: count}`` objects);
- ``item_trending``: ``{"rows": [...]}`` (rows of ``speed_item_trending``, all columns);
- ``progress``: ``{"progress": {...}}`` (one row of ``speed_progress``), sent for
  the events query only: the features query reads this topic itself.

The ``query_id`` of ``user_features``/``item_trending`` is the features query's,
not the events query's: each query numbers its batches independently.

Timestamps are RFC 3339 strings. Records have no key; a batch's records go to
one partition in order.
"""

from __future__ import annotations

SPEED_UPDATE_KIND_USER_INTERACTIONS = "user_interactions"
SPEED_UPDATE_KIND_INTERACTION = "interaction"
SPEED_UPDATE_KIND_USER_FEATURES = "user_features"
SPEED_UPDATE_KIND_ITEM_TRENDING = "item_trending"
SPEED_UPDATE_KIND_PROGRESS = "progress"
