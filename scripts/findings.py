"""The README's findings, generated from recorded results (never retyped).

``collect RUN_DIR``: copy what the README reports of notebook 04's run in ``RUN_DIR`` (model, preset,
configuration, seconds, CPU flags, pooled contrasts, conclusion) to ``docs/results/compare-<model>-<preset>.json``.
``collect-run RUN_DIR``: what a whole ``make run`` folder costs (each notebook's papermill seconds,
the folder's size, its figures) to ``docs/results/run-<model>.json``.
``collect-power RUN_DIR``: from notebook 04's run, each pooled contrast's measured spread, and the
minimum detectable difference (80% power, Holm-corrected over each preset's list) it would have under
every preset, to ``docs/results/power-<model>.json``: which contrasts each preset can resolve.
``render``: rewrite README.md's answer (the block between ``<!-- answer:start -->`` and
``<!-- answer:end -->``: :func:`steerlab.study.answer.answer`'s sentences and claims from every recorded
result) and ``docs/FINDINGS.md`` (every table: contrasts, power, timings, the unit) from every
``docs/results/*.json``; ``--check`` exits 1 if either differs (the tests run it).
``figures``: the answer's figures as PNG (``docs/images/answer.png``, ``docs/images/answer_targets.png``),
rendered in headless Chromium from the same results.
``answer``: print the answer in the terminal.

A results file that is not JSON, or not one of these kinds, is refused with its name and what is wrong.

Usage: ``.venv/bin/python scripts/findings.py collect runs/<stamp> [--seconds S]``, then
``.venv/bin/python scripts/findings.py render`` and ``figures``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

from steerlab.lab.tables import ASKED, GRID_LEGEND, verdict_grid_markdown
from steerlab.load import machine
from steerlab.sets import UNIT, UNIT_LABEL
from steerlab.study.answer import MEASURE_TITLES, answer
from steerlab.study.compare_report import tally
from steerlab.study.tasks import task_answer

sys.path.insert(0, str(Path(__file__).resolve().parent))

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
README = ROOT / "README.md"
FINDINGS = ROOT / "docs" / "FINDINGS.md"
IMAGES = ROOT / "docs" / "images"
START, END = "<!-- answer:start -->", "<!-- answer:end -->"


class ResultsError(SystemExit):
    """A results file that cannot be read as one of this script's kinds (the message names it)."""


def kind_of(res: Any) -> str:
    """Which kind of recorded result ``res`` is: ``compare``, ``run``, ``power``, ``units``; else an error."""
    if not isinstance(res, dict):
        raise ValueError(f"a JSON {type(res).__name__}, expected an object")  # noqa: TRY004 - a bad file, not a bad call
    if "units" in res:
        return "units"
    if res.get("kind") in ("run", "power"):
        return str(res["kind"])
    if {"model", "preset", "contrasts", "config"} <= set(res) and isinstance(res["contrasts"], dict):
        return "compare"
    raise ValueError("not a steerlab results file (no 'kind', and not notebook 04's collected comparison: "
                     "expected model, preset, config and contrasts)")


def load_results(folder: Path | None = None) -> list[tuple[Path, dict[str, Any]]]:
    """Every ``*.json`` of ``folder`` (default :data:`RESULTS`) with its contents, in name order.

    Raises:
        ResultsError: a file that is not JSON, or not a kind this script knows, naming it and why.
    """
    out = []
    for path in sorted((folder or RESULTS).glob("*.json")):
        try:
            res = json.loads(path.read_text(encoding="utf-8"))
            kind_of(res)
        except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as err:
            raise ResultsError(f"{path}: cannot be read as a recorded result: {err}. Collect it again with "
                               "scripts/findings.py collect ..., or move it out of docs/results/") from None
        out.append((path, res))
    return out




