"""Many steering conditions on one batch, paying only for the blocks from the steered layer up.

The blocks before the steered layer see no edit, so they run once for every condition:
one plain forward records what each block from ``layer`` on was called with, and each
condition replays only those blocks on the residual edited by the same
:class:`steerlab.steer.Intervention` the steering scope applies, then the final norm and
unembedding (the logit lens of the last layer, which the tests check equals the
model's logits). Replay is local-only: it calls the blocks directly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from .arch import block_hidden, blocks_of
from .lens import lens_logits
from .models import Model
from .steer import Intervention
from .tokens import Batch
from .trace import check_layers

__all__ = ["Replay", "replay_conditions", "steered_logits_each"]


@torch.inference_mode()
def steered_logits_each(
    model: Model,
    batch: Batch,
    additions: Sequence[torch.Tensor | None],
    *,
    layer: int,
    position: str = "all_prompt",
    operator: str = "add",
    directions: Sequence[torch.Tensor | None] | None = None,
) -> Iterator[torch.Tensor]:
    """For each condition in turn, the logits ``[batch, seq, vocab]`` with it applied to every row.

    Condition ``j`` adds ``additions[j]`` (and, for the ablating operators, projects out
    ``directions[j]``). Equal to ``steered_logits(model, batch, [add] * n_rows, layer=layer, ...)``
    for each condition. ``None`` (with the ``add`` operator) yields the plain logits.

    Example:
        >>> for add, logits in zip(adds, steered_logits_each(model, batch, adds, layer=8)):
        ...     ...
    """
    check_layers(model, [layer], allow_last=False)
    dirs = list(directions) if directions is not None else [None] * len(additions)
    if len(dirs) != len(additions):
        raise ValueError(f"{len(additions)} additions but {len(dirs)} directions")
    # A condition without a direction is not ablated (a sweep may mix plain additions with ablations).
    conditions: list[Intervention | None] = []  # validated before any forward pass
    for add, u in zip(additions, dirs):
        if add is None and operator == "add":
            conditions.append(None)
            continue
        if add is not None and (add.shape[-1] != model.d_model or not bool(torch.isfinite(add).all())):
            raise ValueError(f"addition of shape {tuple(add.shape)} does not fit d_model {model.d_model} "
                             "or is not finite")
        unit = None if u is None else u / u.norm()
        conditions.append(Intervention(layer, [add], [unit], operator, position))
    yield from replay_conditions(model, batch, conditions, layer, bos=batch.bos)


class Replay:
    """One batch's plain forward, recorded, and the blocks from ``layer`` up replayed under any condition
    on demand (a caller may choose the next conditions from the last ones' results).

    ``bos``, ``keep`` and ``forward_inputs`` as in :func:`replay_conditions`.

    Example:
        >>> replay = Replay(model, batch, 8)
        >>> plain, steered = replay.plain, replay.logits(Intervention(8, [v], [None], "add", "all"))
    """

    @torch.inference_mode()
    def __init__(self, model: Model, batch: Batch, layer: int, *, bos: torch.Tensor | None = None,
                 keep: torch.Tensor | None = None, forward_inputs: dict[str, torch.Tensor] | None = None) -> None:
        check_layers(model, [layer], allow_last=False)
        self.model, self.layer, self.bos = model, layer, bos
        self.blocks = blocks_of(model.hf)
        self.calls: dict[int, tuple[tuple[Any, ...], dict[str, Any]]] = {}

        def recorder(i: int) -> Callable[..., None]:
            def record(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
                self.calls[i] = (args, kwargs)
            return record

        handles = [self.blocks[i].register_forward_pre_hook(recorder(i), with_kwargs=True)
                   for i in range(layer, len(self.blocks))]
        given = batch.as_inputs() if forward_inputs is None else forward_inputs
        inputs = {k: v.to(model.device) for k, v in given.items()}
        try:
            plain = model.hf(**inputs, use_cache=False).logits
        finally:
            for handle in handles:
                handle.remove()
        self.real = batch.attention_mask.bool()
        if keep is not None:
            if keep.shape != self.real.shape or keep.dtype != torch.bool:
                raise ValueError(f"keep must be a bool mask of shape {tuple(self.real.shape)}, got {keep.dtype} "
                                 f"{tuple(keep.shape)}")
            keep = keep.to(plain.device)
            plain = plain[keep]
        else:
            plain = plain.float()
        self.keep = keep
        self.plain = plain
        """The plain pass's logits (``[batch, seq, vocab]`` float32, or ``[n_kept, vocab]`` with ``keep``)."""

    @torch.inference_mode()
    def logits(self, condition: Intervention | None) -> torch.Tensor:
        """The logits under ``condition`` (``None``: the plain pass's), shaped as :attr:`plain`."""
        if condition is None:
            return self.plain
        args, kwargs = self.calls[self.layer]
        hidden = condition.apply(args[0] if args else kwargs["hidden_states"], self.real, continuing=False,
                                 bos=self.bos)
        for i in range(self.layer, len(self.blocks)):
            args, kwargs = self.calls[i]
            out = (self.blocks[i](hidden, *args[1:], **kwargs) if args else
                   self.blocks[i](**{**kwargs, "hidden_states": hidden}))
            hidden = block_hidden(out)
        return lens_logits(self.model, hidden) if self.keep is None else lens_logits(self.model, hidden[self.keep],
                                                                                     dtype=None)


@torch.inference_mode()
def replay_conditions(model: Model, batch: Batch, conditions: Sequence[Intervention | None], layer: int, *,
                      bos: torch.Tensor | None = None, keep: torch.Tensor | None = None,
                      forward_inputs: dict[str, torch.Tensor] | None = None) -> Iterator[torch.Tensor]:
    """Logits ``[batch, seq, vocab]`` under each :class:`Intervention` (``None``: the plain pass),
    the blocks below ``layer`` run once (:class:`Replay`). A condition may edit each row differently.

    ``bos`` is passed to :meth:`Intervention.apply` (the rows that start with an added BOS);
    ``None`` treats no row as starting with one (the caller placed ``[k, d]`` rows itself).
    ``keep`` (bool ``[batch, seq]``): only those positions' logits, ``[n_kept, vocab]`` in
    row-major order and in the model's dtype (the caller converts them chunk by chunk); the
    unembedding of a condition then runs on those positions alone (with a 262k-token
    vocabulary, as Gemma's, it costs more than the replayed blocks). Without ``keep`` the
    logits are float32. ``forward_inputs`` replaces ``batch.as_inputs()`` in the plain pass (a
    packed batch gives its own 4D attention mask and position ids there); the interventions
    still place themselves by ``batch.attention_mask``.

    Example:
        >>> for logits in replay_conditions(model, batch, [None, Intervention(8, [v], [None], "add", "all")], 8):
        ...     ...
    """
    replay = Replay(model, batch, layer, bos=bos, keep=keep, forward_inputs=forward_inputs)
    for condition in conditions:
        yield replay.logits(condition)
