"""`lambdarec evaluate` end to end, as a user benchmarks the product on a ratings file.

Real processes throughout: `lambdarec import`, `lambdarec train` (spark-submit, default
settings: every model family, tuning, refit) and `lambdarec serve`, asked for every
user's recommendations. The file is MovieLens' u.data layout with planted taste groups,
so the product must beat popularity clearly.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from deploy.generator import World

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_evaluate_imports_trains_serves_and_scores_every_user(tmp_path):
    users, items = World(n_users=200, n_items=300, n_clusters=6, seed=21).interactions(6000)
    rng = np.random.default_rng(21)
    lines = sorted({(int(u) + 1, int(i) + 1) for u, i in zip(users, items, strict=True)})
    ratings = tmp_path / "u.data"
    ratings.write_text("".join(
        f"{u}\t{i}\t{rng.integers(1, 6)}\t{880_000_000 + n * 60}\n" for n, (u, i) in enumerate(lines)
    ))
    figures_path = tmp_path / "figures.json"
    done = subprocess.run(
        [sys.executable, "-m", "deploy.cli", "evaluate", str(ratings), "--json", str(figures_path),
         "--root", str(tmp_path / "evaluate")],
        capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    figures = json.loads(figures_path.read_text())
    assert figures == json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["eval_users"] > 150 and sum(figures["strategies"].values()) == figures["eval_users"]
    product, popularity = figures["product"], figures["popularity"]
    assert product["ndcg_at_10"] > 1.5 * popularity["ndcg_at_10"], figures
    model = figures["model"]
    assert [entry["family"] for entry in model["families"]] == ["ease", "als"]
    assert model["params"]["family"] in ("ease", "als")
    expected = {"ease": {"neighbours"}, "als": {"model", "fold_in"}}[model["params"]["family"]]
    assert set(figures["strategies"]) <= expected
