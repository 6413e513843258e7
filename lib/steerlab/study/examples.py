"""The write-up's steering examples and a scored coefficient sweep (notebook 03).

An example is a construction of :mod:`steerlab.constructions` on named sets or prompts, a
prompt, and its target: the named set whose concept its completions should move towards.
A sweep runs every coefficient x sample as one batched generate call and scores it with
notebook 04's instruments (:mod:`steerlab.study.compare`):

- **concept**: P(target) of each completion under the concept judge
  (:class:`steerlab.study.judge.ConceptJudge`, not the steered model), its mean with a
  bootstrap CI per coefficient, and the change from coefficient 0, paired by sample: sample
  ``i`` of every coefficient draws from the same random stream (common random numbers), so
  the pair differs by the steering only;
- **steerability** (Tan et al. 2024) of the example's vector at its layer and position rule:
  per held-out story, the slope of log p(target continuation) - log p(other) against the
  coefficient over 04's grid (:data:`STEERABILITY_GRID`), its mean with a CI and the
  anti-steerable fraction;
- secondary: the **target-vocabulary rate** (:func:`steerlab.study.vocab.vocab_rate`), and the
  **perplexity** of the completions under the unsteered model (degradation).

A target the judge has no class for, or without held-out stories, is said so in the
sweep's ``notes``, and that instrument is left out (``None``), never replaced silently; with
neither, the vocabulary rate is all there is, and the conclusion says so. Coefficients are
in units of the layer's centred norm (:func:`steerlab.sets.unit_norm`, :func:`steerlab.steer.added_vector`).
:func:`steer_conclusion` and :func:`steer_headline` turn a notebook's recorded sweeps into
its conclusion and headline numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..constructions import build, unit_norm
from ..llamacpp import save_both
from ..metrics import bootstrap_mean_ci, completion_perplexity, steerability_each
from ..models import Model
from ..sets import UNIT_LABEL
from ..steer import Completion, relative_scale, steered_generate
from ..steer import rows as steering_rows_for
from ..vectors import SteeringVector
from .heldout import has_heldout, heldout_others, heldout_target
from .judge import ConceptJudge
from .vocab import evaluation_vocabulary, vocab_rate

__all__ = [
    "EXAMPLES",
    "MIN_INTERVAL",
    "STEERABILITY_GRID",
    "STEER_STORIES",
    "Example",
    "SweepResult",
    "build_example",
    "concept_change",
    "export_examples",
    "run_sweep",
    "steer_conclusion",
    "steer_headline",
    "steer_headline_ci",
    "steer_table",
    "verdict",
]

# name -> construction inputs for steerlab.constructions.build, the prompt, and the target scored
# (a judge class and a set with held-out stories: a genre or "shakespeare"). "Love" - "Hate" is
# scored against romance, the judge's nearest class to love.
EXAMPLES: dict[str, dict[str, str]] = {
    "centring": {"construction": "mean_centred", "target": "shakespeare",
                 "prompt": "A girl once had a goose egg. She", "scored": "shakespeare"},
    "isolating": {"construction": "isolated", "target": "science_fiction", "reference": "mixed",
                  "prompt": "Here is a story:", "scored": "science_fiction"},
    "additional": {"construction": "counterbalanced", "target": "fantasy", "counter": "sports",
                   "prompt": "Yesterday, my son was out kicking a football. Then, he", "scored": "fantasy"},
    "love_hate": {"construction": "prompt_pair", "plus": "Love", "minus": "Hate",
                  "prompt": "I hate you because", "scored": "romance"},
}

# Notebook 04's default steerability grid (CompareConfig.coefficients), so 03's slopes read as 04's.
STEERABILITY_GRID: tuple[float, ...] = (-0.25, 0.0, 0.125, 0.25, 0.5)
STEER_STORIES = 8  # held-out target stories (each paired with another genre's) per steerability
# A percentile bootstrap of fewer values is too narrow to read: of two paired values it is their
# range, which excludes 0 whenever both moved the same way (half the time under no effect).
MIN_INTERVAL = 5


@dataclass
class Example:
    """One built example: its vector at ``layer``, prompt, target and the coefficient unit."""

    name: str
    vector: SteeringVector
    layer: int
    prompt: str
    target: str
    vocab: list[str]
    unit_norm: float


def build_example(model: Model, name: str, layer: int, *, sample_size: int = 32, max_length: int = 128,
                  seed: int = 0) -> Example:
    """Build one of :data:`EXAMPLES` at ``layer``.

    Example:
        >>> ex = build_example(model, "isolating", 15)
    """
    if name not in EXAMPLES:
        raise KeyError(f"unknown example {name!r}; expected one of {list(EXAMPLES)}")
    spec: dict[str, Any] = dict(EXAMPLES[name])
    construction, prompt, scored = spec.pop("construction"), spec.pop("prompt"), spec.pop("scored")
    spec_kw: dict[str, Any] = {"sample_size": sample_size, "max_length": max_length, "seed": seed}
    vector = build(construction, model, [layer], **spec, **spec_kw)
    return Example(name, vector, layer, prompt, scored, evaluation_vocabulary(scored),
                   unit_norm(model, layer))  # the one unit, steerlab.sets.UNIT


@dataclass
class SweepResult:
    """One example's sweep at one position rule; lists run over ``coefficients``.

    Attributes:
        concept: mean P(target) under the judge; ``None`` where the judge has no such class.
        concept_ci: its bootstrap 95% CI; ``None`` at a coefficient with under :data:`MIN_INTERVAL` samples.
        concept_delta: mean change of P(target) from coefficient 0, paired by sample.
        concept_delta_ci: its bootstrap 95% CI (``None`` as for ``concept_ci``).
        concept_by_sample: P(target) of each completion, per coefficient.
        steerability: :meth:`steerlab.metrics.SteerabilityResult.summary` of the vector at this
            position with its per-story slopes, grid and propensity CIs; ``None`` where not measured.
        vocab_rate, perplexity: the secondary measures, means per coefficient.
        notes: why an instrument is missing, in words.
    """

    coefficients: list[float]
    completions: dict[float, list[Completion]]
    vocab_rate: list[float]
    perplexity: list[float]
    log_perplexity: list[float] = field(default_factory=list)
    target: str = ""
    position: str = ""
    concept: list[float] | None = None
    concept_ci: list[list[float] | None] | None = None
    concept_delta: list[float] | None = None
    concept_delta_ci: list[list[float] | None] | None = None
    concept_by_sample: list[list[float]] | None = None
    steerability: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def n_samples(self) -> int:
        return min((len(cs) for cs in self.completions.values()), default=0)

    def as_dict(self) -> dict[str, Any]:
        """The recorded form (``summary.json``): the judge and steerability first, the vocabulary rate after."""
        return {"coefficients": self.coefficients, "target": self.target, "position": self.position,
                "n_samples": self.n_samples, "concept": self.concept, "concept_ci": self.concept_ci,
                "concept_delta": self.concept_delta, "concept_delta_ci": self.concept_delta_ci,
                "concept_by_sample": self.concept_by_sample, "steerability": self.steerability,
                "vocab_rate": self.vocab_rate, "perplexity": self.perplexity, "notes": self.notes,
                "samples": {str(c): [x.text for x in cs] for c, cs in self.completions.items()}}


def _mean(xs: list[float]) -> float:
    good = [x for x in xs if math.isfinite(x)]
    return sum(good) / len(good) if good else float("nan")


def _interval(values: Sequence[float], seed: int) -> list[float] | None:
    """Bootstrap 95% CI of the mean, or ``None`` for fewer than :data:`MIN_INTERVAL` values."""
    return list(bootstrap_mean_ci(values, seed=seed)) if len(values) >= MIN_INTERVAL else None


def concept_change(coefficients: Sequence[float], scores: Sequence[Sequence[float]], *,
                   seed: int = 0) -> dict[str, Any]:
    """The judge's scores of a sweep summarised: per coefficient the mean P(target) and the mean
    change from coefficient 0 paired by sample (sample ``i`` against unsteered sample ``i``), each
    with a bootstrap 95% CI, or ``None`` for fewer than :data:`MIN_INTERVAL` samples.

    Args:
        coefficients: the sweep, including 0.
        scores: ``scores[k][i]``: P(target) of sample ``i`` at ``coefficients[k]``; as many samples each.

    Raises:
        ValueError: no coefficient 0, or a coefficient with another number of samples than 0's.

    Example:
        >>> [round(d, 3) for d in concept_change([0.0, 1.0], [[0.1] * 5, [0.3, 0.3, 0.4, 0.3, 0.3]])["concept_delta"]]
        [0.0, 0.22]
    """
    coefs = [float(c) for c in coefficients]
    if 0.0 not in coefs:
        raise ValueError(f"coefficients {coefs} lack 0, the unsteered control every change is measured from")
    each = [[float(x) for x in values] for values in scores]
    if len(each) != len(coefs) or any(len(v) != len(each[0]) or not v for v in each):
        raise ValueError(f"expected {len(coefs)} equal, non-empty lists of scores (one per coefficient, paired by "
                         f"sample), got lengths {[len(v) for v in each]}")
    plain = each[coefs.index(0.0)]
    deltas = [[x - b for x, b in zip(values, plain)] for values in each]
    return {"concept_by_sample": each, "concept": [float(np.mean(v)) for v in each],
            "concept_ci": [_interval(v, seed) for v in each],
            "concept_delta": [float(np.mean(d)) for d in deltas],
            "concept_delta_ci": [_interval(d, seed) for d in deltas]}


def _example_steerability(model: Model, example: Example, position: str, n_stories: int,
                          coefficients: Sequence[float], seed: int) -> tuple[dict[str, Any] | None, str | None]:
    """The example's steerability at ``position``, or ``None`` and why it is not measured."""
    vector = example.vector.at(example.layer)
    if not has_heldout(example.target):
        return None, (f"steerability not measured: {example.target!r} has no held-out stories "
                      "(a genre or 'shakespeare' has)")
    if vector.ndim != 1:
        return None, (f"steerability not measured: a {example.vector.recipe} vector adds a different row at each "
                      f"of its {vector.shape[0]} positions; steerability takes one direction")
    with torch.inference_mode():
        result = steerability_each(model, [vector], layer=example.layer,
                                   target_texts=heldout_target(example.target, n_stories),
                                   other_texts=heldout_others(example.target, n_stories),
                                   coefficients=coefficients, position=position,
                                   unit=example.unit_norm, seed=seed)[0]
    return {"target": example.target, "condition": example.vector.recipe, "layer": example.layer, "position": position,
            **result.summary(), "coefficients": list(result.coefficients),
            "slopes": [float(x) for x in result.slopes],
            "propensity_ci_by_coefficient": {c: list(bootstrap_mean_ci(result.propensity[:, k], seed=seed))
                                             for k, c in enumerate(result.coefficients)}}, None


