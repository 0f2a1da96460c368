"""FastAPI dependencies: settings (overridable in tests) and the app's services."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from lambdarec.api_keys import KeyRing
from lambdarec.audit import GroupWriter
from lambdarec.lake import Lake
from lambdarec.settings import Settings
from serving.idle_gate import IdleGate
from serving.ingest import Ingestor
from serving.views.item_attributes import ItemAttributes
from serving.metrics import Metrics
from serving.views.model import Model
from serving.views.model_store import ModelStore
from serving.views.catalogue import Catalogue, CatalogueCache
from serving.views.catalogue_changes import CatalogueChanges
from serving.views.consents import Consents
from serving.views.erasures import Erasures
from serving.recommend import Query, Recommendation, recommend
from serving.poller import Poller
from serving.rate_limit import RateLimiter, shared_table
from serving.views.speed.bootstrap import bootstrap
from serving.views.speed.view import SpeedView
from serving.views.user_profiles import UserProfiles
from serving.views.speed.recall import UserRecall

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
    event_rate: RateLimiter  # POST /events and /events/batch, one token an event
    consent_rate: RateLimiter  # POST /users/{id}/consent, one token a change
    metrics: Metrics
    pollers: tuple[Poller, ...]
    idle_gate: IdleGate
    erasures: Erasures
    consents: Consents
    profiles: UserProfiles
    recall: UserRecall  # reads users the speed view evicted back from the lake before their answer
    keys: KeyRing  # the live API keys (serving.api.security), reloaded on the catalogue poll
    audit: GroupWriter  # the audit log's group-commit writer (serving.api.audit_trail)

    @classmethod
    def build(cls, settings: Settings) -> "Services":
        lake = Lake(settings)
        metrics = Metrics()
        speed_view = SpeedView(settings, on_fresh=metrics.freshness.observe,
                               on_evict=lambda entry, reason, n: metrics.speed_view_evictions.labels(entry, reason).inc(n))
        catalogues = CatalogueCache(settings.serve_foldin_items, settings.serve_foldin_interval_s)
        attributes = ItemAttributes(lake)
        idle_gate = IdleGate()

        def prepare(model: Model) -> None:
            """Build a new model's catalogue and cached filter masks before requests see it."""
            attributes.prepare(catalogues.get(model, speed_view, idle_gate.pause), idle_gate.pause)

        model_store = ModelStore(settings, lake, prepare=prepare, pause=idle_gate.pause)
        erasures = Erasures(lake, speed_view, on_receipts=model_store.drop_cached)
        consents = Consents(lake, speed_view)
        profiles = UserProfiles(lake)
        buckets = shared_table(settings.serve_rate_table_slots)  # the rate limits', shared by this run's workers
        keys = KeyRing(lake)
        return cls(
            settings=settings,
            lake=lake,
            model_store=model_store,
            speed_view=speed_view,
            catalogues=catalogues,
            attributes=attributes,
            catalogue_changes=CatalogueChanges(settings, attributes) if settings.serve_follow_cdc else None,
            ingestor=Ingestor(settings),
            event_rate=RateLimiter(buckets, "events", settings.ingest_rate_limit_per_s, settings.ingest_rate_burst,
                                   "events"),
            consent_rate=RateLimiter(buckets, "consent", settings.consent_rate_limit_per_s,
                                     settings.consent_rate_burst, "consent changes"),
            metrics=metrics,
            # The view gauges are set on each poll, not only when scraped: under --workers a scrape
            # reaches one worker and shows the others' gauges as they last set them.
            pollers=(Poller(settings.serve_model_poll_s, [model_store.reload, erasures.reload, consents.reload,
                                                          lambda: metrics.observe_views(model_store, speed_view)]),
                     Poller(settings.serve_catalogue_poll_s, [keys.reload, attributes.reload, profiles.reload])),
            idle_gate=idle_gate,
            erasures=erasures,
            consents=consents,
            profiles=profiles,
            recall=UserRecall(lake, speed_view, settings.serve_recall_timeout_s,
                              on_outcome=lambda outcome: metrics.speed_view_recalls.labels(outcome).inc()),
            keys=keys,
            audit=GroupWriter(lake),
        )

    def catalogue(self) -> Catalogue | None:
        """The serving model's catalogue with new items folded in, or None before any model."""
        model = self.model_store.current  # read once: a concurrent swap cannot mix versions
        return None if model is None else self.catalogues.current(model, self.speed_view)

    async def recall_evicted(self, user_key: str) -> None:
        """Before a user's answer: read back from the lake what the speed view evicted of theirs and the
        serving model lacks (bounded wait, off the event loop; ``serving.views.speed.recall``)."""
        model = self.model_store.current
        await self.recall.ensure(user_key, None if model is None else model.source_events_version)

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
        self.keys.reload()  # before the first request, not a poll later
        for poller in self.pollers:
            poller.start()
        self.speed_view.start(bootstrap=lambda view: bootstrap(self.lake, view, self.metrics.speed_rows_skipped))
        self.catalogues.start(lambda: self.model_store.current, self.speed_view, self.idle_gate.pause)
        if self.catalogue_changes is not None:
            self.catalogue_changes.start()

    def stop(self) -> None:
        if self.catalogue_changes is not None:
            self.catalogue_changes.stop()
        self.speed_view.stop()
        self.catalogues.stop()
        self.recall.close()
        for poller in self.pollers:
            poller.stop()
        self.ingestor.close()
        self.audit.close()


async def get_services(request: Request) -> Services:
    """Async, so FastAPI resolves it on the event loop rather than handing each request to a thread."""
    return request.app.state.services
