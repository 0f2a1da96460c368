"""``lambdarec evaluate FILE``: benchmark the product on your own interactions, through its own pipeline.

The file (any layout ``lambdarec import`` reads) is split per user: a seeded
random fraction (``--protocol random``, the usual protocol of published
benchmarks) or each user's newest fraction (``--protocol time``). The training
part then goes the way a user's data goes, in a fresh root with the current
settings: ``lambdarec import``, ``lambdarec train`` (spark-submit), and
``lambdarec serve``. Every user with held-out items is asked
``GET /v1/users/{id}/recommendations?k=K`` (seen items excluded, as served), and
the answers are scored against the held-out items next to a popularity baseline
(the most popular training items the user has not seen).

Metrics at k: nDCG (binary relevance, ideal DCG over min(k, held-out items)),
MAP (average precision over min(k, held-out items)), precision, recall,
catalogue coverage (share of training items recommended to anyone) and novelty
(mean self-information, -log2 of the share of training users who had the item).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import SecretStr

from lambdarec import api_keys, registry
from lambdarec.lake import Lake
from lambdarec.popularity import item_popularity
from batch.interaction_files import FORMATS, BadImportFile, detect_format, read_rows
from lambdarec.processes import Child, free_port, StageError, start_child, wait_for
from deploy.cli import lambdarec_command
from lambdarec.settings import Settings
from lambdarec.submit import spark_submit_env

PROTOCOLS = ("random", "time")


@dataclass(frozen=True)
class Split:
    train: pa.Table
    test: pa.Table


def split(rows: pa.Table, protocol: str, test_fraction: float, seed: int) -> Split:
    """Hold out ``round(n * test_fraction)`` of each user's rows: random (seeded) or their newest."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; one of {PROTOCOLS}")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    users = pc.cast(rows.column("user"), pa.string()).to_numpy(zero_copy_only=False)
    if protocol == "random":
        key = np.random.default_rng(seed).random(len(users))
    elif _numeric(rows):
        key = -pc.cast(rows.column("timestamp"), pa.float64()).to_numpy()
    else:
        raise BadImportFile("the time protocol needs a numeric (unix seconds) timestamp column")
    order = np.lexsort((key, users))  # by user, then random or newest first
    ordered_users = users[order]
    starts = np.flatnonzero(np.r_[True, ordered_users[1:] != ordered_users[:-1]])
    sizes = np.diff(np.r_[starts, len(order)])
    position = np.arange(len(order)) - np.repeat(starts, sizes)
    held = position < np.repeat(np.round(sizes * test_fraction).astype(int), sizes)
    test_mask = np.zeros(len(users), dtype=bool)
    test_mask[order[held]] = True
    return Split(train=rows.filter(pa.array(~test_mask)), test=rows.filter(pa.array(test_mask)))


def _numeric(rows: pa.Table) -> bool:
    kind = rows.column("timestamp").type
    return pa.types.is_integer(kind) or pa.types.is_floating(kind)


def metrics_at_k(
    recommended: dict[str, list[str]],
    relevant: dict[str, set[str]],
    k: int,
    popularity: Counter,
    n_train_users: int,
) -> dict[str, float]:
    """Mean nDCG, MAP, precision, recall at ``k`` over ``relevant``'s users, plus coverage and novelty."""
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    totals: dict[str, float] = dict.fromkeys(("ndcg", "map", "precision", "recall"), 0.0)
    shown: set[str] = set()
    novelty, novelty_n = 0.0, 0
    for user, truth in relevant.items():
        ranked = recommended.get(user, [])[:k]
        hits = np.array([item in truth for item in ranked], dtype=float)
        hits = np.pad(hits, (0, k - len(hits)))
        ideal = min(k, len(truth))
        totals["ndcg"] += float((hits * discounts).sum() / discounts[:ideal].sum())
        precision_at = np.cumsum(hits) / np.arange(1, k + 1)
        totals["map"] += float((precision_at * hits).sum() / ideal)
        totals["precision"] += float(hits.sum() / k)
        totals["recall"] += float(hits.sum() / len(truth))
        shown.update(ranked)
        for item in ranked:
            novelty += -math.log2(max(popularity.get(item, 0), 1) / n_train_users)
            novelty_n += 1
    n = len(relevant)
    out = {f"{name}_at_{k}": totals[name] / n for name in ("ndcg", "map", "precision", "recall")}
    out[f"catalogue_coverage_at_{k}"] = len(shown & set(popularity)) / max(len(popularity), 1)
    out[f"novelty_at_{k}"] = novelty / novelty_n if novelty_n else 0.0
    return out


