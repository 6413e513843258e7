"""How much a text repeats itself: distinct-n, and the one rule that calls a completion a loop.

A loop ("was was was", "such such such") is very predictable, so its perplexity is low and a
perplexity-based damage measure misses it; the share of distinct n-grams drops towards
``1/k`` for a phrase repeated ``k`` times and catches it. :func:`repetition` is the rule the
library's :func:`steerlab.generate` warns by and the widget shows.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

__all__ = ["LOOP_DISTINCT", "distinct_n", "repetition"]

LOOP_DISTINCT = 0.4
"""distinct-2 under which a completion is called a loop. Seen on SmolLM2 (30 sampled tokens, top-p 0.3):
loops ("such such such", "lastlastlast") had distinct-2 0.03-0.28, fluent text 0.5-1.0."""

_WORD = re.compile(r"\w+|[^\w\s]")


def distinct_n(tokens: str | Sequence[int] | Sequence[str], n: int = 2) -> float:
    """Share of distinct n-grams among a text's n-grams: 1 for no repeat, low for loops.

    A string is split into lower-cased words and punctuation marks (``\\w+|[^\\w\\s]``);
    a sequence of token ids or of words is used as it is. A phrase of ``m`` tokens repeated
    ``k`` times has ``m`` distinct n-grams among ``k*m - n + 1``. Fewer than ``n`` tokens
    (an empty completion) give ``nan``: no n-gram, no rate.

    Example:
        >>> distinct_n("a maid, a maid, a maid", 2)  # 3 distinct of 7 bigrams
        0.42857142857142855
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    items: list[Any] = _WORD.findall(tokens.lower()) if isinstance(tokens, str) else list(tokens)
    grams = [tuple(items[i:i + n]) for i in range(len(items) - n + 1)]
    return len(set(grams)) / len(grams) if grams else float("nan")


def repetition(tokens: str | Sequence[int] | Sequence[str], *, threshold: float = LOOP_DISTINCT,
               n: int = 2, min_tokens: int = 8) -> float | None:
    """The completion's distinct-``n`` when it is a loop (under ``threshold``), else ``None``.

    Texts shorter than ``min_tokens`` are never called loops (too few n-grams to tell).

    Example:
        >>> repetition([5] * 20)
        0.05263157894736842
        >>> repetition("the cat sat on the mat and then it slept") is None
        True
    """
    items: Any = tokens
    count = len(_WORD.findall(items.lower())) if isinstance(items, str) else len(items)
    if count < min_tokens:
        return None
    value = distinct_n(tokens, n)
    return value if math.isfinite(value) and value < threshold else None