def collect(run_dir: Path, seconds: float | None, note: str | None = None) -> Path:
    compare = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))["compare"]
    pooled = {m: [r for r in block["results"] if r["scope"] == "pooled"]
              for m, block in compare["contrasts"].items()}
    keep = ("label", "a", "b", "scope", "layer", "position", "measure", "status", "estimate", "ci", "verdict", "n")
    per_target = [{k: r.get(k) for k in keep} for block in compare["contrasts"].values() for r in block["results"]
                  if r["scope"] != "pooled" and r["label"] in ("d", "e")]
    cells = compare.get("cells") or {}
    if seconds is None and compare.get("seconds") is not None:
        # A resumed run: its own time plus what the cells it read back took when they were measured.
        seconds = compare["seconds"] + (cells.get("reused_seconds") or 0.0)
    out = {"model": compare["model"], "preset": compare["preset"], "date": compare["date"],
           "seconds": seconds, "cells": cells or None,
           "cpu": compare.get("cpu") or machine(), "score_dtype": compare.get("score_dtype"),
           "prompting_style": compare.get("prompting_style"), "config": compare["config"],
           "layers": compare["layers"], "judge_accuracy": compare["judge"]["heldout_accuracy"],
           "judge_accuracy_by_words": compare["judge"].get("accuracy_by_words"),
           "contrasts": pooled, "per_target": per_target, "directions": _directions(compare),
           "best_of": {m: b["best_of"] for m, b in compare["contrasts"].items()},
           "conclusion": compare["conclusion"], "note": note}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"compare-{out['model']}-{out['preset']}.json"
    path.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    return path


def _directions(compare: dict[str, Any]) -> dict[str, Any]:
    """Per construction: the share of held-out story pairs it steers the wrong way (anti-steerable, mean over
    targets and cells) and its cosine with the mean-centred vector (mean over targets and layers)."""
    anti: dict[str, list[float]] = {}
    for r in compare.get("steerability") or []:
        name = r.get("condition", r.get("method"))
        if r.get("anti_steerable_fraction") is not None:
            anti.setdefault(str(name), []).append(float(r["anti_steerable_fraction"]))
    cos: dict[str, list[float]] = {}
    for r in compare.get("bias") or []:
        for name, c in (r.get("cosine_with_mean_centred") or {}).items():
            cos.setdefault(name, []).append(float(c))
    return {name: {"anti_steerable_fraction": sum(v) / len(v) if v else None,
                   "cosine_with_mean_centred": sum(cos[name]) / len(cos[name]) if cos.get(name) else None}
            for name, v in sorted(anti.items())}


def collect_run(run_dir: Path) -> Path:
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    seconds = {}
    for nb in sorted(run_dir.glob("*.ipynb")):
        duration = json.loads(nb.read_text(encoding="utf-8")).get("metadata", {}).get("papermill", {}).get("duration")
        if duration is not None:
            seconds[nb.stem] = round(float(duration), 1)
    if len(seconds) < 2:
        raise SystemExit(f"{run_dir} has {len(seconds)} executed notebook(s): collect-run wants a whole `make run`")
    models = {block.get("model") for block in summary.values() if isinstance(block, dict) and block.get("model")}
    size = sum(f.stat().st_size for f in run_dir.rglob("*") if f.is_file() and not f.is_symlink())
    out = {"kind": "run", "model": ", ".join(sorted(models)) or "unknown", "date": min(
        (b.get("date") for b in summary.values() if isinstance(b, dict) and b.get("date")), default=None),
        "cpu": machine(), "notebooks": seconds, "megabytes": round(size / 2**20, 1),
        "figures": len(list((run_dir / "figures").glob("*.json"))), "files": sum(1 for f in run_dir.rglob("*") if f.is_file()),
        **{key: summary[key]["headline"] for key in ("bias", "interpret")
           if isinstance(summary.get(key), dict) and isinstance(summary[key].get("headline"), dict)}}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"run-{out['model']}.json"
    path.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    return path


