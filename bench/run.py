"""steerlab benchmark: steerlab against plain transformers, a plain PyTorch hook
and peer libraries, on the embedded SmolLM2-135M-Instruct, with ratios.

    .venv/bin/python bench/run.py            # full run (`make bench`)
    .venv/bin/python bench/run.py --quick    # smoke run, a few minutes
    .venv/bin/python bench/run.py --only stats,gen --repeats 5
    .venv/bin/python bench/run.py --suite    # also time `make run` (long)

Prints a table (measured, baseline, ratio, target, PASS/MISS) and writes
everything, raw repeat timings included, to bench/results/<timestamp>.json.
See bench/README.md for what each row measures and the results seen.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

SECTIONS = ("stats", "memory", "gen", "sweep", "load", "suite", "bf16", "protocol", "slider", "roofline")


def log(msg: str) -> None:
    print(msg, flush=True)


# ---------------------------------------------------------------- parameters

def params_for(quick: bool) -> dict[str, Any]:
    if quick:
        return {
            "stats_texts": 12,        # the 12 shortest general texts, about 900 tokens, one batch
            "mem_texts": 16, "mem_factor": 10, "mem_repeats": 1, "mem_all_layers_texts": 0,
            "gen_tokens": 8, "gen_batches": [1, 8],
            "sweep_tokens": 8,
            "load_repeats": 3, "gguf_repeats": 0, "load_extras": False,
            "bf16_stats_texts": 4, "bf16_stats_length": 64, "bf16_gen_tokens": 8, "bf16_gen_batches": [1, 8],
            "bf16_replay_texts": 2, "bf16_replay_length": 32, "bf16_replay_conditions": 2,
            "protocol_texts": 2, "protocol_conditions": 2, "protocol_prompts": 2, "protocol_tokens": 8,
            "protocol_cell_methods": ["mean_centred"], "protocol_cell_general": 2,
            "slider_tokens": 8, "slider_load_seconds": 300,
            "roof_fwd_rows": 8, "roof_fwd_length": 64, "roof_gen_prompts": 8, "roof_gen_conditions": 4,
            "roof_gen_tokens": 8, "roof_replay_texts": 2, "roof_replay_conditions": 2, "roof_steer_texts": 2,
            "roof_pair_tokens": 8, "roof_peak_rounds": 3, "roof_profile_conditions": 2, "roof_levers": False,
        }
    return {
        "stats_texts": 0,             # all 256 texts of general:train, about 26.6k tokens
        "mem_texts": 0, "mem_factor": 10, "mem_repeats": 3, "mem_all_layers_texts": 32,
        "gen_tokens": 64, "gen_batches": [1, 8],
        "sweep_tokens": 64,
        "load_repeats": 5, "gguf_repeats": 3, "load_extras": True,
        "bf16_stats_texts": 16, "bf16_stats_length": 128, "bf16_gen_tokens": 32, "bf16_gen_batches": [1, 8],
        "bf16_replay_texts": 8, "bf16_replay_length": 64, "bf16_replay_conditions": 8,
        "protocol_texts": 6, "protocol_conditions": 4, "protocol_prompts": 6, "protocol_tokens": 24,
        "protocol_cell_methods": ["raw", "mean_centred", "counterbalanced"], "protocol_cell_general": 0,
        "slider_tokens": 32, "slider_load_seconds": 600,
        # the comparison's generation shape: 8 prompts x 28 conditions = batch 224, 24 new tokens
        "roof_fwd_rows": 32, "roof_fwd_length": 128, "roof_gen_prompts": 8, "roof_gen_conditions": 28,
        "roof_gen_tokens": 24, "roof_replay_texts": 8, "roof_replay_conditions": 8, "roof_steer_texts": 6,
        "roof_pair_tokens": 32, "roof_peak_rounds": 5, "roof_profile_conditions": 8, "roof_levers": True,
    }


# ---------------------------------------------------------------- section 1

def bench_stats(model: Any, plain: Any, P: dict[str, Any], repeats: int, peers: bool,
                out: dict[str, Any]) -> list:
    import steerlab as sl
    from benchutil import Row, interleaved, judge, loadavg
    from stats_bench import (
        TLPeer,
        count_tokens,
        hf_loop,
        max_abs_diff,
        nnsight_naive,
        sorted_texts,
        steerlab_stats,
    )

    n = model.n_layers
    early, half = max(1, n // 10), n // 2
    all_layers = list(range(n + 1))
    general = sl.load_dataset("general", "train")
    if P["stats_texts"]:
        keep = sorted_texts(general.texts)[: P["stats_texts"]]
        textset = sl.TextSet.from_texts(f"general:train[{len(keep)} shortest]", keep)
    else:
        textset = general
    texts = textset.texts
    n_read, n_avg = count_tokens(model, texts)
    log(f"[stats] {textset.name}: {len(texts)} texts, {n_read} tokens read, {n_avg} averaged; "
        f"layers all (0..{n}), early {early}, half {half}; {repeats} rounds")
    warm_texts = sorted_texts(texts)[:4]
    warm_set = sl.TextSet.from_texts("warm", warm_texts)

    variants: dict[str, Any] = {
        "steerlab all": lambda: steerlab_stats(model, textset, None),
        "transformers all": lambda: hf_loop(model, texts, all_layers, hf=plain),
        "transformers lean all": lambda: hf_loop(model, texts, all_layers, lean=True, hf=plain),
        f"steerlab L{half}": lambda: steerlab_stats(model, textset, [half]),
        f"steerlab L{early}": lambda: steerlab_stats(model, textset, [early]),
        "transformers one layer": lambda: hf_loop(model, texts, [half], hf=plain),
    }
    warmups: dict[str, Any] = {
        "steerlab all": lambda: steerlab_stats(model, warm_set, None),
        "transformers all": lambda: hf_loop(model, warm_texts, all_layers, hf=plain),
        "transformers lean all": lambda: hf_loop(model, warm_texts, all_layers, lean=True, hf=plain),
        f"steerlab L{half}": lambda: steerlab_stats(model, warm_set, [half]),
        f"steerlab L{early}": lambda: steerlab_stats(model, warm_set, [early]),
        "transformers one layer": lambda: hf_loop(model, warm_texts, [half], hf=plain),
    }
    skipped: dict[str, str] = {}
    tl = None
    if peers:
        variants["nnsight naive all"] = lambda: nnsight_naive(model, texts, all_layers)
        warmups["nnsight naive all"] = lambda: nnsight_naive(model, warm_texts, all_layers)
        tl = TLPeer()
        log("[stats] starting TransformerLens peer (bench/.peer-venv) ...")
        if tl.start(model, texts):
            log(f"[stats] TransformerLens {tl.info.get('transformer_lens')} via {tl.info.get('api')}")
            variants["TL all"] = lambda: tl.run(all_layers, n, stop=False)
            variants[f"TL L{half}"] = lambda: tl.run([half], n, stop=True)
            variants[f"TL L{early}"] = lambda: tl.run([early], n, stop=True)
            warmups["TL all"] = lambda: tl.run(all_layers, n, stop=False, limit=1)
            warmups[f"TL L{half}"] = lambda: tl.run([half], n, stop=True, limit=1)
            warmups[f"TL L{early}"] = lambda: tl.run([early], n, stop=True, limit=1)
        else:
            skipped["TransformerLens"] = tl.reason
            log(f"[stats] SKIP TransformerLens: {tl.reason}")
            tl = None
    else:
        skipped["TransformerLens"] = skipped["nnsight naive"] = "peers disabled (--no-peers)"
    try:
        t = interleaved(variants, repeats, warmups=warmups, log=log)
    finally:
        if tl is not None:
            tl.close()

    ref_all = t["steerlab all"].value
    checks = {
        "transformers all": max_abs_diff(ref_all, t["transformers all"].value, all_layers, n),
        "transformers lean all": max_abs_diff(ref_all, t["transformers lean all"].value, all_layers, n),
        f"steerlab L{half}": float((ref_all[half] - t[f"steerlab L{half}"].value[0]).abs().max()),
        f"steerlab L{early}": float((ref_all[early] - t[f"steerlab L{early}"].value[0]).abs().max()),
    }
    for k in ("nnsight naive all", "TL all"):
        if k in t:
            checks[k] = max_abs_diff(ref_all, t[k].value, all_layers, n)
    for k in (f"TL L{half}", f"TL L{early}"):
        if k in t:
            layer = half if k.endswith(str(half)) else early
            checks[k] = float((ref_all[layer] - t[k].value[0]).abs().max())
    out["stats"] = {
        "texts": len(texts), "tokens_read": n_read, "tokens_averaged": n_avg,
        "layers": {"all": all_layers, "early": early, "half": half},
        "seconds": {k: v.seconds for k, v in t.items()},
        "max_abs_diff_of_mean_vs_steerlab": checks, "skipped": skipped, "loadavg_end": loadavg(),
        "tl_info": tl.info if tl is not None else None,
    }
    log(f"[stats] mean agreement with steerlab (max |diff|, layers 0..{n - 1}): "
        + ", ".join(f"{k} {v:.1e}" for k, v in checks.items()))

    def tps(name: str) -> float:
        return n_read / t[name].median

    def row(name: str, subject: str, base: str, base_label: str, target: str = "",
            at_least: float | None = None, note: str = "") -> Row:
        ratio = t[base].median / t[subject].median
        return Row("1 statistics throughput", name, tps(subject), "tok/s", base_label, tps(base), ratio,
                   "x", target, judge(ratio, at_least=at_least) if target else "", note,
                   repeats=t[subject].seconds, ratio_min=t[base].min / t[subject].min)

    rows = [
        row(f"steerlab, all {n + 1} layers vs transformers", "steerlab all", "transformers all",
            "transformers", ">= 0.95x", 0.95,
            note="baseline = a transformers copy of the checkpoint that nnsight never wrapped, "
                 "hf(..., output_hidden_states=True) with full logits, same batches and mask; "
                 "ratio = steerlab throughput / baseline throughput; ratio(min) uses each one's "
                 "fastest repeat"),
        row("steerlab, all layers vs transformers logits_to_keep=1", "steerlab all",
            "transformers lean all", "transformers lean"),
    ]
    if "nnsight naive all" in t:
        rows.append(row("steerlab, all layers vs nnsight naive", "steerlab all", "nnsight naive all",
                        "nnsight naive",
                        note="nnsight naive = one trace a batch saving every layer, no early stop"))
    else:
        rows.append(Row("1 statistics throughput", "steerlab, all layers vs nnsight naive", None, "tok/s",
                        status="SKIP", note=skipped.get("nnsight naive", "")))
    if "TL all" in t:
        rows.append(row("steerlab, all layers vs TransformerLens", "steerlab all", "TL all",
                        "TransformerLens", "> 1.0x", 1.0,
                        note="TransformerLens run_with_cache (TransformerBridge, eager attention) in "
                             "bench/.peer-venv, pre-tokenized batches, names_filter = residual hooks"))
    else:
        rows.append(Row("1 statistics throughput", "steerlab, all layers vs TransformerLens", None, "tok/s",
                        target="> 1.0x", status="SKIP", note=skipped.get("TransformerLens", "")))
    rows.append(row(f"steerlab, layer {half} (half depth) vs transformers", f"steerlab L{half}",
                    "transformers one layer", "transformers", ">= 1.3x", 1.3,
                    note="the transformers loop runs the whole forward whichever layer is read"))
    rows.append(row(f"steerlab, layer {early} (early) vs transformers", f"steerlab L{early}",
                    "transformers one layer", "transformers"))
    for layer in (half, early):
        if f"TL L{layer}" in t:
            rows.append(row(f"steerlab, layer {layer} vs TransformerLens stop_at_layer",
                            f"steerlab L{layer}", f"TL L{layer}", "TransformerLens"))
    return rows


# ---------------------------------------------------------------- section 2

def _probe(args: list[str], timeout: float = 3600) -> tuple[dict[str, Any], float]:
    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_OFFLINE": "1",
           "TQDM_DISABLE": "1"}
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, str(HERE / "probes.py"), *args], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=timeout, check=False)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"probe {args} failed ({proc.returncode}): {proc.stderr.strip()[-800:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1]), wall


def bench_memory(model: Any, P: dict[str, Any], out: dict[str, Any]) -> list:
    import statistics

    from benchutil import Row, judge

    n = model.n_layers
    early = max(1, n // 10)
    reps = P["mem_repeats"]
    base = ["--texts", str(P["mem_texts"]), "--layers", str(early)]
    big = f"{P['mem_factor']}x"
    res: dict[str, list[dict[str, Any]]] = {"1x": [], big: []}
    log(f"[memory] activation_stats at layer {early}, dataset x1 ({reps} runs) and "
        f"x{P['mem_factor']} (1 run), each in a fresh process")
    for _ in range(reps):
        r, _ = _probe(["memory", "--factor", "1", *base])
        res["1x"].append(r)
        log(f"    x1: peak {r['pass_peak_mib']:.0f} MiB (+{r['pass_growth_mib']:.0f} over the loaded model), "
            f"{r['tokens']} tokens in {r['seconds']:.0f} s")
    r, _ = _probe(["memory", "--factor", str(P["mem_factor"]), *base])
    res[big].append(r)
    log(f"    x{P['mem_factor']}: peak {r['pass_peak_mib']:.0f} MiB (+{r['pass_growth_mib']:.0f}), "
        f"{r['tokens']} tokens in {r['seconds']:.0f} s")
    one = statistics.median(x["pass_peak_mib"] for x in res["1x"])
    ten = statistics.median(x["pass_peak_mib"] for x in res[big])
    g1 = statistics.median(x["pass_growth_mib"] for x in res["1x"])
    g10 = statistics.median(x["pass_growth_mib"] for x in res[big])
    ratio = ten / one
    rows = [
        Row("2 statistics memory", f"peak RSS of the pass, x{P['mem_factor']} vs x1 (layer {early})", ten, "MiB",
            "x1", one, ratio, "x memory", "<= 1.10x (flat)", judge(ratio, at_most=1.10),
            f"fresh process per run, peak reset after model load; growth over the loaded model "
            f"x1 {g1:.0f} MiB, x{P['mem_factor']} {g10:.0f} MiB; "
            f"x1 = {res['1x'][0]['tokens']} tokens, x{P['mem_factor']} = {res[big][0]['tokens']} tokens",
            repeats=[x["pass_peak_mib"] for x in res["1x"]]),
    ]
    if P["mem_all_layers_texts"]:
        k = P["mem_all_layers_texts"]
        log(f"[memory] all {n + 1} layers, the {k} first texts: steerlab vs the transformers loop")
        s, _ = _probe(["memory", "--texts", str(k), "--layers", "all"])
        h, _ = _probe(["memory-hf", "--texts", str(k), "--layers", "all"])
        res["all_layers_steerlab"] = [s]
        res["all_layers_transformers"] = [h]
        rows.append(Row("2 statistics memory", f"pass growth, all layers, {k} texts: steerlab vs transformers",
                        s["pass_growth_mib"], "MiB", "transformers", h["pass_growth_mib"],
                        h["pass_growth_mib"] / max(s["pass_growth_mib"], 1e-9), "x less", "", "",
                        "memory the pass adds over the loaded model (one run each); the transformers "
                        "loop materialises [batch, seq, vocab] logits and all hidden states"))
    out["memory"] = res
    return rows


# ---------------------------------------------------------------- sections 3 and 4

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


def bench_sweep(model: Any, P: dict[str, Any], repeats: int, out: dict[str, Any]) -> list:
    import steerlab as sl
    from benchutil import Row, interleaved, judge

    layer = model.n_layers // 5
    v = make_vector_cached(model, layer)
    coefs = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    prompt = sl.load_dataset("prompts", "eval").texts[0]
    N = P["sweep_tokens"]

    def call(c: Any, sample: bool, n: int = N) -> list[list[int]]:
        res = sl.generate(model, prompt, v, coefficients=c, position="all", scale="raw", max_new_tokens=n, seed=0,
                          do_sample=sample, temperature=1.0, top_p=0.3)
        return [x.token_ids for x in res]

    log(f"[sweep] {len(coefs)} coefficients, {N} new tokens, position=all, {repeats} rounds; "
        "sampled (steerlab's default, top_p=0.3) and greedy")
    variants = {
        "batched": lambda: call(coefs, True),
        "sequential": lambda: [call(c, True)[0] for c in coefs],
        "batched greedy": lambda: call(coefs, False),
        "sequential greedy": lambda: [call(c, False)[0] for c in coefs],
    }
    warm = {
        "batched": lambda: call(coefs, True, 2),
        "sequential": lambda: call(coefs[0], True, 2),
        "batched greedy": lambda: call(coefs, False, 2),
        "sequential greedy": lambda: call(coefs[0], False, 2),
    }
    t = interleaved(variants, repeats, warmups=warm, log=log)
    same = t["batched"].value == t["sequential"].value
    same_greedy = t["batched greedy"].value == t["sequential greedy"].value
    out["sweep"] = {"seconds": {k: x.seconds for k, x in t.items()}, "coefficients": coefs,
                    "max_new_tokens": N, "same_tokens": same, "same_tokens_greedy": same_greedy}
    ratio = t["sequential"].median / t["batched"].median
    ratio_g = t["sequential greedy"].median / t["batched greedy"].median
    rows = [Row("4 coefficient sweep", f"{len(coefs)} coefficients, one batched steerlab.generate",
                t["batched"].median, "s", "8 sequential calls", t["sequential"].median, ratio, "x faster",
                ">= 4x", judge(ratio, at_least=4.0),
                f"{N} new tokens each, position=all, steerlab's default sampling (top_p=0.3, seed 0; each "
                f"row draws from its own generator seeded from the seed, its prompt and its addition, so "
                f"batched rows should equal the sequential ones: equal={same})",
                repeats=t["batched"].seconds, ratio_min=t["sequential"].min / t["batched"].min),
            Row("4 coefficient sweep", "the same, greedy decoding (do_sample=False)",
                t["batched greedy"].median, "s", "8 sequential calls", t["sequential greedy"].median, ratio_g,
                "x faster", "", "",
                f"greedy decoding has no sampling cost (a multinomial draw over the 49k vocabulary per "
                f"row and step, which batching does not amortise); greedy rows equal the sequential "
                f"ones: {same_greedy}",
                repeats=t["batched greedy"].seconds,
                ratio_min=t["sequential greedy"].min / t["batched greedy"].min)]
    g = out.get("gen", {})
    if "batch1" in g and "batch8" in g and g.get("max_new_tokens") == N:
        import statistics

        one = statistics.median(g["batch1"]["seconds"]["pristine generate"])
        eight = statistics.median(g["batch8"]["seconds"]["pristine generate"])
        rows.append(Row("4 coefficient sweep", "plain transformers, 8 x batch 1 vs one batch of 8",
                        eight, "s", "8 x batch 1", 8 * one, 8 * one / eight, "x faster", "", "",
                        "from section 3 (pristine model, 8 different prompts, same sampling): the "
                        "ceiling batching reaches on this machine without steerlab"))
    return rows


_VECTORS: dict[int, Any] = {}


def make_vector_cached(model: Any, layer: int) -> Any:
    from gen_bench import make_vector

    if layer not in _VECTORS:
        _VECTORS[layer] = make_vector(model, layer)
    return _VECTORS[layer]


# ---------------------------------------------------------------- section 5

def bench_load(model: Any, P: dict[str, Any], out: dict[str, Any]) -> list:
    import statistics

    from benchutil import Row, judge

    reps, greps, extras = P["load_repeats"], P["gguf_repeats"], P["load_extras"]
    # first-steered-token-hf is the baseline of the target row (the same job in plain transformers):
    # always run, also with --quick; first-token-hf (no vector, no steering) is for context.
    kinds = ["load-cached", "first-token", "first-steered-token-hf", "first-token-hf"] + (
        ["load-folder"] if extras else [])
    res: dict[str, list[dict[str, Any]]] = {k: [] for k in ("load-cached", "first-token", "load-folder",
                                                            "first-steered-token-hf", "first-token-hf",
                                                            "load-gguf")}
    log(f"[load] fresh processes, interleaved: {', '.join(kinds)} x{reps}, load-gguf x{greps}")
    if not extras or not greps:
        log("[load] --quick: GGUF route and plain-folder load skipped (about 30 s)")
    for i in range(max(reps, greps)):
        todo = list(kinds) if i < reps else []
        if i < greps:
            todo.append("load-gguf")
        for kind in todo:
            r, wall = _probe([kind])
            r["wall_s"] = wall
            res[kind].append(r)
            log(f"    {kind}: " + ", ".join(f"{k}={v:.2f}" for k, v in r.items() if isinstance(v, float)))
    out["load"] = res

    def med(kind: str, key: str) -> float | None:
        vals = [x[key] for x in res[kind] if key in x]
        return statistics.median(vals) if vals else None

    cached = med("load-cached", "load_s")
    again = med("load-cached", "reload_s")
    gguf = med("load-gguf", "load_s")
    folder = med("load-folder", "load_s")
    first, first_hf = med("first-token", "wall_s"), med("first-steered-token-hf", "wall_s")
    unsteered_hf = med("first-token-hf", "wall_s")
    same_token = {x.get("token") for x in res["first-token"]} == {x.get("token") for x in res["first-steered-token-hf"]}
    assert cached is not None and first is not None
    rows = [
        Row("5 model load", "steerlab.load_model() from cache, fresh process", cached, "s",
            "GGUF from_pretrained" if gguf else "", gguf, None if gguf is None else gguf / cached,
            "x faster", "", "",
            f"no absolute target (the former <= 3 s was retired: ~85% of it is transformers' own imports, "
            f"which plain transformers pays too; the first-token row below is the target); after `import steerlab` (median {med('load-cached', 'import_s'):.2f} s, not counted); "
            "includes the lazy imports of transformers' Llama code and nnsight, the weights, the "
            "fingerprint and the nnsight wrap"
            + ("" if gguf else "; GGUF route not run (--quick)")
            + (f"; GGUF: plain transformers from_pretrained(gguf_file=...), median of {greps}" if gguf else ""),
            repeats=[x["load_s"] for x in res["load-cached"]]),
        Row("5 model load", "steerlab.load_model() again, same process", again, "s", "first load", cached,
            None if again is None else cached / again, "x faster", "", "",
            "imports already done: what the checkpoint read, fingerprint and wrap cost"),
    ]
    if folder is not None:
        rows.append(Row("5 model load", "plain from_pretrained(cached folder), fresh process", folder, "s",
                        "steerlab.load_model()", cached, cached / folder, "x time", "", "",
                        "after `import transformers`; tokenizer + model, no nnsight, no fingerprint"))
    ratio_first = None if first_hf is None else first / first_hf
    rows.append(Row("5 model load", "first steered token, fresh process (wall)", first, "s",
                    "plain transformers, same job" if first_hf else "", first_hf,
                    ratio_first, "x time", "<= 1.00x", judge(ratio_first, at_most=1.0),
                    "python start -> import steerlab -> load_model (self-check included) -> counterbalanced "
                    "Love - Hate vector -> 1 greedy steered token; baseline: start -> import transformers -> "
                    "from_pretrained -> the vector from output_hidden_states -> a pre-hook -> 1 greedy token "
                    f"(same token: {same_token}). Split (median): import {med('first-token', 'import_s'):.2f} s, "
                    f"load {med('first-token', 'load_s'):.2f} s, vector {med('first-token', 'vector_s'):.2f} s, "
                    f"generate {med('first-token', 'generate_s'):.2f} s",
                    repeats=[x["wall_s"] for x in res["first-token"]]))
    if unsteered_hf is not None:
        rows.append(Row("5 model load", "first steered token vs plain transformers' first unsteered token", first,
                        "s", "plain transformers, 1 unsteered token", unsteered_hf, first / unsteered_hf, "x time",
                        note="context: the baseline before this row's target moved to the same job "
                             "(no vector, no steering)", repeats=[x["wall_s"] for x in res["first-token"]]))
    return rows


# ---------------------------------------------------------------- section 6

def _notebook_seconds(run_dir: Path) -> dict[str, float]:
    """Each executed notebook's papermill duration, by file name."""
    out: dict[str, float] = {}
    for nb in sorted(run_dir.glob("*.ipynb")):
        try:
            meta = json.loads(nb.read_text()).get("metadata", {}).get("papermill", {})
        except (OSError, ValueError):
            continue
        if meta.get("duration") is not None:
            out[nb.name] = float(meta["duration"])
    return out


