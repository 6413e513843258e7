"""Section 10: the roofline. The machine's matmul peak, the model's FLOPs per token, and each
workload's tokens/s as a share of that peak, steerlab interleaved with plain transformers at the
same shapes; plus the batched-generation fast path (``steerlab.sampling.decode``) against the
``generate`` path, and the bfloat16 levers.

Definitions (also in bench/README.md):

- **peak**: the best GFLOP/s of a ``2048 x 2048`` matmul (``torch.mm``), threads = the torch
  thread count (= cores here), best of interleaved float32/bfloat16 rounds.
- **FLOPs per token** (:func:`flops_per_token`): from the config, 2 x the parameters of the
  matrix multiplications a token passes through (q, k, v, o, gate, up, down of every block;
  the unembedding only where logits are computed for it) + attention, 4 x layers x heads x
  head_dim x the positions it attends to (scores and the weighted sum).
- **tokens/s** counts every real (unpadded) token that went through the model; a workload's
  **share of the peak** = its FLOPs (from the config, as above, padding excluded) / its time /
  the peak of its dtype.
"""

from __future__ import annotations

import copy
import os
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any, Self

import steerlab as sl
import torch
from benchutil import has_bf16_units, log
from steerlab.sampling import NucleusSampler, decode, row_generators
from steerlab.steer import eos_ids, row_keys, steered_generate, steering_rows, until_eos
from steerlab.tokens import Batch, encode

__all__ = [
    "BF16_MIN_SHARE_OF_PEAK",
    "GEN_MIN_SHARE_OF_FORWARD",
    "Shape",
    "counted_flops",
    "cpu_info",
    "fast_generate",
    "flops_per_token",
    "gen_workload",
    "levers",
    "matmul_peaks",
    "plain_forward",
    "plain_generate",
    "profile_top",
    "run_roofline",
]

# The targets.
GEN_MIN_SHARE_OF_FORWARD = 0.8   # greedy generation tok/s >= 0.8 x a plain forward's, float32
BF16_MIN_SHARE_OF_PEAK = 0.5     # bfloat16 forward >= 0.5 x the bfloat16 matmul peak
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


def cpu_info() -> dict[str, Any]:
    """The CPU's name, the matrix-relevant flags it reports, and what torch says it can use."""
    from steerlab.load import cpu_model_and_flags

    name, flags = cpu_model_and_flags()
    return {"model": name, "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "flags": [f for f in CPU_FLAGS if f in flags],
            "torch_avx512_bf16": bool(torch.cpu._is_avx512_bf16_supported()),
            "torch_amx_tile": bool(torch.cpu._is_amx_tile_supported()),
            "mkldnn_bf16": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())}


def matmul_peaks(n: int = 2048, rounds: int = 5, calls: int = 3,
                 dtypes: Sequence[torch.dtype] = (torch.float32, torch.bfloat16)) -> dict[str, dict[str, Any]]:
    """Best GFLOP/s of an ``n x n`` matmul per dtype, rounds interleaved, each round ``calls`` calls.

    Example:
        >>> matmul_peaks(256, rounds=1)["float32"]["gflops"] > 0
        True
    """
    gen = torch.Generator().manual_seed(0)
    mats = {d: (torch.randn(n, n, generator=gen).to(d), torch.randn(n, n, generator=gen).to(d)) for d in dtypes}
    for a, b in mats.values():
        a @ b  # warm-up: oneDNN primitive creation, page faults
    seconds: dict[torch.dtype, list[float]] = {d: [] for d in dtypes}
    for _ in range(rounds):
        for d, (a, b) in mats.items():
            started = time.perf_counter()
            for _ in range(calls):
                a @ b
            seconds[d].append((time.perf_counter() - started) / calls)
    return {str(d).removeprefix("torch."): {"gflops": 2 * n ** 3 / min(s) / 1e9, "seconds": s,
                                            "loadavg": os.getloadavg()} for d, s in seconds.items()}


def flops_per_token(config: Any, *, context: float = 0.0, logits: bool = False) -> dict[str, float]:
    """FLOPs one token costs in a decoder of ``config``'s shape (Llama-style blocks).

    ``context`` is the number of positions the token attends to (itself included); ``logits``
    whether its unembedding is computed. ``matmul`` = 2 x the block weights' parameters.

    Example:
        >>> f = flops_per_token(model.hf.config, context=64)
        >>> round(f["matmul"] / 1e9, 3)  # SmolLM2-135M
        0.212
    """
    d = config.hidden_size
    layers = config.num_hidden_layers
    heads = config.num_attention_heads
    kv = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or d // heads
    inter = config.intermediate_size
    per_layer = d * heads * head_dim + 2 * d * kv * head_dim + heads * head_dim * d + 3 * d * inter
    matmul = 2.0 * layers * per_layer
    attention = 4.0 * layers * heads * head_dim * context
    head = 2.0 * d * config.vocab_size if logits else 0.0
    return {"matmul": matmul, "attention": attention, "unembedding": head, "total": matmul + attention + head}


