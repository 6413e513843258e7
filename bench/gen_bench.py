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
from benchutil import log
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


PROMPTS_N = 8


def bench_gen(model: Any, plain: Any, P: dict[str, Any], repeats: int, out: dict[str, Any]) -> list:
    import steerlab as sl
    from benchutil import Row, interleaved, judge, loadavg
    from gen_bench import hf_generate, hook_generate, make_vector, steerlab_generate, steps

    layer = model.n_layers // 5  # 6 on SmolLM2
    coef = 4.0
    v = make_vector(model, layer)
    add = coef * v.at(layer)
    prompts_all = sl.load_dataset("prompts", "eval").texts[:PROMPTS_N]
    N = P["gen_tokens"]
    rows: list = []
    out["gen"] = {"layer": layer, "coefficient": coef, "max_new_tokens": N}

    def one_batch(bs: int) -> list:
        prompts = prompts_all[:bs]
        log(f"[gen] batch {bs}, {N} new tokens, steering layer {layer}, {repeats} rounds")
        variants = {
            "hf.generate": lambda: hf_generate(model, prompts, N),
            "hf.generate tf-sampler": lambda: hf_generate(model, prompts, N, sampler="transformers"),
            "pristine generate": lambda: hf_generate(model, prompts, N, hf=plain),
            "steerlab all": lambda: steerlab_generate(model, prompts, v, coef, "all", N),
            "hook all": lambda: hook_generate(model, prompts, add, layer, "all", N, hf=plain),
            "steerlab first": lambda: steerlab_generate(model, prompts, v, coef, "first", N),
            "hook first": lambda: hook_generate(model, prompts, add, layer, "first", N, hf=plain),
            "steerlab unsteered": lambda: steerlab_generate(model, prompts, None, 0.0, "first", N,
                                                            layer=layer),
        }
        warm = {
            "hf.generate": lambda: hf_generate(model, prompts, 2),
            "hf.generate tf-sampler": lambda: hf_generate(model, prompts, 2, sampler="transformers"),
            "pristine generate": lambda: hf_generate(model, prompts, 2, hf=plain),
            "steerlab all": lambda: steerlab_generate(model, prompts, v, coef, "all", 2),
            "hook all": lambda: hook_generate(model, prompts, add, layer, "all", 2, hf=plain),
            "steerlab first": lambda: steerlab_generate(model, prompts, v, coef, "first", 2),
            "hook first": lambda: hook_generate(model, prompts, add, layer, "first", 2, hf=plain),
            "steerlab unsteered": lambda: steerlab_generate(model, prompts, None, 0.0, "first", 2,
                                                            layer=layer),
        }
        t = interleaved(variants, repeats, warmups=warm, log=log)
        nsteps = {k: steps(x.value) for k, x in t.items()}
        same_all = t["steerlab all"].value == t["hook all"].value
        same_first = t["steerlab first"].value == t["hook first"].value
        # The baseline forces every step (min_new_tokens suppresses EOS, so it draws another
        # token there); steerlab stops a row at EOS. Rows are compared up to steerlab's EOS.
        eos = model.tokenizer.eos_token_id

        def until_eos(row: list[int]) -> int:
            return row.index(eos) if eos in row else len(row)

        same_plain = all(mine[: until_eos(mine)] == theirs[: until_eos(mine)]
                         for mine, theirs in zip(t["steerlab unsteered"].value, t["hf.generate"].value))
        same_pristine = t["pristine generate"].value == t["hf.generate"].value
        out["gen"][f"batch{bs}"] = {
            "seconds": {k: x.seconds for k, x in t.items()}, "steps": nsteps,
            "same_tokens": {"steerlab_vs_hook_all": same_all, "steerlab_vs_hook_first": same_first,
                            "steerlab_unsteered_vs_hf": same_plain, "pristine_vs_hf": same_pristine},
            "loadavg_end": loadavg(),
        }
        log(f"[gen] steps {nsteps}; same tokens steerlab/hook: all={same_all} first={same_first}; "
            f"unsteered steerlab/hf: {same_plain}")

        def per_step(name: str, best: bool = False) -> float:
            secs = t[name].min if best else t[name].median
            return secs / nsteps[name] * N  # seconds for N steps

        sec = f"3 steered generation (batch {bs})"

        def grow(name: str, label: str, target: str = "", note: str = "",
                 against: str = "hf.generate") -> Row:
            val = per_step(name)
            ratio = val / per_step(against)
            status = judge(ratio, at_most=1.10) if target else ""
            label_base = {"hf.generate": "model.hf.generate", "pristine generate": "pristine generate",
                          "hf.generate tf-sampler": "hf.generate, tf sampler"}[against]
            return Row(sec, label, val, "s", label_base, per_step(against), ratio, "x time", target, status,
                       note, repeats=t[name].seconds,
                       ratio_min=per_step(name, True) / per_step(against, True))

        rows = [
            grow("steerlab all", "steerlab.generate position=all (every step)", "<= 1.10x",
                 note=f"batch {bs}: {nsteps['steerlab all']} steps, every one steered, time scaled to {N}; "
                      f"baseline = unsteered model.hf.generate, same sampling (steerlab's NucleusSampler), {N} "
                      f"tokens forced; tokens identical to the plain hook's: {same_all}"),
            grow("steerlab first", "steerlab.generate position=first (prompt)", "<= 1.10x",
                 note=f"batch {bs}: prompt steered once; {nsteps['steerlab first']} steps, "
                      f"time scaled to {N}; tokens identical to the plain hook's: {same_first}"),
            grow("steerlab unsteered", "steerlab.generate, no vector (no hook)"),
            grow("steerlab all", "steerlab position=all vs transformers' own sampler", against="hf.generate tf-sampler",
                 note="the baseline is unsteered model.hf.generate with transformers' own sampling (TopK/TopP "
                      "warpers, softmax and multinomial over the whole vocabulary each step)"),
            grow("pristine generate", "generate on a model nnsight never wrapped",
                 note="model.hf carries nnsight's per-module controllers even outside a trace; this "
                      f"is the same checkpoint loaded apart. Same tokens as model.hf: {same_pristine}"),
            grow("steerlab all", "steerlab position=all vs pristine transformers", against="pristine generate"),
            grow("hook all", "plain pre-hook (pristine model), position=all", against="pristine generate"),
            grow("hook first", "plain pre-hook (pristine model), position=first", against="pristine generate"),
        ]
        ratio = per_step("steerlab all") / per_step("hook all")
        rows.append(Row(sec, "steerlab position=all vs the plain hook", per_step("steerlab all"), "s",
                        "hook", per_step("hook all"), ratio, "x time",
                        ratio_min=per_step("steerlab all", True) / per_step("hook all", True)))
        return rows

    for bs in P["gen_batches"]:
        rows += one_batch(bs)
    return rows
