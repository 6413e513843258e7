"""Notebook 04's configuration: :class:`CompareConfig`, validated once by its own types, and its presets.

Every field is a declared type (:mod:`steerlab.study.schema`): a bad value is a :class:`ParameterError` (a
``ValueError``) naming the field, the value and what was expected, before any model work; editing a field
validates it again. The notebook's parameters (:class:`steerlab.lab.params.CompareParams`) are a preset and
overrides of these fields, checked by this model, not by a second copy of the rules.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Self

import numpy as np
import torch
from annotated_types import Ge, Gt, Le, Lt, MaxLen
from pydantic import AliasChoices, ConfigDict, Field, field_validator, model_validator

from ..constructions import CONSTRUCTIONS
from ..data import genres
from ..load import DTYPES, fast_dtype
from ..metrics import GRID_RULE, check_steerability_grid
from ..models import Model
from ..tokens import STEER_POSITIONS
from .conditions import PROMPTING, TARGETS, layer_at, target_names
from .matched import DAMAGE_GRID, MATCHED_LEVEL
from .prompting import PROMPTING_STYLES
from .schema import (
    MAX_COEFFICIENT,
    MAX_COEFFICIENTS,
    MAX_SEED,
    MAX_TEXTS,
    MAX_TOKENS,
    Layer,
    ListOf,
    Number,
    OneOf,
    ParameterError,
    Schema,
    not_allowed,
)

__all__ = ["GENERATE_AT", "PRESETS", "CompareConfig"]

GENERATE_AT = ("matched", "grid")
"""Where completions are generated: ``"matched"``, each vector at its matched-damage coefficient (chosen on
general text, so every prompt reports); ``"grid"``, at every positive coefficient of ``coefficients`` (chosen
per condition on the selection half of the prompts, scored on the report half)."""


def _plain(value: Any) -> Any:
    """numpy and torch numbers (and 1-D arrays or tensors) as the Python numbers and lists they hold."""
    if isinstance(value, (np.ndarray, torch.Tensor)) and value.ndim == 1:
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, (np.generic, np.ndarray, torch.Tensor)) and getattr(value, "ndim", 0) == 0:
        return value.item()
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _distinct(values: list[Any] | None) -> list[Any] | None:
    if values is not None and len(set(values)) != len(values):
        repeated = sorted({repr(v) for v in values if values.count(v) > 1})
        raise not_allowed(f"a list without repeats ({', '.join(repeated)} repeated)")
    return values


Count = Annotated[int, Ge(1), Le(MAX_TEXTS)]
Tokens = Annotated[int, Ge(2), Le(MAX_TOKENS)]
# A perplexity ratio: at 100 the text is already broken, so no level or threshold needs more.
Ratio = Annotated[Number, Gt(1), Le(100)]


class CompareConfig(Schema):
    """Everything notebook 04's experiment depends on.

    ``depths`` place layers as fractions of the model's depth (``0.5`` -> layer 15 of SmolLM2's 30, 9 of
    Gemma 3's 18), so one preset fits every model; ``layers`` overrides them. ``coefficients`` (x the centred
    norm, the unit) is the steerability grid (:data:`steerlab.metrics.GRID_RULE`); generations run at its
    positive values with ``generate_at="grid"``. ``score_dtype`` (``"auto"``, ``"float32"``, ``"bfloat16"``) is
    the dtype of the forward-pass measures (:meth:`resolved_score_dtype`); ``generate_dtype`` that of the
    completions (float32 unless bench section 11's rule admits bfloat16). ``constructions`` was ``methods``
    until 2026-12-07 (the old name is still read).

    Example:
        >>> CompareConfig(max_new_tokens=0)
        Traceback (most recent call last):
        ParameterError: CompareConfig max_new_tokens=0 is not allowed: expected an integer from 1 to 10000
    """

    model_config = ConfigDict(strict=True, validate_assignment=True, allow_inf_nan=False, validate_default=True,
                              protected_namespaces=(), populate_by_name=True)
    NOUN: ClassVar[str] = "CompareConfig"

    targets: ListOf[Annotated[str, OneOf(target_names)]] = Field(
        ["fantasy", "science_fiction", "shakespeare"], description="target sets, each with its counter genre")
    counters: dict[str, Annotated[str, OneOf(genres)]] = Field(
        default_factory=lambda: dict(TARGETS), description="each target's counter genre (the minus side)")
    constructions: ListOf[Annotated[str, OneOf(CONSTRUCTIONS)]] = Field(
        list(CONSTRUCTIONS), validation_alias=AliasChoices("constructions", "methods"),
        description="constructions compared")
    depths: Annotated[list[Annotated[Number, Gt(0), Lt(1)]], MaxLen(64)] = Field(
        [0.5], description="layers as fractions of the model's depth")
    layers: ListOf[Layer] | None = Field(None, description="explicit layers, over depths")
    coefficients: Annotated[list[Annotated[Number, Ge(-MAX_COEFFICIENT), Le(MAX_COEFFICIENT)]],
                            MaxLen(MAX_COEFFICIENTS)] = Field(
        [-0.25, 0.0, 0.125, 0.25, 0.5], description="the steerability grid x centred norm",
        json_schema_extra={"expected": f"a list of numbers, {GRID_RULE}"})
    positions: ListOf[Annotated[str, OneOf(STEER_POSITIONS)]] = Field(["all", "all_prompt"],
                                                                      description="position rules")
    n_prompts: Annotated[int, Ge(2), Le(MAX_TEXTS)] = Field(8, description="story openings generated from")
    max_new_tokens: Annotated[int, Ge(1), Le(4096)] = Field(24, description="tokens generated per completion")
    n_steer: Count = Field(6, description="held-out story pairs per target for steerability")
    n_general: Count = Field(6, description="general texts the damage is measured on")
    sample_size: Count = Field(32, description="texts per set statistic")
    max_length: Tokens = Field(128, description="tokens per statistics text")
    eval_length: Tokens = Field(48, description="tokens per damage text")
    damage_threshold: Ratio = Field(1.5, description="damage reference (perplexity ratio), for generate_at='grid'")
    min_judge_accuracy: Annotated[Number, Ge(0), Le(1)] = Field(0.8, description="the judge's held-out floor")
    split_seed: Annotated[int, Ge(0), Le(MAX_SEED)] = Field(0, description="the prompt split's seed")
    score_dtype: Annotated[str, OneOf(["auto", *DTYPES])] = Field("auto", description="forward-pass scores' dtype")
    generate_dtype: Annotated[str, OneOf(list(DTYPES))] = Field("float32", description="the completions' dtype")
    baselines: Annotated[list[Annotated[str, OneOf(PROMPTING)]], MaxLen(8)] = Field(
        list(PROMPTING), description="prompting baselines (an empty list: none)")
    prompting_style: Annotated[str, OneOf(PROMPTING_STYLES)] = Field("auto", description="how prompting asks")
    matched_level: Ratio = Field(MATCHED_LEVEL, description="the damage every construction is matched at")
    damage_grid: Annotated[list[Annotated[Number, Gt(0), Le(MAX_COEFFICIENT)]], MaxLen(64)] = Field(
        list(DAMAGE_GRID), description="coefficients of the damage curve",
        json_schema_extra={"expected": "a list of at least two distinct positive numbers"})
    generate_at: Annotated[str, OneOf(GENERATE_AT)] = Field("matched", description="where completions are generated")

    @model_validator(mode="before")
    @classmethod
    def _python_numbers(cls, values: Any) -> Any:
        """numpy and torch numbers and arrays, and tuples, as the Python values they hold (``bool`` stays a bool,
        which no number field takes)."""
        return {k: _plain(v) for k, v in values.items()} if isinstance(values, Mapping) else values

    @field_validator("targets", "constructions", "depths", "layers", "positions", "baselines")
    @classmethod
    def _no_repeats(cls, values: list[Any] | None) -> list[Any] | None:
        return _distinct(values)

    @field_validator("coefficients")
    @classmethod
    def _grid(cls, values: list[float]) -> list[float]:
        try:
            return check_steerability_grid(_distinct(values) or [])
        except ValueError:
            raise not_allowed(f"a list of numbers, {GRID_RULE}") from None

    @field_validator("damage_grid")
    @classmethod
    def _damage_grid(cls, values: list[float]) -> list[float]:
        if len(values) < 2 or len(set(values)) != len(values):
            raise not_allowed("at least two distinct positive numbers (a curve to place the level on)")
        return sorted(values)

    @model_validator(mode="after")
    def _across(self) -> Self:
        for t in self.targets:
            counter = self.counters.get(t)
            if counter is None or counter == t:
                raise ValueError(f"target {t!r} needs a counter genre other than itself in counters; got "
                                 f"{counter!r}; genres: {genres()}")
        if not self.depths and self.layers is None:
            raise ValueError("depths is empty and layers is None: give the layers, or fractions of the depth")
        return self

    @property
    def methods(self) -> list[str]:
        """The old name of :attr:`constructions` (read-only)."""
        return list(self.constructions)

    def validate(self) -> None:  # type: ignore[override]  # pydantic's v1-era classmethod of that name
        """Check every field again (every assignment is already checked; this re-runs the checks across fields).

        Raises:
            ParameterError: the first bad field, naming it, its value and what was expected.
        """
        type(self)(**self.model_dump())

    def resolved_score_dtype(self, model: Model) -> str:
        """The dtype the forward-pass measures run in on ``model``: ``score_dtype`` as given, or for ``"auto"``
        the model's own dtype when it is bfloat16 already, else :func:`steerlab.load.fast_dtype` of its device."""
        if self.score_dtype != "auto":
            return self.score_dtype
        chosen = torch.bfloat16 if model.dtype == torch.bfloat16 else fast_dtype(model.device)
        return next(name for name, d in DTYPES.items() if d == chosen)

    @property
    def generation_coefficients(self) -> list[float]:
        return sorted(float(c) for c in self.coefficients if c > 0)

    def resolved_layers(self, model: Model) -> list[int]:
        """The swept layers on ``model``: ``layers`` as given, else ``round(depth * n_layers)``."""
        if self.layers is not None:
            layers = [int(la) for la in self.layers]
        else:
            layers = sorted({layer_at(model.n_layers, d) for d in self.depths})
        bad = [la for la in layers if not 0 <= la < model.n_layers]
        if bad:
            raise ValueError(f"layers {bad} are not block inputs of {model.name} (0..{model.n_layers - 1})")
        return layers

    @classmethod
    def from_preset(cls, preset: str = "default", **overrides: Any) -> Self:
        """A preset of :data:`PRESETS` with ``overrides`` over it; an override of ``None`` keeps the preset's
        value (so a notebook parameter left at ``None`` means "the preset's").

        Raises:
            ParameterError: an unknown preset or field name (the message lists the known ones), or a bad value.

        Example:
            >>> CompareConfig.from_preset("quick", layers=[12]).layers
            [12]
        """
        if preset not in PRESETS:
            raise ParameterError(f"unknown preset {preset!r}; expected one of {', '.join(PRESETS)}")
        renamed = {("constructions" if k == "methods" else k): v for k, v in overrides.items()}
        known = cls.names()
        unknown = [k for k in renamed if k not in known]
        if unknown:
            raise ParameterError(f"unknown CompareConfig fields {unknown}; fields: {', '.join(known)}")
        return cls(**{**PRESETS[preset], **{k: v for k, v in renamed.items() if v is not None}})


# Measured times on 2 CPU cores are in docs/FINDINGS.md and bench/.
PRESETS: dict[str, dict[str, Any]] = {
    "quick": {"targets": ["fantasy"], "depths": [0.5], "coefficients": [-0.25, 0.0, 0.25], "positions": ["all"],
              "n_prompts": 4, "max_new_tokens": 8, "n_steer": 2, "n_general": 2, "sample_size": 4,
              "max_length": 32, "eval_length": 24, "damage_grid": [0.125, 0.25, 0.5, 1.0, 2.0]},
    "default": {"targets": ["fantasy", "science_fiction", "shakespeare"], "depths": [0.5],
                "coefficients": [-0.25, 0.0, 0.125, 0.25, 0.5], "positions": ["all", "all_prompt"], "n_prompts": 12,
                "max_new_tokens": 48, "n_steer": 13, "n_general": 6, "sample_size": 32, "max_length": 128,
                "eval_length": 48},
    "full": {"targets": list(TARGETS), "depths": [0.35, 0.5, 0.65],
             "coefficients": [-0.25, -0.125, 0.0, 0.0625, 0.125, 0.25, 0.5],
             "positions": ["all", "all_prompt"], "n_prompts": 24, "max_new_tokens": 48,
             "n_steer": 13, "n_general": 6, "sample_size": 32, "max_length": 128, "eval_length": 48},
}
"""``quick`` (the notebook test), ``default`` (``make run``: 3 targets, 12 prompts, every held-out story pair)
and ``full`` (every target, 3 depths, 2 positions, 24 prompts). Every preset generates at the matched-damage
coefficients (``generate_at="matched"``), so every prompt is a report prompt."""

