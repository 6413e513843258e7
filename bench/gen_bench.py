"""Sections 3 and 4: steered generation and the coefficient sweep.

Every variant samples the way ``steerlab.generate`` does by default (seed 0,
``top_p=0.3``, ``top_k=50``, temperature 1) from the same left-padded prompts, and
by default with the same sampler, ``steerlab.sampling.NucleusSampler`` (a greedy
``generate`` over the token it draws among the top-k) with the same per-row
generators steerlab seeds (so equal rows draw equal tokens), so the rows compare
steering, not samplers; one extra baseline uses transformers' own sampling
(``sampler="transformers"``: warpers, softmax and multinomial over the vocabulary). The
baseline forces every one of the ``max_new_tokens`` steps (``min_new_tokens``); steerlab
and the hook variant stop at EOS like plain ``generate``, so times are compared per
generated step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import steerlab as sl
import torch
from steerlab.tokens import encode

SAMPLING: dict[str, Any] = {"do_sample": True, "temperature": 1.0, "top_p": 0.3, "top_k": 50}
SEED = 0


def sampling(sampler: str = "steerlab", prompts: Sequence[str] = (),
             additions: Sequence[torch.Tensor | None] = ()) -> dict[str, Any]:
    """``generate`` kwargs for steerlab's default sampling with either filter implementation.

    With steerlab's sampler, each row draws from its own generator seeded as
    ``steerlab.generate`` seeds it (from the seed, the row's prompt and its addition), so a
    baseline given the same prompts and additions draws the same tokens as steerlab.
    """
    if sampler == "transformers":
        return dict(SAMPLING)
    from steerlab.sampling import NucleusSampler, row_generators
    from steerlab.steer import row_keys
    from transformers import LogitsProcessorList

    generators = row_generators(SEED, row_keys(list(prompts), list(additions)))
    nucleus = NucleusSampler(SAMPLING["temperature"], SAMPLING["top_k"], SAMPLING["top_p"], generators=generators)
    return {"do_sample": False, "logits_processor": LogitsProcessorList([nucleus])}


def make_vector(model: sl.Model, layer: int) -> sl.SteeringVector:
    """A realistic, cheap vector: "Love" - "Hate" at one layer (two one-token traces)."""
    return sl.counterbalanced(model, "Love", "Hate", [layer], position="last", cache=False,
                              progress=False)


def steerlab_generate(model: sl.Model, prompts: Sequence[str], vector: sl.SteeringVector | None,
                      coefficients: float | Sequence[float], position: str, max_new_tokens: int,
                      layer: int | None = None) -> list[list[int]]:
    # scale="raw": the benchmark's coefficients multiply the vector as it is (the plain hook
    # adds coefficient x vector), not steerlab's default relative units (x the centred norm).
    out = sl.generate(model, list(prompts), vector, layer=layer, coefficients=coefficients,
                      position=position, scale="raw", max_new_tokens=max_new_tokens, seed=SEED,
                      **SAMPLING)
    return [c.token_ids for c in out]


def pristine_model(model: sl.Model) -> Any:
    """A second copy of the checkpoint that nnsight never wrapped.

    ``nnsight.TransformersModel`` replaces the ``forward`` of every module of
    ``model.hf`` with its own controller, which stays in place outside traces
    too; so ``model.hf.generate`` is not plain transformers. This copy is.
    """
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(model.source, dtype=next(model.hf.parameters()).dtype)
    hf.eval()
    hf.requires_grad_(False)
    return hf


@torch.inference_mode()
def hf_generate(model: sl.Model, prompts: Sequence[str], max_new_tokens: int, hf: Any = None,
                sampler: str = "steerlab") -> list[list[int]]:
    """The baseline: unsteered ``model.hf.generate`` (or ``hf.generate``), every step forced."""
    hf = model.hf if hf is None else hf
    batch = encode(model.tokenizer, prompts, padding_side="left")
    torch.manual_seed(SEED)
    out = hf.generate(**batch.as_inputs(), max_new_tokens=max_new_tokens,
                      min_new_tokens=max_new_tokens, pad_token_id=model.tokenizer.pad_token_id,
                      **sampling(sampler, prompts, [None] * len(prompts)))
    return [row.tolist() for row in out[:, batch.input_ids.shape[1]:]]


@torch.inference_mode()
def hook_generate(model: sl.Model, prompts: Sequence[str], vector: torch.Tensor, layer: int,
                  position: str, max_new_tokens: int, hf: Any = None) -> list[list[int]]:
    """The same addition as steerlab's, written out here with a plain
    ``register_forward_pre_hook`` on ``hf`` (the pristine copy, so no nnsight code runs
    at all): steerlab's own hook, on the nnsight-wrapped model, against this one.

    ``position="all"``: every real prompt token and every generated token;
    ``position="first"``: the first real token of each prompt only.
    """
    hf = model.hf if hf is None else hf
    batch = encode(model.tokenizer, prompts, padding_side="left")
    ids, attn = batch.input_ids, batch.attention_mask
    prompt_len = ids.shape[1]
    vec = vector.to(next(hf.parameters()).dtype)
    if position == "all":
        delta = attn[..., None].to(vec.dtype) * vec  # [batch, seq, d]
    elif position == "first":
        first = attn.argmax(dim=1)  # left padding: first real column
        delta = torch.zeros(*ids.shape, vec.shape[-1], dtype=vec.dtype)
        delta[torch.arange(ids.shape[0]), first] = vec
    else:
        raise ValueError(position)
    block = hf.model.layers[layer]

    def pre_hook(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        hidden = args[0] if args else kwargs["hidden_states"]
        if hidden.shape[1] == prompt_len:
            hidden = hidden + delta
        elif position == "all":
            hidden = hidden + vec
        else:
            return None
        if args:
            return (hidden, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": hidden}

    handle = block.register_forward_pre_hook(pre_hook, with_kwargs=True)
    try:
        torch.manual_seed(SEED)
        gen: dict[str, Any] = {"max_new_tokens": max_new_tokens, "pad_token_id": model.tokenizer.pad_token_id}
        out = hf.generate(**batch.as_inputs(), **gen, **sampling("steerlab", prompts, [vector] * len(prompts)))
    finally:
        handle.remove()
    return [row.tolist() for row in out[:, prompt_len:]]


def steps(rows: list[list[int]]) -> int:
    """Generation steps a call ran (rows are padded to the longest)."""
    return max(len(r) for r in rows)
