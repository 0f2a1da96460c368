"""Benchmark: Spark ALS vs implicit ALS at the same rank and iterations, on planted-structure data.

For each size (100k, 1M, 10M interactions; pick with --sizes) it draws one
synthetic interaction set from ``deploy.generator.World`` (the planted
clusters the tests use), holds out a seeded 20% of each user's interactions,
fits both engines through ``batch.engines`` (the code the training job runs),
and prints ONE JSON object: for each engine the total fit time, the cost of one
iteration (from fits at 1 and at --iterations iterations, so the one-off setup is
reported apart as ``setup_s``), their ratios, peak memory (implicit: this process;
Spark: the JVM), and recall@10 / nDCG@10 of each and of the popularity baseline on
the same split. With --repeats, timings are medians and every run's are listed.
Figures only, never a verdict. Spark runs local[2] (--master to change).

    .venv/bin/python bench/train.py --sizes 100k 1m --rank 64 --iterations 10 [--repeats 3] [--implicit-exact]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from batch.engines import AlsParams, Factors, ImplicitAls, SparkAls, fit_implicit  # noqa: E402
from batch.evaluate import Holdout, compare_to_popularity, factor_scorer  # noqa: E402
from deploy.generator import World  # noqa: E402
from bench import records
from lambdarec.settings import Settings  # noqa: E402

# interactions -> (users, items, clusters): ~20 interactions per user, as in the generator's defaults
SIZES = {
    "100k": (100_000, 5_000, 2_000, 20),
    "1m": (1_000_000, 50_000, 10_000, 50),
    "10m": (10_000_000, 500_000, 50_000, 100),
}
EVAL_USERS = 5_000
TIMINGS = ("total_s", "s_per_iteration", "setup_s", "total_s_per_iteration")
EXACT_RATIO = "spark_over_implicit_exact_s_per_iteration"


def dataset(size: str, seed: int):
    """Train (user, item, count) rows and held-out pairs: 20% of each user's interactions, seeded."""
    n, n_users, n_items, n_clusters = SIZES[size]
    users, items = World(n_users, n_items, n_clusters, seed).interactions(n)
    test = np.random.default_rng(seed).random(n) < 0.2
    pairs, counts = np.unique(np.stack([users[~test], items[~test]]), axis=1, return_counts=True)
    return pairs[0], pairs[1], counts.astype(np.float64), users[test], items[test], n_users, n_items


def evaluate(factors: Factors, train_users, train_items, test_users, test_items, n_users, n_items, seed):
    """recall/nDCG@10 of the model and of popularity, on up to EVAL_USERS held-out users."""
    chosen = np.random.default_rng(seed).permutation(np.unique(test_users))[:EVAL_USERS]
    keep = np.isin(test_users, chosen)
    holdout = Holdout.from_pairs(n_users, n_items, train_users, train_items, test_users[keep], test_items[keep])
    m = compare_to_popularity(factor_scorer(factors.dense_users(n_users), factors.dense_items(n_items)), holdout, 10)
    return {k: round(v, 4) for k, v in m.items() if k.endswith(("recall_at_10", "ndcg_at_10"))} | {
        "n_eval_users": m["n_eval_users"]
    }


