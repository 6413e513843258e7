"""The registry of constructions: every named way of building a steering vector, in one place.

Notebooks, the widget, the comparison, the CLI and the benchmark all build vectors with
:func:`build` and read set statistics with :func:`set_stats`, so one name always means one
vector. Each :class:`Construction` has a name, a one-line description, the inputs it
needs and one builder:

========================  =========================================================
``raw``                   mean activation of the target set (mostly the layer's bias)
``mean_centred``          target mean - general-text mean (the bias removed)
``isolated``              target mean - reference mean (default: every genre pooled)
``counterbalanced``       target mean - counter set's mean (more target, less counter)
``prompt_pair``           ActAdd: activation of ``plus`` - that of ``minus`` (default " ")
``word_pair``             ActAdd on the set names: " fantasy" - " sports"
``random``                a random direction with the mean-centred vector's norm (control)
``bias``                  the general-text mean itself: the bias direction alone
``bias_ablated``          the raw target mean with the bias direction projected out
``pca_diff``              RepE / repeng: first PC of paired target - counter text means
``pca_center``            first PC of target text means about the general-text mean
``probe``                 a logistic-regression probe's normal, target vs general text
========================  =========================================================

The last three are the field's own methods (:mod:`steerlab.directions`): each gives a unit
direction ``u``, returned with the length of the mean difference along it
(``((mean_target - mean_ref) . u) u``), so their norms compare with the others'.

Set inputs are named sets (the genres, ``shakespeare``, ``general``, ``mixed``); an
unknown name is an error listing the known ones (a typo never becomes a prompt).
Statistics are of ``sample_size`` training texts per set, ``max_length`` tokens each,
the first token excluded (SmolLM2's attention sink; a BOS where the tokenizer adds one),
all layers in one pass (cached on disk). ``mixed`` pools every genre's statistics.
Prompt pairs are read after a BOS token at the pair's last token (not at position 0,
the attention sink), giving one ``[d_model]`` vector added by the same position rule as
every other construction.

Task vectors (function vectors, issue 37) are a second table, :data:`TASK_CONSTRUCTIONS`, that
:func:`build` reads as well. Their ``target`` (and ``counter``) are few-shot prompts, a list of
your own texts (:func:`steerlab.study.tasks.few_shot_prompts` writes them), read at each
prompt's **last token** (the position a zero-shot answer is predicted from), never cut:

========================  =========================================================
``task_raw``              mean last-token activation of the prompts (Todd et al.'s "mean activation")
``task_centred``          that less the general-text mean at the last token of texts cut to ``max_length``
``task_vs_shuffled``      that less the ``counter`` prompts' mean (the same prompts, labels shuffled)
``task_affine``           ``task_raw - r`` with its reference point ``r`` (``counter``'s mean, else the
                          general-text one) kept as ``extra["reference_coordinate"]``: the affine edit
                          ``h - ((h - r) . u) u + c v`` (:func:`steerlab.study.tasks.task_edit`)
========================  =========================================================

They sit apart because their inputs are prompts, not named sets: notebook 04, notebook 05 and
the widget iterate :data:`CONSTRUCTIONS` and offer each entry with a named set or free texts,
which a task construction cannot take; ``build("task_centred", ...)`` works like any other name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .data import load_dataset
from .directions import pca_of_centred, pca_of_differences, probe_direction
from .models import Model
from .sets import STATS_SAMPLE, check_set, named_sets, set_stats, set_word, typical_norm, unit_norm
from .stats import ActivationStats, activation_stats, per_text_means
from .trace import check_layers
from .vectors import (
    SteeringVector,
    counterbalanced,
    isolated,
    mean_centred,
    prompt_pair,
    random_like,
    raw,
)

__all__ = [
    "CONSTRUCTIONS",
    "TASK_CONSTRUCTIONS",
    "Construction",
    "Inputs",
    "build",
    "named_sets",
    "set_stats",
    "typical_norm",
    "unit_norm",
]


SetInput = str | Sequence[str] | None
"""A set role's input: a named set (``"fantasy"``), or your own texts (a list of strings)."""


