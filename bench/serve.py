"""Serving latency under fixed offered load, plus a model swap under load.

Builds a model of 100k items x 64 factors and 1M users in a temporary lake
(pyarrow, no Spark), publishes it as the publish gate does (model bundle into
the lake, then the registry row), and adds an item catalogue for filters and
speed-view updates so the requested users go through fold-in. It starts an
embedded broker and ``lambdarec serve`` (uvicorn, --workers processes) and drives it from
a load generator in a separate process on loopback at fixed rates (open loop:
latency counts from each request's scheduled time, so queueing is not hidden).
The load generator is pinned to the last CPU (--no-pin-loadgen to leave it
free): on a 2-core host the server's threads otherwise delay its sends, and
that delay would count as serving latency. Once serving starts, this process
runs there too: its registry publishes stand in for the batch layer's publish
gate, which runs on another host in a deployment.
Each rate is offered for SETTLE_S + --seconds and only the last --seconds
count: the load generator's first ~150 ms (a fresh process opening its 64
connections) queue requests at any rate, and were most of the 300 rps p99.
The swap phase writes models 2.. (--swaps of them), offers load (by default at the
highest rate whose p99 was under 20 ms), and after
2 x --seconds publishes them one at a time, asking serving to reload after each.
The "before" window runs from the end of the first --seconds (which settle the
load) to the first swap; the requests scheduled while a reload ran are pooled as
"during" (one swap's ~100 requests would make its p99 nearly their maximum). With
--workers, a swap's window runs from the model's publish (workers polling the
registry may swap from then) until /metrics shows every worker on it.
``--no-bundle`` publishes those models without their model bundles, so serving
builds them in its idle-priority loader.
Before serving starts it measures the item index (``serve_ann_ef``; ``--ann-ef 0``
serves exactly): recall@10 of serving's candidate path against exact scoring over
500 stored user vectors, with and without the requests' category filter.
Prints one JSON object.

    .venv/bin/python bench/serve.py [--rates 100,200,300,500] [--seconds 10] [--swaps 3] [--ann-ef 256] [--workers 1]
        [--no-bundle]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import records
from lambdarec import api_keys  # noqa: E402
from deploy.embedded.broker import EmbeddedBroker  # noqa: E402
from lambdarec.kafka_io import make_producer, send_all  # noqa: E402
from lambdarec.processes import wait_for  # noqa: E402
from lambdarec.lake import Lake  # noqa: E402
from serving.metrics_text import samples  # noqa: E402
from lambdarec.model_bundle import local_path, model_bundle_uri, publish_model_bundle  # noqa: E402
from lambdarec.pseudonym import pseudonymise  # noqa: E402
from lambdarec.registry import PUBLISHED, record_status  # noqa: E402
from lambdarec.settings import Settings  # noqa: E402
from schemas.tables import ITEM_CATALOGUE, ITEM_FACTORS, MODEL_INTERACTIONS, USER_FACTORS  # noqa: E402

CATEGORIES = 10
FRESH_USERS = 2000  # users with speed-view interactions: their requests fold in
CONNECTIONS = 64
SETTLE_S = 1.0  # offered before each rate's counted window
SWAP_GAP_S = 1.0  # between publishing a model and its swap, and after the swap
FOLLOW_POLL_S = 1.0  # with --workers, the registry poll of the workers a reload did not reach


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def pin_every_thread(cpus: set[int]) -> None:
    """Run this process's threads (delta-rs's runtime threads included) on ``cpus`` only."""
    for task in os.listdir("/proc/self/task"):
        with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
            os.sched_setaffinity(int(task), cpus)


def factors_column(matrix: np.ndarray) -> pa.Array:
    n, rank = matrix.shape
    offsets = pa.array(np.arange(0, (n + 1) * rank, rank, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(matrix.ravel(), pa.float32()))


def write_model(lake: Lake, version: int, n_items: int, n_users: int, rank: int, per_user: int, seed: int,
                bundle: bool = True, register: bool = True) -> None:
    """Write a model's tables (and model bundle) and, with ``register``, its registry row."""
    rng = np.random.default_rng(seed)
    item_ids = [f"item-{n}" for n in range(n_items)]
    users = [pseudonymise(f"user-{n}", lake.settings.pseudonym_key) for n in range(n_users)]
    y = (rng.standard_normal((n_items, rank)) * 0.1).astype(np.float32)
    x = (rng.standard_normal((n_users, rank)) * 0.1).astype(np.float32)
    v = pa.array(np.full(n_items, version, dtype=np.int64))
    lake.append_arrow(ITEM_FACTORS, pa.table({"model_version": v, "item_index": pa.array(np.arange(n_items, dtype=np.int32)),
                                              "item_id": item_ids, "factors": factors_column(y)}))
    lake.append_arrow(USER_FACTORS, pa.table({
        "model_version": pa.array(np.full(n_users, version, dtype=np.int64)),
        "user_index": pa.array(np.arange(n_users, dtype=np.int32)), "user_id": users, "factors": factors_column(x)}))
    rows = n_users * per_user
    lake.append_arrow(MODEL_INTERACTIONS, pa.table({
        "model_version": pa.array(np.full(rows, version, dtype=np.int64)),
        "user_index": pa.array(np.repeat(np.arange(n_users, dtype=np.int32), per_user)),
        "item_index": pa.array(rng.integers(0, n_items, rows, dtype=np.int32)),
        "rating": pa.array(rng.choice([1.0, 2.0, 4.0, 8.0], rows).astype(np.float32))}))
    if bundle:  # as the publish gate does: the model bundle goes into the lake before the registry row
        publish_model_bundle(lake.settings, {"model_version": version, "source_events_version": version * 10,
                                       "params": model_params(rank)})
    if register:
        publish(lake, version, n_items, n_users, rank, per_user)


