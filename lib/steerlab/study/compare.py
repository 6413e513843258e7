"""The systematic comparison: which construction steers best for the least damage (notebook 04).

For each target (genres and the Shakespeare style, each with a named counter genre:
:data:`steerlab.study.conditions.TARGETS`), condition (the unsteered model, every construction of
:data:`steerlab.constructions.CONSTRUCTIONS` and the prompting baselines:
:data:`steerlab.study.conditions.CONDITIONS`), layer and position rule, the sweep measures with
instruments that can tell a real effect from a random direction:

- **concept**: P(target) of steered completions under a judge that is not the steered model
  (:class:`steerlab.study.judge.ConceptJudge`, TF-IDF + logistic regression trained on the
  train splits, refused below 0.8 held-out accuracy);
- **steerability** (Tan et al. 2024): slope of the propensity (log p(target continuation) -
  log p(other continuation) of held-out story openings) against the coefficient, over a grid
  that includes 0 and negative values, forward passes only (block replay); its mean with a
  CI and the anti-steerable fraction. Its propensities and the matched shifts below are one
  pass over the same story pairs (:func:`steerlab.metrics.propensities`);
- **damage**: perplexity ratio and next-token KL on held-out general text (at the matched
  coefficient, the damage curve's own value there); **fluency**:
  completion perplexity under the unsteered model; **repetition**: distinct-2 of completions;
  **relevance**: log-prob per token of the unsteered completion under the steered model;
- **matched damage** (:mod:`steerlab.study.matched`): each vector's damage curve on general
  text (walked up the grid to its first crossing) places the coefficient where the perplexity
  ratio reaches ``matched_level``; the propensity shift of every held-out story pair is measured
  there (forward passes only);
- **AxBench score** (Wu et al. 2025): per completion the harmonic mean of concept, fluency
  and relevance mapped to [0, 1], zero if any is zero. With ``generate_at="matched"`` (every
  preset) each vector generates once, at its matched-damage coefficient, chosen on general
  text, so every prompt reports; with ``"grid"`` the coefficient of each (target, method,
  layer, position) is chosen on a *selection* half of the prompts and the score reported on
  the other half. Bootstrap CIs, and paired differences from mean-centring and the random
  control on the same report prompts;
- **prompting** (:mod:`steerlab.study.prompting`): no vector, an instruction naming the
  target, and the same instruction with the mean-centred vector; scored like the rest.

Every question the write-up asks is a pre-registered contrast (:mod:`steerlab.study.contrasts`)
on three measures: steerability, matched-damage shift and the AxBench score.

Two methods test the write-up's argument directly: ``bias`` adds the general-text mean
itself (the bias direction alone), and ``bias_ablated`` adds the raw target mean with the
bias direction projected out (the bias removed by projection rather than by subtracting
the whole mean). The stream form of ablation (``steering(..., operator="ablate")``) is in
the library and the widget; the comparison uses the vector form because every instrument
here scores additive vectors at one norm. Coefficients are in units of the layer's centred
norm (:func:`steerlab.sets.unit_norm`) for every method. Every (target, layer, position) shares one batched
greedy generate call over all conditions x prompts; forward-pass measures replay only the
blocks from the steered layer up. Forward-pass measures (steerability, damage, fluency,
relevance) run on a copy of the model in ``score_dtype`` (``"auto"``: bfloat16 where the
hardware has bfloat16 units, :func:`steerlab.load.fast_dtype`); vectors, units
and generations always come from the model as loaded. ``bench/`` section 8 measures what
bfloat16 scoring changes against float32 on the same cell.

Tables, conclusions and the contrasts table are in :mod:`steerlab.study.compare_report`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..constructions import build, set_stats, unit_norm
from ..data import load_dataset
from ..intervention import Intervention
from ..load import cast
from ..metrics import (
    bootstrap_mean_ci,
    completion_perplexity,
    distinct_n,
    grid_conditions,
    propensities,
    relevance,
    slopes_from,
    steered_text_scores,
    story_pairs,
)
from ..models import Model
from ..sets import UNIT, UNIT_LABEL
from ..steer import rows, steered_generate
from ..vectors import SteeringVector
from .cells import CellStore, run_key
from .conditions import CONSTRUCTIONS_COMPARED, TARGETS
from .config import PRESETS, CompareConfig
from .contrasts import (
    Sample,
    best_of,
    registration,
    run_contrasts,
    samples_from_dicts,
    samples_from_lists,
    to_records,
)
from .heldout import heldout_others as _others
from .heldout import heldout_target as _heldout_target
from .judge import ConceptJudge
from .matched import damage_curves, matched_coefficient, matched_conditions, matched_rows
from .prompting import instruction_prefix, prompting_style
from .scoring import (
    PromptSplit,
    choose_coefficient,
    differences_against,
    harmonic_score,
    heldout_scores,
    paired_difference,
    per_prompt,
    split_prompts,
    to_unit,
)
from .sentences import conclusions
from .vocab import evaluation_vocabulary, vocab_rate

__all__ = [
    "METHODS",
    "PRESETS",
    "TARGETS",
    "CompareConfig",
    "CompareResult",
    "bias_share",
    "build_vectors",
    "config_dict",
    "contrast_samples",
    "contrast_summary",
    "frontier",
    "judge_summary",
    "run_compare",
    "summarise",
]

METHODS = CONSTRUCTIONS_COMPARED  # the old name; the one list is steerlab.study.conditions


def build_vectors(model: Model, cfg: CompareConfig, target: str, layers: Sequence[int], *,
                  progress: bool = True) -> dict[str, SteeringVector]:
    """One vector per method for ``target``, at ``layers``, from training splits, through the
    construction registry (:func:`steerlab.constructions.build`): the target's counter genre
    is the minus side of counterbalanced and word_pair; prompt pairs are the target's name
    against a space; ``random`` has the mean-centred norm."""
    spec: dict[str, Any] = {"target": target, "counter": cfg.counters[target], "sample_size": cfg.sample_size,
                            "max_length": cfg.max_length}
    for name in (target, "general"):  # shows the progress of the slow first pass
        set_stats(model, name, sample_size=cfg.sample_size, max_length=cfg.max_length, progress=progress)
    return {name: build(name, model, list(layers), **spec) for name in cfg.constructions}


def bias_share(raw_vector: torch.Tensor, bias: torch.Tensor) -> dict[str, float]:
    """How much of a raw vector is the bias: its cosine with the general-text mean, and the
    length of its projection on the mean's direction relative to the mean's norm.

    Example:
        >>> bias_share(torch.tensor([3.0, 4.0]), torch.tensor([1.0, 0.0]))
        {'cosine': 0.6, 'projection_over_bias_norm': 3.0}
    """
    b = bias.double()
    r = raw_vector.double()
    proj = float(r @ b / b.norm())
    return {"cosine": float(proj / r.norm()), "projection_over_bias_norm": float(proj / b.norm())}


@dataclass
class CompareResult:
    """What one run measured.

    Attributes:
        rows: one per (target, method, layer, position, coefficient), aggregated over prompts.
        completions: one per generated completion (the AxBench unit), with its ratings.
        steerability: one per (target, method, layer, position).
        bias: one per (target, layer): how much of the raw vector is bias.
        judge: the concept judge's held-out accuracy, classes and confusion matrix.
        split: the selection and report prompt ids.
        layers: the swept layers.
        score_dtype: the dtype the forward-pass measures ran in.
        matched: one per (target, method, layer, position): the damage curve, the coefficient
            where it reaches ``matched_level`` and the per-story propensity shifts there
            (:mod:`steerlab.study.matched`).
        prompting_style: how the prompting baselines asked (``"chat"``/``"prefix"``; None: not run).
        cells: with ``cells_dir``, :meth:`steerlab.study.cells.CellStore.summary`: how many cells
            were read back from earlier runs and how long they took then (None: no ``cells_dir``).
    """

    rows: list[dict[str, Any]]
    completions: list[dict[str, Any]]
    steerability: list[dict[str, Any]]
    bias: list[dict[str, Any]]
    judge: dict[str, Any]
    split: PromptSplit
    layers: list[int]
    score_dtype: str = "float32"
    matched: list[dict[str, Any]] = field(default_factory=list)
    prompting_style: str | None = None
    cells: dict[str, Any] | None = None


def judge_summary(judge: ConceptJudge) -> dict[str, Any]:
    """The judge's validation as plain numbers (for ``summary.json`` and the notebook)."""
    return {"heldout_accuracy": judge.heldout_accuracy, "classes": list(judge.classes),
            "confusion": judge.confusion.matrix.tolist(), "confusion_labels": list(judge.confusion.labels),
            "accuracy_by_words": {str(k): v for k, v in judge.accuracy_by_words.items()},
            "features": judge.features, "n_train": judge.n_train, "n_heldout": judge.n_heldout}


