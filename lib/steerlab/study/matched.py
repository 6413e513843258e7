"""Matched damage: how far each construction steers at the coefficient where it does a fixed damage.

"Which construction steers best for the least damage" compares effects at *equal damage*,
not at equal coefficients (a vector that breaks text at 0.25 x the unit and one that is
harmless there are not at the same point). From forward passes only:

1. **damage curve**: the perplexity ratio of held-out general text under the vector at a
   grid of coefficients (:data:`DAMAGE_GRID`, steps of sqrt(2) from 1/16 to 2 x the unit),
   with coefficient 0 at ratio 1;
2. **matched coefficient**: where the curve first reaches the damage ``level``
   (:func:`matched_coefficient`: linear in log ratio between the two grid points around
   the crossing). A vector that stays below the level on the whole grid is ``"not
   reached"`` and is measured at the grid's largest coefficient (its effect there is a
   lower bound on what it would do at the level);
3. **propensity shift at that coefficient**, per held-out story pair: the change, from
   unsteered to steered, of log p(target continuation) - log p(other continuation), both
   openings (the steerability's propensity, :func:`steerlab.metrics.steerability_each`).
   These per-story shifts are the ``matched`` measure of the pre-registered contrasts.

Generation and the judge then run at the chosen coefficients as the check that the ranking
shows in text (notebook 04).
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..data import load_dataset
from ..intervention import Intervention
from ..logprobs import TextScores
from ..metrics import bootstrap_mean_ci, completion_perplexity, propensities, split_story, story_pairs
from ..models import Model
from ..repetition import LOOP_DISTINCT, repetition
from ..sets import unit_norm
from ..steer import rows

__all__ = ["BROKEN_RATIO", "DAMAGE_GRID", "DAMAGE_LENGTH", "DAMAGE_TEXTS", "MATCHED_LEVEL", "Curve", "DamageRange",
           "damage_curves", "damage_range", "fluent_perplexity", "general_texts", "matched_coefficient",
           "matched_conditions", "matched_damage", "matched_rows", "text_warnings"]

DAMAGE_GRID: tuple[float, ...] = tuple(round(2 ** (k / 2) / 16, 4) for k in range(11))
"""Coefficients (x the unit) of the damage curve: 0.0625, 0.0884, 0.125, ... 1.4142, 2.0."""

MATCHED_LEVEL = 1.25
"""The damage every construction is matched at: perplexity ratio 1.25 on held-out general text."""

DAMAGE_TEXTS = 4
DAMAGE_LENGTH = 32
"""The widget's useful range reads :data:`DAMAGE_TEXTS` general texts of :data:`DAMAGE_LENGTH` tokens (a few
seconds on 2 cores); notebook 04 reads ``n_general`` texts of ``eval_length`` tokens (its presets: 6 x 48)."""


def matched_coefficient(grid: Sequence[float], ratios: Sequence[float], level: float) -> tuple[float, str]:
    """The coefficient where the damage curve first reaches ``level``, and how it was found.

    ``grid`` holds positive increasing coefficients, ``ratios`` the perplexity ratio at each;
    the curve starts at (0, 1). Returns ``(c, "interpolated")`` (linear in log ratio between
    the grid points around the first crossing) or ``(grid[-1], "not reached")``. The one rule for
    a ratio that is not a number: it counts as damage past any level (text broken beyond what a
    ratio can say), so the crossing is at the grid point before it.

    Raises:
        ValueError: grids and ratios of different lengths, a grid that is not positive and
            increasing, or ``level <= 1``.

    Example:
        >>> matched_coefficient([0.125, 0.25, 0.5], [1.05, 1.21, 1.9], 1.25)
        (0.268..., 'interpolated')
    """
    cs, rs = [float(c) for c in grid], [float(r) for r in ratios]
    if len(cs) != len(rs) or not cs:
        raise ValueError(f"{len(cs)} coefficients but {len(rs)} ratios")
    if cs[0] <= 0 or any(b <= a for a, b in itertools.pairwise(cs)):
        raise ValueError(f"grid {cs} must be positive and increasing")
    if not (math.isfinite(level) and level > 1):
        raise ValueError(f"damage level {level!r} must be a perplexity ratio > 1")
    prev_c, prev_r = 0.0, 1.0
    for c, r in zip(cs, rs):
        if math.isnan(r):
            r = math.inf  # the one NaN rule (docstring)
        if r >= level:
            lo, hi = math.log(max(prev_r, 1e-12)), math.log(r)
            t = 1.0 if hi <= lo else (math.log(level) - lo) / (hi - lo)
            return prev_c + min(1.0, max(0.0, t)) * (c - prev_c), "interpolated"
        prev_c, prev_r = c, r
    return cs[-1], "not reached"


@dataclass(frozen=True)
class Curve:
    """One vector's damage on general text at the grid's first ``len(ratios)`` coefficients: the perplexity
    ratio and the next-token KL (nats) at each."""

    ratios: list[float]
    kls: list[float]

    def at(self, grid: Sequence[float], coefficient: float) -> tuple[float, float]:
        """The ratio and KL at ``coefficient``: interpolated between the grid points around it (the ratio
        linear in its log, as :func:`matched_coefficient` places the level; 1 and 0 at coefficient 0); past
        the last measured point, that point's values."""
        cs = [0.0, *[float(g) for g in grid[:len(self.ratios)]]]
        rs, ks = [1.0, *self.ratios], [0.0, *self.kls]
        c = min(max(float(coefficient), 0.0), cs[-1])
        for i in range(1, len(cs)):
            if c <= cs[i]:
                t = 0.0 if cs[i] == cs[i - 1] else (c - cs[i - 1]) / (cs[i] - cs[i - 1])
                lo, hi = math.log(max(rs[i - 1], 1e-12)), math.log(max(rs[i], 1e-12)) if math.isfinite(rs[i]) else math.inf
                ratio = math.exp(lo + t * (hi - lo)) if math.isfinite(hi) else (rs[i - 1] if t == 0 else math.inf)
                return ratio, ks[i - 1] + t * (ks[i] - ks[i - 1])
        return rs[-1], ks[-1]


