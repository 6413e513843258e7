"""Section 8: the comparison protocol's throughput, in conditions per second.

Forward-only metrics (``steerlab.metrics.steered_text_scores``: one plain forward
records each block's inputs, then every condition replays only the blocks from the
steered layer up, ``steerlab.replay.steered_logits_each``) against the naive protocol:
one full steered forward per condition (``steerlab.steer.steered_logits``) scored the
same way. Generation-based metrics: one batched ``steered_generate`` over conditions x
prompts against one call per condition. Conditions are one (method, layer): the
unsteered control and ``n`` coefficients of one direction, in units of the centred norm (the coefficient unit), as
``steerlab.study.compare.run_compare`` builds them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import steerlab as sl
import torch
from steerlab.logprobs import steered_text_scores, text_scores
from steerlab.steer import added_vector, steered_generate, steered_logits
from steerlab.tokens import encode


def conditions(model: sl.Model, vector: sl.SteeringVector, layer: int, n: int) -> list[torch.Tensor | None]:
    """The unsteered control and ``n`` coefficients (0.0625, 0.125, ...) x the layer's centred norm (the unit)."""
    unit = sl.unit_norm(model, layer)
    return [None] + [added_vector(vector.at(layer), 0.0625 * 2 ** i, unit) for i in range(n)]


@torch.inference_mode()
def naive_text_scores(model: sl.Model, texts: Sequence[str], additions: Sequence[torch.Tensor | None], *,
                      layer: int, max_length: int = 64) -> list[dict[str, float]]:
    """What ``steered_text_scores`` returns, from one full steered forward per condition (scored
    by the same ``steerlab.logprobs.text_scores``)."""
    batch = encode(model.tokenizer, list(texts), padding_side="right", max_length=max_length)
    each = (steered_logits(model, batch, None if a is None else [a] * len(texts), layer=layer, position="all_prompt")
            for a in [None, *(a for a in additions if a is not None)])
    return text_scores(batch, each, additions)


def replayed_text_scores(model: sl.Model, texts: Sequence[str], additions: Sequence[torch.Tensor | None], *,
                         layer: int, max_length: int = 64) -> list[dict[str, float]]:
    return steered_text_scores(model, list(texts), list(additions), layer=layer, max_length=max_length)


def max_score_diff(a: list[dict[str, float]], b: list[dict[str, float]]) -> float:
    return max(abs(x[k] - y[k]) for x, y in zip(a, b) for k in ("nll", "kl", "logprob_shift"))


def batched_generation(model: sl.Model, prompts: Sequence[str], adds: Sequence[torch.Tensor | None], *,
                       layer: int, n: int) -> list[list[int]]:
    """One ``steered_generate`` over conditions x prompts (run_compare's call)."""
    rows = [p for _ in adds for p in prompts]
    return steered_generate(model, rows, [a for a in adds for _ in prompts], layer=layer, position="all_prompt",
                            max_new_tokens=n, do_sample=False)


def per_condition_generation(model: sl.Model, prompts: Sequence[str], adds: Sequence[torch.Tensor | None], *,
                             layer: int, n: int) -> list[list[int]]:
    out: list[list[int]] = []
    for a in adds:
        out += steered_generate(model, list(prompts), [a] * len(prompts), layer=layer, position="all_prompt",
                                max_new_tokens=n, do_sample=False)
    return out


def compare_quick_config() -> Any:
    """The comparison's own ``quick`` preset (the notebook test's size) as a ``CompareConfig``."""
    from steerlab.study.compare import PRESETS, CompareConfig

    return CompareConfig(**PRESETS["quick"])


# Pre-registered agreement for scoring the comparison in bfloat16 (section 8): every method's
# steerability within this share of its float32 CI half-width, every perplexity ratio within
# this relative error.
SCORE_MAX_STEER_DIFF_OF_CI = 0.10
SCORE_MAX_PPL_RATIO_REL_ERR = 0.05


def cell_inputs(model: sl.Model, target: str = "fantasy", methods: Sequence[str] = ("raw", "mean_centred",
                "counterbalanced")) -> dict[str, Any]:
    """One cell of the comparison's ``default`` preset (middle layer, position ``all``), with
    ``methods`` only: their vectors, the unit norm, the general texts and steerability texts."""
    from steerlab.study import compare

    cfg = compare.CompareConfig.from_preset("default", targets=[target], positions=["all"], methods=list(methods))
    layer = cfg.resolved_layers(model)[0]
    vecs = compare.build_vectors(model, cfg, target, [layer], progress=False)
    unit = sl.unit_norm(model, layer)
    adds = [None] + [added_vector(v.at(layer), c, unit) for v in vecs.values()
                     for c in cfg.generation_coefficients]
    return {"cfg": cfg, "layer": layer, "vectors": vecs, "unit": unit, "additions": adds,
            "general": sl.load_dataset("general", "heldout").sample(cfg.n_general, seed=0).texts,
            "targets": compare._heldout_target(target, cfg.n_steer), "others": compare._others(target, cfg.n_steer)}


def steer_scores(scorer: sl.Model, cell: dict[str, Any], *, share_openings: bool = True) -> dict[str, Any]:
    """The cell's steerability of each method on ``scorer`` (mean, CI, per-sample slopes), its
    two continuations of an opening scored from one packed sequence or each row alone."""
    from steerlab.metrics import steerability_each

    cfg, layer = cell["cfg"], cell["layer"]
    steer = steerability_each(scorer, [v.at(layer) for v in cell["vectors"].values()], layer=layer,
                              target_texts=cell["targets"], other_texts=cell["others"],
                              coefficients=cfg.coefficients, position="all", unit=cell["unit"],
                              share_openings=share_openings)
    return {m: (s.mean, list(s.ci), s.slopes.tolist()) for m, s in zip(cell["vectors"], steer)}


def cell_scores(scorer: sl.Model, cell: dict[str, Any]) -> dict[str, Any]:
    """The cell's forward-pass scores on ``scorer``: steerability of each method, damage of each condition."""
    damage = steered_text_scores(scorer, cell["general"], cell["additions"], layer=cell["layer"], position="all",
                                 max_length=cell["cfg"].eval_length)
    return {"steerability": steer_scores(scorer, cell),
            "perplexity_ratio": [d["perplexity_ratio"] for d in damage], "kl": [d["kl"] for d in damage]}


def steer_agreement(fast: dict[str, Any], reference: dict[str, Any]) -> float:
    """The largest steerability difference between two :func:`steer_scores`, in the reference's
    CI half-widths."""
    return max(abs(fast[m][0] - ref[0]) / ((ref[1][1] - ref[1][0]) / 2) for m, ref in reference.items())


def score_agreement(fast: dict[str, Any], reference: dict[str, Any]) -> dict[str, float]:
    """How far ``fast`` scores sit from ``reference``'s, in the units the rule above uses."""
    steer = steer_agreement(fast["steerability"], reference["steerability"])
    ppl = max(abs(a / b - 1) for a, b in zip(fast["perplexity_ratio"], reference["perplexity_ratio"]))
    kl = max(abs(a - b) for a, b in zip(fast["kl"], reference["kl"]))
    return {"steer_diff_of_ci": steer, "ppl_ratio_rel_err": ppl, "kl_abs_diff": kl,
            "agrees": steer <= SCORE_MAX_STEER_DIFF_OF_CI and ppl <= SCORE_MAX_PPL_RATIO_REL_ERR}
