"""The demo's story for a person: a plain-text summary for the terminal and an HTML report with charts.

Both are pure functions of the summary dict that ``lambdarec demo`` writes as JSON, so a report can be
made again from a saved summary (``lambdarec demo --report-from demo-summary.json``) and a failed run,
with fewer stages and figures, still renders: what was not measured shows as "—" or as a note where
its chart would be.

The HTML report is one self-contained file: plotly.js is inlined once, from the installed ``plotly``
package, so it opens offline and nothing third-party is kept in this repository.
"""

from __future__ import annotations

import html
import json
import textwrap
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

WIDTH = 100
MISSING = "—"
REPORT_NAME = "demo-report.html"

# The service-level targets the figures are drawn against: the thresholds of the alerts in
# ops/prometheus/alerts.yml (LambdarecFreshnessSLO, LambdarecServingLatencyP99). The demo writes
# them into its summary; an older summary without them gets these.
TARGETS: dict[str, float] = {"freshness_ms_p95": 5000.0, "serve_latency_ms_p99": 50.0}

OK_COLOUR, FAILED_COLOUR, TARGET_COLOUR = "#2e7d32", "#c62828", "#6d4c41"
BAR_COLOURS = ("#1f77b4", "#ff7f0e", "#9467bd", "#17becf")


# -- plain figures ---------------------------------------------------------------------------


def _number(value: Any, digits: int = 0) -> str:
    if value is None:
        return MISSING
    return f"{value:,.{digits}f}"


def _ms(value: Any) -> str:
    if value is None:
        return MISSING
    digits = 2 if value < 10 else 1 if value < 100 else 0
    return f"{value:,.{digits}f} ms"


def _pair(summary: dict[str, Any], a: str, b: str, fmt: Callable[[Any], str], sep: str = " / ") -> str:
    if summary.get(a) is None and summary.get(b) is None:
        return MISSING
    return f"{fmt(summary.get(a))}{sep}{fmt(summary.get(b))}"


def targets(summary: dict[str, Any]) -> dict[str, float]:
    return {**TARGETS, **(summary.get("targets") or {})}


def _duration(ms: float) -> str:
    """A target, said plainly: 5 s, 50 ms."""
    return f"{ms / 1000:g} s" if ms >= 1000 else f"{ms:g} ms"


def _against(value: Any, target: float, name: str) -> str:
    if value is None:
        return ""
    verdict = "met" if value <= target else "OVER TARGET"
    return f" (target {name} ≤ {_duration(target)}: {verdict})"


