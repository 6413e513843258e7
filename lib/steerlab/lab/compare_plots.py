"""The figures of notebook 04 and of the answer: effects at matched damage, steerability, held-out scores,
damage curves, and the contrasts themselves.

Each compares conditions the way the contrasts do, or says plainly that it does not: a figure of
per-condition means with unpaired intervals is captioned as such, and the paired differences the
contrasts test have figures of their own. How they look is :mod:`steerlab.lab.style`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..study.answer import MEASURE_TITLES, classify
from ..study.compare import frontier
from ..study.conditions import shown_once
from .plots import COEFFICIENT_AXIS
from .style import REFERENCE, colour, dodge, finish, hline, vline

__all__ = ["ANSWER_CONTRASTS", "DAMAGE_AXIS", "DAMAGE_CEILING", "EFFECT_AXIS", "VERDICT_COLOURS", "answer_forest",
           "answer_targets", "confusion_heatmap", "effect_at_matched",
           "effect_vs_damage", "matched_damage", "score_by_condition", "steerability_curves"]


def _row_hover(r: Mapping[str, Any]) -> str:
    ci = r.get("concept_delta_ci") or [math.nan, math.nan]
    return (f"target: {r.get('target', '?')}<br>condition: {r['condition']}<br>layer: {r['layer']}<br>"
            f"coefficient: ×{r['coefficient']:g}<br>position: {r['position']}<br>"
            f"concept effect: {_fmt(r['concept_delta'])} [{_fmt(ci[0])}, {_fmt(ci[1])}]<br>"
            f"AxBench score: {_fmt(r.get('score'))}<br>perplexity ratio: {_fmt(r['perplexity_ratio'])}<br>"
            f"KL: {_fmt(r['kl'])} nats")


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, (int, float)) and math.isfinite(v) else "n/a"


def _present(rows: Sequence[Mapping[str, Any]], conditions: Sequence[str]) -> list[str]:
    return [m for m in ["none", *conditions] if any(r["condition"] == m for r in rows)]


CELL_DASHES = ("solid", "dot", "dash", "dashdot", "longdash", "longdashdot")
CELL_SYMBOLS = ("circle", "diamond", "square", "triangle-up", "cross", "star")
"""One line dash and one marker symbol per (layer, position) cell: six of each, so a full run's
3 layers x 2 positions never share a style."""


def _condition_point(fig: go.Figure, *, condition: str, i: int, k: int, n_cells: int, mean: float,
                  ci: Sequence[float], hover: str, hollow: bool = False, **where: Any) -> None:
    """One condition's value in one cell on a condition axis: condition ``i`` at x = i, its cells ``k`` side by side."""
    fig.add_trace(go.Scatter(
        x=[i + (k - (n_cells - 1) / 2) * 0.6 / max(n_cells, 1)], y=[mean], mode="markers", name=condition,
        legendgroup=condition, showlegend=False,
        marker={"color": colour(condition, i), "size": 9,
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


def _condition_axis(fig: go.Figure, shown: Sequence[str], **where: Any) -> None:
    fig.update_xaxes(tickvals=list(range(len(shown))), ticktext=list(shown), tickangle=-35,
                     range=[-0.6, len(shown) - 0.4], **where)


DAMAGE_AXIS = "damage: perplexity ratio on general text (steered / unsteered, log axis)"
EFFECT_AXIS = "concept effect, ΔP(target) (bars: 95% CI)"


def effect_vs_damage(rows: Sequence[Mapping[str, Any]], conditions: Sequence[str], *, threshold: float, target: str,
                     where: str) -> go.Figure:
    """04: concept effect (judge's P(target) − unsteered, bootstrap 95% CI) against damage for one
    target, one colour per condition; the damage threshold is a labelled line.

    Example:
        >>> effect_vs_damage(result.rows, cfg.constructions, threshold=1.5, target="fantasy", where="w")
    """
    rows = [r for r in rows if r.get("target", target) == target]
    fig = go.Figure()
    for condition in _present(rows, conditions):
        rs = [r for r in rows if r["condition"] == condition]
        ys = [r["concept_delta"] for r in rs]
        fig.add_trace(go.Scatter(
            x=[r["perplexity_ratio"] for r in rs], y=ys, mode="markers", legendgroup=condition, showlegend=False,
            name="none (unsteered)" if condition == "none" else condition,
            marker={"color": colour(condition), "size": 7, "opacity": 0.45},
            hovertext=[_row_hover(r) for r in rs], hoverinfo="text",
            error_y={"type": "data", "symmetric": False, "thickness": 1,
                     "array": [r["concept_delta_ci"][1] - r["concept_delta"] for r in rs],
                     "arrayminus": [r["concept_delta"] - r["concept_delta_ci"][0] for r in rs]}))
        # The Pareto frontier: the best effect reached at each damage level (never sweep order).
        front = frontier(rs, condition)
        fig.add_trace(go.Scatter(
            x=[p["damage"] for p in front], y=[p["effect"] for p in front], mode="lines+markers",
            line={"color": colour(condition), "shape": "hv", "width": 2.5}, marker={"color": colour(condition), "size": 9},
            name="none (unsteered)" if condition == "none" else condition, legendgroup=condition,
            hovertext=[_row_hover(p["row"]) for p in front], hoverinfo="text"))
    vline(fig, threshold, f"damage threshold: perplexity ratio {threshold:g}", log_x=True)
    hline(fig, 0, "no effect")
    fig.update_layout(xaxis_title=DAMAGE_AXIS, xaxis_type="log", yaxis_title=EFFECT_AXIS)
    return finish(fig, f"Concept effect against damage: {target}", where, 540, (
        "Lines: each condition's frontier, the best effect it reaches at each damage level; faint points: every "
        "condition (layer, position, coefficient), bars 95% CI. Up = more of the target than unsteered, right = "
        "more damage to general text; the dotted line is the damage threshold."))


def effect_at_matched(rows: Sequence[Mapping[str, Any]], conditions: Sequence[str], *, level: float, target: str,
                      where: str) -> go.Figure:
    """04 with ``generate_at="matched"``: the judge's concept effect (P(target) − unsteered, bootstrap 95% CI)
    of each condition, every vector generating at the coefficient where its damage on general text reaches
    ``level``, so the conditions are compared at equal damage; one point per (layer, position) cell, side
    by side. (:func:`effect_vs_damage` is the view for a coefficient grid.)

    Example:
        >>> effect_at_matched(result.rows, cfg.constructions, level=1.25, target="fantasy", where="w")
    """
    rows = [r for r in rows if r.get("target", target) == target and r["condition"] != "none"]
    shown = [m for m in _present(rows, conditions) if m != "none"]
    cells = sorted({(r["layer"], r["position"]) for r in rows})
    fig = go.Figure()
    for i, condition in enumerate(shown):
        for r in (r for r in rows if r["condition"] == condition):
            _condition_point(fig, condition=condition, i=i, k=cells.index((r["layer"], r["position"])), n_cells=len(cells),
                          mean=r["concept_delta"], ci=r["concept_delta_ci"], hover=_row_hover(r))
    if len(cells) > 1:
        _cells_legend(fig, cells)
    _condition_axis(fig, shown)
    hline(fig, 0, "unsteered")
    fig.update_layout(yaxis_title=EFFECT_AXIS, showlegend=len(cells) > 1)
    ratios = [r["perplexity_ratio"] for r in rows if isinstance(r.get("perplexity_ratio"), (int, float))
              and math.isfinite(r["perplexity_ratio"])]
    reached = (f" (measured at the chosen coefficients: {min(ratios):.3g}-{max(ratios):.3g})" if ratios else "")
    finish(fig, f"Concept effect at matched damage: {target}", where, 520, (
        f"Each vector generates at the coefficient where its perplexity ratio on general text reaches {level:g}"
        f"{reached}, so the conditions are compared at equal damage. Up = more of the target than unsteered, by "
        "the judge; bars: 95% CI" + ("; cells side by side by symbol." if len(cells) > 1 else ".")))
    return fig.update_layout(legend={"y": -0.3})  # below the slanted condition names


def steerability_curves(steer_rows: Sequence[Mapping[str, Any]], conditions: Sequence[str], *, target: str,
                        where: str) -> go.Figure:
    """04: mean propensity (log p(target continuation) − log p(other), nats/token) against the
    coefficient, one line per condition (bars: bootstrap 95% CI over samples), one panel per
    (layer, position); the slope is the steerability. Methods are offset sideways a little
    (:func:`dodge`) so their error bars do not pile into one band.

    Example:
        >>> steerability_curves(result.steerability, cfg.constructions, target="fantasy", where="w")
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
        for i, condition in enumerate(m for m in conditions if any(r["condition"] == m for r in rows)):
            r = next((x for x in rows if x["condition"] == condition and x["layer"] == la and x["position"] == pos), None)
            if r is None:
                continue
            coefs = sorted(float(c) for c in r["propensity_by_coefficient"])
            mean = {float(k): v for k, v in r["propensity_by_coefficient"].items()}
            ci = {float(k): v for k, v in r.get("propensity_ci_by_coefficient", {}).items()}
            fig.add_trace(go.Scatter(
                x=coefs, y=[mean[c] for c in coefs], mode="lines+markers", name=condition, legendgroup=condition,
                showlegend=(row, col) == place[panels[0]], line={"color": colour(condition, i)},
                error_y={"type": "data", "symmetric": False,
                         "array": [ci[c][1] - mean[c] if c in ci else None for c in coefs],
                         "arrayminus": [mean[c] - ci[c][0] if c in ci else None for c in coefs]},
                hovertext=[f"condition: {condition}<br>layer: {la}<br>position: {pos}<br>coefficient: ×{c:g}<br>"
                           f"propensity: {mean[c]:.4f}<br>steerability: {r['steerability']:.4f} "
                           f"[{r['steerability_ci'][0]:.4f}, {r['steerability_ci'][1]:.4f}]<br>anti-steerable: "
                           f"{r['anti_steerable_fraction']:.2f}" for c in coefs], hoverinfo="text"), row=row, col=col)
    # One axis title under the middle of the bottom row (a title per panel overlaps its neighbours' once
    # there are more than two), and one propensity title per row.
    fig.update_xaxes(title_text=COEFFICIENT_AXIS, row=n_rows, col=(n_cols + 1) // 2)
    for row in range(1, n_rows + 1):
        fig.update_yaxes(title_text="propensity (nats/token)", row=row, col=1)
    fig = finish(fig, f"Steerability towards {target}", where, 480 if n_rows == 1 else 300 * n_rows + 120, (
        "Propensity = log p(target continuation) − log p(other), per token, against the coefficient; the slope is "
        "the steerability. Bars: 95% CI over samples; conditions are offset sideways a little so their bars stay apart."))
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
    return finish(fig, f"Concept judge on held-out texts: accuracy {judge['heldout_accuracy']:.2f}", where, 520, (
        "Rows: the true class of each held-out text; columns: the class the judge gave it. Colour: share of the row; "
        f"numbers: texts. A dark diagonal is a judge that can be trusted.{snippets}"))


def score_by_condition(pooled: Sequence[Mapping[str, Any]], conditions: Sequence[str], *, where: str) -> go.Figure:
    """04: each condition's held-out AxBench score (bootstrap 95% CI), one colour per condition, one
    point per (layer, position) on a two-level axis (condition, then layer and position); the
    unsteered score is a labelled line (one per (layer, position) where they differ).

    Example:
        >>> score_by_condition(summary["pooled"], ["none", *cfg.constructions], where="w")
    """
    fig = go.Figure()
    pooled = shown_once(pooled)  # prompting has no layer or position: once
    for condition in [m for m in conditions if m != "none" and any(r["condition"] == m for r in pooled)]:
        rs = [r for r in pooled if r["condition"] == condition]
        fig.add_trace(go.Scatter(
            x=[[condition] * len(rs), [f"L{r['layer']} {r['position']}" for r in rs]], y=[r["mean"] for r in rs],
            mode="markers", name=condition, marker={"color": colour(condition), "size": 9},
            error_y={"type": "data", "symmetric": False, "array": [r["ci"][1] - r["mean"] for r in rs],
                     "arrayminus": [r["mean"] - r["ci"][0] for r in rs]},
            hovertext=[f"condition: {condition}<br>layer: {r['layer']}<br>position: {r['position']}<br>"
                       f"score: {r['mean']:.4f} [{r['ci'][0]:.4f}, {r['ci'][1]:.4f}]<br>report prompts: "
                       f"{r.get('n_prompts', '?')}" for r in rs], hoverinfo="text"))
    plain = [r for r in pooled if r["condition"] == "none"]
    if plain and max(r["mean"] for r in plain) - min(r["mean"] for r in plain) < 1e-9:
        hline(fig, plain[0]["mean"], f"unsteered: {plain[0]['mean']:.3f}")  # the same completions at every position
    else:
        for r in plain:
            hline(fig, r["mean"], f"unsteered (layer {r['layer']}, {r['position']}): {r['mean']:.3f}")
    fig.update_layout(xaxis_title="condition, then layer and position",
                      yaxis_title="held-out AxBench score (0-1; bars: 95% CI)", showlegend=False)
    return finish(fig, "Held-out AxBench score per condition", where, 560, (
        "Pooled over targets; each condition's coefficient is chosen on half of the prompts and scored on the other "
        "half (bars: 95% CI). Above the dotted unsteered line = steers without losing fluency and relevance; "
        "overlapping bars are not a ranking."))


# Above this perplexity ratio the text is broken; matched_damage's damage axis stops there.
DAMAGE_CEILING = 1000.0


def matched_damage(matched_rows: Sequence[Mapping[str, Any]], conditions: Sequence[str], *, target: str,
                   where: str) -> go.Figure:
    """04: steering at equal damage. Left: each condition's damage curve (perplexity ratio on general
    text against the coefficient, log-log) with the matched level as a line; right: the propensity
    shift (nats/token) at the coefficient where the curve reaches it, with a bootstrap 95% CI, one
    point per (layer, position). A hollow marker: the level was not reached on the grid (a lower bound).

    Example:
        >>> matched_damage(result.matched, cfg.constructions, target="fantasy", where="w")
    """
    rows = [r for r in matched_rows if r["target"] == target]
    fig = make_subplots(rows=1, cols=2, column_widths=[0.45, 0.55], horizontal_spacing=0.1,
                        subplot_titles=["damage against coefficient", "propensity shift at matched damage"])
    shown = [m for m in conditions if any(r["condition"] == m for r in rows)]
    level = rows[0]["level"] if rows else None
    cells = sorted({(r["layer"], r["position"]) for r in rows})
    # One cell: a line and a circle; further cells: their own dash and symbol, side by side on the right.
    for i, condition in enumerate(shown):
        for r in (r for r in rows if r["condition"] == condition):
            k = cells.index((r["layer"], r["position"]))
            fig.add_trace(go.Scatter(
                x=r["grid"], y=r["damage"], mode="lines+markers", name=condition, legendgroup=condition,
                showlegend=k == 0, line={"color": colour(condition, i), "dash": CELL_DASHES[k % len(CELL_DASHES)]},
                hovertemplate=f"<b>{condition}</b> (layer {r['layer']}, {r['position']})<br>coefficient: ×%{{x}}"
                              "<br>perplexity ratio: %{y:.3g}<extra></extra>"), row=1, col=1)
            _condition_point(fig, condition=condition, i=i, k=k, n_cells=len(cells), mean=r["mean"], ci=r["ci"],
                          hollow=r["status"] != "interpolated", row=1, col=2,
                          hover=(f"condition: {condition}<br>layer: {r['layer']}<br>position: {r['position']}<br>coefficient: "
                                 f"×{r['coefficient']:.3g} ({r['status']})<br>shift: {r['mean']:.4f} "
                                 f"[{r['ci'][0]:.4f}, {r['ci'][1]:.4f}]<br>story pairs: {len(r['shifts'])}"))
    if len(cells) > 1:  # a legend for the cells: line dash on the left, marker symbol on the right
        _cells_legend(fig, cells, row=1, col=2)
    _condition_axis(fig, shown, row=1, col=2)
    if level is not None:
        hline(fig, level, f"matched level {level:g}", log_y=True, row=1, col=1)
    random = [r for r in rows if r["condition"] == "random"]
    if len(random) == 1:
        hline(fig, random[0]["mean"], f"random: {random[0]['mean']:.3f}", row=1, col=2)
    else:
        fig.add_hline(y=0, row=1, col=2, **REFERENCE)
    fig.update_xaxes(title_text=COEFFICIENT_AXIS, type="log", row=1, col=1)
    fig.update_yaxes(title_text="perplexity ratio on general text", type="log", row=1, col=1)
    fig.update_yaxes(title_text="propensity shift (nats/token)", row=1, col=2)
    damages = [d for r in rows for d in r["damage"] if d is not None and math.isfinite(d) and d > 0]
    cut = ""
    if damages and max(damages) > DAMAGE_CEILING:  # broken text: keep the level's region readable
        fig.update_yaxes(range=[math.log10(min(min(damages), 1.0) * 0.9), math.log10(DAMAGE_CEILING)], row=1, col=1)
        cut = f"; the damage axis stops at {DAMAGE_CEILING:,.0f} (broken text; the largest ratio here is {max(damages):.2g})"
    where_cells = f"{len(cells)} cell{'s' if len(cells) != 1 else ''}"
    finish(fig, f"Steering at matched damage towards {target}", where, 600, (
        f"Left: damage of each vector on held-out general text ({where_cells}; one dash per cell{cut}). Right: how far "
        "the propensity (log p(target continuation) − log p(other)) moves at the coefficient where that damage "
        "reaches the level, one point per condition" + (" and cell, cells side by side by symbol" if len(cells) > 1
                                                     else "")
        + "; bars: 95% CI over story pairs; hollow: the level was not reached (a lower bound)."))
    return fig.update_layout(legend={"y": -0.3})  # below the right panel's slanted condition names


# --- the answer: the contrasts themselves -------------------------------------------------------

VERDICT_COLOURS = {"above": "#1a7f37", "below": "#b42318", "equivalent": "#0072B2", "unresolved": "#8c8c8c"}
"""The answer figures' only colours: called a > b, called a < b, equivalent within the margin, not resolved."""
VERDICT_WORDS = {"above": "called: left side larger", "below": "called: right side larger",
                 "equivalent": "equivalent within the margin", "unresolved": "not resolved (grey band: ± MDD)"}
ANSWER_CONTRASTS = ("b", "c", "d", "e")
_DEPTH_WORDS = ("shallow", "middle", "deep")
_SHORT = {"mean_centred": "centred", "bias_ablated": "bias-ablated"}


def _depth_names(layers: Sequence[int]) -> dict[int, str]:
    """The swept layers as depth words (models of different depths share rows): shallow, middle, deep."""
    ordered = sorted(set(layers))
    if len(ordered) == 1:
        return {ordered[0]: "middle"}
    if len(ordered) <= 3:
        words = _DEPTH_WORDS if len(ordered) == 3 else ("shallow", "deep")
        return dict(zip(ordered, words))
    return {la: f"L{la}" for la in ordered}


def answer_forest(results: Mapping[str, Sequence[Mapping[str, Any]]], *, measures: Sequence[str], where: str,
                  measure_titles: Mapping[str, str] = MEASURE_TITLES,
                  contrasts: Sequence[str] = ANSWER_CONTRASTS) -> go.Figure:
    """The answer in one figure: each pooled contrast (b)-(e) as its estimate and 95% CI, per measure (a column
    each), model (a row each), layer and position; coloured only by its verdict; for a contrast not resolved, a
    grey band of ± its MDD (the smallest difference this run could call) behind it.

    ``results`` maps a model to its pooled contrast records (any measures; ``measure`` keys them). These are
    the paired differences the verdicts test, so a reader sees a call where the verdict is one.

    Example:
        >>> answer_forest({"smollm2": recs}, measures=["steerability"], measure_titles={"steerability": "s"}, where="w")
    """
    models = list(results)
    fig = make_subplots(rows=len(models), cols=len(measures), shared_yaxes=True, horizontal_spacing=0.04,
                        vertical_spacing=0.1 if len(models) > 1 else 0.0,
                        subplot_titles=[f"<b>{m.split('-')[0]}</b> · {measure_titles.get(x, x)}" for m in models
                                        for x in measures])
    labels: list[str] = []
    for row, model in enumerate(models, 1):
        recs = [r for r in results[model] if r.get("scope", "pooled") == "pooled" and r.get("label") in contrasts
                and r.get("status") == "run"]
        depth = _depth_names([int(r["layer"]) for r in recs])
        for col, measure in enumerate(measures, 1):
            mine = sorted((r for r in recs if r["measure"] == measure),
                          key=lambda r: (contrasts.index(r["label"]), int(r["layer"]), r["position"]))
            ys = [f"({r['label']}) {_SHORT.get(r['a'], r['a'])} − {_SHORT.get(r['b'], r['b'])} · "
                  f"{depth[int(r['layer'])]} · {r['position']}" for r in mine]
            labels += [y for y in ys if y not in labels]
            for kind, tint in VERDICT_COLOURS.items():
                pick = [(y, r) for y, r in zip(ys, mine) if classify(r) == kind]
                if not pick:
                    continue
                if kind == "unresolved":
                    fig.add_trace(go.Bar(
                        y=[y for y, _ in pick], x=[2 * float(r["mdd_corrected"] or 0) for _, r in pick],
                        base=[-float(r["mdd_corrected"] or 0) for _, r in pick], orientation="h",
                        marker={"color": "rgba(140,140,140,0.18)"}, width=0.7, showlegend=False, hoverinfo="skip"),
                        row=row, col=col)
                fig.add_trace(go.Scatter(
                    y=[y for y, _ in pick], x=[float(r["estimate"]) for _, r in pick], mode="markers",
                    name=VERDICT_WORDS[kind], legendgroup=kind, showlegend=not any(
                        t.legendgroup == kind and t.showlegend for t in fig.data),
                    marker={"color": tint, "size": 8},
                    error_x={"type": "data", "symmetric": False, "color": tint,
                             "array": [float(r["ci"][1]) - float(r["estimate"]) for _, r in pick],
                             "arrayminus": [float(r["estimate"]) - float(r["ci"][0]) for _, r in pick]},
                    hovertext=[f"{model}, {r['name']}, L{r['layer']} {r['position']}<br>{r['estimate']:+.3g} "
                               f"[{r['ci'][0]:+.3g}, {r['ci'][1]:+.3g}], n = {r['n']}<br>{r['verdict']}"
                               for _, r in pick], hoverinfo="text"), row=row, col=col)
            fig.add_vline(x=0, row=row, col=col, line={"color": "#444", "width": 1})
    fig.update_yaxes(categoryorder="array", categoryarray=list(reversed(labels)), tickmode="array", tickvals=labels,
                     ticktext=labels, tickfont={"size": 10})
    fig.update_annotations(font_size=12)
    fig.update_layout(barmode="overlay", bargap=0.3)
    height = 40 + len(models) * (15 * max(len(labels), 1) + 50)
    fig = finish(fig, "The answer: each question as a paired difference", where, height, caption=(
        "Each dot is one pre-registered contrast pooled over targets: the difference left − right at one depth and "
        "position, with its 95% CI. Green and red: called after Holm's correction over the whole list; blue: "
        "equivalent within the stated margin; grey: not resolved, with a band of ± the smallest difference the run "
        "could call (MDD). (b) asks whether removing the bias helps, (c) whether projecting the bias out equals "
        "subtracting the mean, (d) and (e) whether a second subtraction beats centring alone."))
    fig.update_layout(legend={"y": -30 / height, "yanchor": "top"})
    return fig


def answer_targets(records: Sequence[Mapping[str, Any]], *, where: str, measure_titles: Mapping[str, str] = MEASURE_TITLES,
                   contrasts: Sequence[str] = ("d", "e")) -> go.Figure:
    """Per target, where the pooled verdict hides a winner: each (d)/(e) contrast's estimate per target (rows) and
    (model, measure, depth, position) cell (columns), coloured by its per-target verdict (green above, red below,
    grey not resolved; the number is the estimate).

    Example:
        >>> answer_targets(per_target_records, measure_titles={"score": "score"}, where="w")
    """
    recs = [r for r in records if r.get("scope") not in (None, "pooled") and r.get("label") in contrasts
            and r.get("status") == "run"]
    targets = sorted({str(r["scope"]) for r in recs})
    columns: list[str] = []
    cells: dict[tuple[str, str], Mapping[str, Any]] = {}
    for r in sorted(recs, key=lambda r: (r.get("model", ""), contrasts.index(r["label"]), r["measure"],
                                         int(r["layer"]), r["position"])):
        col = (f"{r.get('model', '')} ({r['label']}) {measure_titles.get(r['measure'], r['measure'])} "
               f"L{r['layer']} {r['position']}").strip()
        if col not in columns:
            columns.append(col)
        cells[(str(r["scope"]), col)] = r
    code = {"below": -1.0, "unresolved": 0.0, "equivalent": 0.0, "above": 1.0}
    z = [[code[classify(cells[(t, c)])] if (t, c) in cells else None for c in columns] for t in targets]
    text = [[f"{cells[(t, c)]['estimate']:+.2g}" if (t, c) in cells else "" for c in columns] for t in targets]
    fig = go.Figure(go.Heatmap(z=z, x=columns, y=targets, text=text, texttemplate="%{text}", zmin=-1, zmax=1,
                               colorscale=[[0, VERDICT_COLOURS["below"]], [0.5, "#eeeeee"],
                                           [1, VERDICT_COLOURS["above"]]], showscale=False, xgap=2, ygap=2,
                               hoverinfo="text", hovertext=[[cells[(t, c)]["verdict"] if (t, c) in cells else ""
                                                             for c in columns] for t in targets]))
    fig.update_xaxes(tickangle=-50, tickfont={"size": 9})
    return finish(fig, "Per target: where isolating or counterbalancing wins", where, 160 + 28 * len(targets),
                  caption=("Each cell: one target's (d) isolated − mean-centred or (e) counterbalanced − mean-centred "
                           "difference at one cell, its verdict corrected over the whole per-target list (green: "
                           "called larger, red: called smaller, grey: not resolved). A pooled verdict can hide a "
                           "target where one construction wins and another where it loses."))
