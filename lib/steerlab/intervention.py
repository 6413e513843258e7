"""Where and how a steering edit is applied: :class:`Intervention`, the one edit function.

An intervention is a layer, one addition (and for the ablating operators one unit
direction) per batch row, an operator and a position rule. :func:`steerlab.steer.rows` is the
one public way to make one from a vector and coefficients; :meth:`Intervention.concat` and
:meth:`Intervention.repeat_each` lay several vectors' rows out for a batch of prompts, and the
scores read each row as one condition (:meth:`Intervention.conditions`). :meth:`Intervention.apply`
edits a ``[batch, seq, d_model]`` residual; the steering scope's hook
(:mod:`steerlab.steer`), the nnsight traces (:mod:`steerlab.trace`), block replay
(:mod:`steerlab.replay`) and the scores (:mod:`steerlab.metrics`) all call it, so the
edit is written once. A row whose addition is ``None`` and whose direction is ``None``
is left exactly as it was, under every operator: that is the unsteered row.

Operators: ``add`` (``h + a``), ``ablate`` (project the direction ``u`` out of ``h``),
``ablate_then_add`` (``h - (h.u)u + a``). Positions: :data:`steerlab.tokens.STEER_POSITIONS`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .models import Model
from .tokens import STEER_POSITIONS, Batch, check_position, position_mask

__all__ = ["OPERATORS", "Intervention", "addition_tensor", "check_row", "row_intervention"]

OPERATORS = ("add", "ablate", "ablate_then_add")


def check_row(model: Model, t: torch.Tensor, row: int, what: str) -> None:
    """Refuse a row's addition or direction that is not ``[d_model]`` / ``[k, d_model]`` or not finite."""
    if t.dim() not in (1, 2) or t.shape[-1] != model.d_model:
        raise ValueError(f"{what} for row {row} has shape {tuple(t.shape)}; expected [{model.d_model}] "
                         f"or [k, {model.d_model}]")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{what} for row {row} contains NaN or inf")


