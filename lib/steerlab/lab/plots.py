"""Every figure of the notebooks, built one way so none can be misread.

- one fixed colour per construction across the suite (:data:`METHOD_COLOURS`, keyed by
  :mod:`steerlab.constructions` names and the comparison's ``bias_ablated``, plus ``none`` for
  the unsteered control);
- short titles that fit a 1024 px page (long ones wrap), the model and run as a subtitle
  (:func:`context`), and a one-line caption that says how to read the figure (kept in
  ``layout.meta["caption"]``, shown under the figure by the run report: :func:`caption_of`);
- reference values (chance, a damage threshold, zero) are labelled lines, not data series;
- one quantity per y axis, with its unit: two quantities get two panels;
- a line that lies exactly on another is dashed and named in the legend (``≡ other``);
  where many methods share the same x values their points are offset sideways a little;
- log axes are labelled with whole numbers (1, 2, 5, 10, 20, ...), not plotly's digit-only minor labels;
- hover text names each field; intervals are drawn where a number has one.
"""

from __future__ import annotations

import itertools
import math
import re
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from ..sets import UNIT_LABEL
from ..study.compare import frontier

__all__ = [
    "COEFFICIENT_AXIS",
    "DAMAGE_AXIS",
    "EFFECT_AXIS",
    "LAYER_AXIS",
    "METHOD_COLOURS",
    "TITLE_CHARS",
    "caption_of",
    "colour",
    "confusion_heatmap",
    "context",
    "dodge",
    "effect_at_matched",
    "effect_vs_damage",
    "heatmap_pair",
    "layer_lines",
    "layer_panels",
    "log_ticks",
    "score_by_method",
    "setup_notebook",
    "steerability_curves",
    "subtitle_of",
    "sweep_panels",
    "title_of",
]

# Colour-blind-safe (Okabe-Ito and Tol), one per construction name; "none" is the unsteered control.
METHOD_COLOURS: dict[str, str] = {
    "raw": "#E69F00",
    "mean_centred": "#0072B2",
    "isolated": "#009E73",
    "counterbalanced": "#CC79A7",
    "prompt_pair": "#D55E00",
    "word_pair": "#882255",
    "random": "#999999",
    "bias": "#56B4E9",
    "bias_ablated": "#DDCC77",
    "pca_diff": "#44AA99",
    "pca_center": "#661100",
    "probe": "#332288",
    "prompting": "#117733",
    "prompting_steered": "#AA4499",
    "none": "#000000",
}
_ALIASES = {"centred": "mean_centred", "unsteered": "none"}
# Series that are not constructions (01's token groups), in a fixed order.
_OTHER_COLOURS = ("#332288", "#117733", "#AA4499", "#44AA99", "#661100", "#888888")
LAYER_AXIS = "residual layer (0 = embeddings)"
_REFERENCE = {"line_dash": "dot", "line_color": "#555555", "line_width": 1.5}


def colour(name: str, index: int = 0) -> str:
    """The suite's colour for a construction (``centred`` = ``mean_centred``); others by ``index``.

    Example:
        >>> colour("mean_centred") == colour("centred") == METHOD_COLOURS["mean_centred"]
        True
    """
    key = _ALIASES.get(name, name)
    return METHOD_COLOURS.get(key, _OTHER_COLOURS[index % len(_OTHER_COLOURS)])


def context(model_name: str, output_dir: str | Path) -> str:
    """The subtitle of every figure: the model and the run folder's name.

    Example:
        >>> context("SmolLM2-135M-Instruct", "runs/20261201-150053")
        'SmolLM2-135M-Instruct · run 20261201-150053'
    """
    return f"{model_name} · run {Path(output_dir).resolve().name}"


def setup_notebook() -> None:
    """Plotly output that renders live in JupyterLab and offline in the run folder's HTML export.

    The bundle carries plotly's JSON (JupyterLab draws it with its plotly extension) and HTML
    for the export. The HTML does not embed plotly.js: the cell that calls this shows a
    ``<script>`` loading the run folder's one shared ``plotly.min.js`` (:mod:`steerlab.lab.plotlyjs`;
    :func:`~steerlab.lab.report.save_figure` writes it), so an nbconvert export beside it draws
    every figure with no network (no CDN, no MathJax) and without its own 4.8 MB copy.

    Example:
        >>> setup_notebook()  # once, in a notebook's first code cell
    """
    import plotly.io as pio
    from IPython.display import HTML, display
    from plotly.io._base_renderers import NotebookRenderer

    from .plotlyjs import plotlyjs_tag

    class OfflineNotebookRenderer(NotebookRenderer):
        def activate(self) -> None:
            display(HTML("<script>window.PlotlyConfig = {MathJaxConfig: 'local'};</script>" + plotlyjs_tag()))

        def to_mimebundle(self, fig_dict: Any) -> dict[str, str]:
            html = pio.to_html(fig_dict, include_plotlyjs=False, include_mathjax=False, full_html=False,
                               default_width="100%", default_height=525, validate=False)
            return {"text/html": html}

    pio.renderers["steerlab_offline"] = OfflineNotebookRenderer()
    pio.renderers.default = "plotly_mimetype+steerlab_offline"


TITLE_CHARS = 70
"""Longest title line, in characters (about 600 px at plotly's 17 px title font): it fits the ~900 px a
figure gets in a notebook export or the report at 1024 px; longer titles wrap."""


def _wrap_title(title: str, width: int = TITLE_CHARS) -> str:
    if "<" in title or len(title) <= width:
        return title  # a title with markup is the caller's layout
    return "<br>".join(textwrap.wrap(title, width=width, break_long_words=False))


def _titled(title: str, where: str) -> dict[str, Any]:
    return {"text": f"{_wrap_title(title)}<br><sup>{where}</sup>", "x": 0.01, "xanchor": "left"}


