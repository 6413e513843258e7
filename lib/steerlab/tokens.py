"""Tokenizing text batches and choosing positions by rule.

Steerlab pads batches itself so it always knows where the real tokens are.
Position rules select which tokens count (for statistics) or receive a vector
(for steering); padding is never selected.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "STAT_POSITIONS",
    "STEER_POSITIONS",
    "Batch",
    "check_position",
    "encode",
    "position_mask",
]

# Statistics: which tokens of each text are averaged.
STAT_POSITIONS = ("all", "all_but_first", "first", "last")
# Steering: which positions receive the vector ("all" includes generated tokens).
STEER_POSITIONS = ("first", "all_prompt", "last_prompt", "all")


def check_position(rule: str, allowed: Sequence[str]) -> str:
    """Return ``rule`` if allowed, else raise a ``ValueError`` listing the choices."""
    if rule not in allowed:
        raise ValueError(f"unknown position rule {rule!r}; expected one of {', '.join(allowed)}")
    return rule


@dataclass
class Batch:
    """Token ids and attention mask, ``[batch, seq]`` each, padded on one side."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    padding_side: str

    def as_inputs(self) -> dict[str, torch.Tensor]:
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask}

    @property
    def lengths(self) -> torch.Tensor:
        return self.attention_mask.sum(dim=1)


def encode(
    tokenizer: Any,
    texts: Sequence[str],
    *,
    padding_side: str = "right",
    max_length: int | None = None,
) -> Batch:
    """Tokenize ``texts`` (no special tokens added) and pad them to one length.

    Right padding keeps every real token at the position it has unbatched, so
    batched statistics equal unbatched ones; generation pads on the left.

    Raises:
        ValueError: an empty list, or a text that yields no tokens.

    Example:
        >>> encode(tok, ["Love", "Hate is strong"]).input_ids.shape
        torch.Size([2, 3])
    """
    if len(texts) == 0:
        raise ValueError("no texts given: expected at least one non-empty string")
    rows: list[list[int]] = []
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"text {i} is empty: every prompt or text needs at least one token")
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if max_length is not None:
            ids = ids[:max_length]
        rows.append(list(ids))
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, ids in enumerate(rows):
        span = slice(0, len(ids)) if padding_side == "right" else slice(width - len(ids), width)
        input_ids[i, span] = torch.tensor(ids, dtype=torch.long)
        attention_mask[i, span] = 1
    return Batch(input_ids, attention_mask, padding_side)


def position_mask(attention_mask: torch.Tensor, rule: str) -> torch.Tensor:
    """Boolean ``[batch, seq]`` mask of the positions a rule selects.

    Works for left and right padding: "first" and "last" mean the first and last
    *real* token of each row. Steering rules "all_prompt" and "all" select every
    real prompt token (generated tokens are handled by the steering loop).
    """
    check_position(rule, STAT_POSITIONS + STEER_POSITIONS)
    real = attention_mask.bool()
    seq = real.shape[1]
    idx = torch.arange(seq).expand_as(real)
    first = torch.where(real, idx, seq).min(dim=1).values  # [batch]
    last = torch.where(real, idx, -1).max(dim=1).values
    if rule in ("all", "all_prompt"):
        return real
    if rule == "all_but_first":
        return real & (idx != first[:, None])
    if rule == "first":
        return idx == first[:, None]
    return idx == last[:, None]  # "last", "last_prompt"