@dataclass
class Intervention:
    """What one steering scope does to the residual stream at one layer, row by row.

    ``adds[i]`` (already scaled; ``[d_model]``, a ``[k, d_model]`` prompt pair, or ``None``)
    is added to row ``i``; ``directions[i]`` (a unit ``[d_model]`` or ``None``) is projected
    out first where the operator ablates. A single row broadcasts to any batch size.
    """

    layer: int
    adds: list[torch.Tensor | None]
    directions: list[torch.Tensor | None]
    operator: str
    position: str

    def __post_init__(self) -> None:
        check_position(self.position, STEER_POSITIONS)
        if self.operator not in OPERATORS:
            raise ValueError(f"unknown operator {self.operator!r}; expected one of {', '.join(OPERATORS)}")
        if len(self.adds) != len(self.directions):
            raise ValueError(f"{len(self.adds)} additions but {len(self.directions)} directions")
        if self.position == "all" and any(a is not None and a.dim() == 2 for a in self.adds):
            raise ValueError("position 'all' needs [d_model] vectors, not a [k, d_model] prompt pair")
        self._dense: dict[tuple[Any, ...], tuple[torch.Tensor, torch.Tensor | None]] = {}

    @property
    def n_rows(self) -> int:
        """How many rows this intervention has (a single row broadcasts to any batch)."""
        return len(self.adds)

    def is_plain(self, row: int) -> bool:
        """Whether row ``row`` is left exactly as it is (no addition, no direction)."""
        return self.adds[row] is None and self.directions[row] is None

    @classmethod
    def plain(cls, n: int, layer: int, position: str = "all", operator: str = "add") -> Intervention:
        """``n`` unsteered rows (the unsteered control beside steered ones in one batch).

        Example:
            >>> Intervention.plain(2, 6).is_plain(1)
            True
        """
        return cls(layer, [None] * n, [None] * n, operator, position)

    @classmethod
    def concat(cls, parts: Sequence[Intervention]) -> Intervention:
        """The rows of ``parts`` one after the other; every part has the same layer, operator and
        position (one batch is steered at one place by one rule).

        Example:
            >>> Intervention.concat([rows(model, v, [0, 0.5], layer=6), rows(model, w, [0.5], layer=6)]).n_rows
            3
        """
        items = list(parts)
        if not items:
            raise ValueError("no interventions to concatenate")
        first = items[0]
        for k, part in enumerate(items[1:], 1):
            if (part.layer, part.operator, part.position) != (first.layer, first.operator, first.position):
                raise ValueError(f"intervention {k} steers layer {part.layer} by {part.operator!r} at "
                                 f"{part.position!r}; the first steers layer {first.layer} by {first.operator!r} "
                                 f"at {first.position!r}: one batch is steered at one place by one rule")
        return cls(first.layer, [a for p in items for a in p.adds], [u for p in items for u in p.directions],
                   first.operator, first.position)

    def repeat_each(self, n: int) -> Intervention:
        """Each row repeated ``n`` times in place: rows ``[a, b]`` become ``[a] * n + [b] * n``, the
        layout of conditions x prompts in one batch.

        Example:
            >>> rows(model, v, [0, 0.5], layer=6).repeat_each(3).n_rows
            6
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"repeat_each needs an integer >= 1, got {n!r}")
        return Intervention(self.layer, [a for a in self.adds for _ in range(n)],
                            [u for u in self.directions for _ in range(n)], self.operator, self.position)

    def select(self, indices: Sequence[int]) -> Intervention:
        """The rows at ``indices``, in that order.

        Example:
            >>> rows(model, v, [0, 0.25, 0.5], layer=6).select([2, 0]).n_rows
            2
        """
        return Intervention(self.layer, [self.adds[i] for i in indices], [self.directions[i] for i in indices],
                            self.operator, self.position)

    def conditions(self) -> list[Intervention | None]:
        """Each row as a condition of its own (one row, broadcast to every row of a batch);
        ``None`` for an unsteered row: what the scores of many conditions on one batch take."""
        return [None if self.is_plain(i) else
                Intervention(self.layer, [self.adds[i]], [self.directions[i]], self.operator, self.position)
                for i in range(self.n_rows)]

    def additions(self) -> list[torch.Tensor | None]:
        """The rows' additions, for the engines that only add (:mod:`steerlab.logprobs`).

        Raises:
            ValueError: an ablating operator (those engines add, they do not project).
        """
        if self.operator != "add":
            raise ValueError(f"this measure adds vectors; operator {self.operator!r} is not supported here")
        return list(self.adds)

    def _rows(self, batch: int) -> int:
        if len(self.adds) not in (1, batch):
            raise ValueError(f"this steering scope has {len(self.adds)} rows but a forward call has "
                             f"batch size {batch}")
        return batch

    def _tensors(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Dense ``[rows, d]`` additions (prompt pairs excluded) and unit directions, on ``hidden``'s device."""
        key = (hidden.device, hidden.dtype)
        if key not in self._dense:
            d = hidden.shape[-1]
            add = torch.stack([a.float() if a is not None and a.dim() == 1 else torch.zeros(d) for a in
                               (x.detach().cpu() if x is not None else None for x in self.adds)])
            direction = None
            if self.operator != "add":
                direction = torch.stack([u.detach().float().cpu() if u is not None else torch.zeros(d)
                                         for u in self.directions]).to(hidden.device, hidden.dtype)
            self._dense[key] = (add.to(hidden.device, hidden.dtype), direction)
        return self._dense[key]

    def apply(self, hidden: torch.Tensor, real: torch.Tensor, *, continuing: bool,
              bos: torch.Tensor | None = None) -> torch.Tensor:
        """The edited ``hidden`` (``[batch, seq, d_model]``), a new tensor.

        Args:
            real: ``[batch, seq]`` mask of the call's real (unpadded) tokens.
            continuing: the call continues a cache (its tokens are generated ones).
            bos: ``[batch]`` bool, rows that start with a BOS the tokenizer added
                (:func:`steerlab.tokens.leading_bos`); needed by ``after_bos``.
        """
        b = self._rows(hidden.shape[0])
        if bos is None:
            bos = torch.zeros(real.shape[0], dtype=torch.bool)
        if continuing:
            mask = real.bool() if self.position == "all" else torch.zeros_like(real, dtype=torch.bool)
        else:
            mask = position_mask(real.long(), self.position, bos)
        mask = mask.to(hidden.device)
        add, direction = self._tensors(hidden)
        m = mask[..., None].to(hidden.dtype)  # [batch, seq, 1]
        out = hidden
        if direction is not None:
            u = direction.expand(b, -1)[:, None, :]  # [batch, 1, d]
            out = out - m * (out * u).sum(-1, keepdim=True) * u
        if self.operator != "ablate":
            out = out + m * add.expand(b, -1)[:, None, :]
            if not continuing and any(a is not None and a.dim() == 2 for a in self.adds):
                out = out + self._prompt_pairs(hidden, real, b, bos)
        return out

    def _prompt_pairs(self, hidden: torch.Tensor, real: torch.Tensor, b: int, bos: torch.Tensor) -> torch.Tensor:
        """A ``[k, d]`` pair is added from the first token after a tokenizer-added BOS."""
        delta = torch.zeros_like(hidden)
        first = position_mask(real.long(), "after_bos", bos).float().argmax(dim=1)
        for i in range(b):
            a = self.adds[i if len(self.adds) > 1 else 0]
            if a is None or a.dim() != 2:
                continue
            k, start, n = a.shape[0], int(first[i]), int(real[i].sum())
            if k > n:
                raise ValueError(f"a {k}-token prompt-pair vector does not fit row {i}, which has {n} tokens")
            delta[i, start:start + k] = a.detach().to(hidden.device, hidden.dtype)
        return delta