def caption_of(fig: go.Figure | Mapping[str, Any]) -> str:
    """The one-line caption a figure carries (``layout.meta["caption"]``), or ``""``.

    Works on a figure and on its JSON (as the run report reads it).

    Example:
        >>> caption_of(layer_lines([0, 1], {"raw": [1, 2]}, title="t", yaxis="y", where="w", caption="How to read."))
        'How to read.'
    """
    layout = fig.layout.to_plotly_json() if isinstance(fig, go.Figure) else dict(fig.get("layout") or {})
    meta = layout.get("meta")
    return str(meta.get("caption") or "") if isinstance(meta, Mapping) else ""


def _title_text(fig: go.Figure | Mapping[str, Any]) -> str:
    """The raw title text (HTML, subtitle included) of a figure or its JSON."""
    layout = fig.layout.to_plotly_json() if isinstance(fig, go.Figure) else dict(fig.get("layout") or {})
    title = layout.get("title") or {}
    return str(title.get("text", "") if isinstance(title, Mapping) else title)


def title_of(fig: go.Figure | Mapping[str, Any]) -> str:
    """A figure's title as plain text, without its subtitle (the model and run).

    Example:
        >>> title_of(layer_lines([0, 1], {"raw": [1, 2]}, title="Accuracy", yaxis="y", where="w"))
        'Accuracy'
    """
    text = _title_text(fig).split("<sup>")[0]
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", text)).strip()


def subtitle_of(fig: go.Figure | Mapping[str, Any]) -> str:
    """A figure's subtitle as plain text (what it shows, the model and the run), or ``""``.

    Example:
        >>> subtitle_of(layer_lines([0, 1], {"raw": [1, 2]}, title="Accuracy", yaxis="y", where="tiny · run x"))
        'tiny · run x'
    """
    text = _title_text(fig)
    if "<sup>" not in text:
        return ""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", text.split("<sup>", 1)[1])).strip()


def _layout(fig: go.Figure, title: str, where: str, height: int, caption: str | None = None) -> go.Figure:
    lines = _wrap_title(title).count("<br>") + 1
    fig.update_layout(title=_titled(title, where), template="plotly_white", height=height + 22 * (lines - 1),
                      legend={"orientation": "h", "y": -0.16, "yanchor": "top", "x": 0, "xanchor": "left"},
                      margin={"t": 70 + 22 * lines, "l": 70, "r": 30})
    if caption:
        fig.update_layout(meta={"caption": caption})
    _mark_coincident(fig)
    _readable_log_axes(fig)
    return fig


def _axis_key(trace: Any, which: str) -> str:
    ref = getattr(trace, f"{which}axis", None) or which
    return f"{which}axis{ref[1:]}"


def _mark_coincident(fig: go.Figure) -> None:
    """A line that lies on an earlier one of its panel is dashed (over the solid one, both show)
    and named: in the legend (``≡ other``) where it coincides in every panel it is drawn in, else
    by a note beside it in the panel where it does."""
    drawn: list[tuple[tuple[str, str], list[Any], list[Any], str, Any]] = []
    hidden: dict[str, list[tuple[Any, str | None]]] = {}  # legend group -> (trace, the one it lies on or None)
    dashes = ("dash", "dot", "dashdot", "longdash")
    for trace in fig.data:
        if not isinstance(trace, go.Scatter) or "lines" not in (trace.mode or "lines") or trace.y is None:
            continue
        panel = (_axis_key(trace, "x"), _axis_key(trace, "y"))
        xs, ys = list(trace.x or []), list(trace.y)
        if all(v is None for v in ys):  # a legend key, not a line
            continue
        under = [(name, dash) for p, x0, y0, name, dash in drawn
                 if p == panel and name != trace.name and x0 == xs and _close(y0, ys)]
        if under and all((trace.line.dash or "solid") == (dash or "solid") for _, dash in under):
            trace.line.dash = dashes[(len(under) - 1) % len(dashes)]  # the same style would hide the one below
        hidden.setdefault(trace.legendgroup or trace.name, []).append((trace, under[0][0] if under else None))
        drawn.append((panel, xs, ys, trace.name, trace.line.dash))
    for group, traces in hidden.items():
        lies_on = [other for _, other in traces]
        if all(lies_on) and len(set(lies_on)) == 1:
            for trace in fig.data:
                if (trace.legendgroup or trace.name) == group and trace.showlegend is not False:
                    trace.name = f"{trace.name} (≡ {lies_on[0]}, dashed)"
            continue
        for trace, other in traces:
            if other:
                at: dict[str, Any] = {}
                for which, ref in (("x", trace.xaxis or "x"), ("y", trace.yaxis or "y")):
                    value = float(list(getattr(trace, which))[-1])
                    log = fig.layout[_axis_key(trace, which)].type == "log"
                    at[which] = _annotation_at(value, log and value > 0)
                    at[f"{which}ref"] = ref
                fig.add_annotation(**at, text=f"{trace.name} ≡ {other} here", showarrow=False, xanchor="right",
                                   yanchor="bottom", font={"size": 11})


def _close(a: Sequence[Any], b: Sequence[Any], rel: float = 1e-6) -> bool:
    if len(a) != len(b) or not a:
        return False
    fa = [float(v) if v is not None else math.nan for v in a]
    fb = [float(v) if v is not None else math.nan for v in b]
    scale = max([abs(v) for v in fa + fb if math.isfinite(v)] or [1.0]) or 1.0
    return all((math.isnan(x) and math.isnan(y)) or abs(x - y) <= rel * scale for x, y in zip(fa, fb))