def run_sweep(model: Model, example: Example, *, sweep: list[float], position: str, samples: int = 3,
              max_new_tokens: int = 40, seed: int = 0, judge: ConceptJudge | None = None,
              n_stories: int = STEER_STORIES,
              steer_coefficients: Sequence[float] = STEERABILITY_GRID) -> SweepResult:
    """Every coefficient (x the centred norm) x sample in one batched generate call, scored
    (module docstring); rows with coefficient 0 are the unsteered control of the same call.

    Args:
        sweep: the coefficients; must include 0.
        judge: the concept judge; default :meth:`ConceptJudge.train` (cached).
        n_stories: held-out target stories for the steerability.
        steer_coefficients: the steerability's grid (0, a negative and a positive value).

    Raises:
        ValueError: ``sweep`` lacks 0 (the unsteered control).
        steerlab.study.judge.JudgeError: the judge's held-out accuracy is under its threshold.

    Example:
        >>> r = run_sweep(model, build_example(model, "additional", 15), sweep=[0, 1.0], position="all_prompt",
        ...               samples=8)
        >>> r.concept_delta[1], r.steerability["steerability_ci"]
    """
    coefs = sorted({float(c) for c in sweep})
    if 0.0 not in coefs:
        raise ValueError(f"sweep {coefs} lacks 0, the unsteered control every change is measured from")
    rows = [c for c in coefs for _ in range(samples)]
    # One random stream per sample index, shared by every coefficient: sample i steered and
    # unsteered differ by the steering only, so their difference is a paired one.
    keys = [f"{example.prompt}|{i}" for _ in coefs for i in range(samples)]
    edit = steering_rows_for(model, example.vector, rows, layer=example.layer, scale=example.unit_norm,
                             position=position)
    ids = steered_generate(model, [example.prompt] * len(rows), edit, max_new_tokens=max_new_tokens, seed=seed,
                           row_keys=keys)
    tok = model.tokenizer
    label = example.vector.describe()
    completions: dict[float, list[Completion]] = {c: [] for c in coefs}
    for c, row in zip(rows, ids):
        completions[c].append(Completion(example.prompt, tok.decode(row, skip_special_tokens=True), c, row, label))
    ppl = completion_perplexity(model, [example.prompt] * len(rows), ids)
    by_c = {c: [p for cc, p in zip(rows, ppl) if cc == c] for c in coefs}
    rate = [_mean([vocab_rate(x.text, example.vocab) for x in completions[c]]) for c in coefs]
    perplexity = [_mean(by_c[c]) for c in coefs]
    result = SweepResult(coefs, completions, rate, perplexity,
                         [math.log(p) if p > 0 else float("nan") for p in perplexity],
                         target=example.target, position=position)
    judge = judge or ConceptJudge.train()
    if example.target in judge.classes:
        scores = judge.concept_score([x.text for c in coefs for x in completions[c]], example.target)
        change = concept_change(coefs, [scores[k * samples:(k + 1) * samples] for k in range(len(coefs))], seed=seed)
        result.concept_by_sample = change["concept_by_sample"]
        result.concept, result.concept_ci = change["concept"], change["concept_ci"]
        result.concept_delta, result.concept_delta_ci = change["concept_delta"], change["concept_delta_ci"]
        if samples < MIN_INTERVAL:
            result.notes.append(f"P({example.target}) has no interval: {samples} sample(s) per coefficient, "
                                f"under {MIN_INTERVAL}")
    else:
        result.notes.append(f"not judged: the concept judge has no class {example.target!r} "
                            f"(it knows {', '.join(judge.classes)}); the vocabulary rate stands in")
    result.steerability, why = _example_steerability(model, example, position, n_stories, steer_coefficients, seed)
    if why:
        result.notes.append(why)
    return result


