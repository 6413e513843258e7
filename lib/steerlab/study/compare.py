"""The systematic experiment: which vector construction steers best for the least damage.

Methods (all for one target genre, built from training stories only):

- ``raw``: the genre mean;  ``mean_centred``: genre mean - general-text mean;
- ``isolated``: genre mean - mixed-stories mean;
- ``counterbalanced``: genre mean - another genre's mean;
- ``prompt_pair``: ActAdd-style single-prompt pair, the genre's name - a space
  (" fantasy" - " ");  ``word_pair``: the genre's name - the other genre's
  (" fantasy" - " sports"); both read after the BOS token (as ActAdd's
  TransformerLens code does, so not at SmolLM2's attention-sink position 0), at
  the pair's last position;
- ``random``: a random direction (the control).

Coefficients are comparable across methods: every vector is rescaled so the
added vector has norm ``coefficient x`` the layer's typical activation norm
(mean norm over general text, first token excluded).

Completions continue neutral story openings and, optionally, first halves of
held-out stories of the other genres. Per (method, layer, position, coefficient): effect (target-vocabulary rate of
completions minus the unsteered rate, with a bootstrap CI over completions; and
the log-probability shift on held-out target stories), selectivity (that shift
minus the same shift on general text: how much more the vector helps, or less it
hurts, target text than text in general), damage (perplexity ratio and
next-token KL on held-out general text), fluency (perplexity of the completions
under the unsteered model). Everything at one layer and position
that can share a generate call does.
"""

from __future__ import annotations

import math
import random as _random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, Self

import torch
from tqdm.auto import tqdm

from ..constructions import build, set_stats, typical_norm
from ..data import TextSet, genres, load_dataset
from ..metrics import completion_perplexity, steered_text_scores
from ..models import Model
from ..steer import relative_addition, steered_generate
from ..vectors import SteeringVector
from .vocab import evaluation_vocabulary, vocab_rate

__all__ = [
    "METHODS",
    "PRESETS",
    "TABLE_COLUMNS",
    "CompareConfig",
    "best_points",
    "best_table",
    "bootstrap_ci",
    "build_methods",
    "conclusion",
    "config_dict",
    "describe",
    "evaluation_prompts",
    "first_half",
    "format_cell",
    "run_compare",
]

METHODS = ("raw", "mean_centred", "isolated", "counterbalanced", "prompt_pair", "word_pair", "random")


@dataclass
class CompareConfig:
    """Everything the experiment depends on (the notebook's parameters)."""

    target: str = "fantasy"
    counter: str = "sports"
    methods: Sequence[str] = METHODS
    layers: Sequence[int] = (10, 15, 20)
    coefficients: Sequence[float] = (0.0625, 0.125, 0.25)
    positions: Sequence[str] = ("all_prompt",)
    n_prompts: int = 6
    n_story_prompts: int = 0
    n_heldout: int = 6
    n_general: int = 6
    max_new_tokens: int = 24
    seeds: Sequence[int] = (0,)
    do_sample: bool = False
    sample_size: int = 32
    max_length: int = 128
    eval_length: int = 64
    damage_threshold: float = 1.5

    @classmethod
    def from_preset(cls, preset: str = "default", **overrides: Any) -> Self:
        """A preset of :data:`PRESETS` with ``overrides`` over it; an override of ``None`` keeps
        the preset's value (so a notebook parameter left at ``None`` means "the preset's").

        Raises:
            ValueError: an unknown preset or field name (the message lists the known ones).

        Example:
            >>> CompareConfig.from_preset("quick", layers=[12]).layers
            [12]
        """
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; expected one of {', '.join(PRESETS)}")
        known = [f.name for f in fields(cls)]
        unknown = [k for k in overrides if k not in known]
        if unknown:
            raise ValueError(f"unknown CompareConfig fields {unknown}; fields: {', '.join(known)}")
        return cls(**{**PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}})


