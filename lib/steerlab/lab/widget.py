"""A live steering widget for Jupyter (the controller): every construction of the registry,
layer, coefficient, position, operator and sampling settings; unsteered and steered
completions streamed side by side as they are generated, with live measures, the lens of
the added vector, a per-token projection view, and a button that saves the vector and
shows the code that reproduces the steered generation.

Three parts:

- **the controller** (:class:`SteeringWidget`): the controls, what they say, the state on
  show and the worker thread;
- **the view** (:mod:`steerlab.lab.widget_view`): pure functions from that state to HTML;
- **streaming** (:func:`_stream_tokens`, below): each generation step's new tokens, read by
  a forward pre-hook while :func:`steerlab.steer.steered_generate` runs (unchanged).

A widget that guides:

- **the coefficient's useful range is measured** (:func:`useful_range`): per construction,
  inputs, layer and position, the perplexity of a few general texts under the steered model
  against the unsteered one (:func:`steerlab.metrics.steered_text_scores`, forward passes
  only) over a grid of coefficients of both signs; the range ends where that ratio passes
  the comparison's damage threshold (notebook 04's ``damage_threshold``, 1.5). The slider
  spans a few times the range, and a widget made without a ``coefficient`` opens at the
  range's upper end (inside it). The range is shown under the slider.
- **warnings** (:func:`text_warnings`) when the steered text's perplexity under the
  unsteered model passes a multiple of the unsteered text's, when it repeats itself
  (:func:`steerlab.metrics.distinct_n` under a threshold: ``"m m m m"`` is very predictable,
  so its perplexity is low, but its distinct-2 is near 0), and when the coefficient lies
  outside the useful range;
- **stale numbers are greyed**: the moment a control changes, the numbers, the lens and the
  per-token view are greyed; a side's numbers stay greyed (a perplexity waits as ``…``)
  until its new completion has finished;
- the slider's value is used only when it is a finite number (a NaN is refused with a
  message); the box beside it takes any finite number (beyond the slider: used as typed).

What makes it feel live:

- one batched :func:`steerlab.steer.steered_generate` call generates the unsteered and
  the steered rows together, and its tokens are shown while it runs;
- the unsteered completion is kept per (prompt, new tokens, seed, sampling settings), so
  a change of the steering settings generates the steered rows only;
- set statistics and useful ranges are computed once and kept; a range is measured after
  the generation it belongs to (the text comes first), except for the very first default;
- text boxes apply on Enter or when they lose focus, sliders when released
  (``continuous_update=False``): typing a word is one generation, not one per keystroke;
- a change while a generation runs stops it at its next step (``should_stop``);
- the worker thread runs torch on ``threads`` threads (default :func:`default_threads`).

Beside the text: the target vocabulary rate (:func:`steerlab.study.vocab.vocab_rate`), the
concept score of :class:`steerlab.study.judge.ConceptJudge` (P(target genre), trained once
after the first generation), the perplexity under the unsteered model
(:func:`steerlab.metrics.completion_perplexity`), distinct-2, each for both sides, and the
added vector's norm against the coefficient's unit.

The coefficient is in units of the layer's centred norm (the mean of ``||x - mean||`` over
general text), as in :func:`steerlab.generate` (``scale="unit"``): the added vector has norm
``coefficient * unit_norm(model, layer)``, whatever construction made it.

Saves go to ``save_dir`` (notebook 03 passes its run folder's ``vectors/``), named from the
inputs the construction actually used.
"""

from __future__ import annotations

import html
import math
import os
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ipywidgets as w
import torch

from ..constructions import CONSTRUCTIONS, build, named_sets
from ..data import load_dataset
from ..lens import lens_logits
from ..metrics import completion_perplexity, distinct_n, steered_text_scores
from ..models import EMBEDDED_MODEL, Model
from ..projection import token_projections
from ..sets import UNIT_LABEL, unit_norm
from ..steer import OPERATORS, added_vector, eos_ids, relative_scale, steered_generate, until_eos
from ..study.compare import CompareConfig
from ..study.judge import ConceptJudge, JudgeError, default_classes
from ..study.vocab import vocab_rate, vocabularies
from ..tokens import STEER_POSITIONS
from ..vectors import SteeringVector
from .tokens_view import readable_token, tokens_html
from .widget_view import (
    MetricRow,
    RangeView,
    Side,
    controls_html,
    fmt,
    grey,
    lens_html,
    metrics_html,
    pane_html,
    range_html,
    warnings_html,
)
from .widget_view import page_html as _page_html

__all__ = [
    "DAMAGE_GRID",
    "DAMAGE_THRESHOLD",
    "DISTINCT_THRESHOLD",
    "PERPLEXITY_RATIO_THRESHOLD",
    "SteeringWidget",
    "UsefulRange",
    "default_threads",
    "general_texts",
    "second_input",
    "text_warnings",
    "useful_range",
]

FLUSH_SECONDS = 0.08  # the shortest interval between two streamed updates of the page

