"""CDC benchmark: change-to-serving latency and changes applied per second, on the real parts.

Starts the embedded broker, the embedded Postgres, Kafka Connect with Debezium
(``lambdarec cdc``), ``spark-submit speed/job.py`` (its dimensions query MERGEs the
changes) and ``lambdarec serve`` in a temporary root, with a published model over
--items items that Postgres also holds. Then:

- latency: --probes times, sets the top item of a user's list unavailable in
  Postgres and times from the commit until no answer for that user holds it
  (``change_to_serving_ms``), and until its row in ``item_catalogue`` says so
  (``change_to_lake_ms``), while other users' events are posted to the API at
  --load-events-per-s (the demo's rate; 0 for none), so the speed job is busy;
- throughput: commits --burst updates (one per row, 100 per transaction) and
  times until ``item_catalogue`` holds them all (``changes_per_s``).

Prints one JSON object (medians and p95s over the probes).

    .venv/bin/python bench/cdc.py [--items 2000] [--probes 20] [--burst 20000] [--load-events-per-s 200]
                                  [--no-serve-follow-cdc]  (serving waits for item_catalogue)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext
from functools import partial
from pathlib import Path

import httpx
import psycopg
import pyarrow.compute as pc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import records
from lambdarec import api_keys  # noqa: E402
from deploy.embedded.broker import EmbeddedBroker  # noqa: E402
from deploy.embedded.cdc import KafkaConnect  # noqa: E402
from deploy.event_load import LoadCounts, events_flowing  # noqa: E402
from deploy.generator import World  # noqa: E402
from deploy.demo import percentile  # noqa: E402
from lambdarec.lake import Lake  # noqa: E402
from deploy.embedded.postgres import EmbeddedPostgres  # noqa: E402
from lambdarec.processes import free_port, start_child, wait_for  # noqa: E402
from deploy.cli import lambdarec_command
from lambdarec.pseudonym import pseudonymise  # noqa: E402
from lambdarec.settings import Settings  # noqa: E402
from lambdarec.submit import spark_submit_env, speed_job_command  # noqa: E402
from schemas.tables import ITEM_CATALOGUE  # noqa: E402
from tests.support.serving import write_model  # noqa: E402

USER = "bench-user"


def figures(values: list[float]) -> dict[str, float]:
    return {"p50": round(statistics.median(values)), "p95": round(percentile(values, 95)), "n": len(values)}


def seed(settings: Settings, items: int) -> None:
    """The items in Postgres, and a model over them in which the bench user likes the first ones most."""
    with psycopg.connect(settings.operational_db) as db, db.cursor() as cursor:
        cursor.executemany("INSERT INTO items (item_id, title, price) VALUES (%s, %s, %s)",
                           [(f"item-{n}", f"Item {n}", 10) for n in range(items)])
    vectors = {f"item-{n}": [1.0 / (1 + n), 0.1] for n in range(items)}
    write_model(Lake(settings), 1, -1, vectors, {pseudonymise(USER, settings.pseudonym_key): {"item-0": 1.0}})


def probe(settings: Settings, api: str, probes: int) -> tuple[list[float], list[float]]:
    """Set the user's top item unavailable, time it out of serving and into the lake; then restore it."""
    lake, to_serving, to_lake = Lake(settings), [], []
    with psycopg.connect(settings.operational_db, autocommit=True) as db, \
            httpx.Client(base_url=api, headers=api_keys.bearer(settings)) as client:
        def answer() -> list[str]:
            body = client.get(f"/v1/users/{USER}/recommendations", params={"k": 20}).json()
            return [item["item_id"] for item in body["items"]]

        def on_top(item: str) -> bool:
            return answer()[:1] == [item]

        def restored(item: str) -> bool:
            return lake.read_arrow(ITEM_CATALOGUE, filter=(pc.field("item_id") == item) & pc.field("available")).num_rows > 0

        for _ in range(probes):
            target = answer()[0]
            db.execute("UPDATE items SET available = false WHERE item_id = %s", [target])
            started = time.monotonic()
            served: float | None = None
            landed: float | None = None
            while served is None or landed is None:
                elapsed = (time.monotonic() - started) * 1000
                if landed is None and lake.read_arrow(ITEM_CATALOGUE, filter=(pc.field("item_id") == target)
                                                      & ~pc.field("available")).num_rows:
                    landed = elapsed
                if served is None and target not in answer():
                    served = elapsed
                if elapsed > 60_000:
                    raise TimeoutError(f"{target} was still served 60 s after it was set unavailable")
                time.sleep(0.01)
            to_serving.append(served)
            to_lake.append(landed)
            db.execute("UPDATE items SET available = true WHERE item_id = %s", [target])
            # the model is fixed: once serving has the restore, the item is back on top
            wait_for(partial(on_top, target), 60, f"{target} back at the top of the list", interval_s=0.05)
            wait_for(partial(restored, target), 60, f"{target} available again in the lake", interval_s=0.05)
    return to_serving, to_lake


