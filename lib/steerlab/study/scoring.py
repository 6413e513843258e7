"""AxBench-style scoring of a steering sweep: one score per generation, a coefficient chosen on
half the prompts, the score reported on the other half, paired differences between methods.

AxBench (Wu et al. 2025) rates each steered generation for concept, instruction relevance
and fluency, scores it by the harmonic mean of the three (0 if any is 0), picks each
method's steering factor by the best mean score on half the prompts and reports the score
at that factor on the other half. Here the ratings come from judge-free stand-ins mapped to
[0, 1] (:func:`to_unit`):

- **concept**: the concept judge's P(target genre) (:mod:`steerlab.study.judge`), already in [0, 1];
- **fluency**: ``min(1, ppl_ref / ppl) * min(1, distinct / distinct_ref)``: the completion's
  perplexity under the unsteered model and its share of distinct bigrams
  (:func:`steerlab.metrics.distinct_n`), each against the unsteered completion of the same
  prompt. 1 means as fluent as the unsteered model; more predictable text gets no bonus,
  and a loop, which perplexity alone would reward, loses on repetition;
- **relevance**: ``min(1, exp(lp - lp_ref))``: the per-token probability ratio of the
  unsteered completion under the steered model against the unsteered model
  (:func:`steerlab.metrics.relevance`); 1 at coefficient 0.

An empty steered completion (no tokens: ``nan`` perplexity and distinct-n) scores fluency 0,
as a judge would rate an empty answer; a ``nan`` *reference* is an error (that prompt has no
unsteered baseline to compare with).

Rows are plain dicts or objects with the fields ``condition``, ``layer``, ``position``,
``coefficient``, ``prompt_id`` and a score (``score`` by default). A prompt with several rows
of one condition (several seeds) counts once, by its mean. Everything here is a pure
function of the rows: no model.
"""

from __future__ import annotations

import math
import random
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..metrics import bootstrap_mean_ci

__all__ = [
    "Condition",
    "HeldoutScore",
    "PairedDifference",
    "PromptSplit",
    "choose_coefficient",
    "chosen_rows",
    "concept_unit",
    "differences_against",
    "fluency_unit",
    "harmonic_score",
    "heldout_scores",
    "paired_difference",
    "per_prompt",
    "relevance_unit",
    "score_rows",
    "split_prompts",
    "to_unit",
]

# (condition, layer, position): the conditions a coefficient is chosen for.
Condition = tuple[str, int, str]


def _get(row: Any, name: str) -> Any:
    if isinstance(row, Mapping):
        if name not in row:
            raise KeyError(f"row has no field {name!r}; its fields: {', '.join(map(str, row))}")
        return row[name]
    if not hasattr(row, name):
        raise KeyError(f"row {type(row).__name__} has no field {name!r}")
    return getattr(row, name)


def _condition(row: Any) -> Condition:
    return (str(_get(row, "condition")), int(_get(row, "layer")), str(_get(row, "position")))


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ValueError(f"{what} is {value!r}; expected a number")  # noqa: TRY004 - a bad row value
    return float(value)


def _unit_interval(value: Any, what: str) -> float:
    v = _number(value, what)
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"{what} is {v}; expected a number in [0, 1]")
    return v


def concept_unit(probability: float) -> float:
    """The concept rating: the judge's P(target), checked to be in [0, 1].

    Example:
        >>> concept_unit(0.7)
        0.7
    """
    return _unit_interval(probability, "concept probability")


def _reference(value: Any, what: str) -> float:
    v = _number(value, what)
    if not math.isfinite(v):
        raise ValueError(f"{what} is {v}: the unsteered completion has no value to compare with")
    return v


def fluency_unit(perplexity: float, reference_perplexity: float, distinct: float | None = None,
                 reference_distinct: float | None = None) -> float:
    """``min(1, ppl_ref / ppl) * min(1, distinct / distinct_ref)`` (the second factor only when given).

    A ``nan`` steered perplexity or distinct-n (an empty completion) gives 0.

    Example:
        >>> fluency_unit(20.0, 10.0, distinct=0.5, reference_distinct=1.0)
        0.25
    """
    ref = _reference(reference_perplexity, "reference perplexity")
    if ref <= 0:
        raise ValueError(f"reference perplexity is {ref}; expected > 0")
    ppl = _number(perplexity, "perplexity")
    if math.isnan(ppl):
        return 0.0
    if ppl <= 0:
        raise ValueError(f"perplexity is {ppl}; expected > 0")
    unit = min(1.0, ref / ppl)
    if (distinct is None) != (reference_distinct is None):
        raise ValueError("give both distinct and reference_distinct, or neither")
    if distinct is not None and reference_distinct is not None:
        dref = _reference(reference_distinct, "reference distinct-n")
        if not 0 < dref <= 1:
            raise ValueError(f"reference distinct-n is {dref}; expected in (0, 1]")
        d = _number(distinct, "distinct-n")
        if math.isnan(d):
            return 0.0
        unit *= min(1.0, _unit_interval(d, "distinct-n") / dref)
    return unit


