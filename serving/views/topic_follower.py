"""Following one Kafka topic in a serving process: every partition, from a while back, for ever.

No consumer group: each serving process ``assign()``s every partition and keeps
its own position, so each holds its own copy of what the topic says. A partition
seen for the first time starts at the first record at most ``replay_s`` old (its
end if none is that new); after a lost broker the follower reconnects with
backoff and goes on from where it was.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from lambdarec.kafka_io import make_consumer

log = logging.getLogger(__name__)

RETRY_S = (0.5, 5.0)  # first and longest wait between reconnects; doubles while failing
# A fetch returns as soon as one record is there, so a long wait costs no latency; at
# make_consumer's 10 ms an idle follower asked the broker 100 times a second, which took
# 15% of a core in serving and 12% in the broker with nothing to read.
LONG_POLL_MS = 500


class TopicFollower:
    """Hands each record of ``topic`` to ``on_record`` in a daemon thread, and says where it stands."""

    def __init__(self, bootstrap_servers: str, topic: str, client_id: str, replay_s: float,
                 on_record: Callable[[ConsumerRecord], None]):
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.client_id = client_id
        self.replay_s = replay_s
        self.on_record = on_record
        self.following = False
        self.skipped = 0  # records whose on_record raised: logged and passed, never a reason to stop
        self._lock = threading.Lock()
        self._offsets: dict[int, int] = {}  # partition -> next offset to read
        self._highwater: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, before: Callable[[threading.Event], None] | None = None) -> None:
        """Follow in a daemon thread, after ``before(stop)`` returned (in that thread)."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(before,), name=self.client_id, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=15)

    def position(self) -> tuple[dict[int, int], int]:
        """The next offset per partition, and the records behind the partitions' ends."""
        with self._lock:
            offsets = dict(self._offsets)
            lag = sum(max(self._highwater.get(p, o) - o, 0) for p, o in offsets.items())
        return offsets, lag

    def _run(self, before: Callable[[threading.Event], None] | None) -> None:
        if before is not None:
            before(self._stop)
        delay = RETRY_S[0]
        while not self._stop.is_set():
            consumer = None
            try:
                consumer = make_consumer(self.bootstrap_servers, client_id=self.client_id,
                                         auto_offset_reset="earliest", bootstrap_timeout_ms=5000,
                                         fetch_max_wait_ms=LONG_POLL_MS)
                if self._assign(consumer):
                    delay = RETRY_S[0]
                    self._poll_until_stopped(consumer)
            except Exception as exc:  # keep following whatever the broker does
                log.warning("lost the broker; retrying", extra={"topic": self.topic, "error": repr(exc)})
            finally:
                self.following = False
                if consumer is not None:
                    consumer.close()
            self._stop.wait(delay)
            delay = min(delay * 2, RETRY_S[1])

    def _assign(self, consumer: KafkaConsumer) -> bool:
        """Assign every partition at our position (or ``replay_s`` back); False if no topic yet."""
        partitions = consumer.partitions_for_topic(self.topic)
        if not partitions:
            log.info("waiting for topic", extra={"topic": self.topic})
            return False
        assigned = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        with self._lock:
            new = [tp for tp in assigned if tp.partition not in self._offsets]
        starts = self._replay_starts(consumer, new)
        with self._lock:
            for tp in assigned:
                self._offsets.setdefault(tp.partition, starts.get(tp.partition, 0))
                consumer.seek(tp, self._offsets[tp.partition])
        self.following = True
        log.info("following", extra={"topic": self.topic, "partitions": sorted(partitions)})
        return True

    def _replay_starts(self, consumer: KafkaConsumer, partitions: list[TopicPartition]) -> dict[int, int]:
        """First offsets at most ``replay_s`` before now (a partition's end if none is that new)."""
        if not partitions:
            return {}
        since_ms = int((time.time() - self.replay_s) * 1000)
        found = consumer.offsets_for_times({tp: since_ms for tp in partitions})
        ends = consumer.end_offsets(partitions)
        return {tp.partition: (found[tp].offset if found.get(tp) else ends[tp]) for tp in partitions}

    def _poll_until_stopped(self, consumer: KafkaConsumer) -> None:
        while not self._stop.is_set():
            batches = consumer.poll(timeout_ms=200)
            for tp, records in batches.items():
                for record in records:
                    try:
                        self.on_record(record)
                    except Exception:  # passed, not retried: from the same offset it would fail for ever
                        self.skipped += 1
                        log.exception("skipped a record that could not be applied",
                                      extra={"topic": self.topic, "partition": tp.partition, "offset": record.offset})
                    with self._lock:
                        self._offsets[tp.partition] = record.offset + 1
            with self._lock:
                for tp in consumer.assignment():
                    highwater = consumer.highwater(tp)
                    if highwater is not None:
                        self._highwater[tp.partition] = highwater