def popularity_lists(train: pa.Table, users: list[str], k: int) -> tuple[dict[str, list[str]], Counter]:
    """Each user's top ``k`` training items by the platform's popularity (``lambdarec.popularity``),
    excluding their own; and each item's popularity."""
    from scipy import sparse

    user_ids = [str(u) for u in train.column("user").to_pylist()]
    item_ids = [str(i) for i in train.column("item").to_pylist()]
    strength = train.column("rating" if "rating" in train.column_names else "weight")
    user_codes, user_names = _codes(user_ids)
    item_codes, item_names = _codes(item_ids)
    weights = sparse.csr_matrix((pc.cast(strength, pa.float64()).to_numpy(), (user_codes, item_codes)),
                                shape=(len(user_names), len(item_names)))
    counts = item_popularity(weights)
    popularity = Counter({item: int(n) for item, n in zip(item_names, counts, strict=True) if n > 0})
    ranked = sorted(popularity, key=lambda item: (-popularity[item], item))  # ties by id: reproducible
    seen: dict[str, set[str]] = {}
    for user, item in zip(user_ids, item_ids, strict=True):
        seen.setdefault(user, set()).add(item)
    lists = {}
    for user in users:
        mine = seen.get(user, set())
        lists[user] = [item for item in ranked[: k + len(mine)] if item not in mine][:k]
    return lists, popularity


def _codes(values: list[str]) -> tuple[np.ndarray, list[str]]:
    names = sorted(set(values))
    index = {name: code for code, name in enumerate(names)}
    return np.array([index[v] for v in values], dtype=np.int64), names


class Pipeline:
    """The product's own commands in a fresh root: import, train, serve; stopped on exit."""

    def __init__(self, root: Path, settings: Settings):
        self.root = root
        # development mode: an offline benchmark in a scratch root, which it deletes; serving is called with a
        # read key of its own, as a deployment's backend would call it
        self.settings = api_keys.provision(settings.model_copy(update={
            "root": root, "lake_uri": "", "checkpoint_dir": "", "serve_port": free_port(),
            "allow_development_key": True, "auth": "keys", "api_key": SecretStr("")}), "evaluate", ["read"])
        self.env = spark_submit_env(self.settings)
        self.logs = root / "logs"
        self.serving: Child | None = None

    def run(self, name: str, *args: str, timeout_s: float = 3600) -> None:
        child = start_child(name, lambdarec_command(*args), self.logs, self.env)
        try:
            code = child.process.wait(timeout=timeout_s)
        finally:
            child.stop()
        if code != 0:
            raise StageError(f"lambdarec {' '.join(args)} exited with {code}:\n{child.log_tail()}")

    def serve(self) -> str:
        api = f"http://127.0.0.1:{self.settings.serve_port}"
        serving = self.serving = start_child("serving", lambdarec_command("serve"), self.logs, self.env)

        def model_loaded() -> bool:
            serving.check_alive()
            body = httpx.get(f"{api}/ready", timeout=2).json()
            return body.get("model_version") is not None or body.get("model_error") is not None

        wait_for(model_loaded, 300, "serving to load the published model", interval_s=0.5)
        return api

    def stop(self) -> None:
        if self.serving is not None:
            self.serving.stop()


def recommend_all(api: str, users: list[str], k: int,
                  headers: dict[str, str] | None = None) -> tuple[dict[str, list[str]], Counter, int | None]:
    """Every user's served top ``k``, how often each strategy answered, and the model version."""
    lists: dict[str, list[str]] = {}
    strategies: Counter = Counter()
    version = None
    with httpx.Client(base_url=api, timeout=30, headers=headers) as client:
        for user in users:
            response = client.get(f"/v1/users/{user}/recommendations", params={"k": k})
            response.raise_for_status()
            body = response.json()
            lists[user] = [entry["item_id"] for entry in body["items"]]
            strategies[body["strategy"]] += 1
            version = body.get("model_version", version)
    return lists, strategies, version


