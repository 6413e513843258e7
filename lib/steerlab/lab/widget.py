"""A live steering widget for Jupyter (the controller): every construction of the registry,
layer, coefficient, position, operator and sampling settings; unsteered and steered
completions streamed side by side as they are generated, with live measures, the lens of
the added vector, a per-token projection view, and a button that saves the vector and
shows the code that reproduces the steered generation.

The widget shows, the study measures. Three parts:

- **the controller** (:class:`SteeringWidget`): the controls, what they say, the state on
  show and the worker thread;
- **the state** (:mod:`steerlab.lab.widget_state`): the settings as one typed value, the
  coefficient slider's scale, the reproduce code and a save's file name;
- **the view** (:mod:`steerlab.lab.widget_view`): pure functions from that state to HTML.

Every number comes from the library or the study: the steering rows from
:func:`steerlab.steer.rows` (so the reproduce code gives the same tokens, coefficient 0 included,
under every operator), streaming from :func:`steerlab.steer.steered_generate`'s ``on_step``, the
useful range from :func:`steerlab.study.matched.damage_range` (notebook 04's grid, level and
rule, measured at the position the widget steers and marked on the slider's track), the
warnings from :func:`steerlab.study.matched.text_warnings` (damage and repetition of the steered
text itself: leaving the range is not a warning), the concept score from
:class:`steerlab.study.judge.ConceptJudge`.

What makes it feel live: the unsteered and steered rows generate in one batched call and show
as they stream; the unsteered completion is kept per (model, prompt, new tokens, seed, sampling);
statistics and ranges are computed once and kept; text boxes apply on Enter, sliders when
released; a change while a generation runs stops it at its next step; the worker thread runs
torch on ``threads`` threads (default :func:`default_threads`).

The coefficient is in units of the layer's centred norm, as in :func:`steerlab.generate`. Its
slider is signed and logarithmic (:class:`steerlab.lab.widget_state.CoefficientScale`: about 6%
a step), the box beside it takes any finite number.
"""

from __future__ import annotations

import html
import math
import os
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from ..constructions import CONSTRUCTIONS, build
from ..intervention import Intervention
from ..metrics import completion_perplexity
from ..models import Model
from ..projection import token_projections
from ..sets import UNIT_LABEL, unit_norm
from ..steer import eos_ids, relative_scale, row_keys, rows, steered_generate, until_eos
from ..study.matched import DAMAGE_TEXTS, DamageRange, damage_range, fluent_perplexity, text_warnings
from ..study.vocab import vocabularies
from ..vectors import SteeringVector
from .tokens_view import tokens_html
from .widget_controls import build_controls
from .widget_numbers import Judge, lens_view, numbers_view
from .widget_state import CoefficientScale, Settings, first_input, second_input
from .widget_view import (
    RangeView,
    Side,
    controls_html,
    grey,
    pane_html,
    range_html,
    track_css,
    warnings_html,
)
from .widget_view import page_html as _page_html

__all__ = ["SteeringWidget", "default_threads", "second_input"]

FLUSH_SECONDS = 0.08  # the shortest interval between two streamed updates of the page
_COUNTER = iter(range(1, 1 << 30))  # one CSS class per widget, for its slider's track


def default_threads() -> int:
    """Torch threads for the widget's worker: ``min(2, cpu_count - 1)`` (at least 1), capped by
    ``OMP_NUM_THREADS`` where that is set.

    One core is left to the kernel's own thread, the Jupyter server and the browser. Seen on a
    busy 2-core machine: first tokens of a 30-token completion after 0.7 s on 1 thread, 5.6-8.7 s
    on 2 (the OpenMP threads wait on each other).

    Example:
        >>> default_threads() <= 2
        True
    """
    n = max(1, min(2, (os.cpu_count() or 1) - 1))
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) >= 1:
        n = min(n, int(env))
    return n