def _at(sweep: Mapping[str, Any], coefficient: float) -> int:
    coefs = [float(c) for c in sweep["coefficients"]]
    if float(coefficient) not in coefs or 0.0 not in coefs:
        raise ValueError(f"the sweep {coefs} lacks coefficient {coefficient} or the unsteered 0")
    return coefs.index(float(coefficient))


def _sign(ci: Sequence[float] | None) -> int:
    """+1 if the interval lies above 0, -1 below, 0 if it includes 0 or is missing."""
    if not ci:
        return 0
    return 1 if ci[0] > 0 else -1 if ci[1] < 0 else 0


def _concept_ci(r: Mapping[str, Any], i: int) -> list[float] | None:
    cis = r.get("concept_delta_ci")
    return cis[i] if cis else None


def _steer_ci(r: Mapping[str, Any]) -> list[float] | None:
    s = r.get("steerability")
    return s["steerability_ci"] if s else None


def verdict(r: Mapping[str, Any], coefficient: float) -> str:
    """One recorded sweep's verdict at ``coefficient``, from the judge's and the steerability's CIs:
    ``moves towards <target> (<instruments>)`` or ``moves away from <target> (<instruments>)``,
    naming the instruments whose CI excludes 0; ``not resolved`` (every measured CI includes 0);
    ``instruments disagree`` (one CI above 0, one below); ``not measured`` (neither instrument
    applies; the vocabulary rate is then all there is).

    Example:
        >>> verdict({"coefficients": [0.0, 1.0], "target": "fantasy", "concept_delta": [0.0, 0.2],
        ...          "concept_delta_ci": [None, [0.1, 0.3]], "steerability": None}, 1.0)
        'moves towards fantasy (judge)'
    """
    i = _at(r, coefficient)
    target = r.get("target") or "the target"
    if r.get("concept_delta") is None and not r.get("steerability"):
        return "not measured"
    by = {"judge": _sign(_concept_ci(r, i)), "steerability": _sign(_steer_ci(r))}
    signs = set(by.values()) - {0}
    if len(signs) != 1:
        return "instruments disagree" if signs else "not resolved"
    sign = signs.pop()
    said = " and ".join(k for k, v in by.items() if v == sign)
    return f"moves {'towards' if sign > 0 else 'away from'} {target} ({said})"


