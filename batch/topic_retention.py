"""How long a Kafka topic keeps a record, read from the topic's own configuration.

An erasure cannot delete records from a topic: Kafka deletes whole segments
once they age out. The receipt therefore states, per topic, by when a record
appended at a given time is gone from the broker's disks, from what the
brokers report (``DescribeConfigs``), never from lambdarec's settings, which
only seed topics lambdarec creates. The bound, for a topic whose cleanup
policy includes ``delete`` and whose ``retention.ms`` is not -1:

- the record's segment stays open for at most ``segment.ms`` after its first
  record's timestamp, and takes records until then;
- with ``message.timestamp.type=CreateTime`` a producer may stamp a record up to
  ``message.timestamp.after.max.ms`` ahead: that can delay both the roll and the
  segment's newest timestamp, so it counts twice;
- the segment is deleted once its newest timestamp is older than ``retention.ms``,
  at the broker's next check (``log.retention.check.interval.ms``), and its files
  are removed ``file.delete.delay.ms`` after that.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from lambdarec.settings import Settings

LONG_MAX = 2**63 - 1
CHECK_INTERVAL = "log.retention.check.interval.ms"


@dataclass(frozen=True)
class TopicRetention:
    """A topic's deletion settings as its brokers report them."""

    topic: str
    cleanup_policy: str
    retention_ms: int
    segment_ms: int
    timestamp_type: str
    timestamp_after_max_ms: int
    file_delete_delay_ms: int
    check_interval_ms: int  # the slowest broker's
    remote_storage: bool = False

    def bound_ms(self) -> int | None:
        """Longest a record stays on the brokers' disks after it was appended; None when nothing bounds it."""
        if "delete" not in self.cleanup_policy.split(",") or self.retention_ms < 0:
            return None
        skew = 0 if self.timestamp_type == "LogAppendTime" else self.timestamp_after_max_ms
        if skew >= LONG_MAX // 4:
            return None  # producers may stamp records any time ahead: a segment may never age out
        return self.segment_ms + 2 * skew + self.retention_ms + self.check_interval_ms + self.file_delete_delay_ms

    def gone_by(self, last_write: datetime) -> datetime | None:
        """When every record appended at or before ``last_write`` is gone; None when nothing bounds it."""
        bound = self.bound_ms()
        return None if bound is None else last_write + timedelta(milliseconds=bound)

    def describe(self) -> str:
        """The settings the bound comes from, as the brokers reported them."""
        settings = (f"cleanup.policy={self.cleanup_policy}, retention.ms={self.retention_ms}, "
                    f"segment.ms={self.segment_ms}, message.timestamp.type={self.timestamp_type}, "
                    f"message.timestamp.after.max.ms={self.timestamp_after_max_ms}, "
                    f"file.delete.delay.ms={self.file_delete_delay_ms}, {CHECK_INTERVAL}={self.check_interval_ms}")
        if self.bound_ms() is None:
            return f"no time bounds deletion ({settings})"
        remote = "; tiered storage is on: the remote copy follows retention.ms too" if self.remote_storage else ""
        return (f"gone within segment.ms + 2 x timestamp skew + retention.ms + check interval + delete delay "
                f"= {self.bound_ms()} ms of the last write ({settings}, read from the topic){remote}")


def read(settings: Settings, topics: Sequence[str]) -> dict[str, TopicRetention | None]:
    """Each topic's retention as its brokers report it now (None: no such topic)."""
    from kafka import KafkaAdminClient
    from kafka.admin import ConfigResource, ConfigResourceType

    from lambdarec.kafka_io import CLIENT_ID

    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_servers, client_id=CLIENT_ID)
    try:
        present = set(admin.list_topics())
        brokers = [str(broker["broker_id"]) for broker in admin.describe_cluster()["brokers"]]
        wanted = [topic for topic in topics if topic in present]
        resources = [ConfigResource(ConfigResourceType.TOPIC, topic) for topic in wanted]
        resources += [ConfigResource(ConfigResourceType.BROKER, broker) for broker in brokers]
        described = admin.describe_configs(resources, config_filter="all")
    finally:
        admin.close()
    check_ms = max(_long(configs, CHECK_INTERVAL) for configs in described["broker"].values())
    return {topic: (_retention(topic, described["topic"][topic], check_ms) if topic in wanted else None)
            for topic in topics}


def _retention(topic: str, configs: dict, check_ms: int) -> TopicRetention:
    return TopicRetention(
        topic=topic,
        cleanup_policy=_text(configs, "cleanup.policy"),
        retention_ms=_long(configs, "retention.ms"),
        segment_ms=_long(configs, "segment.ms"),
        timestamp_type=_text(configs, "message.timestamp.type"),
        timestamp_after_max_ms=_timestamp_skew_ms(configs),
        file_delete_delay_ms=_long(configs, "file.delete.delay.ms"),
        check_interval_ms=check_ms,
        remote_storage=str((configs.get("remote.storage.enable") or {}).get("value")).lower() == "true",
    )


def _timestamp_skew_ms(configs: dict) -> int:
    """How far ahead a producer may stamp a record: ``message.timestamp.after.max.ms`` (Kafka 3.6 on), else
    the older ``message.timestamp.difference.max.ms``, else unbounded."""
    for name in ("message.timestamp.after.max.ms", "message.timestamp.difference.max.ms"):
        if (configs.get(name) or {}).get("value") is not None:
            return _long(configs, name)
    return LONG_MAX


def _text(configs: dict, name: str) -> str:
    entry = configs.get(name)
    if entry is None or entry.get("value") is None:
        raise LookupError(f"the broker did not report {name}")
    return str(entry["value"])


def _long(configs: dict, name: str) -> int:
    return int(_text(configs, name))