UNITS_PER_TARGET = {"steerability": "n_steer", "matched": "n_steer", "score": "n_prompts"}


def collect_power(run_dir: Path) -> Path:
    from steerlab.study.compare import PRESETS
    from steerlab.study.contrasts import mdd, required_n

    compare = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))["compare"]
    cfg = compare["config"]
    cells_run = len(compare["layers"]) * len(cfg["positions"])
    scopes_run = len(cfg["targets"]) + 1
    presets = {name: {**PRESETS[name]} for name in ("default", "full")}
    rows = []
    for measure, block in compare["contrasts"].items():
        run = [r for r in block["results"] if r["status"] == "run"]
        if not run:
            continue
        per_cell_scope = max(r["family_size"] for r in run) / (cells_run * scopes_run)
        for r in run:
            if r["scope"] != "pooled" or r["label"] not in ASKED or r["label"] == "c":
                continue  # (c) is an equivalence question: its TOST verdict is in the contrasts tables
            row = {"measure": measure, "name": r["name"], "cell": f"L{r['layer']} {r['position']}", "sd": r["sd"],
                   "estimate": r["estimate"], "n_run": r["n"], "presets": {}}
            for name, p in presets.items():
                n = int(p[UNITS_PER_TARGET[measure]]) * len(p["targets"])
                family = round(per_cell_scope * (len(p["targets"]) + 1) * len(p["depths"]) * len(p["positions"]))
                alpha = 0.05 / max(family, 1)
                detectable = mdd(r["sd"], n, alpha=alpha)
                need = (required_n(r["sd"], abs(r["estimate"]), alpha=alpha)
                        if r["estimate"] and r["sd"] > 0 else None)
                row["presets"][name] = {"n": n, "family": family, "mdd": detectable,
                                        "resolves_this_estimate": abs(r["estimate"]) >= detectable, "n_needed": need}
            rows.append(row)
    out = {"kind": "power", "model": compare["model"], "date": compare["date"], "from_preset": compare["preset"],
           "rows": rows, "note": ("spread (sd of the paired differences) measured in this run, pooled over its targets; "
                                  "each preset's n pools its targets' units; its Holm family scales with its targets, "
                                  "depths and positions")}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"power-{out['model']}.json"
    path.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    return path


def render_power(res: dict[str, Any]) -> list[str]:
    names = list(res["rows"][0]["presets"]) if res["rows"] else []
    head = " | ".join(f"`{n}`: n, MDD" for n in names)
    lines = [(f"#### What each preset can resolve ({res['model']}, spreads from the `{res['from_preset']}` run of "
             f"{res['date']})"), "",
             (f"The minimum detectable difference of each pooled contrast at 80% power after Holm over the preset's "
              f"whole list, from the spread this run measured ({res['note']}). **Bold**: the preset's MDD is at most the "
              "estimate seen here, so a difference that size would be called; otherwise how many pooled pairs it "
              "would need. (c) is an equivalence question, answered by its TOST verdict in the tables above."), "",
             "<details><summary>every pooled contrast, by preset</summary>", "",
             f"| measure | contrast | cell | sd | estimate here | {head} |",
             "|---|---|---|--:|--:|" + "---|" * len(names)]
    for r in res["rows"]:
        cells = []
        for n in names:
            p = r["presets"][n]
            text = f"{p['n']}, {p['mdd']:.3g}"
            cells.append(f"**{text}**" if p["resolves_this_estimate"] else
                         f"{text} (needs {p['n_needed']})" if p["n_needed"] else text)
        lines.append(f"| {r['measure']} | {r['name']} | {r['cell']} | {r['sd']:.3g} | {r['estimate']:+.3g} | "
                     + " | ".join(cells) + " |")
    return [*lines, "", "</details>", ""]