def model_params(rank: int) -> dict:
    return {"reg": 0.05, "alpha": 10.0, "rank": rank}


def publish(lake: Lake, version: int, n_items: int, n_users: int, rank: int, per_user: int) -> None:
    """The registry row that publishes a written model: what the gate appends last."""
    record_status(lake, version, PUBLISHED, "bench", source_events_version=version * 10, params=model_params(rank),
                  n_users=n_users, n_items=n_items, n_interactions=n_users * per_user)


def write_catalogue(lake: Lake, n_items: int) -> None:
    now = datetime.now(UTC)
    lake.append_arrow(ITEM_CATALOGUE, pa.Table.from_pylist(
        [{"item_id": f"item-{n}", "attributes": [("category", f"c{n % CATEGORIES}")], "updated_at": now}
         for n in range(n_items)], schema=ITEM_CATALOGUE.schema))


def push_fresh(settings: Settings, n_items: int) -> None:
    """Speed-view interactions (newer than every model) for the first FRESH_USERS users."""
    rng = np.random.default_rng(7)
    producer = make_producer(settings)
    rows = [{"user_id": pseudonymise(f"user-{u}", settings.pseudonym_key), "item_id": f"item-{i}",
             "event_type": "purchase", "weight": 8.0, "occurred_at": datetime.now(UTC).isoformat(),
             "event_id": f"bench-{u}-{n}"}
            for u in range(FRESH_USERS) for n, i in enumerate(rng.integers(0, n_items, 3))]
    messages = [{"kind": "user_interactions", "query_id": "bench", "batch_id": n, "events_version": 10_000,
                 "rows": rows[start:start + 500]} for n, start in enumerate(range(0, len(rows), 500))]  # < 1 MB each
    send_all(producer, settings.topic_speed_updates, [(None, json.dumps(message).encode()) for message in messages])
    producer.close()


def floor(n_items: int, rank: int, repeats: int = 300) -> dict:
    """The bare numpy score + top-k for one user, and implicit's topk on the same data."""
    rng = np.random.default_rng(0)
    y = rng.standard_normal((n_items, rank)).astype(np.float32)
    x = rng.standard_normal(rank).astype(np.float32)

    def numpy_once():
        scores = y @ x
        best = np.argpartition(-scores, 9)[:10]
        return best[np.argsort(-scores[best])]

    from implicit.cpu.topk import topk

    def implicit_once():
        return topk(y, x[None, :], 10, num_threads=1)

    out = {}
    with threadpool_limits(1, user_api="blas"):  # as the server runs
        for name, fn in (("numpy", numpy_once), ("implicit_topk", implicit_once)):
            out[name] = _median_ms(fn, repeats)
    return out


def _median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return round(1000 * float(np.median(times)), 3)


