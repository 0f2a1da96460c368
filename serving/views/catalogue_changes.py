"""Item availability straight from the CDC topic, ahead of ``item_catalogue``.

The dimensions query lands a change in the table within seconds, but it shares
the speed job's cores with the events: under load that took several seconds
more. Serving therefore also follows ``<cdc prefix>.public.items`` itself and
hands each change's availability to ``ItemAttributes.apply``; the table stays
the record and wins as soon as it holds the change (by LSN). Records the
dimensions query dead-letters are skipped here.
"""

from __future__ import annotations

from kafka.consumer.fetcher import ConsumerRecord

from lambdarec.settings import Settings
from schemas.cdc import ITEMS, decode_availability, topic
from serving.views.item_attributes import ItemAttributes
from serving.views.topic_follower import TopicFollower


class CatalogueChanges:
    """Follows the items CDC topic into ``attributes``."""

    def __init__(self, settings: Settings, attributes: ItemAttributes):
        self.attributes = attributes
        self.applied = 0
        self.follower = TopicFollower(settings.bootstrap_servers, topic(settings.cdc_topic_prefix, ITEMS.table),
                                      "lambdarec-serving-catalogue-changes", settings.serve_cdc_replay_s,
                                      self._apply_record)

    def _apply_record(self, record: ConsumerRecord) -> None:
        change = decode_availability(record.value)
        if change is not None:
            self.attributes.apply(change)
            self.applied += 1

    def start(self) -> None:
        self.follower.start()

    def stop(self) -> None:
        self.follower.stop()