# Measured times on 2 CPU cores are in the README.
PRESETS: dict[str, dict[str, Any]] = {
    "quick": {"layers": [10], "coefficients": [0.5], "positions": ["all_prompt"], "n_prompts": 2,
              "n_story_prompts": 1, "n_heldout": 2, "n_general": 2, "max_new_tokens": 8, "do_sample": False,
              "seeds": [0], "sample_size": 6, "max_length": 48, "eval_length": 32},
    "default": {"layers": [8, 14, 20], "coefficients": [0.0625, 0.125, 0.25, 0.5], "positions": ["all_prompt"],
                "n_prompts": 8, "n_story_prompts": 3, "n_heldout": 6, "n_general": 6, "max_new_tokens": 32,
                "do_sample": False, "seeds": [0], "sample_size": 32, "max_length": 128, "eval_length": 48},
    "full": {"layers": [2, 8, 14, 20, 26], "coefficients": [0.03125, 0.0625, 0.125, 0.25, 0.5],
             "positions": ["first", "all_prompt"], "n_prompts": 8, "n_story_prompts": 4, "n_heldout": 13,
             "n_general": 12, "max_new_tokens": 48, "do_sample": True, "seeds": [0, 1], "sample_size": 52,
             "max_length": 128, "eval_length": 64},
}
"""``quick`` (the notebook test), ``default`` (``make run``) and ``full`` (the README's deep sweep)."""