def render_run(res: dict[str, Any]) -> list[str]:
    total = sum(res["notebooks"].values())
    each = ", ".join(f"{k} {v / 60:.1f}" for k, v in res["notebooks"].items())
    return [f"#### A whole `make run` ({res['model']}, {res['date']}, {res['cpu']})", "",
            (f"{len(res['notebooks'])} notebooks in {total / 60:.1f} min of papermill time (minutes each: {each}); "
             f"the run folder holds {res['files']} files, {res['figures']} figures, {res['megabytes']:.1f} MB."), ""]


def _row(r: dict[str, Any]) -> str:
    if r["status"] != "run":
        return f"| {r['name']} | L{r['layer']} {r['position']} | - | - | - | not run: {r['reason']} |"
    est = f"{r['estimate']:+.3f} [{r['ci'][0]:+.3f}, {r['ci'][1]:+.3f}]"
    mdd = "-" if r.get("mdd_corrected") is None else f"{r['mdd_corrected']:.3f}"
    return f"| {r['name']} | L{r['layer']} {r['position']} | {r['n']} | {est} | {mdd} | {r['verdict']} |"


def _tally(rows: list[dict[str, Any]], label: str) -> str:
    run = [r for r in rows if r["label"] == label and r["status"] == "run"]
    base = "random" if label == "f" else "prompting"
    if not run:
        return f"({label}) against {base}: not measured here ({base} has no vector for this measure to pair with)."
    return f"({label}) against {base}: {tally(run, base)}."


MEASURES = {"steerability": "steerability (slope per held-out story pair, nats per unit coefficient)",
            "matched": "propensity shift at matched damage (per story pair, nats)",
            "score": "held-out AxBench score (per report prompt, 0-1)"}


def render_compare(res: dict[str, Any]) -> list[str]:
    cfg = res["config"]
    secs = f"{res['seconds'] / 60:.1f} min" if res.get("seconds") else "time not recorded"
    cells = res.get("cells") or {}
    if cells.get("reused"):
        secs += (f" ({cells['reused']} of its {cells['n']} cells measured by earlier runs of the same "
                 "configuration and code, their time included)")
    lines = [(f"#### {res['model']}, preset `{res['preset']}` ({res['date']}; {secs} on a CPU with {res['cpu']}; "
             f"scored in {res['score_dtype']})"), "",
             *([f"_{res['note']}_", ""] if res.get("note") else []),
             f"Targets {', '.join(cfg['targets'])}; layers {res['layers']}; positions {', '.join(cfg['positions'])}; "
             f"{cfg['n_prompts']} prompts x {cfg['max_new_tokens']} tokens; {cfg['n_steer']} held-out story pairs "
             f"per target; matched damage at perplexity ratio {cfg.get('matched_level')}; prompting by "
             f"{res.get('prompting_style')}; coefficients x the "
             f"{(cfg.get('coefficient_unit') or {}).get('what', 'typical activation norm')}; judge held-out accuracy {res['judge_accuracy']:.2f}"
             + (f" ({', '.join(f'{k} words: {v:.2f}' for k, v in res['judge_accuracy_by_words'].items())})"
                if res.get("judge_accuracy_by_words") else "") + ".", ""]
    lines += [("Each CI is the contrast's own 95% interval; each verdict is Holm-corrected over the whole list, so a "
              "CI that excludes zero can still be \"not resolved\". MDD: the smallest difference the list could call "
              "at 80% power after the correction."), ""]
    for measure, rows in res["contrasts"].items():
        family = rows[0]["family_size"] if rows else 0
        asked = [r for r in rows if r["label"] in ASKED]
        lines += [f"**{MEASURES.get(measure, measure)}**, pooled over targets, Holm over {family} tests ({GRID_LEGEND}):",
                  "", *verdict_grid_markdown(asked), "",
                  "<details><summary>the contrasts (a)-(e), (f), (g) and the best of N</summary>", "",
                  "| contrast | cell | n | estimate [95% CI] | MDD | verdict |", "|---|---|--:|---|--:|---|"]
        lines += [_row(r) for r in asked]
        lines += ["", f"- {_tally(rows, 'f')}", f"- {_tally(rows, 'g')}"]
        best = res["best_of"].get(measure, {}).get("conclusion") or []
        lines += [f"- {b}" for b in best] + ["", "</details>", ""]
    return lines


