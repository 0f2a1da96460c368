"""Read routes: a user's recommendations, similar items and trending items."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, HTTPException, Path, Query
from fastapi.responses import Response

from lambdarec.pseudonym import pseudonymise
from schemas.speed_updates import SEGMENT_ATTRIBUTES
from serving import recommend as rec
from serving.api.models import (
    Because,
    Error,
    RecommendationsResponse,
    ScoredItem,
    SimilarResponse,
    TrendingResponse,
)
from serving.api.compiled_route import CompiledRoute
from serving.services import Services, get_services
from serving.api.security import READ, responses

# explain=true and the segment field reveal a user's history and profile: the read scope covers them with the rest.
router = APIRouter(tags=["recommendations"], route_class=CompiledRoute, dependencies=[Depends(READ)],
                   responses=responses("read"))

ItemList = Annotated[list[Annotated[str, Query(min_length=1, max_length=128)]], Query(max_length=1000)]
Filters = Annotated[
    list[Annotated[str, Query(pattern=r"^[A-Za-z0-9_.-]{1,64}:.{1,256}$")]],
    Query(
        max_length=50,
        description="Item attribute filters as name:value (item_catalogue attributes); values of one "
        "name are alternatives, different names must all match.",
    ),
]
K = Annotated[int, Query(ge=1, le=1000, description="How many items.")]
Country = Annotated[str | None, Query(pattern=r"^[A-Z]{2}$", description="Segment: ISO country code.")]
Device = Annotated[str | None, Query(min_length=1, max_length=64, description="Segment: device.")]
AgeBand = Annotated[str | None, Query(min_length=1, max_length=32, description="Segment: age band (from profiles).")]
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": Error, "description": "Unknown item or no model loaded."}}


def _segments(**values: str | None) -> list[tuple[str, str]]:
    """The request's segments, in ``SEGMENT_ATTRIBUTES`` order (most specific first)."""
    return [(name, value) for name in SEGMENT_ATTRIBUTES if (value := values.get(name))]


def _filters(raw: list[str]) -> dict[str, set[str]]:
    filters: dict[str, set[str]] = {}
    for entry in raw:
        name, value = entry.split(":", 1)
        filters.setdefault(name, set()).add(value)
    return filters


def _item(s: rec.Scored) -> dict:
    because = None if s.because is None else [{"item_id": b.item_id, "contribution": b.contribution} for b in s.because]
    return {"item_id": s.item_id, "score": s.score, "because": because, "via": s.via}


def _items(scored: list[rec.Scored]) -> list[ScoredItem]:
    return [
        ScoredItem(
            item_id=s.item_id,
            score=s.score,
            because=None if s.because is None else [Because(item_id=b.item_id, contribution=b.contribution) for b in s.because],
        )
        for s in scored
    ]


@router.get("/users/{user_id}/recommendations", response_model=RecommendationsResponse)
async def get_recommendations(
    user_id: Annotated[str, Path(min_length=1, max_length=128)],
    services: Annotated[Services, Depends(get_services)],
    k: K = 10,
    exclude_seen: Annotated[bool, Query(description="Never return items the user interacted with.")] = True,
    include: ItemList = [],  # noqa: B006 - FastAPI copies defaults per request
    exclude: ItemList = [],  # noqa: B006
    filter: Filters = [],  # noqa: B006, A002 - the public parameter name
    explain: Annotated[bool, Query(description="Add, per item, the user's items that contributed most.")] = False,
    country: Country = None,
    device: Device = None,
    age_band: AgeBand = None,
) -> Response:
    """Top ``k`` items for the raw ``user_id`` (pseudonymised here, never stored).

    Merges the published model with the user's speed-layer interactions (exact
    ALS fold-in, or EASE's item neighbours); a user with no history, or who withdrew
    personalisation consent, gets trending items for their segment.
    """
    key = pseudonymise(user_id, services.settings.pseudonym_key)
    query = rec.Query(
        k=k,
        exclude_seen=exclude_seen,
        include=frozenset(include),
        exclude=frozenset(exclude),
        filters=_filters(filter),
        explain=explain,
        segment=dict(_segments(country=country, age_band=age_band, device=device)),
    )
    await services.recall_evicted(key)
    result = services.recommend(key, query)
    services.metrics.recommendations.labels(result.strategy).inc()
    # The hot path: JSON of the documented shape by orjson, without a pydantic round trip; its
    # scores are finite (ranking never returns another), which orjson would write as null.
    return Response(orjson.dumps({
        "user_id": user_id,
        "items": [_item(s) for s in result.items],
        "strategy": result.strategy,
        "segment": result.segment,
        "model_version": result.model_version,
        "model_family": result.model_family,
        "speed_view": services.speed_view.position(),
        "fresh_interactions": result.fresh_interactions,
    }), media_type="application/json")


@router.get("/items/{item_id}/similar", response_model=SimilarResponse, responses=NOT_FOUND)
async def get_similar(
    item_id: Annotated[str, Path(min_length=1, max_length=128)],
    services: Annotated[Services, Depends(get_services)],
    k: K = 10,
    exclude: ItemList = [],  # noqa: B006
    filter: Filters = [],  # noqa: B006, A002
) -> SimilarResponse:
    """Items most like ``item_id``: closest factors (cosine; ALS, new items included) or the items
    its interactions score most (EASE)."""
    catalogue = services.catalogue()
    if catalogue is None:
        raise HTTPException(404, detail="no model is loaded yet")
    query = rec.Query(k=k, exclude=frozenset(exclude), filters=_filters(filter))
    items = rec.similar(catalogue, services.attributes, item_id, query)
    if items is None:
        raise HTTPException(404, detail=f"item_id {item_id!r} is unknown to model {catalogue.model.version}")
    return SimilarResponse(
        item_id=item_id, items=_items(items), model_version=catalogue.model.version,
        model_family=catalogue.model.family,
    )


@router.get("/trending", response_model=TrendingResponse)
async def get_trending(
    services: Annotated[Services, Depends(get_services)],
    k: K = 10,
    country: Country = None,
    device: Device = None,
    age_band: AgeBand = None,
    filter: Filters = [],  # noqa: B006, A002
) -> TrendingResponse:
    """Trending items of a segment (country, else age band, else device), else global: each item's events in the
    speed layer's sliding window (the last ``speed_trending_window_s``, starting at ``window_start``)."""
    segments = _segments(country=country, age_band=age_band, device=device)
    filters = _filters(filter)
    attributes = services.attributes
    found = rec.trending(services.speed_view, segments, k, lambda item: attributes.available(item) and (
        not filters or attributes.matches(item, filters)))
    items, strategy, segment, window = found if found is not None else ([], None, None, None)
    return TrendingResponse(
        items=_items(items), strategy=strategy, segment=segment, window_start=window,
        speed_view=services.speed_view.position(),
    )