def burst(settings: Settings, changes: int, items: int) -> float:
    """Changes applied per second: ``changes`` price updates, until item_catalogue holds the last of each."""
    lake = Lake(settings)
    marker = float(1000 + int(time.time()) % 1000) * 100  # a whole price no row holds yet (numeric(12, 2))
    with psycopg.connect(settings.operational_db) as db, db.cursor() as cursor:
        started = time.monotonic()
        for first in range(0, changes, 100):
            cursor.executemany("UPDATE items SET price = %s WHERE item_id = %s",
                               [(marker + n, f"item-{n % items}") for n in range(first, min(first + 100, changes))])
            db.commit()
    last = {n % items: marker + n for n in range(changes)}

    def done() -> bool:
        rows = lake.read_arrow(ITEM_CATALOGUE, filter=pc.field("price") >= marker).select(["item_id", "price"])
        got = dict(zip(rows.column("item_id").to_pylist(), rows.column("price").to_pylist(), strict=True))
        return all(abs(got.get(f"item-{i}", -1) - price) < 1e-6 for i, price in last.items())

    wait_for(done, 600, f"{changes} changes in item_catalogue", interval_s=0.2)
    return changes / (time.monotonic() - started)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--probes", type=int, default=20)
    parser.add_argument("--burst", type=int, default=20_000)
    parser.add_argument("--load-events-per-s", type=int, default=200)
    parser.add_argument("--serve-follow-cdc", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--records", type=Path, default=records.RECORDS, help="Where the dated record goes.")
    args = parser.parse_args(argv)
    record = records.start("cdc", vars(args))
    root = Path(tempfile.mkdtemp(prefix="lambdarec-bench-cdc-"))
    root.chmod(0o711)  # run as root, Postgres runs as the postgres user
    settings = Settings(root=root, embedded_broker_port=free_port(), embedded_controller_port=free_port(),
                        serve_port=free_port(), speed_metrics_port=free_port(), embedded_postgres_port=free_port(),
                        cdc_connect_port=free_port(), allow_development_key=True,
                        serve_follow_cdc=args.serve_follow_cdc)
    settings = api_keys.provision(settings, "bench: cdc", ["ingest", "read"])
    api = f"http://127.0.0.1:{settings.serve_port}"
    env = spark_submit_env(settings)
    with EmbeddedBroker(settings), EmbeddedPostgres(settings), KafkaConnect(settings):
        seed(settings, args.items)
        job = start_child("speed", speed_job_command(settings), root / "logs", env)
        serving = start_child("serving", lambdarec_command("serve"), root / "logs", env)
        try:
            lake = Lake(settings)
            wait_for(lambda: job.check_alive() and lake.exists(ITEM_CATALOGUE)
                     and lake.read_arrow(ITEM_CATALOGUE).num_rows >= args.items, 300, "the snapshot in the lake")
            wait_for(lambda: serving.check_alive() and httpx.get(f"{api}/ready", timeout=1).status_code == 200,
                     120, "serving")
            events = World(n_users=1000, n_items=args.items, n_clusters=10, seed=7).events(60 * args.load_events_per_s)
            started = time.monotonic()
            with events_flowing(f"{api}/v1", events, args.load_events_per_s, api_keys.bearer(settings)) \
                    if args.load_events_per_s else \
                    nullcontext(LoadCounts()) as load:
                to_serving, to_lake = probe(settings, api, args.probes)
            load_rate = load.accepted / (time.monotonic() - started)
            rate = burst(settings, args.burst, args.items)
            records.write({**record, "figures": {
                "change_to_serving_ms": figures(to_serving), "change_to_lake_ms": figures(to_lake),
                "changes_per_s": round(rate), "burst_changes": args.burst, "items": args.items,
                "load_events_per_s": round(load_rate), "serve_follow_cdc": args.serve_follow_cdc,
                "speed_dimensions_trigger_ms": settings.speed_dimensions_trigger_ms,
                "serve_catalogue_poll_s": settings.serve_catalogue_poll_s,
            }}, args.records)
        finally:
            serving.stop()
            job.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
