"""What notebooks hand back, and the page a run is read from.

- ``summary.json`` holds one key per notebook (``bias``, ``interpret``, ``steer``,
  ``compare``); each notebook replaces only its own key, atomically.
- :func:`save_figure` writes each figure as a standalone HTML file that embeds plotly.js
  (works offline and copied anywhere, ~4.8 MB each) and as plotly JSON for the report.
- :data:`HEADLINES` says what every headline number means and in what units;
  :func:`headlines` names each the same way for the printed summary and the report.
- :func:`build_report` writes ``index.html``: one self-contained page (plotly.js inline
  once, no network) with the model, parameters, durations, headline numbers,
  conclusions, every figure and links to the executed notebooks.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..store import atomic_write_text

__all__ = [
    "HEADLINES",
    "SUMMARY_KEYS",
    "WIDGET_NOTE",
    "Headline",
    "ParameterError",
    "build_report",
    "headlines",
    "html_table",
    "load_summary",
    "markdown_table",
    "record",
    "save_figure",
    "to_jsonable",
    "widget_with_note",
]


class ParameterError(ValueError):
    """A notebook parameter has a value the notebook cannot use (see :mod:`steerlab.lab.params`)."""


def to_jsonable(obj: Any) -> Any:
    """Tensors and numpy values to lists and floats; NaN and inf to ``None``."""
    if isinstance(obj, torch.Tensor):
        return to_jsonable(obj.detach().cpu().tolist())
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def load_summary(output_dir: str | Path) -> dict[str, Any]:
    """The ``summary.json`` of a run folder (empty if none yet)."""
    path = Path(output_dir) / "summary.json"
    if not path.exists():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


def record(output_dir: str | Path, key: str, values: Mapping[str, Any]) -> Path:
    """Replace ``key`` in ``output_dir/summary.json`` with ``values`` (atomically).

    Example:
        >>> record(output_dir, "bias", {"avg_cos_to_mean": stats.avg_cos_to_mean})
    """
    path = Path(output_dir) / "summary.json"
    summary = load_summary(output_dir)
    summary[key] = to_jsonable(dict(values))
    atomic_write_text(path, json.dumps(summary, indent=1, allow_nan=False))
    return path


def save_figure(fig: Any, output_dir: str | Path, name: str) -> Path:
    """Write a plotly figure to ``output_dir/figures/name.html`` (and ``name.json`` for the report).

    The HTML embeds plotly.js (about 4.8 MB), so the file renders offline and when copied
    out of its folder; the JSON is the figure itself, which :func:`build_report` draws on
    one page with a single inline copy of plotly.js.

    Example:
        >>> save_figure(fig, output_dir, "01_bias_norms")
    """
    folder = Path(output_dir) / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.html"
    atomic_write_text(path, fig.to_html(include_plotlyjs=True, include_mathjax=False, full_html=True))
    atomic_write_text(folder / f"{name}.json", fig.to_json())
    return path


def html_table(columns: Mapping[str, Sequence[Any]], *, title: str | None = None, quote_strings: bool = True) -> str:
    """A small HTML table with one column per key (the write-up's top-k layout).

    Strings are shown as ``repr`` (so a token's leading space is visible) unless
    ``quote_strings`` is False.
    """
    names = list(columns)
    depth = max((len(columns[n]) for n in names), default=0)
    head = "".join(f"<th>{html.escape(str(n))}</th>" for n in names)

    def cell(value: Any) -> str:
        text = repr(value) if quote_strings and isinstance(value, str) else str(value)
        return f"<td><code>{html.escape(text)}</code></td>"

    rows = []
    for i in range(depth):
        cells = "".join(cell(columns[n][i]) if i < len(columns[n]) else "<td></td>" for n in names)
        rows.append(f"<tr>{cells}</tr>")
    caption = f"<caption>{html.escape(title)}</caption>" if title else ""
    return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def markdown_table(columns: Mapping[str, Sequence[Any]]) -> str:
    """A Markdown table with one column per key (for READMEs and notes).

    Example:
        >>> print(markdown_table({"method": ["raw", "mean_centred"], "effect": ["0.01", "0.02"]}))
    """
    names = list(columns)
    depth = max((len(columns[n]) for n in names), default=0)
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    for i in range(depth):
        cells = [str(columns[n][i]).replace("|", "\\|") if i < len(columns[n]) else "" for n in names]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --- headline numbers: what each means -------------------------------------------------

SUMMARY_KEYS: dict[str, str] = {"bias": "01_bias", "interpret": "02_interpret", "steer": "03_steer",
                                "compare": "04_compare_methods"}
"""``summary.json`` key -> the notebook (file stem) that records it."""

# (summary key, headline key) -> (name template, meaning and units). Templates read the
# notebook's headline and its summary entry: {mid_layer}, {top_k}, {threshold}, ...
HEADLINES: dict[tuple[str, str], tuple[str, str]] = {
    ("bias", "mid_layer"): ("middle layer measured", "residual layer the next numbers are read at; 0 = the embeddings"),
    ("bias", "ratio_mid"): ("norm-of-mean ratio at layer {mid_layer}",
                            ("norm of the layer mean / mean activation norm; 1 = all activations identical, "
                            "0 = centred on the origin")),
    ("bias", "avg_pairwise_cos_mid"): ("average cosine between two activations at layer {mid_layer}",
                                       ("cosine similarity of different tokens' activations, averaged; "
                                       "0 = unrelated directions, 1 = the same direction")),
    ("bias", "centred_max_ratio"): ("largest norm-of-mean ratio after mean-centring, any layer",
                                    "should be about 0: centring subtracts the layer mean"),
    ("interpret", "layer"): ("lens layer", "residual layer of the top-k tables and heatmaps"),
    ("interpret", "jaccard_raw"): ("top-{top_k} token overlap across genres, raw vectors, layer {layer}",
                                   ("mean pairwise Jaccard of the genres' top-k token sets; "
                                   "1 = every genre reads as the same tokens")),
    ("interpret", "jaccard_centred"): ("top-{top_k} token overlap across genres, mean-centred vectors, layer {layer}",
                                       ("mean pairwise Jaccard of the genres' top-k token sets; "
                                       "lower than raw = centring separates the genres")),
    ("interpret", "acc_raw_at_layer"): ("held-out genre accuracy, raw, layer {layer}",
                                        ("fraction of {heldout_count} held-out stories whose nearest genre vector "
                                        "(cosine) is their own; chance = 1/{n_genres}")),
    ("interpret", "acc_centred_at_layer"): ("held-out genre accuracy, mean-centred, layer {layer}",
                                            ("as raw, with the general-text mean subtracted from stories and "
                                            "vectors; chance = 1/{n_genres}")),
    ("steer", "*"): ("vocabulary-rate change, example {key}, ×{coefficient} at {position}, layer {layer}",
                     ("target-vocabulary rate of steered minus unsteered completions, as a fraction of words; "
                      "0 = no movement towards the target")),
    ("compare", "best_method"): ("best method by held-out AxBench score, pooled over targets",
                                 "the steered condition with the highest mean score on the report half of the prompts"),
    ("compare", "best_score"): ("its held-out AxBench score",
                                ("harmonic mean of concept, fluency and relevance per completion, 0 to 1 (0 if any is 0); "
                                 "its 95% CI is in the table")),
    ("compare", "judge_accuracy"): ("concept judge's held-out accuracy",
                                    "fraction of held-out texts the judge (not the steered model) classifies correctly"),
}


@dataclass(frozen=True)
class Headline:
    """One headline number with its name and meaning."""

    summary_key: str
    key: str
    name: str
    value: Any
    meaning: str

    @property
    def shown(self) -> str:
        """The value as text (floats with up to 4 significant digits; small ones in e notation)."""
        v = self.value
        if isinstance(v, float):
            return f"{v:.2e}" if v != 0 and abs(v) < 1e-3 else f"{v:.4g}"
        return "n/a" if v is None else str(v)

    def line(self) -> str:
        """``name: value (meaning)``, as the printed run summary shows it."""
        return f"{self.name}: {self.shown} ({self.meaning})"


def _fields(key: str, entry: Mapping[str, Any], headline: Mapping[str, Any]) -> dict[str, Any]:
    positions = entry.get("positions") or ["?"]
    config = entry.get("config") or {}
    return {**entry, **headline, "position": positions[-1], "threshold": config.get("damage_threshold", "?"),
            "n_genres": len(entry.get("genres") or []) or "?", "heldout_count": entry.get("heldout_count", "?")}


def headlines(summary: Mapping[str, Any]) -> list[Headline]:
    """Every headline number of a run, named with its meaning and units (:data:`HEADLINES`).

    A key without a description is shown with "no description" (never dropped).

    Example:
        >>> [h.line() for h in headlines(load_summary("runs/latest"))][:1]
        ['norm-of-mean ratio at layer 15: 0.71 (norm of the layer mean / mean activation norm; ...)']
    """
    out = []
    for skey, entry in summary.items():
        if not isinstance(entry, Mapping) or not isinstance(entry.get("headline"), Mapping):
            continue
        shown = entry["headline"]
        for key, value in shown.items():
            name, meaning = HEADLINES.get((skey, key)) or HEADLINES.get((skey, "*")) or (key, "no description")
            ctx = _fields(skey, entry, shown)
            try:
                name, meaning = name.format(key=key, **ctx), meaning.format(key=key, **ctx)
            except (KeyError, IndexError, ValueError):
                pass  # a template field the entry lacks: the template text is still a correct name
            out.append(Headline(skey, key, name, value, meaning))
    return out


# --- the run page ------------------------------------------------------------------------

WIDGET_NOTE = ("The live widget needs a running kernel: open this notebook in JupyterLab (<code>make lab</code>) "
               "and run it. A saved or exported copy cannot generate.")


def widget_with_note(ui: Any) -> tuple[Any, Any]:
    """A static note and the widget, to ``display(*widget_with_note(ui))``.

    The note is plain HTML, so a saved notebook and its HTML export show it; the widget
    carries a style that hides the note, so a live widget (rendered by a running kernel's
    widget manager) replaces the note instead of sitting under it.
    """
    import ipywidgets as w
    from IPython.display import HTML

    note = HTML(f'<div class="steerlab-static-note" style="padding:8px;border-left:4px solid #0072B2;'
                f'background:#f3f7fb">{WIDGET_NOTE}</div>')
    hide = w.HTML("<style>.steerlab-static-note { display: none; }</style>")
    return note, w.VBox([hide, ui])


_PAGE_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1150px; color: #222; }
h1 { font-size: 1.6rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.6rem 0 1.2rem; } caption { text-align: left; font-weight: 600; }
td, th { border: 1px solid #ddd; padding: 4px 8px; vertical-align: top; text-align: left; }
td.value { font-variant-numeric: tabular-nums; font-weight: 600; white-space: nowrap; }
.figure { min-height: 420px; margin-bottom: 1.5rem; } .failed { color: #b00020; font-weight: 600; }
.meaning { color: #555; }
"""


def _esc(x: Any) -> str:
    return html.escape(str(x))


def _figure_script(div_id: str, figure_json: str) -> str:
    safe = figure_json.replace("</", "<\\\\/")
    return (f'<script>(function () {{ var fig = {safe}; Plotly.newPlot("{div_id}", fig.data, fig.layout, '
            f'{{responsive: true}}); }})();</script>')


def build_report(run_dir: str | Path) -> Path:
    """Write ``run_dir/index.html`` from ``summary.json``, ``run.json`` and ``figures/*.json``.

    Self-contained: plotly.js is inline once; figures are drawn from their JSON; nothing is
    fetched. Links to executed notebooks (``NAME.ipynb``) and exports (``NAME.html``) are
    relative, for the run folder.

    Example:
        >>> build_report("runs/latest")
        PosixPath('runs/latest/index.html')
    """
    import plotly.offline

    run_dir = Path(run_dir)
    summary = load_summary(run_dir)
    run_path = run_dir / "run.json"
    run = json.loads(run_path.read_text(encoding="utf-8")) if run_path.exists() else {}
    results = {Path(r["notebook"]).stem: r for r in run.get("notebooks", [])}
    stems = list(dict.fromkeys([*results, *(SUMMARY_KEYS[k] for k in summary if k in SUMMARY_KEYS)]))
    models = sorted({str(e["model"]) for e in summary.values() if isinstance(e, Mapping) and e.get("model")})
    parts = [f"<h1>steerlab run {_esc(run_dir.resolve().name)}</h1>",
             f"<p>Model: <b>{_esc(', '.join(models) or 'unknown')}</b>"
             + (f" · started {_esc(run['started'])}" if run.get("started") else "")
             + (f" · {run['seconds']:.0f} s in all" if isinstance(run.get("seconds"), (int, float)) else "")
             + "</p>"]
    rows = []
    for stem in stems:
        r = results.get(stem, {})
        status = ("ok" if r.get("ok") else '<span class="failed">FAILED</span>') if r else "not in run.json"
        secs = f"{r['seconds']:.0f} s" if isinstance(r.get("seconds"), (int, float)) else ""
        links = " · ".join(f'<a href="{_esc(stem + ext)}">{_esc(stem + ext)}</a>' for ext in (".ipynb", ".html")
                           if (run_dir / f"{stem}{ext}").exists())
        rows.append(f"<tr><td>{_esc(stem)}</td><td>{status}</td><td>{secs}</td><td>{links}</td></tr>")
        if r.get("error"):
            rows.append(f'<tr><td colspan="4"><pre>{_esc(r["error"][-3000:])}</pre></td></tr>')
    parts.append("<h2>Notebooks</h2><table><thead><tr><th>notebook</th><th>status</th><th>duration</th>"
                 f"<th>executed notebook · HTML export</th></tr></thead><tbody>{''.join(rows)}</tbody></table>")
    parts.append("<h2>Headline numbers</h2>")
    by_key: dict[str, list[Headline]] = {}
    for h in headlines(summary):
        by_key.setdefault(h.summary_key, []).append(h)
    for skey, hs in by_key.items():
        body = "".join(f'<tr class="headline" data-key="{_esc(skey)}.{_esc(h.key)}"><td>{_esc(h.name)}</td>'
                       f'<td class="value">{_esc(h.shown)}</td><td class="meaning">{_esc(h.meaning)}</td></tr>'
                       for h in hs)
        parts.append(f"<table><caption>{_esc(SUMMARY_KEYS.get(skey, skey))} ({_esc(skey)})</caption><thead><tr>"
                     f"<th>quantity</th><th>value</th><th>meaning and units</th></tr></thead><tbody>{body}</tbody></table>")
    conclusions = [(k, e["conclusion"]) for k, e in summary.items() if isinstance(e, Mapping) and e.get("conclusion")]
    if conclusions:
        parts.append("<h2>Conclusions (generated from the numbers)</h2>")
        for skey, lines in conclusions:
            items = "".join(f"<li>{_esc(line)}</li>" for line in lines)
            parts.append(f"<h3>{_esc(SUMMARY_KEYS.get(skey, skey))}</h3><ul>{items}</ul>")
    parts.append("<h2>Parameters</h2>")
    for skey, entry in summary.items():
        params = entry.get("parameters") if isinstance(entry, Mapping) else None
        if isinstance(params, Mapping):
            body = "".join(f"<tr><td>{_esc(k)}</td><td><code>{_esc(json.dumps(v))}</code></td></tr>"
                           for k, v in params.items())
            parts.append(f"<table><caption>{_esc(SUMMARY_KEYS.get(skey, skey))}</caption><tbody>{body}</tbody></table>")
    if run.get("parameters"):
        parts.append(f"<p>Passed to the runner: <code>{_esc(json.dumps(run['parameters']))}</code></p>")
    parts.append("<h2>Figures</h2>")
    scripts = []
    for i, path in enumerate(sorted((run_dir / "figures").glob("*.json"))):
        div = f"figure-{i}"
        standalone = path.with_suffix(".html")
        link = f' · <a href="figures/{_esc(standalone.name)}">standalone</a>' if standalone.exists() else ""
        parts.append(f'<h3>{_esc(path.stem)}{link}</h3><div class="figure" id="{div}" '
                     f'data-name="{_esc(path.stem)}"></div>')
        scripts.append(_figure_script(div, path.read_text(encoding="utf-8")))
    page = ("<!DOCTYPE html><html><head><meta charset=\"utf-8\">"
            f"<title>steerlab run {_esc(run_dir.resolve().name)}</title><style>{_PAGE_STYLE}</style>"
            f"<script>{plotly.offline.get_plotlyjs()}</script></head><body>{''.join(parts)}{''.join(scripts)}"
            "</body></html>")
    out = run_dir / "index.html"
    atomic_write_text(out, page)
    return out
