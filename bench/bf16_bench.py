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

import inspect
from collections.abc import Sequence
from typing import Any

import steerlab as sl
import torch
from steerlab.replay import steered_logits_each
from steerlab.steer import steered_generate
from steerlab.tokens import encode

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
