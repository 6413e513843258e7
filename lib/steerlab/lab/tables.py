"""Tables for notebooks and the run report that cannot be misread.

- text left-aligned, numbers right-aligned in tabular figures; an interval
  (``0.412 [0.351, 0.470]``) never breaks inside: where a column is too narrow for the number
  and its interval on one line, the whole interval goes under the number;
- a column with no value in any row (``nan``, ``None``, ``-``, empty) is left out, not shown
  as a column of ``nan``;
- short strings (tokens) are shown as ``repr`` so a leading space is visible; prose (a
  completion) is shown as text, its line breaks kept, never as a Python literal;
- the styles are inline, so JupyterLab's own table style (right-aligned cells) does not
  override them, and the table scrolls sideways inside its box rather than pushing a
  1024 px page wider.

:func:`heldout_columns` turns notebook 04's held-out table into display columns with units;
:func:`verdict_grid` shows the contrasts (a)-(e) as one table per measure, a row per contrast and a
column per (layer, position), each estimate marked by its corrected verdict (notebook 04 and the run
report show it; :func:`verdict_grid_markdown` is the README's).
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from ..sets import UNIT_LABEL

__all__ = ["ASKED", "GRID_LEGEND", "MISSING", "heldout_columns", "html_table", "is_missing", "is_numeric", "markdown_table", "verdict_grid", "verdict_grid_markdown"]

MISSING = "–"
"""What an empty cell shows."""

ASKED = "abcde"
"""The write-up's own questions among the pre-registered contrasts; (f) and (g) are tallied apart."""

_NUMBER = r"[+\-−]?(?:\d[\d,]*(?:\.\d*)?|\.\d+)(?:e[+\-]?\d+)?%?"
_NUMERIC = re.compile(rf"^\s*(?:{_NUMBER}|×{_NUMBER})?\s*(?:[\[(]\s*{_NUMBER}\s*,\s*{_NUMBER}\s*[\])])?\s*$",
                      re.IGNORECASE)
_EMPTY_TEXT = {"", "nan", "n/a", "-", "–", "null"}  # not "none": the unsteered control's method name


def is_missing(value: Any) -> bool:
    """``None``, a non-finite float, or a placeholder string (``nan``, ``None``, ``n/a``, ``-``, empty; not
    ``none``, the unsteered control's method name).

    Example:
        >>> [is_missing(v) for v in (None, float("nan"), "nan", "-", 0.0, "none")]
        [True, True, True, True, False, False]
    """
    if value is None:
        return True
    if isinstance(value, float):
        return not math.isfinite(value)
    # "None" is how a missing value reads once formatted (JSON null -> None -> str); "none" is a method.
    return isinstance(value, str) and (value.strip() == "None" or value.strip().lower() in _EMPTY_TEXT)


def is_numeric(value: Any) -> bool:
    """A number, or text that is one: ``0.412``, ``-3``, ``+0.012 [-0.010, +0.030]``, ``[0.1, 0.3]``, ``×0.5``.

    Example:
        >>> [is_numeric(v) for v in (3, "0.41 [0.35, 0.47]", "[0.1, 0.2]", "mean_centred", "L8 all")]
        [True, True, True, False, False]
    """
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return True
    return isinstance(value, str) and bool(value.strip()) and bool(_NUMERIC.match(value))


def _is_prose(values: Sequence[Any]) -> bool:
    texts = [v for v in values if isinstance(v, str)]
    return any("\n" in t or len(t.split()) >= 4 or len(t) > 30 for t in texts)


_TD = "padding:3px 6px;border:1px solid #ddd;vertical-align:top;"
_STYLE = {
    "number": _TD + "text-align:right;font-variant-numeric:tabular-nums;",
    "text": _TD + "text-align:left;",
    "prose": _TD + "text-align:left;white-space:pre-wrap;min-width:14em;max-width:36em;",
    "missing": _TD + "text-align:right;color:#888;",
}


