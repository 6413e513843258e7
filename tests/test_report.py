"""The run report (steerlab.lab.report.build_report), the figures (steerlab.lab.plots) and the
tables (steerlab.lab.tables), opened in headless Debian Chromium at 1024 and 1400 px with every
non-file request aborted: every figure draws (plotly's ``svg.main-svg`` in each figure div) from
the run folder's one shared plotly.js, every headline number is shown with its name, the page
has a contents list, side margins, steered examples and no absolute path, and no figure title,
axis title or legend runs out of its figure. Built from a small synthetic run folder, so it is
fast; :func:`check_report` is also what the real-run test in ``test_browser.py`` uses.

Needs ``/usr/bin/chromium`` (``apt-get install chromium``; ``make test`` installs it).
"""

from __future__ import annotations

import html
import itertools
import json
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from steerlab.lab import compare_plots, plots, style
from steerlab.lab.page import ANSWER_FIGURE, build_report
from steerlab.lab.plotlyjs import PLOTLY_JS, plotly_banner, share_plotlyjs
from steerlab.lab.report import (
    HEADLINES,
    WIDGET_NOTE,
    figure_order,
    headlines,
    record,
    save_figure,
    widget_with_note,
)
from steerlab.lab.runner import _headline
from steerlab.lab.tables import heldout_columns, html_table, markdown_table

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
# Every plotly graph div on the page has drawn its SVG.
ALL_DRAWN = """(selector) => {
  const divs = [...document.querySelectorAll(selector)];
  return divs.length > 0 && divs.every(d => d.querySelector('svg.main-svg'));
}"""


# Where the page's content sits, and every figure's title, axis titles and legend that run out
# of their figure's SVG (plotly does not wrap or shrink them: they are cut off).
LAYOUT = """() => {
  const main = document.querySelector('main') || document.body;
  const box = main.getBoundingClientRect(), style = getComputedStyle(main);
  const clipped = [];
  for (const plot of document.querySelectorAll('.js-plotly-plot')) {
    const svg = plot.querySelector('svg.main-svg');
    if (!svg) continue;
    const s = svg.getBoundingClientRect();
    for (const el of plot.querySelectorAll('.gtitle, .g-xtitle, .g-ytitle, .g-x2title, .g-y2title, .legend')) {
      const b = el.getBoundingClientRect();
      if (b.width === 0) continue;
      if (b.left < s.left - 1 || b.right > s.right + 1 || b.top < s.top - 1 || b.bottom > s.bottom + 1)
        clipped.push({figure: plot.id || plot.getAttribute('data-name') || '?', what: el.getAttribute('class'),
                      text: (el.textContent || '').slice(0, 60), left: b.left - s.left, right: b.right - s.right});
    }
  }
  const tables = [...document.querySelectorAll('.steerlab-table, table')]
    .filter(t => t.scrollWidth > t.clientWidth + 1 || t.getBoundingClientRect().right > window.innerWidth)
    .map(t => (t.innerText || '').slice(0, 60));
  return {viewport: window.innerWidth, scrollWidth: document.documentElement.scrollWidth, tables,
          contentLeft: box.left + parseFloat(style.paddingLeft),
          contentRight: box.right - parseFloat(style.paddingRight), clipped};
}"""


@dataclass
class Rendered:
    figures: int
    drawn: int
    text: str
    requested: list[str] = field(default_factory=list)  # non-file URLs the page tried (all aborted)
    layout: dict[str, Any] = field(default_factory=dict)  # LAYOUT's answer
    html: str = ""  # the page's DOM after scripts ran


def render_offline(path: Path, selector: str | None, *, timeout_ms: int = 60_000, width: int = 1400,
                   screenshot: Path | None = None) -> Rendered:
    """Open ``path`` in Chromium with the network off at ``width`` px; wait until every ``selector``
    div has drawn (``None``: a page without figures); optionally save a full-page screenshot."""
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
            context = browser.new_context(offline=True, viewport={"width": width, "height": 1000})
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
            layout = page.evaluate(LAYOUT)
            dom = page.content()
            if screenshot is not None:
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    assert not errors, f"page errors in {path.name}: {errors}"
    return Rendered(figures, drawn, text, requested, layout, dom)


MAX_RUN_BYTES = 25_000_000


def absolute_paths(text: str, run_dir: Path) -> list[str]:
    """This machine's absolute paths in ``text``: the run folder, the repository, the Python
    environment, the home and temporary folders."""
    import sys

    roots = {str(run_dir.resolve()), str(run_dir.absolute()), str(Path(__file__).resolve().parents[1]), sys.prefix,
             str(Path.home()), "/tmp/", "/work/", "file://"}
    return sorted({root for root in roots if root not in ("/", "") and root in text})