def _prompts(cfg: CompareConfig) -> list[str]:
    return load_dataset("prompts").sample(cfg.n_prompts, seed=0).texts


@torch.inference_mode()
def run_compare(model: Model, cfg: CompareConfig, *, judge: ConceptJudge | None = None,
                progress: bool = True, cells_dir: str | Path | None = None,
                on_cell: Callable[[dict[str, Any]], None] | None = None) -> CompareResult:
    """Run the sweep (module docstring) and return every measurement.

    ``cells_dir``: a folder where each finished (target, layer, position) cell is saved at once;
    a rerun with the same configuration, model, code and data reads those cells back and
    measures only the rest (:mod:`steerlab.study.cells`). ``None`` (default): nothing is saved.
    ``on_cell(event)`` is called before the first cell and after each one with ``done``, ``total``,
    ``cell`` (target, layer, position; ``None`` before the first), ``seconds`` (that cell's),
    ``reused`` (read back from ``cells_dir``) and ``left_seconds`` (the cells left times the mean of
    those measured so far; ``None`` before one is): notebook 04 writes them where ``make run`` shows them.

    Raises:
        steerlab.study.judge.JudgeError: the judge's held-out accuracy is under
            ``cfg.min_judge_accuracy`` (no concept score is reported from it).
    """
    cfg.validate()  # a config edited after construction is checked again, before any model work
    judge = judge or ConceptJudge.train()
    layers = cfg.resolved_layers(model)
    score_dtype = cfg.resolved_score_dtype(model)
    scorer = cast(model, score_dtype)  # forward passes only; vectors and units come from ``model``
    generator = cast(model, cfg.generate_dtype)  # float32 unless a run asks (bench: the bf16 generation rule)
    prompts = _prompts(cfg)
    if cfg.generate_at == "matched":  # one coefficient per condition, chosen on general text: nothing to select
        split = PromptSplit(tuple(range(len(prompts))), tuple(range(len(prompts))))
    else:
        split = split_prompts(range(len(prompts)), seed=cfg.split_seed)
    general_eval = load_dataset("general", "heldout").sample(cfg.n_general, seed=0).texts
    gen_coefs = cfg.generation_coefficients
    rows: list[dict[str, Any]] = []
    completions: list[dict[str, Any]] = []
    steer_rows: list[dict[str, Any]] = []
    bias_rows: list[dict[str, Any]] = []
    matched_rows: list[dict[str, Any]] = []
    combos = [(t, la, pos) for t in cfg.targets for la in layers for pos in cfg.positions]
    store = None if cells_dir is None else CellStore(cells_dir, run_key(model, config_dict(cfg), score_dtype))
    bar = tqdm(total=len(combos), desc="compare", disable=not progress)
    vectors: dict[str, dict[str, SteeringVector]] = {}
    measured: list[float] = []
    if on_cell is not None:
        on_cell({"done": 0, "total": len(combos), "cell": None, "seconds": 0.0, "reused": False,
                 "left_seconds": None})
    for k, (target, layer, position) in enumerate(combos, 1):
        cell = store.load((target, layer, position)) if store is not None else None
        started = time.perf_counter()
        reused = cell is not None
        if cell is None:
            if target not in vectors:
                vectors[target] = build_vectors(model, cfg, target, layers, progress=progress)
            cell = _measure_cell(model, scorer, cfg, judge, vectors[target], target, layer, position,
                                 prompts=prompts, general_eval=general_eval, gen_coefs=gen_coefs,
                                 generator=generator)
            measured.append(time.perf_counter() - started)
            if store is not None:
                cell = store.save((target, layer, position), cell, measured[-1])
        if on_cell is not None:
            left = (len(combos) - k) * sum(measured) / len(measured) if measured else None
            on_cell({"done": k, "total": len(combos), "cell": [target, layer, position],
                     "seconds": time.perf_counter() - started, "reused": reused, "left_seconds": left})
        rows += cell["rows"]
        completions += cell["completions"]
        steer_rows += cell["steerability"]
        bias_rows += cell["bias"]
        matched_rows += cell["matched"]
        bar.update()
    bar.close()
    if store is not None and store.reused:
        print(f"run_compare: {store.reused} of {len(combos)} cells read back from {store.folder} (key {store.key}), "
              f"measured earlier in {store.reused_seconds:.0f} s")
    return CompareResult(rows, completions, steer_rows, bias_rows, judge_summary(judge), split, layers,
                         score_dtype, matched_rows, prompting_style(model, cfg.prompting_style)
                         if cfg.baselines else None, None if store is None else store.summary(len(combos)))