def _shown(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


_WITH_INTERVAL = re.compile(r"^(.*?)\s*([\[(][^\])]*[\])])\s*$")


def _number_html(value: Any) -> str:
    """A number never breaks inside; its interval stays on one line, and goes under the number
    only where the column is too narrow for both."""
    text = _shown(value)
    found = _WITH_INTERVAL.match(text)
    if not found or not found.group(1):
        return f'<span style="white-space:nowrap">{html.escape(text)}</span>'
    estimate, interval = found.groups()
    return (f'<span style="white-space:nowrap">{html.escape(estimate)}</span> '
            f'<span class="interval" style="white-space:nowrap;color:#555">{html.escape(interval)}</span>')


def html_table(columns: Mapping[str, Sequence[Any]], *, title: str | None = None, quote_strings: bool = True) -> str:
    """An HTML table with one column per key (the write-up's top-k layout).

    Text is left-aligned and numbers right-aligned (a column is numeric when every value in
    it is a number or missing); a column with no value in any row is dropped. Short strings
    are shown as ``repr`` (a token's leading space stays visible) unless ``quote_strings`` is
    False; prose (4+ words, a line break or over 30 characters) is shown as text.

    Example:
        >>> print(html_table({"condition": ["raw"], "score": ["0.412 [0.351, 0.470]"], "unused": ["nan"]})[:40])
        <div class="steerlab-table" style="overf
    """
    names = [n for n in columns if not all(is_missing(v) for v in columns[n])]
    depth = max((len(columns[n]) for n in names), default=0)
    kinds = {}
    for n in names:
        present = [v for v in columns[n] if not is_missing(v)]
        kinds[n] = ("number" if all(is_numeric(v) for v in present) else
                    "prose" if _is_prose(present) else "text")

    def cell(name: str, i: int) -> str:
        value = columns[name][i] if i < len(columns[name]) else None
        if is_missing(value):
            return f'<td style="{_STYLE["missing"]}">{MISSING}</td>'
        kind = kinds[name]
        if kind == "text" and quote_strings and isinstance(value, str):
            return f'<td style="{_STYLE[kind]}"><code>{html.escape(repr(value))}</code></td>'
        if kind == "number":
            return f'<td style="{_STYLE[kind]}">{_number_html(value)}</td>'
        return f'<td style="{_STYLE[kind]}">{html.escape(_shown(value))}</td>'

    # A heading's unit or interval goes on a line of its own, so headings do not widen the columns.
    head = "".join(f'<th style="{_TD}text-align:{"right" if kinds[n] == "number" else "left"};background:#f6f6f6">'
                   + re.sub(r" (?=[(\[])", "<br>", html.escape(str(n))) + "</th>" for n in names)
    rows = "".join(f"<tr>{''.join(cell(n, i) for n in names)}</tr>" for i in range(depth))
    caption = (f'<caption style="text-align:left;font-weight:600;padding:4px 0">{html.escape(title)}</caption>'
               if title else "")
    return (f'<div class="steerlab-table" style="overflow-x:auto;max-width:100%">'
            f'<table style="border-collapse:collapse;margin:0.4rem 0 1rem;font-size:13px">{caption}'
            f"<thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>")


def markdown_table(columns: Mapping[str, Sequence[Any]]) -> str:
    """A Markdown table with one column per key (for READMEs and notes); numeric columns right-aligned,
    a column with no value in any row left out.

    Example:
        >>> print(markdown_table({"condition": ["raw", "mean_centred"], "effect": ["0.01", "0.02"]}))
        | method | effect |
        |---|---:|
        | raw | 0.01 |
        | mean_centred | 0.02 |
    """
    names = [n for n in columns if not all(is_missing(v) for v in columns[n])]
    depth = max((len(columns[n]) for n in names), default=0)

    def align(name: str) -> str:
        present = [v for v in columns[name] if not is_missing(v)]
        return "---:|" if present and all(is_numeric(v) for v in present) else "---|"

    lines = ["| " + " | ".join(names) + " |", "|" + "".join(align(n) for n in names)]
    for i in range(depth):
        cells = [str(columns[n][i]).replace("|", "\\|") if i < len(columns[n]) else "" for n in names]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# Notebook 04's held-out table (steerlab.study.compare_report.heldout_table): column -> heading with its unit.
HELDOUT_HEADINGS: dict[str, str] = {
    "condition": "condition",
    "layer": "layer",
    "position": "position",
    "coefficient": f"coefficient (× {UNIT_LABEL})",
    "score": "score, 0-1 [95% CI]",
    "vs_mean_centred": "vs mean_centred",
    "vs_random": "vs random",
    "steerability": f"steerability (nats/token per × {UNIT_LABEL})",
    "anti_steerable": "anti-steerable (share)",
    "concept_effect": "concept effect (ΔP)",
    "vocab_rate": "vocabulary rate (share of words)",
}


def heldout_columns(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[str]]:
    """Notebook 04's held-out table (:func:`steerlab.study.compare_report.heldout_table`) as display columns:
    the score and its CI in one cell, each heading with its unit, formatted by
    :func:`steerlab.study.compare_report.best_table`. The differences ``vs ...`` are paired, score
    units, with their 95% CI; a pooled table's coefficient column (``per target`` in every
    row) is left out.

    Example:
        >>> html_table(heldout_columns(heldout_table(summary, result.steerability)), quote_strings=False)
    """
    from ..study.compare_report import best_table

    table = best_table(rows)
    out: dict[str, list[str]] = {}
    for column, values in table.items():
        if column == "score_ci" or (column == "coefficient" and set(values) == {"per target"}):
            continue  # the CI goes with the score; a pooled table's coefficients are each target's own
        if column == "score" and "score_ci" in table:
            values = [f"{v} {ci}" for v, ci in zip(values, table["score_ci"])]
        out[HELDOUT_HEADINGS.get(column, column)] = list(values)
    return out


_GRID_TD = "border:1px solid #d8dee6;padding:2px 8px;white-space:nowrap;"
_GRID = {"called": f"{_GRID_TD}text-align:right;font-variant-numeric:tabular-nums;background:#e3efe0;",
         "eq": f"{_GRID_TD}text-align:right;font-variant-numeric:tabular-nums;background:#eef1f6;",
         "open": f"{_GRID_TD}text-align:right;font-variant-numeric:tabular-nums;color:#777;",
         "name": f"{_GRID_TD}text-align:left;white-space:normal;min-width:11em;"}


def _verdict_cells(results: Sequence[Mapping[str, Any]]) -> tuple[list[tuple[Any, Any]], list[str],
                                                                    dict[tuple[str, Any, Any], dict[str, Any]]]:
    """(cells, contrast names, each shown cell) of the pooled contrasts (a)-(e) that ran; a shown cell is
    its kind ("called", "eq" or "open"), its estimate and MDD as text, and its verdict with the CI."""
    from ..study.compare_report import is_called

    pooled = [r for r in results if r.get("scope", "pooled") == "pooled" and r.get("label") in tuple(ASKED)
              and r.get("status", "run") == "run" and isinstance(r.get("estimate"), (int, float))]
    cells = list(dict.fromkeys((r["layer"], r["position"]) for r in pooled))
    names = list(dict.fromkeys(str(r["name"]) for r in pooled))
    shown = {}
    for r in pooled:
        ci = r.get("ci") or [math.nan, math.nan]
        mdd = r.get("mdd_corrected")
        kind = ("eq" if "equivalent" in str(r["verdict"]) else "called") if is_called(r) else "open"
        shown[(str(r["name"]), r["layer"], r["position"])] = {
            "kind": kind, "estimate": f"{r['estimate']:+.3f}",
            "mdd": f"MDD {mdd:.2g}" if kind == "open" and isinstance(mdd, (int, float)) and math.isfinite(mdd) else "",
            "tip": f"{r['verdict']}; {r['estimate']:+.4g} [{ci[0]:+.3g}, {ci[1]:+.3g}], n = {r.get('n')}"}
    return cells, names, shown


GRID_LEGEND = ("bold: called after Holm over the whole list; ≈: equivalent within the stated margin; otherwise not "
               "resolved at this sample size, with the smallest difference the list could call (MDD)")
"""How to read :func:`verdict_grid` and :func:`verdict_grid_markdown`."""


def verdict_grid(results: Sequence[Mapping[str, Any]], *, title: str | None = None) -> str:
    """The write-up's contrasts (a)-(e), pooled over targets, as one HTML table: a row per contrast, a
    column per (layer, position), each cell the estimate marked by its corrected verdict (bold on green:
    called; ≈ on grey-blue: equivalent within the margin; grey with its MDD: not resolved); hover a
    cell for the verdict and the 95% CI. ``""`` when none ran. Styles are inline, as in :func:`html_table`.

    Example:
        >>> verdict_grid(summary["compare"]["contrasts"]["steerability"]["results"])[:40]
        '<div class="steerlab-table" style="overf'
    """
    cells, names, shown = _verdict_cells(results)
    if not names:
        return ""

    def cell(c: dict[str, Any] | None) -> str:
        if c is None:
            return f'<td class="open" style="{_GRID["open"]}">{MISSING}</td>'
        tip, est = html.escape(c["tip"]), c["estimate"]
        if c["kind"] == "eq":
            return f'<td class="eq" style="{_GRID["eq"]}" title="{tip}">≈ {est}</td>'
        if c["kind"] == "called":
            return f'<td class="called" style="{_GRID["called"]}" title="{tip}"><b>{est}</b></td>'
        small = f'<br><small style="font-size:0.8em">{c["mdd"]}</small>' if c["mdd"] else ""
        return f'<td class="open" style="{_GRID["open"]}" title="{tip}">{est}{small}</td>'

    th = f"{_GRID_TD}background:#f6f6f6;"
    head = (f'<tr><th style="{th}text-align:left">pooled contrast</th>'
            + "".join(f'<th style="{th}text-align:right">L{la} {html.escape(str(pos))}</th>' for la, pos in cells)
            + "</tr>")
    body = "".join(f'<tr><td style="{_GRID["name"]}">{html.escape(name)}</td>'
                   + "".join(cell(shown.get((name, la, pos))) for la, pos in cells) + "</tr>" for name in names)
    caption = (f'<caption style="text-align:left;font-weight:600;padding:4px 0">{html.escape(title)}</caption>'
               if title else "")
    return (f'<div class="steerlab-table" style="overflow-x:auto;max-width:100%">'
            f'<table class="verdicts" style="border-collapse:collapse;margin:4px 0;font-size:0.9em;background:#fff">'
            f"{caption}<thead>{head}</thead><tbody>{body}</tbody></table>"
            f'<p style="font-size:0.85em;color:#555;margin:2px 0 6px">{html.escape(GRID_LEGEND)}; green: called, '
            "grey-blue: equivalent, grey: not resolved; hover a cell for its verdict and 95% CI.</p></div>")


def verdict_grid_markdown(results: Sequence[Mapping[str, Any]]) -> list[str]:
    """:func:`verdict_grid` as Markdown table lines (the README's findings), ``[]`` when none ran."""
    cells, names, shown = _verdict_cells(results)
    if not names:
        return []

    def cell(c: dict[str, Any] | None) -> str:
        if c is None:
            return "-"
        return {"eq": f"≈ {c['estimate']}", "called": f"**{c['estimate']}**"}.get(
            c["kind"], f"{c['estimate']} ({c['mdd']})" if c["mdd"] else c["estimate"])

    return ["| pooled contrast | " + " | ".join(f"L{la} {pos}" for la, pos in cells) + " |",
            "|---|" + "--:|" * len(cells),
            *(f"| {name} | " + " | ".join(cell(shown.get((name, la, pos))) for la, pos in cells) + " |"
              for name in names)]
