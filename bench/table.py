"""Regenerate the results table of bench/README.md from benchmark JSON files.

    .venv/bin/python bench/table.py                       # the newest full (non-quick) result per section
    .venv/bin/python bench/table.py bench/results/A.json bench/results/B.json

For every section, the rows of the newest given (or found) result that ran it are rendered
with the same table ``bench/run.py`` prints, between the ``<!-- bench-table:start -->`` and
``<!-- bench-table:end -->`` markers of ``bench/README.md``, headed by which run each section
came from and the machine's load after it. ``make bench`` runs it after the benchmark.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from benchutil import Row, render_table

START, END = "<!-- bench-table:start -->", "<!-- bench-table:end -->"
# A row's section title -> the --only name its load average is recorded under (a failed
# section's row carries the --only name itself).
SHORT = {"1": "stats", "2": "memory", "3": "gen", "4": "sweep", "5": "load", "6": "suite", "7": "bf16",
         "8": "protocol", "9": "slider"}


def short_name(section: str) -> str:
    return SHORT.get(section.split(" ", 1)[0], section)


def newest_per_section(paths: list[Path]) -> dict[str, tuple[Path, dict]]:
    """Section (its ``--only`` name) -> (file, result) of the newest result that ran it; a
    section that failed in a later run than one where it succeeded still shows the failure."""
    chosen: dict[str, tuple[Path, dict]] = {}
    for path in sorted(paths, key=lambda p: p.name):  # names are timestamps
        result = json.loads(path.read_text())
        for row in result.get("rows", []):
            chosen[short_name(row["section"])] = (path, result)
    return chosen


def render(chosen: dict[str, tuple[Path, dict]]) -> str:
    lines = ["| section | run | load average after it | cpus, torch threads |", "|---|---|---|---|"]
    rows: list[Row] = []
    for section, (path, result) in chosen.items():
        env = result.get("env", {})
        load = result.get("loadavg_after_section", {}).get(section, "?")
        lines.append(f"| {section} | `{path.name}` | {load} | {env.get('cpus', '?')}, {env.get('torch_threads', '?')} |")
        rows += [Row(**r) for r in result["rows"] if short_name(r["section"]) == section]
    return "\n".join([*lines, "", "```", render_table(rows), "```"])


def main(argv: list[str]) -> int:
    paths = [Path(a) for a in argv] or [p for p in (HERE / "results").glob("*.json") if "-quick" not in p.name]
    if not paths:
        print("no benchmark results: run `make bench` first", file=sys.stderr)
        return 1
    readme = HERE / "README.md"
    text = readme.read_text()
    if START not in text or END not in text:
        print(f"{readme} has no {START} ... {END} block", file=sys.stderr)
        return 1
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    block = render(newest_per_section(paths))
    tmp = readme.with_suffix(".md.tmp")
    tmp.write_text(f"{head}{START}\n{block}\n{END}{tail}")
    tmp.replace(readme)  # never a half-written README
    print(f"{readme}: table from {len({p for p, _ in newest_per_section(paths).values()})} result file(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
