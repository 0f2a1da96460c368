"""One typed settings object for every layer.

Every field can be set from the environment with the ``LAMBDAREC_`` prefix
(``LAMBDAREC_ROOT=/data/lambdarec``) or from a ``.env`` file. Every path is
derived from ``root`` unless set explicitly, so one variable moves the whole
platform (lake, checkpoints, broker state) somewhere else.
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from lambdarec.confidence import Scaling
from lambdarec.pseudonym import DEVELOPMENT_KEY

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
    """Platform configuration; see README "Configuration" for the full table."""

    model_config = SettingsConfigDict(env_prefix="LAMBDAREC_", env_file=".env", extra="ignore")

    root: Path = Field(Path(".lambdarec"), description="Root folder for every local path below.")
    lake_uri: str = Field(
        "",
        description="Delta lake root. Empty means <root>/lake; set an s3:// URI on a cluster.",
    )
    checkpoint_dir: str = Field(
        "", description="Spark streaming checkpoints. Empty means <root>/checkpoints."
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
        "-1 = forever). The speed job must read events within it, or it stops (speed_fail_on_data_loss).",
    )
    topic_segment_ms: int = Field(
        3_600_000, ge=60_000,
        description="segment.ms of the topics the platform creates: Kafka deletes whole segments, so a record "
        "can outlive topic_retention_ms by up to this (and by the broker's 5-minute retention check).",
    )

    pseudonym_key: SecretStr = Field(
        SecretStr(DEVELOPMENT_KEY),
        description="HMAC key that pseudonymises user ids at the ingestion edge, optionally with a version: "
        "\"2:<secret>\" (README: key rotation). The default is the development key, which serving refuses "
        "unless allow_development_key is set.",
    )

    ingest_max_batch: int = Field(500, ge=1, description="Most events one POST /events/batch takes.")
    ingest_max_body_bytes: int = Field(
        1_048_576, ge=1024, description="Largest request body the API accepts (413 beyond)."
    )
    ingest_rate_limit_per_s: float = Field(
        0.0, ge=0, description="Events per second one client may send (429 beyond); 0 = no limit."
    )
    ingest_rate_burst: int = Field(
        1000, ge=1, description="Events a client may send at once before the rate limit applies."
    )

    spark_master: str = Field("local[2]", description="Spark master for jobs started by lambdarec.")
    spark_shuffle_partitions: int = Field(4, ge=1, description="spark.sql.shuffle.partitions.")
    spark_driver_memory: str = Field("2g", description="Driver memory for spark-submit jobs.")

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
    speed_metrics_port: int = Field(
        9108, ge=0, le=65535, description="Port of the speed job's Prometheus /metrics (its driver); 0 turns it off.",
    )
    speed_session_gap_s: int = Field(1800, ge=1, description="Inactivity that ends a user's session.")
    speed_trending_window_s: int = Field(3600, ge=60, description="Length of the item trending window.")
    speed_state_ttl_s: int = Field(
        2 * 86_400, ge=60, description="Idle time after which a user's or item's speed state is dropped."
    )
    speed_max_record_bytes: int = Field(
        65_536, ge=256, description="Kafka records larger than this go to dead_letter as oversize."
    )
    speed_max_clock_skew_s: int = Field(
        300, ge=0, description="How far in the future occurred_at may be before it is rejected."
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
    admin_token: SecretStr = Field(
        SecretStr(""),
        description="Bearer token for serving's /admin routes (the batch DAG sends it); empty = admin off.",
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
        description="How long an erasure waits for the speed job to store every event sent before the request "
        "and to clear the user's state; past it the request stays pending and is retried.",
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
        "(README: CDC). Empty means the embedded Postgres (`lambdarec postgres`).",
    )
    embedded_postgres_port: int = Field(
        25432, ge=1, le=65535, description="Loopback port of the embedded Postgres (`lambdarec postgres`)."
    )
    embedded_postgres_dir: str = Field(
        "", description="Folder of the embedded Postgres's cluster (empty = <root>/postgres). Run as root, "
        "Postgres runs as the `postgres` system user, which must be able to reach it (every parent o+x).",
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
        return f"http://127.0.0.1:{self.speed_metrics_port}/metrics" if self.speed_metrics_port else None

    @property
    def jars_root(self) -> Path:
        return Path(self.jars_dir) if self.jars_dir else Path(__file__).resolve().parent.parent / ".jars"

    @property
    def bootstrap_servers(self) -> str:
        """The Kafka address every client uses: the configured cluster or the embedded broker."""
        return self.kafka_bootstrap_servers or f"127.0.0.1:{self.embedded_broker_port}"

    @property
    def uses_embedded_broker(self) -> bool:
        return not self.kafka_bootstrap_servers

    @property
    def operational_db(self) -> str:
        """The operational database's URL: the configured one, or the embedded Postgres's."""
        return self.operational_db_url or (
            f"postgresql://lambdarec:lambdarec@127.0.0.1:{self.embedded_postgres_port}/operational")

    def table_uri(self, name: str) -> str:
        return f"{self.lake_root.rstrip('/')}/{name}"


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings; FastAPI and tests override this dependency."""
    return Settings()
