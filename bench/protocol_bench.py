"""Section 8: the comparison protocol's throughput, in conditions per second.

Forward-only metrics (``steerlab.metrics.steered_text_scores``: one plain forward
records each block's inputs, then every condition replays only the blocks from the
steered layer up, ``steerlab.replay.steered_logits_each``) against the naive protocol:
one full steered forward per condition (``steerlab.steer.steered_logits``) scored the
same way. Generation-based metrics: one batched ``steered_generate`` over conditions x
prompts against one call per condition. Conditions are one (method, layer): the
unsteered control and ``n`` coefficients of one direction, in typical-norm units, as
``steerlab.study.compare.run_compare`` builds them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import steerlab as sl
import torch
from steerlab.metrics import _token_logprobs, steered_text_scores
from steerlab.steer import relative_addition, steered_generate, steered_logits
from steerlab.tokens import encode


def conditions(model: sl.Model, vector: sl.SteeringVector, layer: int, n: int) -> list[torch.Tensor | None]:
    """The unsteered control and ``n`` coefficients (0.0625, 0.125, ...) x the layer's typical norm."""
    typical = sl.typical_norm(model, layer)
    unit = relative_addition(vector.at(layer), typical, 1.0)
    return [None] + [0.0625 * 2 ** i * unit for i in range(n)]


@torch.inference_mode()
def naive_text_scores(model: sl.Model, texts: Sequence[str], additions: Sequence[torch.Tensor | None], *,
                      layer: int, max_length: int = 64) -> list[dict[str, float]]:
    """What ``steered_text_scores`` returns, from one full steered forward per condition."""
    batch = encode(model.tokenizer, list(texts), padding_side="right", max_length=max_length)
    base_logp, base_tok, mask = _token_logprobs(steered_logits(model, batch), batch)
    n_tok = mask.sum()
    base_nll = float(-base_tok.sum() / n_tok)
    base_p = base_logp.exp()
    out = []
    for add in additions:
        if add is None:
            out.append({"nll": base_nll, "perplexity_ratio": 1.0, "logprob_shift": 0.0, "kl": 0.0})
            continue
        logits = steered_logits(model, batch, [add] * len(texts), layer=layer, position="all_prompt")
        logp, tok_lp, _ = _token_logprobs(logits, batch)
        nll = float(-tok_lp.sum() / n_tok)
        kl = float(((base_p * (base_logp - logp)).sum(-1) * mask).sum() / n_tok)
        out.append({"nll": nll, "perplexity_ratio": float(torch.tensor(nll - base_nll).exp()),
                    "logprob_shift": base_nll - nll, "kl": kl})
    return out


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