def damage_curves(scorer: Model, vectors: Mapping[str, torch.Tensor], *, layer: int, position: str,
                  general: Sequence[str], unit: float, grid: Sequence[float] = DAMAGE_GRID,
                  max_length: int = 48, stop_at: float | None = None, step: int = 2) -> dict[str, Curve]:
    """The damage of ``general`` under each vector along ``grid`` (x ``unit``), from one plain pass.

    With ``stop_at`` (a damage level), a vector's curve ends at the first grid point whose ratio reaches it
    (the grid is walked upward ``step`` points at a time): :func:`matched_coefficient` needs nothing past
    the first crossing, so the matched coefficient is the one the whole grid gives, for fewer passes.
    """
    names = list(vectors)
    scores = TextScores(scorer, general, layer=layer, position=position, max_length=max_length)
    curves = {n: Curve([], []) for n in names}
    open_ = list(names)
    start = 0
    while open_ and start < len(grid):
        points = list(grid[start:len(grid) if stop_at is None else start + step])
        got = scores(Intervention.concat([rows(scorer, vectors[n], points, layer=layer, scale=unit,
                                               position=position) for n in open_]))
        for i, n in enumerate(open_):
            for s in got[i * len(points):(i + 1) * len(points)]:
                curves[n].ratios.append(float(s["perplexity_ratio"]))
                curves[n].kls.append(float(s["kl"]))
                if stop_at is not None and not curves[n].ratios[-1] < stop_at:  # reached (or not a number)
                    break
        if stop_at is not None:
            open_ = [n for n in open_ if curves[n].ratios[-1] < stop_at]
        start += len(points)
    return curves


