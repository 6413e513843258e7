"""The run report (steerlab.lab.report.build_report) and the figures (steerlab.lab.plots),
opened in headless Debian Chromium with every non-file request aborted: every figure draws
(plotly's ``svg.main-svg`` in each figure div), every headline number is shown with its name,
nothing is fetched. Built from a small synthetic run folder, so it is fast.

Needs ``/usr/bin/chromium`` (``apt-get install chromium``; ``make test`` installs it).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from steerlab.lab import plots
from steerlab.lab.report import HEADLINES, WIDGET_NOTE, build_report, headlines, record, save_figure, widget_with_note
from steerlab.lab.runner import _headline

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
# Every plotly graph div on the page has drawn its SVG.
ALL_DRAWN = """(selector) => {
  const divs = [...document.querySelectorAll(selector)];
  return divs.length > 0 && divs.every(d => d.querySelector('svg.main-svg'));
}"""


@dataclass
class Rendered:
    figures: int
    drawn: int
    text: str
    requested: list[str] = field(default_factory=list)  # non-file URLs the page tried (all aborted)


def render_offline(path: Path, selector: str | None, *, timeout_ms: int = 60_000) -> Rendered:
    """Open ``path`` in Chromium with the network off; wait until every ``selector`` div has drawn
    (``None``: a page without figures)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium)")
    requested: list[str] = []

    def only_files(route: Any) -> None:
        if route.request.url.startswith(("file://", "data:", "blob:")):
            route.continue_()
        else:
            requested.append(route.request.url)
            route.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, timeout=60_000)
        try:
            context = browser.new_context(offline=True)
            context.route("**/*", only_files)
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(path.as_uri(), wait_until="load", timeout=timeout_ms)
            figures = drawn = 0
            if selector is not None:
                try:
                    page.wait_for_function(ALL_DRAWN, arg=selector, timeout=timeout_ms, polling=200)
                except PlaywrightTimeout:
                    pass  # counted below, with the page's errors in the message
                figures = page.locator(selector).count()
                drawn = page.evaluate(f"() => [...document.querySelectorAll({selector!r})]"
                                      ".filter(d => d.querySelector('svg.main-svg')).length")
            text = page.inner_text("body")
        finally:
            browser.close()
    assert not errors, f"page errors in {path.name}: {errors}"
    return Rendered(figures, drawn, text, requested)


def synthetic_summary() -> dict[str, Any]:
    return {
        "bias": {"model": "tiny-model", "layers": [0, 1, 2],
                 "headline": {"mid_layer": 1, "ratio_mid": 0.714, "avg_pairwise_cos_mid": 0.532,
                              "centred_max_ratio": 3.1e-07},
                 "parameters": {"sample_size": 6, "max_length": 48}},
        "interpret": {"model": "tiny-model", "genres": ["fantasy", "sports", "horror"], "top_k": 5, "heldout_count": 6,
                      "headline": {"layer": 18, "jaccard_raw": 0.873, "jaccard_centred": 0.118,
                                   "acc_raw_at_layer": 0.333, "acc_centred_at_layer": 0.833},
                      "conclusion": ["Centring separates the genres (synthetic)."]},
        "steer": {"model": "tiny-model", "layer": 15, "coefficient": 1.0, "positions": ["first", "all_prompt"],
                  "headline": {"additional": -0.0371, "love_hate": 0.0125}},
        "compare": {"model": "tiny-model", "config": {"damage_threshold": 1.5},
                    "headline": {"best_method": "mean_centred", "best_score": 0.4127, "judge_accuracy": 0.912}},
    }


def compare_rows() -> list[dict[str, Any]]:
    rows = [{"target": "fantasy", "method": "none", "layer": 8, "position": "all", "coefficient": 0.0,
             "concept_delta": 0.0, "concept_delta_ci": [0.0, 0.0], "score": 0.2, "perplexity_ratio": 1.0, "kl": 0.0}]
    for i, method in enumerate(("raw", "mean_centred", "random")):
        for c in (0.25, 0.5):
            rows.append({"target": "fantasy", "method": method, "layer": 8, "position": "all", "coefficient": c,
                         "concept_delta": 0.01 * i * c, "concept_delta_ci": [0.01 * i * c - 0.01, 0.01 * i * c + 0.02],
                         "score": 0.3, "perplexity_ratio": 1 + c * (i + 1), "kl": 0.1 * c})
    return rows