# ---------------------------------------------------------------- workloads

class Shape:
    """A batch of rows: real-token counts per row and how many positions each token attends to."""

    def __init__(self, real_per_row: Sequence[int], new_tokens: int = 0) -> None:
        self.real = [int(x) for x in real_per_row]
        self.new = int(new_tokens)

    @property
    def tokens(self) -> int:
        """Real tokens that go through the model: prompts, then every new token but the last
        (whose logits are never needed), i.e. ``prompt + new - 1`` a row when generating."""
        return sum(r + max(self.new - 1, 0) for r in self.real)

    def flops(self, config: Any, *, logits_per_row: int) -> float:
        """FLOPs from the config: every real token's matmuls and attention (causal: token ``i``
        attends to ``i + 1`` positions) and ``logits_per_row`` unembeddings a row (1 for a
        forward with ``logits_to_keep=1``, the new tokens for a generation)."""
        f = flops_per_token(config, logits=True)
        att = flops_per_token(config, context=1)["attention"]  # per attended position
        total = 0.0
        for r in self.real:
            n = r + max(self.new - 1, 0)
            total += n * f["matmul"] + att * n * (n + 1) / 2 + f["unembedding"] * logits_per_row
        return total


def _eos_and_pad(model: sl.Model) -> tuple[set[int], int]:
    return eos_ids(model), model.tokenizer.pad_token_id


@torch.inference_mode()
def fast_generate(model: sl.Model, prompts: Sequence[str], additions: Sequence[torch.Tensor | None], *,
                  layer: int, position: str = "all", max_new_tokens: int, do_sample: bool = False,
                  seed: int = 0, top_p: float = 0.3, top_k: int = 50, cache: str = "dynamic") -> list[list[int]]:
    """What ``steered_generate`` returns, decoded by ``steerlab.sampling.decode`` instead of
    ``model.hf.generate`` (the change proposed for ``steer.py``; bench/README.md)."""
    batch = encode(model.tokenizer, list(prompts), padding_side="left")
    eos, pad = _eos_and_pad(model)
    sampler = None
    if do_sample:
        sampler = NucleusSampler(1.0, top_k, top_p, generators=row_generators(seed, row_keys(prompts, additions)))
    ids, mask = batch.input_ids.to(model.device), batch.attention_mask.to(model.device)
    if all(a is None for a in additions):
        new = decode(model.hf, ids, mask, max_new_tokens=max_new_tokens, pad_token_id=pad, eos_token_ids=eos,
                     sampler=sampler, cache=cache)
    else:
        with steering_rows(model, additions, layer=layer, position=position):
            new = decode(model.hf, ids, mask, max_new_tokens=max_new_tokens, pad_token_id=pad, eos_token_ids=eos,
                         sampler=sampler, cache=cache)
    return [until_eos(row, eos) for row in new.tolist()]


def old_generate(model: sl.Model, prompts: Sequence[str], additions: Sequence[torch.Tensor | None], *,
                 layer: int, position: str = "all", max_new_tokens: int, do_sample: bool = False) -> list[list[int]]:
    """Today's path: ``steerlab.steer.steered_generate`` (``model.hf.generate`` in a steering scope)."""
    return steered_generate(model, list(prompts), list(additions), layer=layer, position=position,
                            max_new_tokens=max_new_tokens, do_sample=do_sample)


@torch.inference_mode()
def plain_generate(hf: Any, batch: Batch, max_new_tokens: int, pad: int) -> torch.Tensor:
    """Plain transformers: unsteered greedy ``generate`` on a copy nnsight never wrapped, every
    step forced."""
    out = hf.generate(**batch.as_inputs(), max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens,
                      do_sample=False, pad_token_id=pad)
    return out[:, batch.input_ids.shape[1]:]


@torch.inference_mode()
def plain_forward(hf: Any, ids: torch.Tensor, mask: torch.Tensor) -> None:
    """Plain transformers: one forward, logits of the last position only."""
    hf(input_ids=ids, attention_mask=mask, logits_to_keep=1)


