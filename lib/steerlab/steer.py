"""The steering scope, and steered generation and forward passes built on it.

``with steering(model, vector, layer=L, coefficient=c):`` edits the residual stream
*entering* block ``L`` (the write-up's "before residual stream layer L") on every call of
``model.hf`` inside the block: ``forward``, ``generate``, an evaluation harness, your own
sampling loop. It is a pair of forward pre-hooks (one on the model, which reads each
call's ``attention_mask`` and cache length, one on the block, which edits), removed when
the block ends, also when an exception interrupts it, so the model is never left steered.
The scope steers only the thread that opened it (another thread's calls of the same model,
the widget's worker or the kernel, run unsteered), and it registers itself on the model:
statistics computed inside it are not cached as the model's (``activation_stats`` warns
and skips its cache; named sets and the coefficient unit are computed unsteered,
:meth:`steerlab.models.Model.unsteered`).

Why a function of the model and not ``vector.apply(model)``: the scope is a temporary
edit *of the model*, and it also steers with plain tensors and with a different vector
per batch row (a coefficient sweep in one ``generate`` call), which a method on one
vector cannot express. ``SteeringVector`` stays a value; the model is what is edited.

Why a hook and not an nnsight intervention: nnsight reads activations
(:mod:`steerlab.trace`), but while a ``generate`` trace is open every module call of
every step passes through its interleaver (~2-3 ms a step on 2 CPU cores, 5-7% of a
batch-1 step of SmolLM2; ``bench/README.md``). The hook costs one Python call a step.
``tests/test_steer.py`` checks both give the same logits and tokens. ``backend="nnsight"``
on :func:`steered_logits`, :func:`steered_generate` and :func:`generate` makes the same
edit as an nnsight trace instead, which can also run on NDIF (``remote=True``;
:mod:`steerlab.trace`).

Positions (:data:`steerlab.tokens.STEER_POSITIONS`), from each call's own attention mask:

- ``all`` (default): every prompt token and every generated token (CAA, AxBench);
- ``all_prompt``: every prompt token; ``last_prompt``: the last one;
- ``first``: the first prompt token (the write-up's; SmolLM2's attention sink, where
  steering is inert);

A call with no cached tokens is a prompt; a call that continues a cache (one generated
token each in ``generate``) is steered only under ``all``. A ``[k, d_model]`` prompt-pair
vector is added to the first ``k`` prompt tokens.

Operators: ``add`` (``h + c v``), ``ablate`` (project the direction of ``v`` out of
``h``), ``ablate_then_add`` (both: ``h - (h.u)u + c v``).

Coefficients: with ``scale="unit"`` (default) the added vector has norm
``coefficient x`` the layer's centred norm (mean of ``||x - mean||`` over general text,
first token excluded, from the one default :data:`steerlab.sets.UNIT`), so a coefficient means
the same for every construction; ``scale="typical"`` measures it in the typical norm ``||x||``
instead (steerlab's unit until 2026-12-04), and ``scale="raw"`` multiplies the vector as it is. One
function, :func:`added_vector`, applies that rule for every caller; coefficient 0 is the
unsteered row under every operator.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import numbers
import operator
import threading
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypedDict, Unpack

import torch

from .arch import blocks_of
from .intervention import OPERATORS, Intervention, check_row, row_intervention
from .models import Model
from .remote import Remote, check_backend, check_local
from .repetition import LOOP_DISTINCT, repetition
from .sampling import NucleusSampler, row_generators
from .sets import typical_norm, unit_norm
from .tokens import STEER_POSITIONS, Batch, check_fits, check_position, check_texts, encode, leading_bos
from .trace import check_layers, nnsight_generate, nnsight_logits
from .vectors import SteeringVector

__all__ = [
    "OPERATORS",
    "SAMPLING_DEFAULTS",
    "SCALES",
    "Completion",
    "Sampling",
    "SteeringWarning",
    "added_vector",
    "eos_ids",
    "generate",
    "relative_scale",
    "row_keys",
    "rows",
    "steered_generate",
    "steered_logits",
    "steering",
    "steering_rows",
    "until_eos",
]

class SteeringWarning(UserWarning):
    """Steered text that shows damage (it repeats itself): the coefficient is likely too large."""


SCALES = ("unit", "typical", "raw")
"""``unit``: x the centred norm (:func:`steerlab.sets.unit_norm`); ``typical``: x ``||x||``; ``raw``: as is."""


@dataclass
class Completion:
    """One generated continuation and the settings that produced it.

    ``token_ids`` are the new tokens up to (not including) the first end-of-sequence token.
    """

    prompt: str
    text: str
    coefficient: float
    token_ids: list[int]
    label: str = ""


def _call_tokens(tokenizer: Any, args: tuple[Any, ...],
                 kwargs: dict[str, Any]) -> tuple[torch.Tensor, bool, torch.Tensor | None]:
    """Of one call of the model: the real-token mask ``[batch, seq]``, whether it continues a
    cache, and (for a prompt given as token ids) which rows start with a tokenizer-added BOS."""
    ids = kwargs.get("input_ids", args[0] if args else None)
    tokens = ids
    if ids is None:
        ids = kwargs.get("inputs_embeds")
    if ids is None:
        raise ValueError("a steered call of the model needs input_ids or inputs_embeds")
    batch, seq = ids.shape[0], ids.shape[1]
    mask = kwargs.get("attention_mask")
    if isinstance(mask, torch.Tensor) and mask.dim() == 2:
        real, continuing = mask[:, -seq:].bool(), mask.shape[1] - seq > 0
    else:
        cache = kwargs.get("past_key_values", kwargs.get("cache"))
        past = int(cache.get_seq_length()) if cache is not None and hasattr(cache, "get_seq_length") else 0
        real, continuing = torch.ones(batch, seq, dtype=torch.bool, device=ids.device), past > 0
    bos = None if continuing or tokens is None else leading_bos(tokenizer, tokens, real)
    return real, continuing, bos


@contextmanager
def _scope(model: Model, intervention: Intervention) -> Iterator[Intervention]:
    check_layers(model, [intervention.layer], allow_last=False)
    block = blocks_of(model.hf)[intervention.layer]
    calls: list[tuple[torch.Tensor, bool, torch.Tensor | None]] = []

    # Only the opening thread's calls are steered (the widget's worker steers while the
    # kernel runs plain forwards), and not while it computes statistics (Model.unsteered).
    owner = threading.get_ident()

    def on_call(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if model.steers(owner):
            calls.append(_call_tokens(model.tokenizer, args, kwargs))

    def on_block(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if not model.steers(owner):
            return None
        if not calls:
            raise RuntimeError(f"block {intervention.layer} ran inside a steering scope outside a call of the "
                               "model; steer through model.hf(...) or model.hf.generate(...)")
        real, continuing, bos = calls[-1]
        hidden = args[0] if args else kwargs["hidden_states"]  # [batch, seq, d_model]
        if hidden.shape[:2] != real.shape:
            raise ValueError(f"block {intervention.layer} got hidden state {tuple(hidden.shape)} for a call with "
                             f"{tuple(real.shape)} tokens")
        hidden = intervention.apply(hidden, real, continuing=continuing, bos=bos)
        return ((hidden, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": hidden})

    handles = [model.hf.register_forward_pre_hook(on_call, with_kwargs=True)]
    owner = model._scope_opened()
    try:
        handles.append(block.register_forward_pre_hook(on_block, with_kwargs=True))
        yield intervention
    finally:
        for handle in handles:
            handle.remove()
        model._scope_closed(owner)


def relative_scale(vector: torch.Tensor, unit: float, coefficient: float) -> float:
    """The raw multiplier that makes ``vector`` ``coefficient * unit`` long: what
    :func:`added_vector` multiplies by (a llama.cpp export's coefficient, for one).

    A ``[k, d_model]`` prompt-pair vector is measured by its largest row.

    Example:
        >>> relative_scale(torch.ones(4), 10.0, 0.5)
        2.5
    """
    norm = float(vector.norm(dim=-1).max() if vector.dim() == 2 else vector.norm())
    if norm == 0:
        raise ValueError("cannot scale a zero vector to a norm")
    return coefficient * unit / norm


def added_vector(vector: torch.Tensor, coefficient: float, unit: float | None) -> torch.Tensor | None:
    """The one coefficient rule: what a steering row adds for ``coefficient``.

    With a ``unit`` (the layer's centred norm, :func:`steerlab.sets.unit_norm`) the
    result is ``coefficient x unit`` long, along ``vector`` (a ``[k, d_model]`` prompt pair
    is scaled so its largest row has that norm), so a coefficient means the same for every
    construction. ``unit=None`` multiplies the vector as it is (``scale="raw"``).
    Coefficient 0 gives ``None``: the unsteered row, left untouched under every operator
    (no addition, no ablation). ``generate``, the steering scope, the widget, the notebooks
    and the comparison's scores all add what this returns.

    Example:
        >>> added_vector(torch.ones(4), 0.5, 10.0).norm()
        tensor(5.)
        >>> added_vector(torch.ones(4), 0.0, 10.0) is None
        True
    """
    c = float(coefficient)
    if not math.isfinite(c):
        raise ValueError(f"coefficient {coefficient!r} is not finite")
    if c == 0:
        return None
    if unit is None:
        return c * vector
    return vector * relative_scale(vector, unit, c)


def _number(c: Any) -> float | None:
    """``c`` as a float if it is a real number (Python, NumPy or 0-d torch; not bool or str), else None."""
    if isinstance(c, (str, bytes, bool)) or type(c).__name__ == "bool_":
        return None
    if isinstance(c, torch.Tensor):
        if c.dim() != 0 or c.dtype == torch.bool or c.is_complex():
            return None
        return float(c)
    if isinstance(c, numbers.Real):  # int, float, every NumPy integer and float scalar
        return float(c)
    return None


def _coefficients(coefficient: Any) -> list[float]:
    """One number or a sequence of them (a list, a NumPy array, a 1-d tensor) as finite floats."""
    one = _number(coefficient)
    if one is not None:
        values: list[Any] = [coefficient]
    elif isinstance(coefficient, (str, bytes, bool)) or not isinstance(coefficient, Iterable):
        raise TypeError(f"coefficients must be numbers, got {coefficient!r} (expected a number or a sequence "
                        "of numbers)")
    else:
        values = coefficient.tolist() if hasattr(coefficient, "tolist") else list(coefficient)
        if not isinstance(values, list):  # a 0-d array's tolist() is a scalar
            values = [values]
    if not values:
        raise ValueError("no coefficients given: expected at least one number")
    out = []
    for i, c in enumerate(values):
        value = _number(c)
        if value is None:
            raise TypeError(f"coefficients must be numbers, got {c!r} (of type {type(c).__name__}) at index {i}")
        if not math.isfinite(value):
            raise ValueError(f"coefficient {i} is {value}: coefficients must be finite numbers (a NaN often comes "
                             "from a failed computation or an empty slider)")
        out.append(value)
    return out


def _count(name: str, value: Any) -> int:
    """A positive integer (Python, NumPy or 0-d torch), for ``max_new_tokens``."""
    try:
        if isinstance(value, (bool, str, bytes)) or type(value).__name__ == "bool_":
            raise TypeError
        number = operator.index(value)  # int, NumPy and 0-d torch integers; not 2.5
    except TypeError:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}") from None
    if number < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return number


def _resolve(model: Model, vector: SteeringVector | torch.Tensor, layer: int | None) -> tuple[torch.Tensor, int]:
    if isinstance(vector, SteeringVector):
        vector.check_for(model)
        if layer is None:
            if len(vector.layers) != 1:
                raise ValueError(f"vector has layers {vector.layers}: pass layer=")
            layer = vector.layers[0]
        return vector.at(layer), layer
    if not isinstance(vector, torch.Tensor):
        raise TypeError(f"vector must be a SteeringVector or a tensor, got {type(vector).__name__}")
    if layer is None:
        raise ValueError("a plain tensor needs layer=")
    check_row(model, vector, 0, "vector")
    return vector, layer


def _unit(model: Model, layer: int, scale: str | float) -> float | None:
    """The length of coefficient 1 under ``scale``: the centred norm, the typical norm, ``None``
    (raw), or a length given as a number (a caller that measured the unit elsewhere)."""
    if isinstance(scale, str):
        if scale not in SCALES:
            raise ValueError(f"unknown scale {scale!r}; expected one of {', '.join(SCALES)} or a unit length")
        return unit_norm(model, layer) if scale == "unit" else typical_norm(model, layer) if scale == "typical" else None
    length = _number(scale)
    if length is None or not (math.isfinite(length) and length > 0):
        raise ValueError(f"scale {scale!r}: expected one of {', '.join(SCALES)} or a positive unit length")
    return length


def rows(model: Model, vector: SteeringVector | torch.Tensor, coefficients: float | Sequence[float], *,
         layer: int | None = None, scale: str | float = "unit", operator: str = "add",
         position: str = "all") -> Intervention:
    """The one way to make steering rows: one row per coefficient, as an :class:`Intervention`.

    Row ``i`` adds :func:`added_vector` of ``vector`` for ``coefficients[i]`` (x the unit that
    ``scale`` names) and, under the ablating operators, projects out the vector's direction.
    Coefficient 0 is the unsteered row under every operator (no addition, no ablation): that
    rule is written here and in :func:`added_vector` only. :func:`steering`, :func:`generate`,
    :func:`steered_generate`, :func:`steered_logits`, the text scores, the log-probability
    engine, the widget and the study all take what this returns. Lay several vectors out in
    one batch with :meth:`Intervention.concat` and :meth:`Intervention.repeat_each`.

    Args:
        vector: a :class:`SteeringVector` (``layer`` defaults to its only layer) or a ``[d_model]``
            tensor (``layer`` required).
        coefficients: one number or a sequence (one row each).
        scale: ``"unit"`` (x the layer's centred norm), ``"typical"`` (x its typical norm),
            ``"raw"`` (the vector times the coefficient), or the unit's length as a number.
        operator: ``add``, ``ablate`` or ``ablate_then_add``.
        position: which tokens are steered (:data:`steerlab.tokens.STEER_POSITIONS`).

    Example:
        >>> edit = sl.rows(model, v, [0, 0.25, 0.5])   # v built at one layer
        >>> ids = sl.steered_generate(model, ["Once upon a time"] * 3, edit, do_sample=False)
    """
    v, la = _resolve(model, vector, layer)
    check_layers(model, [la], allow_last=False)
    if operator not in OPERATORS:
        raise ValueError(f"unknown operator {operator!r}; expected one of {', '.join(OPERATORS)}")
    if operator != "add" and v.dim() != 1:
        raise ValueError("ablation needs a [d_model] direction, not a [k, d_model] prompt pair")
    unit = _unit(model, la, scale)
    adds = [added_vector(v, c, unit) for c in _coefficients(coefficients)]
    direction = v / v.norm() if v.dim() == 1 and operator != "add" else None
    directions = [None if a is None else direction for a in adds]
    return Intervention(la, adds, directions, operator, position)


def _edit(model: Model, edit: Intervention | Sequence[torch.Tensor | None] | None, n: int, *, layer: int | None,
          position: str, operator: str, directions: Sequence[torch.Tensor | None] | None,
          what: str) -> Intervention | None:
    """The checked intervention for ``n`` rows: ``edit`` as given (an :class:`Intervention`), or
    built from already scaled additions and the loose keywords; ``None`` when nothing is edited."""
    if isinstance(edit, Intervention):
        if layer is not None and layer != edit.layer:
            raise ValueError(f"{what}: layer={layer} but the intervention steers layer {edit.layer}; "
                             "pass one of them")
        check_layers(model, [edit.layer], allow_last=False)
        if edit.n_rows not in (1, n):
            raise ValueError(f"{what}: the intervention has {edit.n_rows} rows for {n} prompts")
        for i, a in enumerate(edit.adds):
            if a is not None:
                check_row(model, a, i, "addition")
        return None if all(edit.is_plain(i) for i in range(edit.n_rows)) else edit
    if layer is None:
        raise ValueError(f"{what}: pass an Intervention (sl.rows) or additions with layer=")
    check_layers(model, [layer], allow_last=False)
    if edit is None:
        return None
    additions = list(edit)
    if len(additions) != n:
        raise ValueError(f"{what}: {len(additions)} additions for {n} prompts")
    if all(a is None for a in additions) and operator == "add":
        return None
    return row_intervention(model, additions, layer, position, operator, directions)


def steering(
    model: Model,
    vector: SteeringVector | torch.Tensor,
    *,
    layer: int | None = None,
    coefficient: float | Sequence[float] = 1.0,
    position: str = "all",
    operator: str = "add",
    scale: str | float = "unit",
) -> Any:
    """Steer every call of ``model.hf`` inside a ``with`` block; the model is restored on exit.

    Args:
        vector: a :class:`SteeringVector` (``layer`` defaults to its only layer) or a
            ``[d_model]`` tensor (``layer`` required).
        coefficient: one number, or one per batch row (a sweep in one call).
        position: which tokens are steered (module docstring); ``all`` by default.
        operator: ``add``, ``ablate`` or ``ablate_then_add``.
        scale: ``unit`` (coefficient x the layer's centred norm), ``typical`` (x its typical norm), ``raw``,
            or the unit's length as a number (:func:`rows`).

    Raises:
        ValueError: bad layer, position, operator, scale or coefficient, a vector of the wrong
            width, or (inside the block) a call whose batch size does not match the rows.

    Example:
        >>> with sl.steering(model, v, layer=15, coefficient=0.5):
        ...     out = model.hf.generate(**inputs, max_new_tokens=20)
    """
    check_local(model, "sl.steering")
    return _scope(model, rows(model, vector, coefficient, layer=layer, scale=scale, operator=operator,
                              position=position))


def steering_rows(
    model: Model,
    edit: Intervention | Sequence[torch.Tensor | None],
    *,
    layer: int | None = None,
    position: str = "all",
    operator: str = "add",
    directions: Sequence[torch.Tensor | None] | None = None,
) -> Any:
    """Like :func:`steering`, with row ``i`` of every call edited by row ``i`` of ``edit``: an
    :class:`Intervention` (:func:`rows`), or already scaled ``additions`` with ``layer=`` and,
    for the ablating operators, ``directions`` (normalised here).

    Example:
        >>> with steering_rows(model, sl.rows(model, v, [0, 0.25, 0.5])):
        ...     logits = model.hf(**batch.as_inputs()).logits
    """
    check_local(model, "sl.steering_rows")
    if isinstance(edit, Intervention):
        return _scope(model, _edit(model, edit, edit.n_rows, layer=layer, position=position, operator=operator,
                                   directions=None, what="steering_rows") or edit)
    if layer is None:
        raise ValueError("steering_rows: pass an Intervention (sl.rows) or additions with layer=")
    return _scope(model, row_intervention(model, edit, layer, position, operator, directions))


def row_keys(prompts: Sequence[str], additions: Sequence[torch.Tensor | None]) -> list[str]:
    """A key per row from its prompt and its addition's bytes, plus its index among equal rows:
    what makes a row's sample independent of the rest of the batch (the widget gives each side the
    keys :func:`generate` would give it alone)."""
    seen: Counter[str] = Counter()
    keys = []
    for p, a in zip(prompts, additions):
        digest = "none" if a is None else hashlib.blake2b(
            a.detach().float().cpu().contiguous().numpy().tobytes(), digest_size=8).hexdigest()
        base = f"{p}\x1f{digest}"
        keys.append(f"{base}\x1f{seen[base]}")
        seen[base] += 1
    return keys


_keys = row_keys  # steered_generate's keyword ``row_keys`` shadows the function's name there


def until_eos(row: list[int], eos: set[int]) -> list[int]:
    """``row`` up to (not including) its first end-of-sequence token."""
    for i, t in enumerate(row):
        if t in eos:
            return row[:i]
    return row


def eos_ids(model: Model) -> set[int]:
    """The model's end-of-sequence token ids (its generation config's, else its tokenizer's)."""
    eos = model.hf.generation_config.eos_token_id if model.hf.generation_config is not None else None
    if eos is None:
        eos = model.tokenizer.eos_token_id
    return set(eos) if isinstance(eos, list) else ({int(eos)} if eos is not None else set())


class Sampling(TypedDict, total=False):
    """How tokens are chosen, the same keywords for :func:`generate`, :func:`steered_generate` and the
    widget (each caller forwards them as one mapping, never one by one).

    ``do_sample`` (default True) draws with :class:`steerlab.sampling.NucleusSampler`: ``temperature``
    (1.0), ``top_p`` (0.3), ``top_k`` (50), one generator per row seeded from ``seed`` (0; ``None``:
    unseeded) and the row's key; ``do_sample=False`` is greedy decoding.
    """

    seed: int | None
    do_sample: bool
    temperature: float
    top_p: float
    top_k: int


SAMPLING_DEFAULTS: Sampling = {"seed": 0, "do_sample": True, "temperature": 1.0, "top_p": 0.3, "top_k": 50}


class _Steps:
    """A stopping criterion (transformers calls it after every step with the ids so far) that reports
    each step's tokens (``on_step``) and ends generation when ``should_stop`` says so (the widget
    drops a generation that a newer request superseded)."""

    def __init__(self, prompt_length: int, on_step: Callable[[list[list[int]]], None] | None,
                 should_stop: Callable[[], bool] | None) -> None:
        self.prompt_length, self.on_step, self.should_stop = prompt_length, on_step, should_stop

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kw: object) -> torch.Tensor:
        if self.on_step is not None:
            self.on_step(input_ids[:, self.prompt_length:].tolist())
        stop = bool(self.should_stop()) if self.should_stop is not None else False
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool)


@torch.inference_mode()
def steered_generate(
    model: Model,
    prompts: Sequence[str],
    edit: Intervention | Sequence[torch.Tensor | None] | None,
    *,
    layer: int | None = None,
    position: str = "all",
    operator: str = "add",
    directions: Sequence[torch.Tensor | None] | None = None,
    max_new_tokens: int = 40,
    should_stop: Callable[[], bool] | None = None,
    on_step: Callable[[list[list[int]]], None] | None = None,
    row_keys: Sequence[str] | None = None,
    backend: str = "hook",
    remote: Remote = False,
    **sampling: Unpack[Sampling],
) -> list[list[int]]:
    """Generate one continuation per prompt, prompt ``i`` steered by row ``i`` of ``edit``, in one batched call.

    ``edit`` is an :class:`Intervention` (:func:`rows`, one row per prompt or one for all), or
    already scaled additions (``[d_model]``, ``[k, d_model]`` or ``None`` per prompt) with
    ``layer=``, ``position=``, ``operator=`` and ``directions=``; ``None`` generates unsteered.
    Returns each row's new token ids up to the first end-of-sequence token. ``sampling``:
    :class:`Sampling` (random draws by default; ``do_sample=False`` for greedy), each row's
    generator seeded from ``seed`` and the row's key (default: its prompt, its addition and
    its index among equal rows).

    ``on_step(rows)`` is called after every step with each row's new tokens so far (the
    widget streams them); ``should_stop()`` is polled after every step and ends generation
    when True. ``backend="nnsight"`` makes the same edits in an nnsight trace
    (:func:`steerlab.trace.nnsight_generate`); ``remote=True`` runs that trace on NDIF (a
    model from ``load_model(hub_id, remote=True)``; ``should_stop`` and ``on_step`` are
    refused there), ``remote="local"`` is nnsight's serialized dry run of it.

    Example:
        >>> ids = steered_generate(model, ["Hi", "Hi"], sl.rows(model, v, [0, 0.5]), do_sample=False)
    """
    check_backend(backend, remote, model, "steered_generate")
    if remote is True and (should_stop is not None or on_step is not None):
        raise ValueError("steered_generate(remote=True) cannot call should_stop or on_step: the server generates "
                         "without calling back; pass neither (or generate locally)")
    unknown = [k for k in sampling if k not in SAMPLING_DEFAULTS]
    if unknown:
        raise TypeError(f"steered_generate got unknown sampling keywords {unknown}; expected "
                        f"{', '.join(SAMPLING_DEFAULTS)}")
    chosen: Sampling = {**SAMPLING_DEFAULTS, **sampling}
    max_new_tokens = _count("max_new_tokens", max_new_tokens)
    intervention = _edit(model, edit, len(prompts), layer=layer, position=position, operator=operator,
                         directions=directions, what="steered_generate")
    batch = encode(model.tokenizer, prompts, padding_side="left")
    check_fits(model.hf.config, batch.lengths, what="prompt", max_new_tokens=max_new_tokens)
    gen_kwargs: dict[str, object] = {
        "max_new_tokens": max_new_tokens,
        "do_sample": False,
        "pad_token_id": model.tokenizer.pad_token_id,
    }
    if chosen["do_sample"]:
        additions = ([None] * len(prompts) if intervention is None else
                     intervention.adds * (len(prompts) if intervention.n_rows == 1 else 1))
        keys = list(row_keys) if row_keys is not None else _keys(prompts, additions)
        if len(keys) != len(prompts):
            raise ValueError(f"{len(keys)} row keys for {len(prompts)} prompts")
        seed = chosen["seed"]
        generators = row_generators(seed, keys) if seed is not None else None
        from transformers import LogitsProcessorList

        # Greedy decoding over the one token NucleusSampler drew (transformers' warpers off).
        gen_kwargs["logits_processor"] = LogitsProcessorList([NucleusSampler(
            chosen["temperature"], chosen["top_k"], chosen["top_p"], generators=generators)])
    prompt_len = batch.input_ids.shape[1]
    if should_stop is not None or on_step is not None:
        from transformers import StoppingCriteriaList

        gen_kwargs["stopping_criteria"] = StoppingCriteriaList([_Steps(prompt_len, on_step, should_stop)])
    eos = eos_ids(model)
    if backend == "nnsight":
        new = nnsight_generate(model, batch, intervention, max_new_tokens=max_new_tokens,
                               generate_kwargs={k: v for k, v in gen_kwargs.items() if k != "max_new_tokens"},
                               remote=remote)
        return [until_eos(row.tolist(), eos) for row in new]
    inputs = {k: v.to(model.device) for k, v in batch.as_inputs().items()}
    if intervention is None:
        output = model.hf.generate(**inputs, **gen_kwargs)
    else:
        with _scope(model, intervention):
            output = model.hf.generate(**inputs, **gen_kwargs)
    return [until_eos(row.tolist(), eos) for row in output[:, prompt_len:]]


def generate(
    model: Model,
    prompts: str | Sequence[str],
    vector: SteeringVector | torch.Tensor | None = None,
    *,
    layer: int | None = None,
    coefficients: float | Sequence[float] = 0.5,
    position: str = "all",
    operator: str = "add",
    scale: str | float = "unit",
    max_new_tokens: int = 40,
    should_stop: Callable[[], bool] | None = None,
    on_step: Callable[[list[list[int]]], None] | None = None,
    backend: str = "hook",
    remote: Remote = False,
    **sampling: Unpack[Sampling],
) -> list[Completion]:
    """Steered (or, with ``vector=None``, plain) completions for every prompt x coefficient, one batched call.

    Coefficients are in units of the layer's centred norm (``scale="unit"``; ``scale="typical"``:
    its typical norm; ``scale="raw"`` multiplies the vector as it is); coefficient 0 is the unsteered row.
    ``layer`` defaults to the vector's only layer; ``position`` to every token. ``sampling``:
    :class:`Sampling` (``do_sample=False`` for greedy). ``backend`` / ``remote`` / ``on_step``:
    as in :func:`steered_generate` (a remote model needs ``scale="raw"``: the unit comes from
    local statistics).

    Example:
        >>> v = sl.build("mean_centred", model, layers=[15], target="fantasy")
        >>> for c in sl.generate(model, "Here is a story:", v, coefficients=[0, 0.5]):
        ...     print(c.coefficient, c.text)
    """
    check_backend(backend, remote, model, "generate")
    if remote is True and vector is not None and scale != "raw":
        raise ValueError(f"generate(remote=True) needs scale='raw': scale={scale!r} reads the layer's norm "
                         "from statistics computed in this process")
    prompt_list = check_texts([prompts] if isinstance(prompts, str) else prompts)
    coefs = _coefficients(coefficients)
    pairs = list(itertools.product(prompt_list, coefs))
    if vector is None:
        if layer is not None:
            check_layers(model, [layer], allow_last=False)
        check_position(position, STEER_POSITIONS)
        edit: Intervention = Intervention.plain(len(pairs), 0 if layer is None else layer, position)
        label = "unsteered"
    else:
        edit = rows(model, vector, [c for _, c in pairs], layer=layer, scale=scale, operator=operator,
                    position=position)
        label = vector.describe() if isinstance(vector, SteeringVector) else "tensor"
    ids = steered_generate(model, [p for p, _ in pairs], edit, max_new_tokens=max_new_tokens,
                           should_stop=should_stop, on_step=on_step, backend=backend, remote=remote, **sampling)
    tok = model.tokenizer
    out = [Completion(prompt=p, text=tok.decode(row, skip_special_tokens=True), coefficient=c, token_ids=row,
                      label=label) for (p, c), row in zip(pairs, ids)]
    if vector is not None:
        _warn_loops(out)
    return out


def _warn_loops(completions: Sequence[Completion]) -> None:
    """Warn when a steered completion repeats itself (:func:`steerlab.metrics.repetition`): the sign of
    a coefficient far past the range where steering keeps text intact."""
    looping = [c for c in completions if c.coefficient != 0 and repetition(c.token_ids) is not None]
    if looping:
        worst = min(looping, key=lambda c: repetition(c.token_ids) or 0.0)
        warnings.warn(f"the completion steered at coefficient {worst.coefficient:g} repeats itself "
                      f"(distinct-2 {repetition(worst.token_ids):.2f}, under {LOOP_DISTINCT:g}): {worst.text[:60]!r}; "
                      f"the coefficient is likely past the range where steering keeps text intact "
                      f"(notebook 04 and the widget measure that range)", SteeringWarning, stacklevel=3)


@torch.inference_mode()
def steered_logits(
    model: Model,
    batch: Batch,
    edit: Intervention | Sequence[torch.Tensor | None] | None = None,
    *,
    layer: int | None = None,
    position: str = "all_prompt",
    operator: str = "add",
    directions: Sequence[torch.Tensor | None] | None = None,
    backend: str = "hook",
    remote: Remote = False,
) -> torch.Tensor:
    """Logits ``[batch, seq, vocab]`` of one forward pass, row ``i`` steered by row ``i`` of ``edit``.

    ``edit``: an :class:`Intervention` (:func:`rows`), or already scaled additions with ``layer=``
    (and ``position``, ``operator``, ``directions``); ``None`` is the plain forward.
    ``backend="nnsight"`` makes the same edit in an nnsight trace
    (:func:`steerlab.trace.nnsight_logits`); ``remote=True`` runs it on NDIF, ``remote="local"``
    is nnsight's serialized dry run.

    Example:
        >>> logits = steered_logits(model, encode(model.tokenizer, ["Hi there"]), sl.rows(model, v, 0.5))
    """
    check_backend(backend, remote, model, "steered_logits")
    check_fits(model.hf.config, batch.lengths, what="row")
    n = int(batch.input_ids.shape[0])
    intervention = _edit(model, edit, n, layer=0 if edit is None and layer is None else layer, position=position,
                         operator=operator, directions=directions, what="steered_logits")
    if backend == "nnsight":
        return nnsight_logits(model, batch, intervention, remote=remote)
    inputs = {k: v.to(model.device) for k, v in batch.as_inputs().items()}
    if intervention is None:
        return model.hf(**inputs).logits.float()
    with _scope(model, intervention):
        logits = model.hf(**inputs).logits
    return logits.float()
