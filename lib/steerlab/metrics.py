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
from .replay import steered_logits_each
from .tokens import Batch, encode

__all__ = ["completion_perplexity", "steered_text_scores"]


@torch.inference_mode()
def completion_perplexity(model: Model, prompts: Sequence[str], completions: Sequence[Sequence[int]],
                          *, batch_size: int = 32) -> list[float]:
    """Perplexity of each completion's tokens given its prompt, under the unsteered model.

    A completion with no tokens (or a prompt with none) gets ``nan``. Completions of
    one prompt share its forward pass: a sweep's rows (one prompt, many
    coefficients or methods) run the prompt once per ``batch_size`` completions and
    repeat its key-value cache for them, so only completion tokens are recomputed;
    identical completions of one prompt are scored once.

    Example:
        >>> completion_perplexity(model, ["Hi"], [model.tokenizer(" there")["input_ids"]])
    """
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    tok = model.tokenizer
    out = [float("nan")] * len(prompts)
    # prompt -> distinct completion -> the rows that have it: a sweep's weak conditions
    # often reproduce the unsteered completion, which is scored once.
    by_prompt: dict[str, dict[tuple[int, ...], list[int]]] = {}
    for i, p in enumerate(prompts):
        if len(completions[i]):
            by_prompt.setdefault(p, {}).setdefault(tuple(int(t) for t in completions[i]), []).append(i)
    for prompt, distinct in by_prompt.items():
        rows = [same[0] for same in distinct.values()]
        pid = tok(prompt, add_special_tokens=False)["input_ids"]
        if not pid:
            continue
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            head = model.hf(input_ids=torch.tensor([pid]), use_cache=True)
            first = head.logits[0, -1].float().log_softmax(-1)  # [vocab], predicts each first token
            cache = head.cache
            cache.batch_repeat_interleave(len(chunk))
            width = max(len(completions[i]) for i in chunk)
            ids = torch.full((len(chunk), width), tok.pad_token_id or 0, dtype=torch.long)
            real = torch.zeros_like(ids, dtype=torch.bool)
            for j, i in enumerate(chunk):  # right padding: pads follow every real token
                ids[j, :len(completions[i])] = torch.tensor(list(completions[i]))
                real[j, :len(completions[i])] = True
            mask = torch.cat([torch.ones(len(chunk), len(pid), dtype=torch.long), real.long()], dim=1)
            position_ids = (len(pid) + torch.arange(width)).expand(len(chunk), width)
            logits = model.hf(input_ids=ids, attention_mask=mask, position_ids=position_ids,
                              cache=cache, use_cache=True).logits.float()  # [chunk, width, vocab]
            logp = torch.cat([first.expand(len(chunk), 1, -1), logits[:, :-1].log_softmax(-1)], dim=1)
            token_logp = logp.gather(-1, ids[..., None])[..., 0].masked_fill(~real, 0.0)  # [chunk, width]
            nll = -token_logp.sum(1) / real.sum(1)
            for j, i in enumerate(chunk):
                for k in distinct[tuple(int(t) for t in completions[i])]:
                    out[k] = float(nll[j].exp())
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
    # The plain pass comes first from steered_logits_each, with None or without.
    each = steered_logits_each(model, batch, [None, *additions], layer=layer, position=position)
    base_logp, base_tok, mask = _token_logprobs(next(each), batch)
    n_tok = mask.sum()
    base_nll = float(-base_tok.sum() / n_tok)
    base_p = base_logp.exp()
    results = []
    for add, logits in zip(additions, each):
        if add is None:
            results.append({"nll": base_nll, "perplexity_ratio": 1.0, "logprob_shift": 0.0, "kl": 0.0})
            continue
        logp, tok_lp, _ = _token_logprobs(logits, batch)
        nll = float(-tok_lp.sum() / n_tok)
        kl = float(((base_p * (base_logp - logp)).sum(-1) * mask).sum() / n_tok)
        results.append({"nll": nll, "perplexity_ratio": float(torch.tensor(nll - base_nll).exp()),
                        "logprob_shift": base_nll - nll, "kl": kl})
    return results
