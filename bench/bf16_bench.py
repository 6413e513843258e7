"""Section 7: bfloat16 against float32 on the CPU, speed and the agreement that matters.

Both copies of the embedded model are loaded in the benchmark process: the float32
one the other sections use and a bfloat16 one (``load_model(dtype=torch.bfloat16)``;
a separately loaded float32 copy cast with ``hf.to(torch.bfloat16)`` if ``load_model``
has no ``dtype``). Every variant pair runs interleaved in the same rounds.

Agreement, per measurement:

- statistics: per layer, the relative error of the mean's norm and the cosine between
  the two means (steerlab accumulates in float64 in both cases; the activations
  themselves are bfloat16 in one);
- steered generation (greedy): the share of rows whose tokens equal float32's;
- block replay: the largest logit difference over real positions (and relative to the
  largest float32 logit);
- lens: whether each vector's top-1 token is the same, how much the top-10 sets overlap,
  and whether the top-10 lists are identical (near-ties swap places in bfloat16).

The steering additions are plain tensors (``steered_generate``), because a
``SteeringVector`` records the float32 model's fingerprint and is refused by the
bfloat16 copy (as it should be: the weights differ).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import steerlab as sl
import torch
from benchutil import cpu_flags, has_bf16_units, log
from steerlab.replay import steered_logits_each
from steerlab.steer import steered_generate
from steerlab.tokens import encode
from sweep_bench import make_vector_cached

# The thresholds the decision rule in bench/README.md uses.
STATS_MAX_NORM_REL_ERR = 0.01
STATS_MIN_COSINE = 0.999
GREEDY_MIN_EQUAL_SHARE = 0.75
LENS_MIN_TOP10_OVERLAP = 0.9  # and every top-1 token equal; exact lists are reported too
MIN_SPEEDUP = 1.3


def load_bf16() -> tuple[sl.Model, str]:
    """The embedded model in bfloat16, and how it was made."""
    if "dtype" in inspect.signature(sl.load_model).parameters:
        return sl.load_model(dtype=torch.bfloat16, progress=False), "load_model(dtype=torch.bfloat16)"
    model = sl.load_model(progress=False)
    model.hf.to(torch.bfloat16)
    return model, "load_model() then hf.to(torch.bfloat16)"


def stats_texts(model: sl.Model, n: int, length: int) -> list[str]:
    """``n`` texts of at least ``length`` tokens (cut to ``length`` by the pass), each made of
    consecutive general-train paragraphs joined until it is long enough (most paragraphs are
    shorter than 128 tokens)."""
    out: list[str] = []
    current: list[str] = []
    for t in sl.load_dataset("general", "train").texts:
        current.append(t)
        joined = "\n\n".join(current)
        if len(model.tokenizer(joined, add_special_tokens=False)["input_ids"]) >= length:
            out.append(joined)
            current = []
            if len(out) == n:
                return out
    raise ValueError(f"general:train makes only {len(out)} texts of {length} tokens; asked for {n}")


def stats_pass(model: sl.Model, texts: Sequence[str], length: int) -> sl.ActivationStats:
    return sl.activation_stats(model, list(texts), None, cache=False, progress=False, batch_size=16,
                               max_length=length)


def stats_agreement(a: sl.ActivationStats, b: sl.ActivationStats) -> dict[str, Any]:
    """Per-layer relative error of the mean's norm and cosine of the means (a = float32)."""
    rel = ((b.norm_of_mean.double() - a.norm_of_mean.double()).abs() / a.norm_of_mean.double()).tolist()
    cos = torch.nn.functional.cosine_similarity(a.mean.double(), b.mean.double(), dim=-1).tolist()
    return {"layers": list(a.layers), "norm_rel_err": rel, "cosine": cos,
            "max_norm_rel_err": max(rel), "min_cosine": min(cos),
            "worst_layer_norm": a.layers[rel.index(max(rel))], "worst_layer_cosine": a.layers[cos.index(min(cos))]}