# The time budgets the issues set for `make run` with default parameters, on 2 cores.
SUITE_BUDGETS = (
    ("all notebooks", lambda names: True, 900.0),
    ("01 + 02 (bias, interpret)", lambda names: names[:2] in ("01", "02"), 300.0),
    ("04 (compare, default preset)", lambda names: names[:2] == "04", 360.0),
)
RUN_FOLDER_MB = 25.0  # a default run folder, every file in it (issue 25)


def _suite_rows(run_dir: Path, seconds: dict[str, float], wall: float | None, note: str) -> list:
    from benchutil import Row, judge

    rows = []
    if wall is not None:
        rows.append(Row("6 whole suite", "make run wall time (set-up done, statistics cache cold)", wall, "s",
                        note=note))
    if run_dir.is_dir() and seconds:
        size = sum(f.stat().st_size for f in run_dir.rglob("*") if f.is_file() and not f.is_symlink()) / 2**20
        figures = len(list((run_dir / "figures").glob("*.json")))
        rows.append(Row("6 whole suite", "run folder size (every notebook, default parameters)", size, "MB",
                        "budget", RUN_FOLDER_MB, size / RUN_FOLDER_MB, "x budget",
                        f"<= 1.00x ({RUN_FOLDER_MB:.0f} MB)", judge(size / RUN_FOLDER_MB, at_most=1.0),
                        note=f"{figures} figures, {len(seconds)} notebooks, one shared plotly.min.js; {run_dir}"))
    for label, pick, budget in SUITE_BUDGETS:
        picked = [v for k, v in seconds.items() if pick(k)]
        if not picked:
            continue
        total = sum(picked)
        rows.append(Row("6 whole suite", f"notebooks {label}", total, "s", "budget", budget, total / budget,
                        "x budget", f"<= 1.00x ({budget:.0f} s)", judge(total / budget, at_most=1.0),
                        note=f"papermill durations from {run_dir}"))
    return rows