@dataclass(frozen=True)
class Inputs:
    """What a construction is built from. Set roles take a named set or a list of your own texts;
    ``plus``/``minus`` take text."""

    target: SetInput = None
    reference: SetInput = None
    counter: SetInput = None
    plus: str | None = None
    minus: str | None = None
    seed: int = 0
    sample_size: int = STATS_SAMPLE.sample_size
    max_length: int = STATS_SAMPLE.max_length


@dataclass(frozen=True)
class Construction:
    """A named way of building a vector: ``builder(model, inputs, layers)``."""

    name: str
    description: str
    inputs: tuple[str, ...]
    builder: Callable[[Model, Inputs, list[int]], SteeringVector]


def _own_texts(texts: SetInput, role: str) -> list[str] | None:
    """``texts`` as a list of your own texts, or ``None`` for a named set."""
    if texts is None or isinstance(texts, str):
        return None
    items = list(texts)
    if not items:
        raise ValueError(f"{role} is an empty list: give at least one text, or a named set "
                         f"({', '.join(named_sets())})")
    for i, t in enumerate(items):
        if not isinstance(t, str) or not t.strip():
            raise ValueError(f"{role}[{i}] is {t!r}: expected a non-empty string")
    return items


def _stats(model: Model, name: SetInput, role: str, inputs: Inputs) -> ActivationStats:
    own = _own_texts(name, role)
    if own is not None:  # your own texts: all of them, first token excluded like a named set
        return activation_stats(model, own, None, max_length=inputs.max_length, progress=False)
    return set_stats(model, check_set(name if isinstance(name, str) else None, role), sample_size=inputs.sample_size,
                     max_length=inputs.max_length, seed=inputs.seed)


def _word(name: SetInput, role: str) -> str:
    if _own_texts(name, role) is not None:
        raise ValueError(f"{role} must be a named set for this construction (it uses the set's name as a word); "
                         "for your own words use prompt_pair with plus= and minus=")
    return set_word(check_set(name if isinstance(name, str) else None, role))


def _last_position(pair: SteeringVector, recipe: str) -> SteeringVector:
    """A prompt pair's difference at its last token, as one ``[d_model]`` vector."""
    return SteeringVector({la: v[-1] for la, v in pair.vectors.items()}, pair.model_name, pair.model_fingerprint,
                          pair.d_model, recipe, {**pair.sources, "row": "last"}, "last_after_bos")


def _raw(m: Model, x: Inputs, layers: list[int]) -> SteeringVector:
    return raw(m, _stats(m, x.target, "target", x), layers)


def _mean_centred(m: Model, x: Inputs, layers: list[int]) -> SteeringVector:
    return mean_centred(m, _stats(m, x.target, "target", x), _stats(m, "general", "centre", x), layers)


def _isolated(m: Model, x: Inputs, layers: list[int]) -> SteeringVector:
    return isolated(m, _stats(m, x.target, "target", x), _stats(m, x.reference or "mixed", "reference", x), layers)


def _counterbalanced(m: Model, x: Inputs, layers: list[int]) -> SteeringVector:
    if x.counter is None:
        raise ValueError(f"counterbalanced needs a counter set; known sets: {', '.join(named_sets())}")
    return counterbalanced(m, _stats(m, x.target, "target", x), _stats(m, x.counter, "counter", x), layers)


def _prompt_pair(m: Model, x: Inputs, layers: list[int]) -> SteeringVector:
    plus = x.plus if x.plus is not None else (_word(x.target, "target") if x.target else None)
    if not plus:
        raise ValueError("prompt_pair needs plus= text (or a target set, whose name is used)")
    minus = x.minus if x.minus else " "
    return _last_position(prompt_pair(m, plus, minus, layers, after_bos=True), "prompt_pair")


def _word_pair(m: Model, x: Inputs, layers: list[int]) -> SteeringVector:
    if x.counter is None:
        raise ValueError(f"word_pair needs a counter set; known sets: {', '.join(named_sets())}")
    plus, minus = _word(x.target, "target"), _word(x.counter, "counter")
    return _last_position(prompt_pair(m, plus, minus, layers, after_bos=True), "word_pair")


def _random(m: Model, x: Inputs, layers: list[int]) -> SteeringVector:
    return random_like(_mean_centred(m, x, layers), seed=x.seed)


