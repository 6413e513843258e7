"""Every figure of the notebooks, built one way so none can be misread.

- one fixed colour per construction across the suite (:data:`METHOD_COLOURS`, keyed by
  :mod:`steerlab.constructions` names and the comparison's ``bias_ablated``, plus ``none`` for
  the unsteered control);
- titles name the model and the run (:func:`context`);
- reference values (chance, a damage threshold, zero) are labelled lines, not data series;
- one quantity per y axis: two quantities get two panels;
- hover text names each field; intervals are drawn where a number has one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from ..study.compare import frontier

__all__ = [
    "LAYER_AXIS",
    "METHOD_COLOURS",
    "colour",
    "confusion_heatmap",
    "context",
    "effect_vs_damage",
    "heatmap_pair",
    "layer_lines",
    "layer_panels",
    "score_by_method",
    "setup_notebook",
    "steerability_curves",
    "sweep_panels",
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
    """Plotly output that renders live in JupyterLab and offline in an HTML export.

    The bundle carries plotly's JSON (JupyterLab) and HTML; the HTML renderer embeds
    plotly.js once, inline, in the output of the cell that calls this, so an nbconvert
    export draws every figure with no network (no CDN, no MathJax).
    """
    import plotly.io as pio
    from plotly.io._base_renderers import NotebookRenderer

    class OfflineNotebookRenderer(NotebookRenderer):
        def to_mimebundle(self, fig_dict: Any) -> dict[str, str]:
            html = pio.to_html(fig_dict, include_plotlyjs=False, include_mathjax=False, full_html=False,
                               default_width="100%", default_height=525, validate=False)
            return {"text/html": html}

    pio.renderers["steerlab_offline"] = OfflineNotebookRenderer()
    pio.renderers.default = "plotly_mimetype+steerlab_offline"


def _titled(title: str, where: str) -> dict[str, Any]:
    return {"text": f"{title}<br><sup>{where}</sup>"}


def _layout(fig: go.Figure, title: str, where: str, height: int) -> go.Figure:
    fig.update_layout(title=_titled(title, where), template="plotly_white", height=height,
                      legend={"orientation": "h", "y": -0.2}, margin={"t": 90})
    return fig


def _hline(fig: go.Figure, y: float, label: str, **where: Any) -> None:
    fig.add_hline(y=y, annotation_text=label, annotation_position="top left", **_REFERENCE, **where)


def _vline(fig: go.Figure, x: float, label: str, *, log_x: bool = False) -> None:
    # On a log axis plotly places annotations in log10 units but shapes in data units.
    fig.add_shape(type="line", x0=x, x1=x, xref="x", y0=0, y1=1, yref="y domain",
                  line={"dash": _REFERENCE["line_dash"], "color": _REFERENCE["line_color"],
                        "width": _REFERENCE["line_width"]})
    fig.add_annotation(x=math.log10(x) if log_x else x, xref="x", y=1, yref="y domain", text=label,
                       showarrow=False, xanchor="left", yanchor="bottom")


def _floats(values: Sequence[float] | torch.Tensor) -> list[float | None]:
    out: list[float | None] = []
    for v in (values.tolist() if isinstance(values, torch.Tensor) else values):
        f = float(v) if v is not None else math.nan
        out.append(f if math.isfinite(f) else None)
    return out


def _line(x: Sequence[Any], y: Sequence[float] | torch.Tensor, name: str, index: int, *, xname: str, yname: str,
          interval: tuple[Sequence[float], Sequence[float]] | None = None, dash: str | None = None,
          showlegend: bool = True, legendgroup: str | None = None) -> go.Scatter:
    ys = _floats(y)
    error = None
    if interval is not None:
        lo, hi = _floats(interval[0]), _floats(interval[1])
        error = {"type": "data", "symmetric": False,
                 "array": [h - v if h is not None and v is not None else None for v, h in zip(ys, hi)],
                 "arrayminus": [v - lo_ if lo_ is not None and v is not None else None for v, lo_ in zip(ys, lo)]}
    return go.Scatter(x=list(x), y=ys, mode="lines+markers", name=name, error_y=error,
                      line={"color": colour(name.split(":")[0].strip(), index), "dash": dash},
                      legendgroup=legendgroup or name, showlegend=showlegend,
                      hovertemplate=f"<b>{name}</b><br>{xname}: %{{x}}<br>{yname}: %{{y:.4g}}<extra></extra>")


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
) -> go.Figure:
    """One line per named series (one quantity, ``yaxis``) over layers; labelled reference lines.

    Example:
        >>> layer_lines([0, 1], {"raw": [0.2, 0.4]}, title="Accuracy", yaxis="accuracy",
        ...             where="model · run x", references={"chance (1/7)": 1 / 7})
    """
    fig = go.Figure()
    for i, (name, values) in enumerate(series.items()):
        fig.add_trace(_line(layers, values, name, i, xname=xaxis, yname=yaxis,
                            interval=(intervals or {}).get(name)))
    for label, y in (references or {}).items():
        _hline(fig, y, label)
    fig.update_layout(xaxis_title=xaxis, yaxis_title=yaxis)
    if len(layers) <= 12 and all(isinstance(la, int) for la in layers):
        fig.update_xaxes(tickvals=list(layers))  # no "layer 9.5" ticks between a few layers
    if log_y:
        fig.update_yaxes(type="log")
    return _layout(fig, title, where, 420)


def layer_panels(
    layers: Sequence[int],
    panels: Mapping[str, Mapping[str, Sequence[float] | torch.Tensor]],
    *,
    title: str,
    where: str,
    log_y: Sequence[str] = (),
    xaxis: str = LAYER_AXIS,
) -> go.Figure:
    """One panel per quantity (``panels``: y-axis title -> series), stacked over shared layers.

    A series name keeps its colour in every panel.
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
    return _layout(fig, title, where, 260 * len(panels) + 140)


