"""The run report, ``index.html``: what a reader of the run folder sees first.

One page, read top to bottom or through its contents list:

- the model, when the run started and how long it took; a contents list with an anchor per
  notebook (``#01_bias``, ...);
- one section per notebook, in run order: its status and links to the executed notebook
  and its HTML export, its headline numbers with their meanings, its conclusions, then its
  figures in the order the notebook shows them, each with a short title and a one-line
  caption (:func:`steerlab.lab.plots.caption_of`); notebook 03's section shows a few steered
  completions as text, unsteered against steered, and notebook 04's its held-out table; 04's
  conclusions show each measure's contrasts (a)-(e) as one grid of verdicts (:func:`steerlab.lab.tables.verdict_grid`)
  and fold the one-line-per-contrast list (a ``full`` run has over a hundred);
- each notebook's parameters, folded.

Every path is relative to the run folder (no machine's absolute paths:
:func:`steerlab.lab.report.relative_text`);
the page loads the run folder's one ``plotly.min.js`` and fetches nothing else; side margins
hold from 1024 px up.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..store import atomic_write_text
from .plotlyjs import plotlyjs_tag, share_plotlyjs
from .report import SUMMARY_KEYS, Headline, figure_order, headlines, load_summary, recorded_unit, relative_text
from .tables import heldout_columns, html_table, is_numeric, verdict_grid

__all__ = ["EXAMPLES_SHOWN", "FOLD_CONTRASTS", "SHOWN_CONCLUSIONS", "build_report", "steered_examples",
           "write_page"]

EXAMPLES_SHOWN = 2
"""Completions shown per steered example (each side)."""

_STYLE = """
*, *::before, *::after { box-sizing: border-box; }
body { margin: 0; font-family: system-ui, -apple-system, "Segoe UI", sans-serif; color: #222; line-height: 1.45;
       background: #fff; }
main { max-width: 1120px; margin: 0 auto; padding: 1.5rem clamp(1.25rem, 4vw, 3rem) 4rem; }
h1 { font-size: 1.6rem; margin: 0.2rem 0 0.4rem; }
h2 { font-size: 1.35rem; margin-top: 2.6rem; padding-bottom: 0.2rem; border-bottom: 1px solid #ddd; }
h3 { font-size: 1.08rem; margin: 1.6rem 0 0.5rem; }
a { color: #0b5cad; }
nav.contents { background: #f6f8fa; border: 1px solid #e1e4e8; border-radius: 6px; padding: 0.6rem 1.2rem; }
nav.contents ol { margin: 0.3rem 0; padding-left: 1.3rem; }
nav.contents li { margin: 0.15rem 0; }
nav.contents .meta, .status { color: #555; font-size: 0.92rem; }
table.numbers { border-collapse: collapse; margin: 0.4rem 0 1rem; width: 100%; }
table.numbers td, table.numbers th { border: 1px solid #ddd; padding: 4px 8px; vertical-align: top; text-align: left; }
table.numbers th { background: #f6f6f6; }
td.value { font-variant-numeric: tabular-nums; font-weight: 600; white-space: nowrap; text-align: right !important; }
td.value.text { text-align: left !important; }
td.meaning { color: #555; font-size: 0.92rem; }
ul.conclusions { background: #f3f7fb; border-left: 4px solid #0072B2; margin: 0.5rem 0 1rem; padding: 0.6rem 1rem 0.6rem 2rem; }
ul.conclusions li { margin: 0.25rem 0; }
ul.conclusions li.grid { list-style: none; margin-left: -1rem; overflow-x: auto; }
ul.conclusions details summary { cursor: pointer; color: #0b5394; }
figure { margin: 1.4rem 0 2rem; }
figure h4 { margin: 0 0 0.3rem; font-size: 1rem; }
.figure { width: 100%; min-height: 420px; }
figcaption { color: #444; font-size: 0.93rem; margin-top: 0.3rem; }
.example { margin: 0.8rem 0 1.4rem; }
.example .prompt { margin: 0.2rem 0 0.4rem; }
.pair { display: grid; grid-template-columns: 1fr 1fr; gap: 0.8rem; }
.pair > div { border: 1px solid #ddd; border-radius: 4px; padding: 0.4rem 0.7rem; min-width: 0; }
.pair .side { font-size: 0.85rem; color: #555; font-weight: 600; }
.completion { white-space: pre-wrap; overflow-wrap: anywhere; margin: 0.3rem 0; }
.completion + .completion { border-top: 1px dashed #ddd; padding-top: 0.3rem; }
.failed { color: #b00020; font-weight: 600; }
pre.error { white-space: pre-wrap; overflow-wrap: anywhere; background: #fff4f4; padding: 0.6rem; font-size: 0.85rem; }
details { margin: 0.6rem 0 1rem; } summary { cursor: pointer; color: #333; }
code { font-size: 0.9em; }
ol.answer { background: #f3f7fb; border-left: 4px solid #0072B2; padding: 0.6rem 1rem 0.6rem 2.2rem; margin: 0.4rem 0 1rem; }
ol.answer li { margin: 0.35rem 0; }
#answer h2 { margin-top: 1.2rem; }
td.verdict-supported { color: #1a7f37; } td.verdict-not { color: #b42318; } td.verdict-mixed { color: #8a5a00; }
"""


def _esc(x: Any) -> str:
    return html.escape(str(x))


def _notebook_title(run_dir: Path, stem: str) -> str:
    """The notebook's first heading (``# 01 · ...``), read from the executed copy; else the stem."""
    path = run_dir / f"{stem}.ipynb"
    try:
        cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
    except (OSError, ValueError):
        return stem
    for cell in cells:
        if cell.get("cell_type") == "markdown":
            source = "".join(cell.get("source", []))
            for line in source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
            break
    return stem


def _float_key(mapping: Mapping[str, Any], value: float) -> str | None:
    return next((k for k in mapping if _as_float(k) == value), None)


def _as_float(x: Any) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def steered_examples(steer: Mapping[str, Any], per_side: int = EXAMPLES_SHOWN) -> list[dict[str, Any]]:
    """Notebook 03's recorded completions, unsteered against steered at its shown coefficient
    and position rule (the last one), ``per_side`` of each, per example.

    Returns:
        One dict per example: ``name``, ``vector``, ``prompt``, ``coefficient``, ``position``,
        ``unsteered`` and ``steered`` (lists of completion texts). Examples whose record lacks
        either side are left out.

    Example:
        >>> steered_examples(load_summary("runs/latest")["steer"])[0]["name"]
        'centring'
    """
    coefficient = _as_float(steer.get("coefficient"))
    positions = list(steer.get("positions") or [])
    out = []
    for name, ex in (steer.get("examples") or {}).items():
        by_position = ex.get("by_position") or {}
        position = positions[-1] if positions and positions[-1] in by_position else next(iter(by_position), None)
        samples = (by_position.get(position) or {}).get("samples") or {} if position is not None else {}
        plain, steered = _float_key(samples, 0.0), _float_key(samples, coefficient)
        if plain is None or steered is None or plain == steered:
            continue
        out.append({"name": name, "vector": ex.get("vector", ""), "prompt": ex.get("prompt", ""),
                    "coefficient": coefficient, "position": position,
                    "unsteered": [str(t) for t in samples[plain][:per_side]],
                    "steered": [str(t) for t in samples[steered][:per_side]]})
    return out


def _examples_html(steer: Mapping[str, Any]) -> str:
    shown = steered_examples(steer)
    if not shown:
        return ""
    coefficient = f"{shown[0]['coefficient']:g}"
    parts = ["<h3>Steered examples</h3>",
             (f"<p>Completions of each example's prompt as notebook 03 recorded them (sampled with a fixed seed), "
              f"unsteered (coefficient 0) against steered at "
             f"×{_esc(coefficient)} the layer's {_esc(recorded_unit(steer))}, position rule "
             f"<code>{_esc(shown[0]['position'])}</code>, layer {_esc(steer.get('layer', '?'))}; "
             f"up to {EXAMPLES_SHOWN} of each. The same rows are scored in the sweep figures below.</p>")]
    for ex in shown:
        def side(label: str, texts: Sequence[str]) -> str:
            body = "".join(f'<div class="completion">{_esc(t.strip())}</div>' for t in texts)
            return f'<div><div class="side">{label}</div>{body}</div>'

        label = _esc(f"steered ×{ex['coefficient']:g} ({ex['position']})")
        parts.append(
            f'<div class="example" data-example="{_esc(ex["name"])}"><h4>{_esc(ex["name"])} '
            f'<span class="status">· {_esc(ex["vector"])}</span></h4>'
            f'<div class="prompt">Prompt: <q>{_esc(ex["prompt"])}</q></div><div class="pair">'
            f'{side("unsteered", ex["unsteered"])}{side(label, ex["steered"])}</div></div>')
    return "".join(parts)


def _conclusions(skey: str, entry: Mapping[str, Any]) -> list[str]:
    lines = [str(x) for x in entry.get("conclusion") or []]
    if lines or skey != "bias":
        return lines
    from ..study.analysis import bias_findings, centring_findings, first_token_findings

    found: list[str] = []
    for findings in (bias_findings, first_token_findings, centring_findings):
        try:
            found += findings(entry)
        except (KeyError, IndexError, TypeError, ValueError, ZeroDivisionError):
            continue  # a field this run did not record: the other findings still stand
    return found


_CONTRAST_LINE = re.compile(r"^\([a-g]\) ")
FOLD_CONTRASTS = 6
"""More consecutive one-contrast conclusion lines than this are folded under one line."""


def _conclusions_html(lines: Sequence[str], entry: Mapping[str, Any], rel: Callable[[str], str]) -> str:
    """The conclusions as a list. Notebook 04's: after each measure's count of contrasts, its grid of
    verdicts (from the recorded results, not the text); its run of one-line contrasts, folded."""
    contrasts = entry.get("contrasts")
    contrasts = contrasts if isinstance(contrasts, Mapping) else {}
    items: list[str] = []
    held: list[str] = []

    def flush() -> None:
        if len(held) > FOLD_CONTRASTS:
            items.append(f'<li class="folded"><details><summary>each of these {len(held)} contrasts, one line '
                         "each</summary><ul>" + "".join(f"<li>{_esc(rel(x))}</li>" for x in held)
                         + "</ul></details></li>")
        else:
            items.extend(f"<li>{_esc(rel(x))}</li>" for x in held)
        held.clear()

    for line in lines:
        if _CONTRAST_LINE.match(line):
            held.append(line)
            continue
        flush()
        items.append(f"<li>{_esc(rel(line))}</li>")
        block = contrasts.get(line.split(":", 1)[0]) if "pre-registered contrasts" in line else None
        if isinstance(block, Mapping) and isinstance(block.get("results"), list):
            grid = verdict_grid(block["results"])
            if grid:
                items.append(f'<li class="grid">{grid}</li>')
    flush()
    shown, rest = items[:SHOWN_CONCLUSIONS], items[SHOWN_CONCLUSIONS:]
    folded = (f'<li class="folded"><details><summary>{len(rest)} more</summary><ul>{"".join(rest)}</ul></details></li>'
              if rest else "")
    return '<ul class="conclusions">' + "".join(shown) + folded + "</ul>"


SHOWN_CONCLUSIONS = 6
"""Conclusion bullets shown per notebook; the rest are folded under a "details" element."""
ANSWER_FIGURE = "04_answer"
"""Notebook 04's saved figure of its answer: drawn once, in the page's answer section."""


def _answer_html(summary: Mapping[str, Any], scripts: list[str], saved: Path | None = None) -> str:
    """The run's answer (:func:`steerlab.study.answer.from_summary`): its sentences, its figure of the
    contrasts (b)-(e) (``saved``: notebook 04's own, else drawn from the summary) and the write-up's
    claims; empty when notebook 04 recorded no contrasts."""
    from ..study.answer import MEASURE_TITLES, QUESTIONS, from_summary
    from .compare_plots import answer_forest

    found = from_summary(summary)
    if found is None:
        return ""
    compare = summary["compare"]
    items = "".join(f'<li data-question="{_esc(k)}"><b>{_esc(QUESTIONS[k])}</b> {_esc(v)}</li>'
                    for k, v in found.sentences.items())
    claims = "".join(f'<tr><td>{_esc(c.claim)}</td><td class="verdict verdict-{_esc(c.verdict.split(" ")[0])}">'
                     f'<b>{_esc(c.verdict)}</b></td><td class="meaning">{_esc(c.evidence)}</td>'
                     f'<td class="meaning">{_esc(c.where)}</td></tr>' for c in found.claims)
    records = [r for block in compare["contrasts"].values() if isinstance(block, Mapping)
               for r in block.get("results") or []]
    figure = ""
    if records:
        if saved is not None:
            spec = saved.read_text(encoding="utf-8")
            caption = (json.loads(spec).get("layout", {}).get("meta") or {}).get("caption", "")
        else:
            fig = answer_forest({str(compare.get("model", "model")): records},
                                measures=[m for m in MEASURE_TITLES if m in compare["contrasts"]],
                                where=f"this run ({compare.get('preset', '')})")
            spec, caption = fig.to_json(), fig.layout.meta["caption"]
        div = f"figure-{len(scripts)}"
        scripts.append(_figure_script(div, spec))
        figure = (f'<figure id="fig-answer"><h4>Each question as a paired difference</h4><div class="figure" id="{div}"'
                  f' data-name="answer"></div><figcaption>{_esc(caption)}</figcaption></figure>')
    return ('<section id="answer"><h2>The answer</h2><p class="status">From this run\'s pre-registered contrasts '
            f"(notebook 04, preset <code>{_esc(compare.get('preset', '?'))}</code>) and notebooks 01-02; every number "
            "is the summary's. The recorded answer on both models, with more samples, is in the README.</p>"
            f'<ol class="answer">{items}</ol>{figure}<h3>The write-up\'s claims</h3><table class="numbers claims">'
            "<thead><tr><th>claim</th><th>verdict</th><th>the number</th><th>where</th></tr></thead>"
            f"<tbody>{claims}</tbody></table></section>")


def _concept_html(entry: Mapping[str, Any]) -> str:
    """Notebook 05's rows: each coefficient's completion and its measures."""
    rows = entry.get("rows")
    if not isinstance(rows, list) or not rows:
        return ""
    columns = {"coefficient": [f"{r.get('coefficient', 0):g}" for r in rows],
               "completion": [str(r.get("text", "")).strip() for r in rows],
               "perplexity ratio": [f"{r.get('perplexity_ratio', math.nan):.2f}" for r in rows],
               "distinct-2": [f"{r.get('distinct_2', math.nan):.2f}" for r in rows],
               "projection vs unsteered": [f"{r.get('projection', math.nan):+.2f}" for r in rows]}
    prompt = (entry.get("parameters") or {}).get("prompt", "")
    return (f"<h3>Steered against unsteered</h3><p>Prompt: <q>{_esc(prompt)}</q>, greedy, layer "
            f"{_esc(entry.get('layer', '?'))}, {_esc(entry.get('construction', ''))} vector.</p>"
            + html_table(columns, quote_strings=False))


def _compare_html(entry: Mapping[str, Any]) -> str:
    table = entry.get("table")
    if not isinstance(table, list) or not table:
        return ""
    try:
        columns = heldout_columns(table)
    except (KeyError, TypeError, ValueError):
        return ""
    return ("<h3>Held-out AxBench score per condition</h3><p>Pooled over targets (each target keeps the coefficient "
            "chosen on the other half of its prompts), with paired differences from mean-centring and from the "
            "random control.</p>" + html_table(columns, quote_strings=False))


def _headline_table(hs: Sequence[Headline]) -> str:
    body = "".join(f'<tr class="headline" data-key="{_esc(h.summary_key)}.{_esc(h.key)}"><td>{_esc(h.name)}</td>'
                   f'<td class="value{"" if is_numeric(h.value) else " text"}">{_esc(h.shown)}</td>'
                   f'<td class="meaning">{_esc(h.meaning)}</td></tr>'
                   for h in hs)
    return ('<table class="numbers"><thead><tr><th>quantity</th><th style="text-align:right">value</th>'
            f"<th>meaning and units</th></tr></thead><tbody>{body}</tbody></table>")


def _parameters_html(params: Mapping[str, Any], rel: Callable[[str], str]) -> str:
    body = "".join(f"<tr><td><code>{_esc(k)}</code></td><td><code>{_esc(rel(json.dumps(v)))}</code></td></tr>"
                   for k, v in params.items())
    return (f"<details><summary>Parameters ({len(params)})</summary><table class=\"numbers\"><tbody>{body}"
            "</tbody></table></details>")


def _figure_script(div_id: str, figure_json: str) -> str:
    # The page shows the title as a heading (HTML wraps it at any width), so the figure drops its own.
    safe = figure_json.replace("</", "<\\/")
    return (f'<script>(function () {{ var fig = {safe}; var layout = fig.layout || {{}}; '
            f'var margin = Object.assign({{}}, layout.margin || {{}}, {{t: 40}}); '
            f'layout = Object.assign({{}}, layout, {{title: {{text: ""}}, margin: margin}}); '
            f'if (layout.height) {{ layout.height = layout.height - Math.max(0, ((fig.layout.margin || {{}}).t || 0) - 40); }} '
            f'Plotly.newPlot("{div_id}", fig.data, layout, {{responsive: true}}); }})();</script>')


def _figures(run_dir: Path) -> list[Path]:
    """Every saved figure's JSON, in the order the notebooks saved them (unlisted ones after, by name)."""
    folder = run_dir / "figures"
    found = {p.stem: p for p in folder.glob("*.json") if not p.name.startswith("_")}
    order = [n for n in figure_order(run_dir) if n in found]
    return [found[n] for n in order] + [found[n] for n in sorted(found) if n not in order]


def _stem_of_figure(name: str, stems: Sequence[str]) -> str | None:
    prefix = name.split("_", 1)[0]
    return next((s for s in stems if s.split("_", 1)[0] == prefix), None)


def write_page(run_dir: str | Path) -> Path:
    """Write ``run_dir/index.html`` from ``summary.json``, ``run.json`` and ``figures/``.

    Also makes every HTML file of the run folder share one ``plotly.min.js``
    (:func:`steerlab.lab.plotlyjs.share_plotlyjs`). Figures are drawn from their JSON with that
    plotly.js; nothing is fetched from the network.

    Example:
        >>> write_page("runs/latest")
        PosixPath('runs/latest/index.html')
    """
    from .style import caption_of, subtitle_of, title_of

    run_dir = Path(run_dir)
    share_plotlyjs(run_dir)

    summary = load_summary(run_dir)
    # Where the notebooks wrote this folder (it may since have been moved or copied): shown as "." too.
    written_at = sorted({str(e["parameters"]["output_dir"]) for e in summary.values() if isinstance(e, Mapping)
                         and isinstance(e.get("parameters"), Mapping) and e["parameters"].get("output_dir")})

    def rel(text: str) -> str:
        return relative_text(text, run_dir, written_at)

    run_path = run_dir / "run.json"
    run = json.loads(run_path.read_text(encoding="utf-8")) if run_path.exists() else {}
    results = {Path(r["notebook"]).stem: r for r in run.get("notebooks", [])}
    key_of = {stem: key for key, stem in SUMMARY_KEYS.items()}
    stems = list(dict.fromkeys([*results, *(SUMMARY_KEYS[k] for k in summary if k in SUMMARY_KEYS)]))
    figures = _figures(run_dir)
    scripts: list[str] = []
    saved_answer = next((p for p in figures if p.stem == ANSWER_FIGURE), None)
    answer = _answer_html(summary, scripts, saved_answer)
    if saved_answer is not None and 'id="fig-answer"' in answer:  # drawn once, in the answer section
        figures.remove(saved_answer)
    for path in figures:
        stem = _stem_of_figure(path.stem, stems) or _stem_of_figure(path.stem, list(SUMMARY_KEYS.values()))
        if stem and stem not in stems:
            stems.append(stem)
    stems.sort(key=lambda s: (s.split("_", 1)[0], s))
    by_stem: dict[str, list[Path]] = {s: [] for s in stems}
    others: list[Path] = []
    for path in figures:
        stem = _stem_of_figure(path.stem, stems)
        (by_stem[stem] if stem else others).append(path)
    by_key: dict[str, list[Headline]] = {}
    for h in headlines(summary):
        by_key.setdefault(h.summary_key, []).append(h)
    models = sorted({str(e["model"]) for e in summary.values() if isinstance(e, Mapping) and e.get("model")})
    name = run_dir.resolve().name
    titles = {stem: _notebook_title(run_dir, stem) for stem in stems}

    def figure_html(path: Path) -> str:
        figure_json = path.read_text(encoding="utf-8")
        fig = json.loads(figure_json)
        div = f"figure-{len(scripts)}"
        standalone = path.with_suffix(".html")
        caption = caption_of(fig)
        link = (f'{" · " if caption else ""}<a href="figures/{_esc(standalone.name)}">open alone</a>'
                if standalone.exists() else "")
        scripts.append(_figure_script(div, figure_json))
        # The page's header names the model and the run: keep only what else the subtitle says.
        sub = " · ".join(part for part in subtitle_of(fig).split(" · ")
                         if part not in models and not re.fullmatch(r"run \S+", part))
        sub_html = f' <span class="status">· {_esc(sub)}</span>' if sub else ""
        return (f'<figure id="fig-{_esc(path.stem)}"><h4>{_esc(title_of(fig) or path.stem)}{sub_html}</h4>'
                f'<div class="figure" id="{div}" data-name="{_esc(path.stem)}"></div>'
                f'<figcaption>{_esc(caption)}{link}</figcaption></figure>')

    contents, sections = [], []
    for stem in stems:
        r = results.get(stem, {})
        skey = key_of.get(stem)
        entry = summary.get(skey, {}) if skey else {}
        entry = entry if isinstance(entry, Mapping) else {}
        if r:
            status = "ok" if r.get("ok") else '<span class="failed">FAILED</span>'
        else:
            status = "not run in this run" if not entry else "recorded (not in run.json)"
        secs = f" · {r['seconds']:.0f} s" if isinstance(r.get("seconds"), (int, float)) else ""
        links = " · ".join(f'<a href="{_esc(stem + ext)}">{label}</a>' for ext, label in
                           ((".html", "notebook as a page"), (".ipynb", "executed notebook"))
                           if (run_dir / f"{stem}{ext}").exists())
        n_figs = len(by_stem.get(stem, []))
        contents.append(f'<li><a href="#{_esc(stem)}">{_esc(titles[stem])}</a> <span class="meta">— {status}{secs}'
                        f'{f", {n_figs} figures" if n_figs else ""}</span></li>')
        part = [f'<section id="{_esc(stem)}"><h2>{_esc(titles[stem])}</h2>',
                f'<p class="status">{_esc(stem)}: {status}{secs}{" · " + links if links else ""}</p>']
        if r.get("error"):
            part.append(f'<pre class="error">{_esc(rel(str(r["error"])[-3000:]))}</pre>')
        if skey in by_key:
            part.append("<h3>Headline numbers</h3>" + _headline_table(by_key[skey]))
        lines = _conclusions(skey or "", entry)
        if lines:
            part.append("<h3>Conclusions (generated from the numbers)</h3>" + _conclusions_html(lines, entry, rel))
        if skey == "steer":
            part.append(_examples_html(entry))
        if skey == "compare":
            part.append(_compare_html(entry))
        if skey == "concept":
            part.append(_concept_html(entry))
        if by_stem.get(stem):
            part.append("<h3>Figures</h3>" + "".join(figure_html(p) for p in by_stem[stem]))
        params = entry.get("parameters")
        if isinstance(params, Mapping):
            part.append(_parameters_html(params, rel))
        part.append("</section>")
        sections.append("".join(part))
    if others:
        contents.append('<li><a href="#other-figures">Other figures</a></li>')
        sections.append('<section id="other-figures"><h2>Other figures</h2>'
                        + "".join(figure_html(p) for p in others) + "</section>")
    if run.get("parameters"):
        contents.append('<li><a href="#run-parameters">Parameters passed to the runner</a></li>')
        sections.append('<section id="run-parameters"><h2>Parameters passed to the runner</h2>'
                        f"<p><code>{_esc(rel(json.dumps(run['parameters'])))}</code></p></section>")
    started = f" · started {_esc(run['started'])}" if run.get("started") else ""
    took = f" · {run['seconds']:.0f} s in all" if isinstance(run.get("seconds"), (int, float)) else ""
    header = (f"<h1>steerlab run {_esc(name)}</h1><p>Model: <b>{_esc(', '.join(models) or 'unknown')}</b>{started}"
              f"{took}. The answer first; then each notebook's headline numbers, conclusions and figures (hover a "
              "figure for its numbers). Paths are relative to this run folder.</p>")
    if answer:
        contents.insert(0, '<li><a href="#answer">The answer</a></li>')
    nav = f'<nav class="contents" id="contents"><b>Contents</b><ol>{"".join(contents)}</ol></nav>'
    page = ('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>steerlab run {_esc(name)}</title><style>{_STYLE}</style>{plotlyjs_tag()}</head>"
            f"<body><main>{header}{answer}{nav}{''.join(sections)}</main>{''.join(scripts)}</body></html>")
    out = run_dir / "index.html"
    atomic_write_text(out, page)
    return out


def build_report(run_dir: str | Path) -> Path:
    """Write ``run_dir/index.html``, the run's report page (:func:`write_page`).

    Example:
        >>> build_report("runs/latest")
        PosixPath('runs/latest/index.html')
    """
    return write_page(run_dir)
