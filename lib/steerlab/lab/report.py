"""What notebooks hand back: headline numbers in ``summary.json``, figures as
standalone HTML, small HTML tables, and parameter checks with clear messages.

``summary.json`` holds one key per notebook (``bias``, ``interpret``, ``steer``,
``compare``); each notebook replaces only its own key, atomically.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..store import atomic_write_text

__all__ = [
    "ParameterError",
    "check_param",
    "html_table",
    "load_summary",
    "markdown_table",
    "record",
    "save_figure",
    "to_jsonable",
]


class ParameterError(ValueError):
    """A notebook parameter has a value the notebook cannot use."""


def check_param(name: str, value: Any, ok: Callable[[Any], bool], expected: str) -> None:
    """Raise :class:`ParameterError` naming the parameter unless ``ok(value)``.

    Example:
        >>> check_param("top_k", top_k, lambda v: isinstance(v, int) and v >= 1, "an integer >= 1")
    """
    try:
        good = bool(ok(value))
    except Exception:  # noqa: BLE001 - a predicate that raises means the value is not allowed
        good = False
    if not good:
        raise ParameterError(f"parameter {name}={value!r} is not allowed: expected {expected}")


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
    """Write a plotly figure to ``output_dir/figures/name.html``, viewable offline.

    plotly.js is written once per folder beside the figures, not once per figure.
    """
    import plotly.offline

    folder = Path(output_dir) / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    js = folder / "plotly.min.js"
    if not js.exists():
        atomic_write_text(js, plotly.offline.get_plotlyjs())
    path = folder / f"{name}.html"
    atomic_write_text(path, fig.to_html(include_plotlyjs="directory", full_html=True))
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
