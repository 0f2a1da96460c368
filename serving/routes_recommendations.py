"""``GET /users/{user_id}/recommendations``: batch view + speed view, merged per request."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel

from lambdarec.pseudonym import pseudonymise
from serving.deps import Services, get_services
from serving.recommend import recommend

router = APIRouter(tags=["recommendations"])


class ScoredItem(BaseModel):
    item_id: str
    score: float


class RecommendationsResponse(BaseModel):
    user_id: str
    items: list[ScoredItem]
    strategy: Literal["fold_in", "model", "popular"]
    model_version: int | None
    speed_view: dict[str, Any]
    fresh_interactions: int


@router.get("/users/{user_id}/recommendations", response_model=RecommendationsResponse)
def get_recommendations(
    user_id: Annotated[str, Path(min_length=1, max_length=128)],
    services: Annotated[Services, Depends(get_services)],
    k: Annotated[int, Query(ge=1, le=1000)] = 10,
) -> RecommendationsResponse:
    """Top ``k`` unseen items for the raw ``user_id`` (pseudonymised here, never stored)."""
    key = pseudonymise(user_id, services.settings.pseudonym_key)
    model = services.model_store.current  # read once: a concurrent swap cannot mix versions
    result = recommend(model, services.speed_view, key, k)
    services.metrics.recommendations.labels(result.strategy).inc()
    return RecommendationsResponse(
        user_id=user_id,
        items=[ScoredItem(item_id=item, score=score) for item, score in result.items],
        strategy=result.strategy,
        model_version=result.model_version,
        speed_view=services.speed_view.position(),
        fresh_interactions=result.fresh_interactions,
    )