def check_report(run_dir: Path, *, widths: Sequence[int] = (1024, 1400), shots: Path | None = None,
                 notebooks: int | None = None) -> dict[int, Rendered]:
    """The checks a run folder's report must pass, at each width: every figure drawn from the one
    shared plotly.js, a contents list linking every notebook section, nothing clipped, side
    margins, no absolute path, no network request; and the folder at most 25 MB with one plotly.js.
    Returns what each width rendered, for the caller's own checks."""
    page = build_report(run_dir)
    source = page.read_text(encoding="utf-8")
    banner = plotly_banner()
    carriers = [p.relative_to(run_dir) for p in run_dir.rglob("*") if p.is_file()
                and banner.encode() in p.read_bytes()]
    assert carriers == [Path(PLOTLY_JS)], f"plotly.js should be in {PLOTLY_JS} only, found in {carriers}"
    size = sum(p.stat().st_size for p in run_dir.rglob("*") if p.is_file())
    assert size <= MAX_RUN_BYTES, f"run folder is {size / 1e6:.1f} MB"
    assert re.findall(r"<script src=\"([^\"]+)\"", source) == [PLOTLY_JS]  # the shared copy, nothing else
    assert absolute_paths(source, run_dir) == [], "absolute paths in index.html"
    sections = re.findall(r'<section id="([^"]+)"', source)
    contents = re.findall(r'<li><a href="#([^"]+)"', source)
    assert sections and contents == sections, (contents, sections)
    if notebooks is not None:
        assert len([s for s in sections if re.match(r"\d\d_", s)]) == notebooks, sections
    saved = [p for p in (run_dir / "figures").glob("*.json") if not p.name.startswith("_")]
    # the answer's figure: notebook 04's saved one, drawn once (in the answer section), else drawn from the summary
    assert source.count('data-name="answer"') <= 1
    n_figures = len(saved) + (source.count('data-name="answer"') if ANSWER_FIGURE + ".json" not in
                              {p.name for p in saved} else 0)
    out = {}
    for width in widths:
        shown = render_offline(page, ".figure", width=width,
                               screenshot=shots / f"report_{width}.png" if shots else None)
        assert shown.figures == n_figures and shown.drawn == n_figures, shown.layout
        assert shown.requested == []
        layout = shown.layout
        assert layout["clipped"] == [], f"cut off at {width} px: {layout['clipped']}"
        assert layout["tables"] == [], f"tables wider than their box at {width} px: {layout['tables']}"
        assert layout["scrollWidth"] <= width, f"the page is wider than {width} px: {layout['scrollWidth']}"
        assert layout["contentLeft"] >= 16 and width - layout["contentRight"] >= 16, f"no side margin at {width} px"
        assert absolute_paths(shown.text, run_dir) == []
        out[width] = shown
    return out


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
                  "examples": {"additional": {"vector": "counterbalanced(fantasy - sports) @ L15", "target": "fantasy",
                                              "prompt": "Yesterday, my son was out kicking a football. Then, he",
                                              "by_position": {pos: {"coefficients": [0.0, 1.0], "samples": {
                                                  "0.0": ["went home.\n\nHe slept.", "scored a goal."],
                                                  "1.0": [f"met a dragon ({pos}).", "cast a spell."]}}
                                                  for pos in ("first", "all_prompt")}}},
                  "conclusion": ["Steering at all prompt tokens moves further than at the first (synthetic)."],
                  "headline": {"additional.verdict": "moves towards fantasy (judge)", "additional.concept_delta": 0.0225,
                               "additional.steerability": 0.2213},
                  "headline_ci": {"additional.concept_delta": [0.0097, 0.0353],
                                  "additional.steerability": [-0.0675, 0.5109]},
                  "parameters": {"examples": ["additional"], "output_dir": "RUN_DIR"}},
        "compare": {"model": "tiny-model", "config": {"damage_threshold": 1.5},
                    "summary": {"pooled": [{"condition": "isolated", "layer": 8, "position": "all", "mean": 0.5,
                                            "ci": [0.45, 0.55]},
                                           {"condition": "mean_centred", "layer": 8, "position": "all", "mean": 0.4127,
                                            "ci": [0.351, 0.47]}]},
                    # chosen on the selection half: not the top pooled row, whose CI must not be shown
                    "best_chosen": ["mean_centred", 8, "all"],
                    "table": heldout_rows(),
                    "conclusion": compare_conclusion(),
                    "contrasts": {"steerability": {"results": contrast_results()}},
                    "headline": {"best_condition": "mean_centred", "best_score": 0.4127, "prompting_score": 0.3712,
                                 "judge_accuracy": 0.912}},
    }


def contrast_results() -> list[dict[str, Any]]:
    """Pooled contrast results as steerlab.study.contrasts records them: at each of two cells (b) called,
    (c) equivalent, (d) not resolved; one per-target row, which the grid leaves out."""
    rows = []
    for layer, shift in ((8, 0.0), (10, 0.1)):
        for label, a, b, est, verdict in (("b", "mean_centred", "raw", 0.567 + shift, "mean_centred > raw"),
                                          ("c", "bias_ablated", "mean_centred", 0.008, "equivalent within ±0.1"),
                                          ("d", "isolated", "mean_centred", 0.334, "not resolved at this sample size")):
            rows.append({"name": f"({label}) {a} vs {b}", "label": label, "a": a, "b": b, "scope": "pooled",
                         "layer": layer, "position": "all", "measure": "steerability", "status": "run", "n": 65, "estimate": est,
                         "ci": [est - 0.1, est + 0.1], "verdict": verdict, "mdd_corrected": 0.419})
    rows.append({**rows[0], "scope": "fantasy", "estimate": 9.99})
    return rows


def compare_conclusion() -> list[str]:
    lines = [("steerability: 6 pre-registered contrasts run (0 not run), Holm-corrected together as 8 hypotheses; "
             "4 called, the rest not resolved at this sample size.")]
    lines += [f"({r['label']}) {r['a']} vs {r['b']}, pooled, layer {r['layer']} (synthetic): {r['verdict']}."
              for r in contrast_results()[:6]]
    lines += ["(b) mean_centred vs raw, pooled, layer 12 (synthetic): mean_centred > raw.",
              "(best) isolated vs random (synthetic): isolated > random.",
              "(a) raw vs random, alone (synthetic): not resolved at this sample size (MDD 0.3)."]
    return lines


def heldout_rows() -> list[dict[str, Any]]:
    """Rows as steerlab.study.compare_report.heldout_table gives them, pooled (two columns all NaN)."""
    nan = float("nan")
    return [{"condition": m, "layer": 8, "position": "all", "coefficient": "per target", "score": s,
             "score_ci": [s - 0.06, s + 0.06], "vs_mean_centred": d, "vs_random": "+0.100 [+0.020, +0.180]",
             "steerability": 0.0123, "anti_steerable": 0.25, "concept_effect": nan, "vocab_rate": nan}
            for m, s, d in (("mean_centred", 0.4127, "-"), ("raw", 0.3012, "-0.112 [-0.200, -0.020]"))]


def compare_rows() -> list[dict[str, Any]]:
    rows = [{"target": "fantasy", "condition": "none", "layer": 8, "position": "all", "coefficient": 0.0,
             "concept_delta": 0.0, "concept_delta_ci": [0.0, 0.0], "score": 0.2, "perplexity_ratio": 1.0, "kl": 0.0}]
    for i, method in enumerate(("raw", "mean_centred", "random")):
        for c in (0.25, 0.5):
            rows.append({"target": "fantasy", "condition": method, "layer": 8, "position": "all", "coefficient": c,
                         "concept_delta": 0.01 * i * c, "concept_delta_ci": [0.01 * i * c - 0.01, 0.01 * i * c + 0.02],
                         "score": 0.3, "perplexity_ratio": 1 + c * (i + 1), "kl": 0.1 * c})
    return rows


