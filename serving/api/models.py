"""Response bodies of the API, so the OpenAPI document describes every answer."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

Strategy = Literal["neighbours", "fold_in", "model", "trending_segment", "trending_global", "popular"]


class Error(BaseModel):
    detail: str = Field(description="What was wrong, naming the field where there is one.")


class Because(BaseModel):
    item_id: str
    contribution: float = Field(description="This item's share of the recommended item's score.")


class ScoredItem(BaseModel):
    item_id: str
    score: float
    because: list[Because] | None = Field(
        None, description="With explain=true: the user's items that contributed most, largest first."
    )
    via: str | None = Field(
        None, description="Set for an item no model knows yet (no interactions): 'category:<c>', the user's "
        "strongest category, which its catalogue attributes match.")


class SpeedViewPosition(BaseModel):
    """How fresh the speed view behind a response is."""

    following: bool
    bootstrapped: bool
    events_version: int | None = Field(description="Newest events table version the view has applied.")
    batch_id: int | None
    offsets: dict[str, int] = Field(description="Next offset per speed-updates partition.")
    lag_records: int | None = Field(description="speed-updates records not applied yet.")
    age_ms: int | None = Field(description="Milliseconds since the view applied an update.")
    newest_event_at: str | None
    speed_job_lag_records: int | None = Field(description="The speed job's own source lag, from its progress.")


class RecommendationsResponse(BaseModel):
    user_id: str
    items: list[ScoredItem]
    strategy: Strategy
    segment: str | None = Field(None, description="The segment trending came from, e.g. country:DE.")
    model_version: int | None
    model_family: Literal["als", "ease"] | None = Field(
        None, description="The published model's family that scored the items (None: cold start, no model)."
    )
    speed_view: SpeedViewPosition
    fresh_interactions: int = Field(description="The user's interactions the model was not trained on, merged in.")


class SimilarResponse(BaseModel):
    item_id: str
    items: list[ScoredItem]
    model_version: int
    model_family: Literal["als", "ease"] = Field(
        description="als: cosine of the items' factors; ease: the weights of the items this one scores."
    )


class TrendingResponse(BaseModel):
    items: list[ScoredItem]
    strategy: Literal["trending_segment", "trending_global"] | None
    segment: str | None
    window_start: str | None
    speed_view: SpeedViewPosition


class ReadyResponse(BaseModel):
    ready: bool
    model_version: int | None
    model_error: str | None
    speed_view: SpeedViewPosition


class ReloadResponse(BaseModel):
    reloaded: bool
    model_version: int | None


class ErasureAccepted(BaseModel):
    request_id: str
    status: Literal["pending", "completed"] = Field(description="Completed once the receipt is written.")
    received_at: str
    receipt: str = Field(description="Where the receipt will be: GET it with the admin token.")


class ErasurePlace(BaseModel):
    """One place the user's data was (batch.erasure_places), and when it is gone."""

    place: str = Field(description="lake:<table>, speed_state, serving, kafka:<topic>, operational_db or models.")
    status: Literal["removed", "expires", "operator", "kept", "not_held"] = Field(
        description="removed: gone at gone_by; expires: gone by gone_by, a bound lambdarec cannot hasten; operator: "
        "lambdarec does not own it, gone within within_ms of the action `after`; kept: nothing bounds it; "
        "not_held: checked, nothing of the user there.")
    gone_by: str | None = Field(description="When it is, or will be, gone (null: see status).")
    after: str | None = Field(description="For status operator: the action the time counts from.")
    within_ms: int | None = Field(description="For status operator: gone within this long of that action (null: "
                                              "no bound known).")
    detail: str = Field(description="What was checked, and where the time comes from.")


class ErasureReceipt(BaseModel):
    """An erasure's state; once completed, its receipt. No id of the user is in it."""

    request_id: str
    status: Literal["pending", "completed"]
    subject_hash: str = Field(description="SHA-256 of the user's pseudonym: who it was, for whoever knows them.")
    received_at: str
    completed_at: str | None = None
    removed: dict[str, int] | None = Field(None, description="Rows removed per table.")
    delete_versions: dict[str, int] | None = Field(
        None, description="Per table, the Delta version of its DELETE (speed_state: the marker that cleared the "
        "speed job's state, a privacy_requests version).")
    vacuum_versions: dict[str, int] | None = Field(None, description="Per table, the Delta version of its VACUUM END.")
    vacuum_retention_hours: int | None = None
    kafka_expires_by: str | None = Field(
        None, description="The last copy on the topics that carry the pseudonym (events, consent, speed-updates) is "
        "gone by then, by the retention their brokers report; null while pending or when a topic keeps records.")
    first_model_without_user: int | None = Field(
        None, description="The first model version trained after the DELETE; null until one is trained.")
    places: list[ErasurePlace] | None = Field(
        None, description="Every place the user's data was, each with when it is gone; null while pending.")
