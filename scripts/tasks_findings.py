"""Notebook 06's findings (task vectors), generated from recorded results (never retyped).

``collect RUN_DIR``: copy what is reported of notebook 06's run in ``RUN_DIR`` (model, preset, date,
seconds, CPU flags, configuration, per-task accuracies, the pooled contrasts, the answer and the
conclusions) to ``docs/results/tasks/<model>-<preset>.json``.
``answer [FILES]``: one sentence per model, from those files' verdicts (:func:`steerlab.study.tasks.task_answer`):
does centring help task vectors there, or is it not resolved at the stated MDD.
``card``: rewrite the block between ``<!-- tasks:start -->`` and ``<!-- tasks:end -->`` in
``data/README.md`` (each model's measured few-shot accuracy per task, which tasks it keeps, and the
answer) from the ``full`` results; ``--check`` exits 1 if the data card differs (the tests run it).

The files sit in ``docs/results/tasks/``, not beside notebook 04's in ``docs/results/``: ``scripts/findings.py
render`` reads every ``docs/results/*.json`` as one of its own kinds. ``collect_tasks`` and ``render_card``
are plain functions, to fold into ``scripts/findings.py`` with a ``"kind": "tasks"`` branch.

Usage: ``.venv/bin/python scripts/tasks_findings.py collect runs/<stamp>`` then
``.venv/bin/python scripts/tasks_findings.py card``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from steerlab.lab.tasks_view import percent
from steerlab.study.tasks import task_answer

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results" / "tasks"
CARD = ROOT / "data" / "README.md"
START, END = "<!-- tasks:start -->", "<!-- tasks:end -->"
KEEP = ("model", "preset", "date", "seconds", "machine", "config", "parameters", "coefficient_unit", "position",
        "few_shot_threshold", "ability", "kept_tasks", "dropped_tasks", "layers", "contrast_layers", "unit_norms",
        "chosen", "accuracy", "registration", "answer", "conclusion")


def collect_tasks(run_dir: Path, out_dir: Path = RESULTS) -> Path:
    """``RUN_DIR/summary.json``'s ``"tasks"`` entry, what is reported of it, as ``<model>-<preset>.json``.

    Raises:
        SystemExit: the run folder has no notebook 06 results (naming the file).
    """
    path = Path(run_dir) / "summary.json"
    if not path.is_file():
        raise SystemExit(f"{path} does not exist: expected a run folder of notebook 06")
    tasks = json.loads(path.read_text(encoding="utf-8")).get("tasks")
    if not isinstance(tasks, dict):
        raise SystemExit(f"{path} has no 'tasks' results: run notebooks/06_task_vectors.ipynb into it first")
    missing = [k for k in KEEP if k not in tasks]
    if missing:
        raise SystemExit(f"{path}: the 'tasks' entry lacks {', '.join(missing)} (recorded by an older notebook 06?)")
    out = {"kind": "tasks", **{k: tasks[k] for k in KEEP},
           "contrasts": [c for c in tasks["contrasts"] if c["scope"] == "pooled"], "run": Path(run_dir).name}
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{out['model']}-{out['preset']}.json"
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(out, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    tmp.replace(target)  # nothing half-written under the final name
    return target


def load_results(files: Sequence[Path] | None = None, preset: str | None = None) -> list[dict[str, Any]]:
    """The collected results (default: every file in ``docs/results/tasks/``), optionally of one preset."""
    paths = sorted(RESULTS.glob("*.json")) if not files else [Path(f) for f in files]
    results = [json.loads(p.read_text(encoding="utf-8")) for p in paths]
    return [r for r in results if preset is None or r["preset"] == preset]


def render_card(results: Sequence[dict[str, Any]]) -> str:
    """The data card's block: per task, each model's zero-shot / few-shot / shuffled-label accuracy and
    whether it kept the task, then the answer per model."""
    if not results:
        empty = ("No recorded `full` results yet: run notebook 06 with `preset: full` and "
                 "`scripts/tasks_findings.py collect RUN_DIR`.")
        return f"{START}\n\n{empty}\n\n{END}"
    models = [r["model"] for r in results]
    tasks = list(dict.fromkeys(a["task"] for r in results for a in r["ability"]))
    head = "| task | " + " | ".join(f"{m}: zero / few / shuffled" for m in models) + " |"
    lines = [START, "", head, "|---|" + "---|" * len(models)]
    for t in tasks:
        cells = []
        for r in results:
            a = next((a for a in r["ability"] if a["task"] == t), None)
            cells.append("not measured" if a is None else
                         f"{percent(a['zero_shot'])} / {'**' if a['kept'] else ''}{percent(a['few_shot'])}"
                         f"{'**' if a['kept'] else ''} / {percent(a['few_shot_shuffled'])}")
        lines.append(f"| `{t}` | " + " | ".join(cells) + " |")
    lines.append("")
    for r in results:
        c = r["config"]
        lines.append(f"- **{r['model']}** (preset `{r['preset']}`, {r['date']}, {r['seconds'] / 60:.1f} min on "
                     f"{r['machine']}): {c['shots']}-shot, {sum(a['n'] for a in r['ability'])} held-out pairs; kept "
                     f"(few-shot ≥ {percent(r['few_shot_threshold'])}, in bold): {', '.join(r['kept_tasks']) or 'none'}; "
                     f"dropped: {', '.join(r['dropped_tasks']) or 'none'}.")
    lines.append("")
    lines += [f"> {s}" for s in task_answer(results)]
    return "\n".join([*lines, "", END])


def write_card(check: bool = False) -> int:
    """Rewrite (or with ``check`` compare) the data card's block from the ``full`` results."""
    text = CARD.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.DOTALL)
    if not pattern.search(text):
        print(f"{CARD} has no {START} ... {END} block", file=sys.stderr)
        return 1
    new = pattern.sub(lambda _: render_card(load_results(preset="full")), text)
    if check:
        if new != text:
            print(f"{CARD}'s task block differs from what scripts/tasks_findings.py card gives", file=sys.stderr)
            return 1
        return 0
    CARD.write_text(new, encoding="utf-8")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("collect", help="copy notebook 06's results of a run folder to docs/results/tasks/")
    c.add_argument("run_dir", type=Path)
    a = sub.add_parser("answer", help="one sentence per model: does centring help task vectors")
    a.add_argument("files", type=Path, nargs="*")
    k = sub.add_parser("card", help="rewrite data/README.md's task block from the full results")
    k.add_argument("--check", action="store_true", help="exit 1 if the block differs, write nothing")
    args = parser.parse_args(argv)
    if args.command == "collect":
        print(collect_tasks(args.run_dir))
        return 0
    if args.command == "answer":
        print("\n".join(task_answer(load_results(args.files))))
        return 0
    return write_card(args.check)


if __name__ == "__main__":
    sys.exit(main())