def _bias(m: Model, x: Inputs, layers: list[int]) -> SteeringVector:
    v = raw(m, _stats(m, "general", "centre", x), layers)
    return SteeringVector(v.vectors, v.model_name, v.model_fingerprint, v.d_model, "bias", v.sources, v.position)


def _bias_ablated(m: Model, x: Inputs, layers: list[int]) -> SteeringVector:
    """``raw - (raw . b) b`` with ``b`` the unit general-text mean: the bias removed by projection,
    not by subtraction (mean-centring subtracts the whole mean, projection only its direction)."""
    r, b = _raw(m, x, layers), _bias(m, x, layers)
    vecs = {}
    for la in layers:
        unit = b.at(la) / b.at(la).norm()
        vecs[la] = r.at(la) - (r.at(la) @ unit) * unit
    return SteeringVector(vecs, r.model_name, r.model_fingerprint, r.d_model, "bias_ablated",
                          {**r.sources, "ablated": "general"}, r.position)


def _text_means(m: Model, name: SetInput, role: str, x: Inputs, layers: list[int]) -> torch.Tensor:
    """Per-text means ``[n_texts, len(layers), d_model]`` of a named set's sampled texts or your own."""
    own = _own_texts(name, role)
    if own is None:
        own = load_dataset(check_set(name if isinstance(name, str) else None, role), "train").sample(
            x.sample_size, seed=x.seed).texts
    return per_text_means(m, own, layers, max_length=x.max_length, progress=False)


def _direction_vector(m: Model, recipe: str, x: Inputs, layers: list[int], sources: dict[str, Any],
                      direction_at: Callable[[int], tuple[torch.Tensor, torch.Tensor]]) -> SteeringVector:
    """A vector per layer from ``direction_at(k) -> (unit direction, mean difference)``: the direction
    with the length of the mean difference along it."""
    vecs = {}
    for k, la in enumerate(layers):
        u, diff = direction_at(k)
        vecs[la] = float(diff.float() @ u) * u
    return SteeringVector(vecs, m.name, m.fingerprint, m.d_model, recipe,
                          {**sources, "sample_size": x.sample_size, "max_length": x.max_length, "seed": x.seed},
                          "all_but_first")


def _label(name: SetInput) -> str | None:
    return name if isinstance(name, str) or name is None else f"{len(list(name))} texts of your own"


def _pca_diff(m: Model, x: Inputs, layers: list[int]) -> SteeringVector:
    if x.counter is None:
        raise ValueError(f"pca_diff needs a counter set to pair with; known sets: {', '.join(named_sets())}")
    a, b = _text_means(m, x.target, "target", x, layers), _text_means(m, x.counter, "counter", x, layers)
    n = min(len(a), len(b))  # pairs by index: the i-th target text with the i-th counter text
    if n < 2:
        raise ValueError(f"pca_diff needs at least 2 pairs of texts; got {n}")
    return _direction_vector(m, "pca_diff", x, layers,
                             {"plus": _label(x.target), "minus": _label(x.counter), "pairs": n},
                             lambda k: (pca_of_differences(a[:n, k], b[:n, k]), (a[:n, k] - b[:n, k]).mean(0)))


def _pca_center(m: Model, x: Inputs, layers: list[int]) -> SteeringVector:
    t = _text_means(m, x.target, "target", x, layers)
    general = _stats(m, "general", "centre", x)
    return _direction_vector(m, "pca_center", x, layers, {"target": _label(x.target), "centre": "general"},
                             lambda k: (pca_of_centred(t[:, k], general.mean_at(layers[k])),
                                        t[:, k].mean(0) - general.mean_at(layers[k])))


def _probe(m: Model, x: Inputs, layers: list[int]) -> SteeringVector:
    t = _text_means(m, x.target, "target", x, layers)
    g = _text_means(m, "general", "other", x, layers)
    return _direction_vector(m, "probe", x, layers, {"target": _label(x.target), "other": "general"},
                             lambda k: (probe_direction(t[:, k], g[:, k], seed=x.seed),
                                        t[:, k].mean(0) - g[:, k].mean(0)))


