"""Named text sets, their cached statistics, and the coefficient unit (the layer's centred norm).

A named set is a genre, ``shakespeare``, ``general`` or ``mixed`` (every genre pooled);
an unknown name is an error listing the known ones. :func:`set_stats` reads a set's
statistics at every layer (first token excluded), cached in memory and on disk.

The coefficient unit: "coefficient 1" adds a vector as long as the layer's *centred norm*,
the mean norm of general text's activations less their mean, ``||x - mean||``
(:func:`unit_norm`). Its statistics are one named default, :data:`UNIT`, used by every caller
(``generate``, the widget, the notebooks, the comparison) and recorded in every result that
uses it, so "x 1.0" is the same vector everywhere. It is the centred norm rather than the
typical norm ``||x||`` (:func:`typical_norm`, steerlab's unit until 2026-12-04 and still
``scale="typical"``) because the typical norm is mostly the layer's bias, by a share that
differs between models: measured on SmolLM2 and Gemma 3 (``scripts/unit_transfer.py``), the
damage threshold sits 3.4x apart across the two models in the centred unit and 8.2x apart in
the typical one (README, "The coefficient unit").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from .data import genres, load_dataset
from .models import Model, tokenizer_digest
from .stats import ActivationStats, activation_stats, pool_stats
from .trace import check_layers

__all__ = ["STATS_SAMPLE", "UNIT", "UNIT_KINDS", "UNIT_LABEL", "StatsSample", "UnitSpec", "check_set", "named_sets",
           "set_stats", "set_word", "typical_norm", "unit_norm"]


@dataclass(frozen=True)
class StatsSample:
    """How many texts a set's statistics read and how many tokens of each: the one default of every
    builder, set statistic, notebook and the comparison (32 texts x 128 tokens)."""

    sample_size: int = 32
    max_length: int = 128


STATS_SAMPLE = StatsSample()
"""The default sample behind a set's statistics: :attr:`StatsSample.sample_size` texts of at most
:attr:`StatsSample.max_length` tokens."""


@dataclass(frozen=True)
class UnitSpec:
    """Which statistics define the coefficient unit: ``sample_size`` general-text training
    texts, ``max_length`` tokens each, drawn with ``seed``, first token excluded.

    ``kind``: ``"centred"`` (the default), the mean norm of the activations less their mean,
    ``||x - mean||``: the spread around the bias rather than the bias itself; or ``"typical"``,
    the mean norm of the activations, ``||x||`` (on a model whose typical norm is mostly bias,
    a "typical" coefficient is a much larger push than on one whose is not).
    ``scripts/unit_transfer.py`` measures which of the two places the damage threshold at
    closer coefficients across models (README, "The coefficient unit").
    """

    sample_size: int = STATS_SAMPLE.sample_size
    max_length: int = STATS_SAMPLE.max_length
    seed: int = 0
    set_name: str = "general"
    kind: str = "centred"

    def __post_init__(self) -> None:
        if self.kind not in UNIT_KINDS:
            raise ValueError(f"unit kind {self.kind!r}: expected one of {', '.join(UNIT_KINDS)}")

    def as_dict(self) -> dict[str, Any]:
        """The spec as plain values, for a result's provenance."""
        return asdict(self)

    @property
    def label(self) -> str:
        """What a coefficient is a multiple of, for axis titles and sentences: ``"centred norm"``."""
        return f"{self.kind} norm"


UNIT_KINDS = ("centred", "typical")
UNIT = UnitSpec()
"""The one default behind every "coefficient x centred norm" in steerlab."""
UNIT_LABEL = UNIT.label
"""``"centred norm"``: how every label, title and sentence names the coefficient's unit."""


def named_sets() -> list[str]:
    """Every set name a construction accepts: the genres, ``shakespeare``, ``general``, ``mixed``."""
    return [*genres(), "shakespeare", "general", "mixed"]


