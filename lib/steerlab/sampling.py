"""Sampling the next token (temperature, top-k, top-p) with one random generator per row.

:class:`NucleusSampler` runs as a logits processor inside a *greedy* ``generate``: it draws
the next token of each row itself and leaves only that token finite, so greedy decoding
picks it. Each row draws from its own ``torch.Generator``, seeded from ``(seed, row key)``,
so a row's sample depends on its prompt, its steering and the seed, never on which other
rows share the batch, and torch's global generator is never touched (the widget samples
from a worker thread).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch

__all__ = ["NucleusSampler", "row_generators"]


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
