"""A live steering widget for Jupyter: sliders for layer, coefficient, recipe,
sets or prompts, position, length and seed; unsteered and steered completions
side by side with the lens tokens of the current vector.

Feels live because statistics are computed once per set (all layers in one
pass) and kept, the unsteered completion is kept per (prompt, length, seed),
and a change while a generation runs stops that generation at its next step
(the newer request supersedes it instead of queueing behind it). Errors show
in the widget; they never reach the kernel.

The coefficient is in units of the layer's typical activation norm (the mean
norm over general text, first token excluded): the added vector has norm
``coefficient * typical_norm``, whatever recipe made it.
"""

from __future__ import annotations

import html
import threading
import traceback
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import ipywidgets as w

from ..constructions import CONSTRUCTIONS, build, named_sets, typical_norm
from ..lens import top_tokens
from ..models import Model
from ..steer import generate
from ..tokens import STEER_POSITIONS
from ..vectors import SteeringVector

__all__ = ["SteeringWidget", "second_input"]


def second_input(construction: str) -> str | None:
    """The role of the widget's second box for a construction (``None``: the box is unused)."""
    roles = [r for r in CONSTRUCTIONS[construction].inputs if r not in ("target", "plus")]
    return roles[0] if roles else None


class SteeringWidget:
    """Interactive steering. Show it with ``display(SteeringWidget(model).ui)``.

    Args:
        model: from :func:`steerlab.load_model`.
        sample_size: texts sampled from a set to build its mean.
        background: generate in a worker thread (True in notebooks; tests pass False
            to run each update synchronously).

    Example:
        >>> ui = SteeringWidget(model)
        >>> ui.controls["coefficient"].value = 1.0   # re-generates the steered side only
    """

    def __init__(self, model: Model, *, prompt: str = "Yesterday, my son was out kicking a football. Then, he",
                 recipe: str = "counterbalanced", target: str = "fantasy", reference: str = "sports",
                 layer: int | None = None, coefficient: float = 0.5, position: str = "all_prompt",
                 max_new_tokens: int = 30, seed: int = 0, sample_size: int = 32, max_length: int = 128,
                 background: bool = True) -> None:
        self.model = model
        self.sample_size = sample_size
        self.max_length = max_length
        self.background = background
        sets = named_sets()
        layer = model.n_layers // 2 if layer is None else layer
        self.controls: dict[str, Any] = {
            "prompt": w.Textarea(value=prompt, description="prompt", layout=w.Layout(width="95%")),
            "recipe": w.Dropdown(options=list(CONSTRUCTIONS), value=recipe, description="recipe"),
            "target": w.Combobox(value=target, options=sets, description="target",
                                 placeholder="a set name or a prompt", ensure_option=False),
            "reference": w.Combobox(value=reference, options=sets, description="reference",
                                    placeholder="a set name or a prompt", ensure_option=False),
            "layer": w.IntSlider(value=layer, min=0, max=model.n_layers - 1, description="layer",
                                 continuous_update=False),
            "coefficient": w.FloatSlider(value=coefficient, min=-4.0, max=4.0, step=0.05,
                                         description="coefficient", continuous_update=False),
            "position": w.Dropdown(options=list(STEER_POSITIONS), value=position, description="position"),
            "max_new_tokens": w.IntSlider(value=max_new_tokens, min=5, max=120, description="new tokens",
                                          continuous_update=False),
            "seed": w.IntText(value=seed, description="seed"),
        }
        self.unsteered = w.HTML(layout=w.Layout(width="48%"))
        self.steered = w.HTML(layout=w.Layout(width="48%"))
        self.unsteered.add_class("steerlab-unsteered")
        self.steered.add_class("steerlab-steered")
        self.lens = w.HTML()
        self.lens.add_class("steerlab-lens")
        self.status = w.HTML()
        self.status.add_class("steerlab-status")
        self.ui = w.VBox([
            w.HBox([self.controls["recipe"], self.controls["target"], self.controls["reference"]]),
            w.HBox([self.controls["layer"], self.controls["coefficient"], self.controls["position"]]),
            w.HBox([self.controls["max_new_tokens"], self.controls["seed"]]),
            self.controls["prompt"], self.status, w.HBox([self.unsteered, self.steered]), self.lens,
        ])
        self._unsteered_cache: dict[tuple[str, int, int], str] = {}
        self._request_id = 0
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1) if background else None
        self.last_error: str | None = None
        self.last_steered: str | None = None
        self.last_unsteered: str | None = None
        for control in self.controls.values():
            control.observe(lambda _change: self.refresh(), names="value")
        self.refresh()

    # -- what the controls say -------------------------------------------------
    def settings(self) -> dict[str, Any]:
        return {name: control.value for name, control in self.controls.items()}

    def typical_norm(self, layer: int) -> float:
        """Mean activation norm at ``layer`` over general text (the coefficient's unit)."""
        return typical_norm(self.model, layer, sample_size=self.sample_size, max_length=self.max_length)

    def vector(self, s: dict[str, Any] | None = None) -> SteeringVector:
        """The steering vector the controls describe, built by :func:`steerlab.constructions.build`.

        For ``prompt_pair`` the boxes hold the plus and minus texts; for the other
        constructions, named sets; the second box is the construction's second input
        (reference, counter, minus) and is unused by ``raw``, ``mean_centred``, ``random``, ``bias``.
        """
        s = s or self.settings()
        name, layer = s["recipe"], s["layer"]
        first, second = s["target"].strip(), s["reference"].strip()
        spec: dict[str, Any] = {"sample_size": self.sample_size, "max_length": self.max_length,
                                "seed": int(s["seed"]) if name == "random" else 0}
        if name == "prompt_pair":  # texts as typed: a leading space is part of the prompt's tokens
            spec.update(plus=s["target"] if first else "", minus=s["reference"] if second else " ")
        else:
            spec["target"] = first or None
            role = second_input(name)
            if role is not None and second:
                spec[role] = second
        return build(name, self.model, [layer], **spec)

    # -- updating ---------------------------------------------------------------
    def refresh(self) -> None:
        """Recompute for the current settings, superseding any generation in flight."""
        with self._lock:
            self._request_id += 1
            request = self._request_id
        settings = self.settings()
        if self._pool is None:
            self._run(request, settings)
        else:
            self.status.value = "<i>generating…</i>"
            self._pool.submit(self._run, request, settings)

    def _stale(self, request: int) -> bool:
        return request != self._request_id

    def _run(self, request: int, s: dict[str, Any]) -> None:
        try:
            if self._stale(request):
                return
            prompt = s["prompt"].strip()
            if not prompt:
                raise ValueError("the prompt is empty")
            key = (prompt, int(s["max_new_tokens"]), int(s["seed"]))
            vec = self.vector(s)
            v = vec.at(s["layer"])
            lens_vec = (v if v.dim() == 1 else v.sum(0)) * (-1.0 if float(s["coefficient"]) < 0 else 1.0)
            lens = top_tokens(self.model, lens_vec, k=10)
            stop = lambda: self._stale(request)
            if key not in self._unsteered_cache:
                plain = generate(self.model, prompt, max_new_tokens=key[1], seed=key[2], should_stop=stop)[0].text
                if self._stale(request):
                    return
                self._unsteered_cache[key] = plain
            steered = generate(self.model, prompt, vec, layer=s["layer"], coefficients=float(s["coefficient"]),
                               position=s["position"], max_new_tokens=key[1], seed=key[2],
                               should_stop=stop)[0].text
            role = second_input(s["recipe"])
            header = (f"steered: {vec.describe()} × {s['coefficient']:+.2f} typical norm, added at "
                      f"{s['position']} tokens" + ("" if role else " (second box unused)"))
            with self._lock:  # a newer request may not slip in between the check and the update
                if self._stale(request):
                    return
                self.last_unsteered, self.last_steered, self.last_error = self._unsteered_cache[key], steered, None
                self.unsteered.value = _panel("unsteered", prompt, self.last_unsteered)
                self.steered.value = _panel(header, prompt, steered)
                self.lens.value = "<b>lens, top tokens of the vector:</b> " + " ".join(
                    f"<code>{html.escape(repr(t))}</code>" for t, _ in lens)
                self.status.value = "ready"
        except Exception as err:  # noqa: BLE001 - shown in the widget, never raised into the kernel
            if not self._stale(request):
                self.last_error = f"{type(err).__name__}: {err}"
                self.status.value = f"<span style='color:#b00'>error: {html.escape(self.last_error)}</span>"
                traceback.print_exc(limit=0)


def _panel(title: str, prompt: str, text: str) -> str:
    return (f"<div style='border:1px solid #ccc;padding:6px;min-height:6em'><b>{html.escape(title)}</b><br>"
            f"<span style='color:#666'>{html.escape(prompt)}</span>"
            f"<span class='completion'>{html.escape(text)}</span></div>")