def _measure_cell(model: Model, scorer: Model, cfg: CompareConfig, judge: ConceptJudge,
                  vecs: dict[str, SteeringVector], target: str, layer: int, position: str, *,
                  prompts: Sequence[str], general_eval: Sequence[str],
                  gen_coefs: Sequence[float], generator: Model | None = None) -> dict[str, list[dict[str, Any]]]:
    """Every measurement of one (target, layer, position) cell, as :data:`steerlab.study.cells.PARTS`
    (completions from ``generator``, ``model`` in another dtype; default ``model``)."""
    cell_rows: list[dict[str, Any]] = []
    completions: list[dict[str, Any]] = []
    steer_rows: list[dict[str, Any]] = []
    bias_rows: list[dict[str, Any]] = []
    matched_out: list[dict[str, Any]] = []
    unit = unit_norm(model, layer)  # the one unit (steerlab.sets.UNIT), recorded in the summary
    if position == cfg.positions[0]:
        general_mean = set_stats(model, "general", sample_size=cfg.sample_size,
                                 max_length=cfg.max_length).mean_at(layer)
        raw = build("raw", model, [layer], target=target, sample_size=cfg.sample_size, max_length=cfg.max_length)
        centred = vecs["mean_centred"].at(layer) if "mean_centred" in vecs else None
        cosines = {} if centred is None else {
            name: float(torch.nn.functional.cosine_similarity(vec.at(layer).double(), centred.double(), dim=0))
            for name, vec in vecs.items() if vec.at(layer).dim() == 1}
        bias_rows.append({"target": target, "layer": layer, **bias_share(raw.at(layer), general_mean),
                          "cosine_with_mean_centred": cosines})
    targets_text = _heldout_target(target, cfg.n_steer)
    others_text = _others(target, cfg.n_steer)
    directions = {m: vec.at(layer) for m, vec in vecs.items()}
    if "prompting_steered" in cfg.baselines and "mean_centred" not in directions:
        directions["mean_centred"] = build("mean_centred", model, [layer], target=target,
                                           sample_size=cfg.sample_size, max_length=cfg.max_length).at(layer)
    # Matched damage first (forward passes): it places the coefficients generation runs at. The
    # propensities of the steerability grid and of the matched coefficients are one pass over the
    # same story pairs (one unsteered row for both).
    curves = damage_curves(scorer, directions, layer=layer, position=position, general=general_eval, unit=unit,
                           grid=cfg.damage_grid, max_length=cfg.eval_length, stop_at=cfg.matched_level)
    chosen = {n: matched_coefficient(cfg.damage_grid[:len(curves[n].ratios)], curves[n].ratios, cfg.matched_level)
              for n in directions}
    grid_edit = grid_conditions(scorer, [vec.at(layer) for vec in vecs.values()], cfg.coefficients, layer=layer,
                                position=position, unit=unit)
    pairs = story_pairs(scorer, targets_text, others_text)
    propensity = propensities(scorer, pairs, Intervention.concat([
        grid_edit, matched_conditions(scorer, directions, chosen, layer=layer, position=position, unit=unit)]))
    each = slopes_from(propensity[:grid_edit.n_rows], cfg.coefficients, len(vecs), other_index=pairs.other_index)
    matched = matched_rows(curves, chosen, propensity[grid_edit.n_rows:] - propensity[0], grid=cfg.damage_grid,
                           level=cfg.matched_level)
    matched_out += [{"target": target, "layer": layer, "position": position, **row} for row in matched
                    if row["condition"] in vecs]
    at = {row["condition"]: [row["coefficient"]] for row in matched} if cfg.generate_at == "matched" else {
        m: gen_coefs for m in directions}
    # The conditions, one row each: (method, coefficient, instruction prefix) beside their steering rows.
    conditions: list[tuple[str, float, str]] = [("none", 0.0, "")]
    edits = [Intervention.plain(1, layer, position)]
    for method in vecs:
        conditions += [(method, c, "") for c in at[method]]
        edits.append(rows(model, directions[method], at[method], layer=layer, scale=unit, position=position))
    prefix = instruction_prefix(model, target, cfg.prompting_style) if cfg.baselines else ""
    if "prompting" in cfg.baselines:
        conditions.append(("prompting", 0.0, prefix))
        edits.append(Intervention.plain(1, layer, position))
    if "prompting_steered" in cfg.baselines:
        conditions += [("prompting_steered", c, prefix) for c in at["mean_centred"]]
        edits.append(rows(model, directions["mean_centred"], at["mean_centred"], layer=layer, scale=unit,
                          position=position))
    edit = Intervention.concat(edits)  # one row per condition
    # Generation: every condition x prompt in one batched greedy call (prompting rows with their prefix).
    ids = steered_generate(generator or model, [pre + p for (_, _, pre) in conditions for p in prompts],
                           edit.repeat_each(len(prompts)), max_new_tokens=cfg.max_new_tokens, do_sample=False)
    texts = [model.tokenizer.decode(r, skip_special_tokens=True) for r in ids]
    concept = judge.concept_score(texts, target, min_accuracy=cfg.min_judge_accuracy)
    # Fluency after the neutral prompt alone, for every condition (the prefix is not part of the text).
    ppl = completion_perplexity(scorer, [p for _ in conditions for p in prompts], ids)
    plain = ids[:len(prompts)]
    plain_rows = [i for i, cond in enumerate(conditions) if not cond[2]]
    asked_rows = [i for i, cond in enumerate(conditions) if cond[2]]
    rel: list[list[float]] = [[] for _ in conditions]  # [condition][prompt]
    for part, texts_in in ((plain_rows, prompts), (asked_rows, [prefix + p for p in prompts])):
        if part:
            got = relevance(scorer, texts_in, plain, edit.select(part))
            for i, values in zip(part, got):
                rel[i] = values
    # Damage of the vector on general text; a prompting row's instruction is not measured there. At the
    # matched coefficients it is the damage curve's own value there (the level, where it was reached), not
    # measured a second time; generated at the grid's coefficients, it is measured.
    missing = {"perplexity_ratio": float("nan"), "kl": float("nan")}
    damage = [missing] * len(conditions)
    if cfg.generate_at == "matched":
        for i in plain_rows:
            name, c, _ = conditions[i]
            ratio, kl = (1.0, 0.0) if name == "none" else curves[name].at(cfg.damage_grid, c)
            damage[i] = {"perplexity_ratio": ratio, "kl": kl}
    else:
        scored = steered_text_scores(scorer, general_eval, edit.select(plain_rows), max_length=cfg.eval_length)
        for i, d in zip(plain_rows, scored):
            damage[i] = d
    vocab = evaluation_vocabulary(target)
    per_cond: list[list[dict[str, Any]]] = []
    for i, (method, c, _) in enumerate(conditions):
        block = []
        for j in range(len(prompts)):
            k = i * len(prompts) + j
            block.append({"target": target, "condition": method, "layer": layer, "position": position,
                          "coefficient": c, "prompt_id": j, "text": texts[k], "concept": concept[k],
                          "perplexity": ppl[k], "distinct": distinct_n(ids[k], 2),
                          "relevance_logprob": rel[i][j], "vocab_rate": vocab_rate(texts[k], vocab)})
        per_cond.append(block)
    for block in per_cond:
        for j, row in enumerate(block):
            units = to_unit(row, per_cond[0][j])
            row.update(units, score=harmonic_score(units["concept"], units["fluency"], units["relevance"]))
    for i, (method, c, _) in enumerate(conditions):
        block = per_cond[i]
        delta = [r["concept"] - b["concept"] for r, b in zip(block, per_cond[0])]
        cell_rows.append({
            "target": target, "condition": method, "layer": layer, "position": position, "coefficient": c,
            "concept": float(np.mean([r["concept"] for r in block])),
            "concept_delta": float(np.mean(delta)), "concept_delta_ci": list(bootstrap_mean_ci(delta)),
            "score": float(np.mean([r["score"] for r in block])),
            "fluency": float(np.mean([r["fluency"] for r in block])),
            "relevance": float(np.mean([r["relevance"] for r in block])),
            "distinct": float(np.nanmean([r["distinct"] for r in block])) if any(
                math.isfinite(r["distinct"]) for r in block) else float("nan"),
            "completion_perplexity": float(np.nanmean([r["perplexity"] for r in block])),
            "vocab_rate": float(np.mean([r["vocab_rate"] for r in block])),
            "perplexity_ratio": damage[i]["perplexity_ratio"], "kl": damage[i]["kl"],
        })
        completions.extend(block)
    for name, s in zip(vecs, each):
        steer_rows.append({"target": target, "condition": name, "layer": layer, "position": position,
                           **s.summary(), "slopes": [float(x) for x in s.slopes],
                           "propensity": [[float(x) for x in row] for row in s.propensity],  # [sample][coefficient]
                           "propensity_ci_by_coefficient": {
                               c: list(bootstrap_mean_ci(s.propensity[:, k])) for k, c in enumerate(s.coefficients)}})
    return {"rows": cell_rows, "completions": completions, "steerability": steer_rows, "bias": bias_rows,
            "matched": matched_out}


