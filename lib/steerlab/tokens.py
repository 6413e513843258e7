"""Tokenizing text batches and choosing positions by rule.

Steerlab pads batches itself so it always knows where the real tokens are.
Every text gets the special tokens its model's own tokenizer adds by default
(Gemma's ``<bos>``; SmolLM2's and GPT-2's tokenizers add none), and a
:class:`Batch` records which rows start with such an added BOS.

Position rules select which tokens count (for statistics) or receive a vector
(for steering); padding is never selected. "Real" tokens are all tokens that are
not padding, an added BOS included:

- ``all`` / ``all_prompt``: every real token;
- ``first``: the first real token (the BOS where the tokenizer adds one);
- ``all_but_first``: every real token but the first, so position 0 is left out
  whether it is a BOS (Gemma) or the first word, which on SmolLM2 is an
  attention sink with a residual norm in the hundreds;
- ``after_bos``: the first real token that is not an added BOS (equal to
  ``first`` where the tokenizer adds none); needs the batch's ``bos`` flags;
- ``last`` / ``last_prompt``: the last real token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = [
    "STAT_POSITIONS",
    "STEER_POSITIONS",
    "Batch",
    "added_bos_id",
    "check_fits",
    "check_position",
    "check_texts",
    "check_unicode",
    "encode",
    "leading_bos",
    "position_limit",
    "position_mask",
]

# Statistics: which tokens of each text are averaged.
STAT_POSITIONS = ("all", "all_but_first", "first", "last")
# Steering: which positions receive the vector ("all" includes generated tokens).
STEER_POSITIONS = ("first", "after_bos", "all_prompt", "last_prompt", "all")


def check_position(rule: str, allowed: Sequence[str]) -> str:
    """Return ``rule`` if allowed, else raise a ``ValueError`` listing the choices."""
    if rule not in allowed:
        raise ValueError(f"unknown position rule {rule!r}; expected one of {', '.join(allowed)}")
    return rule


def check_texts(texts: Sequence[str]) -> list[str]:
    """Return ``texts`` as a list, or raise a ``ValueError`` naming the first bad one.

    Any Unicode text is taken (emoji, right-to-left scripts, combining marks, NUL characters);
    a lone surrogate, which no tokenizer encodes, is refused.

    Example:
        >>> check_texts(["a", None])
        Traceback (most recent call last):
        ValueError: text 1 is None, not a string
    """
    if isinstance(texts, str):
        # ValueError, not TypeError: every bad text (empty, None, a bare string) is bad input alike.
        raise ValueError("expected a list of texts, got a single string: wrap it in a list")  # noqa: TRY004
    out = list(texts)
    if not out:
        raise ValueError("no texts given: expected at least one non-empty string")
    for i, text in enumerate(out):
        if not isinstance(text, str):
            raise ValueError(f"text {i} is {text!r} of type {type(text).__name__}, not a string")  # noqa: TRY004
        if not text.strip():
            raise ValueError(f"text {i} is empty: every prompt or text needs at least one token")
        check_unicode(text, f"text {i}")
    return out


def check_unicode(text: str, what: str) -> None:
    """Refuse a string that is not Unicode text: one holding a lone surrogate, which no tokenizer
    encodes (they fail with a bare ``TypeError``) and no file can hold as UTF-8.

    Raises:
        ValueError: naming ``what`` (``"text 3"``), the character and where it is.

    Example:
        >>> check_unicode("broken \\ud83d", "text 0")
        Traceback (most recent call last):
        ValueError: text 0 holds '\\ud83d' at character 7, half of a surrogate pair, ...
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(
            f"{what} holds {text[err.start]!r} at character {err.start}, half of a surrogate pair, which is not "
            "Unicode text (a file read with errors='surrogateescape', or a JSON '\\ud83d' without its pair); "
            "decode the source with errors='replace'") from None


