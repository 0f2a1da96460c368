"""FastAPI dependencies: settings (overridable in tests) and the app's services."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from lambdarec.lake import Lake
from lambdarec.settings import Settings
from serving.idle_gate import IdleGate
from serving.ingest import Ingestor
from serving.item_attributes import ItemAttributes
from serving.metrics import Metrics
from serving.model import Model
from serving.model_store import ModelStore
from serving.catalogue import Catalogue, CatalogueCache
from serving.catalogue_changes import CatalogueChanges
from serving.consents import Consents
from serving.erasures import Erasures
from serving.recommend import Query, Recommendation, recommend
from serving.poller import Poller
from serving.rate_limit import RateLimiter
from serving.speed_bootstrap import bootstrap
from serving.speed_view import SpeedView
from serving.user_profiles import UserProfiles

__all__ = ["Services", "get_services"]


@dataclass
class Services:
    """Everything the routes share, built once per app from its settings."""

    settings: Settings
    lake: Lake
    model_store: ModelStore
    speed_view: SpeedView
    catalogues: CatalogueCache
    attributes: ItemAttributes
    catalogue_changes: CatalogueChanges | None  # None: serve_follow_cdc is off
    ingestor: Ingestor
    rate_limiter: RateLimiter
    metrics: Metrics
    pollers: tuple[Poller, ...]
    idle_gate: IdleGate
    erasures: Erasures
    consents: Consents
    profiles: UserProfiles

    @classmethod
    def build(cls, settings: Settings) -> "Services":
        lake = Lake(settings)
        metrics = Metrics()
        speed_view = SpeedView(settings, on_fresh=metrics.freshness.observe)
        catalogues, attributes = CatalogueCache(), ItemAttributes(lake)
        idle_gate = IdleGate()

        def prepare(model: Model) -> None:
            """Build a new model's catalogue and cached filter masks before requests see it."""
            attributes.prepare(catalogues.get(model, speed_view, idle_gate.pause), idle_gate.pause)

        model_store = ModelStore(settings, lake, prepare=prepare, pause=idle_gate.pause)
        erasures, consents = Erasures(lake, speed_view), Consents(lake, speed_view)
        profiles = UserProfiles(lake)
        return cls(
            settings=settings,
            lake=lake,
            model_store=model_store,
            speed_view=speed_view,
            catalogues=catalogues,
            attributes=attributes,
            catalogue_changes=CatalogueChanges(settings, attributes) if settings.serve_follow_cdc else None,
            ingestor=Ingestor(settings),
            rate_limiter=RateLimiter(settings.ingest_rate_limit_per_s, settings.ingest_rate_burst),
            metrics=metrics,
            # The view gauges are set on each poll, not only when scraped: under --workers a scrape
            # reaches one worker and shows the others' gauges as they last set them.
            pollers=(Poller(settings.serve_model_poll_s, [model_store.reload, erasures.reload, consents.reload,
                                                          lambda: metrics.observe_views(model_store, speed_view)]),
                     Poller(settings.serve_catalogue_poll_s, [attributes.reload, profiles.reload])),
            idle_gate=idle_gate,
            erasures=erasures,
            consents=consents,
            profiles=profiles,
        )

    def catalogue(self) -> Catalogue | None:
        """The serving model's catalogue with new items folded in, or None before any model."""
        model = self.model_store.current  # read once: a concurrent swap cannot mix versions
        return None if model is None else self.catalogues.get(model, self.speed_view)

    def recommend(self, user_key: str, query: Query) -> Recommendation:
        """One user's answer as the route gives it: model and speed view, erasures and consent applied."""
        catalogue = self.catalogue()
        erased = catalogue is not None and self.erasures.hides(user_key, catalogue.model.source_events_version)
        return recommend(catalogue, self.speed_view, self.attributes, user_key, query, erased,
                         personal=self.consents.personalises(user_key), profile=self.profiles.get(user_key),
                         newcomer_slots=self.settings.serve_newcomer_slots)

    def ready(self) -> bool:
        return self.model_store.current is not None and self.speed_view.following

    def start(self) -> None:
        for poller in self.pollers:
            poller.start()
        self.speed_view.start(bootstrap=lambda view: bootstrap(self.lake, view))
        if self.catalogue_changes is not None:
            self.catalogue_changes.start()

    def stop(self) -> None:
        if self.catalogue_changes is not None:
            self.catalogue_changes.stop()
        self.speed_view.stop()
        for poller in self.pollers:
            poller.stop()
        self.ingestor.close()


async def get_services(request: Request) -> Services:
    """Async, so FastAPI resolves it on the event loop rather than handing each request to a thread."""
    return request.app.state.services
