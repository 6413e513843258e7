"""The nnsight traces that read the residual stream.

nnsight compiles the body of each ``with`` block from this file's source, so
the traces live here, in functions, and nowhere else reads activations.

``remote=True`` runs a trace on NDIF (for a model from ``load_model(hub_id, remote=True)``;
``remote="local"`` is nnsight's dry run of that request). With ``reduce=`` the reduction
runs where the model runs, inside the trace, so a remote statistics pass sends back a few
``[d_model]`` sums per batch instead of every activation.
"""

from __future__ import annotations

import gc
import operator
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

from .arch import block_hidden
from .models import Model
from .nnsight_steer import Remote, check_remote
from .tokens import Batch

Reduce = Callable[[int, torch.Tensor], torch.Tensor]
"""``reduce(i, hidden)``: the ``i``-th requested layer's ``[batch, seq, d_model]`` -> what comes back."""

__all__ = ["check_layers", "residuals"]


def check_layers(model: Model, layers: Sequence[int] | None, *, allow_last: bool = True) -> list[int]:
    """Validate residual-stream layer indices; ``None`` means all of them.

    Valid layers run from 0 (the embeddings, entering block 0) to ``n_layers``
    (leaving the last block), or to ``n_layers - 1`` where a vector is added
    *before* a block (``allow_last=False``). Returns them sorted, without repeats.

    Raises:
        ValueError: no layers, a layer that is not an integer (``2.7``, ``"2"``,
            ``True``), or one out of range; the message gives the valid range.

    Example:
        >>> check_layers(model, [6, 2])
        [2, 6]
    """
    top = model.n_layers if allow_last else model.n_layers - 1
    if layers is None:
        return list(range(top + 1))
    if isinstance(layers, (str, bytes)) or not isinstance(layers, Iterable):
        raise ValueError(f"layers must be a list of ints in 0..{top} or None, got {layers!r}")  # noqa: TRY004
    checked: set[int] = set()
    for layer in layers:
        try:
            if isinstance(layer, bool):
                raise TypeError("a bool")
            index = operator.index(layer)  # int, numpy or 0-d torch integers; not 2.7, "2"
        except TypeError:
            raise ValueError(f"layer {layer!r} is not an integer layer index: expected an int in 0..{top}") from None
        if not 0 <= index <= top:
            raise ValueError(f"layer {index} is out of range for {model.name}: expected 0..{top}")
        checked.add(index)
    if not checked:
        raise ValueError(f"no layers given: expected at least one layer index in 0..{top}")
    return sorted(checked)


@torch.inference_mode()
def residuals(model: Model, batch: Batch, layers: Sequence[int], *, reduce: Reduce | None = None,
              remote: Remote = False) -> list[torch.Tensor]:
    """Residual-stream activations at ``layers`` for one batch, one forward pass.

    The forward stops right after the deepest requested layer, so neither the
    later blocks nor the unembedding run.

    Args:
        reduce: applied inside the trace to each layer's activations, in the model's
            own dtype and device; its result is what is returned for that layer.
        remote: ``True`` runs the trace on NDIF, ``"local"`` is nnsight's dry run of it.

    Returns:
        Per layer, in the order given, ``[batch, seq, d_model]`` float activations, or
        ``reduce``'s result (on the CPU when remote).

    Raises:
        NdifUnavailableError: ``remote=True`` without an API key or a reachable NDIF.
    """
    check_remote(model, remote, "residuals")
    order = sorted(set(layers))
    blocks = model.envoy(model.arch.blocks)
    n = model.n_layers
    saved: dict[int, torch.Tensor] = {}
    # Remote: the server places them (nothing of the model is here); else the model's device.
    device = torch.device("cpu") if remote is True else model.device
    inputs = {k: v.to(device) for k, v in batch.as_inputs().items()}
    with model.lm.trace(inputs, remote=remote) as tracer:
        for layer in order:
            hidden: Any = blocks[layer].input if layer < n else block_hidden(blocks[n - 1].output)
            if reduce is not None:
                hidden = reduce(order.index(layer), hidden)
            saved[layer] = hidden.save()  # nnsight's save on a traced tensor
        tracer.stop()
    out = [saved[layer] for layer in layers]  # block outputs were unwrapped inside the trace
    if remote is True:
        out = [t.cpu() for t in out]
    # Stopping the forward leaves its frames (holding this batch's activations)
    # in reference cycles, and the tracer keeps this frame in one too: free them
    # now, so memory stays one batch, not however many arrive before the next
    # garbage collection. A young-generation collection costs about 0.1 ms.
    saved.clear()
    gc.collect(1)
    return out