@pytest.fixture
def run_dir(tmp_path: Path) -> Iterator[Path]:
    """A run folder as the runner leaves it: summary, run.json, three figures, one notebook and export."""
    folder = tmp_path / "20261201-120000"
    folder.mkdir()
    for key, values in synthetic_summary().items():
        record(folder, key, values)
    (folder / "run.json").write_text(json.dumps({"started": "20261201-120000", "seconds": 12.5, "parameters": {},
                                                 "notebooks": [{"notebook": "01_bias.ipynb", "ok": True,
                                                                "seconds": 4.2, "error": ""},
                                                               {"notebook": "02_interpret.ipynb", "ok": False,
                                                                "seconds": 1.0, "error": "boom"}]}))
    (folder / "01_bias.ipynb").write_text("{}")
    (folder / "01_bias.html").write_text("<html></html>")
    where = plots.context("tiny-model", folder)
    save_figure(plots.layer_lines([0, 1, 2], {"raw": [0.2, 0.4, 0.5], "centred": [0.3, 0.6, 0.9]}, title="Accuracy",
                                  yaxis="accuracy", where=where, references={"chance (1/3)": 1 / 3}),
                folder, "02_heldout_accuracy")
    save_figure(plots.effect_vs_damage(compare_rows(), ["raw", "mean_centred", "random"], threshold=1.5,
                                       target="fantasy", where=where), folder, "04_effect_vs_damage")
    save_figure(plots.sweep_panels([0.0, 1.0], {"first": [0.0, 0.1], "all_prompt": [0.0, 0.3]},
                                   {"first": [10.0, 12.0], "all_prompt": [10.0, 30.0]}, method="counterbalanced",
                                   title="sweep", where=where), folder, "03_sweep_additional")
    yield folder


@pytest.mark.browser
def test_report_renders_offline_with_every_figure_and_number(run_dir: Path) -> None:
    page = build_report(run_dir)
    source = page.read_text(encoding="utf-8")
    assert "<script src" not in source.replace(" ", "").replace("<scriptsrc", "<script src")  # nothing loaded
    assert source.count("* plotly.js v") == 1  # plotly.js inline exactly once
    shown = render_offline(page, ".figure")
    assert shown.figures == 3 and shown.drawn == 3, shown
    assert shown.requested == []
    hs = headlines(synthetic_summary())
    assert len(hs) == 14  # 4 + 5 + 2 + 3
    for h in hs:
        assert h.name in shown.text and h.shown in shown.text, h
    assert "norm-of-mean ratio at layer 1" in shown.text and "0.714" in shown.text
    assert "vocabulary-rate change, example additional, ×1.0 at all_prompt, layer 15" in shown.text
    assert "3.10e-07" in shown.text  # small numbers keep their digits
    assert "tiny-model" in shown.text and "FAILED" in shown.text and "boom" in shown.text
    assert "Centring separates the genres (synthetic)." in shown.text
    assert 'href="01_bias.ipynb"' in source and 'href="01_bias.html"' in source