def _notebook_json(title: str) -> str:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {title}\n\nWhat it does."), nbformat.v4.new_code_cell("x = 1")]
    return nbformat.writes(nb)


@pytest.fixture
def run_dir(tmp_path: Path) -> Iterator[Path]:
    """A run folder as the runner leaves it: summary, run.json, four figures saved in notebook order
    (not name order), one executed notebook and its export, which still embeds plotly.js."""
    folder = tmp_path / "20261201-120000"
    folder.mkdir()
    for key, values in synthetic_summary().items():
        if key == "steer":  # a parameter holding this machine's absolute path, as papermill passes output_dir
            values = {**values, "parameters": {**values["parameters"], "output_dir": str(folder.resolve())}}
        record(folder, key, values)
    (folder / "run.json").write_text(json.dumps({"started": "20261201-120000", "seconds": 12.5, "parameters": {},
                                                 "notebooks": [{"notebook": "01_bias.ipynb", "ok": True,
                                                                "seconds": 4.2, "error": ""},
                                                               {"notebook": "02_interpret.ipynb", "ok": False,
                                                                "seconds": 1.0,
                                                                "error": f"boom in {folder.resolve()}/x.py"}]}))
    (folder / "01_bias.ipynb").write_text(_notebook_json("01 · Activations are not zero-centred"))
    import plotly.offline

    (folder / "01_bias.html").write_text(f"<html><head><script>{plotly.offline.get_plotlyjs()}</script></head>"
                                         "<body>export</body></html>")
    where = plots.context("tiny-model", folder)
    save_figure(plots.layer_lines([0, 1, 2], {"raw": [0.2, 0.4, 0.5], "centred": [0.3, 0.6, 0.9]}, title="Accuracy",
                                  yaxis="accuracy", where=where, references={"chance (1/3)": 1 / 3},
                                  caption="Held-out accuracy per layer (synthetic)."),
                folder, "02_heldout_accuracy")
    save_figure(compare_plots.confusion_heatmap({"confusion_labels": ["fantasy", "sports"], "confusion": [[9, 1], [2, 8]],
                                         "heldout_accuracy": 0.85}, where=where), folder, "04_judge_confusion")
    save_figure(compare_plots.effect_vs_damage(compare_rows(), ["raw", "mean_centred", "random"], threshold=1.5,
                                       target="fantasy", where=where), folder, "04_effect_vs_damage")
    save_figure(plots.sweep_panels([0.0, 1.0], {"first": [0.0, 0.1], "all_prompt": [0.0, 0.3]},
                                   {"first": [10.0, 12.0], "all_prompt": [10.0, 30.0]}, method="counterbalanced",
                                   title="additional: effect and degradation over the coefficient", where=where),
                folder, "03_sweep_additional")
    yield folder


@pytest.mark.browser
def test_report_renders_offline_with_every_figure_and_number(run_dir: Path) -> None:
    rendered = check_report(run_dir, notebooks=4)
    source = (run_dir / "index.html").read_text(encoding="utf-8")
    for width, shown in rendered.items():
        hs = headlines(synthetic_summary())
        assert len(hs) == 16  # 4 + 5 + 3 + 4
        for h in hs:
            assert h.name in shown.text and h.shown in shown.text, (width, h)
        assert "95% CI [0.351, 0.470]" in shown.text and "in the table" not in shown.text
    text = rendered[1400].text
    assert "norm-of-mean ratio at layer 1" in text and "0.714" in text
    assert "P(fantasy) change under the judge, example additional, ×1.0 at all_prompt" in text
    assert "95% CI [0.0097, 0.0353]" in text and "moves towards fantasy (judge)" in text
    assert "3.10e-07" in text  # small numbers keep their digits
    assert "tiny-model" in text and "FAILED" in text and "boom in ./x.py" in text  # the error, path made relative
    assert "Centring separates the genres (synthetic)." in text
    # 04's contrasts: one grid of verdicts per measure; a long run of one-line contrasts folded, a short one not
    assert "≈ +0.008" in text and "+0.567" in text and "+0.667" in text and "MDD 0.42" in text
    assert "9.990" not in text  # a per-target row is not in the pooled grid
    assert "each of these 7 contrasts, one line each" in text
    assert "(b) mean_centred vs raw, pooled, layer 12 (synthetic)" not in text  # folded until opened
    assert "(best) isolated vs random (synthetic)" in text and "(a) raw vs random, alone (synthetic)" in text
    assert 'href="01_bias.ipynb"' in source and 'href="01_bias.html"' in source
    # Contents: one entry per notebook, titled from the executed notebook's heading where there is one.
    assert re.findall(r'<li><a href="#([^"]+)"', source) == ["answer", "01_bias", "02_interpret", "03_steer",
                                                             "04_compare_methods"]
    assert "01 · Activations are not zero-centred" in text
    # Figures grouped by notebook, in the order they were saved; each with its caption.
    assert re.findall(r'data-name="([^"]+)"', source) == ["answer", "02_heldout_accuracy", "03_sweep_additional",
                                                          "04_judge_confusion", "04_effect_vs_damage"]
    assert "Held-out accuracy per layer (synthetic)." in text and "Lines: each condition's frontier" in text
    # Steered examples as text, unsteered against steered, line breaks kept, never a Python repr.
    assert "met a dragon (all_prompt)." in text and "went home.\n\nHe slept." in text and "\\n" not in text
    # 04's held-out table: the score with its CI on one line, units, no all-NaN column.
    assert "0.413 [0.353, 0.473]" in text and "steerability\n(nats/token per × centred norm)" in text
    assert "concept effect" not in text.split("Held-out AxBench score per condition")[1].split("Figures")[0]
    # Parameters: the run folder's own path shown as ".".
    assert "<code>&quot;.&quot;</code>" in source
    # The export that embedded plotly.js now loads the shared copy.
    export = (run_dir / "01_bias.html").read_text()
    assert plotly_banner() not in export and f'<script src="{PLOTLY_JS}"' in export


