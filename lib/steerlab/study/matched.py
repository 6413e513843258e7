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

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..logprobs import steered_text_scores
from ..metrics import bootstrap_mean_ci, steerability_each
from ..models import Model
from ..steer import added_vector

__all__ = ["DAMAGE_GRID", "MATCHED_LEVEL", "damage_curves", "matched_coefficient", "matched_damage"]

DAMAGE_GRID: tuple[float, ...] = tuple(round(2 ** (k / 2) / 16, 4) for k in range(11))
"""Coefficients (x the unit) of the damage curve: 0.0625, 0.0884, 0.125, ... 1.4142, 2.0."""

MATCHED_LEVEL = 1.25
"""The damage every construction is matched at: perplexity ratio 1.25 on held-out general text."""


def matched_coefficient(grid: Sequence[float], ratios: Sequence[float], level: float) -> tuple[float, str]:
    """The coefficient where the damage curve first reaches ``level``, and how it was found.

    ``grid`` holds positive increasing coefficients, ``ratios`` the perplexity ratio at each;
    the curve starts at (0, 1). Returns ``(c, "interpolated")`` (linear in log ratio between
    the grid points around the first crossing) or ``(grid[-1], "not reached")``.

    Raises:
        ValueError: grids and ratios of different lengths, a grid that is not positive and
            increasing, a non-finite ratio before the crossing, or ``level <= 1``.

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
            raise ValueError(f"damage ratio at coefficient {c} is nan")
        if r >= level:
            lo, hi = math.log(max(prev_r, 1e-12)), math.log(r)
            t = 1.0 if hi <= lo else (math.log(level) - lo) / (hi - lo)
            return prev_c + min(1.0, max(0.0, t)) * (c - prev_c), "interpolated"
        prev_c, prev_r = c, r
    return cs[-1], "not reached"


def damage_curves(scorer: Model, vectors: Mapping[str, torch.Tensor], *, layer: int, position: str,
                  general: Sequence[str], unit: float, grid: Sequence[float] = DAMAGE_GRID,
                  max_length: int = 48) -> dict[str, list[float]]:
    """Perplexity ratio of ``general`` under each vector at every grid coefficient (one batched call)."""
    names = list(vectors)
    additions = [added_vector(vectors[n], c, unit) for n in names for c in grid]
    scores = steered_text_scores(scorer, general, additions, layer=layer, position=position, max_length=max_length)
    k = len(grid)
    return {n: [float(s["perplexity_ratio"]) for s in scores[i * k:(i + 1) * k]] for i, n in enumerate(names)}


def matched_damage(scorer: Model, vectors: Mapping[str, torch.Tensor], *, layer: int, position: str,
                   general: Sequence[str], target_texts: Sequence[str], other_texts: Sequence[str], unit: float,
                   level: float = MATCHED_LEVEL, grid: Sequence[float] = DAMAGE_GRID,
                   max_length: int = 48, seed: int = 0) -> list[dict[str, Any]]:
    """One row per vector: its damage curve, matched coefficient and per-story propensity shifts there.

    ``vectors`` maps names to ``[d_model]`` directions at ``layer``; ``unit`` is the coefficient
    unit (the layer's centred norm, :func:`steerlab.sets.unit_norm`). Each row: ``method``, ``level``, ``coefficient``,
    ``status``, ``grid``, ``damage`` (the curve), ``shifts`` (one per story pair), ``mean``,
    ``ci`` (bootstrap 95%).

    Example:
        >>> rows = matched_damage(model, {"mean_centred": v.at(15)}, layer=15, position="all",
        ...                       general=texts, target_texts=fantasy, other_texts=others, unit=156.5)
        >>> rows[0]["coefficient"], rows[0]["mean"]
    """
    if not vectors:
        raise ValueError("no vectors given")
    curves = damage_curves(scorer, vectors, layer=layer, position=position, general=general, unit=unit,
                           grid=grid, max_length=max_length)
    names = list(vectors)
    chosen = {n: matched_coefficient(grid, curves[n], level) for n in names}
    # Each vector already scaled to its matched coefficient; the raw grid [-1, 0, 1] then reads the
    # shift at +1 (the -1 point is the steerability's symmetric check, not used here).
    scaled = [added_vector(vectors[n], chosen[n][0], unit) for n in names]
    each = steerability_each(scorer, [s for s in scaled if s is not None], layer=layer, target_texts=target_texts,
                             other_texts=other_texts, coefficients=[-1.0, 0.0, 1.0], position=position,
                             unit=None, seed=seed)
    rows = []
    for n, res in zip(names, each):
        at = res.coefficients.index(1.0), res.coefficients.index(0.0)
        shifts = np.asarray(res.propensity[:, at[0]] - res.propensity[:, at[1]], dtype=float)
        c, status = chosen[n]
        rows.append({"method": n, "level": float(level), "coefficient": float(c), "status": status,
                     "grid": [float(g) for g in grid], "damage": curves[n], "shifts": [float(x) for x in shifts],
                     "mean": float(shifts.mean()), "ci": [float(x) for x in bootstrap_mean_ci(shifts, seed=seed)]})
    return rows
