"""One typed settings object for every layer.

Every field can be set from the environment with the ``LAMBDAREC_`` prefix
(``LAMBDAREC_ROOT=/data/lambdarec``) or from a ``.env`` file. Every path is
derived from ``root`` unless set explicitly, so one variable moves the whole
platform (lake, checkpoints, broker state) somewhere else.
"""

from __future__ import annotations

import ipaddress
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from lambdarec import secret_files
from lambdarec.confidence import Scaling
from lambdarec.pseudonym import DEVELOPMENT_KEY
from schemas.event_rules import UNBOUNDED_AGE, EventLimits

LOOPBACK = "127.0.0.1"
"""Where every listener of the platform binds unless its ``*_host`` setting says otherwise."""
WILDCARD_HOSTS = ("", "0.0.0.0", "::")


def host_port(host: str, port: int) -> str:
    """``host:port``, with an IPv6 literal in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def dial(host: str, port: int) -> str:
    """The ``host:port`` a client on this machine uses to reach a server bound to ``host`` (loopback for a
    wildcard bind)."""
    return host_port(LOOPBACK if host in WILDCARD_HOSTS else host, port)


def is_loopback(host: str) -> bool:
    """Whether a server bound to ``host`` is reachable from this machine only (a name other than localhost is not
    counted: it may resolve to anything)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


DEFAULT_EVENT_WEIGHTS = {
    "view": 1.0,
    "click": 2.0,
    "add_to_cart": 4.0,
    "purchase": 8.0,
    "rating": 1.0,
    "like": 3.0,
    "share": 3.0,
}


AlsEngine = Literal["spark", "implicit"]
"""The ALS engine's one id: in settings, the train job's ``--engine``, the DAG and the registry's ``engine`` (an EASE model's is ``ease``)."""

LEGACY_ENGINE_IDS = {"spark-als": "spark", "implicit-als": "implicit"}
"""Engine ids registry rows written before the ids were unified carry; readers map them."""

ModelFamily = Literal["als", "ease"]
"""Model families that compete at the publish gate: latent factors (ALS, by ``als_engine``) or
item-item weights (EASE). The registry's ``engine`` is the ALS engine id or ``ease``."""

DEFAULT_MODEL_FAMILIES: tuple[ModelFamily, ...] = ("ease", "als")

GateMetric = Literal["recall", "precision", "ndcg", "map"]
"""Ranking metrics (at ``eval_k``) the publish gate can compare."""

ALS_PARAMS = ("rank", "reg", "alpha", "iterations")
"""The ALS hyperparameters' one vocabulary: settings ``als_<name>``, ``tune_space`` keys,
``batch.engines.AlsParams`` fields and the registry's ``params``. Only the engines
translate to their library's names (Spark ML: regParam, maxIter)."""

LEGACY_ALS_PARAMS = {"regParam": "reg", "maxIter": "iterations"}
"""Spark ML's names, which registry rows and tune spaces used before; readers map them."""


def canonical_engine(name: str | None) -> str | None:
    """An engine id as settings spell it (``spark-als`` from an older registry row is ``spark``)."""
    return LEGACY_ENGINE_IDS.get(name, name) if name is not None else None


def canonical_als_params(params: dict[str, Any]) -> dict[str, Any]:
    """``params`` with Spark ML's names for ALS hyperparameters renamed to ``ALS_PARAMS``'."""
    return {LEGACY_ALS_PARAMS.get(key, key): value for key, value in params.items()}


def _default_tune_space() -> dict[str, list[float]]:
    # Only the rank by default: on MovieLens, trials that moved alpha and reg won their validation
    # split (fitted on 60 % of the data) yet lost on a held-out quarter once refitted on all of it.
    return {"rank": [32, 64]}


def _default_ease_tune_l2() -> list[float]:
    return [250.0, 500.0, 1000.0]