def log_ticks(low: float, high: float) -> list[float]:
    """Tick values for a log axis over ``[low, high]``: 1-2-5 per decade (1-1.5-2-3-5-7 over a short
    range), always at least two, one beyond each end where needed.

    Example:
        >>> log_ticks(12, 40)
        [10.0, 15.0, 20.0, 30.0, 50.0]
    """
    if not (0 < low <= high) or not math.isfinite(high):
        raise ValueError(f"log_ticks needs 0 < low <= high, got low={low}, high={high}")
    steps = (1.0,) if high / low > 1e4 else (1.0, 2.0, 5.0) if high / low > 8 else (1.0, 1.5, 2.0, 3.0, 5.0, 7.0)
    start, stop = math.floor(math.log10(low)) - 1, math.ceil(math.log10(high)) + 1
    # Over many decades, every 2nd, 5th, 10th, ... power of ten, so at most about six ticks.
    stride = next(k * 10 ** p for p in range(4) for k in (1, 2, 5) if (stop - start - 2) / (k * 10 ** p) <= 6)
    every = sorted({float(f"{m * 10 ** e:.6g}") for e in range(start, stop + 1) for m in steps
                    if steps != (1.0,) or e % stride == 0})
    inside = [v for v in every if low <= v <= high]
    below = [v for v in every if v < low][-1:]
    above = [v for v in every if v > high][:1]
    if len(inside) >= 2:
        below = below if inside[0] > low * 1.0001 and len(inside) < 4 else []
        above = above if inside[-1] < high * 0.9999 and len(inside) < 4 else []
    return below + inside + above


def _tick_text(v: float) -> str:
    if v >= 1e6:  # 1e6, 1e20: not a row of zeros
        return f"{v:.0e}".replace("e+0", "e").replace("e+", "e")
    return f"{v:,.0f}" if v >= 1000 else f"{v:g}"


def _readable_log_axes(fig: go.Figure) -> None:
    """Whole-number labels on every log axis (plotly labels 20 as "2" between decades)."""
    layout = fig.layout
    for name in [k for k in layout.to_plotly_json() if k.startswith(("xaxis", "yaxis"))]:
        axis = layout[name]
        if axis.type != "log":
            continue
        which = name[0]
        values: list[float] = []
        for trace in fig.data:
            if _axis_key(trace, which) != name:
                continue
            data = getattr(trace, which, None)
            values += [float(v) for v in (data or []) if isinstance(v, (int, float)) and v > 0 and math.isfinite(v)]
        if values:
            low, high = min(values), max(values)
            if axis.range is not None:  # a cut axis: ticks over what is shown
                low, high = max(low, 10 ** axis.range[0]), min(high, 10 ** axis.range[1])
            ticks = log_ticks(low, high)
            axis.update(tickmode="array", tickvals=ticks, ticktext=[_tick_text(v) for v in ticks])


def dodge(fig: go.Figure, width: float = 0.3) -> go.Figure:
    """Offset the traces that share a panel sideways, so many methods' error bars at the same x
    stay apart; the hover text keeps the true x. ``width``: the share of the smallest x step used.

    Example:
        >>> dodge(steerability_curves(rows, methods, target="fantasy", where="w"))
    """
    panels: dict[tuple[str, str], list[Any]] = {}
    for trace in fig.data:
        if isinstance(trace, go.Scatter) and trace.x is not None and all(isinstance(v, (int, float)) for v in trace.x):
            panels.setdefault((_axis_key(trace, "x"), _axis_key(trace, "y")), []).append(trace)
    for traces in panels.values():
        xs = sorted({float(v) for t in traces for v in t.x})
        if len(traces) < 2 or len(xs) < 2:
            continue
        step = min(b - a for a, b in itertools.pairwise(xs)) * width / len(traces)
        for i, trace in enumerate(traces):
            shift = (i - (len(traces) - 1) / 2) * step
            trace.x = [float(v) + shift for v in trace.x]
    return fig


def _annotation_at(value: float, log: bool) -> float:
    """Where an annotation for data ``value`` goes: on a log axis plotly places annotations in
    log10 units, though shapes (the reference lines) stay in data units."""
    return math.log10(value) if log else value


def _hline(fig: go.Figure, y: float, label: str, *, log_y: bool = False, **where: Any) -> None:
    if not log_y:
        fig.add_hline(y=y, annotation_text=label, annotation_position="top left", **_REFERENCE, **where)
        return
    fig.add_hline(y=y, **_REFERENCE, **where)
    xref, yref = "x", "y"
    if where:
        panel = fig.get_subplot(where["row"], where["col"])
        xref, yref = (axis.plotly_name.replace("axis", "") for axis in (panel.xaxis, panel.yaxis))
    fig.add_annotation(x=0, xref=f"{xref} domain", y=_annotation_at(y, log_y), yref=yref, text=label,
                       showarrow=False, xanchor="left", yanchor="bottom")


def _vline(fig: go.Figure, x: float, label: str, *, log_x: bool = False) -> None:
    fig.add_shape(type="line", x0=x, x1=x, xref="x", y0=0, y1=1, yref="y domain",
                  line={"dash": _REFERENCE["line_dash"], "color": _REFERENCE["line_color"],
                        "width": _REFERENCE["line_width"]})
    fig.add_annotation(x=_annotation_at(x, log_x), xref="x", y=1, yref="y domain", text=label,
                       showarrow=False, xanchor="left", yanchor="bottom")


def _floats(values: Sequence[float] | torch.Tensor) -> list[float | None]:
    out: list[float | None] = []
    for v in (values.tolist() if isinstance(values, torch.Tensor) else values):
        f = float(v) if v is not None else math.nan
        out.append(f if math.isfinite(f) else None)
    return out


def _line(x: Sequence[Any], y: Sequence[float] | torch.Tensor, name: str, index: int, *, xname: str, yname: str,
          interval: tuple[Sequence[float], Sequence[float]] | None = None, dash: str | None = None,
          showlegend: bool = True, legendgroup: str | None = None, colour_of: str | None = None,
          hover_name: str | None = None) -> go.Scatter:
    ys = _floats(y)
    error = None
    if interval is not None:
        lo, hi = _floats(interval[0]), _floats(interval[1])
        error = {"type": "data", "symmetric": False,
                 "array": [h - v if h is not None and v is not None else None for v, h in zip(ys, hi)],
                 "arrayminus": [v - lo_ if lo_ is not None and v is not None else None for v, lo_ in zip(ys, lo)]}
    return go.Scatter(x=list(x), y=ys, mode="lines+markers", name=name, error_y=error,
                      line={"color": colour(colour_of or name, index), "dash": dash},
                      legendgroup=legendgroup or name, showlegend=showlegend,
                      hovertemplate=f"<b>{hover_name or name}</b><br>{xname}: %{{x}}<br>{yname}: %{{y:.4g}}<extra></extra>")


