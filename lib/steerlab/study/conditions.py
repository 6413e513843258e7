"""The study's nouns, each written once: its targets, the conditions it compares and its sample rules.

What notebook 04 compares is a **condition**: the unsteered model (:data:`UNSTEERED`), a
construction of the registry (:data:`CONSTRUCTIONS_COMPARED`, a vector at a coefficient), or
a prompting baseline (:data:`PROMPTING`: the model is asked). Rows, samples, tables and figures
key on ``"condition"``; summaries written before 2026-12-07 said ``"method"``
(:func:`condition_of` reads both). Every list of names elsewhere (the contrasts' "every
construction", the figures' colour keys) is derived from here, and the tests check they are.

Also here: :data:`TARGETS` (each target set and its counter genre), :func:`target_names` (every
set a target can be) and :data:`STATS_SAMPLE` (texts and tokens per set statistic, the
library's default, :data:`steerlab.sets.STATS_SAMPLE`). The rule for a steerability grid
(0, a negative and a positive coefficient) is the library's
(:func:`steerlab.metrics.check_steerability_grid`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..constructions import CONSTRUCTIONS
from ..data import genres
from ..metrics import check_steerability_grid
from ..sets import STATS_SAMPLE

__all__ = [
    "CONDITIONS",
    "CONSTRUCTIONS_COMPARED",
    "CONSTRUCTIONS_UNDER_TEST",
    "NO_VECTOR",
    "PROMPTING",
    "STATS_SAMPLE",
    "TARGETS",
    "UNSTEERED",
    "check_steerability_grid",
    "condition_of",
    "layer_at",
    "shown_once",
    "target_names",
]

TARGETS: dict[str, str] = {"fantasy": "sports", "science_fiction": "western", "romance": "horror",
                           "horror": "romance", "shakespeare": "sports"}
"""Each target set of the comparison and its counter genre (the minus side of ``counterbalanced`` and
``word_pair``)."""

UNSTEERED = "none"
"""The unsteered model: the control every condition's change is measured from."""

CONSTRUCTIONS_COMPARED: tuple[str, ...] = tuple(CONSTRUCTIONS)
"""The registry's constructions of a style or topic (a set of texts against a reference): the ones notebook 04
compares. Task vectors (:data:`steerlab.constructions.TASK_CONSTRUCTIONS`, notebook 06) answer their own question."""

PROMPTING: dict[str, str] = {
    "prompting": "no vector: the prompt is prefixed with an instruction naming the target "
                 "(chat template on an instruction-tuned model, a plain prefix on a base model)",
    "prompting_steered": "the same instruction, and the mean-centred vector added at the same coefficients",
}
"""The prompting baselines of the comparison, with a one-line description each
(:mod:`steerlab.study.prompting`)."""

CONDITIONS: tuple[str, ...] = (UNSTEERED, *CONSTRUCTIONS_COMPARED, *PROMPTING)
"""Every condition a comparison row can hold, in the order tables and legends show them."""

CONSTRUCTIONS_UNDER_TEST: tuple[str, ...] = tuple(c for c in CONDITIONS if c not in (UNSTEERED, "random"))
""""Every construction" of the contrasts (f) against ``random`` and (g) against ``prompting``: the
constructions compared and the prompting baselines."""


NO_VECTOR: tuple[str, ...] = (UNSTEERED, "prompting")
"""Conditions without a steering vector: their completions are the same at every layer and position."""


def shown_once(rows: Sequence[Mapping[str, Any]], *, value: str = "mean") -> list[Mapping[str, Any]]:
    """``rows`` with each condition of :data:`NO_VECTOR` kept once (its first row) where all its rows hold the
    same ``value``: the unsteered and prompting completions do not change with the cell, so a table or figure
    shows them once, not once per (layer, position).

    Example:
        >>> [r["condition"] for r in shown_once([{"condition": "none", "mean": 0.2}, {"condition": "none", "mean": 0.2},
        ...                                      {"condition": "raw", "mean": 0.3}])]
        ['none', 'raw']
    """
    out, seen = [], set()
    for r in rows:
        name = condition_of(r)
        if name in NO_VECTOR:
            same = {round(float(x[value]), 9) for x in rows if condition_of(x) == name}
            if len(same) == 1:
                if name in seen:
                    continue
                seen.add(name)
        out.append(r)
    return out


def target_names() -> list[str]:
    """Every set a target can be: the genres found in ``data/``, and ``shakespeare``.

    Example:
        >>> "shakespeare" in target_names()
        True
    """
    return [*genres(), "shakespeare"]


def condition_of(row: Mapping[str, Any]) -> str:
    """The condition a row holds, from ``"condition"`` or, in summaries written before the rename,
    ``"method"``.

    Example:
        >>> condition_of({"method": "raw"}), condition_of({"condition": "raw"})
        ('raw', 'raw')
    """
    if "condition" in row:
        return str(row["condition"])
    if "method" in row:
        return str(row["method"])
    raise KeyError(f"row has no 'condition' (or older 'method') field; its fields: {', '.join(map(str, row))}")


def layer_at(n_layers: int, depth: float) -> int:
    """The residual layer at ``depth`` (a fraction of a model's ``n_layers``), the one rule of notebooks 04 and
    06: ``round(depth x n_layers)``, kept between the first block's output (1) and the last block's input.

    Example:
        >>> layer_at(30, 0.5), layer_at(18, 0.65), layer_at(30, 0.0)
        (15, 12, 1)
    """
    return min(n_layers - 1, max(1, round(depth * n_layers)))
