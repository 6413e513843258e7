"""Choosing the next token: sampling (temperature, top-k, top-p) with one random generator per
row, and :func:`decode`, a lean batched decoding loop (greedy or sampled) for steered generation.

:class:`NucleusSampler` runs as a logits processor inside a *greedy* ``generate``: it draws
the next token of each row itself and leaves only that token finite, so greedy decoding
picks it. Each row draws from its own ``torch.Generator``, seeded from ``(seed, row key)``,
so a row's sample depends on its prompt, its steering and the seed, never on which other
rows share the batch, and torch's global generator is never touched (the widget samples
from a worker thread).

:func:`decode` produces the tokens ``model.hf.generate`` produces (greedy, or with a
:class:`NucleusSampler` as its logits processor) without ``generate``'s per-step
machinery: the prompt's forward keeps only the last position's logits, each step takes
the arg-max (or the sampler's draw) of ``[batch, vocab]`` logits directly, and the loop
ends when every row has produced an end-of-sequence token. A steering scope
(:func:`steerlab.steer.steering_rows`) steers it as it steers ``generate``: every call
passes the growing 2D attention mask.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Sequence
from typing import Any

import torch

__all__ = ["CACHES", "NucleusSampler", "decode", "row_generators"]

CACHES = ("dynamic", "static")


def row_generators(seed: int, keys: Sequence[str]) -> list[torch.Generator]:
    """One CPU generator per row, seeded from ``seed`` and the row's key.

    Rows with equal keys get equal streams; give repeated samples distinct keys
    (``generate`` appends the sample's index).

    Example:
        >>> g = row_generators(0, ["Once upon a time|1.0|0"])
    """
    out = []
    for key in keys:
        digest = hashlib.blake2b(f"{int(seed)}\x1f{key}".encode(), digest_size=8).digest()
        out.append(torch.Generator().manual_seed(int.from_bytes(digest, "little") & (2**63 - 1)))
    return out


class NucleusSampler:
    """Sampling with temperature, top-k and top-p (nucleus), drawn among the top-k tokens only.

    ``filter`` keeps the same tokens as transformers' ``TemperatureLogitsWarper ->
    TopKLogitsWarper -> TopPLogitsWarper`` chain (equal up to float rounding; see
    ``tests/test_steer.py``). The distribution is the one transformers' sampler draws
    from, but neither the nucleus search nor the draw touches the whole vocabulary: on 2
    CPU cores with SmolLM2's 49k vocabulary, transformers' filter plus its softmax and
    multinomial over the vocabulary cost ~19 ms of a ~90 ms batch-8 step, this ~1 ms
    (``bench/README.md``). ``top_k=0`` keeps every token before top-p, as in transformers.

    Args:
        generators: one generator per row (:func:`row_generators`); ``None`` draws from a
            fresh unseeded generator (not reproducible).

    Example:
        >>> sampler = NucleusSampler(top_p=0.3, generators=row_generators(0, ["a", "b"]))
    """

    def __init__(self, temperature: float = 1.0, top_k: int = 50, top_p: float = 1.0,
                 generators: Sequence[torch.Generator] | None = None):
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if not (isinstance(top_k, int) and not isinstance(top_k, bool) and top_k >= 0):
            raise ValueError(f"top_k must be an integer >= 0 (0: no top-k), got {top_k!r}")
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        self.temperature, self.top_k, self.top_p = float(temperature), top_k, float(top_p)
        self.generators = list(generators) if generators is not None else None

    def _candidates(self, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores and vocabulary indices of the tokens that survive, ascending, ``-inf`` where dropped."""
        scores = scores.float()
        if self.temperature != 1.0:
            scores = scores / self.temperature
        vocab = scores.shape[-1]
        k = min(self.top_k, vocab) if self.top_k else vocab
        values, index = torch.topk(scores, k)  # descending
        if k < vocab:
            # transformers keeps every token tied with the k-th score: widen to include them.
            n = int((scores >= values[..., -1:]).sum(dim=-1).max())
            if n > k:
                values, index = torch.topk(scores, n)
                values = values.masked_fill(values < values[..., k - 1:k], -float("inf"))
        values, index = values.flip(-1), index.flip(-1)  # ascending, as transformers sorts
        if self.top_p < 1.0:
            drop = values.softmax(dim=-1).cumsum(dim=-1) <= 1 - self.top_p
            drop[..., -1] = False  # the most likely token always stays
            values = values.masked_fill(drop, -float("inf"))
        return values, index

    def filter(self, scores: torch.Tensor) -> torch.Tensor:
        """The filtered scores over the whole vocabulary (``-inf`` where a token cannot be drawn)."""
        values, index = self._candidates(scores)
        return torch.full_like(scores, -float("inf")).scatter(-1, index.to(scores.device), values.to(scores.dtype))

    def draw(self, scores: torch.Tensor) -> torch.Tensor:
        """The drawn token of each row, ``[batch, 1]`` vocabulary indices."""
        values, index = self._candidates(scores)
        probs = values.softmax(dim=-1).cpu()  # generators live on the CPU; [batch, n_candidates]
        if self.generators is None:
            picks = torch.multinomial(probs, 1)
        else:
            if len(self.generators) != probs.shape[0]:
                raise ValueError(f"{len(self.generators)} generators for a batch of {probs.shape[0]} rows")
            picks = torch.stack([torch.multinomial(p, 1, generator=g) for p, g in zip(probs, self.generators)])
        return index.gather(-1, picks.to(index.device))

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        drawn = self.draw(scores)
        return torch.full_like(scores, -float("inf")).scatter(-1, drawn, 0.0)


@torch.inference_mode()
def decode(
    hf: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    max_new_tokens: int,
    pad_token_id: int,
    eos_token_ids: Collection[int] = (),
    sampler: NucleusSampler | None = None,
    should_stop: Callable[[], bool] | None = None,
    cache: str = "dynamic",
) -> torch.Tensor:
    """New tokens of a left-padded batch, as ``hf.generate(...)[:, prompt_len:]`` returns them.

    Greedy (the arg-max of each step's logits) unless ``sampler`` is given, in which case
    each row's token is ``sampler.draw``'s. A row that has produced one of ``eos_token_ids``
    gets ``pad_token_id`` afterwards; the loop stops when every row has, after
    ``max_new_tokens`` steps, or when ``should_stop()`` (polled after each step) is True.
    The tokens equal ``generate``'s with ``do_sample=False`` (and the sampler as its logits
    processor): the same forward calls (the prompt, then one token a step with the key-value
    cache, position ids counted over real tokens), only the logits of the last position.

    Args:
        hf: a Hugging Face causal language model (``model.hf``).
        input_ids: ``[batch, prompt_len]`` token ids, padded on the left.
        attention_mask: ``[batch, prompt_len]``, 1 on real tokens.
        max_new_tokens: the most tokens to add to each row (>= 1).
        pad_token_id: the id written after a row's end-of-sequence token.
        eos_token_ids: the ids that end a row.
        sampler: draw each token with this sampler instead of taking the arg-max.
        should_stop: polled after each step; True ends decoding there.
        cache: ``"dynamic"`` (transformers' default, grows a step at a time) or ``"static"``
            (preallocated for ``prompt_len + max_new_tokens`` positions).

    Returns:
        ``[batch, steps]`` token ids, ``steps <= max_new_tokens``, on ``input_ids``' device.

    Example:
        >>> batch = encode(model.tokenizer, ["Once upon a time"], padding_side="left")
        >>> new = decode(model.hf, batch.input_ids, batch.attention_mask, max_new_tokens=8,
        ...              pad_token_id=model.tokenizer.pad_token_id, eos_token_ids={2})
    """
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
    if input_ids.dim() != 2 or attention_mask.shape != input_ids.shape:
        raise ValueError(f"input_ids {tuple(input_ids.shape)} and attention_mask {tuple(attention_mask.shape)} "
                         "must be the same [batch, prompt_len] shape")
    if cache not in CACHES:
        raise ValueError(f"unknown cache {cache!r}; expected one of {', '.join(CACHES)}")
    device = input_ids.device
    batch, prompt_len = input_ids.shape
    mask = attention_mask.long()
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)  # [batch, prompt_len], as generate counts them
    kv: Any = None
    if cache == "static":
        from transformers import StaticCache

        kv = StaticCache(config=hf.config, max_cache_len=prompt_len + max_new_tokens)
    eos = torch.tensor(sorted(eos_token_ids), dtype=torch.long, device=device)
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    out = torch.empty(batch, max_new_tokens, dtype=torch.long, device=device)
    ids = input_ids
    steps = 0
    for step in range(max_new_tokens):
        outputs = hf(input_ids=ids, attention_mask=mask, position_ids=positions, cache=kv, use_cache=True,
                     logits_to_keep=1)
        kv = outputs.cache
        logits = outputs.logits[:, -1]  # [batch, vocab]
        token = sampler.draw(logits).squeeze(-1) if sampler is not None else logits.argmax(-1)
        token = token.masked_fill(finished, pad_token_id)
        out[:, step] = token
        steps = step + 1
        if eos.numel():
            finished |= torch.isin(token, eos)
            if bool(finished.all()):
                break
        if should_stop is not None and should_stop():
            break
        if step + 1 < max_new_tokens:
            ids = token[:, None]
            mask = torch.cat([mask, mask.new_ones(batch, 1)], dim=1)
            positions = positions[:, -1:] + 1
    return out[:, :steps]