def check_set(name: str | None, role: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{role} is empty: expected one of {', '.join(named_sets())}")
    name = name.strip()
    if name not in named_sets():
        raise ValueError(f"unknown set {name!r} for {role}; known sets: {', '.join(named_sets())} "
                         "(to steer with words of your own, use prompt_pair)")
    return name


_STATS: dict[tuple[Any, ...], ActivationStats] = {}


def set_stats(model: Model, name: str, *, sample_size: int = STATS_SAMPLE.sample_size,
              max_length: int = STATS_SAMPLE.max_length, seed: int = 0,
              progress: bool = False) -> ActivationStats:
    """Statistics of a named set at every layer (first token excluded), cached in memory and on disk.

    ``mixed`` is the exact pool of every genre's statistics (no extra forward pass).

    Example:
        >>> set_stats(model, "fantasy").mean_at(15).shape
        torch.Size([576])
    """
    name = check_set(name, "set")
    if isinstance(sample_size, bool) or not isinstance(sample_size, int) or sample_size < 1:
        raise ValueError(f"sample_size must be an integer >= 1, got {sample_size!r}")
    # The statistics of the model itself, also when called inside a steering scope (the unit
    # of a nested sl.steering is the unsteered model's), so they may be cached.
    with model.unsteered(), model.checked_once():  # one weight check for "mixed"'s nine cache reads
        if name == "mixed":
            parts = [set_stats(model, g, sample_size=sample_size, max_length=max_length, seed=seed,
                               progress=progress) for g in genres()]
            key: tuple[Any, ...] = (model.checked_fingerprint(), tokenizer_digest(model.tokenizer), name,
                                    max_length, tuple(p.dataset_hash for p in parts))
            if key not in _STATS:
                _STATS[key] = pool_stats(parts, "mixed")
            return _STATS[key]
        data = load_dataset(name, "train").sample(sample_size, seed=seed)
        # Keyed by the texts' content, not the set's name: edited data files are seen in a running session.
        key = (model.checked_fingerprint(), tokenizer_digest(model.tokenizer), name, max_length, data.content_hash)
        if key not in _STATS:
            _STATS[key] = activation_stats(model, data, None, max_length=max_length, progress=progress)
        return _STATS[key]


def unit_norm(model: Model, layer: int, unit: UnitSpec = UNIT) -> float:
    """The coefficient unit at ``layer``: by default the centred norm, the mean of ``||x - mean||``
    over general text, first token excluded.

    The unit of every relative coefficient (``steering(..., scale="unit")``, the default), from
    the statistics :data:`UNIT` names (pass another :class:`UnitSpec` only to study the unit;
    ``UnitSpec(kind="typical")`` gives :func:`typical_norm`).

    Example:
        >>> unit_norm(model, 15)
        109.7...
    """
    if not isinstance(unit, UnitSpec):
        raise TypeError(f"unit must be a steerlab.sets.UnitSpec, got {unit!r}")
    general = set_stats(model, unit.set_name, sample_size=unit.sample_size, max_length=unit.max_length,
                        seed=unit.seed)
    layer = check_layers(model, [layer])[0]
    if unit.kind == "typical":
        return float(general.mean_norm[general.index(layer)])
    with model.unsteered(), model.checked_once() as fingerprint:
        data = load_dataset(unit.set_name, "train").sample(unit.sample_size, seed=unit.seed)
        key = (fingerprint, tokenizer_digest(model.tokenizer), "centred", unit, data.content_hash)
        if key not in _STATS:  # the same texts, less the mean at every layer: mean ||x - mean||
            _STATS[key] = activation_stats(model, data, None, max_length=unit.max_length, centre=general,
                                           progress=False)
        centred = _STATS[key]
    return float(centred.mean_norm[centred.index(layer)])


def typical_norm(model: Model, layer: int) -> float:
    """The layer's typical activation norm: the mean of ``||x||`` over general text (first token
    excluded), from :data:`UNIT`'s texts. Notebook 01's bias measure, and ``scale="typical"``'s
    unit; the default coefficient unit is :func:`unit_norm`.

    Example:
        >>> typical_norm(model, 15)
        156.2...
    """
    return unit_norm(model, layer, replace(UNIT, kind="typical"))


def set_word(name: str) -> str:
    """A set's name as prompt text: ``science_fiction`` -> ``" science fiction"``."""
    return " " + name.replace("_", " ")
