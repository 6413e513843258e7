"""The batch runner behind ``make run``: every notebook, in order, with papermill.

Each run goes to ``runs/<timestamp>/``: the executed ``.ipynb``, an HTML export,
figures as standalone HTML and ``summary.json``. ``runs/latest`` points at the
newest run. A failing notebook is reported with its error and the run goes on
with the next one; the exit status is non-zero if any failed.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

__all__ = ["NotebookResult", "repo_root", "run_notebooks"]


def repo_root() -> Path:
    return Path(__file__).resolve().parents[3]


@dataclass
class NotebookResult:
    notebook: str
    ok: bool
    seconds: float
    error: str = ""


def _export_html(executed: Path) -> None:
    import nbconvert
    import nbformat

    nb = nbformat.read(executed, as_version=4)
    body, _ = nbconvert.HTMLExporter().from_notebook_node(nb)
    executed.with_suffix(".html").write_text(body, encoding="utf-8")


def _point_latest(root: Path, run_dir: Path) -> None:
    link = root / "latest"
    tmp = root / f".latest.{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(run_dir.name)
    os.replace(tmp, link)


def _headline(summary: Mapping[str, Any]) -> list[str]:
    lines = []
    for key, values in summary.items():
        if not isinstance(values, Mapping):
            continue
        shown = values.get("headline")
        if isinstance(shown, Mapping):
            parts = ", ".join(f"{k}={v}" for k, v in shown.items())
            lines.append(f"  {key}: {parts}")
        else:
            lines.append(f"  {key}: {len(values)} entries recorded")
    return lines


def run_notebooks(
    notebooks: Sequence[Path] | None = None,
    *,
    runs_root: Path | None = None,
    parameters: Mapping[str, Any] | None = None,
    kernel_name: str = "python3",
    progress: bool = True,
) -> tuple[Path, list[NotebookResult]]:
    """Execute notebooks headless into a new timestamped run folder.

    Args:
        notebooks: paths; ``None`` for every ``notebooks/*.ipynb`` in name order.
        runs_root: where run folders go (default ``runs/`` in the repository).
        parameters: papermill parameters for every notebook (``output_dir`` is set
            to the run folder); a notebook ignores the ones it does not declare.

    Returns:
        The run folder and one result per notebook.
    """
    import papermill

    root = repo_root()
    paths = sorted((root / "notebooks").glob("[0-9]*.ipynb")) if notebooks is None else [Path(p) for p in notebooks]
    if not paths:
        raise FileNotFoundError("no notebooks to run")
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"notebook not found: {p}")
    runs_root = Path(runs_root) if runs_root is not None else root / "runs"
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = runs_root / stamp
    suffix = 1
    while run_dir.exists():
        suffix += 1
        run_dir = runs_root / f"{stamp}-{suffix}"
    run_dir.mkdir(parents=True)
    results: list[NotebookResult] = []
    for i, path in enumerate(paths, start=1):
        print(f"[{i}/{len(paths)}] {path.name} ...", flush=True)
        executed = run_dir / path.name
        params = {**(parameters or {}), "output_dir": str(run_dir.resolve())}
        declared = papermill.inspect_notebook(str(path))
        params = {k: v for k, v in params.items() if k in declared}
        started = time.perf_counter()
        try:
            papermill.execute_notebook(
                str(path), str(executed), parameters=params, kernel_name=kernel_name,
                cwd=str(path.parent), progress_bar=progress,
            )
            result = NotebookResult(path.name, True, time.perf_counter() - started)
        except Exception as err:  # noqa: BLE001 - papermill raises PapermillExecutionError with the cell's traceback
            message = str(err) if str(err) else traceback.format_exc()
            result = NotebookResult(path.name, False, time.perf_counter() - started, message)
            print(f"    FAILED: {path.name}\n{message}", flush=True)
        if executed.exists():
            try:
                _export_html(executed)
            except Exception as err:  # noqa: BLE001 - an export problem must not hide the run's results
                print(f"    (HTML export of {executed.name} failed: {err})", flush=True)
        results.append(result)
        print(f"    {'ok' if result.ok else 'FAILED'} in {result.seconds:.0f} s", flush=True)
    _point_latest(runs_root, run_dir)
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    print(f"\nrun folder: {run_dir}")
    for r in results:
        print(f"  {'ok    ' if r.ok else 'FAILED'} {r.notebook:32s} {r.seconds:6.0f} s")
    print("headline numbers (summary.json):")
    print("\n".join(_headline(summary)) or "  (none)")
    return run_dir, results
