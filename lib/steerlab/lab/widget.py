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

from ..data import genres, load_dataset
from ..lens import top_tokens
from ..models import Model
from ..stats import ActivationStats, activation_stats
from ..steer import generate, relative_addition
from ..tokens import STEER_POSITIONS
from ..vectors import SteeringVector, counterbalanced, isolated, mean_centred, prompt_pair, raw

__all__ = ["WIDGET_RECIPES", "SteeringWidget", "relative_addition"]

WIDGET_RECIPES = ("raw", "mean_centred", "counterbalanced", "isolated", "prompt_pair")


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
        sets = [*genres(), "shakespeare", "general", "mixed"]
        layer = model.n_layers // 2 if layer is None else layer
        self.controls: dict[str, Any] = {
            "prompt": w.Textarea(value=prompt, description="prompt", layout=w.Layout(width="95%")),
            "recipe": w.Dropdown(options=list(WIDGET_RECIPES), value=recipe, description="recipe"),
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
        self._stats: dict[str, ActivationStats] = {}
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

    def _set_stats(self, name: str) -> ActivationStats:
        if name not in self._stats:
            split = "train" if name in (*genres(), "shakespeare", "general", "mixed") else None
            source: Any = load_dataset(name, split).sample(self.sample_size) if split else name
            position = "all_but_first" if split else "last"
            self._stats[name] = activation_stats(
                self.model, source, None, position=position, max_length=self.max_length, progress=False)
        return self._stats[name]

    def typical_norm(self, layer: int) -> float:
        """Mean activation norm at ``layer`` over general text (the coefficient's unit)."""
        general = self._set_stats("general")
        return float(general.mean_norm[general.index(layer)])

    def vector(self, s: dict[str, Any] | None = None) -> SteeringVector:
        """The steering vector the controls describe (all layers but prompt pairs)."""
        s = s or self.settings()
        m, recipe, layer = self.model, s["recipe"], s["layer"]
        target, reference = s["target"].strip(), s["reference"].strip()
        if not target:
            raise ValueError("target is empty: choose a set or type a prompt")
        if recipe == "prompt_pair":
            return prompt_pair(m, target, reference or " ", [layer])
        t = self._set_stats(target)
        layers = [layer]
        if recipe == "raw":
            return raw(m, t, layers)
        if recipe == "mean_centred":
            return mean_centred(m, t, self._set_stats("general"), layers)
        if not reference:
            raise ValueError(f"recipe {recipe} needs a reference set or prompt")
        ref = self._set_stats(reference)
        if recipe == "isolated":
            return isolated(m, t, ref, layers)
        return counterbalanced(m, t, ref, layers)

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
            lens_vec = v if v.dim() == 1 else v.sum(0)
            lens = top_tokens(self.model, lens_vec, k=10)
            stop = lambda: self._stale(request)
            if key not in self._unsteered_cache:
                plain = generate(self.model, prompt, max_new_tokens=key[1], seed=key[2], should_stop=stop)[0].text
                if self._stale(request):
                    return
                self._unsteered_cache[key] = plain
            addition = relative_addition(v, self.typical_norm(s["layer"]), float(s["coefficient"]))
            steered_vec = SteeringVector({s["layer"]: addition}, vec.model_name, vec.model_fingerprint,
                                         vec.d_model, vec.recipe, vec.sources, vec.position)
            steered = generate(self.model, prompt, steered_vec, coefficients=1.0, position=s["position"],
                               max_new_tokens=key[1], seed=key[2], should_stop=stop)[0].text
            header = (f"steered: {vec.describe()} × {s['coefficient']:+.2f}, "
                      f"added at position rule {s['position']}")
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
