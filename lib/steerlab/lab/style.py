"""How every figure looks: one colour per condition, titles that fit, captions, readable log axes,
labelled reference lines. The figures themselves are in :mod:`steerlab.lab.plots` (notebooks 01-03)
and :mod:`steerlab.lab.compare_plots` (notebook 04 and the answer).

- one fixed colour per condition across the suite (:data:`CONDITION_COLOURS`, derived from
  :data:`steerlab.study.conditions.CONDITIONS`: the constructions, the prompting baselines and
  ``none`` for the unsteered control);
- short titles that fit a 1024 px page (long ones wrap), the model and run as a subtitle
  (:func:`context`), and a one-line caption that says how to read the figure (kept in
  ``layout.meta["caption"]``, shown under the figure by the run report: :func:`caption_of`);
- reference values (chance, a damage threshold, zero) are labelled lines, not data series;
- a line that lies exactly on another is dashed and named in the legend (``≡ other``);
  where many series share the same x values their points are offset sideways a little;
- log axes are labelled with whole numbers (1, 2, 5, 10, 20, ...), not plotly's digit-only minor labels.
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

from ..study.conditions import CONDITIONS, UNSTEERED

__all__ = [
    "CONDITION_COLOURS",
    "LAYER_AXIS",
    "REFERENCE",
    "TITLE_CHARS",
    "caption_of",
    "colour",
    "context",
    "dodge",
    "finish",
    "hline",
    "line_series",
    "log_ticks",
    "setup_notebook",
    "subtitle_of",
    "title_of",
    "vline",
]

# Colour-blind-safe (Okabe-Ito and Tol): one per condition of the study, the unsteered control black.
_PALETTE: dict[str, str] = {
    "raw": "#E69F00", "mean_centred": "#0072B2", "isolated": "#009E73", "counterbalanced": "#CC79A7",
    "prompt_pair": "#D55E00", "word_pair": "#882255", "random": "#999999", "bias": "#56B4E9",
    "bias_ablated": "#DDCC77", "pca_diff": "#44AA99", "pca_center": "#661100", "probe": "#332288",
    "prompting": "#117733", "prompting_steered": "#AA4499", UNSTEERED: "#000000",
}
_SPARE = ("#88CCEE", "#999933", "#CC6677", "#AA4466", "#4477AA", "#228833")
CONDITION_COLOURS: dict[str, str] = {
    name: _PALETTE.get(name, _SPARE[i % len(_SPARE)]) for i, name in enumerate(n for n in CONDITIONS)}
"""One colour per condition of :data:`steerlab.study.conditions.CONDITIONS` (its keys are that list; a test checks)."""
# Series that are not constructions (01's token groups), in a fixed order.
_OTHER_COLOURS = ("#332288", "#117733", "#AA4499", "#44AA99", "#661100", "#888888")
LAYER_AXIS = "residual layer (0 = embeddings)"
REFERENCE = {"line_dash": "dot", "line_color": "#555555", "line_width": 1.5}


def colour(name: str, index: int = 0) -> str:
    """The suite's colour for a condition; series that are not conditions (01's token groups) by ``index``.

    Example:
        >>> colour("mean_centred") == CONDITION_COLOURS["mean_centred"]
        True
    """
    return CONDITION_COLOURS.get(_SAME_COLOUR.get(name, name), _OTHER_COLOURS[index % len(_OTHER_COLOURS)])


# Notebooks 01 and 02 record "centred" (activations less the layer mean) beside "raw": drawn as mean_centred.
_SAME_COLOUR = {"centred": "mean_centred"}


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


def finish(fig: go.Figure, title: str, where: str, height: int, caption: str | None = None) -> go.Figure:
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
    notes: dict[tuple[Any, str], list[str]] = {}
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
                notes.setdefault((tuple(sorted(at.items())), other), []).append(trace.name)
    # one note per point: several lines on the same one are named together, two names a line (never overprinted)
    for (at_items, other), names in notes.items():
        rows = [", ".join(names[i:i + 2]) for i in range(0, len(names), 2)]
        fig.add_annotation(**dict(at_items), text="<br>".join([*rows[:-1], f"{rows[-1]} ≡ {other} here"]),
                           showarrow=False, xanchor="right", yanchor="bottom", align="right", font={"size": 11})


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


def hline(fig: go.Figure, y: float, label: str, *, log_y: bool = False, **where: Any) -> None:
    if not log_y:
        fig.add_hline(y=y, annotation_text=label, annotation_position="top left", **REFERENCE, **where)
        return
    fig.add_hline(y=y, **REFERENCE, **where)
    xref, yref = "x", "y"
    if where:
        panel = fig.get_subplot(where["row"], where["col"])
        xref, yref = (axis.plotly_name.replace("axis", "") for axis in (panel.xaxis, panel.yaxis))
    fig.add_annotation(x=0, xref=f"{xref} domain", y=_annotation_at(y, log_y), yref=yref, text=label,
                       showarrow=False, xanchor="left", yanchor="bottom")


def vline(fig: go.Figure, x: float, label: str, *, log_x: bool = False) -> None:
    fig.add_shape(type="line", x0=x, x1=x, xref="x", y0=0, y1=1, yref="y domain",
                  line={"dash": REFERENCE["line_dash"], "color": REFERENCE["line_color"],
                        "width": REFERENCE["line_width"]})
    fig.add_annotation(x=_annotation_at(x, log_x), xref="x", y=1, yref="y domain", text=label,
                       showarrow=False, xanchor="left", yanchor="bottom")


def _floats(values: Sequence[float] | torch.Tensor) -> list[float | None]:
    out: list[float | None] = []
    for v in (values.tolist() if isinstance(values, torch.Tensor) else values):
        f = float(v) if v is not None else math.nan
        out.append(f if math.isfinite(f) else None)
    return out


def line_series(x: Sequence[Any], y: Sequence[float] | torch.Tensor, name: str, index: int, *, xname: str, yname: str,
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


