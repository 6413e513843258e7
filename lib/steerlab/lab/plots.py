"""The figures of notebooks 01-03: values by layer, heatmaps, coefficient sweeps, steerability curves.

How they look (colours, titles, captions, log axes) is :mod:`steerlab.lab.style`; notebook 04's figures
and the answer's are :mod:`steerlab.lab.compare_plots`. ``context`` and ``setup_notebook`` are
re-exported here so a notebook needs one import.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from ..sets import UNIT_LABEL
from .style import LAYER_AXIS, REFERENCE, context, finish, hline, line_series, setup_notebook

__all__ = ["COEFFICIENT_AXIS", "context", "heatmap_pair", "layer_lines", "layer_panels", "setup_notebook",
           "sweep_panels"]


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
        fig.add_trace(line_series(layers, values, name, i, xname=xaxis, yname=yaxis,
                            interval=(intervals or {}).get(name)))
    for label, y in (references or {}).items():
        hline(fig, y, label, log_y=log_y)
    fig.update_layout(xaxis_title=xaxis, yaxis_title=yaxis)
    if len(layers) <= 12 and all(isinstance(la, int) for la in layers):
        fig.update_xaxes(tickvals=list(layers))  # no "layer 9.5" ticks between a few layers
    if log_y:
        fig.update_yaxes(type="log")
    if not caption:
        refs = f"; dotted: {', '.join(references)}" if references else ""
        caption = f"{yaxis.capitalize()} at each {xaxis}, one line per series ({', '.join(series)}){refs}."
    return finish(fig, title, where, 420, caption)


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
            trace = line_series(layers, values, name, names.index(name), xname=xaxis, yname=yname, showlegend=first)
            fig.add_trace(trace, row=row, col=1)
        fig.update_yaxes(title_text=yname, type="log" if yname in log_y else "linear", row=row, col=1)
    fig.update_xaxes(title_text=xaxis, row=len(panels), col=1)
    caption = caption or (f"One panel per quantity ({'; '.join(panels)}) over the {xaxis}; a series keeps its colour "
                          "in every panel.")
    return finish(fig, title, where, 260 * len(panels) + 140, caption)


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
    return finish(fig, title, where, 480, caption)


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
            trace = line_series(coefficients, series[position], position, i, xname=COEFFICIENT_AXIS, yname=yname,
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
    fig.add_vline(x=0, annotation_text="unsteered (×0)", annotation_position="top right", **REFERENCE)
    if caption is None and concept is not None:
        caption = (f"The {method} vector added at each coefficient, one line per position rule. Top: the concept "
                   f"judge's probability that a completion is {target} (not the steered model's), bars 95% CI over "
                   "completions; middle: the share of target-genre words (secondary: it misses text that moves in "
                   "tone or plot without those words); bottom: degradation. A useful coefficient raises the top "
                   "curve before the bottom one climbs.")
    caption = caption or (f"The {method} vector added at each coefficient, one line per position rule. A useful "
                          "coefficient raises the top curve (more target words) before the bottom one climbs "
                          "(degraded text).")
    return finish(fig, title, f"{method} vector · {where}", 780 if concept is not None else 620, caption)