def render_units(res: dict[str, Any]) -> list[str]:
    units = res["units"]
    cells = "; ".join(f"**{u}**: " + ", ".join(f"{m} {v:.3f}" for m, v in b["crossing_by_model"].items())
                      + f" (ratio {b['ratio']:.2f})" for u, b in units.items())
    return [f"#### The coefficient unit ({res['date']}; {res['seconds'] / 60:.1f} min on {res['cpu']})", "",
            (f"Where damage on general text reaches perplexity ratio {res['level']} (geometric mean over "
            f"mean-centred, counterbalanced and random vectors at depths {res['depths']}), in each unit: {cells}. "
            f"The unit under which the two models cross at the closer coefficient is **{res['closer']}**; "
            + (f"steerlab's default unit (`steerlab.sets.UNIT`) is that one, the {UNIT_LABEL}."
               if UNIT.kind == res["closer"] else
               f"steerlab's default unit (`steerlab.sets.UNIT`), the {UNIT_LABEL}, is not: this measurement "
               "argues for switching it.")), ""]


def render_findings() -> str:
    """``docs/FINDINGS.md``: every recorded result's tables, each with its source file."""
    lines = ["# Findings: every recorded result", "",
             ("Generated by `scripts/findings.py render` from `docs/results/*.json` (each collected from a run folder "
              "by the same script); the tests check this file is exactly what the script gives. The answer these "
              "tables carry is at the top of the README; earlier runs are in `docs/LAB_LOG.md`."), ""]
    loaded = load_results()
    for path, res in loaded:
        kind = kind_of(res)
        lines += {"units": render_units, "run": render_run, "power": render_power, "compare": render_compare}[kind](res)
        lines[-1:] = ["", f"<sub>from `{path.relative_to(ROOT)}`</sub>", ""]
    if not loaded:
        lines += ["No recorded results yet: run `scripts/findings.py collect RUN_DIR`.", ""]
    return "\n".join(lines)


def _task_sentences() -> list[str] | None:
    """The task-vector sentence per model (notebook 06's recorded results, each model's ``full`` where there)."""
    import tasks_findings  # scripts/tasks_findings.py, beside this file

    results = tasks_findings.load_results()
    if not results:
        return None
    best: dict[str, dict[str, Any]] = {}
    for r in results:
        if r["model"] not in best or r["preset"] == "full":
            best[r["model"]] = r
    return task_answer([best[m] for m in sorted(best)])


def the_answer() -> Any:
    """:func:`steerlab.study.answer.answer` of every recorded result."""
    loaded = [res for _, res in load_results()]
    compares = [r for r in loaded if kind_of(r) == "compare"]
    runs = {r["model"]: r for r in loaded if kind_of(r) == "run"}
    powers = {r["model"]: r for r in loaded if kind_of(r) == "power"}
    return answer(compares, runs=runs, powers=powers, tasks=_task_sentences())


def render_answer() -> str:
    """README's answer block: the sentences, the figure, the claims table, where the rest is."""
    found = the_answer()
    picture = ("![The answer: each pre-registered contrast (b)-(e) as its estimate and 95% CI, per measure, depth and "
               "position, both models; green called, blue equivalent, grey not resolved with its MDD band]"
               "(docs/images/answer.png)") if (IMAGES / "answer.png").exists() else ""
    sources = ", ".join(f"`docs/results/{s}.json`" for s in found.sources)
    lines = [START, "", *found.markdown()[:len(found.sentences)], "", picture, "",
             "**The write-up's claims**, each against the contrast that tests it:", "",
             *found.markdown()[len(found.sentences) + 1:], "",
             *([("![Per target: where isolating or counterbalancing beats mean-centring, and where not]"
                "(docs/images/answer_targets.png)"), ""] if (IMAGES / "answer_targets.png").exists() else []),
             (f"Generated by `scripts/findings.py render` from {sources or 'the recorded results'} (each model's "
              "`full` run where recorded); every contrast, the power projection, timings and earlier presets are in "
              "[`docs/FINDINGS.md`](docs/FINDINGS.md)."), "", END]
    return "\n".join(lines)