def layer_lines(
    layers: Sequence[int],
    series: Mapping[str, Sequence[float] | torch.Tensor],
    *,
    title: str,
    yaxis: str,
    where: str,
    log_y: bool = False,
    xaxis: str = LAYER_AXIS,
    references: Mapping[str, float] | None = None,
    intervals: Mapping[str, tuple[Sequence[float], Sequence[float]]] | None = None,
    caption: str | None = None,
) -> go.Figure:
    """One line per named series (one quantity, ``yaxis``) over layers; labelled reference lines.

    ``caption``: one line on how to read the figure (the run report shows it under the figure).

    Example:
        >>> layer_lines([0, 1], {"raw": [0.2, 0.4]}, title="Accuracy", yaxis="accuracy",
        ...             where="model · run x", references={"chance (1/7)": 1 / 7})
    """
    fig = go.Figure()
    for i, (name, values) in enumerate(series.items()):
        fig.add_trace(_line(layers, values, name, i, xname=xaxis, yname=yaxis,
                            interval=(intervals or {}).get(name)))
    for label, y in (references or {}).items():
        _hline(fig, y, label, log_y=log_y)
    fig.update_layout(xaxis_title=xaxis, yaxis_title=yaxis)
    if len(layers) <= 12 and all(isinstance(la, int) for la in layers):
        fig.update_xaxes(tickvals=list(layers))  # no "layer 9.5" ticks between a few layers
    if log_y:
        fig.update_yaxes(type="log")
    if not caption:
        refs = f"; dotted: {', '.join(references)}" if references else ""
        caption = f"{yaxis.capitalize()} at each {xaxis}, one line per series ({', '.join(series)}){refs}."
    return _layout(fig, title, where, 420, caption)


def layer_panels(
    layers: Sequence[int],
    panels: Mapping[str, Mapping[str, Sequence[float] | torch.Tensor]],
    *,
    title: str,
    where: str,
    log_y: Sequence[str] = (),
    xaxis: str = LAYER_AXIS,
    caption: str | None = None,
) -> go.Figure:
    """One panel per quantity (``panels``: y-axis title -> series), stacked over shared layers.

    A series name keeps its colour in every panel; ``caption`` as in :func:`layer_lines`.

    Example:
        >>> layer_panels([0, 1], {"ratio": {"raw": [0.9, 0.8]}, "cosine": {"raw": [0.5, 0.4]}}, title="t", where="w")
    """
    fig = make_subplots(rows=len(panels), cols=1, shared_xaxes=True, vertical_spacing=0.08)
    names: list[str] = []  # first appearance order: a series keeps its colour and one legend entry
    for row, (yname, series) in enumerate(panels.items(), start=1):
        for name, values in series.items():
            first = name not in names
            if first:
                names.append(name)
            trace = _line(layers, values, name, names.index(name), xname=xaxis, yname=yname, showlegend=first)
            fig.add_trace(trace, row=row, col=1)
        fig.update_yaxes(title_text=yname, type="log" if yname in log_y else "linear", row=row, col=1)
    fig.update_xaxes(title_text=xaxis, row=len(panels), col=1)
    caption = caption or (f"One panel per quantity ({'; '.join(panels)}) over the {xaxis}; a series keeps its colour "
                          "in every panel.")
    return _layout(fig, title, where, 260 * len(panels) + 140, caption)


def heatmap_pair(
    left: torch.Tensor, right: torch.Tensor, labels: Sequence[str], *, titles: tuple[str, str], title: str,
    where: str, quantity: str = "cosine", caption: str | None = None,
) -> go.Figure:
    """Two square heatmaps side by side on one colour scale (-1..1).

    Example:
        >>> heatmap_pair(torch.eye(2), torch.eye(2), ["a", "b"], titles=("raw", "centred"), title="t", where="w")
    """
    fig = make_subplots(rows=1, cols=2, subplot_titles=titles, horizontal_spacing=0.15)
    for col, m in enumerate((left, right), start=1):
        fig.add_trace(
            go.Heatmap(z=m.tolist(), x=list(labels), y=list(labels), zmin=-1, zmax=1, colorscale="RdBu",
                       reversescale=True, showscale=col == 2, colorbar={"title": {"text": quantity}},
                       text=[[f"{v:.2f}" for v in row] for row in m.tolist()], texttemplate="%{text}",
                       hovertemplate=(f"<b>{titles[col - 1]}</b><br>row: %{{y}}<br>column: %{{x}}<br>"
                                      f"{quantity}: %{{z:.3f}}<extra></extra>")),
            row=1, col=col,
        )
    caption = caption or (f"{quantity.capitalize()} of each pair, {titles[0]} (left) and {titles[1]} (right), on one "
                          "colour scale: red = same direction (1), white = unrelated (0), blue = opposite (-1).")
    return _layout(fig, title, where, 480, caption)


COEFFICIENT_AXIS = f"coefficient (× {UNIT_LABEL}, the unit)"