# The comparison's budgets per model (issue 23), on the project's 2-core machine.
COMPARE_BUDGETS = {"default": 360.0, "full": 1800.0}


def compare_budget_rows(results: Path = ROOT / "docs" / "results") -> list:
    """One row per model and preset of notebook 04: the recorded run's papermill seconds against its
    budget, with the CPU it ran on (its bfloat16 flags), from ``docs/results/compare-*.json`` (the
    runs the README reports, collected by ``scripts/findings.py``); a preset never recorded is a
    SKIP row saying so, not a number."""
    from benchutil import Row, judge

    recorded: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(results.glob("compare-*.json")):
        res = json.loads(path.read_text(encoding="utf-8"))
        recorded[(res["model"], res["preset"])] = {**res, "file": path.name}
    rows = []
    for model in sorted({m for m, _ in recorded}):
        for preset, budget in COMPARE_BUDGETS.items():
            res = recorded.get((model, preset))
            name = f"04 {preset} preset, {model}"
            if res is None or not res.get("seconds"):
                rows.append(Row("6 whole suite", name, None, "s", "budget", budget, None, "x budget",
                                f"<= 1.00x ({budget:.0f} s)", "SKIP",
                                note="not run to completion on this machine: no recorded result"))
                continue
            secs = float(res["seconds"])
            rows.append(Row("6 whole suite", name, secs, "s", "budget", budget, secs / budget, "x budget",
                            f"<= 1.00x ({budget:.0f} s)", judge(secs / budget, at_most=1.0),
                            note=f"recorded {res['date']} on {res['cpu']} ({res['file']})"))
    return rows


