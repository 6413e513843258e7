"""How much a steered model moved towards a target, and how much it was damaged.

- effect: target-vocabulary rate of completions (see :mod:`steerlab.vocab`), and
  the log-probability shift of held-out target text under steering;
- damage: perplexity ratio and next-token KL divergence on general text with
  the vector applied, against the unsteered model;
- fluency: perplexity of completions under the unsteered model.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .models import Model
from .steer import steered_logits
from .tokens import Batch, encode

__all__ = ["completion_perplexity", "steered_text_scores"]


@torch.inference_mode()
def completion_perplexity(model: Model, prompts: Sequence[str], completions: Sequence[Sequence[int]],
                          *, batch_size: int = 16) -> list[float]:
    """Perplexity of each completion's tokens given its prompt, under the unsteered model.

    A completion with no tokens gets ``nan``.

    Example:
        >>> completion_perplexity(model, ["Hi"], [model.tokenizer(" there")["input_ids"]])
    """
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    tok = model.tokenizer
    out: list[float] = []
    for start in range(0, len(prompts), batch_size):
        rows, spans = [], []
        for p, c in zip(prompts[start:start + batch_size], completions[start:start + batch_size]):
            pid = tok(p, add_special_tokens=False)["input_ids"]
            rows.append(list(pid) + list(c))
            spans.append((len(pid), len(pid) + len(c)))
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), tok.pad_token_id or 0, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
        logp = model.hf(input_ids=ids, attention_mask=mask).logits.float().log_softmax(-1)  # [b, t, vocab]
        for i, (a, b) in enumerate(spans):
            if b == a or a == 0:
                out.append(float("nan"))
                continue
            targets = ids[i, a:b]
            nll = -logp[i, a - 1:b - 1].gather(-1, targets[:, None]).mean()
            out.append(float(nll.exp()))
    return out


def _token_logprobs(logits: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Log-probs of each next token and the mask of positions that have one."""
    logp = logits.log_softmax(-1)[:, :-1]  # [b, t-1, vocab]
    targets = batch.input_ids[:, 1:]
    mask = (batch.attention_mask[:, 1:] * batch.attention_mask[:, :-1]).bool()
    return logp, logp.gather(-1, targets[..., None])[..., 0].masked_fill(~mask, 0.0), mask


@torch.inference_mode()
def steered_text_scores(
    model: Model,
    texts: Sequence[str],
    additions: Sequence[torch.Tensor | None],
    *,
    layer: int,
    position: str = "all_prompt",
    max_length: int = 64,
) -> list[dict[str, float]]:
    """For each addition (one condition), scores of ``texts`` under steering:

    - ``nll``: mean next-token negative log-likelihood per token;
    - ``perplexity_ratio``: ``exp(nll - nll_unsteered)``;
    - ``logprob_shift``: mean per-token log-prob change against unsteered (``-(nll - nll_unsteered)``);
    - ``kl``: mean over positions of KL(unsteered || steered) of next-token distributions.

    A ``None`` addition gives ratio 1, shift 0 and KL 0 exactly (a zero vector,
    which runs through the steering path, gives them up to float error).
    """
    batch = encode(model.tokenizer, texts, padding_side="right", max_length=max_length)
    base_logits = steered_logits(model, batch)
    base_logp, base_tok, mask = _token_logprobs(base_logits, batch)
    n_tok = mask.sum()
    base_nll = float(-base_tok.sum() / n_tok)
    base_p = base_logp.exp()
    results = []
    for add in additions:
        if add is None:
            results.append({"nll": base_nll, "perplexity_ratio": 1.0, "logprob_shift": 0.0, "kl": 0.0})
            continue
        logits = steered_logits(model, batch, [add] * len(texts), layer=layer, position=position)
        logp, tok_lp, _ = _token_logprobs(logits, batch)
        nll = float(-tok_lp.sum() / n_tok)
        kl = float(((base_p * (base_logp - logp)).sum(-1) * mask).sum() / n_tok)
        results.append({"nll": nll, "perplexity_ratio": float(torch.tensor(nll - base_nll).exp()),
                        "logprob_shift": base_nll - nll, "kl": kl})
    return results