def sweep_panels(
    coefficients: Sequence[float],
    rates: Mapping[str, Sequence[float]],
    perplexities: Mapping[str, Sequence[float]],
    *,
    method: str,
    title: str,
    where: str,
    caption: str | None = None,
    concept: Mapping[str, Sequence[float]] | None = None,
    concept_ci: Mapping[str, Sequence[Sequence[float] | None]] | None = None,
    target: str = "target",
) -> go.Figure:
    """03's sweep over the coefficient, one line per position rule (dash), in the construction's colour:
    with ``concept``, the judge's P(``target``) on top (bars: ``concept_ci``, 95% CI, where
    recorded), the target-vocabulary rate under it as the secondary measure, and perplexity
    on a log axis at the bottom; without it, the vocabulary rate and perplexity only.

    The legend names the position rules under the construction (``method``), and the subtitle
    names the construction too, so an example's name in the title cannot be read as another one.

    Example:
        >>> sweep_panels([0.0, 1.0], {"first": [0.0, 0.1]}, {"first": [10.0, 12.0]}, method="prompt_pair",
        ...              title="love_hate", where="w", concept={"first": [0.12, 0.2]}, target="romance")
    """
    judge = f"P({target}) under the concept judge"
    # (subplot title, quantity, values by position, CIs by position)
    panels: list[tuple[str, str, Mapping[str, Sequence[float]], Mapping[str, Sequence[Sequence[float] | None]]]] = []
    if concept is not None:
        panels.append((f"{judge} (95% CI)", judge, concept, concept_ci or {}))
    panels += [("target-vocabulary rate of the completions" + (" (secondary)" if concept is not None else ""),
                "target-vocabulary rate", rates, {}),
               ("perplexity of the completions under the unsteered model", "perplexity", perplexities, {})]
    fig = make_subplots(rows=len(panels), cols=1, shared_xaxes=True, vertical_spacing=0.1 if concept else 0.12,
                        subplot_titles=[p[0] for p in panels])
    dashes = ("solid", "dash", "dot", "dashdot", "longdash")
    for i, position in enumerate(rates):
        for row, (_, yname, series, intervals) in enumerate(panels, start=1):
            interval = None
            cis = intervals.get(position)
            if cis:
                interval = ([c[0] if c else math.nan for c in cis], [c[1] if c else math.nan for c in cis])
            trace = _line(coefficients, series[position], position, i, xname=COEFFICIENT_AXIS, yname=yname,
                          interval=interval, dash=dashes[i % len(dashes)], showlegend=row == 1,
                          legendgroup=position, colour_of=method, hover_name=f"{method}, position {position}")
            fig.add_trace(trace, row=row, col=1)
    axis_titles = {judge: f"P({target})", "target-vocabulary rate": "vocabulary rate (fraction of words)",
                   "perplexity": "perplexity (log axis)"}
    for row, (_, yname, _, _) in enumerate(panels, start=1):
        fig.update_yaxes(title_text=axis_titles[yname], row=row, col=1, **({"type": "log"} if yname == "perplexity"
                                                                            else {}))
    fig.update_xaxes(title_text=COEFFICIENT_AXIS, row=len(panels), col=1)
    fig.update_layout(legend_title_text=f"{method} vector, steered at:")
    fig.add_vline(x=0, annotation_text="unsteered (×0)", annotation_position="top right", **_REFERENCE)
    if caption is None and concept is not None:
        caption = (f"The {method} vector added at each coefficient, one line per position rule. Top: the concept "
                   f"judge's probability that a completion is {target} (not the steered model's), bars 95% CI over "
                   "completions; middle: the share of target-genre words (secondary: it misses text that moves in "
                   "tone or plot without those words); bottom: degradation. A useful coefficient raises the top "
                   "curve before the bottom one climbs.")
    caption = caption or (f"The {method} vector added at each coefficient, one line per position rule. A useful "
                          "coefficient raises the top curve (more target words) before the bottom one climbs "
                          "(degraded text).")
    return _layout(fig, title, f"{method} vector · {where}", 780 if concept is not None else 620, caption)


def _row_hover(r: Mapping[str, Any]) -> str:
    ci = r.get("concept_delta_ci") or [math.nan, math.nan]
    return (f"target: {r.get('target', '?')}<br>method: {r['method']}<br>layer: {r['layer']}<br>"
            f"coefficient: ×{r['coefficient']:g}<br>position: {r['position']}<br>"
            f"concept effect: {_fmt(r['concept_delta'])} [{_fmt(ci[0])}, {_fmt(ci[1])}]<br>"
            f"AxBench score: {_fmt(r.get('score'))}<br>perplexity ratio: {_fmt(r['perplexity_ratio'])}<br>"
            f"KL: {_fmt(r['kl'])} nats")


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, (int, float)) and math.isfinite(v) else "n/a"


def _methods(rows: Sequence[Mapping[str, Any]], methods: Sequence[str]) -> list[str]:
    return [m for m in ["none", *methods] if any(r["method"] == m for r in rows)]


CELL_DASHES = ("solid", "dot", "dash", "dashdot", "longdash", "longdashdot")
CELL_SYMBOLS = ("circle", "diamond", "square", "triangle-up", "cross", "star")
"""One line dash and one marker symbol per (layer, position) cell: six of each, so a full run's
3 layers x 2 positions never share a style."""


def _method_point(fig: go.Figure, *, method: str, i: int, k: int, n_cells: int, mean: float,
                  ci: Sequence[float], hover: str, hollow: bool = False, **where: Any) -> None:
    """One method's value in one cell on a method axis: method ``i`` at x = i, its cells ``k`` side by side."""
    fig.add_trace(go.Scatter(
        x=[i + (k - (n_cells - 1) / 2) * 0.6 / max(n_cells, 1)], y=[mean], mode="markers", name=method,
        legendgroup=method, showlegend=False,
        marker={"color": colour(method, i), "size": 9,
                "symbol": CELL_SYMBOLS[k % len(CELL_SYMBOLS)] + ("-open" if hollow else "")},
        error_y={"type": "data", "symmetric": False, "array": [ci[1] - mean], "arrayminus": [mean - ci[0]]},
        hovertext=[hover], hoverinfo="text"), **where)


def _cells_legend(fig: go.Figure, cells: Sequence[tuple[Any, Any]], **where: Any) -> None:
    """A legend entry per (layer, position) cell: its line dash and marker symbol, in grey."""
    for k, (layer, position) in enumerate(cells):
        fig.add_trace(go.Scatter(
            x=[None], y=[None], mode="lines+markers", name=f"L{layer} {position}", legendgroup="cells",
            line={"color": "#555555", "dash": CELL_DASHES[k % len(CELL_DASHES)]},
            marker={"color": "#555555", "symbol": CELL_SYMBOLS[k % len(CELL_SYMBOLS)]}), **where)