def greedy(model: sl.Model, prompts: Sequence[str], addition: torch.Tensor, layer: int, n: int) -> list[list[int]]:
    return steered_generate(model, list(prompts), [addition] * len(prompts), layer=layer, max_new_tokens=n,
                            do_sample=False)


def equal_share(a: list[list[int]], b: list[list[int]]) -> float:
    return sum(x == y for x, y in zip(a, b)) / len(a)


def replay(model: sl.Model, texts: Sequence[str], additions: Sequence[torch.Tensor | None], layer: int,
           length: int) -> int:
    """Every condition's logits, consumed and dropped (the timed work); returns how many."""
    batch = encode(model.tokenizer, list(texts), max_length=length)
    return sum(1 for _ in steered_logits_each(model, batch, list(additions), layer=layer))


def replay_agreement(a: sl.Model, b: sl.Model, texts: Sequence[str], additions: Sequence[torch.Tensor | None],
                     layer: int, length: int) -> dict[str, float]:
    """Largest logit difference of ``b``'s replay against ``a``'s, condition by condition
    (one condition's ``[texts, seq, vocab]`` logits at a time, not all of them)."""
    batch = encode(a.tokenizer, list(texts), max_length=length)
    mask = batch.attention_mask.bool()
    diff = scale = top1 = mean_diff = 0.0
    worst_position = -1
    n = 0
    positions = torch.arange(mask.shape[1]).expand_as(mask)[mask]  # the column of each real position
    for x, y in zip(steered_logits_each(a, batch, list(additions), layer=layer),
                    steered_logits_each(b, batch, list(additions), layer=layer)):
        x, y = x[mask], y[mask]  # [real positions, vocab]
        per_position = (x - y).abs().max(-1).values
        if float(per_position.max()) > diff:
            diff, worst_position = float(per_position.max()), int(positions[per_position.argmax()])
        mean_diff += float((x - y).abs().mean())
        scale = max(scale, float(x.abs().max()))
        top1 += float((x.argmax(-1) == y.argmax(-1)).float().mean())
        n += 1
    return {"max_abs_logit_diff": diff, "max_abs_logit": scale, "relative": diff / scale,
            "mean_abs_logit_diff": mean_diff / n, "worst_position": worst_position,
            "argmax_equal_share": top1 / n}


def lens_lists(model: sl.Model, vectors: dict[str, torch.Tensor], k: int = 10) -> dict[str, list[str]]:
    return {name: [t for t, _ in sl.top_tokens(model, v, k=k)] for name, v in vectors.items()}


def common_prefix_share(a: list[list[int]], b: list[list[int]]) -> float:
    """Mean share of each float32 row that bfloat16 reproduces before the first differing token."""
    shares = []
    for x, y in zip(a, b):
        same = next((i for i, (s, t) in enumerate(zip(x, y)) if s != t), min(len(x), len(y)))
        shares.append(same / max(len(x), 1))
    return sum(shares) / len(shares)