# The useful range: coefficients measured (each sign), the damage threshold and the texts.
DAMAGE_GRID = (0.0625, 0.125, 0.25, 0.5, 1.0, 2.0)
DAMAGE_THRESHOLD = float(CompareConfig.damage_threshold)  # notebook 04's: perplexity ratio on general text
DAMAGE_TEXTS = 4
DAMAGE_LENGTH = 32
# The slider spans SLIDER_SPAN x the range's larger end, rounded up to one of these.
SLIDER_SPAN = 4.0
_SLIDER_ENDS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
# Warnings on the steered text. Seen on SmolLM2 (30 sampled tokens, top-p 0.3): fluent
# steered text had 0.7-7x the unsteered completion's perplexity, broken text 12-650x;
# loops ("such such such", "lastlastlast") had distinct-2 0.03-0.28 at a perplexity ratio
# near 1, fluent text 0.5-1.0.
PERPLEXITY_RATIO_THRESHOLD = 8.0
DISTINCT_THRESHOLD = 0.4
DISTINCT_N = 2


def second_input(construction: str) -> str | None:
    """The role of the widget's second box for a construction (``None``: the box is unused).

    Example:
        >>> second_input("counterbalanced"), second_input("mean_centred")
        ('counter', None)
    """
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


# -- the useful range ------------------------------------------------------------------

@dataclass(frozen=True)
class UsefulRange:
    """Where steering with one vector at one layer stays below the damage threshold.

    Attributes:
        low, high: the range's ends (x the unit, the centred norm): the coefficients, interpolated between
            measured ones on a log scale of the ratio, where the perplexity ratio on general
            text first passes ``threshold`` on each side of 0.
        reached_low, reached_high: whether it passed within the grid (else the end is the
            grid's largest coefficient: the range may go further).
        threshold: the damage threshold used.
        coefficients, ratios: what was measured (ascending coefficients, both signs).
    """

    low: float
    high: float
    reached_low: bool
    reached_high: bool
    threshold: float
    coefficients: tuple[float, ...]
    ratios: tuple[float, ...]

    @property
    def slider(self) -> tuple[float, float, float]:
        """``(min, max, step)`` of a slider spanning :data:`SLIDER_SPAN` times the range's larger
        end each way, the end rounded up to a round number; about 100 steps."""
        want = SLIDER_SPAN * max(self.high, -self.low)
        end = next((e for e in _SLIDER_ENDS if e >= want), _SLIDER_ENDS[-1])
        return -end, end, end / 100

    @property
    def default(self) -> float:
        """The coefficient a widget opens at: the range's upper end, down to a slider step (at
        least one step); inside the range whenever the range is wider than one step."""
        step = self.slider[2]
        return max(step, math.floor(self.high / step + 1e-9) * step)


def _crossing(coefficients: Sequence[float], ratios: Sequence[float], threshold: float) -> tuple[float, bool]:
    """The first coefficient (ascending magnitudes, from 0 where the ratio is 1) where the ratio
    passes ``threshold``: log(ratio) interpolated linearly between neighbours."""
    previous_c, previous_log = 0.0, 0.0
    limit = math.log(threshold)
    for c, r in zip(coefficients, ratios):
        log_r = math.log(r) if r > 0 else -math.inf
        if math.isnan(r) or log_r > limit:
            if math.isnan(r):
                return previous_c, True
            t = (limit - previous_log) / (log_r - previous_log)
            return previous_c + t * (c - previous_c), True
        previous_c, previous_log = c, log_r
    return previous_c, False


def general_texts(n: int = DAMAGE_TEXTS) -> list[str]:
    """The general texts a useful range is measured on: ``n`` of the ``general`` set's held-out
    split (seed 0), as notebook 04 measures damage.

    Example:
        >>> len(general_texts(2))
        2
    """
    return load_dataset("general", "heldout").sample(n, seed=0).texts


def useful_range(model: Model, vector: torch.Tensor, layer: int, *, position: str = "all",
                 threshold: float = DAMAGE_THRESHOLD, grid: Sequence[float] = DAMAGE_GRID,
                 texts: Sequence[str] | None = None, max_length: int = DAMAGE_LENGTH,
                 size: float | None = None) -> UsefulRange:
    """Measure where steering with ``vector`` at ``layer`` starts to damage general text.

    For each coefficient ``c`` of ``grid`` and ``-c``, the vector is added as the widget adds it
    (:func:`steerlab.steer.added_vector`: ``c x`` the layer's centred norm along its
    direction) and :func:`steerlab.metrics.steered_text_scores` gives the perplexity ratio of
    ``texts`` under the steered model against the unsteered one (one plain pass, then the
    blocks from ``layer`` up per coefficient). Each end of the range is where that ratio first
    passes ``threshold``.

    Args:
        vector: ``[d_model]`` (or a ``[k, d_model]`` prompt pair, at a position that allows one).
        position: the steered positions, as in generation.
        threshold: the perplexity ratio that counts as damage (> 1).
        grid: positive coefficients (x the centred norm), measured with both signs.
        texts: default :func:`general_texts`.
        max_length: tokens kept per text.
        size: the unit's length (default :func:`steerlab.sets.unit_norm` at ``layer``).

    Raises:
        ValueError: a threshold not above 1, an empty or non-positive grid.

    Example:
        >>> r = useful_range(model, sl.build("counterbalanced", model, [15], target="fantasy",
        ...                  counter="sports").at(15), 15)
        >>> r.low < 0 < r.default <= r.high
        True
    """
    if not threshold > 1:
        raise ValueError(f"threshold must be a perplexity ratio above 1, got {threshold!r}")
    magnitudes = sorted(float(c) for c in grid)
    if not magnitudes or magnitudes[0] <= 0:
        raise ValueError(f"grid must hold positive coefficients, got {list(grid)!r}")
    size = unit_norm(model, layer) if size is None else size
    coefficients = [-c for c in reversed(magnitudes)] + magnitudes
    scores = steered_text_scores(model, list(texts if texts is not None else general_texts()),
                                 [added_vector(vector, c, size) for c in coefficients], layer=layer,
                                 position=position, max_length=max_length)
    ratios = [float(s["perplexity_ratio"]) for s in scores]
    n = len(magnitudes)
    low, reached_low = _crossing(magnitudes, ratios[:n][::-1], threshold)
    high, reached_high = _crossing(magnitudes, ratios[n:], threshold)
    return UsefulRange(-low, high, reached_low, reached_high, threshold, tuple(coefficients), tuple(ratios))