def _method_axis(fig: go.Figure, shown: Sequence[str], **where: Any) -> None:
    fig.update_xaxes(tickvals=list(range(len(shown))), ticktext=list(shown), tickangle=-35,
                     range=[-0.6, len(shown) - 0.4], **where)


DAMAGE_AXIS = "damage: perplexity ratio on general text (steered / unsteered, log axis)"
EFFECT_AXIS = "concept effect, ΔP(target) (bars: 95% CI)"


def effect_vs_damage(rows: Sequence[Mapping[str, Any]], methods: Sequence[str], *, threshold: float, target: str,
                     where: str) -> go.Figure:
    """04: concept effect (judge's P(target) − unsteered, bootstrap 95% CI) against damage for one
    target, one colour per method; the damage threshold is a labelled line.

    Example:
        >>> effect_vs_damage(result.rows, cfg.methods, threshold=1.5, target="fantasy", where="w")
    """
    rows = [r for r in rows if r.get("target", target) == target]
    fig = go.Figure()
    for method in _methods(rows, methods):
        rs = [r for r in rows if r["method"] == method]
        ys = [r["concept_delta"] for r in rs]
        fig.add_trace(go.Scatter(
            x=[r["perplexity_ratio"] for r in rs], y=ys, mode="markers", legendgroup=method, showlegend=False,
            name="none (unsteered)" if method == "none" else method,
            marker={"color": colour(method), "size": 7, "opacity": 0.45},
            hovertext=[_row_hover(r) for r in rs], hoverinfo="text",
            error_y={"type": "data", "symmetric": False, "thickness": 1,
                     "array": [r["concept_delta_ci"][1] - r["concept_delta"] for r in rs],
                     "arrayminus": [r["concept_delta"] - r["concept_delta_ci"][0] for r in rs]}))
        # The Pareto frontier: the best effect reached at each damage level (never sweep order).
        front = frontier(rs, method)
        fig.add_trace(go.Scatter(
            x=[p["damage"] for p in front], y=[p["effect"] for p in front], mode="lines+markers",
            line={"color": colour(method), "shape": "hv", "width": 2.5}, marker={"color": colour(method), "size": 9},
            name="none (unsteered)" if method == "none" else method, legendgroup=method,
            hovertext=[_row_hover(p["row"]) for p in front], hoverinfo="text"))
    _vline(fig, threshold, f"damage threshold: perplexity ratio {threshold:g}", log_x=True)
    _hline(fig, 0, "no effect")
    fig.update_layout(xaxis_title=DAMAGE_AXIS, xaxis_type="log", yaxis_title=EFFECT_AXIS)
    return _layout(fig, f"Concept effect against damage: {target}", where, 540, (
        "Lines: each method's frontier, the best effect it reaches at each damage level; faint points: every "
        "condition (layer, position, coefficient), bars 95% CI. Up = more of the target than unsteered, right = "
        "more damage to general text; the dotted line is the damage threshold."))


def effect_at_matched(rows: Sequence[Mapping[str, Any]], methods: Sequence[str], *, level: float, target: str,
                      where: str) -> go.Figure:
    """04 with ``generate_at="matched"``: the judge's concept effect (P(target) − unsteered, bootstrap 95% CI)
    of each method, every vector generating at the coefficient where its damage on general text reaches
    ``level``, so the methods are compared at equal damage; one point per (layer, position) cell, side
    by side. (:func:`effect_vs_damage` is the view for a coefficient grid.)

    Example:
        >>> effect_at_matched(result.rows, cfg.methods, level=1.25, target="fantasy", where="w")
    """
    rows = [r for r in rows if r.get("target", target) == target and r["method"] != "none"]
    shown = [m for m in _methods(rows, methods) if m != "none"]
    cells = sorted({(r["layer"], r["position"]) for r in rows})
    fig = go.Figure()
    for i, method in enumerate(shown):
        for r in (r for r in rows if r["method"] == method):
            _method_point(fig, method=method, i=i, k=cells.index((r["layer"], r["position"])), n_cells=len(cells),
                          mean=r["concept_delta"], ci=r["concept_delta_ci"], hover=_row_hover(r))
    if len(cells) > 1:
        _cells_legend(fig, cells)
    _method_axis(fig, shown)
    _hline(fig, 0, "unsteered")
    fig.update_layout(yaxis_title=EFFECT_AXIS, showlegend=len(cells) > 1)
    ratios = [r["perplexity_ratio"] for r in rows if isinstance(r.get("perplexity_ratio"), (int, float))
              and math.isfinite(r["perplexity_ratio"])]
    reached = (f" (measured at the chosen coefficients: {min(ratios):.3g}-{max(ratios):.3g})" if ratios else "")
    _layout(fig, f"Concept effect at matched damage: {target}", where, 520, (
        f"Each vector generates at the coefficient where its perplexity ratio on general text reaches {level:g}"
        f"{reached}, so the methods are compared at equal damage. Up = more of the target than unsteered, by "
        "the judge; bars: 95% CI" + ("; cells side by side by symbol." if len(cells) > 1 else ".")))
    return fig.update_layout(legend={"y": -0.3})  # below the slanted method names