def peak_rss_mb(pid: int | str = "self") -> float:
    """VmHWM (peak resident set) of a process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak_rss() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def timed(fit, params: AlsParams, warm_up: bool) -> tuple[dict, Factors]:
    """Fit at 1 and at ``params.iterations`` iterations: an iteration's cost is the difference over the extra
    iterations, so the setup both engines pay once (building blocks or the sparse matrix, collecting or
    solving the final factors) is reported apart instead of being spread over the iterations.
    ``warm_up`` first runs an untimed 1-iteration fit (JIT, thread pools, first allocations)."""
    if warm_up:
        fit(replace(params, iterations=1))
    started = time.perf_counter()
    fit(replace(params, iterations=1))
    one = time.perf_counter() - started
    started = time.perf_counter()
    factors = fit(params)
    total = time.perf_counter() - started
    per_iteration = (total - one) / max(params.iterations - 1, 1)
    return {"total_s": round(total, 3), "s_per_iteration": round(per_iteration, 4),
            "setup_s": round(one - per_iteration, 3), "total_s_per_iteration": round(total / params.iterations, 4)}, factors


def bench_size(spark, size: str, params: AlsParams, seed: int, warm_up: bool = True, exact: bool = False) -> dict:
    users, items, counts, test_users, test_items, n_users, n_items = dataset(size, seed)
    out = {"interactions": SIZES[size][0], "train_pairs": int(len(users)), "users": n_users, "items": n_items}

    reset_peak_rss()
    times, implicit_factors = timed(lambda p: fit_implicit(users, items, counts, p), params, warm_up)
    out["implicit"] = {
        **times,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        **evaluate(implicit_factors, users, items, test_users, test_items, n_users, n_items, seed),
    }

    if exact:  # implicit with Spark's solver (Cholesky per row): how much of the gap is the solver
        out["implicit_exact"], _ = timed(lambda p: fit_implicit(users, items, counts, p, use_cg=False), params, warm_up)

    frame = spark.createDataFrame(
        pa.table({"user_index": users.astype(np.int32), "item_index": items.astype(np.int32),
                  "rating": counts.astype(np.float32)})
    ).cache()
    frame.count()
    engine = SparkAls(blocks=spark.sparkContext.defaultParallelism)
    with tempfile.TemporaryDirectory() as checkpoints:
        times, spark_factors = timed(lambda p: engine.fit(spark, frame, p, checkpoints), params, warm_up)
    frame.unpersist()
    jvm_pid = spark._jvm.java.lang.ProcessHandle.current().pid()
    out["spark"] = {
        **times,
        "peak_rss_mb_jvm": round(peak_rss_mb(jvm_pid), 1),
        **evaluate(spark_factors, users, items, test_users, test_items, n_users, n_items, seed),
    }
    out["spark_over_implicit_s_per_iteration"] = round(out["spark"]["s_per_iteration"] / out["implicit"]["s_per_iteration"], 2)
    out["spark_over_implicit_total_s"] = round(out["spark"]["total_s"] / out["implicit"]["total_s"], 2)
    if exact:
        out[EXACT_RATIO] = round(out["spark"]["s_per_iteration"] / out["implicit_exact"]["s_per_iteration"], 2)
    return out


def repeated(spark, size: str, params: AlsParams, seed: int, repeats: int, exact: bool = False) -> dict:
    """``bench_size`` ``repeats`` times on the same data: medians of the timings, each run's timings,
    and the quality figures (the same data and seed give the same models)."""
    runs = [bench_size(spark, size, params, seed, warm_up=n == 0, exact=exact) for n in range(repeats)]
    if repeats == 1:
        return runs[0]
    out = dict(runs[0])
    engines = ("implicit", "spark") + (("implicit_exact",) if exact else ())
    for engine in engines:
        out[engine] = {**runs[0][engine], **{key: round(float(np.median([r[engine][key] for r in runs])), 4) for key in TIMINGS}}
    for ratio in ("spark_over_implicit_s_per_iteration", "spark_over_implicit_total_s") + ((EXACT_RATIO,) if exact else ()):
        out[ratio] = round(float(np.median([r[ratio] for r in runs])), 2)
    out["runs"] = [{engine: {key: run[engine][key] for key in TIMINGS} for engine in engines} for run in runs]
    return out


def native_blas(spark) -> str:
    """Which BLAS Spark's ALS uses: a native library, or the Java fallback."""
    try:
        return str(spark._jvm.dev.ludovic.netlib.blas.NativeBLAS.getInstance().getClass().getName())
    except Exception as exc:  # py4j wraps the JVM's "no native BLAS" error
        return f"none ({str(exc).splitlines()[0][:120]})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=["100k"])
    parser.add_argument("--rank", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--reg", type=float, default=0.05)
    parser.add_argument("--alpha", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repeats", type=int, default=1, help="Fits per size; figures are then medians.")
    parser.add_argument("--implicit-exact", action="store_true",
                        help="Also time implicit with Spark's solver (an exact Cholesky solve per row, no CG).")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--driver-memory", default="8g")
    parser.add_argument("--spark-conf", action="append", default=[], metavar="KEY=VALUE",
                        help="Extra Spark setting for the session (repeatable), e.g. spark.serializer=...")
    parser.add_argument("--records", type=Path, default=records.RECORDS, help="Where the dated record goes.")
    args = parser.parse_args(argv)
    record = records.start("train", vars(args))

    from lambdarec.spark import build_spark

    settings = Settings(spark_master=args.master, spark_driver_memory=args.driver_memory, spark_shuffle_partitions=4)
    extra = dict(item.split("=", 1) for item in args.spark_conf)
    spark = build_spark(settings, "lambdarec-bench-train", extra)
    params = AlsParams(args.rank, args.reg, args.alpha, args.iterations, args.seed, checkpoint_interval=5)
    try:
        results = {size: repeated(spark, size, params, args.seed, args.repeats, args.implicit_exact) for size in args.sizes}
        report = {
            "benchmark": "train",
            "engines": [SparkAls.name, ImplicitAls.name],
            "params": params.record(),
            "spark_master": args.master,
            "spark_conf": extra,
            "spark_native_blas": native_blas(spark),
            "cpus": os.cpu_count(),
            "sizes": results,
        }
    finally:
        spark.stop()
    records.write({**record, "figures": report}, args.records)
    return 0


if __name__ == "__main__":
    sys.exit(main())