def _judge_text(r: Mapping[str, Any], i: int, coefficient: float) -> str:
    target = r.get("target") or "target"
    if r.get("concept_delta") is None:
        return f"P({target}) not judged (no judge class {target!r})"
    d, ci, n = r["concept_delta"][i], _concept_ci(r, i), r.get("n_samples", "?")
    shown = f"[{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else f"(no interval from {n} sample(s); {MIN_INTERVAL} needed)"
    return f"P({target}) {d:+.3f} {shown} at coefficient ×{coefficient:g} ({n} completions per coefficient)"


def _steer_text(r: Mapping[str, Any]) -> str:
    s = r.get("steerability")
    if not s:
        return "steerability not measured"
    lo, hi = s["steerability_ci"]
    return (f"steerability {s['steerability']:.3f} [{lo:.3f}, {hi:.3f}] nats/token per × {UNIT_LABEL} "
            f"({_anti(s)} story pairs anti-steerable)")


def _anti(s: Mapping[str, Any]) -> str:
    """``k of n``: the anti-steerable story pairs of a recorded steerability."""
    n = int(s["n_samples"])
    return f"{round(s['anti_steerable_fraction'] * n)} of {n}"


def _sweep_sentence(name: str, pos: str, r: Mapping[str, Any], coefficient: float) -> str:
    i = _at(r, coefficient)
    said = verdict(r, coefficient)
    secondary = (f"vocab rate {r['vocab_rate'][0]:.3f} -> {r['vocab_rate'][i]:.3f}, "
                 f"perplexity {r['perplexity'][0]:.1f} -> {r['perplexity'][i]:.1f}")
    if said == "not measured":
        return (f"{name}, {pos}: not measured by the judge or steerability ({'; '.join(r.get('notes') or [])}); "
                f"vocabulary rate only: {secondary}")
    return f"{name}, {pos}: {said}: {_judge_text(r, i, coefficient)}; {_steer_text(r)}. Secondary: {secondary}"