def _check_count(name: str, value: int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1 or None, got {value!r}")
    return value


def position_limit(config: Any) -> int | None:
    """The number of positions a model can take, from its config, or ``None`` if it names none.

    GPT-2 has a learned table of ``n_positions`` and fails on longer inputs; rotary
    models name a ``max_position_embeddings`` they were trained for.

    Example:
        >>> position_limit(model.hf.config)
        8192
    """
    for attr in ("max_position_embeddings", "n_positions"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def check_fits(config: Any, lengths: Sequence[int] | torch.Tensor, *, what: str = "text",
               max_new_tokens: int = 0, names: Sequence[object] | None = None) -> None:
    """Refuse inputs the model cannot take: the one length check of every entry point.

    Each row's tokens plus ``max_new_tokens`` must fit the model's position limit
    (:func:`position_limit`; a model whose config names none takes anything). The error
    names what is too long -- ``max_new_tokens`` when the prompts fit alone, else the
    first text that does not -- and the limit, instead of an ``IndexError`` from inside
    the model.

    Args:
        config: the model's config (``model.hf.config``).
        lengths: tokens per row (special tokens included), e.g. :attr:`Batch.lengths`.
        what: what a row is, for the message (``"prompt"``, ``"text"``, ``"continuation"``).
        max_new_tokens: tokens generation will add after each row.
        names: how the message names each row (default: its index in ``lengths``).

    Raises:
        ValueError: naming the row or ``max_new_tokens`` and the limit.

    Example:
        >>> check_fits(model.hf.config, encode(tok, ["Hi"]).lengths, what="prompt", max_new_tokens=40)
    """
    limit = position_limit(config)
    if limit is None:
        return
    rows = [int(n) for n in (lengths.tolist() if isinstance(lengths, torch.Tensor) else lengths)]
    model = getattr(config, "model_type", "the model")
    for i, n in enumerate(rows):
        if n > limit:
            raise ValueError(f"{what} {i if names is None else names[i]} has {n} tokens, more than the {limit} positions {model} takes "
                             f"(its position limit); shorten it")
    longest = max(rows, default=0)
    if max_new_tokens and longest + max_new_tokens > limit:
        room = limit - longest
        raise ValueError(f"max_new_tokens={max_new_tokens} is too many: {model} takes {limit} positions and the "
                         f"longest {what} has {longest} tokens, so at most {room} new tokens fit"
                         + ("" if room > 0 else f"; shorten the {what}"))


@dataclass
class Batch:
    """Token ids and attention mask, ``[batch, seq]`` each, padded on one side.

    ``bos`` is ``[batch]`` bool: True where the row starts with a BOS token the
    tokenizer added (all False if not given). ``truncated`` is ``[batch]`` bool:
    True where ``max_length`` cut the row's tokens (all False if not given).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    bos: torch.Tensor = field(default=None, kw_only=True)  # type: ignore[assignment]
    truncated: torch.Tensor = field(default=None, kw_only=True)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.input_ids.dim() != 2 or self.input_ids.shape != self.attention_mask.shape:
            raise ValueError(
                f"input_ids {tuple(self.input_ids.shape)} and attention_mask "
                f"{tuple(self.attention_mask.shape)} must both be [batch, seq]"
            )
        rows = self.input_ids.shape[0]
        for name in ("bos", "truncated"):
            value = getattr(self, name)
            if value is None:
                setattr(self, name, torch.zeros(rows, dtype=torch.bool))
            elif not isinstance(value, torch.Tensor) or value.dtype != torch.bool or value.shape != (rows,):
                raise ValueError(f"Batch.{name} must be a bool tensor of shape [{rows}], got {value!r}")

    def as_inputs(self) -> dict[str, torch.Tensor]:
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask}

    @property
    def lengths(self) -> torch.Tensor:
        return self.attention_mask.sum(dim=1)

    def select(self, rule: str) -> torch.Tensor:
        """``position_mask(self.attention_mask, rule, self.bos)``: the ``[batch, seq]`` positions a rule selects."""
        return position_mask(self.attention_mask, rule, self.bos)


def _split_added(full: list[int], plain: list[int], i: int) -> tuple[int, int]:
    """How many tokens the tokenizer added before and after text ``i``'s own tokens."""
    extra = len(full) - len(plain)
    for lead in range(max(extra, 0) + 1):
        if full[lead:lead + len(plain)] == plain:
            return lead, extra - lead
    raise ValueError(
        f"text {i}: the tokenizer's special tokens are not a prefix or suffix of the text's own "
        f"tokens ({full} vs {plain}); steerlab cannot tell which tokens are the text"
    )


def encode(
    tokenizer: Any,
    texts: Sequence[str],
    *,
    padding_side: str = "right",
    max_length: int | None = None,
    max_positions: int | None = None,
) -> Batch:
    """Tokenize ``texts`` with the tokenizer's own special tokens and pad them to one length.

    Right padding keeps every real token at the position it has unbatched, so
    batched statistics equal unbatched ones; generation pads on the left.

    Args:
        tokenizer: a Hugging Face tokenizer; its default special tokens are added
            (a leading BOS is recorded in :attr:`Batch.bos`).
        texts: non-empty strings.
        padding_side: ``right`` or ``left``.
        max_length: keep each row's first ``max_length`` tokens, special tokens
            included (rows cut are flagged in :attr:`Batch.truncated`).
        max_positions: raise if a row (after ``max_length``) is longer: the
            model's position limit (:func:`position_limit`), for prompts that
            must not be cut.

    Raises:
        ValueError: an empty list, a text that is not a string or is blank, a bad
            ``max_length`` / ``max_positions`` / ``padding_side``, a row longer than
            ``max_positions``, or a tokenizer that adds more than one leading token.

    Example:
        >>> encode(tok, ["Love", "Hate is strong"]).input_ids.shape
        torch.Size([2, 3])
    """
    rows_text = check_texts(texts)
    _check_count("max_length", max_length)
    _check_count("max_positions", max_positions)
    if padding_side not in ("right", "left"):
        raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
    full_ids = tokenizer(rows_text)["input_ids"]
    plain_ids = tokenizer(rows_text, add_special_tokens=False)["input_ids"]
    rows: list[list[int]] = []
    bos: list[bool] = []
    truncated: list[bool] = []
    for i, (full, plain) in enumerate(zip(full_ids, plain_ids)):
        full = [int(t) for t in full]
        lead, _ = _split_added(full, list(plain), i)
        if lead > 1:
            raise ValueError(
                f"the tokenizer adds {lead} tokens before text {i} ({full[:lead]}); steerlab handles "
                "at most one leading BOS"
            )
        cut = max_length is not None and len(full) > max_length
        ids = full[:max_length] if cut else full
        if max_positions is not None and len(ids) > max_positions:
            raise ValueError(
                f"text {i} has {len(ids)} tokens, more than the {max_positions} positions the model "
                f"takes (max_positions); shorten it"
            )
        rows.append(ids)
        bos.append(lead == 1)
        truncated.append(cut)
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, ids in enumerate(rows):
        span = slice(0, len(ids)) if padding_side == "right" else slice(width - len(ids), width)
        input_ids[i, span] = torch.tensor(ids, dtype=torch.long)
        attention_mask[i, span] = 1
    return Batch(input_ids, attention_mask, bos=torch.tensor(bos, dtype=torch.bool),
                 truncated=torch.tensor(truncated, dtype=torch.bool))


def added_bos_id(tokenizer: Any) -> int | None:
    """The token id the tokenizer puts before every text by default, or ``None`` if it adds none.

    Example:
        >>> added_bos_id(gemma_tokenizer)  # 2, "<bos>"; None for SmolLM2 and GPT-2
        2
    """
    probe = "a"
    full = [int(t) for t in tokenizer(probe)["input_ids"]]
    plain = [int(t) for t in tokenizer(probe, add_special_tokens=False)["input_ids"]]
    lead, _ = _split_added(full, plain, 0)
    if lead > 1:
        raise ValueError(f"the tokenizer adds {lead} leading tokens ({full[:lead]}); steerlab handles at most one")
    return full[0] if lead == 1 else None


def leading_bos(tokenizer: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """``[batch]`` bool: rows whose first real token is the BOS this tokenizer adds.

    For code that sees only a model call's ``input_ids`` and ``attention_mask``
    (a forward hook), not the :class:`Batch`. All False for a tokenizer that adds
    no BOS, also where a text itself starts with the BOS token's text.

    Example:
        >>> position_mask(mask, "after_bos", leading_bos(tok, ids, mask))
    """
    bos_id = added_bos_id(tokenizer)
    real = attention_mask.bool()
    if bos_id is None:
        return torch.zeros(real.shape[0], dtype=torch.bool, device=real.device)
    seq = real.shape[1]
    idx = torch.arange(seq, device=real.device).expand_as(real)
    first = torch.where(real, idx, seq).min(dim=1).values.clamp_max(seq - 1)  # [batch]
    first_ids = input_ids.to(real.device).gather(1, first[:, None])[:, 0]
    return real.any(dim=1) & (first_ids == bos_id)


def position_mask(attention_mask: torch.Tensor, rule: str, bos: torch.Tensor | None = None) -> torch.Tensor:
    """Boolean ``[batch, seq]`` mask of the positions a rule selects.

    Works for left and right padding: "first" and "last" mean the first and last
    *real* (non-padding) token of each row, a BOS included. Steering rules
    "all_prompt" and "all" select every real prompt token (generated tokens are
    handled by the steering loop).

    Args:
        attention_mask: ``[batch, seq]``, 1 for real tokens.
        rule: one of :data:`STAT_POSITIONS` or :data:`STEER_POSITIONS`.
        bos: ``[batch]`` bool, rows starting with an added BOS (:attr:`Batch.bos`,
            or :func:`leading_bos`). Needed by ``after_bos`` only; a row that is a
            lone BOS has no ``after_bos`` position.

    Example:
        >>> position_mask(torch.tensor([[1, 1, 1, 0]]), "after_bos", torch.tensor([True])).int()
        tensor([[0, 1, 0, 0]], dtype=torch.int32)
    """
    check_position(rule, STAT_POSITIONS + STEER_POSITIONS)
    real = attention_mask.bool()
    rows, seq = real.shape
    idx = torch.arange(seq, device=real.device).expand_as(real)
    first = torch.where(real, idx, seq).min(dim=1).values  # [batch]
    last = torch.where(real, idx, -1).max(dim=1).values
    if rule in ("all", "all_prompt"):
        return real
    if rule == "all_but_first":
        return real & (idx != first[:, None])
    if rule == "first":
        return real & (idx == first[:, None])
    if rule == "after_bos":
        if bos is None:
            raise ValueError("position rule 'after_bos' needs bos= (Batch.bos or leading_bos(...))")
        if not isinstance(bos, torch.Tensor) or bos.dtype != torch.bool or bos.shape != (rows,):
            raise ValueError(f"bos must be a bool tensor of shape [{rows}], got {bos!r}")
        target = first + bos.to(device=real.device, dtype=torch.long)
        return real & (idx == target[:, None])
    return real & (idx == last[:, None])  # "last", "last_prompt"
