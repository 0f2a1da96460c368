"""``lambdarec demo``: the whole platform on embedded defaults, end to end, in one command.

It starts the embedded broker (``lambdarec broker``), the speed job
(``spark-submit speed/job.py``) and serving (``lambdarec serve``) as separate
processes, sends generated events through the REST API, trains one model with
``spark-submit batch/train.py``, and shows recommendations for a few users
before and after they act. Every figure in the summary is measured in this run.

It calls serving as a deployment would, with API keys it creates in its own lake:
the product backend's (ingest, consent, read) and the operator's (admin, which is
also ``api_key``, the one lambdarec's own jobs present). The summary names their
ids, never their tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import httpx
from pydantic import SecretStr
from tqdm import tqdm

from lambdarec import api_keys, audit

from deploy import demo_report

from deploy import event_load
from deploy.generator import World, item_id, live_days, user_id
from lambdarec.lake import Lake
from serving.metrics_text import Samples, samples, total
from deploy.embedded.postgres import cluster_dir
from lambdarec.processes import Child, StageError, free_port, start_child, wait_for
from deploy.cli import lambdarec_command
from lambdarec.settings import Settings
from lambdarec.submit import spark_submit_command, spark_submit_env, speed_job_command
from schemas.tables import DEAD_LETTER, EVENTS, ITEM_CATALOGUE

# Records injected straight into Kafka, bypassing the API, to show the dead-letter path.
BAD_RECORDS = (
    b"{this is not json",
    json.dumps({"event_id": "not-a-uuid", "user_id": "u", "item_id": "i", "event_type": "view",
                "occurred_at": "2026-01-01T00:00:00Z"}).encode(),
    json.dumps({"event_id": str(uuid.uuid4()), "user_id": "u", "item_id": "i", "event_type": "teleport",
                "occurred_at": "2026-01-01T00:00:00Z"}).encode(),
)


@dataclass
class Demo:
    settings: Settings
    args: argparse.Namespace
    deadline: float
    summary: dict[str, Any] = field(default_factory=dict)
    stages: list[dict[str, Any]] = field(default_factory=list)
    children: dict[str, Child] = field(default_factory=dict)
    backend: dict[str, str] = field(default_factory=dict)  # the product backend's Authorization header

    @property
    def api(self) -> str:
        return f"http://{self.settings.serve_host}:{self.settings.serve_port}"

    @property
    def admin(self) -> dict[str, str]:
        """The operator's Authorization header (``api_key``, scope admin)."""
        return api_keys.bearer(self.settings)

    def remaining(self, cap: float | None = None) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise StageError("the demo ran out of its --duration")
        return min(left, cap) if cap else left

    def stage(self, name: str, fn, *args) -> Any:
        started = time.monotonic()
        say(f"▸ {name} …")
        try:
            result = fn(*args)
        except Exception as exc:
            self.stages.append({"stage": name, "ok": False, "seconds": round(time.monotonic() - started, 2)})
            raise StageError(f"stage {name!r} failed: {exc}") from exc
        seconds = round(time.monotonic() - started, 2)
        self.stages.append({"stage": name, "ok": True, "seconds": seconds})
        say(f"  done in {seconds:.1f} s")
        return result

    # -- stages ------------------------------------------------------------------

    def start_broker(self) -> None:
        child = self._start("broker", lambdarec_command("broker"))
        wait_for(lambda: child.check_alive() and '"broker_ready"' in child.log_path.read_text(),
                 self.remaining(60), "the embedded broker and its topics")
        say(f"  broker at {self.settings.bootstrap_servers}")

    def start_operational_db(self, world: World) -> None:
        """The embedded Postgres, seeded with the world's items and users, and CDC (Connect + Debezium)."""
        import psycopg

        child = self._start("postgres", lambdarec_command("postgres"))
        wait_for(lambda: child.check_alive() and '"postgres_ready"' in child.log_path.read_text(),
                 self.remaining(60), "the embedded Postgres")
        rng = random.Random(self.args.seed)
        with psycopg.connect(self.settings.operational_db) as db, db.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO items (item_id, title, category, price, attributes) VALUES (%s, %s, %s, %s, %s)",
                [(item_id(n), f"Item {n}", f"category-{world.item_cluster(item_id(n))}", round(rng.uniform(2, 200), 2),
                  json.dumps({"colour": rng.choice(["red", "blue", "green"])})) for n in range(world.n_items)])
            cursor.executemany(
                "INSERT INTO users (user_id, country, age_band, membership) VALUES (%s, %s, %s, %s)",
                [(user_id(n), rng.choice(["DE", "FR", "US", "GB"]), rng.choice(["18-24", "25-34", "35-54", "55+"]),
                  rng.choice(["free", "plus"])) for n in range(world.n_users)])
        connect = self._start("cdc", lambdarec_command("cdc"))
        wait_for(lambda: connect.check_alive() and '"cdc_ready"' in connect.log_path.read_text(),
                 self.remaining(120), "Kafka Connect with the Debezium connector")
        self.summary["operational_items"], self.summary["operational_users"] = world.n_items, world.n_users
        say(f"  Postgres seeded with {world.n_items} items and {world.n_users} users; CDC running")

    def start_speed(self) -> None:
        child = self._start("speed", speed_job_command(self.settings))
        wait_for(lambda: child.check_alive() and '"event": "started"' in child.log_path.read_text(),
                 self.remaining(180), "the speed job to start its query", interval_s=0.2)

    def start_serving(self) -> None:
        child = self._start("serving", lambdarec_command("serve"))
        wait_for(lambda: child.check_alive() and httpx.get(f"{self.api}/health", timeout=1).status_code == 200,
                 self.remaining(60), "serving /health")
        say(f"  serving at {self.api}")

    def send_events(self, world: World) -> None:
        events = list(world.events(self.args.events, days=live_days(self.settings)))  # what the API takes
        sent = accepted = 0
        with httpx.Client(base_url=self.api, timeout=30, headers=self.backend) as client, tqdm(
            total=len(events), unit="ev", desc="  POST /events/batch"
        ) as bar:
            for start in range(0, len(events), self.args.batch_size):
                chunk = events[start : start + self.args.batch_size]
                response = client.post("/events/batch", json=chunk)
                sent += len(chunk)
                if response.status_code != 202:
                    raise StageError(f"POST /events/batch answered {response.status_code}: {response.text[:300]}")
                accepted += len(response.json()["accepted"])
                bar.update(len(chunk))
        self.summary["events_sent"] = sent
        self.summary["events_accepted"] = accepted

    def inject_bad_records(self) -> None:
        from lambdarec.kafka_io import make_producer, send_all

        producer = make_producer(self.settings)
        try:
            send_all(producer, self.settings.topic_events, [(None, raw) for raw in BAD_RECORDS])
        finally:
            producer.close(timeout=5)
        self.summary["bad_records_injected"] = len(BAD_RECORDS)

    def wait_for_lake(self) -> None:
        expected = self.summary["events_accepted"]
        wait_for(lambda: self._check_children() and lake_counts(self.settings)["events"] >= expected,
                 self.remaining(240), f"{expected} events in the lake", interval_s=0.25)
        wait_for(lambda: lake_counts(self.settings)["dead_letter"] >= len(BAD_RECORDS),
                 self.remaining(60), "the injected bad records in dead_letter", interval_s=0.25)

    def train(self) -> dict[str, Any]:
        from lambdarec.registry import latest_published

        child = self._start("train", spark_submit_command(self.settings, "batch/train.py"))
        wait_for(lambda: child.process.poll() is not None, self.remaining(600), "the training job", interval_s=0.5)
        code = child.process.returncode
        if code != 0:
            raise StageError(f"training exited {code}:\n{child.log_tail()}")
        model = latest_published(Lake(self.settings))
        if model is None:
            raise StageError(f"training published no model:\n{child.log_tail()}")
        metrics = model["metrics"] or {}
        self.summary["model_version"] = model["model_version"]
        self.summary["model_engine"] = model["engine"]
        self.summary["model_recall_at_10"] = metrics.get("model_recall_at_10")
        self.summary["popularity_recall_at_10"] = metrics.get("popularity_recall_at_10")
        say(f"  model v{model['model_version']} ({model['engine']}, the best of "
            f"{', '.join(entry['family'] for entry in metrics.get('families', []))}): "
            f"recall@10 {metrics.get('model_recall_at_10'):.3f} vs popularity {metrics.get('popularity_recall_at_10'):.3f}")
        return model

    def load_model(self, version: int) -> None:
        def serving_has_it() -> bool:
            httpx.post(f"{self.api}/admin/reload", headers=self.admin, timeout=30)
            body = httpx.get(f"{self.api}/users/user-0/recommendations", headers=self.backend, timeout=5).json()
            return body["model_version"] == version

        wait_for(serving_has_it, self.remaining(120), f"serving to load model v{version}", interval_s=0.5)

    def probe_freshness(self, world: World) -> None:
        """Each probe user buys an item from another cluster; time until their response reflects it."""
        freshness: list[float] = []
        shown: list[tuple[str, str, Any, Any]] = []
        rng = random.Random(self.args.seed)
        with httpx.Client(base_url=self.api, timeout=10, headers=self.backend) as client:
            for user_index in range(self.args.probes):
                user = f"user-{user_index}"
                before = client.get(f"/users/{user}/recommendations", params={"k": 5}).json()
                item = item_outside_cluster(world, user, {i["item_id"] for i in before["items"]}, rng)
                event = {
                    "event_id": str(uuid.uuid4()), "user_id": user, "item_id": item, "event_type": "purchase",
                    "occurred_at": datetime.now(UTC).isoformat(), "context": {"device": "mobile", "country": "DE"},
                }
                started = time.perf_counter()
                posted = client.post("/events", json=event)
                if posted.status_code != 202:
                    raise StageError(f"POST /events answered {posted.status_code}: {posted.text[:300]}")
                self.summary["events_sent"] += 1
                self.summary["events_accepted"] += len(posted.json()["accepted"])

                def reflected(user=user, before=before):
                    after = client.get(f"/users/{user}/recommendations", params={"k": 5}).json()
                    changed = after["fresh_interactions"] > before["fresh_interactions"] or after["items"] != before["items"]
                    return changed and after

                after = wait_for(reflected, self.remaining(30), f"{user}'s recommendations to reflect a purchase",
                                 interval_s=0.01)
                freshness.append((time.perf_counter() - started) * 1000)
                if len(shown) < 3:
                    shown.append((user, item, before, after))
        self.summary["freshness_ms_p50"] = round(statistics.median(freshness), 1)
        self.summary["freshness_ms_p95"] = round(percentile(freshness, 95), 1)
        self.summary["before_after"] = [
            {"user": user, "bought": item, "changed_after_ms": round(ms, 1),
             "before_strategy": before["strategy"], "before": [i["item_id"] for i in before["items"]],
             "after_strategy": after["strategy"], "after": [i["item_id"] for i in after["items"]]}
            for (user, item, before, after), ms in zip(shown, freshness, strict=False)]
        for example in self.summary["before_after"]:
            say(f"  {example['user']} bought {example['bought']}: their list changed {example['changed_after_ms']} ms "
                f"later ({example['before_strategy']} → {example['after_strategy']}; side by side in the summary)")
        self.summary["example_recommendations"] = {u: [i["item_id"] for i in a["items"]] for u, _, _, a in shown}

    def measure_serving(self, world: World) -> None:
        latencies = []
        with httpx.Client(base_url=self.api, timeout=10, headers=self.backend) as client:
            for n in range(self.args.latency_requests):
                user = f"user-{n % world.n_users}"
                started = time.perf_counter()
                response = client.get(f"/users/{user}/recommendations", params={"k": 10})
                latencies.append((time.perf_counter() - started) * 1000)
                if response.status_code != 200 or not response.json()["items"]:
                    raise StageError(f"GET recommendations for {user}: {response.status_code} {response.text[:200]}")
        self.summary["serve_latency_ms_p50"] = round(statistics.median(latencies), 2)
        self.summary["serve_latency_ms_p99"] = round(percentile(latencies, 99), 2)

    def report_trending(self) -> None:
        """Trending items globally and in one country and one device segment, from the speed layer."""
        def trending(**params) -> dict[str, Any] | None:
            body = httpx.get(f"{self.api}/v1/trending", params={"k": 5, **params}, headers=self.backend,
                             timeout=10).json()
            return body if body["items"] else None

        body = wait_for(lambda: trending() or {}, self.remaining(60), "global trending items from the speed layer",
                        interval_s=0.5)
        self.summary["trending_global"] = [i["item_id"] for i in body["items"]]
        self.summary["trending_window_start"] = body["window_start"]
        for name, value in (("country", "DE"), ("device", "mobile")):
            segment = trending(**{name: value}) or {"items": [], "segment": None}
            self.summary[f"trending_{name}_{value}"] = [i["item_id"] for i in segment["items"]]
        say(f"  trending since {body['window_start']}: {self.summary['trending_global']}")

    def catalogue_to_serving(self, world: World) -> None:
        """Items set unavailable in Postgres, one at a time: how long until no answer holds them
        (CDC → the speed job's MERGE → serving's catalogue check)."""
        import psycopg

        lake = Lake(self.settings)
        wait_for(lambda: lake.exists(ITEM_CATALOGUE) and lake.read_arrow(ITEM_CATALOGUE).num_rows >= world.n_items,
                 self.remaining(120), "the catalogue's snapshot in item_catalogue", interval_s=0.5)
        latencies = []
        with psycopg.connect(self.settings.operational_db, autocommit=True) as db, \
                httpx.Client(base_url=f"{self.api}/v1", timeout=10, headers=self.backend) as client, \
                self.events_flowing(world, self.args.load_events_per_s):
            for n in range(self.args.availability_probes):
                user = user_id(n)

                def answers(user=user) -> set[str]:
                    lists = [client.get(f"/users/{user}/recommendations", params={"k": 10}).json(),
                             client.get("/trending", params={"k": 50}).json()]
                    return {item["item_id"] for body in lists for item in body["items"]}

                target = client.get(f"/users/{user}/recommendations", params={"k": 10}).json()["items"][0]["item_id"]
                db.execute("UPDATE items SET available = false, updated_at = now() WHERE item_id = %s", [target])
                started = time.monotonic()
                def gone(target: str = target, answers=answers) -> bool:
                    return target not in answers()

                wait_for(gone, self.remaining(60), f"{target} to leave every answer", interval_s=0.02)
                latencies.append((time.monotonic() - started) * 1000)
                db.execute("UPDATE items SET available = true, updated_at = now() WHERE item_id = %s", [target])
        self.summary["unavailable_to_serving_ms_p50"] = round(statistics.median(latencies))
        self.summary["unavailable_to_serving_ms_p95"] = round(percentile(latencies, 95))
        say(f"  an item set unavailable in Postgres left every answer in {self.summary['unavailable_to_serving_ms_p50']}"
            f" ms (p50), {self.summary['unavailable_to_serving_ms_p95']} ms (p95) over {len(latencies)} items")

    @contextmanager
    def events_flowing(self, world: World, per_s: int) -> Iterator[None]:
        """Events posted in the background at about ``per_s`` while the block runs (its stage is measured
        under load); they count as sent and accepted like the rest, so the lake check covers them."""
        started = time.monotonic()
        with event_load.events_flowing(self.api, world.events(max(per_s * 60, 1)), per_s, self.backend) as counts:
            yield  # a minute's worth of events, reused with new ids
        self.summary["events_sent"] += counts.sent
        self.summary["events_accepted"] += counts.accepted
        rate = counts.accepted / max(time.monotonic() - started, 1e-9)
        self.summary["load_events_per_s"] = round(rate)
        say(f"  meanwhile {counts.accepted} events were accepted ({rate:.0f}/s)")

    def cold_start_from_attributes(self, world: World) -> None:
        """A user who exists only in Postgres gets their profile segment's trending; items that exist
        only in Postgres (one per category) reach a user whose category affinity they match."""
        import psycopg

        newcomer_user = "newcomer@example.com"
        new_items = {f"new-item-{cluster}": f"category-{cluster}" for cluster in range(world.n_clusters)}
        with psycopg.connect(self.settings.operational_db, autocommit=True) as db, \
                httpx.Client(base_url=f"{self.api}/v1", timeout=10, headers=self.backend) as client:
            started = time.monotonic()
            db.execute("INSERT INTO users (user_id, country, age_band) VALUES (%s, 'FR', '25-34')", [newcomer_user])

            def profile_answer() -> dict[str, Any] | None:
                body = client.get(f"/users/{newcomer_user}/recommendations", params={"k": 5}).json()
                return body if body["strategy"] == "trending_segment" and body["items"] else None

            body = wait_for(profile_answer, self.remaining(60), "the new user's segment trending", interval_s=0.1)
            assert body is not None  # wait_for returns only once its condition is truthy
            self.summary["cold_start_profile_ms"] = round((time.monotonic() - started) * 1000)
            self.summary["cold_start_profile_segment"] = body["segment"]
            say(f"  a user known only to Postgres got {body['segment']} trending after "
                f"{self.summary['cold_start_profile_ms']} ms: {[i['item_id'] for i in body['items']]}")

            started = time.monotonic()
            with db.cursor() as cursor:
                cursor.executemany("INSERT INTO items (item_id, title, category, price) VALUES (%s, %s, %s, 9.99)",
                                   [(item, f"New in {category}", category) for item, category in new_items.items()])
            user = next(user for user in map(user_id, range(world.n_users)) if client.get(
                f"/users/{user}/recommendations", params={"k": 1}).json()["strategy"] in PERSONAL)

            def newcomer() -> dict[str, Any] | None:
                items = client.get(f"/users/{user}/recommendations", params={"k": 10, "explain": True}).json()["items"]
                return next((i for i in items if i["item_id"] in new_items), None)

            item = wait_for(newcomer, self.remaining(60), "a new item in a user's list by its category", interval_s=0.1)
            assert item is not None
        if item["via"] != f"category:{new_items[item['item_id']]}":
            raise StageError(f"{item['item_id']} of {new_items[item['item_id']]} came via {item['via']}")
        self.summary["newcomer_item_ms"] = round((time.monotonic() - started) * 1000)
        self.summary["newcomer_item"] = {"user": user, **item}
        say(f"  {item['item_id']}, known only to Postgres, reached {user}'s list via {item['via']} after "
            f"{self.summary['newcomer_item_ms']} ms")

    def final_counts(self) -> None:
        expected = self.summary["events_accepted"]
        wait_for(lambda: lake_counts(self.settings)["events"] >= expected, self.remaining(60),
                 "the probe events in the lake", interval_s=0.25)
        counts = lake_counts(self.settings)
        self.summary["events_in_lake"] = counts["events"]
        self.summary["duplicates_in_lake"] = counts["events"] - counts["distinct_event_ids"]
        self.summary["dead_letter_rows"] = counts["dead_letter"]
        if counts["events"] != expected or self.summary["duplicates_in_lake"]:
            raise StageError(f"lake holds {counts['events']} events ({self.summary['duplicates_in_lake']} "
                             f"duplicates) for {expected} accepted")
        landed = ("lambdarec_speed_rows_landed_total", (("table", "events"),))

        def speed_metrics() -> Samples | None:
            """The speed job's counters once they count what the lake holds: the sink counts a batch just
            after its commit, so a read right after the lake's count can miss the last batch."""
            found = samples(httpx.get(f"http://127.0.0.1:{self.settings.speed_metrics_port}/metrics", timeout=10).text)
            return found if found.get(landed, 0) >= counts["events"] else None

        speed = wait_for(speed_metrics, self.remaining(30), "the speed job's counters to catch up", interval_s=0.25)
        serving = samples(httpx.get(f"{self.api}/metrics", timeout=10).text)
        self.summary["metrics"] = {
            "speed_events_landed": speed.get(landed, 0),
            "speed_dead_letters": total(speed, "lambdarec_dead_letters_total"),
            "speed_batches": total(speed, "lambdarec_speed_batch_duration_seconds_count"),
            "serving_freshness_observed": total(serving, "lambdarec_freshness_seconds_count"),
        }
        say(f"  metrics: {self.summary['metrics']}")

    def privacy(self) -> None:
        """One user withdraws consent and gets non-personal answers; another is erased: DELETE, the
        erasure job (spark-submit, as the privacy DAG runs it), the receipt; each step in the audit log."""
        admin = self.admin
        withdrawer, erased = user_id(1), user_id(2)
        changed = httpx.post(f"{self.api}/v1/users/{withdrawer}/consent", json={"granted": False},
                             headers=self.backend, timeout=30)
        if changed.status_code != 202:
            raise StageError(f"the consent withdrawal answered {changed.status_code}: {changed.text[:300]}")
        answer = httpx.get(f"{self.api}/v1/users/{withdrawer}/recommendations", headers=self.backend, timeout=5).json()
        self.summary["after_withdrawal_strategy"] = answer["strategy"]
        started = time.monotonic()
        accepted = httpx.delete(f"{self.api}/v1/users/{erased}", headers=admin, timeout=30)
        if accepted.status_code != 202:
            raise StageError(f"DELETE /v1/users/{erased} answered {accepted.status_code}: {accepted.text[:300]}")
        child = self._start("erasure", spark_submit_command(self.settings, "batch/erasure.py"))
        wait_for(lambda: child.process.poll() is not None, self.remaining(600), "the erasure job", interval_s=0.5)
        receipt = httpx.get(f"{self.api}/v1/admin/erasures/{accepted.json()['request_id']}", headers=admin,
                            timeout=30).json()
        if receipt["status"] != "completed":
            raise StageError(f"the erasure job exited {child.process.returncode} without a receipt:\n{child.log_tail()}")
        self.summary["erasure_seconds_to_receipt"] = round(time.monotonic() - started, 1)
        self.summary["erasure_removed"] = {name: n for name, n in receipt["removed"].items() if n}
        say(f"  {withdrawer} withdrew consent: answered by {answer['strategy']}; {erased} erased in "
            f"{self.summary['erasure_seconds_to_receipt']} s ({self.summary['erasure_removed'].get('events', 0)} "
            f"events), their copies on Kafka gone by {receipt['kafka_expires_by']}")
        rows = audit.read(Lake(self.settings))
        self.summary["audit_log"] = {action: sum(row["action"] == action for row in rows)
                                     for action in sorted({row["action"] for row in rows})}
        say(f"  audit log: {self.summary['audit_log']} (`lambdarec audit` prints it)")

    # -- plumbing ------------------------------------------------------------------

    def _start(self, name: str, argv: list[str]) -> Child:
        child = start_child(name, argv, self.settings.root / "logs", env=spark_submit_env(self.settings))
        self.children[name] = child
        return child

    def _check_children(self) -> bool:
        """True while every started child runs; a StageError naming the first that exited."""
        for name in ("broker", "postgres", "cdc", "speed", "serving"):
            if name in self.children:
                self.children[name].check_alive()
        return True

    def stop_all(self) -> None:
        for name in ("serving", "speed", "cdc", "postgres", "broker", "train", "erasure"):
            child = self.children.get(name)
            if child is not None:
                code = child.stop()
                say(f"  stopped {name} (exit {code})")


