"""The dashboard: a page at /dashboard that charts the platform live, and the JSON it polls.

Its files are served by named routes rather than a static mount, so every request
has a route template (the metrics label) and the charts can leave the dashboard's
own traffic out. plotly.js comes from the installed ``plotly`` package: no copy of
it lives in this repository.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse

from serving.dashboard.data import Dashboard
from serving.dashboard.models import DashboardData

router = APIRouter(tags=["dashboard"])
PAGE = Path(__file__).resolve().parents[1] / "static" / "dashboard"
CACHE = {"Cache-Control": "max-age=300"}


def plotly_js() -> Path:
    """plotly.min.js inside the installed plotly package (found without importing it)."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("the plotly package is not installed")
    return Path(spec.origin).parent / "package_data" / "plotly.min.js"


ASSETS = {
    "dashboard.js": lambda: PAGE / "dashboard.js",
    "dashboard.css": lambda: PAGE / "dashboard.css",
    "plotly.min.js": plotly_js,
}


async def get_dashboard(request: Request) -> Dashboard:
    return request.app.state.dashboard


@router.get("/dashboard", response_class=HTMLResponse)
def page() -> FileResponse:
    """The dashboard page: live charts of ingestion, the speed job, freshness, serving, trending and models."""
    return FileResponse(PAGE / "index.html", media_type="text/html")


@router.get("/dashboard/data", response_model=DashboardData)
def data(dashboard: Annotated[Dashboard, Depends(get_dashboard)]) -> DashboardData:
    """What the dashboard page polls every 2 s: every chart's series over the last minutes (from Prometheus
    when settings prometheus_url is set, else from serving's own samples), trending and the model registry."""
    return dashboard.data()


@router.get("/dashboard/assets/{name}", include_in_schema=False)
def asset(name: str) -> FileResponse:
    if name not in ASSETS:
        raise HTTPException(404, detail=f"no dashboard asset {name!r}")
    media = "text/css" if name.endswith(".css") else "text/javascript"
    return FileResponse(ASSETS[name](), media_type=media, headers=CACHE)