def index_recall(settings: Settings, version: int, samples: int = 500) -> dict:
    """recall@10 of serving's ranking (``Catalogue.top``) with the item index against exact scoring,
    over stored user vectors excluding their seen items: unfiltered, with the requests' category
    filter (a tenth of the items) and with half the categories; how often the index supplied the
    candidates (a narrow filter's items are scored exactly instead), and each way's median time."""
    from serving.views.catalogue import build
    from serving.views.model import open_model
    from serving.views.speed.view import SpeedView

    model = open_model(local_path(model_bundle_uri(settings, version)), 0.0, ann_ef=settings.serve_ann_ef)
    catalogue = build(model, SpeedView(settings))
    exact = build(replace(model, item_index=None), SpeedView(settings))
    category = np.asarray([int(item.rsplit("-", 1)[1]) % CATEGORIES for item in model.item_ids])
    rng = np.random.default_rng(11)
    cases = {"unfiltered": lambda user: None, "category_filter": lambda user: category == user % CATEGORIES,
             "half_the_categories": lambda user: (category + user) % 2 == 0}
    out = {}
    with threadpool_limits(1, user_api="blas"):
        for name, allowed_for in cases.items():
            recalls, by_index, times = [], 0, {"index": [], "exact": []}
            for user in rng.choice(len(model.user_positions), samples, replace=False):
                vector, blocked, allowed = model.user_factors[user], np.unique(model.history(user)[0]), allowed_for(user)
                plan = catalogue.candidates(vector, 10, blocked, allowed)
                by_index += plan is not None and not plan[1]
                found = {}
                for path, ranked in (("index", catalogue), ("exact", exact)):
                    started = time.perf_counter()
                    found[path] = ranked.top(vector, 10, blocked, allowed)[0]
                    times[path].append(time.perf_counter() - started)
                recalls.append(len(set(found["index"]) & set(found["exact"])) / 10)
            out[name] = {"recall_at_10": round(float(np.mean(recalls)), 4), "index_share": by_index / samples,
                         **{f"{path}_median_ms": round(1000 * float(np.median(t)), 3) for path, t in times.items()}}
    return {"ef": settings.serve_ann_ef, "samples": samples, **out}


# -- load generator (separate process) --------------------------------------------------


async def _load(port: int, rate: float, seconds: float, paths: list[str], token: str, out: list) -> None:
    pool: asyncio.Queue = asyncio.Queue()
    for _ in range(CONNECTIONS):
        pool.put_nowait(await asyncio.open_connection("127.0.0.1", port))

    async def one(path: str, scheduled: float) -> None:
        reader, writer = await pool.get()
        status = 0
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length"))
            await reader.readexactly(length)
            pool.put_nowait((reader, writer))
        except (OSError, asyncio.IncompleteReadError, StopIteration, ValueError):
            pool.put_nowait(await asyncio.open_connection("127.0.0.1", port))
        out.append((scheduled, time.perf_counter() - scheduled, status))

    start = time.perf_counter() + 0.05
    tasks = []
    for n in range(int(rate * seconds)):
        scheduled = start + n / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(paths[n % len(paths)], scheduled)))
    await asyncio.gather(*tasks)


def loadgen(port: int, rate: float, seconds: float, paths: list[str], token: str, queue, cpus: set[int] | None) -> None:
    if cpus:
        os.sched_setaffinity(0, cpus)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    # The generator's own garbage collection, over the tasks and results it piles up, paused it for up
    # to 100 ms, and every reply that came in meanwhile counted that pause as serving latency.
    gc.disable()
    out: list = []
    asyncio.run(_load(port, rate, seconds, paths, token, out))
    queue.put(out)


