"""Logit lens: read a vector or activation as scores over the vocabulary.

``logits = unembed(final_norm(x))`` (the norm is optional). Applied to the
output of the last block this reproduces the model's own logits, which the
tests check.
"""

from __future__ import annotations

import numbers

import torch

from .arch import final_norm_of, logit_softcap_of
from .models import Model
from .remote import Remote, RemoteModel
from .trace import nnsight_lens

__all__ = ["TopTokens", "lens_logits", "top_tokens", "topk_table"]


@torch.inference_mode()
def lens_logits(model: Model, x: torch.Tensor, *, apply_norm: bool = True, remote: Remote = False,
                dtype: torch.dtype | None = torch.float32) -> torch.Tensor:
    """Project ``x`` (``[..., d_model]``) through the final norm and the unembedding.

    The logits come in ``dtype`` (float32 by default); ``None`` keeps the model's own dtype
    (no float32 copy of a ``[positions, vocab]`` block, for callers that convert chunk by chunk).

    ``remote=True`` runs them on NDIF, for a model loaded with ``load_model(hub_id, remote=True)``
    (:func:`steerlab.trace.nnsight_lens`); ``remote="local"`` is nnsight's dry run of that.

    Example:
        >>> lens_logits(model, vector.at(18)).shape
        torch.Size([49152])
    """
    if x.shape[-1] != model.d_model:
        raise ValueError(f"expected a last dimension of {model.d_model}, got shape {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("cannot project a vector with NaN or inf")
    if remote or isinstance(model, RemoteModel):
        logits = nnsight_lens(model, x, apply_norm=apply_norm, remote=remote)
    else:
        h = x.to(model.device, next(model.hf.parameters()).dtype)
        if apply_norm:
            h = final_norm_of(model.hf)(h)
        logits = model.hf.get_output_embeddings()(h)
    cap = logit_softcap_of(model.hf)
    if cap is not None:
        logits = torch.tanh(logits / cap) * cap
    return logits if dtype is None else logits.to(dtype)


class TopTokens(list[tuple[str, float]]):
    """:func:`top_tokens`' answer: a list of ``(token, logit)`` pairs that prints as a small table
    (each token quoted, so a leading space shows; logits to two decimals)."""

    def __repr__(self) -> str:
        if not self:
            return "TopTokens([])"
        width = max(len(repr(t)) for t, _ in self)
        return "\n".join(f"{t!r:<{width}}  {v:8.2f}" for t, v in self)

    __str__ = __repr__


def top_tokens(model: Model, x: torch.Tensor, k: int = 10, *, apply_norm: bool = True,
               remote: Remote = False) -> TopTokens:
    """The ``k`` tokens a ``[d_model]`` vector promotes most, with their logits (a list of
    ``(token, logit)`` pairs that prints as a two-column table).

    Example:
        >>> [t for t, _ in top_tokens(model, vector.at(18), k=5)]
        [' dragon', ' magic', ...]
    """
    if x.dim() != 1:
        raise ValueError(f"top_tokens takes one [d_model] vector, got shape {tuple(x.shape)}")
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise ValueError(f"k must be an integer >= 1, got {k!r}")  # noqa: TRY004 - like every bad value here
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    logits = lens_logits(model, x, apply_norm=apply_norm, remote=remote)
    vocab = int(logits.shape[-1])
    if k > vocab:
        raise ValueError(f"k={k} is more than the {vocab} tokens of {model.name}'s vocabulary: "
                         f"expected 1..{vocab}")
    values, ids = logits.topk(int(k))
    return TopTokens((model.tokenizer.decode([int(i)]), float(v)) for i, v in zip(ids, values))


def topk_table(model: Model, vectors: dict[str, torch.Tensor], k: int = 8, *,
               apply_norm: bool = True, remote: Remote = False) -> dict[str, list[str]]:
    """Top-``k`` tokens per named vector: one column per name, as in the write-up's tables."""
    return {name: [t for t, _ in top_tokens(model, v, k, apply_norm=apply_norm, remote=remote)]
            for name, v in vectors.items()}
