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
from benchutil import has_bf16_units, log
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


def bench_protocol(model: Any, P: dict[str, Any], repeats: int, out: dict[str, Any]) -> list:
    import steerlab as sl
    from benchutil import Row, interleaved
    from protocol_bench import (
        batched_generation,
        conditions,
        max_score_diff,
        naive_text_scores,
        per_condition_generation,
        replayed_text_scores,
    )

    sec = "8 comparison protocol"
    layer = model.n_layers // 2
    v = sl.counterbalanced(model, "Love", "Hate", [layer], position="last", cache=False, progress=False)
    adds = conditions(model, v, layer, P["protocol_conditions"])
    n_cond = len(adds)
    texts = sl.load_dataset("general", "heldout").texts[: P["protocol_texts"]]
    log(f"[protocol] forward metrics: {n_cond} conditions (control + {n_cond - 1} coefficients) at layer {layer}, "
        f"{len(texts)} texts x 64 tokens, {repeats} rounds")
    t = interleaved({"replay": lambda: replayed_text_scores(model, texts, adds, layer=layer),
                     "naive": lambda: naive_text_scores(model, texts, adds, layer=layer)}, repeats,
                    warmups={"replay": lambda: replayed_text_scores(model, texts[:1], adds[:2], layer=layer,
                                                                    max_length=8),
                             "naive": lambda: naive_text_scores(model, texts[:1], adds[:2], layer=layer,
                                                                max_length=8)}, log=log)
    diff = max_score_diff(t["replay"].value, t["naive"].value)
    res: dict[str, Any] = {"layer": layer, "conditions": n_cond,
                           "forward": {"seconds": {k: x.seconds for k, x in t.items()}, "max_score_diff": diff}}
    out["protocol"] = res
    rows = [Row(sec, "forward metrics: steered_text_scores (replay) vs a full forward each",
                n_cond / t["replay"].median, "cond/s", "full forward each", n_cond / t["naive"].median,
                t["naive"].median / t["replay"].median, "x faster", "", "",
                f"{n_cond} conditions of one (method, layer) on {len(texts)} general texts; layer {layer} of "
                f"{model.n_layers}, so replay skips {layer} blocks per condition; max |score diff| {diff:.1e}",
                repeats=t["replay"].seconds, ratio_min=t["naive"].min / t["replay"].min)]

    prompts = sl.load_dataset("prompts").sample(P["protocol_prompts"], seed=0).texts
    N = P["protocol_tokens"]
    log(f"[protocol] generation metrics: {n_cond} conditions x {len(prompts)} prompts, {N} greedy tokens, "
        f"{repeats} rounds")
    t = interleaved({"batched": lambda: batched_generation(model, prompts, adds, layer=layer, n=N),
                     "per condition": lambda: per_condition_generation(model, prompts, adds, layer=layer, n=N)},
                    repeats,
                    warmups={"batched": lambda: batched_generation(model, prompts, adds, layer=layer, n=2),
                             "per condition": lambda: per_condition_generation(model, prompts, adds[:1],
                                                                               layer=layer, n=2)}, log=log)
    same = t["batched"].value == t["per condition"].value
    res["generation"] = {"seconds": {k: x.seconds for k, x in t.items()}, "same_tokens": same,
                         "prompts": len(prompts), "max_new_tokens": N}
    rows.append(Row(sec, "generation metrics: one batched call vs one call per condition",
                    n_cond / t["batched"].median, "cond/s", "one call per condition",
                    n_cond / t["per condition"].median, t["per condition"].median / t["batched"].median,
                    "x faster", "", "",
                    f"steered_generate over {n_cond} conditions x {len(prompts)} prompts (batch "
                    f"{n_cond * len(prompts)}) vs {n_cond} calls of batch {len(prompts)}; greedy, {N} tokens; "
                    f"same tokens: {same}",
                    repeats=t["batched"].seconds, ratio_min=t["per condition"].min / t["batched"].min))

    # The comparison's forward-pass scores in bfloat16 (CompareConfig.score_dtype="auto" on a CPU
    # with bfloat16 units) against float32, on one cell of the default preset.
    from protocol_bench import (
        SCORE_MAX_PPL_RATIO_REL_ERR,
        SCORE_MAX_STEER_DIFF_OF_CI,
        cell_inputs,
        cell_scores,
        score_agreement,
    )
    from steerlab.load import cast, fast_dtype

    cell = cell_inputs(model, methods=P["protocol_cell_methods"])
    if P["protocol_cell_general"]:
        cell["general"] = cell["general"][:P["protocol_cell_general"]]
        cell["targets"], cell["others"] = cell["targets"][:2], cell["others"][:2]
    if not has_bf16_units():
        rows.append(Row(sec, "comparison cell's forward-pass scores: bfloat16 vs float32", None, "s", status="SKIP",
                        note=("no bfloat16 units on this CPU: bfloat16 is emulated (minutes a row), and the "
                              "comparison scores in float32 here (score_dtype='auto', steerlab.load.fast_dtype)")))
    else:
        half = cast(model, "bfloat16")
        log(f"[protocol] one comparison cell ({len(cell['vectors'])} methods, {len(cell['additions'])} conditions, "
            f"layer {cell['layer']}): forward-pass scores bfloat16 vs float32, {repeats} rounds")
        small = {**cell, "general": cell["general"][:1], "targets": cell["targets"][:1], "others": cell["others"][:1]}
        t = interleaved({"bfloat16": lambda: cell_scores(half, cell), "float32": lambda: cell_scores(model, cell)},
                        repeats, log=log, warmups={"bfloat16": lambda: cell_scores(half, small),
                                                   "float32": lambda: cell_scores(model, small)})
        agree = score_agreement(t["bfloat16"].value, t["float32"].value)
        ratio = t["float32"].median / t["bfloat16"].median
        res["cell_scores"] = {"seconds": {k: x.seconds for k, x in t.items()}, **agree,
                              "fast_dtype_here": str(fast_dtype(model.device)),
                              "values": {k: x.value for k, x in t.items()}}
        rows.append(Row(sec, "comparison cell's forward-pass scores: bfloat16 vs float32", t["bfloat16"].median, "s",
                        "float32", t["float32"].median, ratio, "x faster",
                        f">= 1.00x and agrees (steerability within {SCORE_MAX_STEER_DIFF_OF_CI:.2f} CI half-widths, "
                        f"perplexity ratio within {SCORE_MAX_PPL_RATIO_REL_ERR:.0%})",
                        "PASS" if ratio >= 1.0 and agree["agrees"] else "MISS",
                        f"steerability_each + steered_text_scores of {len(cell['vectors'])} methods at layer "
                        f"{cell['layer']}, position all; largest steerability difference "
                        f"{agree['steer_diff_of_ci']:.3f} CI half-widths, perplexity ratio "
                        f"{agree['ppl_ratio_rel_err']:.1%}, KL {agree['kl_abs_diff']:.3f} nats; fast_dtype here: "
                        f"{fast_dtype(model.device)}",
                        repeats=t["bfloat16"].seconds, ratio_min=t["float32"].min / t["bfloat16"].min))

    # Steerability's two continuations of an opening from one packed sequence (4D mask), against
    # every row alone, on the dtype the comparison scores in.
    from protocol_bench import steer_agreement, steer_scores

    scorer = cast(model, fast_dtype(model.device))
    log(f"[protocol] steerability of the cell ({len(cell['vectors'])} methods, {scorer.dtype}): shared openings "
        f"vs one row each, {repeats} rounds")
    t = interleaved({"shared": lambda: steer_scores(scorer, cell, share_openings=True),
                     "alone": lambda: steer_scores(scorer, cell, share_openings=False)}, repeats, log=log,
                    warmups={"shared": lambda: steer_scores(scorer, small, share_openings=True),
                             "alone": lambda: steer_scores(scorer, small, share_openings=False)})
    diff = steer_agreement(t["shared"].value, t["alone"].value)
    ratio = t["alone"].median / t["shared"].median
    res["steer_shared_openings"] = {"seconds": {k: x.seconds for k, x in t.items()}, "steer_diff_of_ci": diff,
                                    "dtype": str(scorer.dtype), "values": {k: x.value for k, x in t.items()}}
    rows.append(Row(sec, "steerability: shared openings vs one row each", t["shared"].median, "s",
                    "one row each", t["alone"].median, ratio, "x faster",
                    f">= 1.00x and steerability within {SCORE_MAX_STEER_DIFF_OF_CI:.2f} CI half-widths",
                    "PASS" if ratio >= 1.0 and diff <= SCORE_MAX_STEER_DIFF_OF_CI else "MISS",
                    f"steerability_each of {len(cell['vectors'])} methods at layer {cell['layer']}, position all, "
                    f"{scorer.dtype}; largest difference {diff:.4f} CI half-widths",
                    repeats=t["shared"].seconds, ratio_min=t["alone"].min / t["shared"].min))
    return rows
