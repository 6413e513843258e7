"""The steering widget's view: pure functions from what the widget shows (texts, numbers,
their states) to HTML. No model, no ipywidgets, no torch: every view can be rendered and
tested from plain values, and :func:`page_html` puts them on one standalone page (for a
screenshot, or a look in a browser without a kernel).

States, shown as ``data-state`` on each view's outer element:

- ``empty``: nothing yet; ``live``: tokens are streaming in; ``done``: final;
- ``stale``: computed for settings that are no longer the controls' (a new generation is on
  its way), greyed; ``error``: the last run failed, the old content greyed.

A number is never shown next to text it was not computed from: while a side regenerates,
its numbers are greyed (``steerlab-pending``) and a perplexity waits as ``…``.

Example:
    >>> from steerlab.lab.widget_view import Side, pane_html
    >>> pane_html("unsteered", "Once upon a time", Side(["there was a dragon."], state="done"))
    "<div class='steerlab-pane' data-state='done' ...
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ..sets import UNIT_LABEL

__all__ = [
    "GREY",
    "PAGE_ORDER",
    "MetricRow",
    "RangeView",
    "Side",
    "controls_html",
    "fmt",
    "grey",
    "lens_html",
    "metrics_html",
    "page_html",
    "pane_html",
    "range_html",
    "track_css",
    "warnings_html",
]

GREY = "opacity:0.4;"  # the style of a stale view or a pending number
_NOTE = {"stale": " (stale: regenerating)", "error": " (stale: see the message)", "live": " (generating…)"}
_GREYED = ("stale", "error")


@dataclass
class Side:
    """What one pane shows: completions (token ids and text), their perplexities and a state
    (``empty``, ``live``, ``done``, ``stale``, ``error``)."""

    texts: list[str] = field(default_factory=list)
    ids: list[list[int]] = field(default_factory=list)
    perplexity: list[float] = field(default_factory=list)
    state: str = "empty"


@dataclass(frozen=True)
class MetricRow:
    """One row of the numbers table: a label and each side's value, already formatted.

    ``pending`` names the sides (``"unsteered"``, ``"steered"``) whose value is not final
    (computed from a completion still streaming in, or not computed yet): shown greyed.
    """

    label: str
    unsteered: str
    steered: str
    pending: frozenset[str] = frozenset()


@dataclass(frozen=True)
class RangeView:
    """The measured useful range of the coefficient, as the view shows it.

    Attributes:
        low, high: the range's ends (x the centred norm, the unit; ``low <= 0 <= high``).
        level: the damage level (perplexity ratio on general text) that ends it.
        layer, construction, position: what it was measured for.
        texts: how many general texts it was measured on.
        reached_low, reached_high: whether damage reached the level on that side within the
            measured coefficients (else the end is the largest coefficient measured).
        coefficient: the coefficient in use, or ``None`` before the first generation.
    """

    low: float
    high: float
    level: float
    layer: int
    construction: str
    position: str
    texts: int
    reached_low: bool = True
    reached_high: bool = True
    coefficient: float | None = None

    @property
    def inside(self) -> bool:
        """Whether the coefficient in use lies inside the range (``True`` while there is none)."""
        return self.coefficient is None or self.low <= self.coefficient <= self.high


def fmt(x: float | None, spec: str = ".3f") -> str:
    """A number for the table: ``—`` for ``None`` or ``nan``.

    Example:
        >>> fmt(0.12345), fmt(float("nan")), fmt(196.614, ".2f")
        ('0.123', '—', '196.61')
    """
    return "—" if x is None or math.isnan(x) else format(x, spec)


def grey(view: str, state: str = "stale") -> str:
    """``view`` (any of the views' HTML) greyed as computed for older settings.

    Example:
        >>> grey("<b>lens</b>")
        "<div class='steerlab-stale' data-state='stale' style='opacity:0.4;'><b>lens</b></div>"
    """
    if not view:
        return view
    return f"<div class='steerlab-stale' data-state='{html.escape(state)}' style='{GREY}'>{view}</div>"


def controls_html(settings: Mapping[str, object], *, slider: tuple[float, float] | None = None) -> str:
    """A static summary of the controls' values (for a page without a kernel behind it).

    Example:
        >>> controls_html({"recipe": "counterbalanced", "layer": 15, "coefficient": 0.24}, slider=(-2.0, 2.0))
        "<div class='steerlab-controls-summary' ...
    """
    items = []
    for name, value in settings.items():
        shown = f"{value:g}" if isinstance(value, float) else str(value)
        if name == "coefficient" and slider is not None:
            shown += f" (slider {slider[0]:g} to {slider[1]:g})"
        items.append(f"<span style='white-space:nowrap'><b>{html.escape(name)}</b> {html.escape(shown)}</span>")
    return ("<div class='steerlab-controls-summary' style='display:flex;flex-flow:row wrap;gap:4px 16px;"
            "padding:6px;background:#f6f6f6;border:1px solid #ddd'>" + "".join(items) + "</div>")


def pane_html(title: str, prompt: str, side: Side) -> str:
    """One side's completions: the prompt in grey, each completion after it; greyed when stale.

    Example:
        >>> "opacity" in pane_html("steered", "Hi", Side(["there"], state="stale"))
        True
    """
    style = GREY if side.state in _GREYED else ""
    samples = side.texts or [""]
    body = "".join(f"<div class='steerlab-sample' style='margin-top:4px'><span style='color:#666'>"
                   f"{html.escape(prompt)}</span><span class='completion'>{html.escape(text)}</span></div>"
                   for text in samples)
    return (f"<div class='steerlab-pane' data-state='{side.state}' style='{style}border:1px solid #ccc;"
            f"padding:6px;min-height:6em;white-space:pre-wrap;overflow-wrap:anywhere;line-height:1.4'>"
            f"<b>{html.escape(title)}</b><i>{_NOTE.get(side.state, '')}</i>{body}</div>")


def lens_html(top: Sequence[tuple[str, float]], bottom: Sequence[tuple[str, float]], what: str) -> str:
    """The logit lens of a vector: its top and bottom tokens (readable strings) with their scores.

    Example:
        >>> lens_html([("␣dragon", 3.2)], [("␣goal", -2.9)], "the added vector (+v)")
        "<div class='steerlab-lens' ...
    """
    def listing(pairs: Sequence[tuple[str, float]]) -> str:
        return " ".join(f"<code title='logit {x:+.3f}'>{html.escape(token)}</code>"
                        f"<small style='color:#666'>{x:+.1f}</small>" for token, x in pairs)

    return (f"<div class='steerlab-lens' style='white-space:normal;overflow-wrap:anywhere'>"
            f"<b>lens of {html.escape(what)}</b> (logit-lens scores)<br><b>top:</b> {listing(top)}<br>"
            f"<b>bottom:</b> {listing(bottom)}</div>")


def metrics_html(rows: Sequence[MetricRow], *, state: str, generation: int, footer: str = "",
                 timing: str = "") -> str:
    """The numbers table (a header row, then ``rows``) and a footer line.

    Args:
        state: ``live``, ``done`` or ``stale`` (the whole table greyed).
        generation: the widget's generation counter, kept as ``data-generation``.
        footer: plain text under the table (escaped here).
        timing: plain text of the latest timings (escaped here).

    Example:
        >>> metrics_html([MetricRow("tokens", "30", "4", frozenset({"steered"}))], state="live", generation=3)
        "<div class='steerlab-numbers' data-state='live' data-generation='3' ...
    """
    def cell(value: str, pending: bool) -> str:
        style = "padding:0 10px 0 0;" + (GREY if pending else "")
        return f"<td class='{'steerlab-pending' if pending else 'steerlab-value'}' style='{style}'>{value}</td>"

    head = "<tr><td style='padding:0 10px 0 0'></td><td style='padding:0 10px 0 0'>unsteered</td>" \
           "<td style='padding:0 10px 0 0'>steered</td></tr>"
    body = "".join(f"<tr><td style='padding:0 10px 0 0'>{r.label}</td>"
                   f"{cell(r.unsteered, 'unsteered' in r.pending)}{cell(r.steered, 'steered' in r.pending)}</tr>"
                   for r in rows)
    style = GREY if state in _GREYED else ""
    return (f"<div class='steerlab-numbers' data-state='{html.escape(state)}' data-generation='{generation}' "
            f"style='{style}white-space:normal;line-height:1.5'><table>{head}{body}</table>"
            f"{html.escape(footer)}; <span class='steerlab-timing'>{html.escape(timing)}</span> "
            f"(generation {generation})</div>")


def range_html(view: RangeView | None, *, measuring: str | None = None) -> str:
    """The useful range under the slider (also drawn on its track, :func:`track_css`): where it ends,
    what ends it, and where the coefficient in use sits. ``measuring`` (what is being measured)
    replaces an old range while the new one is measured: a range is never shown for settings it
    was not measured for. Empty before the first measurement.

    Example:
        >>> range_html(RangeView(-0.3, 0.25, 1.25, 15, "counterbalanced", "all", 4, coefficient=0.5))
        "<div class='steerlab-range' data-state='done' data-inside='false' ...
    """
    if measuring is not None:
        return (f"<div class='steerlab-range' data-state='measuring' style='color:#666'><b>useful range</b> "
                f"<i>measuring for {html.escape(measuring)}…</i></div>")
    if view is None:
        return ""

    # enough digits that a coefficient just past an end never reads as equal to it (+0.181 past +0.179)
    digits = 2
    while (digits < 4 and view.coefficient is not None
           and f"{view.coefficient:+.{digits}f}" in (f"{view.low:+.{digits}f}", f"{view.high:+.{digits}f}")):
        digits += 1

    def end(x: float, reached: bool) -> str:
        return f"{x:+.{digits}f}" if reached else f"{x:+.{digits}f} (or beyond: the largest measured)"

    where = "inside" if view.inside else "past"
    now = "" if view.coefficient is None else f"; the coefficient {view.coefficient:+.{digits}f} is {where} it"
    return (f"<div class='steerlab-range' data-state='done' data-inside='{str(view.inside).lower()}' "
            f"style='white-space:normal;overflow-wrap:anywhere'>"
            f"<b>useful range</b> <span style='background:#d9efd9;padding:0 4px'>{end(view.low, view.reached_low)} "
            f"to {end(view.high, view.reached_high)}</span> × {UNIT_LABEL} for {html.escape(view.construction)} at "
            f"layer {view.layer}, {html.escape(view.position)} tokens{now}. <span style='color:#666'>Inside it the "
            f"perplexity of {view.texts} general texts under the steered model stays under {view.level:g} × the "
            f"unsteered one (notebook 04's matched-damage level); past it text often still reads well, so the "
            f"warnings below come from the steered text itself.</span></div>")


def track_css(css_class: str, low: float | None, high: float | None) -> str:
    """A ``<style>`` that paints the useful range on the slider's track, from ``low`` to ``high`` as
    fractions of the track (0 left end, 1 right end); nothing before a range is known.

    Example:
        >>> track_css("steerlab-coef-1", 0.4, 0.7)
        '<style>.steerlab-coef-1 .noUi-target { background: linear-gradient(...'
    """
    if low is None or high is None:
        return ""
    lo, hi = (round(100 * max(0.0, min(1.0, x)), 2) for x in (low, high))
    band = (f"linear-gradient(to right, #e8e8e8 0%, #e8e8e8 {lo}%, #8fd18f {lo}%, #8fd18f {hi}%, "
            f"#e8e8e8 {hi}%, #e8e8e8 100%)")
    return (f"<style>.{css_class} .noUi-target {{ background: {band} !important; }} "
            f".{css_class} .noUi-connects {{ background: transparent !important; }}</style>")


def warnings_html(warnings: Sequence[str]) -> str:
    """Warnings about the steered text itself (measured damage, repetition), each on its own line in a
    visible box; empty when there are none.

    Example:
        >>> warnings_html(["repetition: distinct-2 0.03 < 0.4"])
        "<div class='steerlab-warning' role='alert' ...
    """
    if not warnings:
        return ""
    items = "".join(f"<li>{html.escape(w)}</li>" for w in warnings)
    return ("<div class='steerlab-warning' role='alert' style='border-left:4px solid #d97706;background:#fff7e6;"
            "padding:4px 8px;margin:4px 0;white-space:normal;overflow-wrap:anywhere'>"
            f"<b>⚠ the steered text may be broken</b><ul style='margin:2px 0 2px 1.2em;padding:0'>{items}</ul></div>")


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; font-size: 14px; margin: 1rem auto; max-width: 1150px;
        padding: 0 1rem; color: #222; }}
.steerlab-widget > * {{ margin: 6px 0; }}
.steerlab-sides {{ display: flex; flex-flow: row wrap; gap: 12px; }}
.steerlab-sides > * {{ flex: 1 1 320px; min-width: 0; }}
</style></head>
<body><div class="steerlab-widget">
{body}
</div></body></html>
"""

# The order of the views on the page, as the widget stacks them.
PAGE_ORDER = ("controls", "status", "message", "range", "warnings", "sides", "metrics", "lens", "tokens", "saved")


def page_html(parts: Mapping[str, str], *, title: str = "steerlab steering widget") -> str:
    """A standalone page of the widget's views, stacked as the widget stacks them.

    ``parts`` maps a view's name (:data:`PAGE_ORDER`; ``unsteered`` and ``steered`` go side
    by side under ``sides``) to its HTML; ``controls`` may be a static summary of the settings.

    Example:
        >>> page = page_html({"unsteered": pane_html("unsteered", "Hi", Side(["there"], state="done"))})
        >>> page.startswith("<!DOCTYPE html>")
        True
    """
    chunks = []
    for name in PAGE_ORDER:
        if name == "sides":
            panes = [parts[s] for s in ("unsteered", "steered") if parts.get(s)]
            if panes:
                chunks.append("<div class='steerlab-sides'>" + "".join(f"<div>{p}</div>" for p in panes) + "</div>")
        elif parts.get(name):
            chunks.append(f"<div class='steerlab-{name}'>{parts[name]}</div>")
    return _PAGE.format(title=html.escape(title), body="\n".join(chunks))