@pytest.mark.browser
def test_standalone_figure_renders_from_the_shared_plotlyjs(run_dir: Path) -> None:
    path = run_dir / "figures" / "04_effect_vs_damage.html"
    shown = render_offline(path, ".plotly-graph-div", width=1024)
    assert shown.figures == 1 and shown.drawn == 1 and shown.requested == []
    assert "damage threshold: perplexity ratio 1.5" in shown.text  # the labelled reference line
    assert shown.layout["clipped"] == []
    assert path.stat().st_size < 300_000  # plotly.js is not in the file
    assert f'src="../{PLOTLY_JS}"' in path.read_text()


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
    tasks = {"headline": {"kept": 5, "few_shot": 0.61, "centred_minus_raw": 0.05},
             "headline_ci": {"centred_minus_raw": [-0.01, 0.11]}, "n_tasks": 7, "few_shot_threshold": 0.3,
             "config": {"shots": 5}, "headline_layer": 15, "headline_verdict": "not resolved at this sample size"}
    hs = {(h.summary_key, h.key): h for h in headlines({**synthetic_summary(), "tasks": tasks})}
    assert hs[("tasks", "centred_minus_raw")].line() == (
        "centred − raw task vector, zero-shot accuracy, layer 15: 0.05 (contrast (a), pooled over the kept tasks, "
        "paired by held-out pair, each vector at its setting chosen on the selection half; 95% CI [-0.01, 0.11]; "
        "not resolved at this sample size)")
    assert "of the 7 tasks measured" in hs[("tasks", "kept")].meaning and "5 demonstrations" in hs[("tasks", "few_shot")].meaning
    for key in HEADLINES:
        if not key[1].startswith("*"):
            assert key in hs, key
    for quantity in ("verdict", "concept_delta", "steerability"):  # 03's per-example keys: "<example>.<quantity>"
        assert ("steer", "*." + quantity) in HEADLINES and ("steer", "additional." + quantity) in hs
    ratio = hs[("bias", "ratio_mid")]
    assert ratio.line() == ("norm-of-mean ratio at layer 1: 0.714 (norm of the layer mean / mean activation norm; "
                            "1 = all activations identical, 0 = centred on the origin)")
    assert "chance = 1/3" in hs[("interpret", "acc_raw_at_layer")].meaning
    assert "of 6 held-out stories" in hs[("interpret", "acc_raw_at_layer")].meaning
    assert "0 to 1" in hs[("compare", "best_score")].meaning
    unknown = headlines({"bias": {"headline": {"new_number": 2.5}}})
    assert unknown[0].name == "new_number" and unknown[0].meaning == "no description"  # shown, never dropped
    printed = _headline(synthetic_summary())
    assert printed[9] == ("  steer: verdict, example additional towards fantasy, ×1.0 at all_prompt, layer 15: moves "
                          "towards fantasy (judge) (read from the 95% CIs of the judge's P(target) change and of the "
                          "steerability: 'moves' when one excludes 0, 'not resolved' when every one includes it)")
    assert printed[10].startswith("  steer: P(fantasy) change under the judge, example additional, ×1.0 at all_prompt: "
                                  "0.0225 (") and printed[10].endswith("95% CI [0.0097, 0.0353])")
    assert printed[11].endswith("95% CI [-0.0675, 0.5109])")
    # A run recorded before 03 used the judge still gets a description, one that does not read 0 as "no movement".
    legacy = headlines({"steer": {"coefficient": 1.0, "positions": ["all"], "layer": 15,
                                  "headline": {"additional": 0.0}}})
    assert legacy[0].name.startswith("vocabulary-rate change") and "no movement" not in legacy[0].meaning


def test_figures_cannot_be_misread() -> None:
    fig = compare_plots.effect_vs_damage(compare_rows(), ["raw", "mean_centred", "random"], threshold=1.5, target="fantasy",
                                 where="tiny · run x")
    colours = {t.name: t.marker.color for t in fig.data}
    assert colours == {"none (unsteered)": style.CONDITION_COLOURS["none"], "raw": style.CONDITION_COLOURS["raw"],
                       "mean_centred": style.CONDITION_COLOURS["mean_centred"], "random": style.CONDITION_COLOURS["random"]}
    assert "tiny · run x" in fig.layout.title.text
    labels = [a.text for a in fig.layout.annotations]
    assert "damage threshold: perplexity ratio 1.5" in labels and "no effect" in labels
    threshold = next(a for a in fig.layout.annotations if a.text.startswith("damage threshold"))
    assert threshold.x == pytest.approx(math.log10(1.5))  # on its line: the x axis is log, annotations in log10
    raw_frontier = next(t for t in fig.data if t.name == "raw" and t.mode == "lines+markers")
    assert "target: fantasy<br>condition: raw<br>layer: 8<br>coefficient: ×0.25" in raw_frontier.hovertext[0]
    raw_points = next(t for t in fig.data if t.name == "raw" and t.mode == "markers")
    assert list(raw_points.error_y.array) == pytest.approx([0.02, 0.02])  # CI bars: hi - effect
    xs = list(raw_frontier.x)
    assert xs == sorted(xs), "the frontier runs in damage order, never in sweep order"
    pooled = [{"condition": "none", "layer": 8, "position": "all", "mean": 0.2, "ci": [0.1, 0.3]},
              {"condition": "raw", "layer": 8, "position": "all", "mean": 0.35, "ci": [0.25, 0.5]}]
    score = compare_plots.score_by_condition(pooled, ["none", "raw"], where="w")
    assert [t.name for t in score.data] == ["raw"] and score.data[0].marker.color == style.CONDITION_COLOURS["raw"]
    assert [a.text for a in score.layout.annotations] == ["unsteered: 0.200"]  # a line, not a point
    assert [list(level) for level in score.data[0].x] == [["raw"], ["L8 all"]]  # each point names its position
    two = pooled + [{"condition": "none", "layer": 8, "position": "first", "mean": 0.25, "ci": [0.1, 0.3]}]
    assert [a.text for a in compare_plots.score_by_condition(two, ["none", "raw"], where="w").layout.annotations] == [
        "unsteered (layer 8, all): 0.200", "unsteered (layer 8, first): 0.250"]
    acc = plots.layer_lines([0, 1], {"raw": [0.1, 0.2], "centred": torch.tensor([0.3, 0.4])}, title="t", yaxis="accuracy",
                            where="w", references={"chance (1/7)": 1 / 7})
    assert [t.name for t in acc.data] == ["raw", "centred"]  # chance is a labelled line, not a series
    assert acc.data[1].line.color == style.CONDITION_COLOURS["mean_centred"]
    assert [a.text for a in acc.layout.annotations] == ["chance (1/7)"]
    sweep = plots.sweep_panels([0.0, 1.0], {"first": [0.0, 0.1]}, {"first": [10.0, 12.0]}, method="prompt_pair",
                               title="s", where="w")
    assert {t.yaxis for t in sweep.data} == {"y", "y2"}  # rate and perplexity on separate axes
    assert sweep.layout.yaxis2.type == "log" and sweep.layout.yaxis.title.text == "vocabulary rate (fraction of words)"
    assert all(t.line.color == style.CONDITION_COLOURS["prompt_pair"] for t in sweep.data)
    assert "target-vocabulary rate: %{y" in sweep.data[0].hovertemplate and "perplexity: %{y" in sweep.data[1].hovertemplate
    # The construction is named the same way in the legend's title and the figure's title block.
    assert sweep.layout.legend.title.text == "prompt_pair vector, steered at:"
    assert "prompt_pair vector" in sweep.layout.title.text and [t.name for t in sweep.data] == ["first", "first"]
    # 03 with the judge: P(target) on top with its CI bars (none where no CI was recorded), the vocabulary rate
    # under it as the secondary measure, perplexity at the bottom.
    judged = _all_figures()["sweep_panels_judged"]
    assert [t.yaxis for t in judged.data] == ["y", "y2", "y3"] and judged.layout.yaxis3.type == "log"
    assert judged.layout.yaxis.title.text == "P(fantasy)" and "judge" in judged.layout.annotations[0].text
    assert "(secondary)" in judged.layout.annotations[1].text
    assert list(judged.data[0].error_y.array) == pytest.approx([0.01, 0.02, 0.02, 0.03])
    assert list(judged.data[0].error_y.arrayminus) == pytest.approx([0.01, 0.02, 0.02, 0.03])
    assert judged.data[1].error_y.array is None  # the vocabulary rate has no CI
    assert "P(fantasy) under the concept judge: %{y" in judged.data[0].hovertemplate


