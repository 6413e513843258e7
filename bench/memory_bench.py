"""Section 2 of the benchmark: the statistics pass's peak memory, measured in fresh processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

from benchutil import HERE, ROOT, log


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