def bootstrap_ci(values: Sequence[float], *, n: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean."""
    vals = [v for v in values if math.isfinite(v)]
    if not vals:
        return (float("nan"), float("nan"))
    rng = _random.Random(seed)
    means = sorted(sum(rng.choices(vals, k=len(vals))) / len(vals) for _ in range(n))
    lo = means[int((1 - level) / 2 * n)]
    hi = means[min(n - 1, int((1 + level) / 2 * n))]
    return (lo, hi)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")



def first_half(text: str) -> str:
    """The first half of a story, by words: a prompt the model continues (as the
    follow-up paper cut held-out stories in half)."""
    words = text.split()
    return " ".join(words[: max(1, len(words) // 2)])


def evaluation_prompts(cfg: CompareConfig) -> dict[str, list[str]]:
    """The prompts completions are generated from, by kind: ``opening`` (neutral story
    openings) and ``story_half`` (first halves of held-out stories of the other genres,
    so moving towards the target is a change of genre)."""
    sets = {"opening": load_dataset("prompts").sample(cfg.n_prompts, seed=0).texts}
    if cfg.n_story_prompts:
        mixed = load_dataset("mixed", "heldout")
        others = TextSet("other genres:heldout", tuple(r for r in mixed.records if r.genre != cfg.target))
        sets["story_half"] = [first_half(t) for t in others.sample(cfg.n_story_prompts, seed=0).texts]
    return {kind: prompts for kind, prompts in sets.items() if prompts}


def build_methods(model: Model, cfg: CompareConfig, *, progress: bool = True) -> dict[str, SteeringVector]:
    """One vector per method, at every layer in ``cfg.layers``, from training splits, through the
    construction registry (:func:`steerlab.constructions.build`): the counter set is the
    counterbalanced and word-pair methods' minus side; prompt pairs are the target's name
    against a space."""
    unknown = [m for m in cfg.methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; expected some of {METHODS}")
    for name in (cfg.target, cfg.counter):
        if name not in genres():
            raise ValueError(f"{name!r} is not a genre; genres: {genres()}")
    spec: dict[str, Any] = {"target": cfg.target, "counter": cfg.counter, "sample_size": cfg.sample_size,
                            "max_length": cfg.max_length}
    for name in (cfg.target, "general"):  # shows the progress of the slow first pass
        set_stats(model, name, sample_size=cfg.sample_size, max_length=cfg.max_length, progress=progress)
    return {method: build(method, model, list(cfg.layers), **spec) for method in cfg.methods}


def run_compare(model: Model, cfg: CompareConfig, *, progress: bool = True) -> list[dict[str, Any]]:
    """Run the sweep; one result row per (method, layer, position, coefficient).

    Coefficient 0 appears once per (layer, position) as method ``none`` (the
    unsteered control; its effect is 0 and its damage 1 / 0 by construction).
    """
    vectors = build_methods(model, cfg, progress=progress)
    vocab = evaluation_vocabulary(cfg.target)
    prompt_sets = evaluation_prompts(cfg)
    if not prompt_sets:
        raise ValueError("no prompts: set n_prompts or n_story_prompts to at least 1")
    n_rows = sum(len(ps) for ps in prompt_sets.values())
    heldout = load_dataset(cfg.target, "heldout").sample(cfg.n_heldout, seed=0).texts
    general_eval = load_dataset("general", "heldout").sample(cfg.n_general, seed=0).texts
    # Greedy decoding ignores the seed: one run, not copies of it that would shrink the CI.
    seeds = list(cfg.seeds) if cfg.do_sample else list(cfg.seeds)[:1]
    rows: list[dict[str, Any]] = []
    combos = [(la, pos) for la in cfg.layers for pos in cfg.positions]
    bar = tqdm(total=len(combos) * len(seeds) * len(prompt_sets), desc="compare generations",
               disable=not progress)
    for layer, position in combos:
        typical = typical_norm(model, layer, sample_size=cfg.sample_size, max_length=cfg.max_length)
        conditions: list[tuple[str, float, torch.Tensor | None]] = [("none", 0.0, None)]
        for method, vec in vectors.items():
            unit = relative_addition(vec.at(layer), typical, 1.0)
            for c in cfg.coefficients:
                conditions.append((method, float(c), c * unit))
        # Generation: every condition x prompt in one batched call per seed and prompt kind
        # (kinds apart, so short openings are not padded to the length of story halves).
        rates: dict[int, list[float]] = {i: [] for i in range(len(conditions))}
        kinds: list[str] = []  # the prompt kind of each entry of rates[i]
        fluency: dict[int, list[float]] = {i: [] for i in range(len(conditions))}
        for seed in seeds:
            for kind, prompts in prompt_sets.items():
                batch_prompts = [p for _ in conditions for p in prompts]
                additions = [add for (_, _, add) in conditions for _ in prompts]
                ids = steered_generate(model, batch_prompts, additions, layer=layer, position=position,
                                       max_new_tokens=cfg.max_new_tokens, seed=seed, do_sample=cfg.do_sample)
                ppl = completion_perplexity(model, batch_prompts, ids)
                for k, (row_ids, p) in enumerate(zip(ids, ppl)):
                    i = k // len(prompts)
                    rates[i].append(vocab_rate(model.tokenizer.decode(row_ids, skip_special_tokens=True), vocab))
                    fluency[i].append(p)
                kinds.extend([kind] * len(prompts))
                bar.update()
        damage = steered_text_scores(model, general_eval, [a for (_, _, a) in conditions], layer=layer,
                                     position=position, max_length=cfg.eval_length)
        shift = steered_text_scores(model, heldout, [a for (_, _, a) in conditions], layer=layer,
                                    position=position, max_length=cfg.eval_length)
        base = rates[0]
        for i, (method, c, _) in enumerate(conditions):
            effects = [r - b for r, b in zip(rates[i], base)]  # paired by prompt and seed
            lo, hi = bootstrap_ci(effects)
            by_kind = {kind: _mean([e for e, k in zip(effects, kinds) if k == kind]) for kind in prompt_sets}
            good = [f for f in fluency[i] if math.isfinite(f)]
            rows.append({
                "method": method, "layer": layer, "position": position, "coefficient": c,
                "effect": _mean(effects), "effect_ci": [lo, hi], "effect_by_prompt_kind": by_kind,
                "vocab_rate": _mean(rates[i]),
                "logprob_shift": shift[i]["logprob_shift"],
                # Target text gains against general text: a vector that only damages scores ~0 here.
                "selectivity": shift[i]["logprob_shift"] - damage[i]["logprob_shift"],
                "perplexity_ratio": damage[i]["perplexity_ratio"], "kl": damage[i]["kl"],
                "fluency_perplexity": _mean(good),
            })
    bar.close()
    assert all(len(r) == n_rows * len(seeds) for r in rates.values())
    return rows


def best_points(rows: Sequence[dict[str, Any]], threshold: float, key: str = "effect") -> list[dict[str, Any]]:
    """Per method, the row with the highest ``key`` whose perplexity ratio stays under ``threshold``."""
    best: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r["method"] == "none" or not r["perplexity_ratio"] <= threshold:
            continue
        if r["method"] not in best or r[key] > best[r["method"]][key]:
            best[r["method"]] = r
    return sorted(best.values(), key=lambda r: -r[key])


TABLE_COLUMNS = ("method", "layer", "position", "coefficient", "effect", "effect_ci", "effect_by_prompt_kind",
                 "logprob_shift", "selectivity", "perplexity_ratio", "kl", "fluency_perplexity")


def format_cell(value: Any) -> str:
    """A result-row value as table text: 3 decimals, CIs as ``[lo, hi]``, dicts as ``k v, ...``."""
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, float) for v in value):
        return f"[{value[0]:.3f}, {value[1]:.3f}]"
    if isinstance(value, dict):
        return ", ".join(f"{k} {format_cell(v)}" for k, v in value.items())
    return str(value)


def best_table(rows: Sequence[dict[str, Any]]) -> dict[str, list[str]]:
    """Columns of a best-operating-point table (:func:`best_points` rows), formatted."""
    return {c: [f"{r[c]:g}" if c == "coefficient" else format_cell(r[c]) for r in rows] for c in TABLE_COLUMNS}


def config_dict(cfg: CompareConfig) -> dict[str, Any]:
    return asdict(cfg)


def describe(config: Mapping[str, Any]) -> str:
    """What a run swept, in one line, from :func:`config_dict` (or ``summary.json``'s copy)."""
    c = config
    decoding = f"sampled decoding, seeds {list(c['seeds'])}" if c["do_sample"] else "greedy decoding"
    return (f"target {c['target']}, layers {list(c['layers'])}, coefficients {list(c['coefficients'])} x typical norm, "
            f"positions {list(c['positions'])}, {c['n_prompts']} story openings and {c['n_story_prompts']} story halves "
            f"as prompts, {decoding}")


def conclusion(model_name: str, config: Mapping[str, Any], rows: Sequence[dict[str, Any]]) -> list[str]:
    """The plain-language conclusion of a run, sentence by sentence, from its numbers only."""
    threshold, target = config["damage_threshold"], config["target"]
    best = best_points(rows, threshold)
    best_sel = best_points(rows, threshold, key="selectivity")
    lines = [f"Model {model_name}, {describe(config)}, damage threshold {threshold}."]
    if best:
        b = best[0]
        lines.append(f"Best within the damage threshold: {b['method']} (layer {b['layer']}, ×{b['coefficient']}, "
                     f"{b['position']}): effect {b['effect']:.3f} [{b['effect_ci'][0]:.3f}, {b['effect_ci'][1]:.3f}], "
                     f"perplexity ratio {b['perplexity_ratio']:.2f}.")
        overlap = [r["method"] for r in best[1:] if r["effect_ci"][1] >= b["effect_ci"][0]]
        if overlap:
            lines.append(f"Its confidence interval overlaps those of {', '.join(overlap)}: with this sample size the "
                         "ranking among them is not settled.")
        mc = next((r for r in best if r["method"] == "mean_centred"), None)
        cb = next((r for r in best if r["method"] == "counterbalanced"), None)
        if mc and cb:
            lines.append(f"Mean-centred against counterbalanced: effect {mc['effect']:.3f} vs {cb['effect']:.3f} at "
                         f"perplexity ratios {mc['perplexity_ratio']:.2f} vs {cb['perplexity_ratio']:.2f}.")
    else:
        lines.append("No method stayed under the damage threshold at any swept setting.")
    missing = [m for m in config["methods"] if m not in {r["method"] for r in best}]
    if missing:
        lines.append(f"Never under the damage threshold: {', '.join(missing)}.")
    rnd = [r["effect"] for r in rows if r["method"] == "random"]
    if rnd:
        lines.append(f"The random control's largest effect was {max(rnd):.3f}.")
    if best_sel:
        top = best_sel[0]
        lines.append(f"By selectivity (held-out {target} log-prob shift minus general-text shift, no CI), the best "
                     f"within the threshold was {top['method']} (layer {top['layer']}, ×{top['coefficient']}): "
                     f"{top['selectivity']:+.3f} nats/token; "
                     + "; ".join(f"{r['method']} {r['selectivity']:+.3f}" for r in best_sel[1:]) + ".")
    return lines
