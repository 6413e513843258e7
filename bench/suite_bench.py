"""Section 6 of the benchmark: a whole `make run`, and notebook 04's recorded time against its budget per model and preset."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from benchutil import ROOT, log


def _notebook_seconds(run_dir: Path) -> dict[str, float]:
    """Each executed notebook's papermill duration, by file name."""
    out: dict[str, float] = {}
    for nb in sorted(run_dir.glob("*.ipynb")):
        try:
            meta = json.loads(nb.read_text()).get("metadata", {}).get("papermill", {})
        except (OSError, ValueError):
            continue
        if meta.get("duration") is not None:
            out[nb.name] = float(meta["duration"])
    return out


# The time budgets the issues set for `make run` with default parameters, on 2 cores.
SUITE_BUDGETS = (
    ("all notebooks", lambda names: True, 900.0),
    ("01 + 02 (bias, interpret)", lambda names: names[:2] in ("01", "02"), 300.0),
    ("04 (compare, default preset)", lambda names: names[:2] == "04", 360.0),
)


RUN_FOLDER_MB = 25.0  # a default run folder, every file in it (issue 25)


def _suite_rows(run_dir: Path, seconds: dict[str, float], wall: float | None, note: str) -> list:
    from benchutil import Row, judge

    rows = []
    if wall is not None:
        rows.append(Row("6 whole suite", "make run wall time (set-up done, statistics cache cold)", wall, "s",
                        note=note))
    if run_dir.is_dir() and seconds:
        size = sum(f.stat().st_size for f in run_dir.rglob("*") if f.is_file() and not f.is_symlink()) / 2**20
        figures = len(list((run_dir / "figures").glob("*.json")))
        rows.append(Row("6 whole suite", "run folder size (every notebook, default parameters)", size, "MB",
                        "budget", RUN_FOLDER_MB, size / RUN_FOLDER_MB, "x budget",
                        f"<= 1.00x ({RUN_FOLDER_MB:.0f} MB)", judge(size / RUN_FOLDER_MB, at_most=1.0),
                        note=f"{figures} figures, {len(seconds)} notebooks, one shared plotly.min.js; {run_dir}"))
    for label, pick, budget in SUITE_BUDGETS:
        picked = [v for k, v in seconds.items() if pick(k)]
        if not picked:
            continue
        total = sum(picked)
        rows.append(Row("6 whole suite", f"notebooks {label}", total, "s", "budget", budget, total / budget,
                        "x budget", f"<= 1.00x ({budget:.0f} s)", judge(total / budget, at_most=1.0),
                        note=f"papermill durations from {run_dir}"))
    return rows


# The comparison's budgets per model (issue 23), on the project's 2-core machine.
COMPARE_BUDGETS = {"default": 360.0, "full": 1800.0}


def compare_budget_rows(results: Path = ROOT / "docs" / "results") -> list:
    """One row per model and preset of notebook 04: the recorded run's papermill seconds against its
    budget, with the CPU it ran on (its bfloat16 flags), from ``docs/results/compare-*.json`` (the
    runs the README reports, collected by ``scripts/findings.py``); a preset never recorded is a
    SKIP row saying so, not a number."""
    from benchutil import Row, judge

    recorded: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(results.glob("compare-*.json")):
        res = json.loads(path.read_text(encoding="utf-8"))
        recorded[(res["model"], res["preset"])] = {**res, "file": path.name}
    rows = []
    for model in sorted({m for m, _ in recorded}):
        for preset, budget in COMPARE_BUDGETS.items():
            res = recorded.get((model, preset))
            name = f"04 {preset} preset, {model}"
            if res is None or not res.get("seconds"):
                rows.append(Row("6 whole suite", name, None, "s", "budget", budget, None, "x budget",
                                f"<= 1.00x ({budget:.0f} s)", "SKIP",
                                note="not run to completion on this machine: no recorded result"))
                continue
            secs = float(res["seconds"])
            rows.append(Row("6 whole suite", name, secs, "s", "budget", budget, secs / budget, "x budget",
                            f"<= 1.00x ({budget:.0f} s)", judge(secs / budget, at_most=1.0),
                            note=f"recorded {res['date']} on {res['cpu']} ({res['file']})"))
    return rows


def bench_suite(run_suite: bool, out: dict[str, Any]) -> list:
    from benchutil import Row

    runs = ROOT / "runs"
    if run_suite:
        import shutil
        import tempfile

        from steerlab.models import cache_root

        # A fresh statistics cache (the model checkpoint linked in), as on a new machine
        # after `make setup`: notebooks that share statistics still share them within the run.
        cache = Path(tempfile.mkdtemp(prefix="steerlab-bench-cache-"))
        (cache / "models").symlink_to((cache_root() / "models").resolve(), target_is_directory=True)
        log(f"[suite] running `make run` (every notebook, default parameters, statistics cache {cache}) ...")
        before = {d.name for d in runs.glob("*")} if runs.is_dir() else set()
        started = time.perf_counter()
        proc = subprocess.run(["make", "run"], cwd=ROOT, capture_output=True, text=True, check=False,
                              env={**os.environ, "STEERLAB_CACHE": str(cache)})
        wall = time.perf_counter() - started
        shutil.rmtree(cache, ignore_errors=True)
        new = [d for d in runs.glob("*") if d.name not in before and d.is_dir() and not d.is_symlink()]
        run_dir = new[0] if new else None
        seconds = _notebook_seconds(run_dir) if run_dir else {}
        out["suite"] = {"source": "make run (this benchmark)", "seconds": wall, "returncode": proc.returncode,
                        "run_dir": str(run_dir), "notebooks": seconds,
                        "tail": proc.stdout[-2000:] + proc.stderr[-2000:]}
        note = "measured now" + ("" if proc.returncode == 0 else f"; make run FAILED ({proc.returncode})")
        return _suite_rows(run_dir or runs, seconds, wall, note)
    dirs = sorted((d for d in runs.glob("*") if d.is_dir() and not d.is_symlink()),
                  key=lambda d: d.stat().st_mtime) if runs.is_dir() else []
    for d in reversed(dirs):
        seconds = _notebook_seconds(d)
        if len(seconds) >= 2:
            out["suite"] = {"source": str(d), "notebooks": seconds}
            return _suite_rows(d, seconds, None, "")
    out["suite"] = {"source": None, "seconds": None}
    log("[suite] not measured (no runs/*/ with executed notebooks; pass --suite to run `make run`)")
    return [Row("6 whole suite", "make run wall time: not measured", None, "s",
                note="no runs/*/ folder with two or more executed notebooks; pass --suite to time `make run`")]