@dataclass(frozen=True)
class DamageRange:
    """Where steering with one vector at one layer and position stays under the damage level, each sign.

    Attributes:
        low, high: the range's ends (x the unit): where the perplexity ratio of general text first
            reaches ``level`` on each side of 0 (:func:`matched_coefficient`, so the widget's range and
            notebook 04's matched coefficient are the same number for the same vector).
        reached_low, reached_high: whether the level was reached within the grid (else the end is
            the grid's largest coefficient: the range may go further).
        level: the damage level (:data:`MATCHED_LEVEL`).
        coefficients, ratios: what was measured (ascending coefficients, both signs).
    """

    low: float
    high: float
    reached_low: bool
    reached_high: bool
    level: float
    coefficients: tuple[float, ...]
    ratios: tuple[float, ...]

    def contains(self, coefficient: float) -> bool:
        """Whether ``coefficient`` lies inside the range (ends included)."""
        return self.low <= coefficient <= self.high

    def ratio_at(self, coefficient: float) -> float:
        """The measured damage at ``coefficient``, linear in log ratio between grid points (1 at 0); past
        the grid's ends, the end's ratio (a lower bound)."""
        cs = [0.0, *self.coefficients]
        rs = [1.0, *self.ratios]
        order = sorted(range(len(cs)), key=lambda i: cs[i])
        cs, rs = [cs[i] for i in order], [rs[i] for i in order]
        c = min(max(float(coefficient), cs[0]), cs[-1])
        for (c0, r0), (c1, r1) in itertools.pairwise(zip(cs, rs)):
            if c0 <= c <= c1:
                if not (math.isfinite(r0) and math.isfinite(r1)) or c1 == c0:
                    return r1 if c > c0 else r0
                t = (c - c0) / (c1 - c0)
                return math.exp((1 - t) * math.log(max(r0, 1e-12)) + t * math.log(max(r1, 1e-12)))
        return rs[-1]


_RANGES: dict[tuple[Any, ...], DamageRange] = {}


def _digest(t: torch.Tensor) -> str:
    return hashlib.blake2b(t.detach().float().cpu().contiguous().numpy().tobytes(), digest_size=8).hexdigest()


def damage_range(model: Model, vector: torch.Tensor, layer: int, *, position: str = "all",
                 unit: float | None = None, level: float = MATCHED_LEVEL, grid: Sequence[float] = DAMAGE_GRID,
                 texts: Sequence[str] | None = None, max_length: int = DAMAGE_LENGTH) -> DamageRange:
    """The useful range of ``vector`` at ``layer`` and ``position``: the coefficients of each sign whose
    damage on general text stays under ``level`` (one grid, one level, one NaN rule: notebook 04's).

    Each coefficient of ``grid`` and its negative is applied as steering applies it
    (:func:`steerlab.steer.rows`, x ``unit``, default the layer's centred norm) and the
    perplexity ratio of ``texts`` (default :func:`general_texts`) is measured from forward passes
    (:func:`steerlab.logprobs.steered_text_scores`). Results are kept per model fingerprint,
    vector, layer, position, unit, level, grid and texts: asking again costs nothing, and a
    changed model never reads another's range.

    Example:
        >>> r = damage_range(model, sl.build("mean_centred", model, [15], target="fantasy").at(15), 15)
        >>> r.low < 0 < r.high
        True
    """
    magnitudes = sorted(float(c) for c in grid)
    if len(magnitudes) < 2 or magnitudes[0] <= 0:
        raise ValueError(f"grid must hold at least two positive coefficients, got {list(grid)!r}")
    if not (math.isfinite(level) and level > 1):
        raise ValueError(f"damage level {level!r} must be a perplexity ratio > 1")
    size = unit_norm(model, layer) if unit is None else float(unit)
    chosen = list(texts) if texts is not None else general_texts()
    key = (model.fingerprint, _digest(vector), layer, position, size, level, tuple(magnitudes), tuple(chosen),
           max_length)
    if key not in _RANGES:
        curves = damage_curves(model, {"+": vector, "-": -vector}, layer=layer, position=position, general=chosen,
                               unit=size, grid=magnitudes, max_length=max_length, stop_at=level)
        up, down = curves["+"].ratios, curves["-"].ratios
        high, high_status = matched_coefficient(magnitudes[:len(up)], up, level)
        low, low_status = matched_coefficient(magnitudes[:len(down)], down, level)
        _RANGES[key] = DamageRange(-low, high, low_status == "interpolated", high_status == "interpolated", level,
                                   tuple([-c for c in reversed(magnitudes[:len(down)])] + magnitudes[:len(up)]),
                                   tuple(list(reversed(down)) + up))
    return _RANGES[key]


