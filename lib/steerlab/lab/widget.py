"""A live steering widget for Jupyter: every construction of the registry, layer,
coefficient, position, operator and sampling settings; unsteered and steered completions
streamed side by side as they are generated, with live measures, the lens of the added
vector, a per-token projection view, and a button that saves the vector and shows the
code that reproduces the steered generation.

What makes it feel live:

- one batched :func:`steerlab.steer.steered_generate` call generates the unsteered and
  the steered rows together, and its tokens are shown while it runs (a forward pre-hook
  on the model reads each step's new tokens; ``steered_generate`` is not changed);
- the unsteered completion is kept per (prompt, new tokens, seed, sampling settings), so
  a change of the steering settings generates the steered rows only;
- set statistics are computed once per set (all layers in one pass) and kept;
- text boxes apply on Enter or when they lose focus, sliders when released
  (``continuous_update=False``): typing a word is one generation, not one per keystroke;
- a change while a generation runs stops it at its next step (``should_stop``);
- the worker thread runs torch on ``threads`` threads (default :func:`default_threads`:
  ``min(2, cpu_count - 1)``, no more than ``OMP_NUM_THREADS`` where that is set): a batch
  of a few rows of a small model gains little from more, and on a shared machine more
  threads wait on each other. ``torch.set_num_threads`` is called in the worker thread
  only (the kernel's own thread keeps its setting).

Beside the text: the target vocabulary rate (:func:`steerlab.study.vocab.vocab_rate`), the
concept score of :class:`steerlab.study.judge.ConceptJudge` (P(target genre), trained once
after the first generation), the perplexity under the unsteered model
(:func:`steerlab.metrics.completion_perplexity`), each for both sides, and the added
vector's norm against the layer's typical norm.

Stale text (while a new generation starts, and after an error) is greyed. Errors show as a
message in the widget; they never reach the kernel.

The coefficient is in units of the layer's typical activation norm, as in
:func:`steerlab.generate` (``scale="typical"``): the added vector has norm
``coefficient * typical_norm(model, layer)``, whatever construction made it. The slider is
bounded; the box beside it takes any number (a value beyond the slider is used as typed,
with a message saying so).
"""

from __future__ import annotations

import html
import math
import os
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ipywidgets as w
import torch

from ..constructions import CONSTRUCTIONS, build, named_sets, typical_norm
from ..lens import lens_logits
from ..metrics import completion_perplexity
from ..models import EMBEDDED_MODEL, Model
from ..projection import token_projections
from ..steer import OPERATORS, added_vector, relative_scale, steered_generate
from ..study.judge import ConceptJudge, JudgeError, default_classes
from ..study.vocab import vocab_rate, vocabularies
from ..tokens import STEER_POSITIONS
from ..vectors import SteeringVector
from .tokens_view import readable_token, tokens_html

__all__ = ["SteeringWidget", "default_threads", "second_input"]

COEFFICIENT_RANGE = (-4.0, 4.0)
FLUSH_SECONDS = 0.08  # the shortest interval between two streamed updates of the page


def second_input(construction: str) -> str | None:
    """The role of the widget's second box for a construction (``None``: the box is unused)."""
    roles = [r for r in CONSTRUCTIONS[construction].inputs if r not in ("target", "plus")]
    return roles[0] if roles else None


def _first_input(construction: str) -> str | None:
    """The role of the first box: ``target``, ``plus`` (prompt pairs), or ``None`` (``bias``)."""
    roles = [r for r in CONSTRUCTIONS[construction].inputs if r in ("target", "plus")]
    return roles[0] if roles else None


def default_threads() -> int:
    """Torch threads for the widget's worker: ``min(2, cpu_count - 1)`` (at least 1), capped by
    ``OMP_NUM_THREADS`` where that is set.

    One core is left to the kernel's own thread, the Jupyter server and the browser, which
    share the machine with the widget. Seen on a busy 2-core machine (load average ~13):
    first tokens of a 30-token steered completion after 0.7 s on 1 thread, 5.6-8.7 s on 2
    (the OpenMP threads wait on each other).

    Example:
        >>> default_threads() <= 2
        True
    """
    n = max(1, min(2, (os.cpu_count() or 1) - 1))
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) >= 1:
        n = min(n, int(env))
    return n