PERSONAL = ("model", "fold_in", "neighbours")  # the strategies that score a user's own history


def item_outside_cluster(world: World, user: str, exclude: set[str], rng: random.Random) -> str:
    """An item from a cluster other than the user's: an action the model could not predict."""
    cluster = world.user_cluster(user)
    candidates = [
        item_id(i) for i in range(world.n_items)
        if world.item_cluster(item_id(i)) != cluster and item_id(i) not in exclude
    ]
    return rng.choice(candidates)


def lake_counts(settings: Settings) -> dict[str, int]:
    """Row counts straight from the Delta tables, through DuckDB."""
    lake = Lake(settings)
    counts = {"events": 0, "distinct_event_ids": 0, "dead_letter": 0}
    if lake.exists(EVENTS):
        events = lake.dataset(EVENTS)  # noqa: F841 - read by DuckDB below
        found = duckdb.sql("select count(*), count(distinct event_id) from events")
        assert found is not None  # a select always has a result
        counts["events"], counts["distinct_event_ids"] = found.fetchall()[0]
    if lake.exists(DEAD_LETTER):
        counts["dead_letter"] = lake.read_arrow(DEAD_LETTER).num_rows
    return counts


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def say(line: str) -> None:
    print(line, flush=True)


def colour_output() -> bool:
    """ANSI colour only for a person at a terminal (not with NO_COLOR, not into a pipe or a file)."""
    return sys.stdout.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


