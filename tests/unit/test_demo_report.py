"""The demo's story for a person: the terminal summary and the HTML report, from the summary dict alone."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import yaml

from deploy import demo_report
from deploy.demo_report import CHARTS, console_summary, render_report, report_from

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]

STAGES = [
    ("start broker", 6.21), ("start Postgres and CDC (Debezium on Kafka Connect)", 24.8), ("start speed job", 31.4),
    ("start serving", 3.9), ("send events through the API", 18.7), ("inject bad records into Kafka", 0.3),
    ("wait for the speed layer to land them in Delta", 9.6), ("train, evaluate and publish (spark-submit)", 96.2),
    ("serving loads the model", 2.4), ("users act; measure freshness", 9.1),
    ("catalogue changes reach serving (CDC)", 22.3), ("cold start from attributes (CDC)", 3.2),
    ("measure serving latency", 2.1), ("trending from the speed layer", 0.6), ("check the lake", 1.8),
    ("privacy: withdraw consent, erase a user (spark-submit)", 43.0),
]

# What `lambdarec demo` writes (the keys Demo sets in its summary, and command()'s own).
SUMMARY = {
    "operational_items": 400, "operational_users": 500,
    "events_sent": 30020, "events_accepted": 30020, "bad_records_injected": 3,
    "model_version": 7, "model_engine": "als", "model_recall_at_10": 0.4127, "popularity_recall_at_10": 0.1184,
    "freshness_ms_p50": 412.3, "freshness_ms_p95": 1183.9,
    "before_after": [
        {"user": "user-0", "bought": "item-217", "changed_after_ms": 398.1, "before_strategy": "model",
         "before": ["item-12", "item-48", "item-3", "item-97", "item-160"], "after_strategy": "fold_in",
         "after": ["item-12", "item-217", "item-48", "item-225", "item-3"]},
        {"user": "user-1", "bought": "item-305", "changed_after_ms": 455.0, "before_strategy": "model",
         "before": ["item-7", "item-19", "item-58", "item-99", "item-140"], "after_strategy": "fold_in",
         "after": ["item-305", "item-7", "item-19", "item-313", "item-58"]},
    ],
    "example_recommendations": {"user-0": ["item-12", "item-217", "item-48", "item-225", "item-3"],
                                "user-1": ["item-305", "item-7", "item-19", "item-313", "item-58"]},
    "unavailable_to_serving_ms_p50": 842, "unavailable_to_serving_ms_p95": 1530, "load_events_per_s": 198,
    "cold_start_profile_ms": 1210, "cold_start_profile_segment": "country:FR",
    "newcomer_item_ms": 1675,
    "newcomer_item": {"user": "user-3", "item_id": "new-item-5", "score": 0.0, "because": [],
                      "via": "category:category-5"},
    "serve_latency_ms_p50": 3.41, "serve_latency_ms_p99": 12.87,
    "trending_global": ["item-12", "item-7", "item-200"], "trending_window_start": "2026-03-01T10:00:00Z",
    "trending_country_DE": ["item-7"], "trending_device_mobile": ["item-200"],
    "events_in_lake": 30020, "duplicates_in_lake": 0, "dead_letter_rows": 3,
    "metrics": {"speed_events_landed": 30020, "speed_dead_letters": 3, "speed_batches": 212,
                "serving_freshness_observed": 30020},
    "after_withdrawal_strategy": "trending_segment",
    "erasure_seconds_to_receipt": 41.6,
    "erasure_removed": {"events": 62, "speed_user_interactions": 1, "speed_user_features": 1, "user_consent": 1,
                        "user_profiles": 1, "model_interactions": 48, "user_factors": 1, "user_ids": 1},
    "ok": True, "error": None,
    "stages": [{"stage": name, "ok": True, "seconds": seconds} for name, seconds in STAGES],
    "wall_s": 281.4, "root": "/tmp/lambdarec/demo", "finished_at": "2026-03-01T10:05:12+00:00",
    "targets": {"freshness_ms_p95": 5000.0, "serve_latency_ms_p99": 50.0},
}

FAILED_AT = "train, evaluate and publish (spark-submit)"


def failed_summary() -> dict:
    """A run that stopped at training: fewer stages, the last one failed, most figures never measured."""
    keep = ("operational_items", "operational_users", "events_sent", "events_accepted", "bad_records_injected")
    summary = {key: SUMMARY[key] for key in keep}
    summary["stages"] = [{"stage": name, "ok": True, "seconds": s} for name, s in STAGES[:7]]
    summary["stages"].append({"stage": FAILED_AT, "ok": False, "seconds": 212.4})
    summary.update(ok=False, wall_s=320.2, root="/tmp/lambdarec/demo",
                   error=f"stage {FAILED_AT!r} failed: training exited 1:\njava.lang.OutOfMemoryError: <heap>")
    return summary


@pytest.fixture(scope="module")
def report() -> str:
    return render_report(copy.deepcopy(SUMMARY))


def plotly_divs(page: str) -> list[str]:
    return re.findall(r'<div id="([\w-]+)" class="plotly-graph-div"', page)


def test_the_report_has_one_plotly_chart_per_figure_group_and_opens_offline(report):
    assert plotly_divs(report) == [div_id for div_id, _, _ in CHARTS]
    assert report.startswith("<!DOCTYPE html>") and report.rstrip().endswith("</html>")
    # plotly.js inlined once, from the installed package: no CDN, nothing fetched when opened
    assert report.count("* plotly.js v") == 1
    assert not re.search(r"<script[^>]+src=", report) and "<link" not in report


def test_the_report_shows_the_figures_and_the_targets(report):
    for figure in ("30,020 → 30,020", "30,020 / 0", "3 (of 3 bad records injected)", "v7, als", "0.413 vs 0.118",
                   "412 ms / 1,184 ms", "3.41 ms / 12.9 ms", "842 ms / 1,530 ms", "country:FR", "new-item-5",
                   "category:category-5", "trending_segment", "41.6 s", "model_interactions 48"):
        assert figure in report, figure
    for stage, _ in STAGES:
        assert json.dumps(stage) in report, stage  # a bar of the stage chart
    # the freshness and serving charts draw their targets as dashed lines
    assert report.count('"dash":"dash"') == 2
    assert "target p95 ≤ 5 s" in report and "target p99 ≤ 50 ms" in report
    # before and after, side by side in an HTML table, items new after the purchase marked
    assert "<th>before (model)</th><th>after (fold_in)</th>" in report
    assert '<span class="new">item-217 (new)</span>' in report and "user-1 bought item-305" in report


def test_the_report_is_a_function_of_the_summary_alone(report):
    assert render_report(copy.deepcopy(SUMMARY)) == report


def test_the_console_summary_has_every_stage_and_figure_and_fits_100_columns():
    text = console_summary(SUMMARY)
    lines = text.splitlines()
    assert max(map(len, lines)) <= 100
    assert "\033[" not in text
    assert lines[1] == "lambdarec demo: ok in 281.4 s"
    for stage, seconds in STAGES:
        assert any(line.strip().startswith(stage) and line.rstrip().endswith(f"{seconds:.1f}") and " ok " in line
                   for line in lines), stage
    for label, value in demo_report.figure_rows(SUMMARY):
        assert label in text and value.split()[0] in text
    for figure in ("30,020 → 30,020", "v7, als", "0.413 vs 0.118 (3.5×)", "412 ms / 1,184 ms (target p95 ≤ 5 s: met)",
                   "3.41 ms / 12.9 ms (target p99 ≤ 50 ms: met)", "842 ms / 1,530 ms", "198 events/s", "country:FR",
                   "41.6 s"):
        assert figure in text, figure


def test_the_console_shows_before_and_after_side_by_side():
    lines = console_summary(SUMMARY).splitlines()
    head = next(line for line in lines if "before (" in line)
    assert "after  (fold_in)" in head and head.index("before (model)") < head.index("after  (fold_in)")
    rows = lines[lines.index(head) + 1 : lines.index(head) + 6]
    assert rows[1].split() == ["2", "item-48", "item-217", "(new)"]  # the bought item, on the same row
    assert [row.split()[1] for row in rows] == SUMMARY["before_after"][0]["before"]


@pytest.mark.parametrize("width", [60, 80, 100])
def test_the_console_summary_fits_narrower_terminals(width):
    assert max(map(len, console_summary(SUMMARY, width).splitlines())) <= width
    assert max(map(len, console_summary(failed_summary(), width).splitlines())) <= width


def test_colour_only_when_asked():
    plain, coloured = console_summary(SUMMARY), console_summary(SUMMARY, colour=True)
    assert "\033[" in coloured
    assert re.sub(r"\033\[[0-9;]*m", "", coloured) == plain


def test_a_failed_demo_shows_the_stages_that_ran_and_which_failed():
    summary = failed_summary()
    text = console_summary(summary)
    assert f"FAILED at stage {FAILED_AT!r} after 320.2 s" in text
    assert "training exited 1" in text and "OutOfMemoryError" not in text  # its log tail was printed already
    failed_line = next(line for line in text.splitlines() if line.strip().startswith(FAILED_AT))
    assert "FAILED" in failed_line and failed_line.rstrip().endswith("212.4")
    assert "measure serving latency" not in text  # a stage that never ran
    assert "serving latency p50 / p99        —" in text and "not measured" in text

    page = render_report(summary)
    assert plotly_divs(page) == ["chart-stages", "chart-events"]  # only what was measured is charted
    for missing in ("chart-recall", "chart-freshness", "chart-serving", "chart-availability"):
        assert f'id="{missing}-missing"' in page
    assert "java.lang.OutOfMemoryError: &lt;heap&gt;" in page  # the whole error, escaped
    assert '"#c62828"' in page  # the failed stage's bar is red
    assert "no user acted" in page


def test_an_older_summary_without_before_lists_or_targets_still_renders():
    summary = {key: value for key, value in SUMMARY.items() if key not in ("before_after", "targets", "finished_at")}
    text = console_summary(summary)
    assert "user-0's recommendations" in text and "item-217" in text
    assert "target p95 ≤ 5 s" in render_report(summary)


def test_report_from_a_saved_summary_writes_next_to_it(tmp_path):
    saved = tmp_path / "demo-summary.json"
    saved.write_text(json.dumps(SUMMARY))
    text, path = report_from(saved, None)
    assert path == tmp_path / "demo-report.html" and "v7, als" in path.read_text()
    assert "lambdarec demo: ok" in text and not list(tmp_path.glob("*.partial"))


def test_the_cli_regenerates_the_report(tmp_path, capsys):
    from deploy.cli import main

    saved = tmp_path / "demo-summary.json"
    saved.write_text(json.dumps(failed_summary()))
    assert main(["demo", "--report-from", str(saved), "--report", str(tmp_path / "again.html")]) == 0
    out = capsys.readouterr().out
    assert "FAILED" in out and str(tmp_path / "again.html") in out and "\033[" not in out
    assert 'id="chart-stages"' in (tmp_path / "again.html").read_text()


def test_the_targets_are_the_alert_thresholds():
    rules = yaml.safe_load((ROOT / "ops/prometheus/alerts.yml").read_text())
    exprs = {rule["alert"]: rule["expr"] for group in rules["groups"] for rule in group["rules"] if "alert" in rule}

    def threshold(alert: str) -> float:
        return float(re.search(r">\s*([0-9.]+)\s*$", exprs[alert].strip()).group(1))

    assert demo_report.TARGETS["freshness_ms_p95"] == threshold("LambdarecFreshnessSLO") * 1000
    assert demo_report.TARGETS["serve_latency_ms_p99"] == threshold("LambdarecServingLatencyP99") * 1000
