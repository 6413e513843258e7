"""Plotly figures the notebooks share: metrics over layers, heatmap pairs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

__all__ = ["heatmap_pair", "layer_lines", "setup_notebook"]


def setup_notebook() -> None:
    """Plotly output that works in JupyterLab, classic notebook and HTML export, offline."""
    import plotly.io as pio

    pio.renderers.default = "plotly_mimetype+notebook"


def layer_lines(
    layers: Sequence[int],
    series: Mapping[str, Sequence[float]],
    *,
    title: str,
    yaxis: str,
    log_y: bool = False,
    xaxis: str = "residual layer (0 = embeddings)",
) -> go.Figure:
    """One line per named series over residual-stream layers."""
    fig = go.Figure()
    for name, values in series.items():
        fig.add_trace(go.Scatter(x=list(layers), y=[float(v) for v in values], mode="lines+markers", name=name))
    fig.update_layout(title=title, xaxis_title=xaxis, yaxis_title=yaxis, template="plotly_white",
                      height=380, legend={"orientation": "h", "y": -0.25})
    if log_y:
        fig.update_yaxes(type="log")
    return fig


def heatmap_pair(
    left: torch.Tensor, right: torch.Tensor, labels: Sequence[str], *, titles: tuple[str, str], title: str
) -> go.Figure:
    """Two square heatmaps side by side on one colour scale (-1..1)."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=titles, horizontal_spacing=0.15)
    for col, m in enumerate((left, right), start=1):
        fig.add_trace(
            go.Heatmap(z=m.tolist(), x=list(labels), y=list(labels), zmin=-1, zmax=1, colorscale="RdBu",
                       reversescale=True, showscale=col == 2,
                       text=[[f"{v:.2f}" for v in row] for row in m.tolist()], texttemplate="%{text}"),
            row=1, col=col,
        )
    fig.update_layout(title=title, template="plotly_white", height=460)
    return fig