def gen_workload(model: sl.Model, prompts: Sequence[str], conditions: int, layer: int,
                 scale: float) -> tuple[list[str], list[torch.Tensor | None]]:
    """The comparison's generation shape: every prompt under each of ``conditions`` conditions
    (the unsteered control first, then multiples of one direction, ``scale`` apart)."""
    g = torch.Generator().manual_seed(0)
    direction = torch.randn(model.d_model, generator=g)
    direction = direction / direction.norm()
    adds: list[torch.Tensor | None] = [None] + [scale * (k - conditions // 3) * direction
                                                for k in range(1, conditions)]
    return [p for _ in adds for p in prompts], [a for a in adds for _ in prompts]


def continuation_batch(batch: Batch, new: Sequence[Sequence[int]], n: int, pad: int) -> tuple[torch.Tensor,
                                                                                               torch.Tensor]:
    """The prompt batch followed by ``n`` continuation tokens a row (a row that ended early
    continues with padding marked real, so the forward has exactly the generation's token count)."""
    cont = torch.tensor([list(r[:n]) + [pad] * (n - len(r[:n])) for r in new], dtype=torch.long)
    ids = torch.cat([batch.input_ids, cont], 1)
    mask = torch.cat([batch.attention_mask, torch.ones_like(cont)], 1)
    return ids, mask


def profile_top(fn: Callable[[], Any], rows: int = 12) -> list[dict[str, Any]]:
    """``torch.profiler``'s top operators of one call of ``fn`` by self CPU time."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    return [{"name": e.key, "calls": e.count, "self_cpu_ms": e.self_cpu_time_total / 1e3,
             "share": e.self_cpu_time_total / total} for e in events[:rows]]


def counted_flops(fn: Callable[[], Any]) -> float:
    """FLOPs of one call of ``fn`` as ``torch.utils.flop_counter.FlopCounterMode`` counts them
    (matrix multiplications and the attention kernels it knows)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return float(counter.get_total_flops())


class Tokens:
    """Counts the tokens (``input_ids`` elements, padding included) of every call of ``hf``."""

    def __init__(self, hf: Any) -> None:
        self.n = 0

        def hook(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            ids = kwargs.get("input_ids", args[0] if args else None)
            if isinstance(ids, torch.Tensor):
                self.n += ids.numel()

        self.handle = hf.register_forward_pre_hook(hook, with_kwargs=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.remove()


# ---------------------------------------------------------------- the section

def run_roofline(model: sl.Model, P: dict[str, Any], repeats: int, out: dict[str, Any], *, batch: int = 0,
                 log: Callable[[str], None] = print) -> list:
    """Section 10 of ``bench/run.py``: rows for the table, everything raw in ``out["roofline"]``."""
    from benchutil import Row, interleaved, judge
    from bf16_bench import stats_texts
    from gen_bench import pristine_model
    from steerlab.load import cast, contiguous_unembedding_input
    from steerlab.metrics import steerability_each
    from steerlab.replay import steered_logits_each

    sec = "10 roofline"
    cfg = model.hf.config
    info = cpu_info()
    res: dict[str, Any] = {"cpu": info, "workloads": {}, "params": {}}
    out["roofline"] = res
    log(f"[roofline] CPU {info['model']}, {info['cpus']} cpus, torch threads {info['torch_threads']}, flags "
        f"{' '.join(info['flags'])}; load average {os.getloadavg()}")
    bf16 = has_bf16_units()
    dtypes = ("float32", "bfloat16") if bf16 else ("float32",)
    no_units = (f"SKIP: no bfloat16 units on this CPU (flags: {' '.join(info['flags']) or 'none listed'}); torch "
                "emulates bfloat16 here (0.3 GFLOP/s for a 2048² matmul on a 2-core AVX2 CPU, 176 in float32), so "
                "the row would take minutes and measure only the emulation; the study scores in float32 here")
    res["bfloat16_units"] = bf16
    peaks = matmul_peaks(rounds=P["roof_peak_rounds"],
                         dtypes=tuple(getattr(torch, d) for d in dtypes))
    res["peaks"] = peaks
    peak = {k: v["gflops"] for k, v in peaks.items()}
    log("[roofline] matmul peak: " + ", ".join(f"{d} {peak[d]:.0f}" for d in dtypes) + " GFLOP/s"
        + ("" if bf16 else "; bfloat16 rows skipped (no bfloat16 units)"))
    flags = " ".join(info["flags"])
    rows: list = [
        Row(sec, "matmul peak, 2048 x 2048, float32", peak["float32"], "GFLOP/s", note=(
            f"best of {P['roof_peak_rounds']} interleaved rounds, {info['torch_threads']} threads; CPU "
            f"{info['model']}, flags: {flags}; load average {peaks['float32']['loadavg']}")),
        Row(sec, "matmul peak, 2048 x 2048, bfloat16", peak["bfloat16"], "GFLOP/s", "float32", peak["float32"],
            peak["bfloat16"] / peak["float32"], "x float32") if bf16 else
        Row(sec, "matmul peak, 2048 x 2048, bfloat16", None, "GFLOP/s", status="SKIP", note=no_units),
    ]
    fwd_rows, fwd_len = P["roof_fwd_rows"], P["roof_fwd_length"]
    fpt = flops_per_token(cfg, context=(fwd_len + 1) / 2)
    res["flops_per_token"] = {"context": (fwd_len + 1) / 2, **fpt,
                              "with_unembedding": flops_per_token(cfg, context=(fwd_len + 1) / 2, logits=True)}
    rows.append(Row(sec, f"model FLOPs per token (mean context {(fwd_len + 1) / 2:.1f})", fpt["total"] / 1e9,
                    "GFLOP", note=(f"from the config: matmuls {fpt['matmul'] / 1e9:.3f} + attention "
                                   f"{fpt['attention'] / 1e9:.4f} GFLOP; the unembedding adds "
                                   f"{flops_per_token(cfg, logits=True)['unembedding'] / 1e9:.3f} GFLOP where a "
                                   "token's logits are computed")))

    log("[roofline] loading the plain-transformers copies" + (" (float32, bfloat16) and steerlab's bfloat16 copy"
                                                              if bf16 else " (float32)"))
    plain32 = pristine_model(model)
    plain16 = pristine_model(model).to(torch.bfloat16) if bf16 else None
    model16 = cast(model, "bfloat16") if bf16 else None

    def only(variants: dict[str, Any]) -> dict[str, Any]:
        """``variants`` without the bfloat16 ones where the CPU has no bfloat16 units."""
        return {k: v for k, v in variants.items() if bf16 or "bfloat16" not in k}
    pad = model.tokenizer.pad_token_id

    def record(name: str, dtype: str, t: Any, tokens: float, flops: float, extra: dict[str, Any] | None = None
               ) -> dict[str, Any]:
        best, med = min(t.seconds), statistics.median(t.seconds)
        w = {"dtype": dtype, "seconds": t.seconds, "tokens": tokens, "flops": flops,
             "tok_s": tokens / med, "tok_s_best": tokens / best, "gflops": flops / med / 1e9,
             "share_of_peak": flops / med / 1e9 / peak[dtype], "share_of_peak_best": flops / best / 1e9 / peak[dtype],
             "loadavg": os.getloadavg(), **(extra or {})}
        res["workloads"][name] = w
        log(f"[roofline] {name}: {w['tok_s']:.0f} tok/s, {w['gflops']:.0f} GFLOP/s, "
            f"{w['share_of_peak']:.2f} of the {dtype} peak (best repeat {w['share_of_peak_best']:.2f})")
        return w

    # ---- forward passes: plain transformers and the statistics pass, float32 and bfloat16
    texts = stats_texts(model, fwd_rows, fwd_len)
    fb = encode(model.tokenizer, texts, max_length=fwd_len)
    fwd_shape = Shape(fb.attention_mask.sum(1).tolist())
    fwd_flops = fwd_shape.flops(cfg, logits_per_row=1)
    stats_flops = fwd_shape.flops(cfg, logits_per_row=0)

    def stats(m: sl.Model) -> Any:
        return sl.activation_stats(m, texts, None, cache=False, progress=False, batch_size=fwd_rows,
                                   max_length=fwd_len)

    log(f"[roofline] forward passes, {fwd_rows} x {fwd_len} tokens, {repeats} rounds")
    t = interleaved(only({"plain forward float32": lambda: plain_forward(plain32, fb.input_ids, fb.attention_mask),
                          "plain forward bfloat16": lambda: plain_forward(plain16, fb.input_ids, fb.attention_mask),
                          "steerlab forward float32": lambda: plain_forward(model.hf, fb.input_ids, fb.attention_mask),
                          "steerlab forward bfloat16": lambda: plain_forward(model16.hf, fb.input_ids,
                                                                             fb.attention_mask),
                          "statistics float32": lambda: stats(model),
                          "statistics bfloat16": lambda: stats(model16)}), repeats, log=log)
    counted = counted_flops(lambda: plain_forward(plain32, fb.input_ids, fb.attention_mask))
    w = {k: record(k, "bfloat16" if "bfloat16" in k else "float32", t[k], fwd_shape.tokens,
                   stats_flops if k.startswith("statistics") else fwd_flops) for k in t}
    res["flops_check"] = {"config": fwd_flops, "FlopCounterMode": counted}
    for dt in dtypes:
        rows.append(Row(sec, f"statistics pass, all layers, {dt} (vs plain forward)", w[f"statistics {dt}"]["tok_s"],
                        "tok/s", "plain forward", w[f"plain forward {dt}"]["tok_s"],
                        t[f"plain forward {dt}"].median / t[f"statistics {dt}"].median, "x faster",
                        note=(f"share of the {dt} peak: statistics {w[f'statistics {dt}']['share_of_peak']:.2f}, "
                              f"plain forward (logits_to_keep=1) {w[f'plain forward {dt}']['share_of_peak']:.2f}; "
                              f"{fwd_rows} x {fwd_len} tokens; FLOPs from the config "
                              f"(FlopCounterMode counts {counted / fwd_flops:.3f}x the config's)"),
                        repeats=t[f"statistics {dt}"].seconds,
                        ratio_min=t[f"plain forward {dt}"].min / t[f"statistics {dt}"].min))
    share16 = w["steerlab forward bfloat16"]["share_of_peak"] if bf16 else 0.0
    rows.append(Row(sec, "steerlab forward, bfloat16: share of the bfloat16 peak", None, "of peak", status="SKIP",
                    note=no_units) if not bf16 else
                Row(sec, "steerlab forward, bfloat16: share of the bfloat16 peak", share16, "of peak",
                    "float32 forward's share of its peak", w["steerlab forward float32"]["share_of_peak"],
                    t["steerlab forward float32"].median / t["steerlab forward bfloat16"].median, "x faster than fp32",
                    f">= {BF16_MIN_SHARE_OF_PEAK:.2f} of peak", judge(share16, at_least=BF16_MIN_SHARE_OF_PEAK),
                    note=(f"best repeat {w['steerlab forward bfloat16']['share_of_peak_best']:.2f}; logits_to_keep=1 "
                          f"through the loaded model (its unembedding gets a contiguous input)"),
                    ratio_min=t["steerlab forward float32"].min / t["steerlab forward bfloat16"].min))
    for dt in dtypes:
        a, b = t[f"steerlab forward {dt}"], t[f"plain forward {dt}"]
        rows.append(Row(sec, f"steerlab forward vs plain transformers, {dt}, logits_to_keep=1",
                        w[f"steerlab forward {dt}"]["tok_s"], "tok/s", "plain transformers",
                        w[f"plain forward {dt}"]["tok_s"], b.median / a.median, "x faster",
                        note=(f"plain transformers at {w[f'plain forward {dt}']['share_of_peak']:.2f} of the {dt} peak: "
                              "the sliced hidden[:, -1:, :] makes torch's CPU bmm copy the unembedding per row "
                              "(pytorch/pytorch#151934); steerlab.load hands it a contiguous input"),
                        repeats=a.seconds, ratio_min=b.min / a.min))

    # ---- batched greedy generation at the comparison's shape
    prompts = sl.load_dataset("prompts").sample(P["roof_gen_prompts"], seed=0).texts
    conditions = max(1, (batch or P["roof_gen_prompts"] * P["roof_gen_conditions"]) // len(prompts))
    N = P["roof_gen_tokens"]
    layer = model.n_layers // 2
    rows_p, adds = gen_workload(model, prompts, conditions, layer, scale=2.0)
    gb = encode(model.tokenizer, rows_p, padding_side="left")
    gshape = Shape(gb.attention_mask.sum(1).tolist(), N)
    gen_flops = gshape.flops(cfg, logits_per_row=N)
    res["params"]["generation"] = {"batch": len(rows_p), "prompts": len(prompts), "conditions": conditions,
                                   "max_new_tokens": N, "layer": layer, "prompt_tokens": int(gb.attention_mask.sum()),
                                   "padded_prompt_length": gb.input_ids.shape[1]}
    log(f"[roofline] greedy generation, batch {len(rows_p)} ({conditions} conditions x {len(prompts)} prompts), "
        f"{N} new tokens, layer {layer}, float32 and bfloat16, {repeats} rounds")
    ref = fast_generate(model, rows_p, adds, layer=layer, max_new_tokens=N)
    fids, fmask = continuation_batch(gb, ref, N - 1, pad)
    fshape_flops = Shape(gb.attention_mask.sum(1).tolist(), N).flops(cfg, logits_per_row=1)
    gvariants = {
        "generate (old) float32": lambda: old_generate(model, rows_p, adds, layer=layer, max_new_tokens=N),
        "decode (new) float32": lambda: fast_generate(model, rows_p, adds, layer=layer, max_new_tokens=N),
        "decode (new, static cache) float32": lambda: fast_generate(model, rows_p, adds, layer=layer,
                                                                    max_new_tokens=N, cache="static"),
        "plain generate float32": lambda: plain_generate(plain32, gb, N, pad),
        "forward, same tokens, float32": lambda: plain_forward(model.hf, fids, fmask),
        "generate (old) bfloat16": lambda: old_generate(model16, rows_p, adds, layer=layer, max_new_tokens=N),
        "decode (new) bfloat16": lambda: fast_generate(model16, rows_p, adds, layer=layer, max_new_tokens=N),
        "forward, same tokens, bfloat16": lambda: plain_forward(model16.hf, fids, fmask),
    }
    t = interleaved(only(gvariants), repeats, log=log, warmup=False)
    same = {"new == old, float32": t["decode (new) float32"].value == t["generate (old) float32"].value,
            "static == old, float32": t["decode (new, static cache) float32"].value == t["generate (old) float32"].value}
    if bf16:
        same["new == old, bfloat16"] = t["decode (new) bfloat16"].value == t["generate (old) bfloat16"].value
        same["bfloat16 rows equal to float32"] = sum(a == b for a, b in zip(t["decode (new) bfloat16"].value,
                                                                             t["decode (new) float32"].value)) / len(ref)
    res["generation_tokens_equal"] = same
    w = {}
    for k in t:
        dt = "bfloat16" if "bfloat16" in k else "float32"
        w[k] = record(f"generation: {k}", dt, t[k], gshape.tokens, fshape_flops if "forward" in k else gen_flops)
    for dt in dtypes:
        fwd = t[f"forward, same tokens, {dt}"]
        for path in ("decode (new)", "generate (old)"):
            k = f"{path} {dt}"
            ratio = fwd.median / t[k].median
            target = f">= {GEN_MIN_SHARE_OF_FORWARD:.1f}x" if dt == "float32" and path.startswith("decode") else ""
            rows.append(Row(sec, f"greedy generation, batch {len(rows_p)}, {N} tokens, {path}, {dt}", w[k]["tok_s"],
                            "tok/s", "forward, same tokens", w[f"forward, same tokens, {dt}"]["tok_s"],
                            ratio, "x forward's tok/s", target,
                            judge(ratio, at_least=GEN_MIN_SHARE_OF_FORWARD) if target else "",
                            note=(f"share of the {dt} peak {w[k]['share_of_peak']:.2f} (forward "
                                  f"{w[f'forward, same tokens, {dt}']['share_of_peak']:.2f}); tokens = real "
                                  f"prompt tokens + {N - 1} a row; steered rows, layer {layer}, position all; "
                                  f"greedy tokens equal to the old path: {same[f'new == old, {dt}']}"),
                            repeats=t[k].seconds, ratio_min=fwd.min / t[k].min))
    st_ratio = t["decode (new) float32"].median / t["decode (new, static cache) float32"].median
    rows.append(Row(sec, "decode (new), static cache vs dynamic cache, float32",
                    w["decode (new, static cache) float32"]["tok_s"], "tok/s", "dynamic cache",
                    w["decode (new) float32"]["tok_s"], st_ratio, "x faster",
                    note=f"greedy tokens equal to the old path: {same['static == old, float32']}",
                    repeats=t["decode (new, static cache) float32"].seconds,
                    ratio_min=t["decode (new) float32"].min / t["decode (new, static cache) float32"].min))
    rows.append(Row(sec, "plain transformers generate, float32 (unsteered)", w["plain generate float32"]["tok_s"],
                    "tok/s", "decode (new) float32", w["decode (new) float32"]["tok_s"],
                    t["plain generate float32"].median / t["decode (new) float32"].median, "x faster (new)",
                    repeats=t["plain generate float32"].seconds,
                    ratio_min=t["plain generate float32"].min / t["decode (new) float32"].min))
    if bf16:
        r16 = t["decode (new) float32"].median / t["decode (new) bfloat16"].median
        rows.append(Row(sec, "greedy generation, decode (new): bfloat16 vs float32",
                        w["decode (new) bfloat16"]["tok_s"], "tok/s", "float32", w["decode (new) float32"]["tok_s"],
                        r16, "x faster", ">= 1.00x", judge(r16, at_least=1.0),
                        note=f"rows equal to float32's: {same['bfloat16 rows equal to float32']:.0%}",
                        ratio_min=t["decode (new) float32"].min / t["decode (new) bfloat16"].min))
    else:
        rows.append(Row(sec, "greedy generation, decode (new): bfloat16 vs float32", None, "tok/s", status="SKIP",
                        note=no_units))

    # ---- forward-only scoring: block replay and steerability (FLOPs counted by FlopCounterMode)
    rt, rl = P["roof_replay_texts"], 64
    rtexts = sl.load_dataset("general", "heldout").texts[:rt]
    rb = encode(model.tokenizer, rtexts, max_length=rl)
    radds: list[torch.Tensor | None] = [None, *adds[len(prompts)::len(prompts)][:P["roof_replay_conditions"]]]

    def replay(m: sl.Model) -> int:
        return sum(1 for _ in steered_logits_each(m, rb, radds, layer=layer, position="all"))

    def replay_plain(hf: Any) -> None:  # one full forward (all logits) per condition, unsteered
        with torch.inference_mode():
            for _ in radds:
                hf(input_ids=rb.input_ids, attention_mask=rb.attention_mask)

    direction = next((a for a in adds if a is not None and bool(a.norm() > 0)), torch.ones(model.d_model))
    direction = direction / direction.norm()
    from steerlab.study.compare import _heldout_target, _others

    st, so = _heldout_target("fantasy", P["roof_steer_texts"]), _others("fantasy", P["roof_steer_texts"])

    def steer(m: sl.Model) -> float:
        return steerability_each(m, [direction], layer=layer, target_texts=st, other_texts=so,
                                 coefficients=[-0.25, 0.0, 0.25, 0.5], position="all", unit=40.0,
                                 n_boot=200)[0].mean

    log(f"[roofline] block replay ({rt} texts x {rl} tokens, {len(radds)} conditions) and steerability "
        f"({P['roof_steer_texts']} + {P['roof_steer_texts']} texts, 4 coefficients), float32 and bfloat16, "
        f"{repeats} rounds")
    fvariants = only({"replay float32": lambda: replay(model), "replay bfloat16": lambda: replay(model16),
                      "plain forward per condition float32": lambda: replay_plain(plain32),
                      "steerability float32": lambda: steer(model), "steerability bfloat16": lambda: steer(model16)})
    counts: dict[str, tuple[float, int]] = {}
    for k, fn in fvariants.items():
        m = model16 if "bfloat16" in k else model
        with Tokens(plain32 if k.startswith("plain") else m.hf) as tok:
            f = counted_flops(fn)
        counts[k] = (f, tok.n)
    t = interleaved(fvariants, repeats, log=log, warmup=False)
    w = {k: record(k, "bfloat16" if "bfloat16" in k else "float32", t[k], counts[k][1], counts[k][0]) for k in t}
    rshape = rt * rl * len(radds)
    rows.append(Row(sec, f"block replay, {len(radds)} conditions, float32 (vs a full forward each)",
                    rshape / t["replay float32"].median, "cond-tok/s", "plain forward per condition",
                    rshape / t["plain forward per condition float32"].median,
                    t["plain forward per condition float32"].median / t["replay float32"].median, "x faster",
                    note=(f"share of the float32 peak: replay {w['replay float32']['share_of_peak']:.2f}, plain "
                          f"{w['plain forward per condition float32']['share_of_peak']:.2f}; "
                          + (f"bfloat16 replay {w['replay bfloat16']['share_of_peak']:.2f} of its peak, "
                             f"{t['replay float32'].median / t['replay bfloat16'].median:.2f}x float32's speed; "
                             if bf16 else "no bfloat16 units: bfloat16 replay not measured; ")
                          + "cond-tok/s = texts x tokens x conditions / s"),
                    repeats=t["replay float32"].seconds,
                    ratio_min=t["plain forward per condition float32"].min / t["replay float32"].min))
    rows.append(Row(sec, "steerability (1 method, 4 coefficients), bfloat16 vs float32", None, "tok/s",
                    status="SKIP", note=no_units) if not bf16 else
                Row(sec, "steerability (1 method, 4 coefficients), bfloat16 vs float32",
                    w["steerability bfloat16"]["tok_s"], "tok/s", "float32", w["steerability float32"]["tok_s"],
                    t["steerability float32"].median / t["steerability bfloat16"].median, "x faster",
                    note=(f"share of the peak: float32 {w['steerability float32']['share_of_peak']:.2f}, bfloat16 "
                          f"{w['steerability bfloat16']['share_of_peak']:.2f}; tokens = input_ids elements of "
                          "every model call (packed openings, padding included); no plain-transformers "
                          "equivalent (the share of the peak is the comparison)"),
                    repeats=t["steerability bfloat16"].seconds,
                    ratio_min=t["steerability float32"].min / t["steerability bfloat16"].min))

    # ---- the widget's pair: an unsteered and a steered row, sampled, one batch of 2
    pn = P["roof_pair_tokens"]
    pair_prompt = prompts[0]
    pair_adds: list[torch.Tensor | None] = [None, adds[-1]]
    pb = encode(model.tokenizer, [pair_prompt] * 2, padding_side="left")

    def pair_plain() -> Any:
        sampler = NucleusSampler(1.0, 50, 0.3, generators=row_generators(0, row_keys([pair_prompt] * 2, pair_adds)))
        from transformers import LogitsProcessorList

        with torch.inference_mode():
            return plain32.generate(**pb.as_inputs(), max_new_tokens=pn, min_new_tokens=pn, do_sample=False,
                                    pad_token_id=pad, logits_processor=LogitsProcessorList([sampler]))

    log(f"[roofline] the widget's pair (unsteered + steered, sampled), {pn} tokens, {repeats} rounds")
    t = interleaved({
        "pair: generate (old)": lambda: old_generate(model, [pair_prompt] * 2, pair_adds, layer=layer,
                                                     max_new_tokens=pn, do_sample=True),
        "pair: decode (new)": lambda: fast_generate(model, [pair_prompt] * 2, pair_adds, layer=layer,
                                                   max_new_tokens=pn, do_sample=True),
        "pair: plain generate": pair_plain}, repeats, log=log)
    pshape = Shape(pb.attention_mask.sum(1).tolist(), pn)
    w = {k: record(k, "float32", t[k], pshape.tokens, pshape.flops(cfg, logits_per_row=pn)) for k in t}
    psame = t["pair: decode (new)"].value == t["pair: generate (old)"].value
    res["pair_tokens_equal"] = psame
    for k in ("pair: decode (new)", "pair: generate (old)"):
        rows.append(Row(sec, f"widget pair, {pn} sampled tokens, {k.split(': ')[1]}", t[k].median, "s",
                        "plain generate (unsteered, same sampler)", t["pair: plain generate"].median,
                        t["pair: plain generate"].median / t[k].median, "x faster",
                        note=(f"{w[k]['tok_s']:.0f} tok/s, {w[k]['share_of_peak']:.3f} of the float32 peak (batch 2 "
                              f"is latency-bound); sampled tokens equal old/new: {psame}"),
                        repeats=t[k].seconds, ratio_min=t["pair: plain generate"].min / t[k].min))

    # ---- where the generation time goes: torch.profiler, old path against new, float32 and bfloat16
    pc = P["roof_profile_conditions"]
    prow, padd = rows_p[:pc * len(prompts)], adds[:pc * len(prompts)]
    log(f"[roofline] torch.profiler of greedy generation, batch {len(prow)}, {N} tokens")
    res["profile"] = {"batch": len(prow), "max_new_tokens": N}
    for name, fn in [x for x in (("generate (old) float32", lambda: old_generate(model, prow, padd, layer=layer,
                                                                      max_new_tokens=N)),
                     ("decode (new) float32", lambda: fast_generate(model, prow, padd, layer=layer, max_new_tokens=N)),
                     ("decode (new) bfloat16", lambda: fast_generate(model16, prow, padd, layer=layer,
                                                                      max_new_tokens=N)),
                     ("plain forward bfloat16", lambda: plain_forward(plain16, fb.input_ids, fb.attention_mask)),
                     ("steerlab forward bfloat16", lambda: plain_forward(model16.hf, fb.input_ids,
                                                                        fb.attention_mask))) if bf16 or "bfloat16" not in x[0]]:
        res["profile"][name] = profile_top(fn)
        log(f"[roofline] profile, {name}: " + ", ".join(f"{e['name']} {e['share']:.0%}"
                                                        for e in res["profile"][name][:6]))

    if P["roof_levers"] and bf16:
        fixed16, fixed32 = copy.deepcopy(plain16), copy.deepcopy(plain32)  # plain transformers + steerlab's fix
        contiguous_unembedding_input(fixed16)
        contiguous_unembedding_input(fixed32)
        rows += levers(fixed16, fixed32, fb, fwd_flops, fwd_shape.tokens, peak, repeats, res, log)
    return rows


def levers(plain16: Any, plain32: Any, fb: Batch, flops: float, tokens: int, peak: dict[str, float], repeats: int,
           res: dict[str, Any], log: Callable[[str], None]) -> list:
    """bfloat16 levers on the plain forward (with steerlab's contiguous unembedding input, so what
    is left to gain), each against that bfloat16 forward in the same rounds:
    ``torch.compile`` (inductor, CPU) and oneDNN's reduced-precision float32 matmul
    (``torch.backends.mkldnn.matmul.fp32_precision = "bf16"``) on the float32 model."""
    from benchutil import Row, interleaved

    sec = "10 roofline"
    variants: dict[str, Callable[[], Any]] = {
        "bfloat16 eager": lambda: plain_forward(plain16, fb.input_ids, fb.attention_mask),
        "float32 eager": lambda: plain_forward(plain32, fb.input_ids, fb.attention_mask),
    }

    def fp32_as_bf16() -> None:
        old = torch.backends.mkldnn.matmul.fp32_precision
        torch.backends.mkldnn.matmul.fp32_precision = "bf16"
        try:
            plain_forward(plain32, fb.input_ids, fb.attention_mask)
        finally:
            torch.backends.mkldnn.matmul.fp32_precision = old

    variants["float32, oneDNN bf16 matmul"] = fp32_as_bf16
    notes: dict[str, str] = {}
    try:
        started = time.perf_counter()
        compiled = torch.compile(plain16)
        plain_forward(compiled, fb.input_ids, fb.attention_mask)
        notes["torch.compile"] = f"compiled in {time.perf_counter() - started:.0f} s (untimed)"
        variants["bfloat16 torch.compile"] = lambda: plain_forward(compiled, fb.input_ids, fb.attention_mask)
    except Exception as err:  # noqa: BLE001 - a lever that cannot run is reported, not fatal
        notes["torch.compile"] = f"failed: {type(err).__name__}: {str(err)[:200]}"
    log(f"[roofline] bfloat16 levers on the plain forward, {repeats} rounds; {notes}")
    t = interleaved(variants, repeats, log=log)
    base = t["bfloat16 eager"]
    out = []
    res["levers"] = {"notes": notes, "seconds": {k: x.seconds for k, x in t.items()}}
    for k, x in t.items():
        if k == "bfloat16 eager":
            continue
        dt = "float32" if k.startswith("float32") else "bfloat16"  # the model's dtype
        share = flops / x.median / 1e9 / peak[dt]
        out.append(Row(sec, f"lever: {k} (vs bfloat16 eager)", tokens / x.median, "tok/s", "bfloat16 eager",
                       tokens / base.median, base.median / x.median, "x faster",
                       note=f"{share:.2f} of the {dt} peak; {notes.get('torch.compile', '') if 'compile' in k else ''}",
                       repeats=x.seconds, ratio_min=base.min / x.min))
    return out


def bench_roofline(model: Any, P: dict[str, Any], repeats: int, out: dict[str, Any], batch: int = 0) -> list:
    from roofline_bench import run_roofline

    return run_roofline(model, P, repeats, out, batch=batch, log=log)