def figures(out: Path = IMAGES) -> list[Path]:
    """The answer's figures as PNG, from the recorded results (headless Chromium)."""
    from steerlab.lab.compare_plots import answer_forest, answer_targets
    from steerlab.lab.snapshot import figure_page, screenshot
    from steerlab.study.answer import primary

    compares = [res for _, res in load_results() if kind_of(res) == "compare"]
    best = primary(compares)
    written = []
    with tempfile.TemporaryDirectory() as tmp:
        fig = answer_forest({m: [x for recs in r["contrasts"].values() for x in recs] for m, r in best.items()},
                            measures=list(MEASURE_TITLES),
                            where=", ".join(f"{m} ({r['preset']}, {r['date']})" for m, r in best.items()))
        written.append(screenshot(figure_page(fig, Path(tmp) / "answer.html"), out / "answer.png", width=1024,
                                  full_page=True, wait_for=".plot-container"))
        per_target = [{**x, "model": m.split("-")[0]} for m, r in best.items() for x in r.get("per_target") or []]
        if per_target:
            fig = answer_targets(per_target, where="per target, recorded full runs")
            written.append(screenshot(figure_page(fig, Path(tmp) / "targets.html"), out / "answer_targets.png",
                                      width=1024, full_page=True, wait_for=".plot-container"))
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("collect")
    c.add_argument("run_dir", type=Path)
    c.add_argument("--seconds", type=float, default=None, help="the run's wall time, if not recorded in it")
    c.add_argument("--note", default=None, help="a circumstance of the run a reader needs (e.g. another job shared the CPU)")
    cp = sub.add_parser("collect-power")
    cp.add_argument("run_dir", type=Path)
    cr = sub.add_parser("collect-run")
    cr.add_argument("run_dir", type=Path)
    r = sub.add_parser("render")
    r.add_argument("--check", action="store_true", help="exit 1 if README.md's answer or docs/FINDINGS.md differs")
    sub.add_parser("figures", help="the answer's figures as PNG in docs/images/")
    sub.add_parser("answer", help="print the answer in the terminal")
    args = parser.parse_args()
    if args.command == "collect":
        print(collect(args.run_dir, args.seconds, args.note))
        return 0
    if args.command == "collect-power":
        print(collect_power(args.run_dir))
        return 0
    if args.command == "collect-run":
        print(collect_run(args.run_dir))
        return 0
    if args.command == "figures":
        print("\n".join(str(p) for p in figures()))
        return 0
    if args.command == "answer":
        print(the_answer().text())
        return 0
    text = README.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(START) + r".*?" + re.escape(END), re.DOTALL)
    if not pattern.search(text):
        print(f"README.md has no {START} ... {END} block", file=sys.stderr)
        return 1
    new = pattern.sub(lambda _: render_answer(), text)
    findings = render_findings()
    if args.check:
        stale = [(str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)) for p, old, fresh in ((README, text, new), (FINDINGS, FINDINGS.read_text(
            encoding="utf-8") if FINDINGS.exists() else "", findings)) if old != fresh]
        if stale:
            print(f"{' and '.join(stale)} differ from docs/results: run scripts/findings.py render", file=sys.stderr)
            return 1
        return 0
    README.write_text(new, encoding="utf-8")
    FINDINGS.write_text(findings, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