def _stop_ids(model: Model) -> set[int]:
    """Token ids that end a row (for the streamed preview; the final text comes from ``steered_generate``)."""
    out: set[int] = set()
    config = model.hf.generation_config
    for eos in (getattr(config, "eos_token_id", None) if config is not None else None,
                model.tokenizer.eos_token_id):
        if isinstance(eos, list):
            out.update(int(e) for e in eos)
        elif eos is not None:
            out.add(int(eos))
    return out


@contextmanager
def _stream_tokens(model: Model, on_step: Callable[[list[list[int]]], None]) -> Iterator[list[list[int]]]:
    """While open, every generation step's new tokens are appended to the yielded rows and
    ``on_step(rows)`` is called.

    A forward pre-hook on ``model.hf`` reads each call's ``input_ids``: the first call of a
    ``generate`` is the prompt, each later call feeds back the tokens the previous step chose.
    (The last token of a generation is never fed back: it arrives with the result.)
    """
    rows: list[list[int]] = []
    calls = [0]

    def hook(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        calls[0] += 1
        if calls[0] == 1 or not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.shape[1] != 1:
            return
        if not rows:
            rows.extend([] for _ in range(ids.shape[0]))
        for row, t in zip(rows, ids[:, 0].tolist()):
            row.append(int(t))
        on_step(rows)

    handle = model.hf.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield rows
    finally:
        handle.remove()


def _until(row: list[int], stop: set[int]) -> list[int]:
    for i, t in enumerate(row):
        if t in stop:
            return row[:i]
    return row


@dataclass
class _Side:
    """What one pane shows: completions (token ids and text) and their measures."""

    texts: list[str] = field(default_factory=list)
    ids: list[list[int]] = field(default_factory=list)
    perplexity: list[float] = field(default_factory=list)
    state: str = "empty"  # empty, stale, live, done, error


def _mean(values: list[float]) -> float:
    real = [v for v in values if not math.isnan(v)]
    return sum(real) / len(real) if real else float("nan")


def _fmt(x: float | None, spec: str = ".3f") -> str:
    return "—" if x is None or math.isnan(x) else format(x, spec)


class SteeringWidget:
    """Interactive steering. Show it with ``display(SteeringWidget(model).ui)``.

    Args:
        model: from :func:`steerlab.load_model`.
        prompt, recipe, target, reference, layer, coefficient, position, operator,
            max_new_tokens, seed, samples, greedy, temperature, top_p: the controls' first
            values (``recipe`` is a construction of :data:`steerlab.constructions.CONSTRUCTIONS`;
            ``reference`` fills the second box, whose role depends on the construction:
            :func:`second_input`).
        sample_size, max_length: texts sampled from a set to build its mean, tokens kept per text.
        save_dir: where the save button writes (a path stem typed in the widget is relative to it).
        threads: torch threads in the worker thread (default :func:`default_threads`); with
            ``background=False``, in the caller's thread during each update (then restored).
        background: generate in a worker thread (True in notebooks; tests pass False to run
            each update synchronously).

    Example:
        >>> ui = SteeringWidget(model, layer=15, coefficient=0.5)
        >>> ui.controls["coefficient"].value = 1.0   # re-generates the steered side only
    """

    def __init__(self, model: Model, *, prompt: str = "Yesterday, my son was out kicking a football. Then, he",
                 recipe: str = "counterbalanced", target: str = "fantasy", reference: str = "sports",
                 layer: int | None = None, coefficient: float = 0.5, position: str = "all",
                 operator: str = "add", max_new_tokens: int = 30, seed: int = 0, samples: int = 1,
                 greedy: bool = False, temperature: float = 1.0, top_p: float = 0.3, sample_size: int = 32,
                 max_length: int = 128, save_dir: str | Path = Path("runs") / "vectors",
                 threads: int | None = None, background: bool = True) -> None:
        if recipe not in CONSTRUCTIONS:
            raise ValueError(f"unknown construction {recipe!r}; expected one of {', '.join(CONSTRUCTIONS)}")
        self.model = model
        self.sample_size = sample_size
        self.max_length = max_length
        self.background = background
        self.save_dir = Path(save_dir)
        self.threads = default_threads() if threads is None else int(threads)
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads!r}")
        layer = model.n_layers // 2 if layer is None else layer
        sets = named_sets()
        lo, hi = COEFFICIENT_RANGE
        narrow = w.Layout(width="auto")
        slider = w.Layout(width="22em", max_width="100%")  # "auto" collapses a slider's track
        label = {"description_width": "initial"}
        self.controls: dict[str, Any] = {
            "prompt": w.Textarea(value=prompt, description="prompt", continuous_update=False,
                                 placeholder="the prompt (applies when the box loses focus)",
                                 layout=w.Layout(width="98%"), style=label),
            "recipe": w.Dropdown(options=list(CONSTRUCTIONS), value=recipe, description="construction",
                                 layout=narrow, style=label),
            "target": w.Combobox(value=target, options=sets, description="target", ensure_option=False,
                                 continuous_update=False, placeholder="a set name (Enter)",
                                 layout=narrow, style=label),
            "reference": w.Combobox(value=reference, options=sets, description="reference",
                                    ensure_option=False, continuous_update=False,
                                    placeholder="a set name (Enter)", layout=narrow, style=label),
            "layer": w.IntSlider(value=layer, min=0, max=model.n_layers - 1, description="layer",
                                 continuous_update=False, layout=slider, style=label),
            "coefficient": w.FloatSlider(value=min(max(coefficient, lo), hi), min=lo, max=hi, step=0.05,
                                         description="coefficient", continuous_update=False, readout=False,
                                         layout=slider, style=label),
            "coefficient_text": w.Text(value=f"{coefficient:g}", continuous_update=False,
                                       tooltip="any number (Enter)", layout=w.Layout(width="5.5em")),
            "position": w.Dropdown(options=list(STEER_POSITIONS), value=position, description="position",
                                   layout=narrow, style=label),
            "operator": w.Dropdown(options=list(OPERATORS), value=operator, description="operator",
                                   layout=narrow, style=label),
            "max_new_tokens": w.IntSlider(value=max_new_tokens, min=1, max=200, description="new tokens",
                                          continuous_update=False, layout=slider, style=label),
            "seed": w.IntText(value=seed, description="seed", continuous_update=False,
                              layout=w.Layout(width="9em"), style=label),
            "samples": w.IntSlider(value=samples, min=1, max=8, description="samples per side",
                                   continuous_update=False, layout=slider, style=label),
            "greedy": w.Checkbox(value=greedy, description="greedy", indent=False, layout=narrow),
            "temperature": w.FloatSlider(value=temperature, min=0.05, max=2.0, step=0.05,
                                         description="temperature", continuous_update=False,
                                         layout=slider, style=label),
            "top_p": w.FloatSlider(value=top_p, min=0.05, max=1.0, step=0.05, description="top-p",
                                   continuous_update=False, layout=slider, style=label),
            "token_text": w.Text(value="", description="per-token text", continuous_update=False,
                                 placeholder="empty: the prompt and the steered completion (Enter)",
                                 layout=w.Layout(width="98%"), style=label),
            "save_path": w.Text(value="", description="save as", continuous_update=False,
                                placeholder=f"a path stem (default: under {self.save_dir})",
                                layout=w.Layout(width="24em"), style=label),
        }
        self.save_button = w.Button(description="save vector + show code", layout=narrow)
        self.save_button.add_class("steerlab-save-button")
        self.unsteered = w.HTML(layout=w.Layout(flex="1 1 320px", min_width="0"))
        self.steered = w.HTML(layout=w.Layout(flex="1 1 320px", min_width="0"))
        self.metrics = w.HTML(layout=w.Layout(width="98%"))
        self.lens = w.HTML(layout=w.Layout(width="98%"))
        self.tokens = w.HTML(layout=w.Layout(width="98%"))
        self.status = w.HTML()
        self.message = w.HTML(layout=w.Layout(width="98%"))
        self.saved = w.HTML(layout=w.Layout(width="98%"))
        for widget, name in ((self.unsteered, "unsteered"), (self.steered, "steered"), (self.metrics, "metrics"),
                             (self.lens, "lens"), (self.tokens, "tokens"), (self.status, "status"),
                             (self.message, "message"), (self.saved, "saved")):
            widget.add_class(f"steerlab-{name}")

        def row(*children: Any) -> w.HBox:
            return w.HBox(list(children), layout=w.Layout(flex_flow="row wrap", width="100%",
                                                          align_items="center", grid_gap="2px 12px"))

        c = self.controls
        self.ui = w.VBox([
            row(c["recipe"], c["target"], c["reference"]),
            row(c["layer"], w.HBox([c["coefficient"], c["coefficient_text"]]), c["position"], c["operator"]),
            row(c["max_new_tokens"], c["seed"], c["samples"], c["greedy"], c["temperature"], c["top_p"]),
            c["prompt"],
            row(self.status, self.message),
            row(self.unsteered, self.steered),
            self.metrics, self.lens, c["token_text"], self.tokens,
            row(c["save_path"], self.save_button), self.saved,
        ], layout=w.Layout(width="100%", max_width="100%", overflow="hidden"))
        self.ui.add_class("steerlab-widget")

        self._coefficient = float(coefficient)
        self._syncing = False
        self._notices: dict[str, str] = {}
        self._unsteered_cache: dict[tuple[Any, ...], _Side] = {}
        self._sides = {"unsteered": _Side(), "steered": _Side()}
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
        self._judge: ConceptJudge | None = None  # trained once, after the first generation
        self._judge_note = ""
        self._judge_started = False
        self._judge_classes = set(default_classes())
        self._metrics_args: tuple[Any, ...] | None = None
        self._check_coefficient(self._coefficient)
        self._relabel()
        for name, control in self.controls.items():
            if name == "coefficient":
                control.observe(self._on_slider, names="value")
            elif name == "coefficient_text":
                control.observe(self._on_coefficient_text, names="value")
            elif name == "token_text":
                control.observe(lambda _change: self._submit(self._run_tokens_view, self._request_id),
                                names="value")
            elif name != "save_path":
                control.observe(lambda _change: self.refresh(), names="value")
        self.save_button.on_click(lambda _button: self.save())
        self.refresh()

    # -- what the controls say -------------------------------------------------
    def settings(self) -> dict[str, Any]:
        """The controls' values; ``coefficient`` is the one in use (the box's, which may lie beyond the slider)."""
        s = {name: control.value for name, control in self.controls.items()
             if name not in ("coefficient_text", "save_path", "token_text")}
        s["coefficient"] = self._coefficient
        return s

    def typical_norm(self, layer: int) -> float:
        """The coefficient's unit at ``layer``: the library's typical norm, as :func:`steerlab.generate` uses."""
        return typical_norm(self.model, layer)

    def build_spec(self, s: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        """The construction name and the keyword arguments of :func:`steerlab.build` the controls describe.

        The first box is the target set (the ``plus`` text for ``prompt_pair``); the second
        is the construction's second input (reference, counter, minus) and is unused by
        ``raw``, ``mean_centred``, ``random`` and ``bias``.
        """
        s = s or self.settings()
        name = s["recipe"]
        first, second = s["target"].strip(), s["reference"].strip()
        spec: dict[str, Any] = {"sample_size": self.sample_size, "max_length": self.max_length}
        if name == "random" and int(s["seed"]):
            spec["seed"] = int(s["seed"])
        if _first_input(name) == "plus":  # texts as typed: a leading space is part of the prompt's tokens
            spec["plus"] = s["target"] if first else ""
            if second:
                spec["minus"] = s["reference"]
        elif _first_input(name) == "target":
            spec["target"] = first
            role = second_input(name)
            if role is not None and second:
                spec[role] = second
        return name, spec

    def vector(self, s: dict[str, Any] | None = None) -> SteeringVector:
        """The steering vector the controls describe, built by :func:`steerlab.constructions.build`."""
        s = s or self.settings()
        name, spec = self.build_spec(s)
        return build(name, self.model, [int(s["layer"])], **spec)

    def reproduce_code(self, *, load_model: bool = True, path: str | Path | None = None,
                       settings: dict[str, Any] | None = None) -> str:
        """Python lines that reproduce the current steered generation with the library.

        Args:
            load_model: include the ``sl.load_model(...)`` line (else ``model`` must exist).
            path: a saved copy of the vector, mentioned as an alternative to building it.
            settings: default: those of the last generation that finished (the one on show),
                else the controls'.

        Example:
            >>> print(ui.reproduce_code())
            import steerlab as sl
            ...
        """
        s = settings or (self.current["settings"] if self.current is not None else self.settings())
        name, spec = self.build_spec(s)
        layer = int(s["layer"])
        args = "".join(f", {k}={v!r}" for k, v in spec.items())
        model_arg = "" if self.model.name == EMBEDDED_MODEL else repr(self.model.name)
        n = 1 if s["greedy"] else int(s["samples"])
        sampling = ("do_sample=False" if s["greedy"] else
                    f"seed={int(s['seed'])}, temperature={float(s['temperature'])!r}, top_p={float(s['top_p'])!r}")
        lines = ["import steerlab as sl", ""]
        if load_model:
            lines.append(f"model = sl.load_model({model_arg})")
        lines.append(f"vector = sl.build({name!r}, model, [{layer}]{args})")
        if path is not None:
            lines.append(f"# or the saved copy: vector = sl.load_vector({str(path)!r}, model)")
        lines += [
            f"completions = sl.generate(model, [{s['prompt'].strip()!r}] * {n}, vector, layer={layer},",
            (f"                          coefficients={float(s['coefficient'])!r}, position={s['position']!r}, "
             f"operator={s['operator']!r},"),
            f"                          max_new_tokens={int(s['max_new_tokens'])}, {sampling})",
            "for c in completions:",
            "    print(c.text)",
        ]
        return "\n".join(lines) + "\n"

    # -- the coefficient: a bounded slider and a box for any number -------------
    def _check_coefficient(self, value: float) -> None:
        lo, hi = COEFFICIENT_RANGE
        if lo <= value <= hi:
            self._notices.pop("coefficient", None)
        else:
            self._notices["coefficient"] = (f"coefficient {value:g} is outside the slider's range {lo:g} to {hi:g}: "
                                            f"steering with {value:g} as typed (the slider shows its end)")
        self._show_message()

    def _on_slider(self, change: dict[str, Any]) -> None:
        if self._syncing:
            return
        self._coefficient = float(change["new"])
        self._set_quietly(self.controls["coefficient_text"], f"{self._coefficient:g}")
        self._check_coefficient(self._coefficient)
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
                                            f"{self._coefficient:g}")
            self._show_message()
            return
        self._coefficient = value
        lo, hi = COEFFICIENT_RANGE
        self._set_quietly(self.controls["coefficient"], min(max(value, lo), hi))
        self._check_coefficient(value)
        self.refresh()

    def _set_quietly(self, control: Any, value: Any) -> None:
        self._syncing = True
        try:
            control.value = value
        finally:
            self._syncing = False

    def _relabel(self) -> None:
        """Label the two boxes by their roles in the chosen construction; disable unused ones and
        the sampling controls under greedy decoding."""
        name = self.controls["recipe"].value
        first, second = _first_input(name), second_input(name)
        self.controls["target"].description = first or "target (unused)"
        self.controls["target"].disabled = first is None
        self.controls["reference"].description = second or "second (unused)"
        self.controls["reference"].disabled = second is None
        greedy = bool(self.controls["greedy"].value)
        for control in ("samples", "temperature", "top_p"):
            self.controls[control].disabled = greedy

    def _show_message(self, error: str | None = None) -> None:
        if error is not None:
            self._notices["run"] = error
        elif error is None and "run" in self._notices and self.last_error is None:
            self._notices.pop("run")
        parts = [f"<div style='color:#b00;white-space:pre-wrap;overflow-wrap:anywhere'>{html.escape(text)}</div>"
                 for text in self._notices.values()]
        self.message.value = "".join(parts)

    # -- updating ---------------------------------------------------------------
    def _stale(self, request: int) -> bool:
        return request != self._request_id

    def _submit(self, fn: Callable[..., None], *args: Any) -> None:
        if self._pool is None:  # in the caller's thread, on the widget's torch threads, then restored
            before = torch.get_num_threads()
            torch.set_num_threads(self.threads)
            try:
                fn(*args)
            finally:
                torch.set_num_threads(before)
        else:
            self._pool.submit(fn, *args)

    def _unsteered_key(self, s: dict[str, Any]) -> tuple[Any, ...]:
        sampling = ("greedy",) if s["greedy"] else (int(s["samples"]), float(s["temperature"]), float(s["top_p"]))
        return (s["prompt"].strip(), int(s["max_new_tokens"]), int(s["seed"]), *sampling)

    def refresh(self) -> None:
        """Recompute for the current settings, superseding any generation in flight."""
        self._relabel()
        settings = self.settings()
        with self._lock:
            self._request_id += 1
            request = self._request_id
            self._started = time.perf_counter()
            self.status.value = "<i>generating…</i>"
            self._grey("steered")
            if self._unsteered_key(settings) not in self._unsteered_cache:
                self._grey("unsteered")
        self._submit(self._run, request, settings)

    def _grey(self, side: str) -> None:
        if self._sides[side].state in ("live", "done"):
            self._sides[side].state = "stale"
            self._render_side(side)

    def _render_side(self, side: str, title: str | None = None) -> None:
        pane = self.unsteered if side == "unsteered" else self.steered
        if title is not None:
            self._titles[side] = title
        pane.value = _panel(self._titles.get(side, side), self._prompt_shown, self._sides[side])

    def _run(self, request: int, s: dict[str, Any]) -> None:
        try:
            if self._stale(request):
                return
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

    def _generate(self, request: int, s: dict[str, Any]) -> None:
        prompt = s["prompt"].strip()
        if not prompt:
            raise ValueError("the prompt is empty: type a prompt to continue")
        layer, coefficient = int(s["layer"]), float(s["coefficient"])
        self.status.value = "<i>building the vector (each set's statistics are computed once)…</i>"
        vec = self.vector(s)
        v = vec.at(layer)
        if v.dim() != 1:
            raise ValueError(f"the {vec.recipe} vector has shape {tuple(v.shape)}; the widget steers with one "
                             "[d_model] vector")
        size = self.typical_norm(layer)
        # The same arithmetic as steerlab.generate, so the reproduce code gives the same tokens.
        addition = added_vector(v, coefficient, size)
        operator = s["operator"]
        greedy = bool(s["greedy"])
        n = 1 if greedy else int(s["samples"])
        key = self._unsteered_key(s)
        cached = self._unsteered_cache.get(key)
        lens_html = self._lens_html(v * (1.0 if coefficient >= 0 else -1.0), coefficient, operator)
        name, spec = self.build_spec(s)
        inputs = ", ".join(f"{k}={v!r}" for k, v in spec.items() if k not in ("sample_size", "max_length"))
        title = (f"steered: {name}({inputs}) at layer {layer} × {coefficient:+.2f} typical norm, "
                 f"{operator} at {s['position']} tokens")
        with self._lock:
            if self._stale(request):
                return
            self.lens.value = lens_html
            self._prompt_shown = prompt
            self.status.value = "<i>generating…</i>"
        rows_unsteered = 0 if cached is not None else n
        unsteered_rows: list[torch.Tensor | None] = [None] * rows_unsteered
        additions = unsteered_rows + [addition] * n
        directions = None if operator == "add" else unsteered_rows + [v / v.norm()] * n
        vocab = vocabularies().get(s["target"].strip())
        stop_ids = _stop_ids(self.model)
        tok = self.model.tokenizer
        last_flush = [0.0]

        def show(rows: list[list[int]], done: bool) -> None:
            with self._lock:
                if self._stale(request):
                    return
                now = time.perf_counter()
                if "first_tokens_s" not in live and rows and rows[0]:
                    live["first_tokens_s"] = now - self._started
                rows = [_until(r, stop_ids) for r in rows]
                texts = [tok.decode(r, skip_special_tokens=True) for r in rows]
                state = "done" if done else "live"
                if rows_unsteered:
                    side = self._sides["unsteered"]
                    side.texts, side.ids, side.state = texts[:rows_unsteered], rows[:rows_unsteered], state
                    self._render_side("unsteered", "unsteered")
                side = self._sides["steered"]
                side.texts, side.ids, side.state = texts[rows_unsteered:], rows[rows_unsteered:], state
                self._render_side("steered", title)
                self.metrics.value = self._metrics_html(vocab, s, size, coefficient, live, done)
                last_flush[0] = now

        def on_step(rows: list[list[int]]) -> None:
            if time.perf_counter() - last_flush[0] >= FLUSH_SECONDS:
                show([list(r) for r in rows], done=False)

        live: dict[str, float] = {}
        if cached is not None:
            with self._lock:
                self._sides["unsteered"] = _Side(list(cached.texts), list(cached.ids), list(cached.perplexity), "done")
                self._render_side("unsteered", "unsteered")
        self.generations += 1
        with _stream_tokens(self.model, on_step):
            ids = steered_generate(
                self.model, [prompt] * len(additions), additions, layer=layer, position=s["position"],
                operator=operator, directions=directions, max_new_tokens=int(s["max_new_tokens"]),
                seed=int(s["seed"]), do_sample=not greedy, temperature=float(s["temperature"]),
                top_p=float(s["top_p"]), should_stop=lambda: self._stale(request))
        if self._stale(request):
            return
        perplexity = completion_perplexity(self.model, [prompt] * len(ids), ids)
        show(ids, done=True)
        with self._lock:
            if self._stale(request):
                return
            live["completion_s"] = time.perf_counter() - self._started
            if rows_unsteered:
                self._sides["unsteered"].perplexity = perplexity[:rows_unsteered]
                done = self._sides["unsteered"]
                self._unsteered_cache[key] = _Side(list(done.texts), list(done.ids), list(done.perplexity), "done")
            self._sides["steered"].perplexity = perplexity[rows_unsteered:]
            self.timings = dict(live)
            self._metrics_args = (vocab, s, size, coefficient, live, True)
            self.metrics.value = self._metrics_html(*self._metrics_args)
            self.last_unsteered = self._sides["unsteered"].texts[0]
            self.last_steered = self._sides["steered"].texts[0]
            self.last_error = None
            self.current = {"vector": vec, "settings": dict(s), "layer": layer, "raw_coefficient":
                            0.0 if addition is None else relative_scale(v, size, coefficient)}
            self._show_message()
        self._run_tokens_view(request)
        self._start_judge()
        with self._lock:
            if not self._stale(request):
                self.status.value = "ready"

    def _start_judge(self) -> None:
        """Train the concept judge once (in its own thread when the widget runs in the background,
        so the first completion does not wait ~10 s for it); the numbers fill in when it is ready."""
        if self._judge_started:
            return
        self._judge_started = True
        if self._pool is None:
            self._train_judge()
        else:
            threading.Thread(target=self._train_judge, name="steerlab-judge", daemon=True).start()

    def _train_judge(self) -> None:
        try:
            judge = ConceptJudge.train()
        except Exception as err:  # noqa: BLE001 - shown beside the numbers
            self._judge_note = f"{type(err).__name__}: {err}"
            judge = None
        with self._lock:
            self._judge = judge
            if self._metrics_args is not None:
                self.metrics.value = self._metrics_html(*self._metrics_args)

    # -- the views -----------------------------------------------------------------
    def _lens_html(self, signed: torch.Tensor, coefficient: float, operator: str, k: int = 10) -> str:
        logits = lens_logits(self.model, signed)  # [vocab]
        top, bottom = logits.topk(k), (-logits).topk(k)
        tok = self.model.tokenizer

        def listing(values: torch.Tensor, ids: torch.Tensor, sign: float) -> str:
            return " ".join(f"<code title='logit {sign * float(x):+.3f}'>{html.escape(readable_token(tok.decode([int(i)])))}"
                            f"</code><small style='color:#666'>{sign * float(x):+.1f}</small>"
                            for x, i in zip(values, ids))

        what = ("the ablated direction" if operator == "ablate" else
                f"the added vector ({'+' if coefficient >= 0 else '−'}v)")
        return (f"<div style='white-space:normal;overflow-wrap:anywhere'><b>lens of {what}</b> "
                f"(logit-lens scores)<br><b>top:</b> {listing(top.values, top.indices, 1.0)}<br>"
                f"<b>bottom:</b> {listing(bottom.values, bottom.indices, -1.0)}</div>")

    def _metrics_html(self, vocab: list[str] | None, s: dict[str, Any], size: float, coefficient: float,
                      live: dict[str, float], done: bool) -> str:
        target = s["target"].strip()

        def rate(side: _Side) -> str:
            if vocab is None or not side.texts:
                return "—"
            return _fmt(_mean([vocab_rate(t, vocab) for t in side.texts]))

        def ppl(side: _Side) -> str:
            return _fmt(_mean(side.perplexity), ".2f") if side.perplexity else ("…" if side.texts else "—")

        judged = target in self._judge_classes
        judge_note = ""

        def concept(side: _Side) -> str:
            nonlocal judge_note
            if not judged or not side.texts:
                return "—"
            if self._judge is None:
                return "—" if self._judge_note else "…"
            try:
                return _fmt(_mean(self._judge.concept_score(side.texts, target)))
            except JudgeError as err:
                judge_note = str(err)
                return "—"

        def count(side: _Side) -> str:
            return f"{_mean([float(len(r)) for r in side.ids]):.0f}" if side.ids else "—"

        u, st = self._sides["unsteered"], self._sides["steered"]
        vocab_label = (f"'{html.escape(target)}' vocabulary rate" if vocab is not None else
                       "vocabulary rate (no vocabulary for this target)")
        norm = 0.0 if s["operator"] == "ablate" else abs(coefficient) * size
        timing = ""
        if "first_tokens_s" in live:
            timing = f"first tokens after {live['first_tokens_s']:.2f} s"
            if "completion_s" in live:
                timing += f", all after {live['completion_s']:.2f} s"
        concepts = (concept(u), concept(st))
        if not judged:
            concept_label = "concept score (no judge class for this target)"
        elif self._judge is not None and not judge_note:
            concept_label = (f"concept score: judge P('{html.escape(target)}') (held-out accuracy "
                             f"{self._judge.heldout_accuracy:.2f})")
        else:
            reason = judge_note or self._judge_note
            concept_label = ("concept score (judge unavailable: " + html.escape(reason) + ")" if reason else
                             "concept score (training the judge…)")
        cells = [("", "unsteered", "steered"), (vocab_label, rate(u), rate(st)), (concept_label, *concepts),
                 ("perplexity under the unsteered model", ppl(u), ppl(st)),
                 ("tokens (mean per sample)", count(u), count(st))]
        table = "".join("<tr>" + "".join(f"<td style='padding:0 10px 0 0'>{c}</td>" for c in r) + "</tr>"
                        for r in cells)
        state = "done" if done else "live"
        return (f"<div data-state='{state}' data-generation='{self.generations}' "
                "style='white-space:normal;line-height:1.5'>"
                f"<table>{table}</table>"
                f"added vector norm {norm:.1f} = {abs(coefficient) if norm else 0:.2f} × typical norm "
                f"{size:.1f} at layer {int(s['layer'])}"
                f"{' (ablate adds nothing)' if s['operator'] == 'ablate' else ''}; "
                f"<span class='steerlab-timing'>{timing}</span> (generation {self.generations})</div>")

    def _run_tokens_view(self, request: int) -> None:
        """The per-token projection of the per-token text (default: prompt + steered completion)."""
        try:
            if self.current is None or self._stale(request):
                return
            layer = self.current["layer"]
            text = self.controls["token_text"].value.strip() or (
                self._prompt_shown + (self.last_steered or ""))
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
        can be exported) and show the code that reproduces the steered generation.

        Returns the path stem written, or ``None`` (the reason is shown).
        """
        from ..llamacpp import save_both

        if self.current is None:
            self.saved.value = ("<span style='color:#b00'>nothing to save: no steered generation has finished "
                                "with these settings</span>")
            return None
        vec, s = self.current["vector"], self.current["settings"]
        typed = self.controls["save_path"].value.strip()
        default = f"{s['recipe']}-{_slug(s['target'])}-{_slug(s['reference'])}-L{self.current['layer']}"
        stem = Path(typed) if typed else self.save_dir / default
        if not stem.is_absolute() and typed:
            stem = self.save_dir / stem
        stem = stem.with_suffix("") if stem.suffix in (".safetensors", ".json", ".gguf") else stem
        notes = []
        try:
            saved = save_both(vec, stem, coefficient=self.current["raw_coefficient"], steer_position=s["position"])
        except Exception as err:  # noqa: BLE001 - shown in the widget
            self.saved.value = f"<span style='color:#b00'>could not save: {html.escape(f'{type(err).__name__}: {err}')}</span>"
            return None
        notes.append(f"saved {stem}.safetensors and {stem}.json (load with sl.load_vector)")
        if saved["gguf"] is not None:
            notes.append(f"llama.cpp control vector (the added vector, coefficient included): {saved['gguf']}")
        else:
            notes.append(f"no llama.cpp file: ControlVectorError: {saved['gguf_error']}")
        code = self.reproduce_code(path=stem)
        self.saved.value = ("<div style='white-space:normal;overflow-wrap:anywhere;line-height:1.4'>"
                            + "<br>".join(html.escape(n) for n in notes)
                            + f"<pre class='steerlab-code' style='white-space:pre-wrap;overflow-wrap:anywhere'>"
                              f"{html.escape(code)}</pre></div>")
        self.last_saved = stem
        return stem


def _slug(text: str) -> str:
    keep = "".join(ch if ch.isalnum() else "_" for ch in text.strip())[:24]
    return keep or "none"


def _panel(title: str, prompt: str, side: _Side) -> str:
    grey = side.state in ("stale", "error")
    style = "opacity:0.4;" if grey else ""
    samples = side.texts or [""]
    body = "".join(f"<div class='steerlab-sample' style='margin-top:4px'><span style='color:#666'>"
                   f"{html.escape(prompt)}</span><span class='completion'>{html.escape(text)}</span></div>"
                   for text in samples)
    note = {"stale": " (stale: regenerating)", "error": " (stale: see the message)", "live": " (generating…)"}
    return (f"<div class='steerlab-pane' data-state='{side.state}' style='{style}border:1px solid #ccc;"
            f"padding:6px;min-height:6em;white-space:pre-wrap;overflow-wrap:anywhere;line-height:1.4'>"
            f"<b>{html.escape(title)}</b><i>{note.get(side.state, '')}</i>{body}</div>")