class SteeringWidget:
    """Interactive steering. Show it with ``display(SteeringWidget(model).ui)``.

    Args:
        model: from :func:`steerlab.load_model`.
        prompt, recipe, target, reference, layer, position, operator, max_new_tokens, seed,
            samples, greedy, temperature, top_p, sample_size, max_length: the first settings
            (:class:`steerlab.lab.widget_state.Settings`; ``recipe`` is a construction of
            :data:`steerlab.constructions.CONSTRUCTIONS`, ``reference`` fills the second box).
        coefficient: the first coefficient (x the centred norm); ``None`` (default): the measured
            useful range's upper end.
        save_dir: where the save button writes (default ``vectors``; notebook 03 passes its run's).
        judge: show the concept judge's score (trains it once, about 10 s, in the background).
        threads: torch threads in the worker (default :func:`default_threads`).
        background: generate in a worker thread (tests pass False to run each update synchronously).

    Example:
        >>> ui = SteeringWidget(model, layer=15, save_dir="runs/latest/vectors")
        >>> ui.controls["coefficient_text"].value = "0.2"   # re-generates the steered side only
    """

    def __init__(self, model: Model, *, prompt: str = Settings.prompt, recipe: str = "counterbalanced",
                 target: str = "fantasy", reference: str = "sports", layer: int | None = None,
                 coefficient: float | None = None, position: str = "all", operator: str = "add",
                 max_new_tokens: int = 30, seed: int = 0, samples: int = 1, greedy: bool = False,
                 temperature: float = 1.0, top_p: float = 0.3, sample_size: int = Settings.sample_size,
                 max_length: int = Settings.max_length, save_dir: str | Path | None = None, judge: bool = True,
                 threads: int | None = None, background: bool = True) -> None:
        if recipe not in CONSTRUCTIONS:
            raise ValueError(f"unknown construction {recipe!r}; expected one of {', '.join(CONSTRUCTIONS)}")
        if coefficient is not None and not (isinstance(coefficient, (int, float)) and math.isfinite(coefficient)):
            raise ValueError(f"coefficient must be a finite number or None (the measured default), got {coefficient!r}")
        self.model = model
        self.background = background
        self.save_dir = Path("vectors") if save_dir is None else Path(save_dir).expanduser()
        self.threads = default_threads() if threads is None else int(threads)
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads!r}")
        self.scale = CoefficientScale()
        self._first = Settings(prompt=prompt, construction=recipe, target=target, reference=reference,
                               layer=model.n_layers // 2 if layer is None else int(layer),
                               coefficient=None if coefficient is None else float(coefficient), position=position,
                               operator=operator, max_new_tokens=max_new_tokens, seed=seed, samples=samples,
                               greedy=greedy, temperature=temperature, top_p=top_p, sample_size=sample_size,
                               max_length=max_length)
        self._coefficient = self._first.coefficient
        self._css = f"steerlab-coef-{next(_COUNTER)}"
        layout = build_controls(self._first, n_layers=model.n_layers, scale=self.scale, save_dir=self.save_dir,
                                slider_class=self._css)
        self.controls, self.ui, self.save_button = layout.controls, layout.ui, layout.save_button
        a = layout.areas
        self.unsteered, self.steered, self.metrics, self.lens, self.tokens = (
            a["unsteered"], a["steered"], a["metrics"], a["lens"], a["tokens"])
        self.range_note, self.track, self.warnings, self.status, self.message, self.saved = (
            a["range_note"], a["track"], a["warnings"], a["status"], a["message"], a["saved"])
        self._syncing = False
        self._notices: dict[str, str] = {}
        self._unsteered_cache: dict[tuple[Any, ...], Side] = {}
        self._sides = {"unsteered": Side(), "steered": Side()}
        self._prompt_shown = ""
        self._titles: dict[str, str] = {}
        self.last_saved: Path | None = None
        self._request_id = 0
        self._started = time.perf_counter()
        self._lock = threading.RLock()
        self._pool = (ThreadPoolExecutor(max_workers=1, initializer=torch.set_num_threads,
                                         initargs=(self.threads,)) if background else None)
        self.generations = 0  # steered_generate calls started (a typed word should start one)
        self.timings: dict[str, float] = {}  # first_tokens_s, completion_s of the last finished run
        self.last_error: str | None = None
        self.last_steered: str | None = None
        self.last_unsteered: str | None = None
        self.current: dict[str, Any] | None = None  # vector, settings and addition of the last good run
        self.range: DamageRange | None = None  # the useful range of the settings on show
        self.warnings_found: list[str] = []
        self._metrics_args: tuple[Any, ...] | None = None
        self.judge = Judge(enabled=judge, background=background, on_ready=self._judge_ready)
        self._relabel()
        for name, control in self.controls.items():
            handler = {"coefficient": self._on_slider, "coefficient_text": self._on_coefficient_text}.get(name)
            if name == "token_text":
                control.observe(lambda _change: self._submit(self._run_tokens_view, self._request_id), names="value")
            elif handler is not None:
                control.observe(handler, names="value")
            elif name != "save_path":
                control.observe(lambda _change: self.refresh(), names="value")
        self.save_button.on_click(lambda _button: self.save())
        self.refresh()

    # -- what the controls say -------------------------------------------------
    def settings(self) -> Settings:
        """The controls' values; ``coefficient`` is the one in use (the box's, which may lie past the
        slider's ends; ``None`` until the first useful range gives the default)."""
        c = self.controls
        return self._first.with_(prompt=c["prompt"].value, construction=c["recipe"].value, target=c["target"].value,
                                 reference=c["reference"].value, layer=int(c["layer"].value),
                                 coefficient=self._coefficient, position=c["position"].value,
                                 operator=c["operator"].value, max_new_tokens=int(c["max_new_tokens"].value),
                                 seed=int(c["seed"].value), samples=int(c["samples"].value),
                                 greedy=bool(c["greedy"].value), temperature=float(c["temperature"].value),
                                 top_p=float(c["top_p"].value))

    def vector(self, s: Settings | None = None) -> SteeringVector:
        """The steering vector the settings describe, built by :func:`steerlab.constructions.build`."""
        s = s or self.settings()
        name, spec = s.build_spec()
        return build(name, self.model, [s.layer], **spec)

    def reproduce_code(self, *, load_model: bool = True, path: str | Path | None = None,
                       settings: Settings | None = None) -> str:
        """Python lines that reproduce the steered generation on show (:meth:`Settings.reproduce_code`)."""
        s = settings or (self.current["settings"] if self.current is not None else self.settings())
        return s.reproduce_code(self.model.name, load_model=load_model, path=path)

    def file_stem(self, s: Settings | None = None) -> str:
        """A save's default name (:meth:`Settings.file_stem`)."""
        return (s or (self.current["settings"] if self.current is not None else self.settings())).file_stem()

    def page_html(self) -> str:
        """The views on show as one standalone HTML page (the controls as a static summary).

        Example:
            >>> Path("widget.html").write_text(ui.page_html())
        """
        shown = {k: v for k, v in self.settings().as_dict().items() if k != "prompt"}
        views = {name: getattr(self, name).value for name in
                 ("status", "message", "warnings", "unsteered", "steered", "metrics", "lens", "tokens", "saved")}
        ends = (self.scale.coefficient(-self.scale.steps), self.scale.coefficient(self.scale.steps))
        return _page_html({"controls": controls_html(shown, slider=ends), "range": self.range_note.value, **views})

    # -- the coefficient: a logarithmic slider over the track and a box for any number ---
    def _set_coefficient(self, value: float, *, source: str) -> None:
        self._coefficient = value
        self._syncing = True
        try:
            if source != "slider":
                self.controls["coefficient"].value = self.scale.position(value)
            if source != "text":
                self.controls["coefficient_text"].value = f"{value:g}"
        finally:
            self._syncing = False
        ends = self.scale.coefficient(-self.scale.steps), self.scale.coefficient(self.scale.steps)
        if ends[0] <= value <= ends[1]:
            self._notices.pop("coefficient", None)
        else:
            self._notices["coefficient"] = (f"coefficient {value:g} is past the slider's ends {ends[0]:g} to "
                                            f"{ends[1]:g}: steering with {value:g} as typed (the slider shows its end)")
        self._show_message()

    def _on_slider(self, change: dict[str, Any]) -> None:
        if not self._syncing:
            self._set_coefficient(round(self.scale.coefficient(int(change["new"])), 4), source="slider")
            self.refresh()

    def _on_coefficient_text(self, change: dict[str, Any]) -> None:
        if self._syncing:
            return
        text = str(change["new"]).strip()
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not math.isfinite(value):
            self._notices["coefficient"] = (f"coefficient {text!r} is not a finite number; still steering with "
                                            f"{self._coefficient}")
            self._show_message()
            return
        self._set_coefficient(value, source="text")
        self.refresh()

    def _relabel(self) -> None:
        """Label the two boxes by their roles in the chosen construction; disable unused ones and
        the sampling controls under greedy decoding."""
        name = self.controls["recipe"].value
        first, second = first_input(name), second_input(name)
        for box, role, unused in (("target", first, "target (unused)"), ("reference", second, "second (unused)")):
            self.controls[box].description = role or unused
            self.controls[box].disabled = role is None
        for control in ("samples", "temperature", "top_p"):
            self.controls[control].disabled = bool(self.controls["greedy"].value)

    def _show_message(self, error: str | None = None) -> None:
        if error is not None:
            self._notices["run"] = error
        elif "run" in self._notices and self.last_error is None:
            self._notices.pop("run")
        self.message.value = "".join(f"<div style='color:#b00;white-space:pre-wrap;overflow-wrap:anywhere'>"
                                     f"{html.escape(text)}</div>" for text in self._notices.values())

    # -- updating ---------------------------------------------------------------
    def _stale(self, request: int) -> bool:
        return request != self._request_id

    def _submit(self, fn: Callable[..., None], *args: Any) -> None:
        if self._pool is not None:
            self._pool.submit(fn, *args)
            return
        before = torch.get_num_threads()  # in the caller's thread, on the widget's torch threads, then restored
        torch.set_num_threads(self.threads)
        try:
            fn(*args)
        finally:
            torch.set_num_threads(before)

    def refresh(self) -> None:
        """Recompute for the current settings, superseding any generation in flight: everything computed
        for the old settings is greyed at once, and a range not measured for the new ones is replaced
        by "measuring"."""
        self._relabel()
        settings = self.settings()
        with self._lock:
            self._request_id += 1
            request = self._request_id
            self._started = time.perf_counter()
            self.status.value = "<i>generating…</i>"
            for view in (self.metrics, self.lens, self.tokens, self.warnings):  # the numbers first
                if view.value and "steerlab-stale" not in view.value.split(">")[0]:
                    view.value = grey(view.value)
            if self.range is None or self.current is None or self._range_for(settings) != self._range_for(
                    self.current["settings"]):
                self.range_note.value = range_html(None, measuring=f"{settings.construction} at layer "
                                                                   f"{settings.layer}, {settings.position} tokens")
                self.track.value = ""
            self._grey("steered")
            if settings.unsteered_key(self.model.fingerprint) not in self._unsteered_cache:
                self._grey("unsteered")
        self._submit(self._run, request, settings)

    @staticmethod
    def _range_for(s: Settings) -> tuple[Any, ...]:
        return (*s.vector_key(), s.position)

    def _show_range(self, s: Settings, found: DamageRange) -> None:
        self.range = found
        self.range_note.value = range_html(RangeView(found.low, found.high, found.level, s.layer, s.construction,
                                                     s.position, DAMAGE_TEXTS, found.reached_low, found.reached_high,
                                                     s.coefficient))
        self.track.value = track_css(self._css, self.scale.fraction(found.low), self.scale.fraction(found.high))

    def _grey(self, side: str) -> None:
        if self._sides[side].state in ("live", "done"):
            self._sides[side].state = "stale"
            self._render_side(side)

    def _render_side(self, side: str, title: str | None = None) -> None:
        pane = self.unsteered if side == "unsteered" else self.steered
        if title is not None:
            self._titles[side] = title
        pane.value = pane_html(self._titles.get(side, side), self._prompt_shown, self._sides[side])

    def _run(self, request: int, s: Settings) -> None:
        try:
            if not self._stale(request):
                self._generate(request, s)
        except Exception as err:  # noqa: BLE001 - shown in the widget, never raised into the kernel
            with self._lock:
                if self._stale(request):
                    return
                self.last_error = f"{type(err).__name__}: {err}"
                for side in ("unsteered", "steered"):
                    if self._sides[side].state in ("live", "done", "stale"):
                        self._sides[side].state = "error"
                        self._render_side(side)
                self.status.value = "<span style='color:#b00'>error (see the message)</span>"
                self._show_message(self.last_error)
            traceback.print_exc(limit=0)

    def _measure_range(self, request: int, s: Settings, v: torch.Tensor) -> DamageRange | None:
        """The useful range at the settings' layer and position (the study's, kept there), shown on the track."""
        with self._lock:
            if not self._stale(request):
                self.status.value = "<i>measuring the useful range on general text…</i>"
        try:
            found = damage_range(self.model, v, s.layer, position=s.position)
            self._notices.pop("range", None)
        except Exception as err:  # noqa: BLE001 - the text still shows; the range says why it is missing
            self._notices["range"] = f"useful range not measured: {type(err).__name__}: {err}"
            self._show_message()
            return None
        with self._lock:
            if not self._stale(request):
                if self._coefficient is None:
                    self._set_coefficient(round(found.high, 4), source="range")
                self._show_range(s.with_(coefficient=self._coefficient), found)
        return found

    def _generate(self, request: int, s: Settings) -> None:
        prompt = s.prompt.strip()
        if not prompt:
            raise ValueError("the prompt is empty: type a prompt to continue")
        self.status.value = "<i>building the vector (each set's statistics are computed once)…</i>"
        vec = self.vector(s)
        v = vec.at(s.layer)
        if v.dim() != 1:
            raise ValueError(f"the {vec.recipe} vector has shape {tuple(v.shape)}; the widget steers with one "
                             "[d_model] vector")
        size = unit_norm(self.model, s.layer)
        if s.coefficient is None:  # the first default comes from the measured range
            self._measure_range(request, s, v)
            if self._stale(request):
                return
            if self._coefficient is None:
                self._set_coefficient(0.25, source="range")  # the range failed: notebook 04's middle coefficient
            s = s.with_(coefficient=self._coefficient)
        coefficient = float(s.coefficient or 0.0)
        key = s.unsteered_key(self.model.fingerprint)
        cached = self._unsteered_cache.get(key)
        name, spec = s.build_spec()
        inputs = ", ".join(f"{k}={x!r}" for k, x in spec.items() if k not in ("sample_size", "max_length"))
        title = (f"steered: {name}({inputs}) at layer {s.layer} × {coefficient:+.2f} {UNIT_LABEL}, "
                 f"{s.operator} at {s.position} tokens")
        with self._lock:
            if self._stale(request):
                return
            self.lens.value = lens_view(self.model, v * (1.0 if coefficient >= 0 else -1.0), coefficient, s.operator)
            self._prompt_shown = prompt
            self.status.value = "<i>generating…</i>"
        n = s.n
        n_plain = 0 if cached is not None else n
        # The library's rows, so the reproduce code gives these tokens: the steered side is exactly
        # sl.generate's rows, with the keys sl.generate would give them.
        steered = rows(self.model, v, [coefficient] * n, layer=s.layer, scale=size, operator=s.operator,
                       position=s.position)
        edit = Intervention.concat([Intervention.plain(n_plain, s.layer, s.position, s.operator), steered]) \
            if n_plain else steered
        keys = row_keys([prompt] * n_plain, [None] * n_plain) + row_keys([prompt] * n, steered.adds)
        vocab = vocabularies().get(s.target.strip())
        eos, tok = eos_ids(self.model), self.model.tokenizer
        last_flush, live = [0.0], {}  # type: ignore[var-annotated]

        def show(ids: list[list[int]]) -> None:
            """The rows so far, as live text (their perplexities come after the generation)."""
            with self._lock:
                if self._stale(request):
                    return
                now = time.perf_counter()
                if "first_tokens_s" not in live and ids and ids[0]:
                    live["first_tokens_s"] = now - self._started
                ids = [until_eos(r, eos) for r in ids]
                texts = [tok.decode(r, skip_special_tokens=True) for r in ids]
                if n_plain:
                    self._sides["unsteered"] = Side(texts[:n_plain], ids[:n_plain], [], "live")
                    self._render_side("unsteered", "unsteered")
                self._sides["steered"] = Side(texts[n_plain:], ids[n_plain:], [], "live")
                self._render_side("steered", title)
                self.metrics.value = self._numbers(vocab, s, size, live, "live")
                last_flush[0] = now

        def on_step(ids: list[list[int]]) -> None:
            if time.perf_counter() - last_flush[0] >= FLUSH_SECONDS:
                show(ids)

        if cached is not None:
            with self._lock:
                self._sides["unsteered"] = Side(list(cached.texts), list(cached.ids), list(cached.perplexity), "done")
                self._render_side("unsteered", "unsteered")
        self.generations += 1
        ids = steered_generate(self.model, [prompt] * edit.n_rows, edit, max_new_tokens=s.max_new_tokens,
                               should_stop=lambda: self._stale(request), on_step=on_step, row_keys=keys,
                               **s.sampling())
        if self._stale(request):
            return
        show(ids)  # the whole text, its perplexity still to come
        perplexity = completion_perplexity(self.model, [prompt] * len(ids), ids)
        fluent = fluent_perplexity(self.model)
        with self._lock:
            if self._stale(request):
                return
            for side in ("unsteered", "steered") if n_plain else ("steered",):
                self._sides[side].state = "done"
                self._render_side(side)
            live["completion_s"] = time.perf_counter() - self._started
            if n_plain:
                self._sides["unsteered"].perplexity = perplexity[:n_plain]
                done = self._sides["unsteered"]
                self._unsteered_cache[key] = Side(list(done.texts), list(done.ids), list(done.perplexity), "done")
            self._sides["steered"].perplexity = perplexity[n_plain:]
            self.timings = dict(live)
            self._metrics_args = (vocab, s, size, live, "done")
            self.metrics.value = self._numbers(*self._metrics_args)
            self.warnings_found = text_warnings(self._sides["unsteered"].perplexity,
                                                self._sides["steered"].perplexity, self._sides["steered"].ids,
                                                fluent=fluent)
            self.warnings.value = warnings_html(self.warnings_found)
            self.last_unsteered, self.last_steered = self._sides["unsteered"].texts[0], self._sides["steered"].texts[0]
            self.last_error = None
            self.current = {"vector": vec, "settings": s, "layer": s.layer,
                            "raw_coefficient": relative_scale(v, size, coefficient) if coefficient else 0.0}
            self._show_message()
        self._run_tokens_view(request)
        self._measure_range(request, s, v)
        self.judge.start()
        with self._lock:
            if not self._stale(request):
                self.status.value = "ready"

    def _numbers(self, vocab: list[str] | None, s: Settings, size: float, live: dict[str, float], state: str) -> str:
        return numbers_view(self._sides["unsteered"], self._sides["steered"], s, vocab=vocab, judge=self.judge,
                            size=size, live=live, state=state, generation=self.generations)

    def _judge_ready(self) -> None:
        with self._lock:
            if self._metrics_args is not None and "steerlab-stale" not in self.metrics.value.split(">")[0]:
                self.metrics.value = self._numbers(*self._metrics_args)

    def _run_tokens_view(self, request: int) -> None:
        """The per-token projection of the per-token text (default: prompt + steered completion)."""
        try:
            if self.current is None or self._stale(request):
                return
            layer = self.current["layer"]
            text = self.controls["token_text"].value.strip() or (self._prompt_shown + (self.last_steered or ""))
            pairs = token_projections(self.model, text, self.current["vector"], layer)
            view = tokens_html(pairs, title=f"per-token projection on the vector's unit direction at layer {layer} "
                                            "(unsteered model)")
            with self._lock:
                if not self._stale(request):
                    self.tokens.value = view
                    self._notices.pop("tokens", None)
                    self._show_message()
        except Exception as err:  # noqa: BLE001 - shown in the widget
            self._notices["tokens"] = f"per-token view: {type(err).__name__}: {err}"
            self._show_message()

    # -- save and reproduce ----------------------------------------------------------
    def save(self) -> Path | None:
        """Save the current vector (``.safetensors`` + ``.json``, and ``.gguf`` for llama.cpp where it
        can be exported) under ``save_dir`` and show the code that reproduces the steered generation.

        The file name is :meth:`file_stem` unless a stem is typed in the ``save as`` box (relative
        to ``save_dir`` unless absolute). Returns the path stem written, or ``None`` (the reason is shown).
        """
        from ..llamacpp import save_both

        if self.current is None:
            self.saved.value = ("<span style='color:#b00'>nothing to save: no steered generation has finished "
                                "with these settings</span>")
            return None
        vec, s = self.current["vector"], self.current["settings"]
        typed = self.controls["save_path"].value.strip()
        stem = Path(typed).expanduser() if typed else Path(self.file_stem(s))
        stem = stem if stem.is_absolute() else self.save_dir / stem
        stem = stem.with_suffix("") if stem.suffix in (".safetensors", ".json", ".gguf") else stem
        try:
            saved = save_both(vec, stem, coefficient=self.current["raw_coefficient"], steer_position=s.position)
        except Exception as err:  # noqa: BLE001 - shown in the widget
            self.saved.value = f"<span style='color:#b00'>could not save: {html.escape(f'{type(err).__name__}: {err}')}</span>"
            return None
        notes = [f"saved {stem}.safetensors and {stem}.json (load with sl.load_vector)",
                 f"llama.cpp control vector (the added vector, coefficient included): {saved['gguf']}"
                 if saved["gguf"] is not None else f"no llama.cpp file: ControlVectorError: {saved['gguf_error']}"]
        self.saved.value = ("<div style='white-space:normal;overflow-wrap:anywhere;line-height:1.4'>"
                            + "<br>".join(html.escape(x) for x in notes)
                            + "<pre class='steerlab-code' style='white-space:pre-wrap;overflow-wrap:anywhere'>"
                            + f"{html.escape(self.reproduce_code(path=stem))}</pre></div>")
        self.last_saved = stem
        return stem