def heatmap_pair(
    left: torch.Tensor, right: torch.Tensor, labels: Sequence[str], *, titles: tuple[str, str], title: str,
    where: str, quantity: str = "cosine",
) -> go.Figure:
    """Two square heatmaps side by side on one colour scale (-1..1)."""
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
    return _layout(fig, title, where, 480)


def sweep_panels(
    coefficients: Sequence[float],
    rates: Mapping[str, Sequence[float]],
    perplexities: Mapping[str, Sequence[float]],
    *,
    method: str,
    title: str,
    where: str,
) -> go.Figure:
    """03's sweep: target-vocabulary rate (top) and perplexity on a log axis (bottom) over the
    coefficient, one line per position rule (dash), in the construction's colour."""
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.12, subplot_titles=(
        "target-vocabulary rate of the completions (fraction of words)",
        "perplexity of the completions under the unsteered model (log axis)"))
    xname = "coefficient (× typical activation norm)"
    dashes = ("solid", "dash", "dot", "dashdot", "longdash")
    for i, position in enumerate(rates):
        for row, (yname, values) in enumerate(
                (("target-vocabulary rate", rates[position]), ("perplexity", perplexities[position])), start=1):
            trace = _line(coefficients, values, f"{method}: {position}", i, xname=xname, yname=yname,
                          dash=dashes[i % len(dashes)], showlegend=row == 1, legendgroup=position)
            fig.add_trace(trace, row=row, col=1)
    fig.update_yaxes(title_text="vocabulary rate", row=1, col=1)
    fig.update_yaxes(title_text="perplexity", type="log", row=2, col=1)
    fig.update_xaxes(title_text=xname, row=2, col=1)
    fig.add_vline(x=0, annotation_text="unsteered (×0)", annotation_position="top right", **_REFERENCE)
    return _layout(fig, title, where, 620)


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


def effect_vs_damage(rows: Sequence[Mapping[str, Any]], methods: Sequence[str], *, threshold: float, target: str,
                     where: str) -> go.Figure:
    """04: concept effect (judge's P(target) − unsteered, bootstrap 95% CI) against damage for one
    target, one colour per method; the damage threshold is a labelled line."""
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
    fig.update_layout(xaxis_title="perplexity ratio on general text (damage, log scale)", xaxis_type="log",
                      yaxis_title="concept effect (bars: 95% CI)")
    return _layout(fig, f"Steering towards {target}: concept effect against damage (lines: each method's frontier, "
                        "the best effect at each damage level; points: every condition)", where, 520)