def relevance_unit(logprob: float, reference_logprob: float) -> float:
    """``min(1, exp(lp - lp_ref))``: the unsteered completion's per-token probability under
    steering, as a share of its unsteered probability.

    Example:
        >>> round(relevance_unit(-3.0, -2.0), 4)
        0.3679
    """
    ref = _reference(reference_logprob, "reference log-prob")
    lp = _reference(logprob, "relevance log-prob")
    return min(1.0, math.exp(lp - ref))


def to_unit(row: Any, reference: Any, *, use_distinct: bool = True) -> dict[str, float]:
    """The three ratings of a row in [0, 1], against the unsteered row of the same prompt.

    Reads ``concept`` (P(target)), ``perplexity``, ``distinct`` (when ``use_distinct``) and
    ``relevance_logprob`` from ``row``, and ``perplexity``, ``distinct``, ``relevance_logprob``
    from ``reference``.

    Example:
        >>> to_unit({"concept": 0.6, "perplexity": 12.0, "distinct": 0.9, "relevance_logprob": -2.5},
        ...         {"perplexity": 10.0, "distinct": 1.0, "relevance_logprob": -2.0})
        {'concept': 0.6, 'fluency': 0.75, 'relevance': 0.6065306597126334}
    """
    fluency = fluency_unit(
        _get(row, "perplexity"), _get(reference, "perplexity"),
        _get(row, "distinct") if use_distinct else None, _get(reference, "distinct") if use_distinct else None)
    return {"concept": concept_unit(_get(row, "concept")), "fluency": fluency,
            "relevance": relevance_unit(_get(row, "relevance_logprob"), _get(reference, "relevance_logprob"))}


def harmonic_score(concept: float, fluency: float, relevance: float) -> float:
    """Harmonic mean of the three ratings (each in [0, 1]); exactly 0 if any is 0.

    Example:
        >>> harmonic_score(1.0, 0.5, 0.5), harmonic_score(1.0, 1.0, 0.0)
        (0.6, 0.0)
    """
    values = [_unit_interval(v, name) for v, name in ((concept, "concept"), (fluency, "fluency"),
                                                      (relevance, "relevance"))]
    if min(values) == 0.0:
        return 0.0
    return 3.0 / sum(1.0 / v for v in values)


def score_rows(rows: Iterable[Any], *, reference_method: str = "none",
               use_distinct: bool = True) -> list[dict[str, Any]]:
    """Each row as a dict with its three ratings (``concept_unit``, ``fluency_unit``,
    ``relevance_unit``) and ``score`` (their harmonic mean) added.

    A row's reference is the row of ``reference_method`` (the unsteered condition) with the
    same ``layer``, ``position``, ``prompt_id`` and, where rows have one, ``seed``; reference
    rows are scored against themselves (fluency and relevance 1).

    Raises:
        ValueError: a row with no reference row, or two reference rows for one key.

    Example:
        >>> scored = score_rows(rows)  # rows carry concept, perplexity, distinct, relevance_logprob
        >>> heldout_scores(scored, split_prompts({r["prompt_id"] for r in scored}))
    """
    items = [dict(r) if isinstance(r, Mapping) else dict(vars(r)) for r in rows]

    def ref_key(r: dict[str, Any]) -> tuple[Any, ...]:
        return (int(_get(r, "layer")), str(_get(r, "position")), _get(r, "prompt_id"), r.get("seed"))

    refs: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in items:
        if _get(r, "condition") == reference_method:
            if ref_key(r) in refs:
                raise ValueError(f"two {reference_method!r} rows for (layer, position, prompt_id, seed) {ref_key(r)}")
            refs[ref_key(r)] = r
    out = []
    for r in items:
        if ref_key(r) not in refs:
            raise ValueError(f"no {reference_method!r} row for (layer, position, prompt_id, seed) {ref_key(r)}")
        ratings = to_unit(r, refs[ref_key(r)], use_distinct=use_distinct)
        out.append({**r, **{f"{k}_unit": v for k, v in ratings.items()}, "score": harmonic_score(**ratings)})
    return out


@dataclass(frozen=True)
class PromptSplit:
    """Prompt ids in two disjoint halves: ``selection`` chooses coefficients, ``report`` scores them."""

    selection: tuple[Hashable, ...]
    report: tuple[Hashable, ...]


