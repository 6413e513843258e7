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
# Section 10 (the roofline) has its own block: its rows, the workload table and the profile.
ROOF_START, ROOF_END = "<!-- roofline-table:start -->", "<!-- roofline-table:end -->"
# A row's section title -> the --only name its load average is recorded under (a failed
# section's row carries the --only name itself).
SHORT = {"1": "stats", "2": "memory", "3": "gen", "4": "sweep", "5": "load", "6": "suite", "7": "bf16",
         "8": "protocol", "9": "slider", "10": "roofline"}


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


def render_roofline(result: dict) -> str:
    """Section 10's workloads as a table (tok/s, GFLOP/s, share of the dtype's peak, load) and the
    profile's top operators of each profiled call."""
    roof = result.get("roofline", {})
    if not roof.get("workloads"):
        return ""
    cpu = roof.get("cpu", {})
    peaks = roof.get("peaks", {})
    lines = [(f"Roofline (`{result.get('timestamp', '?')}`, {result.get('mode', '?')}): CPU {cpu.get('model', '?')}, "
             f"{cpu.get('cpus', '?')} cpus, torch threads {cpu.get('torch_threads', '?')}, flags "
             f"{' '.join(cpu.get('flags', []))}; matmul peak float32 "
             f"{peaks.get('float32', {}).get('gflops', float('nan')):.0f}, bfloat16 "
             f"{peaks.get('bfloat16', {}).get('gflops', float('nan')):.0f} GFLOP/s "
             f"(load average {peaks.get('float32', {}).get('loadavg', '?')})."), "",
             "| workload | dtype | tok/s (median) | GFLOP/s | share of peak (median / best repeat) | load average |",
             "|---|---|---:|---:|---:|---|"]
    for name, w in roof["workloads"].items():
        load = ", ".join(f"{x:.1f}" for x in w.get("loadavg", []))
        lines.append(f"| {name} | {w['dtype']} | {w['tok_s']:,.0f} | {w['gflops']:.1f} | "
                     f"{w['share_of_peak']:.2f} / {w['share_of_peak_best']:.2f} | {load} |")
    prof = roof.get("profile", {})
    if prof:
        lines += ["", (f"torch.profiler, self CPU time, batch {prof.get('batch')}, {prof.get('max_new_tokens')} tokens "
                      "(top operators):"), ""]
        for name, events in prof.items():
            if isinstance(events, list):
                lines.append(f"- {name}: " + ", ".join(f"`{e['name']}` {e['share']:.0%} ({e['calls']} calls)"
                                                       for e in events[:8]))
    return "\n".join(lines)


def render(chosen: dict[str, tuple[Path, dict]]) -> str:
    lines = ["| section | run | load average after it | cpus, torch threads |", "|---|---|---|---|"]
    rows: list[Row] = []
    for section, (path, result) in chosen.items():
        env = result.get("env", {})
        load = result.get("loadavg_after_section", {}).get(section, "?")
        lines.append(f"| {section} | `{path.name}` | {load} | {env.get('cpus', '?')}, {env.get('torch_threads', '?')} |")
        rows += [Row(**r) for r in result["rows"] if short_name(r["section"]) == section]
    return "\n".join([*lines, "", "```", render_table(rows), "```"])


def replace_block(text: str, start: str, end: str, block: str) -> str:
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{block}\n{end}{tail}"


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
    chosen = newest_per_section(paths)
    roof = chosen.pop("roofline", None)
    if chosen:
        text = replace_block(text, START, END, render(chosen))
    if roof is not None:
        if ROOF_START not in text or ROOF_END not in text:
            print(f"{readme} has no {ROOF_START} ... {ROOF_END} block", file=sys.stderr)
            return 1
        path, result = roof
        rows = [Row(**r) for r in result["rows"] if short_name(r["section"]) == "roofline"]
        load = result.get("loadavg_after_section", {}).get("roofline", "?")
        block = "\n".join([f"Run `{path.name}`, load average after it {load}.", "", "```", render_table(rows), "```",
                           "", render_roofline(result)])
        text = replace_block(text, ROOF_START, ROOF_END, block)
    tmp = readme.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(readme)  # never a half-written README
    print(f"{readme}: tables from {len({p for p, _ in newest_per_section(paths).values()})} result file(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
