"""Progress a notebook reports to the terminal that runs it: papermill executes the notebook in a kernel whose
output goes into the notebook, not to the terminal, so notebook 04 writes each finished cell as a JSON line into
its run folder (``progress.jsonl``) and the runner (:mod:`steerlab.lab.runner`) prints them as they come.

Example:
    >>> on_cell = reporter("runs/20261207-101500", "04_compare_methods")   # in the notebook
    >>> result = run_compare(model, cfg, on_cell=on_cell)
    >>> with watching("runs/20261207-101500"):                          # in the runner, around papermill
    ...     papermill.execute_notebook(...)
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["FILE", "line", "reporter", "watching"]

FILE = "progress.jsonl"
"""The file in a run folder the notebooks append their progress to."""


def reporter(output_dir: str | Path, notebook: str) -> Callable[[dict[str, Any]], None]:
    """A callback for :func:`steerlab.study.compare.run_compare`'s ``on_cell`` that appends each event, with the
    notebook's name, to ``output_dir/progress.jsonl`` (one line each, flushed at once)."""
    path = Path(output_dir).expanduser() / FILE

    def report(event: dict[str, Any]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as f:
            f.write(json.dumps({"notebook": notebook, "time": time.time(), **event}) + "\n")

    return report


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def line(event: dict[str, Any]) -> str:
    """One event as the terminal shows it.

    Example:
        >>> line({"notebook": "04_compare_methods", "done": 3, "total": 6, "cell": ["fantasy", 15, "all"],
        ...       "seconds": 98.0, "reused": False, "left_seconds": 290.0})
        '    04_compare_methods: cell 3/6 (fantasy, layer 15, all) measured in 98 s; about 4.8 min left'
    """
    head = f"    {event.get('notebook', '?')}: "
    if event.get("cell") is None:
        return head + f"{event.get('total', '?')} cells (target, layer, position) to measure"
    target, layer, position = event["cell"]
    what = "read back from runs/cells" if event.get("reused") else f"measured in {_minutes(float(event['seconds']))}"
    left = event.get("left_seconds")
    tail = "" if event["done"] == event["total"] else (
        f"; about {_minutes(float(left))} left" if left is not None else "; the time left is known after one cell")
    return head + f"cell {event['done']}/{event['total']} ({target}, layer {layer}, {position}) {what}{tail}"


def _complete_end(path: Path) -> int:
    """Bytes of ``path`` up to its last complete line (0 if it does not exist)."""
    if not path.exists():
        return 0
    data = path.read_bytes()
    return data.rfind(b"\n") + 1


@contextmanager
def watching(run_dir: str | Path, *, show: Callable[[str], None] | None = None,
             every: float = 1.0) -> Iterator[None]:
    """While open, print each line appended to ``run_dir/progress.jsonl`` after it opened (a thread polls
    it every ``every`` s): an earlier notebook's lines are not shown again, and a line is shown once it
    is complete."""
    path = Path(run_dir) / FILE
    stop = threading.Event()
    out = show or (lambda text: print(text, flush=True))
    start = _complete_end(path)

    def poll() -> None:
        offset = start
        while True:
            finished = stop.wait(every)
            if path.exists():
                with path.open("rb") as f:
                    f.seek(offset)
                    chunk = f.read()
                done = chunk.rfind(b"\n") + 1  # only complete lines; a line being written waits
                for raw in chunk[:done].decode("utf-8", errors="replace").splitlines():
                    try:
                        out(line(json.loads(raw)))
                    except (ValueError, KeyError, TypeError):
                        continue  # a line cut short by a crash: the next ones still show
                offset += done
            if finished:
                return

    thread = threading.Thread(target=poll, name="steerlab-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
