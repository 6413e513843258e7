"""Section 12 of the benchmark: one cell of notebook 04, this code against f4752d4's, on the same machine.

Issue 35 asks for notebook 04 at least 2.5x faster than the code at f4752d4 with the same answer. A cell (one
target, layer and position of the ``default`` preset) is the unit of 04's work: every preset is cells of that
shape. f4752d4's ``lib/`` is checked out beside the benchmark (``bench/.baseline/f4752d4``, git-ignored, from this
repository's own history: ``git worktree``), and each version times the same cell in a fresh process
(``bench/profile_cell.py --no-flops``, statistics from the shared disk cache), the two alternating round by round
so a burst of other load lands on both. Rows per model: the seconds of each, the ratio, and where this code's
cell spends its time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchutil import HERE, ROOT, Row, cpu_flags, log

BASELINE = "f4752d4"
TARGET_RATIO = 2.5


def baseline_lib(commit: str = BASELINE) -> Path:
    """``lib/`` of ``commit``, checked out once under ``bench/.baseline/<commit>`` (a git worktree)."""
    folder = HERE / ".baseline" / commit
    if not (folder / "lib" / "steerlab").is_dir():
        folder.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "worktree", "add", "--detach", str(folder), commit], cwd=ROOT, check=True,
                       capture_output=True, text=True)
    return folder / "lib"


def time_cell(lib: Path | None, model: str | None, preset: str, position: str) -> dict[str, Any]:
    """One cell timed in a fresh process by ``lib`` (``None``: this code's)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "TQDM_DISABLE": "1"}
    if lib is not None:
        env["PYTHONPATH"] = str(lib)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cell.json"
        args = [sys.executable, str(HERE / "profile_cell.py"), "--no-flops", "--preset", preset, "--position",
                position, "--out", str(out)] + (["--model", model] if model else [])
        done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"profile_cell ({'baseline' if lib else 'this code'}) failed: {done.stderr[-1500:]}")
        return json.loads(out.read_text())


def bench_cell(out: dict[str, Any], *, quick: bool = False, rounds: int = 1,
               models: tuple[str | None, ...] = (None, "gemma3-270m")) -> list[Row]:
    """Rows: per model, this code's cell against f4752d4's (module docstring)."""
    sec = "12 notebook 04's cell vs f4752d4"
    preset = "quick" if quick else "default"
    lib = baseline_lib()
    res: dict[str, Any] = {"baseline": BASELINE, "preset": preset, "cpu_flags": cpu_flags(), "models": {}}
    out["cell"] = res
    rows = []
    for model in models:
        runs: dict[str, list[dict[str, Any]]] = {"baseline": [], "now": []}
        for r in range(rounds):
            for who in (("baseline", "now") if r % 2 == 0 else ("now", "baseline")):
                got = time_cell(lib if who == "baseline" else None, model, preset, "all")
                runs[who].append(got)
                log(f"[cell] {got['model']} {preset} cell, {who}: {got['total_seconds']:.0f} s")
        name = runs["now"][0]["model"]
        best = {who: min(x["total_seconds"] for x in xs) for who, xs in runs.items()}
        res["models"][name] = runs
        ratio = best["baseline"] / best["now"]
        parts = runs["now"][0]["seconds"]
        top = ", ".join(f"{k} {v:.0f} s" for k, v in sorted(parts.items(), key=lambda kv: -kv[1])[:4])
        rows.append(Row(sec, f"{name}: one {preset} cell (fantasy, middle layer, all)", best["now"], "s",
                        "f4752d4's code", best["baseline"], ratio, "x faster", f">= {TARGET_RATIO}x",
                        "PASS" if ratio >= TARGET_RATIO else "MISS",
                        note=(f"fresh process each, best of {rounds}; scores in {runs['now'][0]['score_dtype']}; "
                              f"where this code's cell goes: {top}; CPU {runs['now'][0]['cpu']}")))
    return rows