def split_prompts(prompt_ids: Iterable[Hashable], *, seed: int = 0) -> PromptSplit:
    """A seeded shuffle of the distinct prompt ids, cut in two (the selection half gets the smaller half).

    The result depends only on the set of ids and the seed, not on their order.

    Example:
        >>> split_prompts(range(4), seed=0)
        PromptSplit(selection=(2, 0), report=(1, 3))
    """
    ids = sorted(set(prompt_ids), key=lambda p: (type(p).__name__, repr(p)))
    if len(ids) < 2:
        raise ValueError(f"need at least 2 distinct prompt ids to split, got {ids}")
    random.Random(seed).shuffle(ids)
    half = len(ids) // 2
    return PromptSplit(tuple(ids[:half]), tuple(ids[half:]))


def _mean_by_prompt(rows: Iterable[Any], key: str) -> dict[Hashable, float]:
    sums: dict[Hashable, list[float]] = {}
    for r in rows:
        value = _number(_get(r, key), f"{key} of prompt {_get(r, 'prompt_id')!r}")
        if not math.isfinite(value):
            raise ValueError(f"{key} of prompt {_get(r, 'prompt_id')!r} is {value}; expected a finite number")
        sums.setdefault(_get(r, "prompt_id"), []).append(value)
    return {p: float(np.mean(v)) for p, v in sums.items()}


def choose_coefficient(rows: Iterable[Any], selection_prompts: Iterable[Hashable], *,
                       key: str = "score") -> dict[Condition, float]:
    """For each (method, layer, position), the coefficient with the highest mean ``key`` over the
    selection prompts (per-prompt means first). Ties go to the smaller ``|coefficient|``.

    Only rows whose ``prompt_id`` is a selection prompt are read past their ids: the report
    half cannot move the choice.

    Raises:
        ValueError: no row of any selection prompt, or a non-finite score in the selection half.

    Example:
        >>> choose_coefficient(rows, split.selection)
        {('mean_centred', 15, 'all_prompt'): 0.25, ...}
    """
    chosen_prompts = set(selection_prompts)
    cells: dict[Condition, dict[float, list[Any]]] = {}
    for r in rows:
        if _get(r, "prompt_id") in chosen_prompts:
            cells.setdefault(_condition(r), {}).setdefault(_number(_get(r, "coefficient"), "coefficient"), []).append(r)
    if not cells:
        raise ValueError(f"no rows for the {len(chosen_prompts)} selection prompts")
    choice: dict[Condition, float] = {}
    for cond, by_coef in cells.items():
        means = {c: float(np.mean(list(_mean_by_prompt(rs, key).values()))) for c, rs in by_coef.items()}
        choice[cond] = max(sorted(means, key=lambda c: (abs(c), c)), key=lambda c: means[c])
    return choice


def per_prompt(rows: Iterable[Any], condition: Condition, coefficient: float, prompts: Iterable[Hashable], *,
               key: str = "score") -> dict[Hashable, float]:
    """``key`` by prompt (mean over a prompt's rows) for one condition at one coefficient, on ``prompts``.

    Raises:
        ValueError: a prompt of ``prompts`` with no row there.
    """
    wanted = set(prompts)
    picked = [r for r in rows if _get(r, "prompt_id") in wanted and _condition(r) == condition
              and _number(_get(r, "coefficient"), "coefficient") == coefficient]
    values = _mean_by_prompt(picked, key)
    missing = wanted - set(values)
    if missing:
        raise ValueError(f"{condition} at coefficient {coefficient} has no row for prompts "
                         f"{sorted(missing, key=repr)[:5]}{' ...' if len(missing) > 5 else ''}")
    return values


def chosen_rows(rows: Sequence[Any], choice: Mapping[Condition, float], condition: Condition,
                prompts: Iterable[Hashable], *, key: str = "score") -> dict[Hashable, float]:
    """Per-prompt ``key`` of ``condition`` at its chosen coefficient, on ``prompts`` (the report half)."""
    if condition not in choice:
        raise KeyError(f"no coefficient chosen for {condition}; chosen for {sorted(choice)}")
    return per_prompt(rows, condition, choice[condition], prompts, key=key)


@dataclass(frozen=True)
class HeldoutScore:
    """A condition's score on the report half at the coefficient the selection half chose."""

    condition: str
    layer: int
    position: str
    coefficient: float
    mean: float
    ci: tuple[float, float]
    n_prompts: int
    selection_mean: float