def text_width() -> int:
    """The summary's width: 100 columns, less in a narrower terminal."""
    return max(60, min(demo_report.WIDTH, shutil.get_terminal_size((demo_report.WIDTH, 24)).columns))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--duration", type=float, default=480, help="Hard limit for the whole run, seconds.")
    parser.add_argument("--summary-json", type=Path,
                        help="Write the summary figures here (default: demo-summary.json in the demo's root).")
    parser.add_argument("--report", type=Path, help="Write the HTML report with charts here "
                        f"(default: {demo_report.REPORT_NAME} next to the summary JSON).")
    parser.add_argument("--report-from", type=Path, metavar="SUMMARY_JSON",
                        help="Run nothing: print the summary and write the HTML report from a summary JSON "
                        "an earlier run wrote.")
    parser.add_argument("--root", type=Path, help="Scratch root for this run (default: <root>/demo, wiped first).")
    parser.add_argument("--events", type=int, default=30_000, help="Generated events to send.")
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--items", type=int, default=400)
    parser.add_argument("--clusters", type=int, default=8)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--batch-size", type=int, default=500, help="Events per POST /events/batch.")
    parser.add_argument("--probes", type=int, default=20, help="Users whose freshness is measured.")
    parser.add_argument("--latency-requests", type=int, default=500, help="GETs timed for serve latency.")
    parser.add_argument("--availability-probes", type=int, default=20,
                        help="Items set unavailable in Postgres, timed until they leave every answer.")
    parser.add_argument("--load-events-per-s", type=int, default=200,
                        help="Events posted in the background while catalogue changes are timed.")