def row_intervention(model: Model, additions: Sequence[torch.Tensor | None], layer: int, position: str,
                      operator: str, directions: Sequence[torch.Tensor | None] | None) -> Intervention:
    """The checked :class:`Intervention` that edits row ``i`` by ``additions[i]`` (already scaled) and,
    for the ablating operators, projects out ``directions[i]`` (normalised here).

    Raises:
        ValueError: a row of the wrong width or non-finite, a zero or 2-D direction, or an
            ablating operator without directions.

    Example:
        >>> row_intervention(model, [None, 4 * v], 6, "all", "add", None).layer
        6
    """
    adds = list(additions)
    for i, a in enumerate(adds):
        if a is not None:
            check_row(model, a, i, "addition")
    if directions is None:
        dirs: list[torch.Tensor | None] = [None] * len(adds)
        if operator != "add":
            raise ValueError(f"operator {operator!r} needs directions=")
    else:
        dirs = []
        for i, u in enumerate(directions):
            if u is not None:
                check_row(model, u, i, "direction")
                if u.dim() != 1 or float(u.norm()) == 0:
                    raise ValueError(f"direction for row {i} must be a non-zero [d_model] vector")
                u = u / u.norm()
            dirs.append(u)
    return Intervention(layer, adds, dirs, operator, position)


def addition_tensor(model: Model, batch: Batch, additions: Sequence[torch.Tensor | None],
                    position: str) -> torch.Tensor:
    """The ``[batch, seq, d_model]`` tensor a prompt's forward call gets added (``add`` operator).

    Zeros wherever a row is unsteered, padded, or not selected by ``position``. This is
    the edit the steering scope makes, applied to zeros.
    """
    if len(additions) != batch.input_ids.shape[0]:
        raise ValueError(f"{len(additions)} additions for {batch.input_ids.shape[0]} prompts")
    for i, a in enumerate(additions):
        if a is not None:
            check_row(model, a, i, "addition")
    intervention = Intervention(0, list(additions), [None] * len(additions), "add", position)
    zeros = torch.zeros(*batch.input_ids.shape, model.d_model)
    return intervention.apply(zeros, batch.attention_mask.bool(), continuing=False, bos=batch.bos)