def text_warnings(unsteered_perplexity: Sequence[float], steered_perplexity: Sequence[float],
                  steered_ids: Sequence[Sequence[int]], *, ratio: float = PERPLEXITY_RATIO_THRESHOLD,
                  distinct: float = DISTINCT_THRESHOLD, n: int = DISTINCT_N) -> list[str]:
    """Warnings about steered completions: damage and repetition, worst sample first.

    - damage: a steered completion's perplexity under the unsteered model is more than
      ``ratio`` times the unsteered completions' mean;
    - repetition: a steered completion's distinct-``n`` (:func:`steerlab.metrics.distinct_n`
      over its token ids) is under ``distinct``; a loop is very predictable, so this catches
      what the perplexity misses.

    Example:
        >>> text_warnings([4.0], [3.0], [[5] * 20])
        ['repetition: distinct-2 of the steered text is 0.05 (under 0.4): it repeats itself']
    """
    out: list[str] = []
    base = [p for p in unsteered_perplexity if math.isfinite(p)]
    mean = sum(base) / len(base) if base else float("nan")
    ratios = [p / mean for p in steered_perplexity if math.isfinite(p)] if mean > 0 else []
    if ratios and max(ratios) > ratio:
        worst = max(ratios)
        out.append(f"damage: the steered text's perplexity under the unsteered model is {worst:.1f} × the "
                   f"unsteered text's (over {ratio:g} ×)")
    values = [d for d in (distinct_n(list(ids), n) for ids in steered_ids) if math.isfinite(d)]
    if values and min(values) < distinct:
        out.append(f"repetition: distinct-{n} of the steered text is {min(values):.2f} (under {distinct:g}): "
                   "it repeats itself")
    return out


# -- streaming ------------------------------------------------------------------------

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


def _mean(values: Sequence[float]) -> float:
    real = [v for v in values if not math.isnan(v)]
    return sum(real) / len(real) if real else float("nan")


def _slug(text: str) -> str:
    keep = "".join(ch if ch.isalnum() else "_" for ch in text.strip())[:24].strip("_")
    return keep or "empty"


# -- the controller -----------------------------------------------------------------------