def test_every_method_has_its_own_colour_and_matched_damage_separates_cells() -> None:
    from steerlab.study.compare import METHODS
    from steerlab.study.prompting import PROMPTING

    names = [*METHODS, *PROMPTING, "none"]
    assert all(n in style.CONDITION_COLOURS for n in names), [n for n in names if n not in style.CONDITION_COLOURS]
    assert len({style.CONDITION_COLOURS[n] for n in names}) == len(names), "two methods share a colour"
    rows = [{"target": "fantasy", "condition": m, "layer": 8, "position": p, "level": 1.25, "grid": [0.25, 0.5, 1.0],
             "damage": [1.0 + k, 1.2 + k + len(m), 2.0 + k], "mean": 0.1 * k, "ci": [0.0, 0.2], "coefficient": 0.5,
             "status": "interpolated" if k else "not reached", "shifts": [0.1, 0.2]}
            for m in ("raw", "mean_centred") for k, p in enumerate(("all", "all_prompt"))]
    fig = compare_plots.matched_damage(rows, ["raw", "mean_centred"], target="fantasy", where="w")
    points = [t for t in fig.data if t.mode == "markers"]
    # Methods on the axis by name; each cell its own symbol, side by side; hollow where the level was not reached.
    assert list(fig.layout.xaxis2.ticktext) == ["raw", "mean_centred"]
    assert [t.marker.symbol for t in points] == ["circle-open", "diamond"] * 2
    assert points[0].x[0] < points[1].x[0] < points[2].x[0] < points[3].x[0]
    assert {t.name for t in fig.data if t.legendgroup == "cells"} == {"L8 all", "L8 all_prompt"}
    dashes = [t.line.dash for t in fig.data if t.mode == "lines+markers" and t.legendgroup != "cells"]
    assert dashes == ["solid", "dot"] * 2
    # The matched level is labelled where its line is: plotly reads an annotation's y on a log axis in log10.
    label = next(a for a in fig.layout.annotations if (a.text or "").startswith("matched level"))
    assert label.yref == "y" and label.y == pytest.approx(math.log10(1.25))
    assert fig.layout.yaxis.range is None and "stops at" not in fig.layout.meta["caption"]
    # Text broken to a perplexity ratio of 1e82 (seen on Gemma): the axis stops at the ceiling, and says so.
    rows[0]["damage"] = [1.0, 40.0, 1e82]
    cut = compare_plots.matched_damage(rows, ["raw", "mean_centred"], target="fantasy", where="w")
    assert cut.layout.yaxis.range[1] == pytest.approx(math.log10(compare_plots.DAMAGE_CEILING))
    assert list(cut.layout.yaxis.ticktext) == ["1", "2", "5", "10", "20", "50", "100", "200", "500", "1,000"]
    assert "the damage axis stops at 1,000" in cut.layout.meta["caption"] and "1e+82" in cut.layout.meta["caption"]


def _full_cells() -> list[tuple[int, str]]:
    return [(la, pos) for la in (10, 15, 20) for pos in ("all", "all_prompt")]


def test_a_full_runs_six_cells_never_share_a_style() -> None:
    rows = [{"target": "fantasy", "condition": m, "layer": la, "position": pos, "level": 1.25, "grid": [0.25, 0.5, 1.0],
             "damage": [1.0, 1.5, 3.0], "mean": 0.1, "ci": [0.0, 0.2], "coefficient": 0.5, "status": "interpolated",
             "shifts": [0.1, 0.2]} for m in ("raw", "mean_centred") for la, pos in _full_cells()]
    fig = compare_plots.matched_damage(rows, ["raw", "mean_centred"], target="fantasy", where="w")
    cells = [t for t in fig.data if t.legendgroup == "cells"]
    assert len(cells) == 6 and len({(t.line.dash, t.marker.symbol) for t in cells}) == 6
    assert len({t.line.dash for t in cells}) == 6 and len({t.marker.symbol for t in cells}) == 6
    effect = compare_plots.effect_at_matched(
        [{"target": "fantasy", "condition": "none", "layer": 8, "position": "all", "coefficient": 0.0, "concept_delta": 0.0,
          "concept_delta_ci": [0.0, 0.0], "perplexity_ratio": 1.0, "kl": 0.0}]
        + [{"target": "fantasy", "condition": m, "layer": la, "position": pos, "coefficient": 0.3, "kl": 0.1,
            "concept_delta": 0.01 * k, "concept_delta_ci": [0.01 * k - 0.01, 0.01 * k + 0.01],
            "perplexity_ratio": 1.24 + 0.001 * k} for m in ("raw", "isolated")
           for k, (la, pos) in enumerate(_full_cells())],
        ["raw", "isolated"], level=1.25, target="fantasy", where="w")
    points = [t for t in effect.data if t.mode == "markers"]
    # Methods on the axis (the unsteered control is the zero line, not a point); a symbol per cell, side by side.
    assert list(effect.layout.xaxis.ticktext) == ["raw", "isolated"] and len(points) == 12
    assert [t.marker.symbol for t in points[:6]] == list(compare_plots.CELL_SYMBOLS)
    assert [t.y[0] for t in points[:6]] == pytest.approx([0.01 * k for k in range(6)])
    assert all(a.x[0] < b.x[0] for a, b in itertools.pairwise(points))
    assert style.title_of(effect) == "Concept effect at matched damage: fantasy"
    assert "reaches 1.25 (measured at the chosen coefficients: 1.24-1.2" in style.caption_of(effect)


