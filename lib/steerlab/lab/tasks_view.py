"""Notebook 06's tables and figure: what :mod:`steerlab.study.tasks` measured, shown (nothing is measured here).

- :func:`ability_columns`: each task's zero-shot, few-shot and shuffled-label few-shot accuracy, kept or not;
- :func:`accuracy_columns`: report-half accuracy per condition and layer at its chosen setting;
- :func:`contrast_columns`: the pre-registered contrasts, estimate, CI, MDD and Holm verdict;
- :func:`anchor_columns`: the paper's numbers, on its models, in a table of their own;
- :func:`accuracy_by_layer`: the figure, accuracy by layer per condition, a panel per task and pooled.

Every function reads the plain record of :meth:`steerlab.study.tasks.TaskStudy.record` (``summary.json``'s
``"tasks"``), so a run folder can be shown again without the model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..study.tasks import CONDITIONS
from .style import finish

__all__ = ["COLOURS", "ability_columns", "accuracy_by_layer", "accuracy_columns", "anchor_columns",
           "contrast_columns", "percent"]

COLOURS: dict[str, str] = {
    "task_raw": "#E69F00", "task_centred": "#0072B2", "task_vs_shuffled": "#009E73", "task_affine": "#CC79A7",
    "shuffled_control": "#999999", "unsteered": "#000000", "few_shot": "#D55E00",
}
"""One colour per condition (Okabe-Ito), the unsteered model black."""


def percent(x: Any) -> str:
    """An accuracy (0 to 1) as a whole percentage; "–" for none or not a number (tables and the data card)."""
    return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{100 * float(x):.0f}%"


def ability_columns(record: Mapping[str, Any]) -> dict[str, list[Any]]:
    """Per task: pairs measured, zero-shot, few-shot and shuffled-label few-shot accuracy, kept.

    Example:
        >>> html_table(ability_columns(summary["tasks"]), title="What the model can do")
    """
    rows = record["ability"]
    threshold = record["few_shot_threshold"]
    return {"task": [r["task"] for r in rows], "held-out pairs": [r["n"] for r in rows],
            "zero-shot": [percent(r["zero_shot"]) for r in rows], "few-shot": [percent(r["few_shot"]) for r in rows],
            "few-shot, labels shuffled": [percent(r["few_shot_shuffled"]) for r in rows],
            f"kept (few-shot ≥ {percent(threshold)})": ["yes" if r["kept"] else "no" for r in rows]}


def accuracy_columns(record: Mapping[str, Any], scope: str = "pooled") -> dict[str, list[Any]]:
    """Report-half accuracy of one scope (a task or ``"pooled"``): a row per condition, a column per
    layer (each cell at the condition's chosen setting, shown beside it), unsteered and few-shot first.

    Example:
        >>> html_table(accuracy_columns(summary["tasks"]), title="Zero-shot accuracy, report half")
    """
    rows = [r for r in record["accuracy"] if r["task"] == scope]
    if not rows:
        raise ValueError(f"no accuracy rows for {scope!r}; scopes: {sorted({r['task'] for r in record['accuracy']})}")
    layers = list(record["layers"])
    out: dict[str, list[Any]] = {"condition": [], **{f"L{la}": [] for la in layers}}
    for name in ("unsteered", "few_shot", *CONDITIONS):
        mine = {r["layer"]: r for r in rows if r["condition"] == name}
        if not mine:
            continue
        out["condition"].append(name.replace("_", " ") + (" (no vector)" if None in mine else ""))
        for la in layers:
            r = mine.get(la) or mine.get(None)
            out[f"L{la}"].append("–" if r is None else percent(r["accuracy"]) + (f" ({r['setting']})" if r["setting"] else ""))
    return out


def contrast_columns(record: Mapping[str, Any], scope: str = "pooled") -> dict[str, list[Any]]:
    """The contrasts of one scope: name, layer, n, estimate with its 95% CI, Holm-corrected MDD, verdict.

    Example:
        >>> html_table(contrast_columns(summary["tasks"]), title="Pre-registered contrasts, pooled")
    """
    rows = [c for c in record["contrasts"] if c["scope"] == scope]
    def estimate(c: Mapping[str, Any]) -> str:
        if c["status"] != "run":
            return "not run"
        return f"{c['estimate']:+.3f} [{c['ci'][0]:+.3f}, {c['ci'][1]:+.3f}]"
    return {"contrast": [c["name"] for c in rows], "layer": [c["layer"] for c in rows], "n": [c["n"] for c in rows],
            "a − b [95% CI]": [estimate(c) for c in rows],
            "MDD (Holm)": ["–" if c["mdd_corrected"] is None else f"{c['mdd_corrected']:.3f}" for c in rows],
            "verdict": [c["verdict"] if c["status"] == "run" else c["reason"] for c in rows]}


def anchor_columns(anchors: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """The paper's anchor numbers (zero-shot accuracy with the function vector added), on its models.

    Example:
        >>> html_table(anchor_columns(PAPER_ANCHORS), title="Reported by the paper (not our models)")
    """
    return {"reported by": [a["source"] for a in anchors], "model": [a["model"] for a in anchors],
            "layer": [a["layer"] for a in anchors], "unsteered": [percent(a["unsteered"]) for a in anchors],
            "uncentred": [percent(a["uncentred"]) for a in anchors], "centred": [percent(a["centred"]) for a in anchors]}


def accuracy_by_layer(record: Mapping[str, Any], *, subtitle: str = "") -> go.Figure:
    """Report-half zero-shot accuracy by layer, a line per condition at its chosen setting, a panel
    per kept task and one pooled; unsteered zero-shot and few-shot as labelled horizontal lines.

    Example:
        >>> fig = accuracy_by_layer(summary["tasks"], subtitle="smollm2-135m-instruct, run 20261207")
    """
    scopes = ["pooled", *record["kept_tasks"]]
    cols = min(3, len(scopes))
    nrows = math.ceil(len(scopes) / cols)
    fig = make_subplots(rows=nrows, cols=cols, subplot_titles=[s.replace("_", " ") for s in scopes],
                        shared_yaxes=True, vertical_spacing=0.12 if nrows > 1 else 0.1)
    acc = record["accuracy"]
    layers = sorted({int(r["layer"]) for r in acc if r["layer"] is not None})
    for k, scope in enumerate(scopes):
        row, col = k // cols + 1, k % cols + 1
        # the two references first, as legend entries (a vector's line that lies on one is then named "≡" it)
        for name, dash in (("unsteered", "dot"), ("few_shot", "dash")):
            flat = [r["accuracy"] for r in acc if r["task"] == scope and r["condition"] == name]
            if flat and layers:
                label = "unsteered zero-shot" if name == "unsteered" else "few-shot (no vector)"
                fig.add_trace(go.Scatter(
                    x=[layers[0], layers[-1]], y=[flat[0]] * 2, mode="lines", name=label, legendgroup=name,
                    showlegend=k == 0, line={"color": COLOURS[name], "dash": dash, "width": 1.5},
                    hovertemplate=f"{label}: %{{y:.0%}}<extra></extra>"), row=row, col=col)
        for name in CONDITIONS:
            points = sorted((r["layer"], r["accuracy"], r["setting"]) for r in acc
                            if r["task"] == scope and r["condition"] == name and r["layer"] is not None)
            fig.add_trace(go.Scatter(
                x=[p[0] for p in points], y=[p[1] for p in points], mode="lines+markers", name=name,
                legendgroup=name, showlegend=k == 0, line={"color": COLOURS[name]},
                customdata=[p[2] for p in points],
                hovertemplate=f"{name}<br>layer %{{x}}<br>accuracy %{{y:.0%}}<br>setting %{{customdata}}<extra></extra>"),
                row=row, col=col)
    fig.update_yaxes(range=[-0.03, 1.03], tickformat=".0%")
    fig.update_yaxes(title_text="top-1 first-token accuracy", col=1)
    fig.update_xaxes(title_text="layer (residual entering block)", row=nrows)
    # the suite's one figure style (style.finish): width from the page, lines lying on one another marked
    return finish(fig, "Zero-shot accuracy with a task vector added at the last prompt token", subtitle,
                  height=320 * nrows + 100,
                  caption=("Each condition at the setting chosen for it on the other half of the held-out pairs; "
                           "dotted: unsteered zero-shot, dashed: few-shot (no vector). A line above the dotted one "
                           "is a vector that carries the task; a note names the lines that lie on another."))