def heldout_scores(rows: Sequence[Any], split: PromptSplit, *, key: str = "score", n_boot: int = 2000,
                   seed: int = 0, level: float = 0.95) -> list[HeldoutScore]:
    """Choose each condition's coefficient on ``split.selection``; report its mean ``key`` on
    ``split.report`` with a bootstrap CI over report prompts. Sorted best first.

    Example:
        >>> split = split_prompts({r["prompt_id"] for r in rows})
        >>> best = heldout_scores(rows, split)[0]
        >>> best.condition, best.coefficient, best.mean, best.ci
    """
    rows = list(rows)
    choice = choose_coefficient(rows, split.selection, key=key)
    out = []
    for cond, coef in choice.items():
        report = per_prompt(rows, cond, coef, split.report, key=key)
        selection = _mean_by_prompt([r for r in rows if _get(r, "prompt_id") in set(split.selection)
                                     and _condition(r) == cond and _get(r, "coefficient") == coef], key)
        values = np.array(list(report.values()))
        out.append(HeldoutScore(cond[0], cond[1], cond[2], coef, float(values.mean()),
                                bootstrap_mean_ci(values, n_boot=n_boot, seed=seed, level=level), len(values),
                                float(np.mean(list(selection.values())))))
    return sorted(out, key=lambda s: (-s.mean, s.condition, s.layer, s.position))


@dataclass(frozen=True)
class PairedDifference:
    """Mean of ``a - b`` over shared prompts, with a paired bootstrap CI (prompts resampled together)."""

    mean: float
    ci: tuple[float, float]
    n_prompts: int

    @property
    def excludes_zero(self) -> bool:
        """The CI lies entirely on one side of 0."""
        return self.ci[0] > 0 or self.ci[1] < 0


def paired_difference(scores_a: Mapping[Hashable, float] | Sequence[Any],
                      scores_b: Mapping[Hashable, float] | Sequence[Any], *, key: str = "score",
                      n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> PairedDifference:
    """Paired bootstrap CI of the mean difference a - b over the same prompts.

    Each side is either a ``{prompt_id: score}`` mapping (:func:`chosen_rows`) or rows (their
    ``key`` averaged per prompt). Both must cover the same prompts.

    Raises:
        ValueError: the two sides cover different prompts (the message names some).

    Example:
        >>> a = chosen_rows(rows, choice, ("mean_centred", 15, "all_prompt"), split.report)
        >>> b = chosen_rows(rows, choice, ("random", 15, "all_prompt"), split.report)
        >>> paired_difference(a, b).ci
    """
    a = dict(scores_a) if isinstance(scores_a, Mapping) else _mean_by_prompt(scores_a, key)
    b = dict(scores_b) if isinstance(scores_b, Mapping) else _mean_by_prompt(scores_b, key)
    if set(a) != set(b):
        only_a, only_b = sorted(set(a) - set(b), key=repr)[:5], sorted(set(b) - set(a), key=repr)[:5]
        raise ValueError(f"paired sides cover different prompts: only in a {only_a}, only in b {only_b}")
    if not a:
        raise ValueError("no prompts to pair")
    ids = sorted(a, key=repr)
    diffs = np.array([_number(a[p], f"a[{p!r}]") - _number(b[p], f"b[{p!r}]") for p in ids])
    return PairedDifference(float(diffs.mean()), bootstrap_mean_ci(diffs, n_boot=n_boot, seed=seed, level=level),
                            len(ids))


def differences_against(rows: Sequence[Any], split: PromptSplit, baseline: str, *, key: str = "score",
                        n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> list[dict[str, Any]]:
    """Every condition against ``baseline`` (a method) at the same layer and position, each at the
    coefficient its selection half chose, paired over the report prompts.

    Returns one dict per condition: ``condition``, ``layer``, ``position``, ``baseline``,
    ``coefficient``, ``baseline_coefficient``, ``difference``, ``difference_ci``, ``n_prompts``,
    ``excludes_zero``.

    Example:
        >>> differences_against(rows, split, "random")  # each method vs the random control
    """
    rows = list(rows)
    choice = choose_coefficient(rows, split.selection, key=key)
    out = []
    for cond in sorted(choice):
        method, layer, position = cond
        base = (baseline, layer, position)
        if method == baseline:
            continue
        if base not in choice:
            raise ValueError(f"baseline {baseline!r} has no rows at layer {layer}, position {position!r}")
        d = paired_difference(chosen_rows(rows, choice, cond, split.report, key=key),
                              chosen_rows(rows, choice, base, split.report, key=key),
                              n_boot=n_boot, seed=seed, level=level)
        out.append({"condition": method, "layer": layer, "position": position, "baseline": baseline,
                    "coefficient": choice[cond], "baseline_coefficient": choice[base], "difference": d.mean,
                    "difference_ci": list(d.ci), "n_prompts": d.n_prompts, "excludes_zero": d.excludes_zero})
    return out