def test_steerability_of_several_layers_is_a_grid_with_one_axis_title() -> None:
    rows = [{"target": "fantasy", "condition": m, "layer": la, "position": pos, "steerability": 0.1,
             "steerability_ci": [0.0, 0.2], "anti_steerable_fraction": 0.1,
             "propensity_by_coefficient": {"0.0": 0.0, "1.0": 0.1 * k}}
            for k, m in enumerate(("raw", "isolated"), start=1) for la, pos in _full_cells()]
    fig = compare_plots.steerability_curves(rows, ["raw", "isolated"], target="fantasy", where="w")
    # A column per layer, a row per position, each panel titled by its cell.
    titles = {a.text: (round(a.x, 2), round(a.y, 2)) for a in fig.layout.annotations if a.text.startswith("layer")}
    assert len(titles) == 6
    assert titles["layer 10, all"][0] == titles["layer 10, all_prompt"][0] < titles["layer 15, all"][0]
    assert titles["layer 10, all"][1] == titles["layer 20, all"][1] > titles["layer 10, all_prompt"][1]
    xtitles = [k for k, v in fig.layout.to_plotly_json().items() if k.startswith("xaxis") and v.get("title")]
    assert len(xtitles) == 1  # one axis title, under the bottom row (six would overlap)
    assert [t.name for t in fig.data if t.showlegend] == ["raw", "isolated"]  # a method once in the legend
    one = compare_plots.steerability_curves([r for r in rows if r["layer"] == 15], ["raw", "isolated"], target="fantasy",
                                    where="w")
    assert fig.layout.height > one.layout.height and len([a for a in one.layout.annotations
                                                          if a.text.startswith("layer")]) == 2


def _all_figures() -> dict[str, Any]:
    steer_rows = [{"target": "fantasy", "condition": m, "layer": 8, "position": "all", "steerability": 0.1,
                   "steerability_ci": [0.0, 0.2], "anti_steerable_fraction": 0.1,
                   "propensity_by_coefficient": {"-1.0": -0.1 * k, "0.0": 0.0, "1.0": 0.1 * k},
                   "propensity_ci_by_coefficient": {"-1.0": [-0.2, 0.0], "0.0": [-0.1, 0.1], "1.0": [0.0, 0.2]}}
                  for m, k in (("raw", 1), ("mean_centred", 2), ("bias_ablated", 2))]
    pooled = [{"condition": "none", "layer": 8, "position": "all", "mean": 0.2, "ci": [0.1, 0.3]},
              {"condition": "raw", "layer": 8, "position": "all", "mean": 0.35, "ci": [0.25, 0.5]}]
    layers = list(range(31))
    return {
        "layer_lines": plots.layer_lines(layers, {"norm of the mean": [1.0 + la for la in layers],
                                                  "mean norm": [12.0 + 3 * la for la in layers]},
                                         title="Norm of the mean activation against the typical activation norm",
                                         yaxis="L2 norm (log scale)", log_y=True, where="SmolLM2-135M · run x"),
        "layer_panels": plots.layer_panels([0, 1], {"ratio": {"raw": [0.9, 0.8]}, "cosine": {"raw": [0.5, 0.4]}},
                                           title="How far activations sit from zero", where="w"),
        "heatmap_pair": plots.heatmap_pair(torch.eye(2), torch.eye(2), ["a", "b"], titles=("raw", "mean-centred"),
                                           title="Cosine similarity between genre vectors, layer 18", where="w"),
        "sweep_panels": plots.sweep_panels([0.0, 0.5, 1.0, 2.0], {"first": [0, 0, 0.01, 0.02]},
                                           {"first": [12.0, 14.0, 19.0, 45.0]}, method="counterbalanced",
                                           title="additional: effect and degradation over the coefficient", where="w"),
        "sweep_panels_judged": plots.sweep_panels(
            [0.0, 0.5, 1.0, 2.0], {"first": [0, 0, 0.0, 0.0]}, {"first": [12.0, 14.0, 19.0, 45.0]},
            method="counterbalanced", title="additional: effect and degradation over the coefficient", where="w",
            concept={"first": [0.12, 0.14, 0.18, 0.2]}, target="fantasy",
            concept_ci={"first": [[0.11, 0.13], [0.12, 0.16], [0.16, 0.2], [0.17, 0.23]]}),
        "effect_vs_damage": compare_plots.effect_vs_damage(compare_rows(), ["raw", "mean_centred", "random"], threshold=1.5,
                                                   target="shakespeare", where="w"),
        "effect_at_matched": compare_plots.effect_at_matched(compare_rows(), ["raw", "mean_centred", "random"], level=1.25,
                                                     target="fantasy", where="w"),
        "steerability_curves": compare_plots.steerability_curves(steer_rows, ["raw", "mean_centred", "bias_ablated"],
                                                         target="fantasy", where="w"),
        "confusion_heatmap": compare_plots.confusion_heatmap({"confusion_labels": ["a", "b"], "confusion": [[3, 1], [0, 4]],
                                                      "heldout_accuracy": 0.875}, where="w"),
        "score_by_condition": compare_plots.score_by_condition(pooled, ["none", "raw"], where="w"),
    }