BROKEN_RATIO = 8.0
"""A steered completion is called damaged when its perplexity under the unsteered model passes this multiple of
fluent text's. Seen on SmolLM2 (30 sampled tokens, top-p 0.3): fluent steered text had 0.7-7x the unsteered
completion's perplexity, broken text 12-650x."""

_FLUENT: dict[tuple[Any, ...], float] = {}


def fluent_perplexity(model: Model, *, n: int = DAMAGE_TEXTS) -> float:
    """The perplexity of fluent text as a completion: general held-out texts cut in half by words, each second
    half read after its first under the unsteered model (mean over ``n`` texts; kept per model).

    The reference a completion's damage is judged against beside the unsteered completion, so a degenerate
    unsteered baseline (a timestamp, a list of digits: very predictable, so a tiny perplexity) does not make
    fluent steered text look damaged.

    Example:
        >>> 5 < fluent_perplexity(model) < 200
        True
    """
    key = (model.fingerprint, n)
    if key not in _FLUENT:
        halves = [split_story(t, 0.5, 60) for t in general_texts(n)]
        tok = model.tokenizer
        ids = [tok(c, add_special_tokens=False)["input_ids"] for _, c in halves]
        values = [v for v in completion_perplexity(model, [o for o, _ in halves], ids) if math.isfinite(v)]
        _FLUENT[key] = float(np.mean(values)) if values else float("nan")
    return _FLUENT[key]


def text_warnings(unsteered_perplexity: Sequence[float], steered_perplexity: Sequence[float],
                  steered_ids: Sequence[Sequence[int]], *, fluent: float | None = None,
                  ratio: float = BROKEN_RATIO) -> list[str]:
    """Warnings about steered completions from the text itself: damage and repetition, worst sample first.

    - damage: a steered completion's perplexity under the unsteered model is more than ``ratio`` times
      the larger of the unsteered completions' mean and ``fluent`` (:func:`fluent_perplexity`): never
      judged against a degenerate unsteered baseline alone;
    - repetition: a steered completion is a loop (:func:`steerlab.repetition.repetition`), which a
      perplexity misses (a loop is very predictable).

    Example:
        >>> text_warnings([4.0], [3.0], [[5] * 20])
        ['repetition: distinct-2 of the steered text is 0.05 (under 0.4): it repeats itself']
    """
    out: list[str] = []
    base = [p for p in unsteered_perplexity if math.isfinite(p)]
    candidates = ([float(np.mean(base))] if base else []) + (
        [float(fluent)] if fluent is not None and math.isfinite(fluent) else [])
    reference = max(candidates) if candidates else math.nan
    ratios = [p / reference for p in steered_perplexity if math.isfinite(p)] if reference > 0 else []
    if ratios and max(ratios) > ratio:
        what = "fluent text's" if fluent is not None and reference == fluent else "the unsteered text's"
        out.append(f"damage: the steered text's perplexity under the unsteered model is {max(ratios):.1f} × "
                   f"{what} (over {ratio:g} ×)")
    loops = [v for v in (repetition(list(ids)) for ids in steered_ids) if v is not None]
    if loops:
        out.append(f"repetition: distinct-2 of the steered text is {min(loops):.2f} (under {LOOP_DISTINCT:g}): "
                   "it repeats itself")
    return out