def evaluate(path: Path, settings: Settings, fmt: str, protocol: str, test_fraction: float, k: int, seed: int,
             root: Path, say=print) -> dict[str, Any]:
    rows = read_rows(path, detect_format(path) if fmt == "auto" else fmt)
    parts = split(rows, protocol, test_fraction, seed)
    root.mkdir(parents=True, exist_ok=True)
    train_file = root / "train.parquet"
    pq.write_table(parts.train, train_file)
    relevant: dict[str, set[str]] = {}
    for user, item in zip(parts.test.column("user").to_pylist(), parts.test.column("item").to_pylist(), strict=True):
        relevant.setdefault(str(user), set()).add(str(item))
    users = sorted(relevant)
    say(f"{rows.num_rows} rows: {parts.train.num_rows} train, {parts.test.num_rows} held out "
        f"({protocol}, {test_fraction:.0%} per user) for {len(users)} users")
    pipeline = Pipeline(root, settings)
    timings = {}
    try:
        for stage, args in (("import", ("import", str(train_file))), ("train", ("train",))):
            started = time.perf_counter()
            say(f"lambdarec {' '.join(args)} …")
            pipeline.run(stage, *args)
            timings[f"{stage}_s"] = round(time.perf_counter() - started, 1)
        api = pipeline.serve()
        started = time.perf_counter()
        served, strategies, version = recommend_all(api, users, k, api_keys.bearer(pipeline.settings))
        timings["recommend_s"] = round(time.perf_counter() - started, 1)
    finally:
        pipeline.stop()
    published = registry.latest_published(Lake(pipeline.settings))
    train_users = {str(u) for u in parts.train.column("user").to_pylist()}
    baseline, popularity = popularity_lists(parts.train, users, k)
    return {
        "file": str(path),
        "protocol": protocol,
        "test_fraction": test_fraction,
        "seed": seed,
        "k": k,
        "rows": rows.num_rows,
        "eval_users": len(users),
        "model_version": version,
        "model": _model_summary(published, settings),
        "strategies": dict(strategies),
        "product": metrics_at_k(served, relevant, k, popularity, len(train_users)),
        "popularity": metrics_at_k(baseline, relevant, k, popularity, len(train_users)),
        **timings,
    }


def _model_summary(row: dict[str, Any] | None, settings: Settings) -> dict[str, Any] | None:
    """The published model's family and parameters, and every family's figure on the training job's own holdout."""
    if row is None:
        return None
    metric = f"model_{settings.gate_metric_name}"
    return {
        "engine": row["engine"],
        "params": {name: value for name, value in row["params"].items() if name != "tuning"},
        "holdout": {metric: row["metrics"].get(metric)},
        "families": [
            {name: value for name, value in entry.items() if name != "tuning"} for entry in row["metrics"].get("families", [])
        ],
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", type=Path, help="CSV, Parquet, MovieLens u.data or ratings.csv file.")
    parser.add_argument("--format", choices=FORMATS, default="auto", help="File layout (default: detect).")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="random",
                        help="random: a seeded random fraction per user; time: each user's newest fraction.")
    parser.add_argument("--test-fraction", type=float, default=0.25, help="Share of each user's rows held out.")
    parser.add_argument("-k", type=int, default=10, help="Length of the recommendation lists scored.")
    parser.add_argument("--seed", type=int, default=42, help="Seed of the random split.")
    parser.add_argument("--root", type=Path, default=None,
                        help="Where the evaluation's lake and logs go (default: a temporary folder, removed after).")
    parser.add_argument("--json", type=Path, default=None, help="Also write the figures to this file.")


def command(args: argparse.Namespace, settings: Settings) -> int:
    root = args.root or Path(tempfile.mkdtemp(prefix="lambdarec-evaluate-"))
    say = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731 - progress on stderr, JSON on stdout
    try:
        figures = evaluate(args.path, settings, args.format, args.protocol, args.test_fraction, args.k, args.seed,
                           root, say)
    except (BadImportFile, StageError, ValueError) as exc:
        print(f"lambdarec evaluate: {exc}", file=sys.stderr)
        return 2
    finally:
        if args.root is None:
            shutil.rmtree(root, ignore_errors=True)
    k = args.k
    for name in (f"ndcg_at_{k}", f"map_at_{k}", f"precision_at_{k}", f"recall_at_{k}",
                 f"catalogue_coverage_at_{k}", f"novelty_at_{k}"):
        say(f"  {name:<24} product {figures['product'][name]:.4f}   popularity {figures['popularity'][name]:.4f}")
    text = json.dumps(figures)
    print(text)
    if args.json:
        args.json.write_text(text)
    return 0