def offer(port: int, rate: float, seconds: float, paths: list[str], token: str, cpus: set[int] | None,
          during=None) -> list:
    """Run the load generator (on ``cpus`` if given) at ``rate`` for ``seconds``, each request with the API key
    ``token`` as a product backend sends it; ``during()`` runs here meanwhile."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=loadgen, args=(port, rate, seconds, paths, token, queue, cpus))
    process.start()
    extra = during() if during else None
    results = queue.get()
    process.join()
    return results if during is None else (results, extra)


def after(results: list, seconds: float) -> list:
    """The results of requests scheduled ``seconds`` or more after the first one."""
    start = min(r[0] for r in results)
    return [r for r in results if r[0] >= start + seconds]


def summary(results: list) -> dict:
    latencies = np.asarray([r[1] for r in results]) * 1000
    errors = sum(1 for r in results if r[2] != 200)
    return {
        "requests": len(results),
        "p50_ms": round(float(np.percentile(latencies, 50)), 2),
        "p95_ms": round(float(np.percentile(latencies, 95)), 2),
        "p99_ms": round(float(np.percentile(latencies, 99)), 2),
        "error_rate": round(errors / max(len(results), 1), 5),
    }


def served_version(client: httpx.Client) -> float | None:
    return samples(client.get("/metrics").text).get(("lambdarec_model_version", ()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--rank", type=int, default=64)
    parser.add_argument("--per-user", type=int, default=5, help="Training interactions per user.")
    parser.add_argument("--rates", default="100,200,300,500")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--swap-rate", type=float, default=None,
                        help="Rate offered during the swaps; default: the highest rate with p99 under 20 ms "
                             "(else the lowest rate offered).")
    parser.add_argument("--swaps", type=int, default=3,
                        help="Models swapped in one after another under the same load; the requests during all "
                             "swaps are pooled.")
    parser.add_argument("--pin-loadgen", action=argparse.BooleanOptionalAction, default=True,
                        help="Run the load generator (and, once serving starts, this process) on the last CPU only "
                             "(default), as a client with its own CPU; unpinned, the server's threads delay its sends, "
                             "and that delay counts as latency.")
    parser.add_argument("--ann-ef", type=int, default=Settings.model_fields["serve_ann_ef"].default,
                        help="Serving's item-index search list (serve_ann_ef); 0 scores every item exactly.")
    parser.add_argument("--workers", type=int, default=1,
                        help="Serving processes (lambdarec serve --workers); the workers a reload misses swap on "
                             "their registry poll (FOLLOW_POLL_S), inside the swap's window.")
    parser.add_argument("--no-bundle", action="store_true",
                        help="Publish the swapped-in model without its model bundle, so serving builds it itself.")
    parser.add_argument("--records", type=Path, default=records.RECORDS, help="Where the dated record goes.")
    args = parser.parse_args()
    record = records.start("serve", vars(args))

    root = Path(tempfile.mkdtemp(prefix="lambdarec-bench-serve-"))
    settings = Settings(root=root, embedded_broker_port=free_port(), embedded_controller_port=free_port(),
                        serve_ann_ef=args.ann_ef, allow_development_key=True)
    lake = Lake(settings)
    token = api_keys.create(lake, "bench: load", ["read"])[1]  # the requests carry a key, as deployed
    admin = {"Authorization": f"Bearer {api_keys.create(lake, 'bench: reload', ['admin'])[1]}"}
    cpus = {os.cpu_count() - 1} if args.pin_loadgen and os.cpu_count() > 1 else None
    figures: dict = {"items": args.items, "users": args.users, "rank": args.rank, "cpus": os.cpu_count(),
                     "workers": args.workers,
                     "loadgen_cpus": sorted(cpus) if cpus else "any", "settle_s": SETTLE_S}
    started = time.perf_counter()
    write_model(lake, 1, args.items, args.users, args.rank, args.per_user, seed=1)
    write_catalogue(lake, args.items)
    figures["write_model_s"] = round(time.perf_counter() - started, 1)
    figures["floor_ms"] = floor(args.items, args.rank)
    if settings.serve_ann_ef:
        figures["item_index"] = index_recall(settings, 1)

    broker = EmbeddedBroker(settings).start()
    port = free_port()
    env = {**os.environ, "LAMBDAREC_ROOT": str(root), "LAMBDAREC_EMBEDDED_BROKER_PORT": str(settings.embedded_broker_port),
           "LAMBDAREC_SERVE_MODEL_POLL_S": str(FOLLOW_POLL_S) if args.workers > 1 else "3600",
           "LAMBDAREC_SERVE_ANN_EF": str(args.ann_ef), "LAMBDAREC_ALLOW_DEVELOPMENT_KEY": "true"}
    server_log = (root / "serving.log").open("wb")
    server = subprocess.Popen([sys.executable, "-m", "deploy.cli", "serve", "--port", str(port),
                               "--workers", str(args.workers), "--log-level", "warning"],
                              env=env, stderr=server_log)
    if cpus:  # from here on this process is a client too: its publishes stand in for the batch layer's gate
        pin_every_thread(cpus)
    try:
        base = f"http://127.0.0.1:{port}"
        started = time.perf_counter()
        push_fresh(settings, args.items)
        def caught_up() -> bool:
            if server.poll() is not None:
                raise RuntimeError(f"serving exited {server.returncode}: see {root / 'serving.log'}")
            ready = httpx.get(f"{base}/ready", timeout=5).json()
            view = ready["speed_view"]
            return ready["ready"] and view["lag_records"] == 0 and view["age_ms"] is not None

        wait_for(caught_up, 600, "serving to load the model and catch up", interval_s=0.5)
        figures["load_model_s"] = round(time.perf_counter() - started, 1)
        paths = [f"/v1/users/user-{u}/recommendations?k=10&filter=category:c{u % CATEGORIES}" for u in range(FRESH_USERS)]
        check = httpx.get(base + paths[0], headers={"Authorization": f"Bearer {token}"}, timeout=10).json()
        figures["strategy"] = check["strategy"]
        offer(port, 50, 2, paths, token, cpus)  # warm-up
        rates = {}
        for rate in [float(r) for r in args.rates.split(",")]:
            rates[str(int(rate))] = summary(after(offer(port, rate, SETTLE_S + args.seconds, paths, token, cpus), SETTLE_S))
        figures["rates"] = rates
        under = [int(r) for r, s in rates.items() if s["p99_ms"] < 20 and s["error_rate"] == 0]
        figures["highest_rate_p99_under_20ms"] = max(under, default=None)
        p50_300 = rates.get("300", next(iter(rates.values())))["p50_ms"]
        figures["p50_over_floor"] = round(p50_300 / figures["floor_ms"]["numpy"], 2)

        if args.swaps:
            started = time.perf_counter()
            swapped = list(range(2, 2 + args.swaps))
            for version in swapped:  # written now; each is published just before its swap
                write_model(lake, version, args.items, args.users, args.rank, args.per_user, seed=version,
                            bundle=not args.no_bundle, register=False)
            os.sync()  # their ~0.5 GB each of dirty pages are on disk before the "before" window
            figures["write_swapped_models_s"] = round(time.perf_counter() - started, 1)

            def swaps() -> list:
                # the client (its TLS context alone is ~15 ms of CPU) and its connection are made outside the windows
                with httpx.Client(base_url=base, headers=admin, timeout=600) as client:
                    time.sleep(2 * args.seconds)  # the first --seconds settle the load and are not counted
                    windows = []
                    for version in swapped:
                        publish(lake, version, args.items, args.users, args.rank, args.per_user)
                        published_at = time.perf_counter()
                        client.get("/health")  # connects: an idle keep-alive connection is closed after 5 s
                        time.sleep(SWAP_GAP_S)
                        reloaded_at = time.perf_counter()
                        response = client.post("/admin/reload")
                        # with --workers, the workers polling the registry may swap from the publish on, and those
                        # the reload missed swap on their next poll: the window lasts until the served version (the
                        # oldest over workers) is the new one
                        began = published_at if args.workers > 1 else reloaded_at
                        def every_worker_on(swapped: int = version) -> bool:
                            return served_version(client) == swapped

                        wait_for(every_worker_on, 30, f"every worker on model {version}", interval_s=0.25)
                        windows.append((version, began, time.perf_counter(), response.json()))
                        time.sleep(SWAP_GAP_S)
                    return windows

            followers_s = FOLLOW_POLL_S if args.workers > 1 else 0.0
            duration = 3 * args.seconds + args.swaps * (2 * SWAP_GAP_S + followers_s + 1)
            swap_rate = args.swap_rate or float(figures["highest_rate_p99_under_20ms"] or min(float(r) for r in rates))
            results, windows = offer(port, swap_rate, duration, paths, token, cpus, during=swaps)
            first = windows[0][1]
            before = [r for r in after(results, args.seconds) if r[0] + r[1] < first]
            per_swap = [[r for r in results if began <= r[0] <= ended] for _, began, ended, _ in windows]
            during = [r for window in per_swap for r in window]
            figures["swap"] = {
                "rate": swap_rate,
                "model_bundle": "built by serving" if args.no_bundle else "published with the model",
                "swaps": [
                    {"model_version": version, "reload": reloaded, "swap_s": round(ended - began, 2),
                     "requests": len(window), "max_ms": round(1000 * max((r[1] for r in window), default=0), 2)}
                    for (version, began, ended, reloaded), window in zip(windows, per_swap, strict=True)
                ],
                "before": summary(before),
                "during": summary(during) if during else None,
                "failed_requests": sum(1 for r in results if r[2] != 200),
                "p99_ratio_during_over_before": round(summary(during)["p99_ms"] / summary(before)["p99_ms"], 2)
                if during and before else None,
            }
    finally:
        server.terminate()
        server.wait(30)
        broker.stop()
    records.write({**record, "figures": figures}, args.records)
    shutil.rmtree(root, ignore_errors=True)  # ~0.8 GB of models per run; kept only when a run fails, for its logs
    return 0


if __name__ == "__main__":
    sys.exit(main())
