"""The README's images, regenerated (never kept by hand): each is rendered in headless Chromium at 1024 px.

``answer``: the answer's figures from the recorded results (``scripts/findings.py figures``).
``report RUN_DIR``: the first screen of a run's report (``RUN_DIR/index.html``).
``widget``: the steering widget on the embedded model, its state as a standalone page (``page_html``).
``all RUN_DIR``: every one of them. ``--out`` writes elsewhere than ``docs/images/`` (the tests use it).

Usage: ``.venv/bin/python scripts/screenshots.py all runs/latest``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "docs" / "images"
sys.path.insert(0, str(Path(__file__).resolve().parent))


def answer(out: Path) -> list[Path]:
    """``answer.png`` (and ``answer_targets.png`` where per-target results were recorded)."""
    import findings

    return findings.figures(out)


def report(out: Path, run_dir: Path) -> list[Path]:
    """``report_1024.png``: what a reader of ``RUN_DIR/index.html`` sees first at 1024 px."""
    from steerlab.lab.snapshot import screenshot

    page = run_dir / "index.html"
    if not page.is_file():
        raise SystemExit(f"{page} does not exist: run `make run` first (or pass a run folder)")
    return [screenshot(page, out / "report_1024.png", width=1024, height=900, wait_for=".figure .main-svg")]


def widget(out: Path) -> list[Path]:
    """``widget_1024.png``: the widget after one greedy generation on the embedded model, as a page."""
    import steerlab as sl
    from steerlab.lab.snapshot import screenshot
    from steerlab.lab.widget import SteeringWidget

    model = sl.load_model(progress=False)
    w = SteeringWidget(model, recipe="mean_centred", target="fantasy", layer=15, greedy=True, max_new_tokens=30,
                       background=False, judge=True, save_dir=Path(tempfile.mkdtemp()))
    if w.last_error:
        raise SystemExit(f"the widget failed: {w.last_error}")
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "widget.html"
        page.write_text(w.page_html(), encoding="utf-8")
        return [screenshot(page, out / "widget_1024.png", width=1024, height=1100)]


IMAGES_MADE: dict[str, Callable[..., list[Path]]] = {
    "answer.png": answer, "answer_targets.png": answer, "report_1024.png": report, "widget_1024.png": widget}
"""Every image of the README, by file name, and what makes it."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("what", choices=["answer", "report", "widget", "all"])
    parser.add_argument("run_dir", type=Path, nargs="?", default=ROOT / "runs" / "latest")
    parser.add_argument("--out", type=Path, default=IMAGES)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    made: list[Path] = []
    if args.what in ("answer", "all"):
        made += answer(args.out)
    if args.what in ("report", "all"):
        made += report(args.out, args.run_dir)
    if args.what in ("widget", "all"):
        made += widget(args.out)
    print("\n".join(str(p) for p in made))
    return 0


if __name__ == "__main__":
    sys.exit(main())
