"""FastAPI dependencies: settings (overridable in tests) and the app's services."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from lambdarec.settings import Settings, get_settings
from serving.ingest import Ingestor
from serving.metrics import Metrics
from serving.model_store import ModelStore
from serving.speed_view import SpeedView

__all__ = ["Services", "get_settings", "get_services"]


@dataclass
class Services:
    """Everything the routes share, built once per app from its settings."""

    settings: Settings
    model_store: ModelStore
    speed_view: SpeedView
    ingestor: Ingestor
    metrics: Metrics

    @classmethod
    def build(cls, settings: Settings) -> "Services":
        return cls(
            settings=settings,
            model_store=ModelStore(settings),
            speed_view=SpeedView(settings),
            ingestor=Ingestor(settings),
            metrics=Metrics(),
        )

    def start(self) -> None:
        self.model_store.start()
        self.speed_view.start()

    def stop(self) -> None:
        self.speed_view.stop()
        self.model_store.stop()
        self.ingestor.close()


def get_services(request: Request) -> Services:
    return request.app.state.services
