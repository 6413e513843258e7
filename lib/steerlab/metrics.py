"""How much a steered model moved towards a target, and how much it was damaged.

- steerability (Tan et al. 2024): the per-sample slope of a target-vs-other propensity
  against the coefficient, from forward passes only (:func:`steerability`; the propensities
  of any conditions on the same story pairs: :func:`propensities`);
- damage: perplexity ratio and next-token KL divergence on general text with
  the vector applied, against the unsteered model;
- fluency: perplexity of completions under the unsteered model, and repetition
  (:func:`steerlab.repetition.distinct_n`, re-exported here);
- relevance: how much the steered model still expects the unsteered completion of a
  prompt (:func:`relevance`).

Judge-free stand-ins for AxBench's three LLM ratings (concept, instruction relevance,
fluency; Wu et al. 2025). The concept rating lives in :mod:`steerlab.study.judge`.

- **fluency**: perplexity of a completion under the unsteered model says whether the text
  is language the model finds ordinary; it is blind to loops (a repeated phrase becomes
  very predictable), which :func:`distinct_n` catches: the share of distinct n-grams drops
  towards ``1/k`` for a phrase repeated ``k`` times. Both are needed; neither alone is
  the judge's "is it fluent".
- **relevance**: the judge asks whether the response still addresses the instruction.
  The unsteered completion is the model's own answer to the prompt; its mean log-prob
  per token under the *steered* model measures how much of that prompt-following the
  steered model keeps. It is 0 change at coefficient 0 by construction, falls as steering
  pulls the model off the prompt, and needs no text to be generated per condition. Its
  limit: it also falls for the intended change of topic, so it is read against the
  unsteered value and beside the concept score, as AxBench's harmonic mean does.

Positions in the forward-pass metrics (:func:`continuation_logprobs`, :func:`relevance`,
:func:`steerability`) mean what they mean in steered generation, with the opening (the
prompt) followed by the continuation (the tokens the model would generate): ``all`` steers
every token, ``all_prompt`` every opening token, ``last_prompt`` the opening's last,
``first`` / ``after_bos`` its first (after an added BOS); continuation tokens are
steered only under ``all``. So a forward-pass score and a generation at one position
measure the same intervention.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .intervention import Intervention
from .logprobs import completion_perplexity, continuation_logprobs, steered_text_scores
from .models import Model
from .repetition import LOOP_DISTINCT, distinct_n, repetition
from .steer import rows
from .tokens import STEER_POSITIONS, check_position, encode

__all__ = [
    "GRID_RULE",
    "LOOP_DISTINCT",
    "SteerabilityResult",
    "StoryPairs",
    "bootstrap_mean_ci",
    "check_steerability_grid",
    "completion_perplexity",
    "continuation_logprobs",
    "distinct_n",
    "grid_conditions",
    "propensities",
    "relevance",
    "repetition",
    "slopes_from",
    "split_story",
    "steerability",
    "steerability_each",
    "steered_text_scores",
    "story_pairs",
]


def bootstrap_mean_ci(values: Sequence[float] | np.ndarray, *, n_boot: int = 2000, seed: int = 0,
                      level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean of ``values``.

    Non-finite values are an error (drop them knowingly first); one value gives ``(v, v)``.

    Example:
        >>> bootstrap_mean_ci([0.1, 0.2, 0.3, 0.4])
        (0.15, 0.35000000000000003)
    """
    vals = np.asarray(values, dtype=float).ravel()
    if vals.size == 0:
        raise ValueError("no values to bootstrap")
    if not np.isfinite(vals).all():
        raise ValueError(f"values contain NaN or inf at indices {np.flatnonzero(~np.isfinite(vals)).tolist()}")
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 1:
        raise ValueError(f"n_boot must be an integer >= 1, got {n_boot!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    rng = np.random.default_rng(seed)
    means = vals[rng.integers(0, vals.size, size=(n_boot, vals.size))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def relevance(
    model: Model,
    prompts: Sequence[str],
    unsteered_completions: Sequence[Sequence[int]],
    conditions: Intervention | Sequence[torch.Tensor | None],
    *,
    layer: int | None = None,
    position: str | None = None,
    batch_size: int = 8,
) -> list[list[float]]:
    """For each condition (a row of ``conditions``, :func:`steerlab.steer.rows`; or an already scaled
    addition with ``layer=``/``position=``, default ``all``), the mean log-prob per token of each
    prompt's unsteered completion under the steered model: how much the steered model still
    expects the ordinary answer.

    ``unsteered_completions[i]`` are the token ids :func:`steerlab.steer.steered_generate`
    gave for ``prompts[i]`` with no addition; prompts are encoded as it encodes them. A
    ``None`` addition gives the unsteered log-prob; compare a condition with it (the
    difference is a per-token log probability ratio). ``position`` follows generation
    (module docstring). Empty completions give ``nan``.

    Returns:
        ``[conditions][len(prompts)]`` floats (nats per token, <= 0).

    Example:
        >>> plain = steered_generate(model, prompts, None, do_sample=False)
        >>> unsteered, steered = relevance(model, prompts, plain, sl.rows(model, v, [0, 0.5]))
    """
    if len(prompts) != len(unsteered_completions):
        raise ValueError(f"{len(prompts)} prompts but {len(unsteered_completions)} completions")
    batch = encode(model.tokenizer, prompts)
    openings = [batch.input_ids[i, :int(n)].tolist() for i, n in enumerate(batch.lengths)]
    scores = continuation_logprobs(model, openings, unsteered_completions, conditions, layer=layer,
                                   position=position, bos=batch.bos.tolist(), batch_size=batch_size)
    return [[float(x) for x in row] for row in scores]


def split_story(text: str, split_fraction: float = 0.5, max_words: int | None = 60) -> tuple[str, str]:
    """A text cut into an opening and a continuation, by words.

    The text's first ``max_words`` words (all with ``None``) are cut after
    ``round(split_fraction * n)`` words (at least one on each side); the continuation
    keeps its leading space, so tokenizing it alone gives the tokens it has in the text.

    Example:
        >>> split_story("one two three four", 0.5)
        ('one two', ' three four')
    """
    if not 0 < split_fraction < 1:
        raise ValueError(f"split_fraction must be in (0, 1), got {split_fraction!r}")
    if max_words is not None and (isinstance(max_words, bool) or not isinstance(max_words, int) or max_words < 2):
        raise ValueError(f"max_words must be an integer >= 2 or None, got {max_words!r}")
    words = text.split()[:max_words]
    if len(words) < 2:
        raise ValueError(f"text {text[:40]!r} has {len(words)} word(s); an opening and a continuation need 2")
    cut = min(max(round(split_fraction * len(words)), 1), len(words) - 1)
    return " ".join(words[:cut]), " " + " ".join(words[cut:])


@dataclass
class SteerabilityResult:
    """Per-sample propensities and slopes of one vector at one layer and position.

    Attributes:
        coefficients: the grid, in the order of ``propensity``'s columns.
        propensity: ``[n_samples, n_coefficients]`` target-minus-other log-prob per token.
        slopes: ``[n_samples]`` least-squares slope of each row against the coefficients.
        mean: mean slope (nats per token per unit coefficient); ``ci`` its bootstrap interval.
        anti_steerable_fraction: share of samples with a negative slope.
        other_index: the other text each sample is paired with (index into ``other_texts``).
    """

    coefficients: list[float]
    propensity: np.ndarray
    slopes: np.ndarray
    mean: float
    ci: tuple[float, float]
    anti_steerable_fraction: float
    other_index: list[int] = field(default_factory=list)

    @property
    def n_samples(self) -> int:
        return int(self.slopes.shape[0])

    def summary(self) -> dict[str, Any]:
        """Plain numbers for a results row: ``steerability``, its CI, the anti-steerable share,
        the mean propensity at each coefficient."""
        return {"steerability": self.mean, "steerability_ci": list(self.ci),
                "anti_steerable_fraction": self.anti_steerable_fraction, "n_samples": self.n_samples,
                "propensity_by_coefficient": dict(zip(self.coefficients, self.propensity.mean(0).tolist()))}


GRID_RULE = "finite, distinct, and including 0, a negative and a positive value (a slope through the unsteered point, both ways)"
"""What a steerability grid must be, in words (:func:`check_steerability_grid`)."""


def check_steerability_grid(coefficients: Sequence[float]) -> list[float]:
    """The grid of a steerability slope as floats, checked: the one rule for every caller (the metric,
    notebook 03's and 04's parameters, the comparison's configuration).

    Raises:
        ValueError: a grid that is not :data:`GRID_RULE`.

    Example:
        >>> check_steerability_grid([-0.25, 0, 0.25])
        [-0.25, 0.0, 0.25]
    """
    try:
        coefs = [float(c) for c in coefficients]
    except (TypeError, ValueError):
        raise ValueError(f"coefficients {coefficients!r} must be numbers, {GRID_RULE}") from None
    if (not all(math.isfinite(c) for c in coefs) or len(set(coefs)) != len(coefs) or 0.0 not in coefs
            or min(coefs) >= 0 or max(coefs) <= 0):
        raise ValueError(f"coefficients {coefs} must be {GRID_RULE}")
    return coefs


def _least_squares_slopes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Slope of each row of ``y`` ``[n, k]`` against ``x`` ``[k]``."""
    xc = x - x.mean()
    return ((y - y.mean(axis=1, keepdims=True)) @ xc) / float(xc @ xc)


def steerability(
    model: Model,
    vector_direction: torch.Tensor,
    *,
    layer: int,
    target_texts: Sequence[str],
    other_texts: Sequence[str],
    coefficients: Sequence[float],
    position: str = "all_prompt",
    split_fraction: float = 0.5,
    unit: float | None = None,
    max_words: int | None = 60,
    batch_size: int = 8,
    n_boot: int = 2000,
    seed: int = 0,
) -> SteerabilityResult:
    """Forward-pass steerability (Tan et al. 2024): per-sample slope of propensity against coefficient.

    Each text is cut into an opening and a continuation (:func:`split_story`: by words,
    ``split_fraction`` of its first ``max_words``). Sample ``i`` pairs target text ``i`` with
    other text ``j(i)`` (spread evenly over ``other_texts``: ``j = i * n_other // n_target``,
    cycling when there are fewer others) and crosses them: both continuations are scored
    after both openings, so neither gains from following its own opening::

        propensity_i(c) = 1/2 [ (lp(T_cont | T_open) - lp(O_cont | T_open))
                              + (lp(T_cont | O_open) - lp(O_cont | O_open)) ]

    where ``lp`` is the mean log-prob per continuation token under the addition for
    coefficient ``c``: ``added_vector(vector_direction, c, unit)`` when
    ``unit`` is given (``c`` in units of the layer's centred norm, :func:`steerlab.sets.unit_norm`), else
    ``c * vector_direction``. The steerability of sample ``i`` is the least-squares slope of
    ``propensity_i`` against ``c``; the grid must hold 0, a negative and a positive value.
    ``position`` follows generation (module docstring): under the default ``all_prompt``
    the openings are steered and the continuations read them, as generated tokens read a
    steered prompt. All coefficients share the blocks below ``layer``.

    Example:
        >>> r = steerability(model, v, layer=15, target_texts=fantasy, other_texts=others,
        ...                  coefficients=[-0.5, -0.25, 0, 0.25, 0.5], unit=unit_norm(model, 15))
        >>> r.mean, r.ci, r.anti_steerable_fraction
    """
    return steerability_each(model, [vector_direction], layer=layer, target_texts=target_texts,
                             other_texts=other_texts, coefficients=coefficients, position=position,
                             split_fraction=split_fraction, unit=unit, max_words=max_words,
                             batch_size=batch_size, n_boot=n_boot, seed=seed)[0]


@dataclass(frozen=True)
class StoryPairs:
    """Held-out story pairs cut for the propensity (:func:`story_pairs`): four rows per sample, ``(T_open,
    T_cont)``, ``(T_open, O_cont)``, ``(O_open, T_cont)``, ``(O_open, O_cont)``, as token ids."""

    openings: list[list[int]]
    continuations: list[list[int]]
    bos: list[bool]
    other_index: list[int]

    @property
    def n_samples(self) -> int:
        return len(self.openings) // 4


def story_pairs(model: Model, target_texts: Sequence[str], other_texts: Sequence[str], *,
                split_fraction: float = 0.5, max_words: int | None = 60) -> StoryPairs:
    """Sample ``i`` pairs target text ``i`` with other text ``j(i)`` (spread evenly over ``other_texts``:
    ``j = i * n_other // n_target``, cycling when there are fewer others); each text is cut into an opening
    and a continuation (:func:`split_story`), and both continuations are read after both openings.

    Example:
        >>> story_pairs(model, fantasy, others).n_samples == len(fantasy)
        True
    """
    targets, others = list(target_texts), list(other_texts)
    if not targets or not others:
        raise ValueError(f"need target and other texts, got {len(targets)} and {len(others)}")
    tok = model.tokenizer
    n = len(targets)
    other_index = [i * len(others) // n if len(others) >= n else i % len(others) for i in range(n)]

    def pieces(texts: list[str]) -> tuple[list[list[int]], list[bool], list[list[int]]]:
        cuts = [split_story(t, split_fraction, max_words) for t in texts]
        enc = encode(tok, [o for o, _ in cuts])
        opens = [enc.input_ids[i, :int(k)].tolist() for i, k in enumerate(enc.lengths)]
        conts = [[int(x) for x in tok(c, add_special_tokens=False)["input_ids"]] for _, c in cuts]
        return opens, enc.bos.tolist(), conts

    t_open, t_bos, t_cont = pieces(targets)
    o_open, o_bos, o_cont = pieces([others[j] for j in other_index])
    return StoryPairs([o for i in range(n) for o in (t_open[i], t_open[i], o_open[i], o_open[i])],
                      [c for i in range(n) for c in (t_cont[i], o_cont[i], t_cont[i], o_cont[i])],
                      [b for i in range(n) for b in (t_bos[i], t_bos[i], o_bos[i], o_bos[i])], other_index)


def propensities(model: Model, pairs: StoryPairs, conditions: Intervention, *, batch_size: int = 8,
                 share_openings: bool = True) -> np.ndarray:
    """Each sample's propensity under each condition (a row of ``conditions``, :func:`steerlab.steer.rows`),
    ``[conditions, samples]``::

        propensity_i = 1/2 [ (lp(T_cont | T_open) - lp(O_cont | T_open))
                           + (lp(T_cont | O_open) - lp(O_cont | O_open)) ]

    ``lp`` is the mean log-prob per continuation token (:func:`continuation_logprobs`); every condition
    shares one pass of the blocks below the steered layer per chunk of rows, and an unsteered row is
    the plain pass. Measures that read the same story pairs under different conditions (the
    steerability grid, the shift at matched damage) pass all their conditions in one call.

    Example:
        >>> propensities(model, story_pairs(model, fantasy, others), sl.rows(model, v, [0, 0.25])).shape
        (2, 13)
    """
    lp = continuation_logprobs(model, pairs.openings, pairs.continuations, conditions, bos=pairs.bos,
                               batch_size=batch_size, share_openings=share_openings)  # [conditions, 4 n]
    lp = lp.reshape(lp.shape[0], pairs.n_samples, 4)
    return 0.5 * ((lp[..., 0] - lp[..., 1]) + (lp[..., 2] - lp[..., 3]))


def _check_directions(model: Model, directions: Sequence[torch.Tensor]) -> None:
    if not directions:
        raise ValueError("no vector directions given")
    for k, vector_direction in enumerate(directions):
        if not isinstance(vector_direction, torch.Tensor) or vector_direction.shape != (model.d_model,):
            raise ValueError(f"vector_direction must be a [{model.d_model}] tensor, got "
                             f"{getattr(vector_direction, 'shape', type(vector_direction).__name__)} (vector {k})")
        if not bool(torch.isfinite(vector_direction).all()) or float(vector_direction.norm()) == 0:
            raise ValueError(f"vector_direction must be finite and non-zero (vector {k})")


def grid_conditions(model: Model, directions: Sequence[torch.Tensor], coefficients: Sequence[float], *, layer: int,
                    position: str, unit: float | None) -> Intervention:
    """The steerability grid's conditions: the unsteered row first (one for every vector: it is the same
    pass), then each vector at each non-zero coefficient (x ``unit``, or raw with ``None``)."""
    steered = [c for c in coefficients if c != 0]
    return Intervention.concat([Intervention.plain(1, layer, position)] + [
        rows(model, d.detach().float().cpu(), steered, layer=layer, scale="raw" if unit is None else unit,
             position=position) for d in directions])


def slopes_from(propensity: np.ndarray, coefficients: Sequence[float], n_vectors: int, *, other_index: list[int],
                n_boot: int = 2000, seed: int = 0) -> list[SteerabilityResult]:
    """One :class:`SteerabilityResult` per vector from the propensities of :func:`grid_conditions`' rows."""
    coefs = list(coefficients)
    per = len(coefs) - 1
    results = []
    for k in range(n_vectors):
        each = iter(propensity[1 + k * per:1 + (k + 1) * per])
        table = np.stack([propensity[0] if c == 0 else next(each) for c in coefs]).T  # [sample, coef]
        slopes = _least_squares_slopes(np.array(coefs), table)
        results.append(SteerabilityResult(
            coefficients=coefs, propensity=table, slopes=slopes, mean=float(slopes.mean()),
            ci=bootstrap_mean_ci(slopes, n_boot=n_boot, seed=seed),
            anti_steerable_fraction=float(np.mean(slopes < 0)), other_index=other_index))
    return results


def steerability_each(
    model: Model,
    vector_directions: Sequence[torch.Tensor],
    *,
    layer: int,
    target_texts: Sequence[str],
    other_texts: Sequence[str],
    coefficients: Sequence[float],
    position: str = "all_prompt",
    split_fraction: float = 0.5,
    unit: float | None = None,
    max_words: int | None = 60,
    batch_size: int = 8,
    n_boot: int = 2000,
    seed: int = 0,
    share_openings: bool = True,
) -> list[SteerabilityResult]:
    """:func:`steerability` of several vectors on the same texts, layer and grid: one result each.

    Every vector's conditions share one plain pass (and the blocks below ``layer``) per chunk
    of rows, so ``n`` vectors cost less than ``n`` calls of :func:`steerability`. The two
    continuations of each opening are scored from one sequence (``share_openings``, see
    :func:`continuation_logprobs`; ``False`` scores every row alone, for comparison).

    Example:
        >>> [r.mean for r in steerability_each(model, [v, w], layer=15, target_texts=fantasy,
        ...                                    other_texts=others, coefficients=[-0.25, 0, 0.25])]
    """
    check_position(position, STEER_POSITIONS)
    directions = list(vector_directions)
    _check_directions(model, directions)
    coefs = check_steerability_grid(coefficients)
    if unit is not None and not (math.isfinite(unit) and unit > 0):
        raise ValueError(f"unit must be a positive number or None, got {unit!r}")
    pairs = story_pairs(model, target_texts, other_texts, split_fraction=split_fraction, max_words=max_words)
    edit = grid_conditions(model, directions, coefs, layer=layer, position=position, unit=unit)
    propensity = propensities(model, pairs, edit, batch_size=batch_size, share_openings=share_openings)
    return slopes_from(propensity, coefs, len(directions), other_index=pairs.other_index, n_boot=n_boot, seed=seed)