CONSTRUCTIONS: dict[str, Construction] = {c.name: c for c in (
    Construction("raw", "mean activation of the target set (mostly the layer's bias)", ("target",), _raw),
    Construction("mean_centred", "target mean minus the general-text mean (the bias removed)", ("target",),
                 _mean_centred),
    Construction("isolated", "target mean minus a reference set's mean (default: every genre pooled)",
                 ("target", "reference"), _isolated),
    Construction("counterbalanced", "target mean minus a counter set's mean (more target, less counter)",
                 ("target", "counter"), _counterbalanced),
    Construction("prompt_pair", "ActAdd: activation of the plus text minus the minus text (default ' ')",
                 ("plus", "minus"), _prompt_pair),
    Construction("word_pair", "ActAdd on the set names, e.g. ' fantasy' minus ' sports'", ("target", "counter"),
                 _word_pair),
    Construction("random", "a random direction with the mean-centred vector's norm (the control)",
                 ("target",), _random),
    Construction("bias", "the general-text mean: the layer's bias direction alone", (), _bias),
    Construction("bias_ablated", "the raw target mean with the bias direction projected out", ("target",),
                 _bias_ablated),
    Construction("pca_diff", "RepE/repeng: first principal component of paired (target - counter) text means",
                 ("target", "counter"), _pca_diff),
    Construction("pca_center", "first principal component of target text means about the general-text mean",
                 ("target",), _pca_center),
    Construction("probe", "a logistic-regression probe's normal, target vs general text (per-text means)",
                 ("target",), _probe),
)}


# --- task vectors (issue 37): few-shot prompts read at their last token --------------------------


def _prompts(texts: SetInput, role: str, name: str) -> list[str]:
    """``texts`` as a list of prompts; a named set (or nothing) is an error naming what to give."""
    own = _own_texts(texts, role)
    if own is None:
        raise ValueError(f"{name} needs {role}= as a list of few-shot prompts (steerlab.study.tasks."
                         f"few_shot_prompts writes them), got {texts!r}")
    return own


def _last_token(m: Model, texts: list[str], layers: list[int], max_length: int | None) -> ActivationStats:
    """Statistics of each text's last token (``max_length=None``: the whole prompt, never cut)."""
    return activation_stats(m, texts, layers, position="last", max_length=max_length, progress=False)


def _general_last(m: Model, x: Inputs, layers: list[int]) -> tuple[ActivationStats, str]:
    """The reference set's mean at the last token of its texts cut to ``max_length`` tokens (a prompt's
    length: the same kind of position as a prompt's last token, in general text) and its label."""
    own = _own_texts(x.reference, "reference")
    if own is None:
        name = check_set(x.reference if isinstance(x.reference, str) else "general", "reference")
        own = load_dataset(name, "train").sample(x.sample_size, seed=x.seed).texts
        label = f"{name} (last token of {len(own)} texts cut to {x.max_length} tokens)"
    else:
        label = f"{len(own)} texts of your own (last token, cut to {x.max_length} tokens)"
    return _last_token(m, own, layers, x.max_length), label


def _task_vector(m: Model, recipe: str, vecs: dict[int, torch.Tensor], sources: dict[str, Any],
                 extra: dict[str, Any] | None = None) -> SteeringVector:
    return SteeringVector(vecs, m.name, m.fingerprint, m.d_model, recipe, sources, "last", extra or {})


def _task_raw(m: Model, x: Inputs, layers: list[int]) -> SteeringVector:
    t = _last_token(m, _prompts(x.target, "target", "task_raw"), layers, None)
    return _task_vector(m, "task_raw", {la: t.mean_at(la).clone() for la in layers}, {"target": _label(x.target)})


def _task_centred(m: Model, x: Inputs, layers: list[int]) -> SteeringVector:
    t = _last_token(m, _prompts(x.target, "target", "task_centred"), layers, None)
    g, label = _general_last(m, x, layers)
    return _task_vector(m, "task_centred", {la: t.mean_at(la) - g.mean_at(la) for la in layers},
                        {"target": _label(x.target), "centre": label})


def _task_vs_shuffled(m: Model, x: Inputs, layers: list[int]) -> SteeringVector:
    t = _last_token(m, _prompts(x.target, "target", "task_vs_shuffled"), layers, None)
    c = _last_token(m, _prompts(x.counter, "counter", "task_vs_shuffled"), layers, None)
    return _task_vector(m, "task_vs_shuffled", {la: t.mean_at(la) - c.mean_at(la) for la in layers},
                        {"target": _label(x.target), "counter": _label(x.counter)})