def steerability_curves(steer_rows: Sequence[Mapping[str, Any]], methods: Sequence[str], *, target: str,
                        where: str) -> go.Figure:
    """04: mean propensity (log p(target continuation) − log p(other), nats/token) against the
    coefficient, one line per method (bars: bootstrap 95% CI over samples), one panel per
    (layer, position); the slope is the steerability. Methods are offset sideways a little
    (:func:`dodge`) so their error bars do not pile into one band.

    Example:
        >>> steerability_curves(result.steerability, cfg.methods, target="fantasy", where="w")
    """
    rows = [r for r in steer_rows if r["target"] == target]
    panels = sorted({(r["layer"], r["position"]) for r in rows})
    layers = sorted({la for la, _ in panels})
    positions = list(dict.fromkeys(pos for _, pos in panels))
    # One layer: its positions side by side. Several: a grid, a column per layer and a row per position,
    # so six panels of a full run stay wide enough to read and share one axis title.
    grid = len(layers) > 1 and len(positions) > 1
    n_rows, n_cols = (len(positions), len(layers)) if grid else (1, max(1, len(panels)))
    place = {cell: ((positions.index(cell[1]) + 1, layers.index(cell[0]) + 1) if grid else (1, k + 1))
             for k, cell in enumerate(panels)}
    titles = [""] * (n_rows * n_cols)
    for (la, pos), (row, col) in place.items():
        titles[(row - 1) * n_cols + col - 1] = f"layer {la}, {pos}"
    fig = make_subplots(rows=n_rows, cols=n_cols, shared_yaxes=True, shared_xaxes=grid, subplot_titles=titles,
                        vertical_spacing=0.14 if grid else 0.3)
    for la, pos in panels:
        row, col = place[(la, pos)]
        for i, method in enumerate(m for m in methods if any(r["method"] == m for r in rows)):
            r = next((x for x in rows if x["method"] == method and x["layer"] == la and x["position"] == pos), None)
            if r is None:
                continue
            coefs = sorted(float(c) for c in r["propensity_by_coefficient"])
            mean = {float(k): v for k, v in r["propensity_by_coefficient"].items()}
            ci = {float(k): v for k, v in r.get("propensity_ci_by_coefficient", {}).items()}
            fig.add_trace(go.Scatter(
                x=coefs, y=[mean[c] for c in coefs], mode="lines+markers", name=method, legendgroup=method,
                showlegend=(row, col) == place[panels[0]], line={"color": colour(method, i)},
                error_y={"type": "data", "symmetric": False,
                         "array": [ci[c][1] - mean[c] if c in ci else None for c in coefs],
                         "arrayminus": [mean[c] - ci[c][0] if c in ci else None for c in coefs]},
                hovertext=[f"method: {method}<br>layer: {la}<br>position: {pos}<br>coefficient: ×{c:g}<br>"
                           f"propensity: {mean[c]:.4f}<br>steerability: {r['steerability']:.4f} "
                           f"[{r['steerability_ci'][0]:.4f}, {r['steerability_ci'][1]:.4f}]<br>anti-steerable: "
                           f"{r['anti_steerable_fraction']:.2f}" for c in coefs], hoverinfo="text"), row=row, col=col)
    # One axis title under the middle of the bottom row (a title per panel overlaps its neighbours' once
    # there are more than two), and one propensity title per row.
    fig.update_xaxes(title_text=COEFFICIENT_AXIS, row=n_rows, col=(n_cols + 1) // 2)
    for row in range(1, n_rows + 1):
        fig.update_yaxes(title_text="propensity (nats/token)", row=row, col=1)
    fig = _layout(fig, f"Steerability towards {target}", where, 480 if n_rows == 1 else 300 * n_rows + 120, (
        "Propensity = log p(target continuation) − log p(other), per token, against the coefficient; the slope is "
        "the steerability. Bars: 95% CI over samples; methods are offset sideways a little so their bars stay apart."))
    return dodge(fig)


def confusion_heatmap(judge: Mapping[str, Any], *, where: str) -> go.Figure:
    """04: the concept judge's held-out confusion matrix (rows: true class, columns: judged), as shares of each row.

    Example:
        >>> confusion_heatmap(result.judge, where="w")
    """
    labels = list(judge["confusion_labels"])
    counts = [[float(x) for x in row] for row in judge["confusion"]]
    shares = [[x / sum(row) if sum(row) else 0.0 for x in row] for row in counts]
    fig = go.Figure(go.Heatmap(
        z=shares, x=labels, y=labels, colorscale="Blues", zmin=0, zmax=1, colorbar={"title": "share of row"},
        text=[[f"{int(c)}" for c in row] for row in counts], texttemplate="%{text}",
        hovertemplate="true: %{y}<br>judged: %{x}<br>share: %{z:.2f}<extra></extra>"))
    fig.update_layout(xaxis_title="judged class", yaxis_title="true class (held-out texts)", yaxis_autorange="reversed")
    by_words = judge.get("accuracy_by_words") or {}
    snippets = (" On snippets of " + ", ".join(f"{k}" for k in by_words) + " words its accuracy is "
                + ", ".join(f"{float(v):.2f}" for v in by_words.values()) + ".") if by_words else ""
    return _layout(fig, f"Concept judge on held-out texts: accuracy {judge['heldout_accuracy']:.2f}", where, 520, (
        "Rows: the true class of each held-out text; columns: the class the judge gave it. Colour: share of the row; "
        f"numbers: texts. A dark diagonal is a judge that can be trusted.{snippets}"))


def score_by_method(pooled: Sequence[Mapping[str, Any]], methods: Sequence[str], *, where: str) -> go.Figure:
    """04: each condition's held-out AxBench score (bootstrap 95% CI), one colour per method, one
    point per (layer, position) on a two-level axis (method, then layer and position); the
    unsteered score is a labelled line (one per (layer, position) where they differ).

    Example:
        >>> score_by_method(summary["pooled"], ["none", *cfg.methods], where="w")
    """
    fig = go.Figure()
    for method in [m for m in methods if m != "none" and any(r["method"] == m for r in pooled)]:
        rs = [r for r in pooled if r["method"] == method]
        fig.add_trace(go.Scatter(
            x=[[method] * len(rs), [f"L{r['layer']} {r['position']}" for r in rs]], y=[r["mean"] for r in rs],
            mode="markers", name=method, marker={"color": colour(method), "size": 9},
            error_y={"type": "data", "symmetric": False, "array": [r["ci"][1] - r["mean"] for r in rs],
                     "arrayminus": [r["mean"] - r["ci"][0] for r in rs]},
            hovertext=[f"method: {method}<br>layer: {r['layer']}<br>position: {r['position']}<br>"
                       f"score: {r['mean']:.4f} [{r['ci'][0]:.4f}, {r['ci'][1]:.4f}]<br>report prompts: "
                       f"{r.get('n_prompts', '?')}" for r in rs], hoverinfo="text"))
    plain = [r for r in pooled if r["method"] == "none"]
    if plain and max(r["mean"] for r in plain) - min(r["mean"] for r in plain) < 1e-9:
        _hline(fig, plain[0]["mean"], f"unsteered: {plain[0]['mean']:.3f}")  # the same completions at every position
    else:
        for r in plain:
            _hline(fig, r["mean"], f"unsteered (layer {r['layer']}, {r['position']}): {r['mean']:.3f}")
    fig.update_layout(xaxis_title="method, then layer and position",
                      yaxis_title="held-out AxBench score (0-1; bars: 95% CI)", showlegend=False)
    return _layout(fig, "Held-out AxBench score per method", where, 560, (
        "Pooled over targets; each condition's coefficient is chosen on half of the prompts and scored on the other "
        "half (bars: 95% CI). Above the dotted unsteered line = steers without losing fluency and relevance; "
        "overlapping bars are not a ranking."))


# Above this perplexity ratio the text is broken; matched_damage's damage axis stops there.
DAMAGE_CEILING = 1000.0


def matched_damage(matched_rows: Sequence[Mapping[str, Any]], methods: Sequence[str], *, target: str,
                   where: str) -> go.Figure:
    """04: steering at equal damage. Left: each method's damage curve (perplexity ratio on general
    text against the coefficient, log-log) with the matched level as a line; right: the propensity
    shift (nats/token) at the coefficient where the curve reaches it, with a bootstrap 95% CI, one
    point per (layer, position). A hollow marker: the level was not reached on the grid (a lower bound).

    Example:
        >>> matched_damage(result.matched, cfg.methods, target="fantasy", where="w")
    """
    rows = [r for r in matched_rows if r["target"] == target]
    fig = make_subplots(rows=1, cols=2, column_widths=[0.45, 0.55], horizontal_spacing=0.1,
                        subplot_titles=["damage against coefficient", "propensity shift at matched damage"])
    shown = [m for m in methods if any(r["method"] == m for r in rows)]
    level = rows[0]["level"] if rows else None
    cells = sorted({(r["layer"], r["position"]) for r in rows})
    # One cell: a line and a circle; further cells: their own dash and symbol, side by side on the right.
    for i, method in enumerate(shown):
        for r in (r for r in rows if r["method"] == method):
            k = cells.index((r["layer"], r["position"]))
            fig.add_trace(go.Scatter(
                x=r["grid"], y=r["damage"], mode="lines+markers", name=method, legendgroup=method,
                showlegend=k == 0, line={"color": colour(method, i), "dash": CELL_DASHES[k % len(CELL_DASHES)]},
                hovertemplate=f"<b>{method}</b> (layer {r['layer']}, {r['position']})<br>coefficient: ×%{{x}}"
                              "<br>perplexity ratio: %{y:.3g}<extra></extra>"), row=1, col=1)
            _method_point(fig, method=method, i=i, k=k, n_cells=len(cells), mean=r["mean"], ci=r["ci"],
                          hollow=r["status"] != "interpolated", row=1, col=2,
                          hover=(f"method: {method}<br>layer: {r['layer']}<br>position: {r['position']}<br>coefficient: "
                                 f"×{r['coefficient']:.3g} ({r['status']})<br>shift: {r['mean']:.4f} "
                                 f"[{r['ci'][0]:.4f}, {r['ci'][1]:.4f}]<br>story pairs: {len(r['shifts'])}"))
    if len(cells) > 1:  # a legend for the cells: line dash on the left, marker symbol on the right
        _cells_legend(fig, cells, row=1, col=2)
    _method_axis(fig, shown, row=1, col=2)
    if level is not None:
        _hline(fig, level, f"matched level {level:g}", log_y=True, row=1, col=1)
    random = [r for r in rows if r["method"] == "random"]
    if len(random) == 1:
        _hline(fig, random[0]["mean"], f"random: {random[0]['mean']:.3f}", row=1, col=2)
    else:
        fig.add_hline(y=0, row=1, col=2, **_REFERENCE)
    fig.update_xaxes(title_text=COEFFICIENT_AXIS, type="log", row=1, col=1)
    fig.update_yaxes(title_text="perplexity ratio on general text", type="log", row=1, col=1)
    fig.update_yaxes(title_text="propensity shift (nats/token)", row=1, col=2)
    damages = [d for r in rows for d in r["damage"] if d is not None and math.isfinite(d) and d > 0]
    cut = ""
    if damages and max(damages) > DAMAGE_CEILING:  # broken text: keep the level's region readable
        fig.update_yaxes(range=[math.log10(min(min(damages), 1.0) * 0.9), math.log10(DAMAGE_CEILING)], row=1, col=1)
        cut = f"; the damage axis stops at {DAMAGE_CEILING:,.0f} (broken text; the largest ratio here is {max(damages):.2g})"
    where_cells = f"{len(cells)} cell{'s' if len(cells) != 1 else ''}"
    _layout(fig, f"Steering at matched damage towards {target}", where, 600, (
        f"Left: damage of each vector on held-out general text ({where_cells}; one dash per cell{cut}). Right: how far "
        "the propensity (log p(target continuation) − log p(other)) moves at the coefficient where that damage "
        "reaches the level, one point per method" + (" and cell, cells side by side by symbol" if len(cells) > 1
                                                     else "")
        + "; bars: 95% CI over story pairs; hollow: the level was not reached (a lower bound)."))
    return fig.update_layout(legend={"y": -0.3})  # below the right panel's slanted method names