def frontier(rows: Sequence[Mapping[str, Any]], method: str, *, effect: str = "concept_delta",
             damage: str = "perplexity_ratio") -> list[dict[str, Any]]:
    """The effect-damage Pareto frontier of one method: the best ``effect`` reached at each
    damage level, as points sorted by damage, each better than every point before it.

    Example:
        >>> frontier(result.rows, "mean_centred")  # [{'damage': 1.02, 'effect': 0.05, 'row': {...}}, ...]
    """
    points = sorted((r for r in rows if r["condition"] == method and math.isfinite(r[damage])
                     and math.isfinite(r[effect])), key=lambda r: (r[damage], -r[effect]))
    out: list[dict[str, Any]] = []
    for r in points:
        if not out or r[effect] > out[-1]["effect"]:
            out.append({"damage": r[damage], "effect": r[effect], "row": dict(r)})
    return out


def _for_target(completions: Sequence[Mapping[str, Any]], target: str) -> list[Mapping[str, Any]]:
    return [c for c in completions if c["target"] == target]


def _prompt_key(target: str, prompt_id: Any) -> str:
    return f"{target}:{prompt_id}"


def summarise(result: CompareResult, *, baselines: Sequence[str] = ("mean_centred", "random"),
              seed: int = 0) -> dict[str, Any]:
    """The answer: per target and pooled over targets, each condition's held-out AxBench score
    (coefficient chosen on the selection prompts, scored on the report prompts, bootstrap CI)
    and its paired differences from each baseline method on the same report prompts.

    Pooled: each target keeps its own chosen coefficient; report prompts of every target are
    pooled as ``target:prompt`` units.
    """
    split = result.split
    targets = sorted({c["target"] for c in result.completions})
    per_target: dict[str, Any] = {}
    pooled_scores: dict[tuple[str, int, str], dict[Any, float]] = {}
    for t in targets:
        comp = _for_target(result.completions, t)
        scores = heldout_scores(comp, split, seed=seed)
        diffs = {b: differences_against(comp, split, b, seed=seed) for b in baselines
                 if any(c["condition"] == b for c in comp)}
        per_target[t] = {"heldout": [asdict(s) for s in scores], "differences": diffs}
        choice = choose_coefficient(comp, split.selection)
        for cond, coef in choice.items():
            by_prompt = per_prompt(comp, cond, coef, split.report)
            pooled_scores.setdefault(cond, {}).update({_prompt_key(t, p): v for p, v in by_prompt.items()})
    pooled: list[dict[str, Any]] = []
    for cond, unit_scores in pooled_scores.items():
        values = np.array(list(unit_scores.values()))
        pooled.append({"condition": cond[0], "layer": cond[1], "position": cond[2], "mean": float(values.mean()),
                       "ci": list(bootstrap_mean_ci(values, seed=seed)), "n_prompts": len(values)})
    pooled.sort(key=lambda r: -float(r["mean"]))
    pooled_diffs: dict[str, list[dict[str, Any]]] = {}
    for b in baselines:
        out = []
        for cond, unit_scores in sorted(pooled_scores.items()):
            base = (b, cond[1], cond[2])
            if cond[0] == b or base not in pooled_scores or set(pooled_scores[base]) != set(unit_scores):
                continue
            d = paired_difference(unit_scores, pooled_scores[base], seed=seed)
            out.append({"condition": cond[0], "layer": cond[1], "position": cond[2], "baseline": b,
                        "difference": d.mean, "difference_ci": list(d.ci), "excludes_zero": d.excludes_zero})
        pooled_diffs[b] = out
    return {"per_target": per_target, "pooled": pooled, "pooled_differences": pooled_diffs,
            "contrasts": contrast_summary(result, seed=seed)}


