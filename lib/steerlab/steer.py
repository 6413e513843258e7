"""Steered generation and steered forward passes.

A steering vector is added to the residual stream *entering* block ``layer``
(the write-up's "before residual stream layer L") for the length of one call,
by :func:`residual_addition`: a forward pre-hook on that block, removed when the
call ends, also when an exception interrupts it, so the model is never left
steered.

Why a hook and not an nnsight intervention: nnsight reads activations
(:mod:`steerlab.trace`), but while a ``generate`` trace is open every module call
of every step passes through its interleaver, edited or not (~2-3 ms a step on
2 CPU cores, 5-7% of a batch-1 step of SmolLM2; ``bench/README.md``). The hook
costs one Python call a step. ``tests/test_steer.py`` checks that both give the
same logits and the same tokens.

Rows of one batch may carry different prompts, vectors and coefficients (a
coefficient sweep is one generate call). Position rules:

- ``first``: the first prompt token (SmolLM2's attention-sink position);
- ``all_prompt``: every prompt token; ``last_prompt``: the last one;
- ``all``: every prompt token and every generated token.

A ``[k, d_model]`` prompt-pair vector is added to the first ``k`` prompt tokens.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from .arch import block_hidden, blocks_of
from .lens import lens_logits
from .models import Model
from .tokens import STEER_POSITIONS, Batch, check_position, encode, position_mask
from .trace import check_layers
from .vectors import SteeringVector

__all__ = [
    "Completion",
    "NucleusSampler",
    "addition_tensor",
    "generate",
    "relative_addition",
    "residual_addition",
    "steered_generate",
    "steered_logits",
    "steered_logits_each",
]


@dataclass
class Completion:
    """One generated continuation and the settings that produced it."""

    prompt: str
    text: str
    coefficient: float
    token_ids: list[int]
    label: str = ""


def _check_addition(model: Model, add: torch.Tensor, row: int) -> None:
    if add.shape[-1] != model.d_model or add.dim() not in (1, 2):
        raise ValueError(
            f"addition for row {row} has shape {tuple(add.shape)}; expected [{model.d_model}] "
            f"or [k, {model.d_model}]"
        )
    if not bool(torch.isfinite(add).all()):
        raise ValueError(f"addition for row {row} contains NaN or inf")


def addition_tensor(model: Model, batch: Batch, additions: Sequence[torch.Tensor | None],
                    position: str) -> torch.Tensor:
    """The ``[batch, seq, d_model]`` tensor added to the prompt's residual stream.

    Zeros wherever a row is unsteered, padded, or not selected by ``position``.
    """
    check_position(position, STEER_POSITIONS)
    if len(additions) != batch.input_ids.shape[0]:
        raise ValueError(f"{len(additions)} additions for {batch.input_ids.shape[0]} prompts")
    mask = position_mask(batch.attention_mask, position)  # [batch, seq]
    first = position_mask(batch.attention_mask, "first").float().argmax(dim=1)
    delta = torch.zeros(*batch.input_ids.shape, model.d_model)
    for i, add in enumerate(additions):
        if add is None:
            continue
        _check_addition(model, add, i)
        add = add.detach().float().cpu()
        if add.dim() == 2:  # prompt pair: from the first token on
            k, start = add.shape[0], int(first[i])
            if k > int(batch.lengths[i]):
                raise ValueError(
                    f"a {k}-token prompt-pair vector does not fit prompt {i}, which has "
                    f"{int(batch.lengths[i])} tokens"
                )
            delta[i, start:start + k] = add
        else:
            delta[i, mask[i]] = add
    return delta


class NucleusSampler:
    """Sampling with temperature, top-k and top-p (nucleus), drawn among the top-k tokens only.

    ``filter`` keeps the same tokens as transformers' ``TemperatureLogitsWarper ->
    TopKLogitsWarper -> TopPLogitsWarper`` chain (equal up to float rounding; see
    ``tests/test_steer.py``). Called as a logits processor inside a *greedy* ``generate``,
    it draws the next token from the filtered distribution itself and leaves only that
    token finite, so greedy decoding picks it. The distribution is the one transformers'
    sampler draws from, but neither the nucleus search nor the draw touches the whole
    vocabulary: on 2 CPU cores with SmolLM2's 49k vocabulary, transformers' filter plus its
    softmax and multinomial over the vocabulary cost ~19 ms of a ~90 ms batch-8 step, this
    ~1 ms (``bench/README.md``). The draws use torch's global generator, so a seed
    reproduces them (but not transformers' draws for the same seed). ``top_k=0`` keeps
    every token before top-p, as in transformers.
    """

    def __init__(self, temperature: float = 1.0, top_k: int = 50, top_p: float = 1.0):
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if not (isinstance(top_k, int) and top_k >= 0):
            raise ValueError(f"top_k must be an integer >= 0 (0: no top-k), got {top_k!r}")
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        self.temperature, self.top_k, self.top_p = float(temperature), top_k, float(top_p)

    def _candidates(self, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores and vocabulary indices of the tokens that survive, ascending, ``-inf`` where dropped."""
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
        return torch.full_like(scores, -float("inf")).scatter(-1, index, values)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        values, index = self._candidates(scores)
        drawn = index.gather(-1, torch.multinomial(values.softmax(dim=-1), 1))
        return torch.full_like(scores, -float("inf")).scatter(-1, drawn, 0.0)


@contextmanager
def residual_addition(model: Model, layer: int, prompt: torch.Tensor,
                      step: torch.Tensor | None = None) -> Iterator[None]:
    """Add to the residual stream entering block ``layer`` for the length of a ``with`` block.

    The model's first forward call inside the block (the prompt) gets ``prompt``
    (``[batch, seq, d_model]``) added; every later call (one generated token each)
    gets ``step`` (``[batch, 1, d_model]``), or nothing if ``step`` is ``None``.

    Raises:
        ValueError: a forward call whose hidden state does not have the shape of
            the addition meant for it (the hook is removed all the same).

    Example:
        >>> with residual_addition(model, 6, delta):
        ...     logits = model.hf(**batch.as_inputs()).logits
    """
    block = blocks_of(model.hf)[layer]
    calls = 0

    def add(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        nonlocal calls
        delta = prompt if calls == 0 else step
        calls += 1
        if delta is None:
            return None
        hidden = args[0] if args else kwargs["hidden_states"]  # [batch, seq, d_model]
        if hidden.shape != delta.shape:
            raise ValueError(f"forward call {calls} at layer {layer} has hidden state {tuple(hidden.shape)}; "
                             f"the addition for it is {tuple(delta.shape)}")
        hidden = hidden + delta
        return ((hidden, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": hidden})

    handle = block.register_forward_pre_hook(add, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def _to_model(model: Model, t: torch.Tensor) -> torch.Tensor:
    return t.to(model.device, next(model.hf.parameters()).dtype)


@torch.inference_mode()
def steered_generate(
    model: Model,
    prompts: Sequence[str],
    additions: Sequence[torch.Tensor | None],
    *,
    layer: int,
    position: str = "first",
    max_new_tokens: int = 40,
    seed: int | None = 0,
    do_sample: bool = True,
    temperature: float = 1.0,
    top_p: float = 0.3,
    top_k: int = 50,
    should_stop: Callable[[], bool] | None = None,
) -> list[list[int]]:
    """Generate one continuation per row, row ``i`` steered by ``additions[i]``.

    ``additions[i]`` is already scaled (``coefficient * vector``), ``[d_model]`` or
    ``[k, d_model]``, or ``None`` for an unsteered row. All rows run as one batched
    ``generate`` call. Returns the new token ids of each row. ``should_stop`` is
    polled after every step; when it returns True generation ends early (the
    widget uses this to drop a generation that a newer request superseded).
    Sampling (``do_sample``) draws with :class:`NucleusSampler` (temperature, top-k,
    top-p): the distribution transformers' sampler draws from, drawn faster.
    """
    check_position(position, STEER_POSITIONS)
    check_layers(model, [layer], allow_last=False)
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    batch = encode(model.tokenizer, prompts, padding_side="left")
    delta = _to_model(model, addition_tensor(model, batch, additions, position))
    steer_generated = position == "all"
    every = torch.zeros(len(prompts), model.d_model)
    if steer_generated:
        for i, add in enumerate(additions):
            if add is not None:
                if add.dim() != 1:
                    raise ValueError("position 'all' needs a [d_model] vector, not a prompt pair")
                every[i] = add.detach().float().cpu()
    every = _to_model(model, every)[:, None, :]  # [batch, 1, d_model]
    gen_kwargs: dict[str, object] = {
        "max_new_tokens": max_new_tokens,
        "do_sample": do_sample,
        "pad_token_id": model.tokenizer.pad_token_id,
    }
    if do_sample:
        from transformers import LogitsProcessorList

        # Greedy decoding over the one token NucleusSampler drew (transformers' warpers off).
        gen_kwargs.update(do_sample=False, logits_processor=LogitsProcessorList([NucleusSampler(temperature, top_k, top_p)]))
    if should_stop is not None:
        from transformers import StoppingCriteria, StoppingCriteriaList

        stop_now = should_stop

        class _Superseded(StoppingCriteria):
            def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kw: object) -> torch.Tensor:
                return torch.full((input_ids.shape[0],), bool(stop_now()), dtype=torch.bool)

        gen_kwargs["stopping_criteria"] = StoppingCriteriaList([_Superseded()])
    if seed is not None:
        torch.manual_seed(seed)
    prompt_len = batch.input_ids.shape[1]
    with residual_addition(model, layer, delta, every if steer_generated else None):
        output = model.hf.generate(**batch.as_inputs(), **gen_kwargs)
    ids = output[:, prompt_len:]
    return [row.tolist() for row in ids]


def generate(
    model: Model,
    prompts: str | Sequence[str],
    vector: SteeringVector | None = None,
    *,
    layer: int | None = None,
    coefficients: float | Sequence[float] = 1.0,
    position: str = "first",
    max_new_tokens: int = 40,
    seed: int | None = 0,
    do_sample: bool = True,
    temperature: float = 1.0,
    top_p: float = 0.3,
    top_k: int = 50,
    should_stop: Callable[[], bool] | None = None,
) -> list[Completion]:
    """Steered (or, with ``vector=None``, plain) completions for every prompt x coefficient.

    All combinations run as one batched generate call. ``layer`` defaults to the
    vector's only layer.

    Example:
        >>> v = counterbalanced(model, "Love", "Hate", [6], position="last")
        >>> for c in generate(model, "I hate you because", v, coefficients=[0, 5, 10]):
        ...     print(c.coefficient, c.text)
    """
    prompt_list = [prompts] if isinstance(prompts, str) else list(prompts)
    coefs = [float(coefficients)] if isinstance(coefficients, (int, float)) else [float(c) for c in coefficients]
    if not coefs:
        raise ValueError("no coefficients given")
    rows = list(itertools.product(prompt_list, coefs))
    additions: list[torch.Tensor | None]
    if vector is None:
        layer = 0 if layer is None else layer
        additions = [None] * len(rows)
    else:
        vector.check_for(model)
        if layer is None:
            if len(vector.layers) != 1:
                raise ValueError(f"vector has layers {vector.layers}: pass layer=")
            layer = vector.layers[0]
        v = vector.at(layer)
        additions = [None if c == 0 else c * v for _, c in rows]
    ids = steered_generate(
        model, [p for p, _ in rows], additions, layer=layer, position=position,
        max_new_tokens=max_new_tokens, seed=seed, do_sample=do_sample,
        temperature=temperature, top_p=top_p, top_k=top_k, should_stop=should_stop,
    )
    tok = model.tokenizer
    label = "unsteered" if vector is None else vector.describe()
    return [
        Completion(prompt=p, text=tok.decode(row, skip_special_tokens=True), coefficient=c,
                   token_ids=row, label=label)
        for (p, c), row in zip(rows, ids)
    ]


@torch.inference_mode()
def steered_logits(
    model: Model,
    batch: Batch,
    additions: Sequence[torch.Tensor | None] | None = None,
    *,
    layer: int = 0,
    position: str = "all_prompt",
) -> torch.Tensor:
    """Logits ``[batch, seq, vocab]`` of one forward pass, row ``i`` steered by ``additions[i]``.

    With ``additions=None`` this is the plain forward. Used to measure how much a
    vector damages the model's predictions on other text.
    """
    check_layers(model, [layer], allow_last=False)
    if additions is None or all(a is None for a in additions):
        out = model.hf(**batch.as_inputs())
        return out.logits.float()
    delta = _to_model(model, addition_tensor(model, batch, additions, position))
    with residual_addition(model, layer, delta):
        logits = model.hf(**batch.as_inputs()).logits
    return logits.float()


@torch.inference_mode()
def steered_logits_each(
    model: Model,
    batch: Batch,
    additions: Sequence[torch.Tensor | None],
    *,
    layer: int,
    position: str = "all_prompt",
) -> Iterator[torch.Tensor]:
    """For each addition in turn, the logits ``[batch, seq, vocab]`` with it added to every row.

    Equal to ``steered_logits(model, batch, [add] * n_rows, layer=layer, ...)`` for each
    ``add``, but the blocks before ``layer`` see no addition, so they run once for all
    of them: one plain forward records what each block from ``layer`` on was called
    with, and each addition replays only those blocks on the edited residual, then
    the final norm and unembedding (the logit lens of the last layer, which the tests
    check equals the model's logits). ``None`` yields the plain logits.

    Example:
        >>> for add, logits in zip(adds, steered_logits_each(model, batch, adds, layer=8)):
        ...     ...
    """
    check_layers(model, [layer], allow_last=False)
    deltas = [None if add is None else addition_tensor(model, batch, [add] * batch.input_ids.shape[0], position)
              for add in additions]  # validated before any forward pass
    blocks = blocks_of(model.hf)
    calls: dict[int, tuple[tuple[Any, ...], dict[str, Any]]] = {}

    def recorder(i: int) -> Callable[..., None]:
        def record(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            calls[i] = (args, kwargs)
        return record

    handles = [blocks[i].register_forward_pre_hook(recorder(i), with_kwargs=True)
               for i in range(layer, len(blocks))]
    try:
        plain = model.hf(**batch.as_inputs(), use_cache=False).logits.float()
    finally:
        for handle in handles:
            handle.remove()
    for delta in deltas:
        if delta is None:
            yield plain
            continue
        args, kwargs = calls[layer]
        hidden = (args[0] if args else kwargs["hidden_states"]) + _to_model(model, delta)  # [batch, seq, d_model]
        for i in range(layer, len(blocks)):
            args, kwargs = calls[i]
            out = blocks[i](hidden, *args[1:], **kwargs) if args else blocks[i](**{**kwargs, "hidden_states": hidden})
            hidden = block_hidden(out)
        yield lens_logits(model, hidden)


def relative_addition(vector: torch.Tensor, typical_norm: float, coefficient: float) -> torch.Tensor:
    """``coefficient * typical_norm`` times the unit direction of ``vector``.

    A ``[k, d_model]`` prompt-pair vector is scaled so its largest row has that norm.
    """
    norm = vector.norm(dim=-1).max() if vector.dim() == 2 else vector.norm()
    if float(norm) == 0:
        raise ValueError("cannot scale a zero vector to a norm")
    return vector * (coefficient * typical_norm / norm)