def figure_rows(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """The key figures as (label, value) rows, for the terminal and the report alike."""
    s, goal = summary, targets(summary)
    recall = MISSING
    if s.get("model_recall_at_10") is not None:
        model, popular = s["model_recall_at_10"], s.get("popularity_recall_at_10")
        recall = f"{model:.3f} vs {_number(popular, 3)}"
        if popular:
            recall += f" ({model / popular:.1f}×)"
    model_name = MISSING
    if s.get("model_version") is not None:
        model_name = f"v{s['model_version']}, {s.get('model_engine') or MISSING}"
    dead = _number(s.get("dead_letter_rows"))
    if s.get("bad_records_injected") is not None:
        dead += f" (of {s['bad_records_injected']} bad records injected)"
    profile = MISSING
    if s.get("cold_start_profile_ms") is not None:
        profile = (f"known only to Postgres, got {s.get('cold_start_profile_segment')} trending after "
                   f"{_ms(s['cold_start_profile_ms'])}")
    newcomer = MISSING
    if s.get("newcomer_item_ms") is not None:
        item = s.get("newcomer_item") or {}
        newcomer = (f"{item.get('item_id')}, known only to Postgres, reached {item.get('user')}'s list via {item.get('via')} "
                    f"after {_ms(s['newcomer_item_ms'])}")
    availability = _pair(s, "unavailable_to_serving_ms_p50", "unavailable_to_serving_ms_p95", _ms)
    if availability != MISSING:
        load = f", {s['load_events_per_s']:,} events/s posted meanwhile" if s.get("load_events_per_s") else ""
        availability += f" (item off in Postgres → out of every answer{load})"
    removed = s.get("erasure_removed")
    return [
        ("events sent → accepted", _pair(s, "events_sent", "events_accepted", _number, " → ")),
        ("events in the lake / duplicates", _pair(s, "events_in_lake", "duplicates_in_lake", _number)),
        ("dead letters", dead if s.get("dead_letter_rows") is not None else MISSING),
        ("model (version, engine)", model_name),
        ("recall@10: model vs popularity", recall),
        ("freshness p50 / p95", _pair(s, "freshness_ms_p50", "freshness_ms_p95", _ms)
         + _against(s.get("freshness_ms_p95"), goal["freshness_ms_p95"], "p95")),
        ("serving latency p50 / p99", _pair(s, "serve_latency_ms_p50", "serve_latency_ms_p99", _ms)
         + _against(s.get("serve_latency_ms_p99"), goal["serve_latency_ms_p99"], "p99")),
        ("availability p50 / p95", availability),
        ("cold start: new user", profile),
        ("cold start: new item", newcomer),
        ("consent withdrawn → answered by", s.get("after_withdrawal_strategy") or MISSING),
        ("erasure: receipt after", MISSING if s.get("erasure_seconds_to_receipt") is None
         else f"{s['erasure_seconds_to_receipt']:,.1f} s"),
        ("erasure: rows removed", MISSING if removed is None
         else ", ".join(f"{name} {n:,}" for name, n in removed.items()) or "none"),
    ]


def examples(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Users who acted, with their lists before and after (``before_after``); a summary written before
    the demo kept the before lists has only the after lists (``example_recommendations``)."""
    if summary.get("before_after"):
        return list(summary["before_after"])
    return [{"user": user, "after": items} for user, items in (summary.get("example_recommendations") or {}).items()]


def _headline(summary: dict[str, Any]) -> str:
    wall = summary.get("wall_s")
    if summary.get("ok"):
        return "lambdarec demo: ok" + (f" in {wall:,.1f} s" if wall is not None else "")
    took = f" after {wall:,.1f} s" if wall is not None else ""
    stages = summary.get("stages") or []
    failed = next((stage["stage"] for stage in stages if not stage.get("ok")), None)
    where = f" at stage {failed!r}" if failed else ""
    return f"lambdarec demo: FAILED{where}{took}"


# -- the terminal ------------------------------------------------------------------------------


def _paint(text: str, code: str, colour: bool) -> str:
    return f"\033[{code}m{text}\033[0m" if colour and text.strip() else text


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def stage_lines(stages: list[dict[str, Any]], width: int = WIDTH, colour: bool = False) -> list[str]:
    longest = max((len(str(stage.get("stage"))) for stage in stages), default=0)
    name_width = max(len("total"), min(longest, width - 2 - 2 - 6 - 2 - 9))
    lines = ["  " + "stage".ljust(name_width) + "  " + "result" + "  " + "seconds".rjust(9),
             "  " + "─" * name_width + "  " + "─" * 6 + "  " + "─" * 9]
    for stage in stages:
        result = "ok" if stage.get("ok") else "FAILED"
        lines.append("  " + _cut(str(stage.get("stage")), name_width).ljust(name_width) + "  "
                     + _paint(result.ljust(6), "32" if stage.get("ok") else "1;31", colour) + "  "
                     + f"{stage.get('seconds', 0):9,.1f}")
    if not stages:
        lines.append("  (no stage ran)")
    else:
        lines.append("  " + "total".ljust(name_width) + "  " + " " * 6 + "  "
                     + f"{sum(stage.get('seconds', 0) for stage in stages):9,.1f}")
    return lines


def figure_lines(summary: dict[str, Any], width: int = WIDTH, colour: bool = False) -> list[str]:
    rows = figure_rows(summary)
    label_width = max(len(label) for label, _ in rows)
    value_width = width - 2 - label_width - 2
    lines = []
    for label, value in rows:
        wrapped = textwrap.wrap(value, value_width, break_on_hyphens=False) or [""]
        for n, part in enumerate(wrapped):
            part = _cut(part, value_width)
            if "OVER TARGET" in part:
                part = part.replace("OVER TARGET", _paint("OVER TARGET", "1;31", colour))
            elif part == MISSING:
                part = _paint(part, "2", colour)
            lines.append("  " + (label if n == 0 else "").ljust(label_width) + "  " + part)
    if any(value == MISSING for _, value in rows):
        lines.append(_paint(f"  {MISSING}: not measured (the demo stopped before it)", "2", colour))
    return lines


def before_after_lines(example: dict[str, Any], width: int = WIDTH, colour: bool = False) -> list[str]:
    """One user's recommendations before and after they acted, side by side. The column heads are
    ``before (<strategy>)`` and ``after  (<strategy>)``; items new in the after list are marked."""
    before, after = example.get("before") or [], example.get("after") or []
    user, bought = example.get("user"), example.get("bought")
    title = f"{user} bought {bought}" if bought else f"{user}'s recommendations"
    if example.get("changed_after_ms") is not None:
        title += f"; their list changed {_ms(example['changed_after_ms'])} later"
    heads = (f"before ({example.get('before_strategy') or MISSING})", f"after  ({example.get('after_strategy') or MISSING})")
    longest = max(len(text) for text in [*heads, *map(str, before), *(f"{item} (new)" for item in after)])
    column = min((width - 4 - 3 - 2) // 2, longest + 4)
    lines = ["  " + _cut(title, width - 2),
             "    " + "#".rjust(2) + " " + _cut(heads[0], column).ljust(column) + "  " + _cut(heads[1], column)]
    seen = set(before)
    for n in range(max(len(before), len(after))):
        left = str(before[n]) if n < len(before) else ""
        right = ""
        if n < len(after):
            new = after[n] not in seen and bool(before)
            right = _cut(str(after[n]) + (" (new)" if new else ""), column)
            if new:
                right = _paint(right, "1", colour)
        lines.append("    " + f"{n + 1:2d}" + " " + _cut(left, column).ljust(column) + "  " + right)
    return lines


def console_summary(summary: dict[str, Any], width: int = WIDTH, colour: bool = False) -> str:
    """The run at a glance: the stages, the key figures, one user's list before and after they acted.
    No line is wider than ``width``; ANSI colour only when ``colour``."""
    ok = bool(summary.get("ok"))
    lines = ["", _paint(_cut(_headline(summary), width), "1;32" if ok else "1;31", colour)]
    if summary.get("error"):
        # the first line of the error: the rest (a child's log tail) was printed when it happened
        first = str(summary["error"]).strip().splitlines()[0] if str(summary["error"]).strip() else ""
        lines += ["  " + part for part in textwrap.wrap(f"error: {first}", width - 2, max_lines=3, placeholder=" …")]
    lines += ["", *stage_lines(summary.get("stages") or [], width, colour), "",
              *figure_lines(summary, width, colour)]
    shown = examples(summary)
    if shown:
        lines += ["", *before_after_lines(shown[0], width, colour)]
        if len(shown) > 1:
            lines.append(f"  ({len(shown) - 1} more user(s) in the HTML report)")
    return "\n".join(lines)


# -- the HTML report ----------------------------------------------------------------------------


def _layout(fig: Any, title: str, height: int, subtitle: str | None = None) -> Any:
    fig.update_layout(
        title={"text": title, **({"subtitle": {"text": subtitle}} if subtitle else {})},
        template="plotly_white", height=height, margin={"l": 60, "r": 30, "t": 80 if subtitle else 60, "b": 50},
        showlegend=False, font={"size": 13},
    )
    return fig


def _stages_chart(summary: dict[str, Any]) -> Any | None:
    import plotly.graph_objects as go

    stages = summary.get("stages") or []
    if not stages:
        return None
    names = [str(stage["stage"]) for stage in stages]
    seconds = [stage.get("seconds", 0) for stage in stages]
    fig = go.Figure(go.Bar(
        y=names, x=seconds, orientation="h", text=[f"{s:,.1f} s" + ("" if st.get("ok") else " FAILED")
                                                   for s, st in zip(seconds, stages, strict=True)],
        textposition="auto", marker_color=[OK_COLOUR if st.get("ok") else FAILED_COLOUR for st in stages],
        hovertemplate="%{y}: %{x:.1f} s<extra></extra>",
    ))
    fig.update_yaxes(autorange="reversed", automargin=True)
    fig.update_xaxes(title_text="seconds")
    failed = sum(not stage.get("ok") for stage in stages)
    subtitle = f"{len(stages)} stages, {sum(seconds):,.1f} s" + (f", {failed} failed" if failed else ", all ok")
    return _layout(fig, "Stage durations", 120 + 30 * len(stages), subtitle)


def _percentile_chart(summary: dict[str, Any], title: str, keys: list[tuple[str, str]],
                      target: tuple[str, float] | None = None) -> Any | None:
    import plotly.graph_objects as go

    present = [(label, summary[key]) for label, key in keys if summary.get(key) is not None]
    if not present:
        return None
    labels, values = [label for label, _ in present], [value for _, value in present]
    fig = go.Figure(go.Bar(x=labels, y=values, text=[_ms(v) for v in values], textposition="outside",
                           marker_color=list(BAR_COLOURS[: len(values)]), cliponaxis=False,
                           hovertemplate="%{x}: %{y:,.2f} ms<extra></extra>"))
    top = max(values)
    subtitle = None
    if target is not None:
        name, limit = target
        fig.add_hline(y=limit, line_dash="dash", line_color=TARGET_COLOUR, line_width=2,
                      annotation_text=f"target {name} ≤ {_duration(limit)}", annotation_position="top left",
                      annotation_font_color=TARGET_COLOUR)
        top = max(top, limit)
        subtitle = f"dashed: the {name} target (the alert's threshold in ops/prometheus/alerts.yml)"
    fig.update_yaxes(title_text="milliseconds", range=[0, top * 1.2], rangemode="tozero")
    return _layout(fig, title, 380, subtitle)


def _availability_chart(summary: dict[str, Any]) -> Any | None:
    return _percentile_chart(summary, "From Postgres to serving (CDC)", [
        ("item set unavailable<br>→ out of every answer, p50", "unavailable_to_serving_ms_p50"),
        ("item set unavailable<br>→ out of every answer, p95", "unavailable_to_serving_ms_p95"),
        ("new user (cold start)<br>→ segment trending", "cold_start_profile_ms"),
        ("new item (cold start)<br>→ in a user's list", "newcomer_item_ms"),
    ])


def _recall_chart(summary: dict[str, Any]) -> Any | None:
    import plotly.graph_objects as go

    if summary.get("model_recall_at_10") is None:
        return None
    engine = summary.get("model_engine") or "model"
    labels = [f"{engine} v{summary.get('model_version')}", "popularity baseline"]
    values = [summary["model_recall_at_10"], summary.get("popularity_recall_at_10") or 0]
    fig = go.Figure(go.Bar(x=labels, y=values, text=[f"{v:.3f}" for v in values], textposition="outside",
                           cliponaxis=False, marker_color=[BAR_COLOURS[0], "#9e9e9e"],
                           hovertemplate="%{x}: %{y:.3f}<extra></extra>"))
    fig.update_yaxes(title_text="recall@10 on held-out events", range=[0, max(values) * 1.25 or 1])
    return _layout(fig, "Model recall@10 vs popularity", 380)


def _events_chart(summary: dict[str, Any]) -> Any | None:
    import plotly.graph_objects as go

    steps = [("sent", "events_sent"), ("accepted", "events_accepted"), ("in the lake", "events_in_lake")]
    present = [(label, summary[key]) for label, key in steps if summary.get(key) is not None]
    if not present:
        return None
    fig = go.Figure(go.Funnel(y=[label for label, _ in present], x=[value for _, value in present],
                              texttemplate="%{value:,}<br>%{percentInitial:.1%}", marker_color=BAR_COLOURS[0]))
    fig.update_yaxes(automargin=True)
    subtitle = "dead letters and duplicates: not counted (the demo stopped before it)"
    if summary.get("dead_letter_rows") is not None:
        subtitle = (f"dead letters {_number(summary['dead_letter_rows'])} (of "
                    f"{_number(summary.get('bad_records_injected'))} bad records injected straight into Kafka); "
                    f"duplicates in the lake {_number(summary.get('duplicates_in_lake'))}")
    return _layout(fig, "Events: sent → accepted → in the lake", 380, subtitle)


CHARTS: tuple[tuple[str, str, Callable[[dict[str, Any]], Any | None]], ...] = (
    ("chart-stages", "Stage durations", _stages_chart),
    ("chart-events", "Events", _events_chart),
    ("chart-recall", "Model recall", _recall_chart),
    ("chart-freshness", "Freshness", lambda s: _percentile_chart(
        s, "Freshness: an event until that user's list changes",
        [("p50", "freshness_ms_p50"), ("p95", "freshness_ms_p95")], ("p95", targets(s)["freshness_ms_p95"]))),
    ("chart-serving", "Serving latency", lambda s: _percentile_chart(
        s, "Serving latency: GET recommendations",
        [("p50", "serve_latency_ms_p50"), ("p99", "serve_latency_ms_p99")], ("p99", targets(s)["serve_latency_ms_p99"]))),
    ("chart-availability", "From Postgres to serving", _availability_chart),
)

WIDE_CHARTS = ("chart-stages", "chart-availability")

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1200px;
       padding: 0 1rem; color: #222; }
h1 { margin-bottom: .2rem; } h2 { margin-top: 2rem; border-bottom: 1px solid #ddd; padding-bottom: .3rem; }
.status { font-size: 1.2rem; font-weight: 600; } .ok { color: #2e7d32; } .failed { color: #c62828; }
pre.error { background: #fdecea; padding: .8rem; white-space: pre-wrap; max-height: 16rem; overflow: auto; }
table { border-collapse: collapse; } td, th { padding: .3rem .8rem; text-align: left; vertical-align: top; }
table.figures td:first-child { color: #555; white-space: nowrap; } table.figures tr:nth-child(odd) { background: #f6f6f6; }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(520px, 1fr)); gap: 1rem; }
.charts .wide { grid-column: 1 / -1; }
.missing { border: 1px dashed #bbb; padding: 2rem; color: #777; text-align: center; }
.examples { display: flex; flex-wrap: wrap; gap: 2rem; }
table.before-after th { border-bottom: 1px solid #999; } .new { font-weight: 700; color: #2e7d32; }
.meta { color: #666; font-size: .9rem; }
"""


def _figures_table(summary: dict[str, Any]) -> str:
    rows = "".join(f"<tr><td>{html.escape(label)}</td><td>{html.escape(value)}</td></tr>"
                   for label, value in figure_rows(summary))
    return f'<table class="figures">{rows}</table>'


def _before_after_html(example: dict[str, Any]) -> str:
    before, after = example.get("before") or [], example.get("after") or []
    title = f"{example.get('user')} bought {example.get('bought')}" if example.get("bought") else f"{example.get('user')}"
    if example.get("changed_after_ms") is not None:
        title += f"; their list changed {_ms(example['changed_after_ms'])} later"
    seen = set(before)
    rows = []
    for n in range(max(len(before), len(after))):
        left = html.escape(str(before[n])) if n < len(before) else ""
        right = ""
        if n < len(after):
            right = html.escape(str(after[n]))
            if before and after[n] not in seen:
                right = f'<span class="new">{right} (new)</span>'
        rows.append(f"<tr><td>{n + 1}</td><td>{left}</td><td>{right}</td></tr>")
    heads = (f"before ({example.get('before_strategy') or MISSING})", f"after ({example.get('after_strategy') or MISSING})")
    return (f'<div><h3>{html.escape(title)}</h3><table class="before-after"><tr><th>#</th>'
            f"<th>{html.escape(heads[0])}</th><th>{html.escape(heads[1])}</th></tr>{''.join(rows)}</table></div>")


def _chart_divs(summary: dict[str, Any]) -> Iterable[str]:
    import plotly.io as pio

    inlined = False
    for div_id, name, build in CHARTS:
        fig = build(summary)
        wide = ' class="wide"' if div_id in WIDE_CHARTS else ""
        if fig is None:
            yield (f'<div{wide}><div class="missing" id="{div_id}-missing">{html.escape(name)}: not measured '
                   "(the demo stopped before it)</div></div>")
            continue
        div = pio.to_html(fig, full_html=False, include_plotlyjs=not inlined, div_id=div_id,
                          default_height=f"{fig.layout.height}px", config={"displaylogo": False, "responsive": True})
        inlined = True
        yield f"<div{wide}>{div}</div>"


def render_report(summary: dict[str, Any]) -> str:
    """The whole HTML report, one self-contained page (plotly.js inlined once), from the summary alone."""
    ok = bool(summary.get("ok"))
    error = ""
    if summary.get("error"):
        error = f'<pre class="error">{html.escape(str(summary["error"]))}</pre>'
    meta = " · ".join(html.escape(part) for part in (
        f"finished {summary['finished_at']}" if summary.get("finished_at") else "",
        f"root {summary['root']}" if summary.get("root") else "",
    ) if part)
    shown = examples(summary)
    if shown:
        before_after = '<div class="examples">' + "".join(_before_after_html(e) for e in shown) + "</div>"
    else:
        before_after = '<div class="missing">no user acted: the demo stopped before that stage</div>'
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>lambdarec demo report</title>
<style>{STYLE}</style>
</head>
<body>
<h1>lambdarec demo</h1>
<p class="status {'ok' if ok else 'failed'}">{html.escape(_headline(summary).removeprefix("lambdarec demo: "))}</p>
<p class="meta">{meta}</p>
{error}
<h2>Key figures</h2>
{_figures_table(summary)}
<h2>Charts</h2>
<div class="charts">
{chr(10).join(_chart_divs(summary))}
</div>
<h2>Recommendations before and after a user acts</h2>
{before_after}
</body>
</html>
"""


def write_report(summary: dict[str, Any], path: Path) -> Path:
    """Render and write atomically (a half-written report is never left behind)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(render_report(summary), encoding="utf-8")
    partial.replace(path)
    return path


def default_report_path(summary_json: Path | None, root: Path) -> Path:
    """Next to the summary JSON, else in the demo's root."""
    return (summary_json.parent if summary_json else root) / REPORT_NAME


def report_from(summary_json: Path, report: Path | None, colour: bool = False, width: int = WIDTH) -> tuple[str, Path]:
    """``lambdarec demo --report-from``: the terminal summary and the report again, from a saved summary."""
    summary = json.loads(summary_json.read_text())
    path = write_report(summary, report or default_report_path(summary_json, summary_json.parent))
    return console_summary(summary, width, colour), path