def steerability_curves(steer_rows: Sequence[Mapping[str, Any]], methods: Sequence[str], *, target: str,
                        where: str) -> go.Figure:
    """04: mean propensity (log p(target continuation) − log p(other), nats/token) against the
    coefficient, one line per method (bars: bootstrap 95% CI over samples), one panel per
    (layer, position); the slope is the steerability."""
    rows = [r for r in steer_rows if r["target"] == target]
    panels = sorted({(r["layer"], r["position"]) for r in rows})
    fig = make_subplots(rows=1, cols=max(1, len(panels)), shared_yaxes=True,
                        subplot_titles=[f"layer {la}, {pos}" for la, pos in panels])
    for col, (la, pos) in enumerate(panels, start=1):
        for i, method in enumerate(m for m in methods if any(r["method"] == m for r in rows)):
            r = next((x for x in rows if x["method"] == method and x["layer"] == la and x["position"] == pos), None)
            if r is None:
                continue
            coefs = sorted(float(c) for c in r["propensity_by_coefficient"])
            mean = {float(k): v for k, v in r["propensity_by_coefficient"].items()}
            ci = {float(k): v for k, v in r.get("propensity_ci_by_coefficient", {}).items()}
            fig.add_trace(go.Scatter(
                x=coefs, y=[mean[c] for c in coefs], mode="lines+markers", name=method, legendgroup=method,
                showlegend=col == 1, line={"color": colour(method, i)},
                error_y={"type": "data", "symmetric": False,
                         "array": [ci[c][1] - mean[c] if c in ci else None for c in coefs],
                         "arrayminus": [mean[c] - ci[c][0] if c in ci else None for c in coefs]},
                hovertext=[f"method: {method}<br>layer: {la}<br>position: {pos}<br>coefficient: ×{c:g}<br>"
                           f"propensity: {mean[c]:.4f}<br>steerability: {r['steerability']:.4f} "
                           f"[{r['steerability_ci'][0]:.4f}, {r['steerability_ci'][1]:.4f}]<br>anti-steerable: "
                           f"{r['anti_steerable_fraction']:.2f}" for c in coefs], hoverinfo="text"), row=1, col=col)
        fig.update_xaxes(title_text="coefficient (× typical norm)", row=1, col=col)
    fig.update_yaxes(title_text="propensity (nats/token)", row=1, col=1)
    return _layout(fig, f"Steerability towards {target}: propensity against coefficient (slope = steerability)",
                   where, 460)


def confusion_heatmap(judge: Mapping[str, Any], *, where: str) -> go.Figure:
    """04: the concept judge's held-out confusion matrix (rows: true class, columns: judged), as shares of each row."""
    labels = list(judge["confusion_labels"])
    counts = [[float(x) for x in row] for row in judge["confusion"]]
    shares = [[x / sum(row) if sum(row) else 0.0 for x in row] for row in counts]
    fig = go.Figure(go.Heatmap(
        z=shares, x=labels, y=labels, colorscale="Blues", zmin=0, zmax=1, colorbar={"title": "share of row"},
        text=[[f"{int(c)}" for c in row] for row in counts], texttemplate="%{text}",
        hovertemplate="true: %{y}<br>judged: %{x}<br>share: %{z:.2f}<extra></extra>"))
    fig.update_layout(xaxis_title="judged class", yaxis_title="true class (held-out texts)", yaxis_autorange="reversed")
    return _layout(fig, f"Concept judge on held-out texts: accuracy {judge['heldout_accuracy']:.2f}", where, 520)


def score_by_method(pooled: Sequence[Mapping[str, Any]], methods: Sequence[str], *, where: str) -> go.Figure:
    """04: each condition's held-out AxBench score (bootstrap 95% CI), one colour per method, one
    point per (layer, position) on a two-level axis (method, then layer and position); the
    unsteered score is a labelled line (one per (layer, position) where they differ)."""
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
    return _layout(fig, "Held-out AxBench score per method, pooled over targets (coefficient chosen on the other "
                        "half of the prompts)", where, 560)