def _slope_difference_resolved(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether the steerability slopes of two positions differ, paired over the same story pairs."""
    sa, sb = np.asarray(a["slopes"], dtype=float), np.asarray(b["slopes"], dtype=float)
    if sa.shape != sb.shape or sa.size < MIN_INTERVAL:
        return False
    return _sign(list(bootstrap_mean_ci(sb - sa))) != 0


def steer_conclusion(by_example: Mapping[str, Mapping[str, Mapping[str, Any]]], positions: Sequence[str],
                     coefficient: float, samples: int) -> list[str]:
    """03's conclusion from its sweeps (``{example: {position: SweepResult.as_dict()}}``), numbers only.

    One line per example and position rule: its :func:`verdict` with the judge's P(target)
    change at ``coefficient`` and the steerability, both with their CIs, then the vocabulary
    rate and perplexity as secondary measures. "Moves" needs a CI that excludes 0; a CI that
    includes it reads "not resolved", never "no movement".

    With several positions and steerability at all of them, it says which position steered
    least (summed steerability over examples) and for how many examples the difference is
    resolved (paired over the same stories); the attention-sink explanation is given only when
    ``first`` steered least and the difference is resolved for at least one example.

    Example:
        >>> steer_conclusion({"love_hate": {"all": {"coefficients": [0.0, 1.0], "target": "romance",
        ...     "n_samples": 8, "concept_delta": [0.0, 0.2], "concept_delta_ci": [[0, 0], [0.1, 0.3]],
        ...     "steerability": None, "vocab_rate": [0.0, 0.0], "perplexity": [9.0, 12.0]}}}, ["all"], 1.0, 8)[0]
        'love_hate, all: moves towards romance (judge): P(romance) +0.200 [+0.100, +0.300] at coefficient ×1 (8 ...'
    """
    lines = [_sweep_sentence(name, pos, by_pos[pos], coefficient)
             for name, by_pos in by_example.items() for pos in positions]
    if len(positions) < 2:
        return lines
    measured = {name: by_pos for name, by_pos in by_example.items()
                if all(by_pos[pos].get("steerability") for pos in positions)}
    if not measured:
        lines.append("No example has a steerability at every position rule, so the positions are not compared.")
        return lines
    total = {pos: sum(by_pos[pos]["steerability"]["steerability"] for by_pos in measured.values())
             for pos in positions}
    quiet, loud = min(total, key=total.__getitem__), max(total, key=total.__getitem__)
    if total[quiet] == total[loud]:
        lines.append(f"Summed over {len(measured)} example(s), the steerability was {total[quiet]:.3f} with every "
                     "position rule: no position stood out.")
        return lines
    resolved = sum(_slope_difference_resolved(by_pos[quiet]["steerability"], by_pos[loud]["steerability"])
                   for by_pos in measured.values())
    lines.append(f"Summed over {len(measured)} example(s), the steerability was least with position '{quiet}' "
                 f"({total[quiet]:.3f}) and most with '{loud}' ({total[loud]:.3f}) nats/token per × {UNIT_LABEL}; the "
                 f"difference, paired over the same story pairs, is resolved for {resolved} of {len(measured)}.")
    if not resolved:
        pairs = min(len(by_pos[quiet]["steerability"]["slopes"]) for by_pos in measured.values())
        lines.append(f"Not resolved at this sample size ({pairs} story pairs per example): no difference between "
                     "the positions is shown, in either direction.")
    elif quiet == "first":
        lines.append("On SmolLM2 the first token is an attention sink whose residual norm is tens to hundreds of "
                     "times the others' (notebook 01), so a vector of unit size added there is small "
                     "relative to it.")
    return lines


def steer_table(by_example: Mapping[str, Mapping[str, Mapping[str, Any]]], positions: Sequence[str],
                coefficient: float) -> dict[str, list[Any]]:
    """03's table at ``coefficient``: one row per example and position rule, the judge and the
    steerability first (with their 95% CIs), the vocabulary rate and perplexity after, as columns
    for :func:`steerlab.lab.tables.html_table`.

    Example:
        >>> steer_table(recorded, ["first", "all_prompt"], 1.0)["verdict"][0]
        'moves towards shakespeare (judge and steerability)'
    """
    cols: dict[str, list[Any]] = {k: [] for k in (
        "example", "position", "verdict", "P(target) change [95% CI]", f"steerability [95% CI] (nats/token per × {UNIT_LABEL})",
        "anti-steerable pairs", "vocab rate ×0 → steered (secondary)", "perplexity ×0 → steered")}
    for name, by_pos in by_example.items():
        for pos in positions:
            r = by_pos[pos]
            i = _at(r, coefficient)
            target = r.get("target") or "target"
            s = r.get("steerability")
            if r.get("concept_delta") is None:
                judged = f"not judged (no class {target!r})"
            else:
                ci = _concept_ci(r, i)
                judged = (f"P({target}) {r['concept_delta'][i]:+.3f} "
                          + (f"[{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else f"(n={r.get('n_samples', '?')}: no CI)"))
            cols["example"].append(name)
            cols["position"].append(pos)
            cols["verdict"].append(verdict(r, coefficient))
            cols["P(target) change [95% CI]"].append(judged)
            cols[f"steerability [95% CI] (nats/token per × {UNIT_LABEL})"].append(
                f"{s['steerability']:.3f} [{s['steerability_ci'][0]:.3f}, {s['steerability_ci'][1]:.3f}]" if s
                else "not measured")
            cols["anti-steerable pairs"].append(_anti(s) if s else None)
            cols["vocab rate ×0 → steered (secondary)"].append(f"{r['vocab_rate'][0]:.3f} → {r['vocab_rate'][i]:.3f}")
            cols["perplexity ×0 → steered"].append(f"{r['perplexity'][0]:.1f} → {r['perplexity'][i]:.1f}")
    return cols


def steer_headline(by_example: Mapping[str, Mapping[str, Mapping[str, Any]]], positions: Sequence[str],
                   coefficient: float) -> dict[str, Any]:
    """03's headline at ``coefficient`` and the last position rule: per example its :func:`verdict`
    (``<example>.verdict``), the judge's P(target) change (``<example>.concept_delta``) and the
    steerability (``<example>.steerability``); ``None`` where the instrument does not apply.
    Their CIs are in :func:`steer_headline_ci`.

    Example:
        >>> steer_headline(recorded, ["first", "all_prompt"], 1.0)["additional.verdict"]
        'moves towards fantasy (judge)'
    """
    pos = positions[-1]
    out: dict[str, Any] = {}
    for name, by_pos in by_example.items():
        r = by_pos[pos]
        i = _at(r, coefficient)
        s = r.get("steerability")
        out[f"{name}.verdict"] = verdict(r, coefficient)
        out[f"{name}.concept_delta"] = None if r.get("concept_delta") is None else round(r["concept_delta"][i], 4)
        out[f"{name}.steerability"] = round(s["steerability"], 4) if s else None
    return out


def steer_headline_ci(by_example: Mapping[str, Mapping[str, Mapping[str, Any]]], positions: Sequence[str],
                      coefficient: float) -> dict[str, Any]:
    """The 95% CIs of :func:`steer_headline`'s numbers, by the same keys: ``[lo, hi]``, or why there is none.

    Example:
        >>> steer_headline_ci(recorded, ["first", "all_prompt"], 1.0)["additional.steerability"]
        [0.05, 0.41]
    """
    pos = positions[-1]
    out: dict[str, Any] = {}
    for name, by_pos in by_example.items():
        r = by_pos[pos]
        i = _at(r, coefficient)
        if r.get("concept_delta") is None:
            out[f"{name}.concept_delta"] = f"not judged: no judge class {r.get('target')!r}"
        else:
            ci = _concept_ci(r, i)
            out[f"{name}.concept_delta"] = ([round(x, 4) for x in ci] if ci else
                                            f"none from {r.get('n_samples', '?')} sample(s); {MIN_INTERVAL} needed")
        s = r.get("steerability")
        out[f"{name}.steerability"] = [round(x, 4) for x in s["steerability_ci"]] if s else "not measured"
    return out


def export_examples(examples: Mapping[str, Example], out_dir: str | Path, coefficient: float) -> list[dict[str, str]]:
    """Save each example's vector to ``out_dir/vectors/``: safetensors + JSON, and a llama.cpp
    control vector holding what 03 adds at ``coefficient`` (x the layer's centred norm), where
    llama.cpp can express it. One row per example: the files, or why there is no GGUF.

    Example:
        >>> export_examples(built, "runs/latest", 1.0)[0]["gguf"]
        'runs/latest/vectors/centring-L15.gguf'
    """
    rows = []
    for name, ex in examples.items():
        raw = relative_scale(ex.vector.at(ex.layer), ex.unit_norm, coefficient)
        saved = save_both(ex.vector, Path(out_dir) / "vectors" / f"{name}-L{ex.layer}", coefficient=raw)
        rows.append({"example": name, "vector": str(saved["safetensors"]),
                     "gguf": str(saved["gguf"]) if saved["gguf"] else f"none: {saved['gguf_error']}"})
    return rows
