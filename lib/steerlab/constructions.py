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
========================  =========================================================

Set inputs are named sets (the genres, ``shakespeare``, ``general``, ``mixed``); an
unknown name is an error listing the known ones (a typo never becomes a prompt).
Statistics are of ``sample_size`` training texts per set, ``max_length`` tokens each,
the first token excluded (SmolLM2's attention sink; a BOS where the tokenizer adds one),
all layers in one pass (cached on disk). ``mixed`` pools every genre's statistics.
Prompt pairs are read after a BOS token at the pair's last token (not at position 0,
the attention sink), giving one ``[d_model]`` vector added by the same position rule as
every other construction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .data import genres, load_dataset
from .models import Model
from .stats import ActivationStats, activation_stats, pool_stats
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
    "Construction",
    "Inputs",
    "build",
    "named_sets",
    "set_stats",
    "set_word",
    "typical_norm",
]


def named_sets() -> list[str]:
    """Every set name a construction accepts: the genres, ``shakespeare``, ``general``, ``mixed``."""
    return [*genres(), "shakespeare", "general", "mixed"]


def _check_set(name: str | None, role: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{role} is empty: expected one of {', '.join(named_sets())}")
    name = name.strip()
    if name not in named_sets():
        raise ValueError(f"unknown set {name!r} for {role}; known sets: {', '.join(named_sets())} "
                         "(to steer with words of your own, use prompt_pair)")
    return name


_STATS: dict[tuple[Any, ...], ActivationStats] = {}


def set_stats(model: Model, name: str, *, sample_size: int = 32, max_length: int = 128, seed: int = 0,
              progress: bool = False) -> ActivationStats:
    """Statistics of a named set at every layer (first token excluded), cached in memory and on disk.

    ``mixed`` is the exact pool of every genre's statistics (no extra forward pass).

    Example:
        >>> set_stats(model, "fantasy").mean_at(15).shape
        torch.Size([576])
    """
    name = _check_set(name, "set")
    if isinstance(sample_size, bool) or not isinstance(sample_size, int) or sample_size < 1:
        raise ValueError(f"sample_size must be an integer >= 1, got {sample_size!r}")
    key = (model.fingerprint, name, sample_size, max_length, seed)
    if key not in _STATS:
        if name == "mixed":
            parts = [set_stats(model, g, sample_size=sample_size, max_length=max_length, seed=seed,
                               progress=progress) for g in genres()]
            _STATS[key] = pool_stats(parts, "mixed")
        else:
            data = load_dataset(name, "train").sample(sample_size, seed=seed)
            _STATS[key] = activation_stats(model, data, None, max_length=max_length, progress=progress)
    return _STATS[key]


def typical_norm(model: Model, layer: int, **spec: Any) -> float:
    """The layer's typical activation norm: mean norm over general text, first token excluded.

    The unit of every relative coefficient (``steering(..., scale="typical")``).

    Example:
        >>> typical_norm(model, 15)
        156.5...
    """
    general = set_stats(model, "general", **spec)
    return float(general.mean_norm[general.index(check_layers(model, [layer])[0])])


def set_word(name: str) -> str:
    """A set's name as prompt text: ``science_fiction`` -> ``" science fiction"``."""
    return " " + name.replace("_", " ")


@dataclass(frozen=True)
class Inputs:
    """What a construction is built from. Set roles take named sets; ``plus``/``minus`` take text."""

    target: str | None = None
    reference: str | None = None
    counter: str | None = None
    plus: str | None = None
    minus: str | None = None
    seed: int = 0
    sample_size: int = 32
    max_length: int = 128


@dataclass(frozen=True)
class Construction:
    """A named way of building a vector: ``builder(model, inputs, layers)``."""

    name: str
    description: str
    inputs: tuple[str, ...]
    builder: Callable[[Model, Inputs, list[int]], SteeringVector]


def _stats(model: Model, name: str | None, role: str, inputs: Inputs) -> ActivationStats:
    return set_stats(model, _check_set(name, role), sample_size=inputs.sample_size,
                     max_length=inputs.max_length, seed=inputs.seed)


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
    plus = x.plus if x.plus is not None else (set_word(_check_set(x.target, "target")) if x.target else None)
    if not plus:
        raise ValueError("prompt_pair needs plus= text (or a target set, whose name is used)")
    minus = x.minus if x.minus else " "
    return _last_position(prompt_pair(m, plus, minus, layers, after_bos=True), "prompt_pair")


def _word_pair(m: Model, x: Inputs, layers: list[int]) -> SteeringVector:
    if x.counter is None:
        raise ValueError(f"word_pair needs a counter set; known sets: {', '.join(named_sets())}")
    plus, minus = set_word(_check_set(x.target, "target")), set_word(_check_set(x.counter, "counter"))
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
)}


def build(name: str, model: Model, layers: list[int] | tuple[int, ...], *, target: str | None = None,
          reference: str | None = None, counter: str | None = None, plus: str | None = None,
          minus: str | None = None, seed: int = 0, sample_size: int = 32, max_length: int = 128) -> SteeringVector:
    """Build construction ``name`` at ``layers``.

    Raises:
        ValueError: an unknown construction or set name (the message lists the known ones),
            or a missing input.

    Example:
        >>> v = build("counterbalanced", model, [15], target="fantasy", counter="sports")
    """
    if name not in CONSTRUCTIONS:
        raise ValueError(f"unknown construction {name!r}; expected one of {', '.join(CONSTRUCTIONS)}")
    ls = check_layers(model, list(layers), allow_last=name not in ("prompt_pair", "word_pair"))
    inputs = Inputs(target, reference, counter, plus, minus, seed, sample_size, max_length)
    return CONSTRUCTIONS[name].builder(model, inputs, ls)