def command(args: argparse.Namespace, settings: Settings) -> int:
    if args.report_from:
        text, path = demo_report.report_from(args.report_from, args.report, colour=colour_output(), width=text_width())
        say(text)
        say(f"\nreport:  {path}")
        return 0
    root = (args.root or settings.root / "demo").resolve()
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    settings = settings.model_copy(
        update={
            "root": root,
            "lake_uri": "",
            "checkpoint_dir": "",
            "embedded_broker_port": free_port(settings.embedded_broker_port),
            "embedded_controller_port": free_port(settings.embedded_controller_port),
            "serve_port": free_port(settings.serve_port),
            "embedded_postgres_port": free_port(settings.embedded_postgres_port),
            "cdc_connect_port": free_port(settings.cdc_connect_port),
            "speed_metrics_port": free_port(settings.speed_metrics_port),
            "serve_model_poll_s": 2.0,
            "allow_development_key": True,  # a demo is development: its data is generated
            "auth": "keys",  # as a deployment runs: the demo's own keys, created below
        }
    )
    lake = Lake(settings)
    operator, admin_token = api_keys.create(lake, "demo: operator", ["admin"])
    backend, backend_token = api_keys.create(lake, "demo: product backend", ["ingest", "consent", "read"])
    settings = settings.model_copy(update={"api_key": SecretStr(admin_token)})
    if not settings.uses_embedded_broker:
        say(f"using the Kafka cluster at {settings.kafka_bootstrap_servers}")
    shutil.rmtree(cluster_dir(settings), ignore_errors=True)  # outside the root when root cannot share it
    world = World(n_users=args.users, n_items=args.items, n_clusters=args.clusters, seed=args.seed)
    demo = Demo(settings, args, deadline=time.monotonic() + args.duration,
                backend={"Authorization": f"Bearer {backend_token}"})
    demo.summary["api_keys"] = [{"key_id": key.key_id, "name": key.name, "scopes": sorted(key.scopes)}
                                for key in (backend, operator)]  # ids only: a token is shown to no one
    say(f"API keys: {backend.key_id} (product backend: ingest, consent, read), {operator.key_id} (operator: admin)")
    started = time.monotonic()
    failure = None
    with ExitStack() as stack:
        stack.callback(demo.stop_all)
        try:
            if settings.uses_embedded_broker:
                demo.stage("start broker", demo.start_broker)
            demo.stage("start Postgres and CDC (Debezium on Kafka Connect)", demo.start_operational_db, world)
            demo.stage("start speed job", demo.start_speed)
            demo.stage("start serving", demo.start_serving)
            demo.stage("send events through the API", demo.send_events, world)
            demo.stage("inject bad records into Kafka", demo.inject_bad_records)
            demo.stage("wait for the speed layer to land them in Delta", demo.wait_for_lake)
            model = demo.stage("train, evaluate and publish (spark-submit)", demo.train)
            demo.stage("serving loads the model", demo.load_model, model["model_version"])
            demo.stage("users act; measure freshness", demo.probe_freshness, world)
            demo.stage("catalogue changes reach serving (CDC)", demo.catalogue_to_serving, world)
            demo.stage("cold start from attributes (CDC)", demo.cold_start_from_attributes, world)
            demo.stage("measure serving latency", demo.measure_serving, world)
            demo.stage("trending from the speed layer", demo.report_trending)
            demo.stage("check the lake", demo.final_counts)
            demo.stage("privacy: withdraw consent, erase a user (spark-submit)", demo.privacy)
        except StageError as exc:
            failure = str(exc)
            say(f"✗ {failure}")
            for child in demo.children.values():
                say(f"--- {child.name} log ({child.log_path}) ---\n{child.log_tail(15)}")
    summary = {**demo.summary, "ok": failure is None, "error": failure, "stages": demo.stages,
               "wall_s": round(time.monotonic() - started, 1), "root": str(root),
               "finished_at": datetime.now(UTC).isoformat(timespec="seconds"), "targets": demo_report.TARGETS}
    summary_json = args.summary_json or root / "demo-summary.json"
    summary_json.parent.mkdir(parents=True, exist_ok=True)
    summary_json.write_text(json.dumps(summary, indent=2) + "\n")
    say(demo_report.console_summary(summary, text_width(), colour_output()))
    say(f"\nsummary: {summary_json}")
    report = args.report or demo_report.default_report_path(args.summary_json, root)
    try:
        say(f"report:  {demo_report.write_report(summary, report)}")
    except Exception as exc:  # the figures are safe in the JSON; say why the report is not
        say(f"✗ could not write the report {report}: {exc!r}")
        return 1
    return 0 if failure is None else 1