@pytest.mark.browser
def test_standalone_figure_renders_when_copied_alone(run_dir: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    copy = elsewhere / "fig.html"
    shutil.copyfile(run_dir / "figures" / "04_effect_vs_damage.html", copy)
    shown = render_offline(copy, ".plotly-graph-div")
    assert shown.figures == 1 and shown.drawn == 1 and shown.requested == []
    assert "damage threshold: perplexity ratio 1.5" in shown.text  # the labelled reference line
    size = copy.stat().st_size
    assert 3_000_000 < size < 8_000_000, size  # plotly.js (~4.8 MB) is in the file


@pytest.mark.browser
def test_widget_note_shows_static_and_hides_when_live(tmp_path: Path) -> None:
    """Static (no widget manager): the note is visible. Live: the widget's style hides it."""
    note, box = widget_with_note(_FakeUi())
    hide = box.children[0].value
    assert WIDGET_NOTE in note.data and "make lab" in note.data
    static, live = tmp_path / "static.html", tmp_path / "live.html"
    static.write_text(f"<html><body>{note.data}</body></html>")
    live.write_text(f"<html><body>{note.data}{hide}</body></html>")
    assert "live widget needs a running kernel" in render_offline(static, None).text
    assert "live widget needs a running kernel" not in render_offline(live, None).text


class _FakeUi:
    """Stands in for SteeringWidget.ui (any ipywidget)."""

    def __new__(cls) -> Any:  # type: ignore[misc]
        import ipywidgets as w

        return w.Label("widget")


def test_headlines_name_every_quantity() -> None:
    hs = {(h.summary_key, h.key): h for h in headlines(synthetic_summary())}
    for key in HEADLINES:
        if key[1] != "*":
            assert key in hs, key
    ratio = hs[("bias", "ratio_mid")]
    assert ratio.line() == ("norm-of-mean ratio at layer 1: 0.714 (norm of the layer mean / mean activation norm; "
                            "1 = all activations identical, 0 = centred on the origin)")
    assert "chance = 1/3" in hs[("interpret", "acc_raw_at_layer")].meaning
    assert "of 6 held-out stories" in hs[("interpret", "acc_raw_at_layer")].meaning
    assert "0 to 1" in hs[("compare", "best_score")].meaning
    unknown = headlines({"bias": {"headline": {"new_number": 2.5}}})
    assert unknown[0].name == "new_number" and unknown[0].meaning == "no description"  # shown, never dropped
    printed = _headline(synthetic_summary())
    assert "  steer: vocabulary-rate change, example additional, ×1.0 at all_prompt, layer 15: -0.0371 (" in printed[9]


def test_figures_cannot_be_misread() -> None:
    fig = plots.effect_vs_damage(compare_rows(), ["raw", "mean_centred", "random"], threshold=1.5, target="fantasy",
                                 where="tiny · run x")
    colours = {t.name: t.marker.color for t in fig.data}
    assert colours == {"none (unsteered)": plots.METHOD_COLOURS["none"], "raw": plots.METHOD_COLOURS["raw"],
                       "mean_centred": plots.METHOD_COLOURS["mean_centred"], "random": plots.METHOD_COLOURS["random"]}
    assert "tiny · run x" in fig.layout.title.text
    labels = [a.text for a in fig.layout.annotations]
    assert "damage threshold: perplexity ratio 1.5" in labels and "no effect" in labels
    raw_frontier = next(t for t in fig.data if t.name == "raw" and t.mode == "lines+markers")
    assert "target: fantasy<br>method: raw<br>layer: 8<br>coefficient: ×0.25" in raw_frontier.hovertext[0]
    raw_points = next(t for t in fig.data if t.name == "raw" and t.mode == "markers")
    assert list(raw_points.error_y.array) == pytest.approx([0.02, 0.02])  # CI bars: hi - effect
    xs = list(raw_frontier.x)
    assert xs == sorted(xs), "the frontier runs in damage order, never in sweep order"
    pooled = [{"method": "none", "layer": 8, "position": "all", "mean": 0.2, "ci": [0.1, 0.3]},
              {"method": "raw", "layer": 8, "position": "all", "mean": 0.35, "ci": [0.25, 0.5]}]
    score = plots.score_by_method(pooled, ["none", "raw"], where="w")
    assert [t.name for t in score.data] == ["raw"] and score.data[0].marker.color == plots.METHOD_COLOURS["raw"]
    assert [a.text for a in score.layout.annotations] == ["unsteered: 0.200"]  # a line, not a point
    assert [list(level) for level in score.data[0].x] == [["raw"], ["L8 all"]]  # each point names its position
    two = pooled + [{"method": "none", "layer": 8, "position": "first", "mean": 0.25, "ci": [0.1, 0.3]}]
    assert [a.text for a in plots.score_by_method(two, ["none", "raw"], where="w").layout.annotations] == [
        "unsteered (layer 8, all): 0.200", "unsteered (layer 8, first): 0.250"]
    acc = plots.layer_lines([0, 1], {"raw": [0.1, 0.2], "centred": torch.tensor([0.3, 0.4])}, title="t", yaxis="accuracy",
                            where="w", references={"chance (1/7)": 1 / 7})
    assert [t.name for t in acc.data] == ["raw", "centred"]  # chance is a labelled line, not a series
    assert acc.data[1].line.color == plots.METHOD_COLOURS["mean_centred"]
    assert [a.text for a in acc.layout.annotations] == ["chance (1/7)"]
    sweep = plots.sweep_panels([0.0, 1.0], {"first": [0.0, 0.1]}, {"first": [10.0, 12.0]}, method="prompt_pair",
                               title="s", where="w")
    assert {t.yaxis for t in sweep.data} == {"y", "y2"}  # rate and perplexity on separate axes
    assert sweep.layout.yaxis2.type == "log" and sweep.layout.yaxis.title.text == "vocabulary rate"
    assert all(t.line.color == plots.METHOD_COLOURS["prompt_pair"] for t in sweep.data)
    assert "target-vocabulary rate: %{y" in sweep.data[0].hovertemplate and "perplexity: %{y" in sweep.data[1].hovertemplate


def test_export_drops_widgets_and_cdn_scripts(tmp_path: Path) -> None:
    """A saved widget cannot run: the export keeps the static note, not the widget or its state."""
    import nbformat
    from steerlab.lab.runner import WIDGET_VIEW, export_html

    nb = nbformat.v4.new_notebook()
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    cell = nbformat.v4.new_code_cell("display(*widget_with_note(ui))")
    cell.outputs = [nbformat.v4.new_output("display_data", data={"text/html": f"<div>{WIDGET_NOTE}</div>"}),
                    nbformat.v4.new_output("display_data", data={WIDGET_VIEW: {"model_id": "x", "version_major": 2},
                                                                 "text/plain": "VBox(children=...)"})]
    nb.cells = [cell]
    path = tmp_path / "03_steer.ipynb"
    nbformat.write(nb, path)
    html = export_html(path).read_text(encoding="utf-8")
    assert "live widget needs a running kernel" in html and "VBox(children" not in html
    assert "<script src=" not in html  # no require.js, MathJax or widget-manager CDN
    saved = nbformat.read(path, as_version=4)
    assert "widgets" not in saved.metadata and len(saved.cells[0].outputs) == 1
