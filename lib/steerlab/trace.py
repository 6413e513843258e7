"""Every nnsight trace: reading the residual stream, the lens, and steering as a trace.

nnsight compiles the body of each ``with`` block from this file's source, so
the traces live here, in functions, and nowhere else opens one.

Steering as a trace is the second backend of :func:`steerlab.steer.steered_logits`,
:func:`steerlab.steer.steered_generate` and :func:`steerlab.steer.generate`
(``backend="nnsight"``; the default is the scope's forward pre-hook). It makes the same
edit with the same code, :meth:`steerlab.intervention.Intervention.apply`, replacing
``blocks[L].input`` (steerlab's layer ``L`` is the residual entering block ``L``). In the
first call (the prompt) the positions the rule selects are edited; under
``position="all"`` also every generated token, one ``tracer.iter`` step each (an edit
outside the loop binds to the first call only). Generated ids are read in a second,
empty ``tracer.invoke()``, so they come back also when generation ends early. nnsight
adds ``position_ids`` counted from each row's first real token to a left-padded forward;
the hook backend calls the model without them, so :func:`nnsight_logits` passes the
positions the model would use itself and both backends compute the same logits.

``remote=True`` runs a trace on NDIF (for a model from ``load_model(hub_id, remote=True)``;
``remote="local"`` is nnsight's dry run of that request). With ``reduce=`` the reduction
runs where the model runs, inside the trace, so a remote statistics pass sends back a few
``[d_model]`` sums per batch instead of every activation.
"""

from __future__ import annotations

import functools
import gc
import operator
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar, cast

import torch

from .arch import block_hidden
from .intervention import Intervention
from .models import Model
from .remote import Remote, check_remote, ndif_answers
from .tokens import Batch

Reduce = Callable[[int, torch.Tensor], torch.Tensor]
"""``reduce(i, hidden)``: the ``i``-th requested layer's ``[batch, seq, d_model]`` -> what comes back."""

__all__ = ["check_layers", "nnsight_generate", "nnsight_lens", "nnsight_logits", "residuals"]

# A dangling step loop ends generation that stopped before max_new_tokens: expected here.
_DANGLING = r".*was never reached: the loop asked for a step the run did not make"

F = TypeVar("F", bound=Callable[..., Any])


def _answers_in_time(what: str) -> Callable[[F], F]:
    """A trace function whose remote run (``remote=True``, always passed by keyword) ends with
    :class:`~steerlab.remote.NdifUnavailableError` when NDIF does not answer in time
    (:func:`steerlab.remote.ndif_answers`); the ``with`` blocks nnsight compiles stay as written."""
    def wrap(f: F) -> F:
        @functools.wraps(f)
        def call(*args: Any, **kwargs: Any) -> Any:
            with ndif_answers(what, kwargs.get("remote", False)):
                return f(*args, **kwargs)
        return cast(F, call)
    return wrap


