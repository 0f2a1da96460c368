"""Every notebook in notebooks/ executes top to bottom against a real lake."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from lambdarec import registry
from deploy.generator import bronze_table, generate_events
from lambdarec.lake import Lake
from schemas.tables import EVENTS

pytestmark = pytest.mark.integration

NOTEBOOKS = sorted((Path(__file__).parents[2] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes(path, settings, monkeypatch):
    events = generate_events(600, n_users=40, n_items=30, n_clusters=3, seed=1)
    lake = Lake(settings)
    lake.append_arrow(EVENTS, bronze_table(events, settings))
    # Registry rows as a training job records them (metrics figures made up for the notebook).
    for version, (model, status) in enumerate([(0.21, "published"), (0.05, "rejected"), (0.24, "published")], 1):
        metrics = {"model_recall_at_10": model, "popularity_recall_at_10": 0.08,
                   "model_ndcg_at_10": model / 2, "popularity_ndcg_at_10": 0.04}
        registry.record_status(lake, version, registry.CANDIDATE, "trained", metrics=metrics, engine="spark-als")
        registry.record_status(lake, version, status, "gate", metrics=metrics, engine="spark-als")
    monkeypatch.setenv("LAMBDAREC_ROOT", str(settings.root))
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs)
    assert f"{len({e['item_id'] for e in events})} items; the top 10%" in text
    assert "3 model versions; 2 published" in text
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 4  # volume, popularity curve, activity, metrics across versions


def test_there_are_notebooks():
    assert NOTEBOOKS