def contrast_samples(result: CompareResult) -> dict[str, list[Sample]]:
    """The per-sample values the pre-registered contrasts pair: steerability slopes (one per held-out
    story pair, the same stories for every construction at a target, layer and position), propensity
    shifts at matched damage (the same story pairs) and held-out AxBench scores (one per report prompt, each condition at the coefficient it chose on
    the selection prompts)."""
    steer = samples_from_lists([r for r in result.steerability if r.get("slopes") is not None],
                               values="slopes")
    score_rows = []
    for t in sorted({c["target"] for c in result.completions}):
        comp = _for_target(result.completions, t)
        for cond, coef in choose_coefficient(comp, result.split.selection).items():
            for prompt, value in per_prompt(comp, cond, coef, result.split.report).items():
                score_rows.append({"target": t, "condition": cond[0], "layer": cond[1], "position": cond[2],
                                   "sample_id": prompt, "value": value})
    matched = samples_from_lists([r for r in result.matched if r.get("shifts")], values="shifts")
    return {"steerability": steer, "matched": matched, "score": samples_from_dicts(score_rows)}


def contrast_summary(result: CompareResult, *, seed: int = 0) -> dict[str, Any]:
    """Per measure: the registration (the fixed list, margins, alpha, power), every contrast's
    estimate, CI, MDD and Holm-corrected verdict per target and pooled, their sentences, and the one
    "best of N" claim allowed: chosen on the selection half of the samples, tested on the other,
    among the methods (the unsteered model, ``none``, is a control, not a candidate)."""
    out: dict[str, Any] = {}
    for measure, samples in contrast_samples(result).items():
        if not samples:
            continue
        results = run_contrasts(samples, measure=measure)
        block: dict[str, Any] = {"registration": registration(measure=measure), "results": to_records(results),
                                 "conclusions": conclusions(results)}
        try:
            best = best_of(samples, baseline="random", measure=measure, seed=seed, exclude=("none",))
            block["best_of"] = {"chosen": list(best.chosen), "conclusion": conclusions([best.result])}
        except ValueError as err:  # too few samples to split, or no random control
            block["best_of"] = {"chosen": None, "conclusion": [f"best of N not tested: {err}"]}
        out[measure] = block
    return out


def config_dict(cfg: CompareConfig) -> dict[str, Any]:
    """The configuration as recorded in ``summary.json``, with the coefficient unit's statistics
    (:data:`steerlab.sets.UNIT`) that every coefficient in the run is a multiple of."""
    return {**cfg.model_dump(), "coefficient_unit": {"what": UNIT_LABEL, **UNIT.as_dict()}}