def _task_affine(m: Model, x: Inputs, layers: list[int]) -> SteeringVector:
    """``v = task_raw - r`` and ``r . u`` (``u = v / |v|``), all the affine edit needs of ``r``."""
    t = _last_token(m, _prompts(x.target, "target", "task_affine"), layers, None)
    if x.counter is not None:
        r, label = _last_token(m, _prompts(x.counter, "counter", "task_affine"), layers, None), _label(x.counter)
    else:
        r, label = _general_last(m, x, layers)
    vecs, coordinate = {}, {}
    for la in layers:
        v = t.mean_at(la) - r.mean_at(la)
        if float(v.norm()) == 0:
            raise ValueError(f"task_affine at layer {la}: the prompts' mean equals the reference point's, "
                             "so there is no direction to edit along")
        vecs[la] = v
        coordinate[str(la)] = float(r.mean_at(la) @ (v / v.norm()))
    return _task_vector(m, "task_affine", vecs, {"target": _label(x.target), "reference": label},
                        {"edit": "affine", "operator": "ablate_then_add", "reference_coordinate": coordinate})


TASK_CONSTRUCTIONS: dict[str, Construction] = {c.name: c for c in (
    Construction("task_raw", "task vector: mean last-token activation of few-shot prompts (uncentred)",
                 ("target",), _task_raw),
    Construction("task_centred", "task vector less the general-text mean at the last token of prompt-length texts",
                 ("target", "reference"), _task_centred),
    Construction("task_vs_shuffled", "task vector less the counter prompts' mean (the same prompts, labels shuffled)",
                 ("target", "counter"), _task_vs_shuffled),
    Construction("task_affine", "task vector about a reference point (counter prompts' or general-text mean), "
                 "for the affine edit", ("target", "reference", "counter"), _task_affine),
)}
"""The task-vector constructions (inputs: few-shot prompts); :func:`build` reads them with :data:`CONSTRUCTIONS`."""


def build(name: str, model: Model, layers: list[int] | tuple[int, ...], *, target: SetInput = None,
          reference: SetInput = None, counter: SetInput = None, plus: str | None = None,
          minus: str | None = None, seed: int = 0, sample_size: int = STATS_SAMPLE.sample_size,
          max_length: int = STATS_SAMPLE.max_length) -> SteeringVector:
    """Build construction ``name`` at ``layers``.

    ``target``, ``reference`` and ``counter`` take a named set (:func:`named_sets`) or a
    list of your own texts (all of them are used; ``sample_size`` applies to named sets).
    A task construction (:data:`TASK_CONSTRUCTIONS`) takes few-shot prompts as ``target`` (and
    ``counter``); ``max_length`` cuts its general texts to a prompt's length.

    ``layers`` run from 0 to ``n_layers - 1``, the layers :func:`steerlab.steer.steering` can
    add a vector at (the input of block ``L``); the last block's output, layer ``n_layers``, can
    be measured (:func:`steerlab.stats.activation_stats`) but a vector there could not be used.

    Raises:
        ValueError: an unknown construction or set name (the message lists the known ones),
            a layer outside ``0..n_layers - 1``, or a missing input.

    Example:
        >>> v = build("counterbalanced", model, [15], target="fantasy", counter="sports")
        >>> pirate = build("mean_centred", model, [15], target=["Arr, matey!", "Hoist the sails!"])
        >>> fv = build("task_centred", model, [10], target=few_shot_prompts(task, shots=5), max_length=40)
    """
    construction = CONSTRUCTIONS.get(name) or TASK_CONSTRUCTIONS.get(name)
    if construction is None:
        raise ValueError(f"unknown construction {name!r}; expected one of {', '.join(CONSTRUCTIONS)}, "
                         f"or a task construction: {', '.join(TASK_CONSTRUCTIONS)}")
    ls = check_layers(model, list(layers), allow_last=False)  # the layers sl.steering accepts: 0..n_layers - 1
    inputs = Inputs(target, reference, counter, plus, minus, seed, sample_size, max_length)
    return construction.builder(model, inputs, ls)