class Settings(BaseSettings):
    """Platform configuration; see docs/configuration.md for the full table."""

    model_config = SettingsConfigDict(env_prefix="LAMBDAREC_", env_file=".env", extra="ignore")

    root: Path = Field(Path(".lambdarec"), description="Root folder for every local path below.")
    lake_uri: str = Field(
        "",
        description="Delta lake root. Empty means <root>/lake; set an s3:// URI on a cluster.",
    )
    checkpoint_dir: str = Field(
        "", description="Spark streaming checkpoints. Empty means <root>/checkpoints."
    )
    secrets_dir: str = Field(
        "",
        description="Folder (mode 700) of the secrets lambdarec generates or hands to its parts, each file mode 600: "
        "the embedded Postgres's passwords, the CDC connector's database password. Empty means <root>/secrets.",
    )

    jars_dir: str = Field(
        "",
        description="Folder of the JVM jars (Kafka broker, Spark's Kafka connector, Delta) that "
        "`lambdarec jars` resolves from Maven Central. Empty means .jars/ beside the lambdarec package.",
    )

    kafka_bootstrap_servers: str = Field(
        "",
        description="Kafka bootstrap servers. Empty means the embedded Apache Kafka broker on loopback "
        "(`lambdarec broker`).",
    )
    embedded_broker_host: str = Field(
        LOOPBACK,
        description="Address the embedded broker's client listener binds and advertises: clients must reach it, so "
        "a concrete address or host name, not 0.0.0.0. Its KRaft controller listener stays on loopback.",
    )
    embedded_broker_port: int = Field(
        19092, ge=1, le=65535, description="Loopback port of the embedded broker's PLAINTEXT listener (clients)."
    )
    embedded_controller_port: int = Field(
        19093, ge=1, le=65535,
        description="Loopback port of the embedded broker's KRaft controller listener (only the broker itself "
        "connects to it); must differ from embedded_broker_port.",
    )
    embedded_broker_heap: str = Field(
        "512m", pattern=r"^[1-9][0-9]*[mMgG]$",
        description="Most heap the embedded broker's JVM may use (-Xmx; it starts at half of it). "
        "512m holds a laptop's or CI's event rates; raise it for bigger loads.",
    )
    topic_events: str = Field("events", description="Topic the ingestion API produces to.")
    topic_speed_updates: str = Field(
        "speed-updates", description="Topic the speed layer pushes serving updates to."
    )
    topic_consent: str = Field(
        "consent", description="Topic of consent changes (schemas.consent): the API's and any other producer's."
    )
    topic_partitions: int = Field(2, ge=1, description="Partitions for topics the platform creates.")
    topic_replication_factor: int = Field(
        1, ge=1,
        description="Replication factor of the topics the platform creates; 1 for the single-node embedded "
        "broker, 3 on a real cluster.",
    )
    topic_retention_ms: int = Field(
        86_400_000, ge=-1,
        description="retention.ms of the topics the platform creates (events, consent, speed-updates): how long Kafka "
        "keeps records (default 1 day, so an erased user's copies on the topic are gone within about a day; "
        "-1 = forever). The speed job must read events within it, or it stops (speed_fail_on_data_loss). It also "
        "bounds how old an event's occurred_at may be at the API (422) and in the speed job (dead letter "
        "occurred_at_too_old): older history goes in through `lambdarec import`.",
    )
    topic_segment_ms: int = Field(
        3_600_000, ge=60_000,
        description="segment.ms of the topics the platform creates: Kafka deletes whole segments, so a record "
        "can outlive topic_retention_ms by up to this (and by the broker's 5-minute retention check).",
    )

    pseudonym_key: SecretStr = Field(
        SecretStr(DEVELOPMENT_KEY),
        description="HMAC key that pseudonymises user ids at the ingestion edge, optionally with a version: "
        "\"2:<secret>\" (docs/privacy.md: key rotation). The default is the development key, which serving refuses "
        "unless allow_development_key is set.",
    )

    ingest_max_batch: int = Field(500, ge=1, description="Most events one POST /events/batch takes.")
    ingest_max_body_bytes: int = Field(
        1_048_576, ge=1024, description="Largest request body the API accepts (413 beyond)."
    )
    ingest_rate_limit_per_s: float = Field(
        10_000.0, ge=0,
        description="Events per second one caller (its API key; its address in open mode) may send to POST /events "
        "and /events/batch, over all serving workers together (429 with Retry-After beyond); 0 = no limit.",
    )
    ingest_rate_burst: int = Field(
        50_000, ge=1, description="Events a caller may send at once before ingest_rate_limit_per_s applies.",
    )
    consent_rate_limit_per_s: float = Field(
        50.0, ge=0,
        description="Consent changes per second one caller may send to POST /users/{id}/consent, over all serving "
        "workers together (429 with Retry-After beyond); 0 = no limit.",
    )
    consent_rate_burst: int = Field(
        500, ge=1, description="Consent changes a caller may send at once before consent_rate_limit_per_s applies.",
    )

    spark_master: str = Field("local[2]", description="Spark master for jobs started by lambdarec.")
    spark_shuffle_partitions: int = Field(4, ge=1, description="spark.sql.shuffle.partitions.")
    spark_driver_memory: str = Field("2g", description="Driver memory for spark-submit jobs.")
    spark_driver_host: str = Field(
        LOOPBACK,
        description="Address the driver of every Spark job lambdarec starts binds and advertises (its RPC and block "
        "manager; spark.driver.bindAddress, spark.driver.host, SPARK_LOCAL_IP). Loopback suits local masters; on a "
        "cluster, an address the executors reach.",
    )

    speed_spark_master: str = Field(
        "local[4]",
        description="Spark master of the speed job. Its real-time query holds one task slot per events "
        "partition for as long as it runs, so local mode needs events partitions + 2 slots (threads, "
        "not cores: the real-time tasks mostly wait on Kafka).",
    )
    speed_realtime: bool = Field(
        True,
        description="Run the real-time query (Spark real-time mode: Kafka events -> validate -> Kafka "
        "speed-updates) that carries fresh events to serving in milliseconds, beside the micro-batch "
        "query that lands them in Delta exactly once.",
    )
    speed_realtime_batch: str = Field(
        "5 minutes",
        description="Length of one real-time-mode batch: how often the real-time query checkpoints its "
        "offsets (what a restart re-sends at most; serving drops repeated event ids).",
    )
    speed_trigger_ms: int = Field(
        1000, ge=0, description="Micro-batch interval of the events query (Delta events, dead letters)."
    )
    speed_max_offsets_per_trigger: int = Field(
        200_000, ge=1,
        description="Most Kafka records one events micro-batch admits. A batch's Delta commits cost "
        "about the same for 2k or 50k rows, so under load batches grow to absorb that cost; this bounds "
        "a catch-up batch.",
    )
    speed_starting_offsets: Literal["earliest", "latest"] = Field(
        "earliest", description="Where a speed query with a fresh checkpoint starts reading the topic."
    )
    speed_fail_on_data_loss: bool = Field(
        True,
        description="Stop the speed job when checkpointed offsets are gone from the broker (false: skip ahead).",
    )
    speed_features_trigger_ms: int = Field(
        5000, ge=0, description="Trigger interval of the speed features query (user features, trending); longer leaves the cores to the fold-in path."
    )
    speed_dedupe_partitions: int = Field(
        1, ge=1, description="State partitions of the events query's dedupe (fixed when its checkpoint is new); one keeps a micro-batch's dedupe to one task on a small machine."
    )
    speed_features_partitions: int = Field(
        1, ge=1, description="State partitions of the speed features query (fixed when its checkpoint is new)."
    )
    speed_metrics_host: str = Field(
        LOOPBACK, description="Address the speed job's Prometheus /metrics binds (0.0.0.0: every interface).",
    )
    speed_metrics_port: int = Field(
        9108, ge=0, le=65535, description="Port of the speed job's Prometheus /metrics (its driver); 0 turns it off.",
    )
    speed_session_gap_s: int = Field(1800, ge=1, description="Inactivity that ends a user's session.")
    speed_trending_window_s: int = Field(3600, ge=60, description="Length of the item trending window.")
    speed_state_ttl_s: int = Field(
        2 * 86_400, ge=60, description="Idle time after which a user's or item's speed state is dropped."
    )
    speed_state_versions_kept: int = Field(
        2, ge=1, le=100,
        description="State versions the features query keeps in its checkpoint (its "
        "spark.sql.streaming.minBatchesToRetain): an erased user's state is gone from the checkpoint once this "
        "many batches after the one that cleared it have committed and maintenance has run "
        "(lambdarec.speed_state_retention). More versions let an operator roll the query back further.",
    )
    speed_state_maintenance_s: int = Field(
        15, ge=1, le=600,
        description="How often Spark's state store maintenance deletes state versions beyond "
        "speed_state_versions_kept, with their files (spark.sql.streaming.stateStore.maintenanceInterval).",
    )
    speed_max_record_bytes: int = Field(
        65_536, ge=256, description="Kafka records larger than this go to dead_letter as oversize."
    )
    speed_max_clock_skew_s: int = Field(
        300, ge=0, le=86_400,
        description="How far ahead of the receiving clock occurred_at may be: further is refused at the API "
        "(422) and dead-lettered by the speed job (occurred_at_in_future). The past bound is topic_retention_ms.",
    )
    event_value_max: float = Field(
        1e6, gt=0, allow_inf_nan=False,
        description="Largest |value| of an event (a rating or a quantity): beyond it, or not finite, an event is "
        "refused at the API (422) and dead-lettered by the speed job (invalid_field:value), so no weight, sum or "
        "model factor can overflow.",
    )
    speed_dedupe_window: str = Field(
        "10 minutes", description="Watermark delay within which a repeated event_id is dropped."
    )
    speed_view_replay_s: int = Field(
        900, ge=0,
        description="How far back serving replays speed-updates on start, after loading the Delta speed "
        "tables: longer than the events query takes to land an event in Delta.",
    )
    speed_recent_items: int = Field(
        50, ge=1, description="Recent interactions kept per user in the speed view."
    )
    speed_view_horizon_s: int = Field(
        3 * 3600, ge=600,
        description="How long serving's speed view keeps a user or item after their newest event, how much of "
        "the speed tables it loads at start, and what the maintenance job's prune keeps of them. The default is "
        "the batch DAG's hourly retrain plus a margin of two hours (a rejected or retried run and the training "
        "itself): by then a published model holds what the view drops.",
    )
    speed_view_max_users: int = Field(
        200_000, ge=1,
        description="Most users (interactions and profile) serving's speed view holds; past it the least recently "
        "active go, and come back from the lake on their next request (speed_view_recall_users).",
    )
    speed_view_max_interactions: int = Field(
        1_000_000, ge=1,
        description="Most interactions (of speed_recent_items per user at most) serving's speed view holds in "
        "all; past it the least recently active users go, as past speed_view_max_users.",
    )
    speed_view_max_items: int = Field(
        100_000, ge=1,
        description="Most items with speed-view interactions (candidates for fold-in as new items) serving holds; "
        "past it the least recently used stop being folded in until their next interaction.",
    )
    speed_view_max_trending_rows: int = Field(
        200_000, ge=1,
        description="Most (segment, item, minute) trending rows serving holds; past it the items that weigh "
        "least in their segment's window go.",
    )
    speed_view_recall_users: int = Field(
        4_000_000, ge=1,
        description="Users evicted by the speed view's caps that serving remembers until a model covers them, "
        "so that their next request reads their interactions back from the lake: Bloom filters of about 1.6 "
        "bytes a user (1% of other users read needlessly); past it the longest held quarter goes.",
    )
    serve_recall_timeout_s: float = Field(
        1.0, gt=0,
        description="How long a recommendation request for an evicted user waits for their interactions to be "
        "read back from the lake; past it the answer goes without them and the read completes for the next one.",
    )
    serve_foldin_items: int = Field(
        1000, ge=1,
        description="Most new items (known to the speed view, to no model) one catalogue refit folds in; the "
        "rest wait for the next refits. Refits run off the request path.",
    )
    serve_foldin_interval_s: float = Field(
        1.0, gt=0, description="Least time between two catalogue refits (new items folded in) while events flow."
    )

    event_weights: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_EVENT_WEIGHTS),
        description="Implicit-feedback weight per event type, times the event's value (rating or quantity) if any.",
    )
    model_families: list[ModelFamily] = Field(
        default_factory=lambda: list(DEFAULT_MODEL_FAMILIES),
        description="Model families trained on every run; the best on the holdout (gate_metric) is refitted "
        "on the whole snapshot and goes to the gate. EASE sits out catalogues above ease_max_items.",
    )
    confidence_scaling: Scaling = Field(
        "log",
        description="Confidence of a summed interaction weight r: c = 1 + alpha * s(r) with s = r (linear), "
        "log(1 + r / confidence_epsilon) (log) or 1 (binary); lambdarec.confidence.",
    )
    confidence_epsilon: float = Field(1.0, gt=0, description="Epsilon of the log confidence scaling.")
    als_rank: int = Field(64, ge=1, description="ALS latent factors.")
    als_reg: float = Field(
        40.0,
        ge=0,
        description="ALS regularisation. implicit adds it as is (the default suits it); Spark ML multiplies it "
        "by each row's interaction count, so with als_engine=spark use a value near 0.05 and tune.",
    )
    als_alpha: float = Field(4.0, gt=0, description="Confidence alpha: c = 1 + alpha * s(r) (ALS).")
    als_iterations: int = Field(15, ge=1, description="ALS iterations (Spark's maxIter).")
    ease_l2: float = Field(
        500.0,
        gt=0,
        description="EASE ridge penalty, in units of the mean squared confidence, so it does not depend on alpha.",
    )
    ease_neighbours: int = Field(
        300, ge=1, description="EASE weights kept per item (the largest in magnitude); the rest are dropped."
    )
    ease_max_items: int = Field(
        20_000, ge=1, description="Largest catalogue EASE fits (its dense items x items inverse)."
    )
    holdout_fraction: float = Field(
        0.2, ge=0, lt=1, description="Last fraction of each user's events held out for evaluation."
    )
    als_engine: AlsEngine = Field(
        "implicit", description="ALS engine: the implicit library (one node, the default) or Spark ML (a cluster)."
    )
    als_checkpoint_interval: int = Field(
        5, ge=1, description="Spark ALS checkpoints its lineage every N iterations (no stack overflow)."
    )
    decay_half_life_days: float = Field(
        0.0, ge=0, description="Time decay of event weights (half-life in days before the snapshot's newest event); 0 = off."
    )
    rating_center: float | None = Field(
        None,
        description="Explicit ratings: weight x (value - center), so low ratings become negative "
        "confidence (dislike); unset = weight x value.",
    )
    eval_split: Literal["time", "cutoff", "random"] = Field(
        "time",
        description="Holdout: last fraction per user (time), events after eval_cutoff (cutoff), "
        "or a seeded random fraction per user (random).",
    )
    eval_cutoff: datetime | None = Field(None, description="Cutoff for eval_split=cutoff.")
    eval_k: int = Field(10, ge=1, description="k of the offline ranking metrics.")
    eval_max_users: int = Field(
        20_000, ge=1, description="Users the holdout metrics score at most (a seeded sample above that)."
    )
    tune_trials: int = Field(
        6, ge=0, description="Hyperparameter search trials per model family before training; 0 = no search."
    )
    tune_method: Literal["grid", "random"] = Field("random", description="Search: the grid in order, or a seeded sample.")
    tune_budget_s: float = Field(
        60.0, ge=0, description="Stop starting a family's trials after this many seconds; 0 = no limit."
    )
    tune_space: dict[str, list[float]] = Field(
        default_factory=_default_tune_space,
        description="Values to search per ALS hyperparameter (rank, reg, alpha, iterations).",
    )
    tune_min_gain: float = Field(
        0.02,
        ge=0,
        description="A trial replaces the configured parameters only if its validation metric is this much "
        "better (relative); smaller differences are noise on a validation split.",
    )
    tune_max_events: int = Field(
        500_000, ge=1, description="Above this many training events, trials fit on a seeded sample of users."
    )
    ease_tune_l2: list[float] = Field(
        default_factory=_default_ease_tune_l2, description="EASE penalties (ease_l2) the search tries."
    )

    @field_validator("tune_space", mode="before")
    @classmethod
    def _tune_space_names(cls, value: Any) -> Any:
        """Tune spaces written with Spark ML's names (regParam, maxIter) still read."""
        return canonical_als_params(value) if isinstance(value, dict) else value
    gate_metric: GateMetric = Field(
        "ndcg", description="Ranking metric (at eval_k) the families compete on and the publish gate compares."
    )
    @property
    def event_limits(self) -> EventLimits:
        """The bounds of the event rules (``schemas.event_rules``) that the API edge, the speed job and
        training share: ``event_value_max``, the topic's retention as the oldest ``occurred_at`` (none
        when topics keep records forever) and ``speed_max_clock_skew_s`` as the newest."""
        retention_ms = min(self.topic_retention_ms, UNBOUNDED_AGE // timedelta(milliseconds=1))
        return EventLimits(value_max=self.event_value_max,
                           max_age=timedelta(milliseconds=retention_ms) if retention_ms > 0 else None,
                           max_skew=timedelta(seconds=self.speed_max_clock_skew_s))

    @property
    def gate_metric_name(self) -> str:
        """The gate metric's key in a model's metrics (``model_``/``popularity_`` prefix it): ``ndcg_at_10``."""
        return f"{self.gate_metric}_at_{self.eval_k}"

    gate_tolerance: float = Field(
        0.01, ge=0, description="A candidate may trail the champion's gate metric by this much."
    )
    gate_min_user_coverage: float = Field(
        0.8, ge=0, le=1, description="Least share of active users a publishable model must have factors for."
    )
    gate_min_item_coverage: float = Field(
        0.5, ge=0, le=1, description="Least share of active items a publishable model must have factors for."
    )
    model_retention: int = Field(
        5, ge=1, description="Model versions whose factor data is kept (the champion always is)."
    )
    vacuum_retention_hours: int = Field(
        168, ge=0, description="Maintenance vacuum keeps unreferenced files younger than this."
    )
    serving_url: str = Field(
        "", description="Serving base URL that jobs talk to: the batch DAG asks it to reload after a publish "
        "(empty = skip), and `lambdarec export` asks it for the user's recommendations (empty = "
        "serve_host:serve_port)."
    )

    serve_host: str = Field("127.0.0.1", description="Serving bind address.")
    serve_port: int = Field(8000, description="Serving port.")
    serve_workers: int = Field(
        1, ge=0, description="Serving processes sharing the port (0 = one per core). Each maps the same model "
        "files, follows the speed view and produces events itself; /metrics from any of them sums their "
        "counters. Python runs one request at a time per process, so more cores need more workers.",
    )
    serve_header_timeout_s: float = Field(
        10.0, gt=0,
        description="A request's head (request line and headers) must arrive whole within this many seconds of the "
        "connection opening, or of the first byte after an idle keep-alive; else 408 and the connection is closed "
        "(slow clients that dribble headers hold no connection longer).",
    )
    serve_body_timeout_s: float = Field(
        30.0, gt=0,
        description="A request's body must arrive whole within this many seconds of its head; else 408 and the "
        "connection is closed.",
    )
    serve_keep_alive_s: int = Field(
        5, ge=1, description="How long an idle keep-alive connection is kept open between requests.",
    )
    serve_max_url_bytes: int = Field(
        8192, ge=256, description="Longest request target (path and query) serving reads; 414 beyond.",
    )
    serve_max_header_bytes: int = Field(
        16_384, ge=1024, description="Most bytes of header fields (names and values) in one request; 431 beyond.",
    )
    serve_max_headers: int = Field(100, ge=8, description="Most header fields in one request; 431 beyond.")
    serve_max_connections: int = Field(
        1000, ge=16,
        description="Open connections per serving worker. At the cap a new connection closes the oldest one with "
        "no request in flight (idle keep-alive, or a head still arriving), or is itself closed when every "
        "connection has one. Serving raises its open-files limit to fit, where the hard limit allows.",
    )
    serve_max_in_flight: int = Field(
        256, ge=1,
        description="Requests one serving worker works on at once; beyond, 503 with Retry-After. /health and "
        "/ready are never refused.",
    )
    serve_rate_table_slots: int = Field(
        65_536, ge=64, multiple_of=8,
        description="Rate-limit buckets (callers times limited route kinds) serving keeps, shared by its workers in "
        "one memory-mapped file of 32 bytes a slot; past it the least recently used caller's bucket is reused.",
    )
    serve_catalogue_poll_s: float = Field(
        0.5, gt=0, description="How often serving checks item_catalogue and user_profiles for a new version (an "
        "item marked unavailable stops being recommended after the next check).",
    )
    serve_follow_cdc: bool = Field(
        True, description="Serving also reads item changes straight from the CDC topic and applies availability "
        "at once, ahead of item_catalogue (checked by LSN); off, an item leaves the answers when the table has it.",
    )
    serve_cdc_replay_s: int = Field(
        300, ge=0, description="How far back serving reads the items CDC topic on start: longer than the dimensions "
        "query takes to land a change (older changes are in the table already; replays change nothing).",
    )
    serve_newcomer_slots: int = Field(
        1, ge=0, le=10, description="Places of a recommendation list given to catalogue items no model knows "
        "yet, of the user's strongest category (marked via=category:<c>); 0 turns it off.",
    )
    serve_ann_ef: int = Field(
        256, ge=0, description="Candidate list of the approximate nearest-neighbour search over an ALS model's "
        "items (its HNSW index): larger is closer to exact and slower. 0 scores every item exactly for every request.",
    )
    serve_model_poll_s: float = Field(
        5.0, gt=0, description="How often serving checks the registry for a newer published model."
    )
    serve_model_cache_dir: str = Field(
        "",
        description="Local folder where serving keeps loaded models as memory-mapped arrays. "
        "Empty means <root>/serving-models.",
    )
    prometheus_host: str = Field(
        LOOPBACK, description="Address the Prometheus that `lambdarec up` runs listens on (--web.listen-address).",
    )
    prometheus_port: int = Field(
        9090, ge=1, le=65535, description="Loopback port of the Prometheus `lambdarec up` runs.",
    )
    prometheus_url: str = Field(
        "", description="Base URL of a Prometheus that scrapes serving and the speed job (e.g. http://localhost:9090): "
        "the dashboard (/dashboard) charts from its query API. Empty = none: serving samples its own metrics and "
        "the speed job's (speed_metrics_url) every 2 s and keeps the last 10 minutes in memory.",
    )
    speed_metrics_url: str = Field(
        "", description="The speed job's Prometheus /metrics that serving's dashboard reads when there is no "
        "prometheus_url. Empty means http://127.0.0.1:<speed_metrics_port>/metrics (the driver on this machine).",
    )
    auth: Literal["keys", "open"] = Field(
        "keys",
        description="How serving checks callers: `keys` asks every route that changes or reveals a user's data for "
        "an API key with the route's scope (`lambdarec keys`); `open` checks no credential, and serving refuses it "
        "unless it binds a loopback address (development and tests on one machine).",
    )
    api_key: SecretStr = Field(
        SecretStr(""),
        description="The API key (a `lambdarec keys create` token) that lambdarec's own jobs present to serving: "
        "the batch DAG's reload (scope admin), `lambdarec export` (read), `lambdarec generate --send` (ingest). "
        "`lambdarec up` and `lambdarec demo` create their own; empty = send none.",
    )

    allow_development_key: bool = Field(
        False,
        description="Let serving start with the built-in development pseudonym key (the demo and tests set it). "
        "Anyone with the source knows that key and can link pseudonyms back to ids, so production refuses it.",
    )
    erasure_vacuum_retention_hours: int = Field(
        0, ge=0,
        description="VACUUM retention an erasure applies to the tables it deleted from: files that held the "
        "user's rows older than this are removed at once (0 = now). Readers pinned to an older snapshot "
        "(a training run in flight) lose it and retry.",
    )
    erasure_speed_wait_s: float = Field(
        300.0, gt=0,
        description="How long each step of an erasure waits on the speed job: to store every event sent before "
        "the request, to clear the user's state, and for the features checkpoint to drop the state versions from "
        "before the clearing; past it the request stays pending and is retried.",
    )
    erasure_poll_s: float = Field(
        2.0, gt=0, description="How often `lambdarec erase --follow` looks for new requests."
    )
    erasure_on_withdrawal: bool = Field(
        False, description="Whether withdrawing personalisation consent also erases the user's data: the speed "
        "job records an erasure request (id consent-<change_id>) that the erasure job carries out.",
    )

    operational_db_url: str = Field(
        "",
        description="The operational database the catalogue and user profiles come from, as a libpq URL "
        "(postgresql://user:password@host:port/db); its role needs REPLICATION and the tables a publication "
        "(docs/privacy.md: CDC). Empty means the embedded Postgres (`lambdarec postgres`).",
    )
    embedded_postgres_host: str = Field(
        LOOPBACK,
        description="Address the embedded Postgres listens on (listen_addresses; every connection needs the "
        "password generated into secrets_dir).",
    )
    embedded_postgres_port: int = Field(
        25432, ge=1, le=65535, description="Loopback port of the embedded Postgres (`lambdarec postgres`)."
    )
    embedded_postgres_dir: str = Field(
        "", description="Folder of the embedded Postgres's cluster (empty = <root>/postgres). Run as root, "
        "Postgres runs as the `postgres` system user, which must be able to reach it (every parent o+x).",
    )
    cdc_connect_host: str = Field(
        LOOPBACK, description="Address the Kafka Connect worker's REST API listens on (Connect's `listeners`).",
    )
    cdc_connect_port: int = Field(
        28083, ge=1, le=65535, description="Loopback port of the Kafka Connect worker's REST API (`lambdarec cdc`)."
    )
    speed_cdc: bool = Field(
        True, description="Run the speed job's dimensions query, which applies the CDC topics (`lambdarec cdc`) "
        "to item_catalogue and user_profiles; without CDC its topics are empty and it idles.",
    )
    speed_dimensions_trigger_ms: int = Field(
        250, ge=10, description="Micro-batch interval of the dimensions query: a catalogue change waits at most "
        "this before its MERGE starts (an interval with no change runs no batch).",
    )
    cdc_topic_prefix: str = Field(
        "cdc", pattern=r"^[A-Za-z0-9_.-]+$",
        description="Debezium's topic.prefix: a table's changes go to <prefix>.<schema>.<table>.",
    )
    cdc_connect_heap: str = Field(
        "256m", pattern=r"^[1-9][0-9]*[mMgG]$", description="Most heap the Kafka Connect worker's JVM may use (-Xmx)."
    )

    @property
    def lake_root(self) -> str:
        return self.lake_uri or str((self.root / "lake").resolve())

    @property
    def checkpoint_root(self) -> str:
        return self.checkpoint_dir or str((self.root / "checkpoints").resolve())

    @property
    def model_cache_root(self) -> Path:
        return Path(self.serve_model_cache_dir) if self.serve_model_cache_dir else self.root / "serving-models"

    @property
    def speed_metrics_endpoint(self) -> str | None:
        """Where the speed job's driver serves /metrics (None: its metrics are off)."""
        if self.speed_metrics_url:
            return self.speed_metrics_url
        if not self.speed_metrics_port:
            return None
        return f"http://{dial(self.speed_metrics_host, self.speed_metrics_port)}/metrics"

    @property
    def jars_root(self) -> Path:
        return Path(self.jars_dir) if self.jars_dir else Path(__file__).resolve().parent.parent / ".jars"

    @property
    def bootstrap_servers(self) -> str:
        """The Kafka address every client uses: the configured cluster or the embedded broker."""
        return self.kafka_bootstrap_servers or host_port(self.embedded_broker_host, self.embedded_broker_port)

    @property
    def uses_embedded_broker(self) -> bool:
        return not self.kafka_bootstrap_servers

    @property
    def secrets_root(self) -> Path:
        return Path(self.secrets_dir) if self.secrets_dir else (self.root / "secrets").resolve()

    @property
    def operational_db(self) -> str:
        """The operational database's URL: the configured one, or the embedded Postgres's with the password
        generated for it (``secrets_root``); ``secret_files.redacted`` masks it for display."""
        if self.operational_db_url:
            return self.operational_db_url
        password = quote(secret_files.generated(self.secrets_root / secret_files.POSTGRES_PASSWORD), safe="")
        address = dial(self.embedded_postgres_host, self.embedded_postgres_port)
        return f"postgresql://lambdarec:{password}@{address}/operational"

    def table_uri(self, name: str) -> str:
        return f"{self.lake_root.rstrip('/')}/{name}"


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings; FastAPI and tests override this dependency."""
    return Settings()