def test_every_figure_has_a_short_title_a_caption_and_titled_axes() -> None:
    for name, fig in _all_figures().items():
        title = fig.layout.title.text.split("<sup>")[0]
        lines = [re.sub(r"<[^>]+>", "", line) for line in title.split("<br>") if line]
        assert lines and all(len(line) <= style.TITLE_CHARS for line in lines), (name, lines)
        assert style.caption_of(fig) and style.caption_of(json.loads(fig.to_json())) == style.caption_of(fig), name
        axes = [k for k in fig.layout.to_plotly_json() if re.fullmatch(r"[xy]axis\d*", k)]
        used = {f"{w}axis{(getattr(t, w + 'axis') or w)[1:]}" for t in fig.data for w in "xy"}
        for axis in used & set(axes):
            if fig.layout[axis].matches or (axis.startswith("x") and any(
                    fig.layout[a].matches == "x" for a in axes)):  # shared axes carry one title, on the bottom panel
                continue
            if name in ("layer_panels", "sweep_panels", "sweep_panels_judged") and axis.startswith("x") and axis != max(
                    (a for a in used if a.startswith("x")), key=len):
                continue
            if name in ("heatmap_pair",):
                continue  # genre labels on both axes; the colour bar names the quantity
            ticks = fig.layout[axis].ticktext
            if ticks and all(re.fullmatch(r"[a-z_]+", str(t)) for t in ticks):
                continue  # an axis of method names: its ticks say what it is
            assert fig.layout[axis].title.text, (name, axis)
    assert style.title_of(_all_figures()["effect_vs_damage"]) == "Concept effect against damage: shakespeare"


def test_a_line_under_another_is_dashed_and_named() -> None:
    fig = _all_figures()["steerability_curves"]
    traces = {t.name.split(" (")[0]: t for t in fig.data}
    assert traces["mean_centred"].line.dash is None  # drawn first: solid
    assert traces["bias_ablated"].line.dash == "dash" and "(≡ mean_centred, dashed)" in traces["bias_ablated"].name
    assert "≡" not in traces["raw"].name
    # Offset sideways so the three methods' error bars at the same coefficient stay apart.
    xs = [t.x[1] for t in fig.data]
    assert len(set(xs)) == 3 and 0 < max(xs) - min(xs) <= 0.3  # within a third of the coefficient step
    assert "coefficient: ×0" in fig.data[0].hovertext[1]  # the hover text keeps the true coefficient


def test_a_line_under_another_in_one_panel_only_gets_a_note_there() -> None:
    sweep = plots.sweep_panels([0.0, 1.0, 2.0], {"first": [0.0, 0.0, 0.0], "all_prompt": [0.0, 0.0, 0.0]},
                               {"first": [3.0, 3.2, 3.5], "all_prompt": [3.0, 5.0, 9.0]}, method="isolated",
                               title="isolating", where="w")
    assert [t.name for t in sweep.data] == ["first", "first", "all_prompt", "all_prompt"]  # no legend claim
    notes = [a for a in sweep.layout.annotations if "≡" in (a.text or "")]
    assert [(a.text, a.yref) for a in notes] == [("all_prompt ≡ first here", "y")]  # the top panel only
    both = plots.sweep_panels([0.0, 1.0], {"first": [0.0, 0.1], "all_prompt": [0.0, 0.1]},
                              {"first": [3.0, 4.0], "all_prompt": [3.0, 4.0]}, method="isolated", title="t", where="w")
    assert both.data[2].name == "all_prompt (≡ first, dashed)"
    assert both.data[2].line.dash == "dash" and both.data[0].line.dash == "solid"


def test_log_axes_read_as_whole_numbers() -> None:
    assert style.log_ticks(12, 40) == [10, 15, 20, 30, 50]
    assert style.log_ticks(1, 120) == [1, 2, 5, 10, 20, 50, 100]
    assert style.log_ticks(3, 3e5) == [10, 100, 1000, 10_000, 100_000]
    assert style.log_ticks(0.9, 1.6) == [0.7, 1, 1.5, 2]
    # Over 82 decades (Gemma's broken text): every 20th power of ten, written short.
    assert style.log_ticks(0.99, 1.1e82) == [1, 1e20, 1e40, 1e60, 1e80]
    assert [style._tick_text(v) for v in (1e3, 1e5, 1e6, 1e40)] == ["1,000", "100,000", "1e6", "1e40"]
    sweep = _all_figures()["sweep_panels"]
    assert list(sweep.layout.yaxis2.ticktext) == ["10", "15", "20", "30", "50"]  # not plotly's "2", "3", "5"
    norms = _all_figures()["layer_lines"]
    assert list(norms.layout.yaxis.ticktext)[:4] == ["1", "2", "5", "10"] and "100" in norms.layout.yaxis.ticktext
    with pytest.raises(ValueError, match="0 < low <= high"):
        style.log_ticks(0, 1)


def test_tables_align_and_drop_empty_columns() -> None:
    table = html_table(heldout_columns(heldout_rows()), quote_strings=False)
    cells = re.findall(r'<td style="([^"]*)">(.*?)</td>', table)
    by_text = {re.sub(r"<[^>]+>", "", text): style for style, text in cells}
    assert "text-align:right" in by_text["0.413 [0.353, 0.473]"] and "text-align:left" in by_text["mean_centred"]
    assert "text-align:right" in by_text["-0.112 [-0.200, -0.020]"]
    # The interval never breaks inside (it may go under its number in a narrow column).
    assert '<span class="interval" style="white-space:nowrap;color:#555">[0.353, 0.473]</span>' in table
    assert "concept effect" not in table and "vocabulary rate" not in table  # all NaN in a pooled table
    assert "score, 0-1<br>[95% CI]" in table and "<code>" not in table and "per target" not in table
    unsteered = html_table(heldout_columns([dict(heldout_rows()[0], condition="none", steerability=float("nan"))]),
                           quote_strings=False)
    assert ">none</td>" in unsteered  # the unsteered control's name is a value, not a missing one
    # Tokens as repr (a leading space shows); completions as text with their line breaks, never repr.
    tokens = html_table({"fantasy": [" dragon", "magic"]})
    assert "<code>&#x27; dragon&#x27;</code>" in tokens
    prose = html_table({"unsteered": ["He went home.\n\nThen he slept for a while."]})
    assert "He went home.\n\nThen" in prose and "pre-wrap" in prose and "\\n" not in prose
    assert markdown_table({"condition": ["raw"], "score": ["0.41"], "empty": ["nan"]}).splitlines()[:2] == [
        "| condition | score |", "|---|---:|"]


