"""The batch runner (steerlab.lab.runner) as `make run` uses it: progress shown while notebook 04 runs,
`runs/latest` moved only to a run that finished, the model's depth checked before a run folder exists, and a
run killed during 04 that resumes from its saved cells to the same tables as an uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import nbformat
import pytest
import steerlab
from steerlab.lab.progress import FILE, line, reporter, watching
from steerlab.lab.report import ParameterError
from steerlab.lab.runner import check_model_shape, model_depth, run_notebooks

REPO = Path(__file__).resolve().parents[1]


def test_progress_lines_say_which_cell_how_many_and_what_is_left(tmp_path: Path) -> None:
    report = reporter(tmp_path, "04_compare_methods")
    shown: list[str] = []
    with watching(tmp_path, show=shown.append, every=0.05):
        report({"done": 0, "total": 6, "cell": None, "seconds": 0.0, "reused": False, "left_seconds": None})
        report({"done": 1, "total": 6, "cell": ["fantasy", 15, "all"], "seconds": 100.0, "reused": False,
                "left_seconds": 500.0})
        report({"done": 2, "total": 6, "cell": ["fantasy", 15, "all_prompt"], "seconds": 0.1, "reused": True,
                "left_seconds": 400.0})
        with (tmp_path / FILE).open("a") as f:
            f.write('{"notebook": "04", "done": 3, "to')  # a line cut short by a crash is skipped, not fatal
        time.sleep(0.3)
    assert shown[0] == "    04_compare_methods: 6 cells (target, layer, position) to measure"
    assert shown[1] == ("    04_compare_methods: cell 1/6 (fantasy, layer 15, all) measured in 1.7 min; "
                        "about 8.3 min left")
    assert "cell 2/6 (fantasy, layer 15, all_prompt) read back from runs/cells; about 6.7 min left" in shown[2]
    assert len(shown) == 3
    # the next notebook's watch shows only what is written while it runs, not the lines above again
    again: list[str] = []
    with (tmp_path / FILE).open("a") as f:
        f.write('tal": 6}\n')  # the cut line, completed: written before this watch opened
    with watching(tmp_path, show=again.append, every=0.05):
        with (tmp_path / FILE).open("a") as f:
            f.write('{"notebook": "06_task_vectors", "done": 1, "total": 2, "cell": ["a", 1, "all"], "seconds": 2')
        time.sleep(0.2)
        assert again == []  # a line still being written waits until it is whole
        with (tmp_path / FILE).open("a") as f:
            f.write(', "left_seconds": 2.0}\n')
        time.sleep(0.3)
    assert again == ["    06_task_vectors: cell 1/2 (a, layer 1, all) measured in 2 s; about 2 s left"]
    last = line({"notebook": "n", "done": 6, "total": 6, "cell": ["x", 1, "all"], "seconds": 5.0,
                 "left_seconds": 0.0})
    assert last.endswith("measured in 5 s")  # the last cell says nothing about time left


def _notebook(path: Path, body: str) -> Path:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('output_dir = "."')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# probe"), params, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


@pytest.mark.notebook
def test_a_failed_run_never_takes_latest(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    good = _notebook(tmp_path / "90_good.ipynb", "print('fine')")
    bad = _notebook(tmp_path / "91_bad.ipynb", "raise ValueError('a typo in the parameters')")
    first, results = run_notebooks([good], runs_root=runs)
    assert all(r.ok for r in results) and (runs / "latest").resolve() == first.resolve()
    second, results = run_notebooks([good, bad], runs_root=runs)
    assert not all(r.ok for r in results) and second != first
    assert (runs / "latest").resolve() == first.resolve(), "latest moved to a run with a failed notebook"


def test_layers_past_the_model_are_refused_before_a_run_folder(tmp_path: Path) -> None:
    assert model_depth(None) == 30  # the embedded SmolLM2, from its config alone
    runs = tmp_path / "runs"
    with pytest.raises(ParameterError, match=r"04_compare_methods.ipynb: parameter layers=\[40\].*0\.\.29"):
        run_notebooks([REPO / "notebooks" / "04_compare_methods.ipynb"], runs_root=runs,
                      parameters={"layers": [40]})
    assert not runs.exists(), "a run folder was made for parameters the model cannot take"
    with pytest.raises(ParameterError, match=r"01_bias.ipynb: parameter layers=40"):
        check_model_shape({REPO / "notebooks" / "01_bias.ipynb": {"layers": [3, 40]}}, None)
    check_model_shape({REPO / "notebooks" / "01_bias.ipynb": {"layers": [30]}}, None)  # 01 reads the last too
    check_model_shape({REPO / "notebooks" / "04_compare_methods.ipynb": {"layers": [29]}}, None)


def _tables(run: Path) -> dict[str, Any]:
    compare = json.loads((run / "summary.json").read_text())["compare"]
    keep = ("rows", "steerability", "matched", "contrasts")
    return {k: compare[k] if k != "contrasts" else {m: b["results"] for m, b in compare[k].items()} for k in keep}


@pytest.mark.notebook
def test_a_run_killed_during_04_resumes_to_the_same_tables(tiny_llama: steerlab.Model, tmp_path: Path) -> None:
    """`make run`'s command, killed (SIGKILL, the whole process group) after notebook 04's first cell, started
    again: it reads the saved cell back, measures the other, and records the tables an uninterrupted run
    records."""
    params = tmp_path / "params.yaml"
    params.write_text(f"preset: quick\npositions: [all, all_prompt]\nmodel_name: {tiny_llama.source}\n")
    notebook = REPO / "notebooks" / "04_compare_methods.ipynb"

    def command(runs: Path) -> list[str]:
        return [sys.executable, "-m", "steerlab.lab.cli", "run-notebooks", "--only", str(notebook), "--params",
                str(params), "--runs-root", str(runs)]

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    whole = tmp_path / "whole"
    done = subprocess.run(command(whole), check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "cell 1/2" in done.stdout and "cell 2/2" in done.stdout, done.stdout[-2000:]
    assert "about" in done.stdout  # the estimate of what is left

    killed = tmp_path / "killed"
    proc = subprocess.Popen(command(killed), cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    deadline = time.monotonic() + 900
    try:
        while time.monotonic() < deadline:
            files = list(killed.glob("2*/" + FILE))
            if files and '"done": 1' in files[0].read_text():
                break
            assert proc.poll() is None, "the run ended before it could be killed"
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert not (killed / "latest").exists(), "the killed run took latest"
    started = time.perf_counter()
    again = subprocess.run(command(killed), check=False, cwd=REPO, env=env, capture_output=True, text=True,
                           timeout=900)
    second_start = time.perf_counter() - started
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert "cell 1/2" in again.stdout and "read back from runs/cells" in again.stdout, again.stdout[-2000:]
    assert _tables((killed / "latest").resolve()) == _tables((whole / "latest").resolve())
    print(f"second start of the killed run: {second_start:.0f} s")