def general_texts(n: int = DAMAGE_TEXTS) -> list[str]:
    """The general texts a useful range is measured on: ``n`` of the ``general`` set's held-out
    split (seed 0), the first of those notebook 04 measures damage on.

    Example:
        >>> len(general_texts(2))
        2
    """
    return load_dataset("general", "heldout").sample(n, seed=0).texts


def matched_conditions(scorer: Model, vectors: Mapping[str, torch.Tensor], chosen: Mapping[str, tuple[float, str]], *,
                       layer: int, position: str, unit: float) -> Intervention:
    """One steering row per vector, at its matched coefficient (``chosen[name][0]``, x ``unit``)."""
    return Intervention.concat([rows(scorer, vectors[n], [chosen[n][0]], layer=layer, scale=unit, position=position)
                                for n in vectors])


def matched_rows(curves: Mapping[str, Curve], chosen: Mapping[str, tuple[float, str]], shifts: np.ndarray, *,
                 grid: Sequence[float], level: float, seed: int = 0) -> list[dict[str, Any]]:
    """The rows :func:`matched_damage` returns, from the curves, the chosen coefficients and the shifts
    (``[vectors, samples]``, in the order of ``curves``); ``damage`` and ``damage_kl`` hold the curve up to
    its first crossing (the grid's first ``len(damage)`` points)."""
    out = []
    for n, values in zip(curves, shifts):
        values = np.asarray(values, dtype=float)
        c, status = chosen[n]
        out.append({"condition": n, "level": float(level), "coefficient": float(c), "status": status,
                    "grid": [float(g) for g in grid], "damage": curves[n].ratios, "damage_kl": curves[n].kls,
                    "shifts": [float(x) for x in values],
                    "mean": float(values.mean()), "ci": [float(x) for x in bootstrap_mean_ci(values, seed=seed)]})
    return out


def matched_damage(scorer: Model, vectors: Mapping[str, torch.Tensor], *, layer: int, position: str,
                   general: Sequence[str], target_texts: Sequence[str], other_texts: Sequence[str], unit: float,
                   level: float = MATCHED_LEVEL, grid: Sequence[float] = DAMAGE_GRID,
                   max_length: int = 48, seed: int = 0) -> list[dict[str, Any]]:
    """One row per vector: its damage curve, matched coefficient and per-story propensity shifts there.

    ``vectors`` maps names to ``[d_model]`` directions at ``layer``; ``unit`` is the coefficient
    unit (the layer's centred norm, :func:`steerlab.sets.unit_norm`). Each row: ``method``, ``level``, ``coefficient``,
    ``status``, ``grid``, ``damage`` (the curve), ``shifts`` (one per story pair: the propensity at the
    matched coefficient less the unsteered one, :func:`steerlab.metrics.propensities`), ``mean``,
    ``ci`` (bootstrap 95%). Notebook 04 reads the same pieces (:func:`damage_curves`,
    :func:`matched_conditions`, :func:`matched_rows`) with its steerability grid in one pass.

    Example:
        >>> rows = matched_damage(model, {"mean_centred": v.at(15)}, layer=15, position="all",
        ...                       general=texts, target_texts=fantasy, other_texts=others, unit=156.5)
        >>> rows[0]["coefficient"], rows[0]["mean"]
    """
    if not vectors:
        raise ValueError("no vectors given")
    curves = damage_curves(scorer, vectors, layer=layer, position=position, general=general, unit=unit,
                           grid=grid, max_length=max_length, stop_at=level)
    chosen = {n: matched_coefficient(grid[:len(curves[n].ratios)], curves[n].ratios, level) for n in vectors}
    edit = Intervention.concat([Intervention.plain(1, layer, position),
                                matched_conditions(scorer, vectors, chosen, layer=layer, position=position, unit=unit)])
    propensity = propensities(scorer, story_pairs(scorer, target_texts, other_texts), edit)
    return matched_rows(curves, chosen, propensity[1:] - propensity[0], grid=grid, level=level, seed=seed)
