"""Section 4 of the benchmark: a coefficient sweep in one batched call against one call per coefficient."""

from __future__ import annotations

from typing import Any

from benchutil import log


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