def bench_suite(run_suite: bool, out: dict[str, Any]) -> list:
    from benchutil import Row

    runs = ROOT / "runs"
    if run_suite:
        import shutil
        import tempfile

        from steerlab.models import cache_root

        # A fresh statistics cache (the model checkpoint linked in), as on a new machine
        # after `make setup`: notebooks that share statistics still share them within the run.
        cache = Path(tempfile.mkdtemp(prefix="steerlab-bench-cache-"))
        (cache / "models").symlink_to((cache_root() / "models").resolve(), target_is_directory=True)
        log(f"[suite] running `make run` (every notebook, default parameters, statistics cache {cache}) ...")
        before = {d.name for d in runs.glob("*")} if runs.is_dir() else set()
        started = time.perf_counter()
        proc = subprocess.run(["make", "run"], cwd=ROOT, capture_output=True, text=True, check=False,
                              env={**os.environ, "STEERLAB_CACHE": str(cache)})
        wall = time.perf_counter() - started
        shutil.rmtree(cache, ignore_errors=True)
        new = [d for d in runs.glob("*") if d.name not in before and d.is_dir() and not d.is_symlink()]
        run_dir = new[0] if new else None
        seconds = _notebook_seconds(run_dir) if run_dir else {}
        out["suite"] = {"source": "make run (this benchmark)", "seconds": wall, "returncode": proc.returncode,
                        "run_dir": str(run_dir), "notebooks": seconds,
                        "tail": proc.stdout[-2000:] + proc.stderr[-2000:]}
        note = "measured now" + ("" if proc.returncode == 0 else f"; make run FAILED ({proc.returncode})")
        return _suite_rows(run_dir or runs, seconds, wall, note)
    dirs = sorted((d for d in runs.glob("*") if d.is_dir() and not d.is_symlink()),
                  key=lambda d: d.stat().st_mtime) if runs.is_dir() else []
    for d in reversed(dirs):
        seconds = _notebook_seconds(d)
        if len(seconds) >= 2:
            out["suite"] = {"source": str(d), "notebooks": seconds}
            return _suite_rows(d, seconds, None, "")
    out["suite"] = {"source": None, "seconds": None}
    log("[suite] not measured (no runs/*/ with executed notebooks; pass --suite to run `make run`)")
    return [Row("6 whole suite", "make run wall time: not measured", None, "s",
                note="no runs/*/ folder with two or more executed notebooks; pass --suite to time `make run`")]


