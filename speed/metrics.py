"""The speed job's Prometheus metrics, served by its driver on ``speed_metrics_host``:``speed_metrics_port``
(loopback by default).

Each query's batch progress (``speed.progress``) sets its rates, duration, state
and source lag; the sinks count what they land and dead-letter. Counters count
what this process did since it started (Prometheus' ``rate`` absorbs a restart);
a batch replayed after a crash is counted again, which a rate over minutes barely
shows. One registry per process: the driver is the only place batches are seen.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

log = logging.getLogger("lambdarec.speed")


class SpeedMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        by_query = ["query"]
        self.input_rows = Counter("lambdarec_speed_input_rows", "Rows the query read from its source.", by_query,
                                  registry=self.registry)
        self.input_rate = Gauge("lambdarec_speed_input_rows_per_second", "Rows/s arriving at the query's source "
                                "(last batch).", by_query, registry=self.registry)
        self.processed_rate = Gauge("lambdarec_speed_processed_rows_per_second", "Rows/s the query processed "
                                    "(last batch).", by_query, registry=self.registry)
        self.batch_seconds = Histogram("lambdarec_speed_batch_duration_seconds", "Micro-batch duration.", by_query,
                                       registry=self.registry,
                                       buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120))
        self.state_rows = Gauge("lambdarec_speed_state_rows", "Rows in the query's state store.", by_query,
                                registry=self.registry)
        self.state_memory = Gauge("lambdarec_speed_state_memory_bytes", "Memory of the query's state store.",
                                  by_query, registry=self.registry)
        self.source_lag = Gauge("lambdarec_speed_source_lag_records", "Records on the Kafka source the query has not "
                                "processed (when its last batch was planned).", by_query, registry=self.registry)
        self.landed = Counter("lambdarec_speed_rows_landed", "Rows committed to a Delta table.", ["table"],
                              registry=self.registry)
        self.query_restarts = Counter("lambdarec_speed_query_restarts", "Times a failed query was started again "
                                      "within the job (the real-time query only).", by_query, registry=self.registry)
        self.dead_letters = Counter("lambdarec_dead_letters", "Rows sent to dead_letter, by reason.", ["reason"],
                                    registry=self.registry)
        self.dropped_rows = Counter("lambdarec_speed_dropped_rows", "Feature rows the features query dropped "
                                    "because speed-updates cannot carry them (a non-finite number), by table.",
                                    ["table"], registry=self.registry)

    def observe_progress(self, row: Mapping[str, Any], state_operators: list[Any]) -> None:
        """One batch's ``speed_progress`` row and its state operators' progress."""
        query = row["query_name"] or row["query_id"]
        self.input_rows.labels(query).inc(row["rows_in"])
        self.input_rate.labels(query).set(row["input_rows_per_s"])
        self.processed_rate.labels(query).set(row["processed_rows_per_s"])
        self.batch_seconds.labels(query).observe(row["batch_duration_ms"] / 1000)
        if row["source_lag"] is not None:
            self.source_lag.labels(query).set(row["source_lag"])
        if state_operators:
            self.state_rows.labels(query).set(sum(int(op.numRowsTotal) for op in state_operators))
            self.state_memory.labels(query).set(sum(int(op.memoryUsedBytes) for op in state_operators))

    def count_dead_letters(self, by_reason: Mapping[str, int]) -> None:
        for reason, n in by_reason.items():
            self.dead_letters.labels(reason).inc(n)


METRICS = SpeedMetrics()


def serve(host: str, port: int) -> None:
    """Expose ``METRICS`` on ``host``:``port`` (port 0: not at all), from a daemon thread of the driver."""
    if not port:
        return
    try:
        start_http_server(port, addr=host, registry=METRICS.registry)
    except OSError as exc:  # the data path matters more than its metrics: run on, say so loudly
        log.error('{"event": "metrics_unavailable", "host": "%s", "port": %d, "error": "%s"}', host, port, exc)
        return
    log.info('{"event": "metrics", "host": "%s", "port": %d}', host, port)