def check_layers(model: Model, layers: Sequence[int] | None, *, allow_last: bool = True) -> list[int]:
    """Validate residual-stream layer indices; ``None`` means all of them.

    Valid layers run from 0 (the embeddings, entering block 0) to ``n_layers``
    (leaving the last block) for what only reads the residual stream (statistics, the lens),
    or to ``n_layers - 1`` for steering and for building a vector (``allow_last=False``):
    steerlab adds a vector to the input of block ``L``, and there is no block ``n_layers``.
    Returns them sorted, without repeats.

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
            why = "" if allow_last else (
                f" (a steering layer L is the residual stream entering block L, and {model.name} has "
                f"{model.n_layers} blocks, 0..{top}; layer {model.n_layers}, the last block's output, can be "
                "measured with activation_stats but not steered)")
            raise ValueError(f"layer {index} is out of range for {model.name}: expected 0..{top}{why}")
        checked.add(index)
    if not checked:
        raise ValueError(f"no layers given: expected at least one layer index in 0..{top}")
    return sorted(checked)


@_answers_in_time("residuals")
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


def _forward_inputs(model: Model, batch: Batch, remote: Remote) -> dict[str, torch.Tensor]:
    device = torch.device("cpu") if remote is True else model.device
    inputs = {k: v.to(device) for k, v in batch.as_inputs().items()}
    ids = inputs["input_ids"]
    # The positions the model counts itself without position_ids (what the hook backend
    # gets), so nnsight does not add left-padding-corrected ones.
    inputs["position_ids"] = torch.arange(ids.shape[1], device=device).expand_as(ids)
    return inputs


def _block(model: Model, layer: int) -> Any:
    return model.envoy(model.arch.blocks)[layer]


@_answers_in_time("steered_logits")
@torch.inference_mode()
def nnsight_logits(model: Model, batch: Batch, intervention: Intervention | None, *,
                   remote: Remote = False) -> torch.Tensor:
    """Logits ``[batch, seq, vocab]`` of one forward pass, block ``intervention.layer``'s input edited.

    The nnsight form of :func:`steerlab.steer.steered_logits` (which validates the
    arguments and builds the :class:`~steerlab.intervention.Intervention`); ``None`` is the
    plain forward.

    Example:
        >>> logits = nnsight_logits(model, batch, Intervention(6, [v], [None], "add", "all_prompt"))
    """
    check_remote(model, remote, "steered_logits")
    inputs = _forward_inputs(model, batch, remote)
    lm = model.lm
    real, bos = batch.attention_mask.bool(), batch.bos
    if intervention is None:
        with lm.trace(inputs, remote=remote):
            logits = lm.output.logits.save()
    else:
        block = _block(model, intervention.layer)
        with lm.trace(inputs, remote=remote):
            block.input = intervention.apply(block.input, real, continuing=False, bos=bos)
            logits = lm.output.logits.save()
    return logits.float()


@_answers_in_time("steered_generate")
@torch.inference_mode()
def nnsight_generate(model: Model, batch: Batch, intervention: Intervention | None, *,
                     max_new_tokens: int, generate_kwargs: Mapping[str, Any],
                     remote: Remote = False) -> torch.Tensor:
    """Generate from a left-padded ``batch``, steered like the hook backend; ``[batch, new]`` token ids.

    The nnsight form of :func:`steerlab.steer.steered_generate`: the prompt call is
    edited at the positions the rule selects; under ``position="all"`` every later step
    at its one new token. ``generate_kwargs`` go to ``generate`` (``do_sample``,
    ``pad_token_id``, ``logits_processor``, ``stopping_criteria``).

    Example:
        >>> ids = nnsight_generate(model, batch, None, max_new_tokens=5,
        ...                        generate_kwargs={"do_sample": False})
    """
    check_remote(model, remote, "steered_generate")
    device = torch.device("cpu") if remote is True else model.device
    inputs = {k: v.to(device) for k, v in batch.as_inputs().items()}
    prompt_len = batch.input_ids.shape[1]
    kwargs = {"max_new_tokens": max_new_tokens, **generate_kwargs}
    lm = model.lm
    real, bos = batch.attention_mask.bool(), batch.bos
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_DANGLING)
        if intervention is None:
            with lm.generate(inputs, remote=remote, **kwargs) as tracer:
                ids = tracer.result.save()
        elif intervention.position != "all":
            block = _block(model, intervention.layer)
            with lm.generate(inputs, remote=remote, **kwargs) as tracer:
                block.input = intervention.apply(block.input, real, continuing=False, bos=bos)
                ids = tracer.result.save()
        else:
            block = _block(model, intervention.layer)
            with lm.generate(remote=remote, **kwargs) as tracer:
                with tracer.invoke(inputs):
                    block.input = intervention.apply(block.input, real, continuing=False, bos=bos)
                    for _step in tracer.iter[1:max_new_tokens]:
                        hidden = block.input  # [batch, 1, d_model]: the token generated last
                        new = torch.ones(hidden.shape[:2], dtype=torch.bool)
                        block.input = intervention.apply(hidden, new, continuing=True)
                with tracer.invoke():
                    ids = tracer.result.save()
    return ids[:, prompt_len:].cpu()


@_answers_in_time("lens_logits")
@torch.inference_mode()
def nnsight_lens(model: Model, x: torch.Tensor, *, apply_norm: bool = True, remote: Remote = False) -> torch.Tensor:
    """``unembed(final_norm(x))`` for ``x`` ``[..., d_model]`` run in an nnsight session (on NDIF with
    ``remote=True``); before any logit soft cap, which :func:`steerlab.lens.lens_logits` applies.

    Example:
        >>> logits = nnsight_lens(model, vector.at(16), remote=True)  # [vocab]
    """
    check_remote(model, remote, "lens_logits")
    output = model.hf.get_output_embeddings()
    path = next(name for name, module in model.hf.named_modules() if module is output)
    head = model.envoy(path)
    norm = model.envoy(model.arch.final_norm) if apply_norm else None
    lm = model.lm
    h = x.detach().float().cpu()
    with lm.session(remote=remote):
        # The server's weights decide device and dtype (meta here, bfloat16 there, perhaps).
        h = h.to(device=head.weight.device, dtype=head.weight.dtype)
        if norm is not None:
            h = norm(h)
        logits = head(h).save()
    return logits.float().cpu()