def bench_bf16(model: Any, P: dict[str, Any], repeats: int, out: dict[str, Any]) -> list:
    import steerlab as sl
    from benchutil import Row, interleaved, loadavg
    from bf16_bench import (
        GREEDY_MIN_EQUAL_SHARE,
        LENS_MIN_TOP10_OVERLAP,
        STATS_MAX_NORM_REL_ERR,
        STATS_MIN_COSINE,
        common_prefix_share,
        equal_share,
        greedy,
        lens_lists,
        load_bf16,
        replay,
        replay_agreement,
        stats_agreement,
        stats_pass,
        stats_texts,
    )

    sec = "7 bfloat16 vs float32 (CPU)"
    if not has_bf16_units():
        flags = cpu_flags()
        out["bf16"] = {"skipped": "no bfloat16 units", "cpu_flags": flags}
        return [Row(sec, "bfloat16 vs float32: statistics, replay, greedy generation, lens", None, "", status="SKIP",
                    note=(f"no bfloat16 units on this CPU (flags: {', '.join(flags) or 'none of avx512_bf16/amx'}): "
                          "torch emulates bfloat16 here (a 2048² matmul at 0.3 GFLOP/s on a 2-core AVX2 CPU, 176 in "
                          "float32), so every row would take minutes and measure only the emulation; the study "
                          "scores in float32 on such a CPU (steerlab.load.fast_dtype)"))]
    bf16, how = load_bf16()
    flags = cpu_flags()
    log(f"[bf16] bfloat16 copy by {how}; CPU flags: {', '.join(flags) or 'none of avx512_bf16/amx'}")
    res: dict[str, Any] = {"how": how, "cpu_flags": flags}
    out["bf16"] = res
    rows: list = []

    # statistics
    n, length = P["bf16_stats_texts"], P["bf16_stats_length"]
    texts = stats_texts(model, n, length)
    log(f"[bf16] statistics, all layers, {n} texts x {length} tokens, {repeats} rounds")
    t = interleaved({"fp32": lambda: stats_pass(model, texts, length),
                     "bf16": lambda: stats_pass(bf16, texts, length)}, repeats,
                    warmups={"fp32": lambda: stats_pass(model, texts[:2], 16),
                             "bf16": lambda: stats_pass(bf16, texts[:2], 16)}, log=log)
    agree = stats_agreement(t["fp32"].value, t["bf16"].value)
    tokens = n * length
    ratio = t["fp32"].median / t["bf16"].median
    ok = agree["max_norm_rel_err"] <= STATS_MAX_NORM_REL_ERR and agree["min_cosine"] >= STATS_MIN_COSINE
    res["stats"] = {"seconds": {k: v.seconds for k, v in t.items()}, "tokens": tokens, "agreement": agree}
    rows.append(Row(sec, f"statistics, all layers, {n} x {length} tokens: bf16 vs fp32", tokens / t["bf16"].median,
                    "tok/s", "fp32", tokens / t["fp32"].median, ratio, "x faster", "", "",
                    "activation_stats(cache=False), float64 accumulation in both", repeats=t["bf16"].seconds,
                    ratio_min=t["fp32"].min / t["bf16"].min))
    rows.append(Row(sec, "statistics agreement: max rel. error of |mean|, min cosine", agree["max_norm_rel_err"], "",
                    "min cosine", agree["min_cosine"], None, "",
                    f"<= {STATS_MAX_NORM_REL_ERR} and >= {STATS_MIN_COSINE}", "PASS" if ok else "MISS",
                    f"over layers 0..{model.n_layers}; worst |mean| at layer {agree['worst_layer_norm']}, "
                    f"worst cosine at layer {agree['worst_layer_cosine']}"))

    # steered generation, greedy
    layer = model.n_layers // 5
    v = make_vector_cached(model, layer)
    add = 4.0 * v.at(layer)
    prompts_all = sl.load_dataset("prompts").texts
    N = P["bf16_gen_tokens"]
    res["gen"] = {"layer": layer, "coefficient_raw": 4.0, "max_new_tokens": N}
    for bs in P["bf16_gen_batches"]:
        prompts = prompts_all[:bs]
        log(f"[bf16] greedy steered generation, batch {bs}, {N} tokens, {repeats} rounds")
        runs: dict[str, Callable[[], Any]] = {
            "fp32": functools.partial(greedy, model, prompts, add, layer, N),
            "bf16": functools.partial(greedy, bf16, prompts, add, layer, N)}
        warm: dict[str, Callable[[], Any]] = {
            "fp32": functools.partial(greedy, model, prompts, add, layer, 2),
            "bf16": functools.partial(greedy, bf16, prompts, add, layer, 2)}
        t = interleaved(runs, repeats, warmups=warm, log=log)
        share = equal_share(t["fp32"].value, t["bf16"].value)
        prefix = common_prefix_share(t["fp32"].value, t["bf16"].value)
        ratio = t["fp32"].median / t["bf16"].median
        res["gen"][f"batch{bs}"] = {"seconds": {k: x.seconds for k, x in t.items()}, "equal_share": share,
                                    "common_prefix_share": prefix,
                                    "tokens": {k: x.value for k, x in t.items()}}
        rows.append(Row(sec, f"steered greedy generation, batch {bs}, {N} tokens: bf16 vs fp32", t["bf16"].median,
                        "s", "fp32", t["fp32"].median, ratio, "x faster", "", "",
                        f"steered_generate, layer {layer}, 4 x a Love-Hate vector, rows stop at EOS; rows with "
                        f"the same tokens as fp32: {share:.0%} (decision threshold {GREEDY_MIN_EQUAL_SHARE:.0%}); "
                        f"mean share of a row equal before the first difference: {prefix:.0%}",
                        repeats=t["bf16"].seconds, ratio_min=t["fp32"].min / t["bf16"].min))

    # block replay
    k, length = P["bf16_replay_conditions"], P["bf16_replay_length"]
    rtexts = sl.load_dataset("general", "heldout").texts[: P["bf16_replay_texts"]]
    adds = [None] + [float(c) * v.at(layer) for c in range(1, k + 1)]
    log(f"[bf16] block replay, {len(rtexts)} texts x {length} tokens, {k} conditions + plain, {repeats} rounds")
    t = interleaved({"fp32": lambda: replay(model, rtexts, adds, layer, length),
                     "bf16": lambda: replay(bf16, rtexts, adds, layer, length)}, repeats,
                    warmups={"fp32": lambda: replay(model, rtexts[:1], adds[:2], layer, 8),
                             "bf16": lambda: replay(bf16, rtexts[:1], adds[:2], layer, 8)}, log=log)
    agree_r = replay_agreement(model, bf16, rtexts, adds, layer, length)
    res["replay"] = {"seconds": {k2: x.seconds for k2, x in t.items()}, "agreement": agree_r}
    rows.append(Row(sec, f"block replay, {k + 1} conditions: bf16 vs fp32", t["bf16"].median, "s", "fp32",
                    t["fp32"].median, t["fp32"].median / t["bf16"].median, "x faster", "", "",
                    f"steered_logits_each from layer {layer}; max |logit diff| {agree_r['max_abs_logit_diff']:.3f} "
                    f"({agree_r['relative']:.1%} of the largest logit, {agree_r['max_abs_logit']:.1f}; at position "
                    f"{agree_r['worst_position']}), mean |diff| {agree_r['mean_abs_logit_diff']:.3f}; next-token "
                    f"argmax equal at {agree_r['argmax_equal_share']:.1%} of positions",
                    repeats=t["bf16"].seconds, ratio_min=t["fp32"].min / t["bf16"].min))

    # lens
    lens_layers = sorted({layer, model.n_layers // 2, (4 * model.n_layers) // 5})
    vecs: dict[str, Any] = {}
    for plus, minus in (("Love", "Hate"), ("Dragon", "Football")):
        cv = sl.counterbalanced(model, plus, minus, lens_layers, position="last", cache=False, progress=False)
        vecs.update({f"{plus}-{minus}@{la}": cv.at(la) for la in lens_layers})
    a, b = lens_lists(model, vecs), lens_lists(bf16, vecs)
    same = [name for name in vecs if a[name] == b[name]]
    overlap = sum(len(set(a[name]) & set(b[name])) for name in vecs) / (10 * len(vecs))
    top1 = sum(a[name][0] == b[name][0] for name in vecs)
    res["lens"] = {"fp32": a, "bf16": b, "equal": same, "top1_equal": top1, "top10_overlap": overlap}
    lens_ok = top1 == len(vecs) and overlap >= LENS_MIN_TOP10_OVERLAP
    rows.append(Row(sec, "lens: top-10 overlap with fp32's (top-1 all equal?)", overlap, "", "top-1 equal",
                    float(top1), None, "", f"top-1 all, >= {LENS_MIN_TOP10_OVERLAP:.0%}", "PASS" if lens_ok else "MISS",
                    f"{len(vecs)} vectors (counterbalanced pairs at layers {lens_layers}); top-1 equal {top1} of "
                    f"{len(vecs)}; identical top-10 lists {len(same)} of {len(vecs)}"))
    res["loadavg_end"] = loadavg()
    return rows
