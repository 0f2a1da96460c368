"""Fill the docs' measured figures from the newest bench records, so no figure is typed by hand.

A block in a document between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->`` is
replaced by the rendering of the newest ``bench/records/NAME-*.json``, with the record's
date, commit and host. ``--check`` changes nothing and fails when a block is out of date
(the unit tier runs it).

    .venv/bin/python bench/report.py [--check] [README.md docs/*.md ...]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parent.parent
RECORDS = PROJECT / "bench" / "records"  # bench.records.RECORDS; this script runs without the venv too
DOCUMENTS = [PROJECT / "README.md", *sorted((PROJECT / "docs").glob("*.md"))]
BLOCK = re.compile(r"(<!-- bench:(?P<name>[a-z_]+) -->\n)(?P<body>.*?)(<!-- /bench:(?P=name) -->)", re.S)


def newest(name: str, records: Path | None = None) -> dict[str, Any]:
    """The newest record of bench ``name`` (record file names sort by their UTC time)."""
    records = records or RECORDS
    paths = sorted(records.glob(f"{name}-*.json"))
    if not paths:
        raise SystemExit(f"no record of bench {name!r} under {records}; run bench/{name}.py")
    record: dict[str, Any] = json.loads(paths[-1].read_text())
    record["file"] = paths[-1].name
    return record


def provenance(record: dict[str, Any]) -> str:
    commit = (record.get("commit") or "unknown")[:7] + (" with local changes" if record.get("dirty") else "")
    return (f"*Measured by `bench/{record['bench']}.py` on {record['date'][:10]}, commit {commit}, "
            f"{record['cores']} cores and {record['memory_gb']} GB (`bench/records/{record['file']}`).*\n")


def serving_memory(record: dict[str, Any]) -> str:
    args, figures = record["args"], record["figures"]
    before, after = figures["restart_before_prune"], figures["restart_after_prune"]
    while_driving = figures["requests_while_driving"]["latency_ms"]
    rows = [
        ("events, distinct users, distinct items", f"{args['events']:,}, {args['users']:,}, {args['items']:,}"),
        ("RSS idle, with the model", f"{figures['rss_idle_mb']:.0f} MB"),
        ("RSS peak while the events flowed", f"{figures['rss_peak_mb']:.0f} MB"),
        ("RSS once caught up", f"{figures['rss_after_mb']:.0f} MB"),
        ("recommendations while the events flowed, p50 / p99",
         f"{while_driving['p50']:.0f} / {while_driving['p99']:.0f} ms"),
        ("restart before the prune: start-up, RSS",
         f"{before['startup_s']:.1f} s, {before['rss_mb']:.0f} MB "
         f"({sum(before['table_rows'].values()):,} speed-table rows)"),
        ("restart after the prune: start-up, RSS",
         f"{after['startup_s']:.1f} s, {after['rss_mb']:.0f} MB "
         f"({sum(after['table_rows'].values()):,} speed-table rows)"),
    ]
    table = "| Serving, default caps | Measured |\n| --- | --- |\n" + "".join(f"| {a} | {b} |\n" for a, b in rows)
    return table + "\n" + provenance(record)


def speed_state(record: dict[str, Any]) -> str:
    modes = (("spark_defaults", "Spark's defaults"), ("erasure_settings", "lambdarec's (compaction, 2 versions)"))
    lines = ["| Features query state | commit median / p95 | of which compaction | state folder |",
             "| --- | --- | --- | --- |"]
    for key, label in modes:
        mode = record["figures"][key]
        lines.append(f"| {label} | {mode['commit_ms']['median']:.0f} / {mode['commit_ms']['p95']:.0f} ms "
                     f"| {mode['compact_ms']['median']:.0f} ms | {mode['state_folder_mb']:.0f} MB, "
                     f"{mode['state_versions_on_disk']} versions |")
    keys = record["figures"]["erasure_settings"]["state_keys"]
    return "\n".join(lines) + f"\n\n{keys:,} state keys. " + provenance(record)


RENDERERS: dict[str, Callable[[dict[str, Any]], str]] = {
    "serving_memory": serving_memory,
    "speed_state": speed_state,
}


def render(text: str, records: Path | None = None) -> str:
    """``text`` with every bench block filled from the newest record."""
    def fill(match: re.Match[str]) -> str:
        name = match["name"]
        if name not in RENDERERS:
            raise SystemExit(f"no renderer for bench block {name!r}")
        return match[1] + RENDERERS[name](newest(name, records)) + match[4]

    return BLOCK.sub(fill, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("documents", nargs="*", type=Path, default=DOCUMENTS)
    parser.add_argument("--check", action="store_true", help="Fail if a block differs from its newest record.")
    args = parser.parse_args(argv)
    stale = []
    for document in args.documents:
        text = document.read_text()
        filled = render(text)
        if filled != text:
            if args.check:
                stale.append(str(document))
            else:
                document.write_text(filled)
    if stale:
        print(f"bench figures out of date in {', '.join(stale)}: run .venv/bin/python bench/report.py",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