class SteeringWidget:
    """Interactive steering. Show it with ``display(SteeringWidget(model).ui)``.

    Args:
        model: from :func:`steerlab.load_model`.
        prompt, recipe, target, reference, layer, position, operator, max_new_tokens, seed,
            samples, greedy, temperature, top_p: the controls' first values (``recipe`` is a
            construction of :data:`steerlab.constructions.CONSTRUCTIONS`; ``reference`` fills
            the second box, whose role depends on the construction: :func:`second_input`).
        coefficient: the first coefficient (x the centred norm); ``None`` (default): the measured
            useful range's :attr:`UsefulRange.default`.
        sample_size, max_length: texts sampled from a set to build its mean, tokens kept per text.
        save_dir: where the save button writes (a path stem typed in the widget is relative to
            it); default ``vectors`` in the working directory. Notebook 03 passes its run folder's.
        damage_threshold: the perplexity ratio on general text that ends the useful range.
        judge: show the concept judge's score (trains it once, about 10 s, in the background).
        threads: torch threads in the worker thread (default :func:`default_threads`); with
            ``background=False``, in the caller's thread during each update (then restored).
        background: generate in a worker thread (True in notebooks; tests pass False to run
            each update synchronously).

    Example:
        >>> ui = SteeringWidget(model, layer=15, save_dir="runs/latest/vectors")
        >>> ui.controls["coefficient"].value = 0.2   # re-generates the steered side only
    """

    def __init__(self, model: Model, *, prompt: str = "Yesterday, my son was out kicking a football. Then, he",
                 recipe: str = "counterbalanced", target: str = "fantasy", reference: str = "sports",
                 layer: int | None = None, coefficient: float | None = None, position: str = "all",
                 operator: str = "add", max_new_tokens: int = 30, seed: int = 0, samples: int = 1,
                 greedy: bool = False, temperature: float = 1.0, top_p: float = 0.3, sample_size: int = 32,
                 max_length: int = 128, save_dir: str | Path | None = None,
                 damage_threshold: float = DAMAGE_THRESHOLD, judge: bool = True, threads: int | None = None,
                 background: bool = True) -> None:
        if recipe not in CONSTRUCTIONS:
            raise ValueError(f"unknown construction {recipe!r}; expected one of {', '.join(CONSTRUCTIONS)}")
        if coefficient is not None and not (isinstance(coefficient, (int, float)) and math.isfinite(coefficient)):
            raise ValueError(f"coefficient must be a finite number or None (the measured default), got {coefficient!r}")
        if not damage_threshold > 1:
            raise ValueError(f"damage_threshold must be a perplexity ratio above 1, got {damage_threshold!r}")
        self.model = model
        self.sample_size = sample_size
        self.max_length = max_length
        self.background = background
        self.damage_threshold = float(damage_threshold)
        self.save_dir = Path("vectors") if save_dir is None else Path(save_dir).expanduser()
        self.threads = default_threads() if threads is None else int(threads)
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads!r}")
        layer = model.n_layers // 2 if layer is None else layer
        self._build_controls(prompt=prompt, recipe=recipe, target=target, reference=reference, layer=layer,
                             coefficient=coefficient, position=position, operator=operator,
                             max_new_tokens=max_new_tokens, seed=seed, samples=samples, greedy=greedy,
                             temperature=temperature, top_p=top_p)

        self._coefficient: float | None = None if coefficient is None else float(coefficient)
        self._syncing = False
        self._notices: dict[str, str] = {}
        self._unsteered_cache: dict[tuple[Any, ...], Side] = {}
        self._ranges: dict[tuple[Any, ...], UsefulRange] = {}
        self._range_shown: tuple[tuple[Any, ...], UsefulRange] | None = None
        self._sides = {"unsteered": Side(), "steered": Side()}
        self._prompt_shown = ""
        self._titles: dict[str, str] = {}
        self._warnings: list[str] = []
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
        self.range: UsefulRange | None = None  # the useful range of the settings on show
        self._use_judge = judge
        self._judge: ConceptJudge | None = None  # trained once, after the first generation
        self._judge_note = ""
        self._judge_started = False
        self._judge_classes = set(default_classes())
        self._metrics_args: tuple[Any, ...] | None = None
        if self._coefficient is not None:
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

    def _build_controls(self, *, prompt: str, recipe: str, target: str, reference: str, layer: int,
                        coefficient: float | None, position: str, operator: str, max_new_tokens: int, seed: int,
                        samples: int, greedy: bool, temperature: float, top_p: float) -> None:
        """The controls and output areas, and ``self.ui`` stacking them."""
        sets = named_sets()
        narrow = w.Layout(width="auto")
        slider = w.Layout(width="22em", max_width="100%")  # "auto" collapses a slider's track
        label = {"description_width": "initial"}
        # Until the first range is measured, a provisional slider: +-1 unit.
        shown = 0.0 if coefficient is None else min(max(coefficient, -1.0), 1.0)
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
            "layer": w.IntSlider(value=layer, min=0, max=self.model.n_layers - 1, description="layer",
                                 continuous_update=False, layout=slider, style=label),
            "coefficient": w.FloatSlider(value=shown, min=-1.0, max=1.0, step=0.01, description="coefficient",
                                         continuous_update=False, readout=False, layout=slider, style=label),
            "coefficient_text": w.Text(value="" if coefficient is None else f"{coefficient:g}",
                                       continuous_update=False, placeholder="measuring…",
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
        self.range_note = w.HTML(layout=w.Layout(width="98%"))
        self.warnings = w.HTML(layout=w.Layout(width="98%"))
        self.status = w.HTML()
        self.message = w.HTML(layout=w.Layout(width="98%"))
        self.saved = w.HTML(layout=w.Layout(width="98%"))
        for widget, name in ((self.unsteered, "unsteered"), (self.steered, "steered"), (self.metrics, "metrics"),
                             (self.lens, "lens"), (self.tokens, "tokens"), (self.range_note, "range"),
                             (self.warnings, "warnings"), (self.status, "status"), (self.message, "message"),
                             (self.saved, "saved")):
            widget.add_class(f"steerlab-{name}")

        def row(*children: Any) -> w.HBox:
            return w.HBox(list(children), layout=w.Layout(flex_flow="row wrap", width="100%",
                                                          align_items="center", grid_gap="2px 12px"))

        c = self.controls
        self._coefficient_box = w.HBox([c["coefficient"], c["coefficient_text"]])
        self.ui = w.VBox([
            row(c["recipe"], c["target"], c["reference"]),
            row(c["layer"], self._coefficient_box, c["position"], c["operator"]),
            self.range_note,
            row(c["max_new_tokens"], c["seed"], c["samples"], c["greedy"], c["temperature"], c["top_p"]),
            c["prompt"],
            row(self.status, self.message),
            self.warnings,
            row(self.unsteered, self.steered),
            self.metrics, self.lens, c["token_text"], self.tokens,
            row(c["save_path"], self.save_button), self.saved,
        ], layout=w.Layout(width="100%", max_width="100%", overflow="hidden"))
        self.ui.add_class("steerlab-widget")

    # -- what the controls say -------------------------------------------------
    def settings(self) -> dict[str, Any]:
        """The controls' values; ``coefficient`` is the one in use (the box's, which may lie beyond
        the slider; ``None`` until the first useful range gives the default)."""
        s = {name: control.value for name, control in self.controls.items()
             if name not in ("coefficient_text", "save_path", "token_text")}
        s["coefficient"] = self._coefficient
        return s

    def unit_norm(self, layer: int) -> float:
        """The coefficient's unit at ``layer``: the library's centred norm, as :func:`steerlab.generate` uses."""
        return unit_norm(self.model, layer)

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
        coefficient = float(s["coefficient"] if s["coefficient"] is not None else 0.0)
        lines = ["import steerlab as sl", ""]
        if load_model:
            lines.append(f"model = sl.load_model({model_arg})")
        lines.append(f"vector = sl.build({name!r}, model, [{layer}]{args})")
        if path is not None:
            lines.append(f"# or the saved copy: vector = sl.load_vector({str(path)!r}, model)")
        lines += [
            f"completions = sl.generate(model, [{s['prompt'].strip()!r}] * {n}, vector, layer={layer},",
            (f"                          coefficients={coefficient!r}, position={s['position']!r}, "
             f"operator={s['operator']!r},"),
            f"                          max_new_tokens={int(s['max_new_tokens'])}, {sampling})",
            "for c in completions:",
            "    print(c.text)",
        ]
        return "\n".join(lines) + "\n"

    def file_stem(self, s: dict[str, Any] | None = None) -> str:
        """The default file name of a save: the construction, the inputs it used, the layer and
        the coefficient (``counterbalanced-fantasy-sports-L15-c0.22``; ``mean_centred`` has no
        second input, so its name has none).

        Example:
            >>> ui.file_stem()
            'counterbalanced-fantasy-sports-L15-c0.22'
        """
        s = s or (self.current["settings"] if self.current is not None else self.settings())
        name, spec = self.build_spec(s)
        used = [_slug(str(spec[k])) for k in ("target", "plus", "reference", "counter", "minus") if k in spec]
        if "seed" in spec:
            used.append(f"seed{spec['seed']}")
        coefficient = "" if s["coefficient"] is None else f"-c{float(s['coefficient']):g}"
        return "-".join([name, *used, f"L{int(s['layer'])}"]) + coefficient

    def page_html(self) -> str:
        """The views on show as one standalone HTML page (the controls as a static summary): to
        look at the widget's state in a browser without a kernel, or to keep it.

        Example:
            >>> Path("widget.html").write_text(ui.page_html())
        """
        s = self.settings()
        shown = {k: v for k, v in s.items() if k not in ("prompt",)}
        slider = self.controls["coefficient"]
        views = {name: getattr(self, name).value for name in
                 ("status", "message", "warnings", "unsteered", "steered", "metrics", "lens", "tokens", "saved")}
        return _page_html({"controls": controls_html(shown, slider=(slider.min, slider.max)),
                           "range": self.range_note.value, **views})

    # -- the coefficient: a slider over the measured range and a box for any number ---
    def _check_coefficient(self, value: float) -> None:
        slider = self.controls["coefficient"]
        lo, hi = slider.min, slider.max
        if lo <= value <= hi:
            self._notices.pop("coefficient", None)
        else:
            self._notices["coefficient"] = (f"coefficient {value:g} is outside the slider's range {lo:g} to {hi:g}: "
                                            f"steering with {value:g} as typed (the slider shows its end)")
        self._show_message()

    def _on_slider(self, change: dict[str, Any]) -> None:
        if self._syncing:
            return
        try:
            value = float(change["new"])
        except (TypeError, ValueError):
            value = float("nan")
        if not math.isfinite(value):  # a slider can send NaN; it never becomes the coefficient
            self._notices["coefficient"] = (f"the slider sent {change['new']!r}, not a finite number; still "
                                            f"steering with {self._coefficient}")
            self._show_message()
            if self._coefficient is not None:
                self._set_quietly(self.controls["coefficient"], self._clamped(self._coefficient))
            return
        self._coefficient = value
        self._set_quietly(self.controls["coefficient_text"], f"{value:g}")
        self._check_coefficient(value)
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
        self._coefficient = value
        self._set_quietly(self.controls["coefficient"], self._clamped(value))
        self._check_coefficient(value)
        self.refresh()

    def _clamped(self, value: float) -> float:
        slider = self.controls["coefficient"]
        return float(min(max(value, slider.min), slider.max))

    def _set_quietly(self, control: Any, value: Any) -> None:
        self._syncing = True
        try:
            control.value = value
        finally:
            self._syncing = False

    def _apply_range(self, found: UsefulRange) -> None:
        """Set the slider over a measured range (and the coefficient to its default when none
        was given), without a generation.

        A new range gets a new slider: the browser's slider (noUiSlider, as ipywidgets 8 ships
        it) keeps its first range for the Home and End keys after ``min``/``max`` change (seen:
        End went to the provisional 1.0 of a slider now spanning -2 to 2).
        """
        lo, hi, step = found.slider
        old = self.controls["coefficient"]
        self._syncing = True
        try:
            if self._coefficient is None:
                self._coefficient = round(found.default, 6)
                self.controls["coefficient_text"].value = f"{self._coefficient:g}"
            coefficient = self._coefficient
            if (old.min, old.max, old.step) != (lo, hi, step):
                slider = w.FloatSlider(value=min(max(coefficient, lo), hi), min=lo, max=hi, step=step,
                                       description=old.description, continuous_update=False, readout=False,
                                       disabled=old.disabled, layout=old.layout, style=old.style)
                slider.observe(self._on_slider, names="value")
                old.unobserve(self._on_slider, names="value")
                self.controls["coefficient"] = slider
                self._coefficient_box.children = (slider, self.controls["coefficient_text"])
                old.close()
            else:
                old.value = self._clamped(coefficient)
        finally:
            self._syncing = False
        self._check_coefficient(coefficient)

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
        # The model's fingerprint: after a weight edit the cached unsteered text is stale.
        return (self.model.fingerprint, s["prompt"].strip(), int(s["max_new_tokens"]), int(s["seed"]), *sampling)

    def _range_key(self, s: dict[str, Any]) -> tuple[Any, ...]:
        name, spec = self.build_spec(s)
        return (name, tuple(sorted(spec.items())), int(s["layer"]), s["position"])

    def refresh(self) -> None:
        """Recompute for the current settings, superseding any generation in flight.

        Everything computed for the old settings is greyed at once: the steered text (and the
        unsteered one when it must be regenerated), the numbers, the lens, the per-token view,
        the warnings and, unless it is known for the new settings, the useful range.
        """
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
            self._show_range(settings)
            self._grey("steered")
            if self._unsteered_key(settings) not in self._unsteered_cache:
                self._grey("unsteered")
        self._submit(self._run, request, settings)

    def _show_range(self, s: dict[str, Any]) -> None:
        """The useful range under the slider: the settings' own when measured, else the last
        one greyed."""
        try:
            known = self._ranges.get(self._range_key(s))
        except (KeyError, ValueError):
            known = None
        if known is not None:
            self.range = known
            self._range_shown = (self._range_key(s), known)
        self.range_note.value = self._range_html(s, stale=known is None)

    def _range_html(self, s: dict[str, Any], *, stale: bool) -> str:
        if self._range_shown is None:
            return ""
        key, found = self._range_shown
        view = RangeView(found.low, found.high, found.threshold, key[2], key[0], DAMAGE_TEXTS,
                         found.reached_low, found.reached_high, self._coefficient)
        return range_html(view, stale=stale)

    def _grey(self, side: str) -> None:
        if self._sides[side].state in ("live", "done"):
            self._sides[side].state = "stale"
            self._render_side(side)

    def _render_side(self, side: str, title: str | None = None) -> None:
        pane = self.unsteered if side == "unsteered" else self.steered
        if title is not None:
            self._titles[side] = title
        pane.value = pane_html(self._titles.get(side, side), self._prompt_shown, self._sides[side])

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

    def _measure_range(self, request: int, s: dict[str, Any], v: torch.Tensor, layer: int, size: float) -> None:
        """Measure (once per construction, inputs, layer and position) and show the useful range."""
        key = self._range_key(s)
        if key not in self._ranges:
            with self._lock:
                if not self._stale(request):
                    self.status.value = "<i>measuring the useful range on general text…</i>"
            try:
                self._ranges[key] = useful_range(self.model, v, layer, position=s["position"],
                                                 threshold=self.damage_threshold, size=size)
                self._notices.pop("range", None)
            except Exception as err:  # noqa: BLE001 - the text still shows; the range says why it is missing
                self._notices["range"] = f"useful range not measured: {type(err).__name__}: {err}"
                self._show_message()
                return
        with self._lock:
            if self._stale(request):
                return
            found = self._ranges[key]
            self._apply_range(found)
            s["coefficient"] = self._coefficient
            self._show_range(s)

    def _generate(self, request: int, s: dict[str, Any]) -> None:
        prompt = s["prompt"].strip()
        if not prompt:
            raise ValueError("the prompt is empty: type a prompt to continue")
        layer = int(s["layer"])
        self.status.value = "<i>building the vector (each set's statistics are computed once)…</i>"
        vec = self.vector(s)
        v = vec.at(layer)
        if v.dim() != 1:
            raise ValueError(f"the {vec.recipe} vector has shape {tuple(v.shape)}; the widget steers with one "
                             "[d_model] vector")
        size = self.unit_norm(layer)
        if s["coefficient"] is None:  # the first default comes from the measured range
            self._measure_range(request, s, v, layer, size)
            if self._stale(request):
                return
            if self._coefficient is None:
                self._coefficient = 0.25  # the range could not be measured: notebook 04's middle coefficient
                self._set_quietly(self.controls["coefficient_text"], "0.25")
                self._set_quietly(self.controls["coefficient"], 0.25)
            s["coefficient"] = self._coefficient
        coefficient = float(s["coefficient"])
        # The same arithmetic as steerlab.generate, so the reproduce code gives the same tokens.
        addition = added_vector(v, coefficient, size)
        operator = s["operator"]
        greedy = bool(s["greedy"])
        n = 1 if greedy else int(s["samples"])
        key = self._unsteered_key(s)
        cached = self._unsteered_cache.get(key)
        lens_view = self._lens_html(v * (1.0 if coefficient >= 0 else -1.0), coefficient, operator)
        name, spec = self.build_spec(s)
        inputs = ", ".join(f"{k}={v!r}" for k, v in spec.items() if k not in ("sample_size", "max_length"))
        title = (f"steered: {name}({inputs}) at layer {layer} × {coefficient:+.2f} {UNIT_LABEL}, "
                 f"{operator} at {s['position']} tokens")
        with self._lock:
            if self._stale(request):
                return
            self.lens.value = lens_view
            self._prompt_shown = prompt
            self.status.value = "<i>generating…</i>"
        rows_unsteered = 0 if cached is not None else n
        unsteered_rows: list[torch.Tensor | None] = [None] * rows_unsteered
        additions = unsteered_rows + [addition] * n
        directions = None if operator == "add" else unsteered_rows + [v / v.norm()] * n
        vocab = vocabularies().get(s["target"].strip())
        eos = eos_ids(self.model)
        tok = self.model.tokenizer
        last_flush = [0.0]
        live: dict[str, float] = {}

        def show(rows: list[list[int]]) -> None:
            """The rows so far, as live text (their perplexities come after the generation)."""
            with self._lock:
                if self._stale(request):
                    return
                now = time.perf_counter()
                if "first_tokens_s" not in live and rows and rows[0]:
                    live["first_tokens_s"] = now - self._started
                rows = [until_eos(r, eos) for r in rows]
                texts = [tok.decode(r, skip_special_tokens=True) for r in rows]
                if rows_unsteered:
                    self._sides["unsteered"] = Side(texts[:rows_unsteered], rows[:rows_unsteered], [], "live")
                    self._render_side("unsteered", "unsteered")
                self._sides["steered"] = Side(texts[rows_unsteered:], rows[rows_unsteered:], [], "live")
                self._render_side("steered", title)
                self.metrics.value = self._metrics_html(vocab, s, size, coefficient, live, "live")
                last_flush[0] = now

        def on_step(rows: list[list[int]]) -> None:
            if time.perf_counter() - last_flush[0] >= FLUSH_SECONDS:
                show([list(r) for r in rows])

        if cached is not None:
            with self._lock:
                self._sides["unsteered"] = Side(list(cached.texts), list(cached.ids), list(cached.perplexity), "done")
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
        show(ids)  # the whole text, its perplexity still to come
        perplexity = completion_perplexity(self.model, [prompt] * len(ids), ids)
        with self._lock:
            if self._stale(request):
                return
            for side in ("unsteered", "steered") if rows_unsteered else ("steered",):
                self._sides[side].state = "done"
                self._render_side(side)
            live["completion_s"] = time.perf_counter() - self._started
            if rows_unsteered:
                self._sides["unsteered"].perplexity = perplexity[:rows_unsteered]
                done = self._sides["unsteered"]
                self._unsteered_cache[key] = Side(list(done.texts), list(done.ids), list(done.perplexity), "done")
            self._sides["steered"].perplexity = perplexity[rows_unsteered:]
            self.timings = dict(live)
            self._metrics_args = (vocab, s, size, coefficient, live, "done")
            self.metrics.value = self._metrics_html(*self._metrics_args)
            self._warnings = text_warnings(self._sides["unsteered"].perplexity, self._sides["steered"].perplexity,
                                           self._sides["steered"].ids)
            self._show_warnings()
            self.last_unsteered = self._sides["unsteered"].texts[0]
            self.last_steered = self._sides["steered"].texts[0]
            self.last_error = None
            self.current = {"vector": vec, "settings": dict(s), "layer": layer, "raw_coefficient":
                            0.0 if addition is None else relative_scale(v, size, coefficient)}
            self._show_message()
        self._run_tokens_view(request)
        self._measure_range(request, s, v, layer, size)
        with self._lock:
            if not self._stale(request):
                self._show_warnings()  # the range may have arrived
        if self._use_judge:
            self._start_judge()
        with self._lock:
            if not self._stale(request):
                self.status.value = "ready"

    def _show_warnings(self) -> None:
        """The text's warnings, and one for a coefficient beyond the useful range."""
        found = [*self._warnings]
        if self._range_shown is not None and self.current is not None:
            key, r = self._range_shown
            c = float(self.current["settings"]["coefficient"])
            if key == self._range_key(self.current["settings"]) and not r.low <= c <= r.high:
                found.append(f"coefficient {c:+.2f} is outside the useful range {r.low:+.2f} to {r.high:+.2f} "
                             f"× {UNIT_LABEL} at layer {key[2]} (general text's perplexity ratio passes "
                             f"{r.threshold:g} there)")
        self.warnings.value = warnings_html(found)

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
            if self._metrics_args is not None and "steerlab-stale" not in self.metrics.value.split(">")[0]:
                self.metrics.value = self._metrics_html(*self._metrics_args)

    # -- what the views are given --------------------------------------------------
    def _lens_html(self, signed: torch.Tensor, coefficient: float, operator: str, k: int = 10) -> str:
        logits = lens_logits(self.model, signed)  # [vocab]
        top, bottom = logits.topk(k), (-logits).topk(k)
        tok = self.model.tokenizer

        def pairs(values: torch.Tensor, ids: torch.Tensor, sign: float) -> list[tuple[str, float]]:
            return [(readable_token(tok.decode([int(i)])), sign * float(x)) for x, i in zip(values, ids)]

        what = ("the ablated direction" if operator == "ablate" else
                f"the added vector ({'+' if coefficient >= 0 else '−'}v)")
        return lens_html(pairs(top.values, top.indices, 1.0), pairs(bottom.values, bottom.indices, -1.0), what)

    def _metrics_html(self, vocab: list[str] | None, s: dict[str, Any], size: float, coefficient: float,
                      live: dict[str, float], state: str) -> str:
        target = s["target"].strip()
        u, st = self._sides["unsteered"], self._sides["steered"]
        # A side is pending while its completion streams in or its perplexity is still to come.
        pending = frozenset(name for name, side in (("unsteered", u), ("steered", st))
                            if side.state == "live" or (side.texts and not side.perplexity))

        def rate(side: Side) -> str:
            if vocab is None or not side.texts:
                return "—"
            return fmt(_mean([vocab_rate(t, vocab) for t in side.texts]))

        def ppl(side: Side) -> str:
            return fmt(_mean(side.perplexity), ".2f") if side.perplexity else ("…" if side.texts else "—")

        def distinct(side: Side) -> str:
            return fmt(_mean([distinct_n(r, DISTINCT_N) for r in side.ids])) if side.ids else "—"

        judged = self._use_judge and target in self._judge_classes
        judge_note = ""

        def concept(side: Side) -> str:
            nonlocal judge_note
            if not judged or not side.texts:
                return "—"
            if self._judge is None:
                return "—" if self._judge_note else "…"
            try:
                return fmt(_mean(self._judge.concept_score(side.texts, target)))
            except JudgeError as err:
                judge_note = str(err)
                return "—"

        def count(side: Side) -> str:
            return f"{_mean([float(len(r)) for r in side.ids]):.0f}" if side.ids else "—"

        vocab_label = (f"'{html.escape(target)}' vocabulary rate" if vocab is not None else
                       "vocabulary rate (no vocabulary for this target)")
        norm = 0.0 if s["operator"] == "ablate" else abs(coefficient) * size
        timing = ""
        if "first_tokens_s" in live:
            timing = f"first tokens after {live['first_tokens_s']:.2f} s"
            if "completion_s" in live:
                timing += f", all after {live['completion_s']:.2f} s"
        concepts = (concept(u), concept(st))
        if not self._use_judge:
            concept_label = "concept score (judge off)"
        elif not judged:
            concept_label = "concept score (no judge class for this target)"
        elif self._judge is not None and not judge_note:
            concept_label = (f"concept score: judge P('{html.escape(target)}') (held-out accuracy "
                             f"{self._judge.heldout_accuracy:.2f})")
        else:
            reason = judge_note or self._judge_note
            concept_label = ("concept score (judge unavailable: " + html.escape(reason) + ")" if reason else
                             "concept score (training the judge…)")
        rows = [MetricRow(vocab_label, rate(u), rate(st), pending),
                MetricRow(concept_label, *concepts, pending),
                MetricRow("perplexity under the unsteered model", ppl(u), ppl(st), pending),
                MetricRow(f"distinct-{DISTINCT_N} (share of distinct token pairs; low: a loop)", distinct(u),
                          distinct(st), pending),
                MetricRow("tokens (mean per sample)", count(u), count(st), pending)]
        footer = (f"added vector norm {norm:.1f} = {abs(coefficient) if norm else 0:.2f} × {UNIT_LABEL} "
                  f"{size:.1f} at layer {int(s['layer'])}"
                  f"{' (ablate adds nothing)' if s['operator'] == 'ablate' else ''}")
        return metrics_html(rows, state=state, generation=self.generations, footer=footer, timing=timing)

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
        can be exported) under ``save_dir`` and show the code that reproduces the steered generation.

        The file name is :meth:`file_stem` unless a stem is typed in the ``save as`` box
        (relative to ``save_dir`` unless absolute).

        Returns the path stem written, or ``None`` (the reason is shown).
        """
        from ..llamacpp import save_both

        if self.current is None:
            self.saved.value = ("<span style='color:#b00'>nothing to save: no steered generation has finished "
                                "with these settings</span>")
            return None
        vec, s = self.current["vector"], self.current["settings"]
        typed = self.controls["save_path"].value.strip()
        stem = Path(typed).expanduser() if typed else Path(self.file_stem(s))
        if not stem.is_absolute():
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
