"""The steering widget's controls and output areas (ipywidgets), laid out in one box.

The controller (:mod:`steerlab.lab.widget`) wires them; nothing here reacts to a change. The
coefficient slider is an integer slider over a signed logarithmic scale
(:class:`steerlab.lab.widget_state.CoefficientScale`) with no readout of its own: the text box
beside it shows the coefficient and takes any finite number, and the useful range is painted on
the slider's track by a ``<style>`` in the ``track`` area (:func:`steerlab.lab.widget_view.track_css`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ipywidgets as w

from ..constructions import CONSTRUCTIONS, named_sets
from ..steer import OPERATORS
from ..tokens import STEER_POSITIONS
from .widget_state import CoefficientScale, Settings

__all__ = ["AREAS", "Layout", "build_controls"]

AREAS = ("unsteered", "steered", "metrics", "lens", "tokens", "range_note", "warnings", "status", "message", "saved",
         "track")
"""The output areas (HTML), by name."""


@dataclass
class Layout:
    """The controls by name, the output areas by name, the save button and the box holding them all."""

    controls: dict[str, Any]
    areas: dict[str, w.HTML]
    save_button: w.Button
    ui: w.VBox


def build_controls(s: Settings, *, n_layers: int, scale: CoefficientScale, save_dir: Path,
                   slider_class: str) -> Layout:
    """The widget's controls at the settings ``s`` and its empty output areas, stacked as shown.

    Example:
        >>> layout = build_controls(Settings(), n_layers=30, scale=CoefficientScale(), save_dir=Path("vectors"),
        ...                         slider_class="steerlab-coef-1")
        >>> layout.controls["layer"].max
        29
    """
    narrow, label = w.Layout(width="auto"), {"description_width": "initial"}
    slider = w.Layout(width="22em", max_width="100%")  # "auto" collapses a slider's track
    sets = named_sets()
    start = 0 if s.coefficient is None else scale.position(s.coefficient)
    controls: dict[str, Any] = {
        "prompt": w.Textarea(value=s.prompt, description="prompt", continuous_update=False,
                             placeholder="the prompt (applies when the box loses focus)",
                             layout=w.Layout(width="98%"), style=label),
        "recipe": w.Dropdown(options=list(CONSTRUCTIONS), value=s.construction, description="construction",
                             layout=narrow, style=label),
        "target": w.Combobox(value=s.target, options=sets, description="target", ensure_option=False,
                             continuous_update=False, placeholder="a set name (Enter)", layout=narrow, style=label),
        "reference": w.Combobox(value=s.reference, options=sets, description="reference", ensure_option=False,
                                continuous_update=False, placeholder="a set name (Enter)", layout=narrow, style=label),
        "layer": w.IntSlider(value=s.layer, min=0, max=n_layers - 1, description="layer", continuous_update=False,
                             layout=slider, style=label),
        "coefficient": w.IntSlider(value=start, min=-scale.steps, max=scale.steps, step=1, description="coefficient",
                                   continuous_update=False, readout=False,
                                   tooltip="logarithmic: each step about 6% of the coefficient", layout=slider,
                                   style=label),
        "coefficient_text": w.Text(value="" if s.coefficient is None else f"{s.coefficient:g}",
                                   continuous_update=False, placeholder="measuring…", tooltip="any number (Enter)",
                                   layout=w.Layout(width="5.5em")),
        "position": w.Dropdown(options=list(STEER_POSITIONS), value=s.position, description="position", layout=narrow,
                               style=label),
        "operator": w.Dropdown(options=list(OPERATORS), value=s.operator, description="operator", layout=narrow,
                               style=label),
        "max_new_tokens": w.IntSlider(value=s.max_new_tokens, min=1, max=200, description="new tokens",
                                      continuous_update=False, layout=slider, style=label),
        "seed": w.IntText(value=s.seed, description="seed", continuous_update=False, layout=w.Layout(width="9em"),
                          style=label),
        "samples": w.IntSlider(value=s.samples, min=1, max=8, description="samples per side", continuous_update=False,
                               layout=slider, style=label),
        "greedy": w.Checkbox(value=s.greedy, description="greedy", indent=False, layout=narrow),
        "temperature": w.FloatSlider(value=s.temperature, min=0.05, max=2.0, step=0.05, description="temperature",
                                     continuous_update=False, layout=slider, style=label),
        "top_p": w.FloatSlider(value=s.top_p, min=0.05, max=1.0, step=0.05, description="top-p",
                               continuous_update=False, layout=slider, style=label),
        "token_text": w.Text(value="", description="per-token text", continuous_update=False,
                             placeholder="empty: the prompt and the steered completion (Enter)",
                             layout=w.Layout(width="98%"), style=label),
        "save_path": w.Text(value="", description="save as", continuous_update=False,
                            placeholder=f"a path stem (default: under {save_dir})", layout=w.Layout(width="24em"),
                            style=label),
    }
    controls["coefficient"].add_class(slider_class)
    save_button = w.Button(description="save vector + show code", layout=narrow)
    save_button.add_class("steerlab-save-button")
    side = w.Layout(flex="1 1 320px", min_width="0")
    areas = {name: w.HTML(layout=side if name in ("unsteered", "steered") else
                          w.Layout() if name in ("status", "track") else w.Layout(width="98%")) for name in AREAS}
    for name, area in areas.items():
        area.add_class("steerlab-range" if name == "range_note" else f"steerlab-{name}")

    def row(*children: Any) -> w.HBox:
        return w.HBox(list(children), layout=w.Layout(flex_flow="row wrap", width="100%", align_items="center",
                                                      grid_gap="2px 12px"))

    c, a = controls, areas
    ui = w.VBox([
        row(c["recipe"], c["target"], c["reference"]),
        row(c["layer"], w.HBox([c["coefficient"], c["coefficient_text"]]), c["position"], c["operator"]),
        a["track"], a["range_note"],
        row(c["max_new_tokens"], c["seed"], c["samples"], c["greedy"], c["temperature"], c["top_p"]),
        c["prompt"], row(a["status"], a["message"]), a["warnings"], row(a["unsteered"], a["steered"]),
        a["metrics"], a["lens"], c["token_text"], a["tokens"], row(c["save_path"], save_button), a["saved"],
    ], layout=w.Layout(width="100%", max_width="100%", overflow="hidden"))
    ui.add_class("steerlab-widget")
    return Layout(controls, areas, save_button, ui)