def test_save_figure_shares_plotlyjs_and_keeps_the_order(tmp_path: Path) -> None:
    fig = _all_figures()["score_by_condition"]
    for name in ("04_b", "01_a", "04_b"):
        save_figure(fig, tmp_path, name)
    assert figure_order(tmp_path) == ["04_b", "01_a"]  # saving again keeps the first place
    page = (tmp_path / "figures" / "01_a.html").read_text()
    assert plotly_banner() not in page and f'src="../{PLOTLY_JS}"' in page
    assert plotly_banner() in (tmp_path / PLOTLY_JS).read_text()
    with pytest.raises(ValueError, match="figure name '_order'"):
        save_figure(fig, tmp_path, "_order")
    assert share_plotlyjs(tmp_path) == []  # nothing inline left to share


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
    assert re.findall(r'<script src="([^"]+)"', html) == []  # no require.js, MathJax or widget-manager CDN
    saved = nbformat.read(path, as_version=4)
    assert "widgets" not in saved.metadata and len(saved.cells[0].outputs) == 1


def test_relative_text_hides_this_machines_paths(tmp_path: Path) -> None:
    import sys

    from steerlab.lab.report import relative_text

    run = tmp_path / "20261201-120000"
    text = f"{run}/vectors/a.gguf; {run}-2/x; {sys.prefix}/lib/site.py; {Path.home()}/notes"
    assert relative_text(text, run) == f"./vectors/a.gguf; {run}-2/x; <venv>/lib/site.py; ~/notes"
    assert relative_text("/elsewhere/run-1/vectors", run, ["/elsewhere/run-1"]) == "./vectors"  # a moved run


def test_the_verdict_grid_marks_each_contrast_by_its_corrected_verdict() -> None:
    from steerlab.lab.tables import verdict_grid, verdict_grid_markdown

    grid = verdict_grid(contrast_results())
    rows = re.findall(r"<tr>(.*?)</tr>", grid)
    assert len(rows) == 4  # a header and (b), (c), (d); one column per cell
    assert re.findall(r"<th[^>]*>(.*?)</th>", rows[0]) == ["pooled contrast", "L8 all", "L10 all"]
    assert re.findall(r'<td class="(\w+)"', rows[1]) == ["called", "called"]
    assert re.findall(r'<td class="(\w+)"', rows[2]) == ["eq", "eq"] and "≈ +0.008" in rows[2]
    assert re.findall(r'<td class="(\w+)"', rows[3]) == ["open", "open"] and "MDD 0.42" in rows[3]
    assert "9.990" not in grid and "mean_centred &gt; raw; +0.567 [+0.467, +0.667], n = 65" in grid
    assert verdict_grid([]) == "" and verdict_grid([{**contrast_results()[0], "status": "not run"}]) == ""
    # The README's grid is the same verdicts in Markdown.
    assert verdict_grid_markdown(contrast_results()) == [
        "| pooled contrast | L8 all | L10 all |", "|---|--:|--:|",
        "| (b) mean_centred vs raw | **+0.567** | **+0.667** |",
        "| (c) bias_ablated vs mean_centred | ≈ +0.008 | ≈ +0.008 |",
        "| (d) isolated vs mean_centred | +0.334 (MDD 0.42) | +0.334 (MDD 0.42) |"]
    assert verdict_grid_markdown([]) == []


def _compare_entry() -> dict[str, Any]:
    """Notebook 04's recorded contrasts, planted: (b) called at both cells, the rest not resolved."""
    def rec(label: str, a: str, b: str, position: str, verdict: str, estimate: float) -> dict[str, Any]:
        return {"name": f"({label}) {a} vs {b}", "label": label, "a": a, "b": b, "scope": "pooled", "layer": 8,
                "position": position, "measure": "steerability", "status": "run", "estimate": estimate,
                "ci": [estimate - 0.1, estimate + 0.1], "mdd_corrected": 0.25, "margin": None, "verdict": verdict,
                "n": 26, "family_size": 20}
    results = []
    for position in ("all", "all_prompt"):
        results += [rec("b", "mean_centred", "raw", position, "mean_centred > raw", 0.612 if position == "all" else 0.344),
                    rec("d", "isolated", "mean_centred", position, "not resolved at this sample size (MDD 0.25)", 0.071),
                    rec("e", "counterbalanced", "mean_centred", position,
                        "not resolved at this sample size (MDD 0.25)", -0.029)]
    return {"model": "tiny-model", "preset": "quick", "contrasts": {"steerability": {"results": results,
                                                                                      "best_of": {"conclusion": []}}}}


def test_the_report_opens_with_the_answer_and_its_numbers_are_the_summarys(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "figures").mkdir(parents=True)
    summary = synthetic_summary()
    summary["compare"] = {**summary.get("compare", {}), **_compare_entry()}
    (run / "summary.json").write_text(json.dumps(summary))
    source = build_report(run).read_text(encoding="utf-8")
    assert re.findall(r'<section id="([^"]+)"', source)[0] == "answer", "the answer is not the first section"
    assert source.index('id="answer"') < source.index('id="contents"')
    sentences = re.findall(r'<li data-question="(\w+)"><b>[^<]*</b> ([^<]*)</li>', source)
    assert [k for k, _ in sentences][:3] == ["bias", "lens", "centring"]
    said = {k: html.unescape(v) for k, v in sentences}
    assert said["centring"].startswith("Yes") and "all 2 cells (+0.34 to +0.61" in said["centring"]
    assert said["counterbalancing"].startswith("Not resolved at this sample size")
    recorded = {f"{r['estimate']:+.2g}".replace("-", "−") for r in summary["compare"]["contrasts"]["steerability"]
                ["results"]}
    for key in ("centring", "counterbalancing"):
        for number in re.findall(r"[+−]\d[\d.]*", said[key]):
            assert number in recorded, (key, number)
    assert "0.71 of the typical norm" in said["bias"]  # notebook 01's headline, as recorded
    assert 'data-name="answer"' in source and "supported" in source