# ---------------------------------------------------------------- section 7

def bench_bf16(model: Any, P: dict[str, Any], repeats: int, out: dict[str, Any]) -> list:
    import steerlab as sl
    from benchutil import Row, interleaved, loadavg
    from bf16_bench import (
        GREEDY_MIN_EQUAL_SHARE,
        LENS_MIN_TOP10_OVERLAP,
        STATS_MAX_NORM_REL_ERR,
        STATS_MIN_COSINE,
        common_prefix_share,
        equal_share,
        greedy,
        lens_lists,
        load_bf16,
        replay,
        replay_agreement,
        stats_agreement,
        stats_pass,
        stats_texts,
    )

    sec = "7 bfloat16 vs float32 (CPU)"
    bf16, how = load_bf16()
    flags = _cpu_flags()
    log(f"[bf16] bfloat16 copy by {how}; CPU flags: {', '.join(flags) or 'none of avx512_bf16/amx'}")
    res: dict[str, Any] = {"how": how, "cpu_flags": flags}
    out["bf16"] = res
    rows: list = []

    # statistics
    n, length = P["bf16_stats_texts"], P["bf16_stats_length"]
    texts = stats_texts(model, n, length)
    log(f"[bf16] statistics, all layers, {n} texts x {length} tokens, {repeats} rounds")
    t = interleaved({"fp32": lambda: stats_pass(model, texts, length),
                     "bf16": lambda: stats_pass(bf16, texts, length)}, repeats,
                    warmups={"fp32": lambda: stats_pass(model, texts[:2], 16),
                             "bf16": lambda: stats_pass(bf16, texts[:2], 16)}, log=log)
    agree = stats_agreement(t["fp32"].value, t["bf16"].value)
    tokens = n * length
    ratio = t["fp32"].median / t["bf16"].median
    ok = agree["max_norm_rel_err"] <= STATS_MAX_NORM_REL_ERR and agree["min_cosine"] >= STATS_MIN_COSINE
    res["stats"] = {"seconds": {k: v.seconds for k, v in t.items()}, "tokens": tokens, "agreement": agree}
    rows.append(Row(sec, f"statistics, all layers, {n} x {length} tokens: bf16 vs fp32", tokens / t["bf16"].median,
                    "tok/s", "fp32", tokens / t["fp32"].median, ratio, "x faster", "", "",
                    "activation_stats(cache=False), float64 accumulation in both", repeats=t["bf16"].seconds,
                    ratio_min=t["fp32"].min / t["bf16"].min))
    rows.append(Row(sec, "statistics agreement: max rel. error of |mean|, min cosine", agree["max_norm_rel_err"], "",
                    "min cosine", agree["min_cosine"], None, "",
                    f"<= {STATS_MAX_NORM_REL_ERR} and >= {STATS_MIN_COSINE}", "PASS" if ok else "MISS",
                    f"over layers 0..{model.n_layers}; worst |mean| at layer {agree['worst_layer_norm']}, "
                    f"worst cosine at layer {agree['worst_layer_cosine']}"))

    # steered generation, greedy
    layer = model.n_layers // 5
    v = make_vector_cached(model, layer)
    add = 4.0 * v.at(layer)
    prompts_all = sl.load_dataset("prompts").texts
    N = P["bf16_gen_tokens"]
    res["gen"] = {"layer": layer, "coefficient_raw": 4.0, "max_new_tokens": N}
    for bs in P["bf16_gen_batches"]:
        prompts = prompts_all[:bs]
        log(f"[bf16] greedy steered generation, batch {bs}, {N} tokens, {repeats} rounds")
        runs: dict[str, Callable[[], Any]] = {
            "fp32": functools.partial(greedy, model, prompts, add, layer, N),
            "bf16": functools.partial(greedy, bf16, prompts, add, layer, N)}
        warm: dict[str, Callable[[], Any]] = {
            "fp32": functools.partial(greedy, model, prompts, add, layer, 2),
            "bf16": functools.partial(greedy, bf16, prompts, add, layer, 2)}
        t = interleaved(runs, repeats, warmups=warm, log=log)
        share = equal_share(t["fp32"].value, t["bf16"].value)
        prefix = common_prefix_share(t["fp32"].value, t["bf16"].value)
        ratio = t["fp32"].median / t["bf16"].median
        res["gen"][f"batch{bs}"] = {"seconds": {k: x.seconds for k, x in t.items()}, "equal_share": share,
                                    "common_prefix_share": prefix,
                                    "tokens": {k: x.value for k, x in t.items()}}
        rows.append(Row(sec, f"steered greedy generation, batch {bs}, {N} tokens: bf16 vs fp32", t["bf16"].median,
                        "s", "fp32", t["fp32"].median, ratio, "x faster", "", "",
                        f"steered_generate, layer {layer}, 4 x a Love-Hate vector, rows stop at EOS; rows with "
                        f"the same tokens as fp32: {share:.0%} (decision threshold {GREEDY_MIN_EQUAL_SHARE:.0%}); "
                        f"mean share of a row equal before the first difference: {prefix:.0%}",
                        repeats=t["bf16"].seconds, ratio_min=t["fp32"].min / t["bf16"].min))

    # block replay
    k, length = P["bf16_replay_conditions"], P["bf16_replay_length"]
    rtexts = sl.load_dataset("general", "heldout").texts[: P["bf16_replay_texts"]]
    adds = [None] + [float(c) * v.at(layer) for c in range(1, k + 1)]
    log(f"[bf16] block replay, {len(rtexts)} texts x {length} tokens, {k} conditions + plain, {repeats} rounds")
    t = interleaved({"fp32": lambda: replay(model, rtexts, adds, layer, length),
                     "bf16": lambda: replay(bf16, rtexts, adds, layer, length)}, repeats,
                    warmups={"fp32": lambda: replay(model, rtexts[:1], adds[:2], layer, 8),
                             "bf16": lambda: replay(bf16, rtexts[:1], adds[:2], layer, 8)}, log=log)
    agree_r = replay_agreement(model, bf16, rtexts, adds, layer, length)
    res["replay"] = {"seconds": {k2: x.seconds for k2, x in t.items()}, "agreement": agree_r}
    rows.append(Row(sec, f"block replay, {k + 1} conditions: bf16 vs fp32", t["bf16"].median, "s", "fp32",
                    t["fp32"].median, t["fp32"].median / t["bf16"].median, "x faster", "", "",
                    f"steered_logits_each from layer {layer}; max |logit diff| {agree_r['max_abs_logit_diff']:.3f} "
                    f"({agree_r['relative']:.1%} of the largest logit, {agree_r['max_abs_logit']:.1f}; at position "
                    f"{agree_r['worst_position']}), mean |diff| {agree_r['mean_abs_logit_diff']:.3f}; next-token "
                    f"argmax equal at {agree_r['argmax_equal_share']:.1%} of positions",
                    repeats=t["bf16"].seconds, ratio_min=t["fp32"].min / t["bf16"].min))

    # lens
    lens_layers = sorted({layer, model.n_layers // 2, (4 * model.n_layers) // 5})
    vecs: dict[str, Any] = {}
    for plus, minus in (("Love", "Hate"), ("Dragon", "Football")):
        cv = sl.counterbalanced(model, plus, minus, lens_layers, position="last", cache=False, progress=False)
        vecs.update({f"{plus}-{minus}@{la}": cv.at(la) for la in lens_layers})
    a, b = lens_lists(model, vecs), lens_lists(bf16, vecs)
    same = [name for name in vecs if a[name] == b[name]]
    overlap = sum(len(set(a[name]) & set(b[name])) for name in vecs) / (10 * len(vecs))
    top1 = sum(a[name][0] == b[name][0] for name in vecs)
    res["lens"] = {"fp32": a, "bf16": b, "equal": same, "top1_equal": top1, "top10_overlap": overlap}
    lens_ok = top1 == len(vecs) and overlap >= LENS_MIN_TOP10_OVERLAP
    rows.append(Row(sec, "lens: top-10 overlap with fp32's (top-1 all equal?)", overlap, "", "top-1 equal",
                    float(top1), None, "", f"top-1 all, >= {LENS_MIN_TOP10_OVERLAP:.0%}", "PASS" if lens_ok else "MISS",
                    f"{len(vecs)} vectors (counterbalanced pairs at layers {lens_layers}); top-1 equal {top1} of "
                    f"{len(vecs)}; identical top-10 lists {len(same)} of {len(vecs)}"))
    res["loadavg_end"] = loadavg()
    return rows


def _cpu_flags() -> list[str]:
    from steerlab.load import cpu_model_and_flags

    flags = cpu_model_and_flags()[1]
    return sorted(f for f in ("avx512_bf16", "amx_bf16", "avx512_vnni", "avx512f") if f in flags)


# ---------------------------------------------------------------- section 8

def bench_protocol(model: Any, P: dict[str, Any], repeats: int, out: dict[str, Any]) -> list:
    import steerlab as sl
    from benchutil import Row, interleaved
    from protocol_bench import (
        batched_generation,
        conditions,
        max_score_diff,
        naive_text_scores,
        per_condition_generation,
        replayed_text_scores,
    )

    sec = "8 comparison protocol"
    layer = model.n_layers // 2
    v = sl.counterbalanced(model, "Love", "Hate", [layer], position="last", cache=False, progress=False)
    adds = conditions(model, v, layer, P["protocol_conditions"])
    n_cond = len(adds)
    texts = sl.load_dataset("general", "heldout").texts[: P["protocol_texts"]]
    log(f"[protocol] forward metrics: {n_cond} conditions (control + {n_cond - 1} coefficients) at layer {layer}, "
        f"{len(texts)} texts x 64 tokens, {repeats} rounds")
    t = interleaved({"replay": lambda: replayed_text_scores(model, texts, adds, layer=layer),
                     "naive": lambda: naive_text_scores(model, texts, adds, layer=layer)}, repeats,
                    warmups={"replay": lambda: replayed_text_scores(model, texts[:1], adds[:2], layer=layer,
                                                                    max_length=8),
                             "naive": lambda: naive_text_scores(model, texts[:1], adds[:2], layer=layer,
                                                                max_length=8)}, log=log)
    diff = max_score_diff(t["replay"].value, t["naive"].value)
    res: dict[str, Any] = {"layer": layer, "conditions": n_cond,
                           "forward": {"seconds": {k: x.seconds for k, x in t.items()}, "max_score_diff": diff}}
    out["protocol"] = res
    rows = [Row(sec, "forward metrics: steered_text_scores (replay) vs a full forward each",
                n_cond / t["replay"].median, "cond/s", "full forward each", n_cond / t["naive"].median,
                t["naive"].median / t["replay"].median, "x faster", "", "",
                f"{n_cond} conditions of one (method, layer) on {len(texts)} general texts; layer {layer} of "
                f"{model.n_layers}, so replay skips {layer} blocks per condition; max |score diff| {diff:.1e}",
                repeats=t["replay"].seconds, ratio_min=t["naive"].min / t["replay"].min)]

    prompts = sl.load_dataset("prompts").sample(P["protocol_prompts"], seed=0).texts
    N = P["protocol_tokens"]
    log(f"[protocol] generation metrics: {n_cond} conditions x {len(prompts)} prompts, {N} greedy tokens, "
        f"{repeats} rounds")
    t = interleaved({"batched": lambda: batched_generation(model, prompts, adds, layer=layer, n=N),
                     "per condition": lambda: per_condition_generation(model, prompts, adds, layer=layer, n=N)},
                    repeats,
                    warmups={"batched": lambda: batched_generation(model, prompts, adds, layer=layer, n=2),
                             "per condition": lambda: per_condition_generation(model, prompts, adds[:1],
                                                                               layer=layer, n=2)}, log=log)
    same = t["batched"].value == t["per condition"].value
    res["generation"] = {"seconds": {k: x.seconds for k, x in t.items()}, "same_tokens": same,
                         "prompts": len(prompts), "max_new_tokens": N}
    rows.append(Row(sec, "generation metrics: one batched call vs one call per condition",
                    n_cond / t["batched"].median, "cond/s", "one call per condition",
                    n_cond / t["per condition"].median, t["per condition"].median / t["batched"].median,
                    "x faster", "", "",
                    f"steered_generate over {n_cond} conditions x {len(prompts)} prompts (batch "
                    f"{n_cond * len(prompts)}) vs {n_cond} calls of batch {len(prompts)}; greedy, {N} tokens; "
                    f"same tokens: {same}",
                    repeats=t["batched"].seconds, ratio_min=t["per condition"].min / t["batched"].min))

    # The comparison's forward-pass scores in bfloat16 (CompareConfig.score_dtype="auto" on a CPU
    # with bfloat16 units) against float32, on one cell of the default preset.
    from protocol_bench import (
        SCORE_MAX_PPL_RATIO_REL_ERR,
        SCORE_MAX_STEER_DIFF_OF_CI,
        cell_inputs,
        cell_scores,
        score_agreement,
    )
    from steerlab.load import cast, fast_dtype

    cell = cell_inputs(model, methods=P["protocol_cell_methods"])
    if P["protocol_cell_general"]:
        cell["general"] = cell["general"][:P["protocol_cell_general"]]
        cell["targets"], cell["others"] = cell["targets"][:2], cell["others"][:2]
    half = cast(model, "bfloat16")
    log(f"[protocol] one comparison cell ({len(cell['vectors'])} methods, {len(cell['additions'])} conditions, "
        f"layer {cell['layer']}): forward-pass scores bfloat16 vs float32, {repeats} rounds")
    small = {**cell, "general": cell["general"][:1], "targets": cell["targets"][:1], "others": cell["others"][:1]}
    t = interleaved({"bfloat16": lambda: cell_scores(half, cell), "float32": lambda: cell_scores(model, cell)},
                    repeats, log=log, warmups={"bfloat16": lambda: cell_scores(half, small),
                                               "float32": lambda: cell_scores(model, small)})
    agree = score_agreement(t["bfloat16"].value, t["float32"].value)
    ratio = t["float32"].median / t["bfloat16"].median
    res["cell_scores"] = {"seconds": {k: x.seconds for k, x in t.items()}, **agree,
                          "fast_dtype_here": str(fast_dtype(model.device)),
                          "values": {k: x.value for k, x in t.items()}}
    rows.append(Row(sec, "comparison cell's forward-pass scores: bfloat16 vs float32", t["bfloat16"].median, "s",
                    "float32", t["float32"].median, ratio, "x faster",
                    f">= 1.00x and agrees (steerability within {SCORE_MAX_STEER_DIFF_OF_CI:.2f} CI half-widths, "
                    f"perplexity ratio within {SCORE_MAX_PPL_RATIO_REL_ERR:.0%})",
                    "PASS" if ratio >= 1.0 and agree["agrees"] else "MISS",
                    f"steerability_each + steered_text_scores of {len(cell['vectors'])} methods at layer "
                    f"{cell['layer']}, position all; largest steerability difference "
                    f"{agree['steer_diff_of_ci']:.3f} CI half-widths, perplexity ratio "
                    f"{agree['ppl_ratio_rel_err']:.1%}, KL {agree['kl_abs_diff']:.3f} nats; fast_dtype here: "
                    f"{fast_dtype(model.device)}",
                    repeats=t["bfloat16"].seconds, ratio_min=t["float32"].min / t["bfloat16"].min))

    # Steerability's two continuations of an opening from one packed sequence (4D mask), against
    # every row alone, on the dtype the comparison scores in.
    from protocol_bench import steer_agreement, steer_scores

    scorer = cast(model, fast_dtype(model.device))
    log(f"[protocol] steerability of the cell ({len(cell['vectors'])} methods, {scorer.dtype}): shared openings "
        f"vs one row each, {repeats} rounds")
    t = interleaved({"shared": lambda: steer_scores(scorer, cell, share_openings=True),
                     "alone": lambda: steer_scores(scorer, cell, share_openings=False)}, repeats, log=log,
                    warmups={"shared": lambda: steer_scores(scorer, small, share_openings=True),
                             "alone": lambda: steer_scores(scorer, small, share_openings=False)})
    diff = steer_agreement(t["shared"].value, t["alone"].value)
    ratio = t["alone"].median / t["shared"].median
    res["steer_shared_openings"] = {"seconds": {k: x.seconds for k, x in t.items()}, "steer_diff_of_ci": diff,
                                    "dtype": str(scorer.dtype), "values": {k: x.value for k, x in t.items()}}
    rows.append(Row(sec, "steerability: shared openings vs one row each", t["shared"].median, "s",
                    "one row each", t["alone"].median, ratio, "x faster",
                    f">= 1.00x and steerability within {SCORE_MAX_STEER_DIFF_OF_CI:.2f} CI half-widths",
                    "PASS" if ratio >= 1.0 and diff <= SCORE_MAX_STEER_DIFF_OF_CI else "MISS",
                    f"steerability_each of {len(cell['vectors'])} methods at layer {cell['layer']}, position all, "
                    f"{scorer.dtype}; largest difference {diff:.4f} CI half-widths",
                    repeats=t["shared"].seconds, ratio_min=t["alone"].min / t["shared"].min))
    return rows


# ---------------------------------------------------------------- section 9

def bench_slider(model: Any, P: dict[str, Any], repeats: int, out: dict[str, Any]) -> list:
    import statistics

    from benchutil import Row, interleaved, judge, loadavg
    from slider_bench import Burner, Widget, plain_generate

    sec = "9 widget slider"
    N = P["slider_tokens"]
    log(f"[slider] SteeringWidget(background=False), {N} new tokens; building its statistics once ...")
    ui = Widget(model, N)
    prompt = ui.ui.settings()["prompt"].strip()
    res: dict[str, Any] = {"max_new_tokens": N, "source": ui.source}
    out["slider"] = res
    rows: list = []
    try:
        for load in (False, True):
            burner = Burner(P["slider_load_seconds"]) if load else None
            label = "with a busy process" if load else "no other load"
            log(f"[slider] {label}, {repeats} rounds")
            try:
                t = interleaved({
                    "steered": lambda: ui.update(pair=False),
                    "pair": lambda: ui.update(pair=True),
                    "plain 1": lambda: plain_generate(model, prompt, N),
                    "plain 2": lambda: [plain_generate(model, prompt, N) for _ in range(2)],
                    "plain first": lambda: plain_generate(model, prompt, 1),
                }, repeats, log=log, keep_values=True)
                avg = loadavg()
            finally:
                if burner is not None:
                    burner.close()
            key = "load" if load else "quiet"
            steered, pairs = t["steered"].values, t["pair"].values
            res[key] = {"seconds": {k: x.seconds for k, x in t.items()}, "steered_updates": steered,
                        "pair_updates": pairs, "loadavg": avg}

            def med(xs: list[dict[str, float]], field: str) -> float:
                return statistics.median(x[field] for x in xs)

            first = med(steered, "first_steered_token_s")
            first_pair = med(pairs, "first_steered_token_s")
            done = med(pairs, "complete_s")
            plain_first, plain_two = t["plain first"].median, t["plain 2"].median
            tq = "" if load else "<= 0.5 s"
            tc = "" if load else "<= 2.5 s"
            rows.append(Row(sec, f"{label}: first steered token (unsteered cached)", first, "s",
                            "plain 1-token generate", plain_first, first / plain_first, "x time", tq,
                            judge(first, at_most=0.5) if tq else "",
                            f"{ui.source}; prefill proxy {med(steered, 'proxy_first_steered_token_s'):.2f} s"))
            rows.append(Row(sec, f"{label}: first steered token, pair (unsteered not cached)", first_pair, "s",
                            "plain 1-token generate", plain_first, first_pair / plain_first, "x time", "", "",
                            f"unsteered cache dropped before the move; prefill proxy "
                            f"{med(pairs, 'proxy_first_steered_token_s'):.2f} s"))
            rows.append(Row(sec, f"{label}: complete {N}-token pair", done, "s",
                            f"2 plain {N}-token generates", plain_two, done / plain_two, "x time", tc,
                            judge(done, at_most=2.5) if tc else "",
                            f"{ui.source}; the whole assignment (vector, lens, completions, scores, HTML) "
                            f"{med(pairs, 'assignment_s'):.2f} s; steered only (unsteered cached): "
                            f"{med(steered, 'complete_s'):.2f} s"
                            + (f"; load average during the rounds {avg}" if load else "")))
    finally:
        ui.close()
    return rows


# ---------------------------------------------------------------- section 10

def bench_roofline(model: Any, P: dict[str, Any], repeats: int, out: dict[str, Any], batch: int = 0) -> list:
    from roofline_bench import run_roofline

    return run_roofline(model, P, repeats, out, batch=batch, log=log)


# ---------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: fewer tokens, a few minutes")
    parser.add_argument("--suite", action="store_true", help="also run and time `make run` (long)")
    parser.add_argument("--only", default="", help=f"comma-separated sections of {','.join(SECTIONS)}")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds per variant (median; >= 3)")
    parser.add_argument("--gen-repeats", type=int, default=0,
                        help="rounds for generation and the sweep (default 7 in a full run, else --repeats)")
    parser.add_argument("--no-peers", action="store_true", help="skip nnsight-naive and TransformerLens")
    parser.add_argument("--roof-batch", type=int, default=0,
                        help="roofline: generation conditions x prompts (default 224 full, 32 quick); a smaller "
                             "batch keeps the section short on a loaded machine")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="folder for the JSON results")
    args = parser.parse_args(argv)
    if args.repeats < 3 or (args.gen_repeats and args.gen_repeats < 3):
        parser.error("repeats must be at least 3 (the table reports medians)")
    if not args.gen_repeats:
        # Generation calls are short, so more rounds are cheap and steady the medians.
        args.gen_repeats = args.repeats if args.quick else max(7, args.repeats)
    chosen = [s for s in args.only.split(",") if s] or list(SECTIONS)
    unknown = [s for s in chosen if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {unknown}; choose from {SECTIONS}")

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    import transformers

    transformers.utils.logging.disable_progress_bar()
    import steerlab as sl
    from benchutil import Row, env_summary, loadavg, render_table

    P = params_for(args.quick)
    started = time.perf_counter()
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out: dict[str, Any] = {"timestamp": stamp, "mode": "quick" if args.quick else "full",
                           "repeats": args.repeats, "gen_repeats": args.gen_repeats, "params": P, "sections": chosen, "env": env_summary()}
    log(f"steerlab benchmark ({out['mode']}), sections {','.join(chosen)}; torch threads "
        f"{torch.get_num_threads()}, load average {loadavg()}")
    model = plain = None
    if any(s in chosen for s in ("stats", "memory", "gen", "sweep", "load", "bf16", "protocol", "slider",
                                 "roofline")):
        t0 = time.perf_counter()
        model = sl.load_model(progress=False)
        log(f"model {model!r} loaded in {time.perf_counter() - t0:.1f} s")
    if any(s in chosen for s in ("stats", "gen")):
        from gen_bench import pristine_model

        assert model is not None
        plain = pristine_model(model)  # the plain-transformers baselines run on this copy
    rows: list[Row] = []
    section_seconds: dict[str, float] = {}
    for name in chosen:
        s0 = time.perf_counter()
        try:
            if name == "stats":
                rows += bench_stats(model, plain, P, args.repeats, not args.no_peers, out)
            elif name == "memory":
                rows += bench_memory(model, P, out)
            elif name == "gen":
                rows += bench_gen(model, plain, P, args.gen_repeats, out)
            elif name == "sweep":
                rows += bench_sweep(model, P, args.gen_repeats, out)
            elif name == "load":
                rows += bench_load(model, P, out)
            elif name == "suite":
                rows += bench_suite(args.suite, out) + compare_budget_rows()
            elif name == "bf16":
                rows += bench_bf16(model, P, args.repeats, out)
            elif name == "protocol":
                rows += bench_protocol(model, P, args.repeats, out)
            elif name == "slider":
                rows += bench_slider(model, P, args.repeats, out)
            elif name == "roofline":
                rows += bench_roofline(model, P, args.repeats, out, batch=args.roof_batch)
        except Exception as err:  # noqa: BLE001 - one broken section must not lose the others' results
            import traceback

            traceback.print_exc()
            rows.append(Row(name, f"{name}: FAILED", None, "", status="MISS", note=f"{type(err).__name__}: {err}"))
            out.setdefault("errors", {})[name] = traceback.format_exc()
        section_seconds[name] = time.perf_counter() - s0
        out.setdefault("loadavg_after_section", {})[name] = loadavg()
        log(f"[{name}] done in {section_seconds[name]:.0f} s")
    out["rows"] = [r.as_dict() for r in rows]
    out["section_seconds"] = section_seconds
    out["total_seconds"] = time.perf_counter() - started
    out["env"]["loadavg_end"] = loadavg()
    table = render_table(rows)
    print()
    print(table)
    misses = [r.name for r in rows if r.status == "MISS"]
    passes = [r.name for r in rows if r.status == "PASS"]
    print(f"\ntargets: {len(passes)} PASS, {len(misses)} MISS; total {out['total_seconds']:.0f} s; "
          f"load average at end {out['env']['loadavg_end']} on {out['env']['cpus']} cpus")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{stamp}{'-quick' if args.quick else ''}.json"
    path.write_text(json.dumps(out, indent=2, default=str))
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
