"""Section 5 of the benchmark: loading the embedded model (cached checkpoint, GGUF, a plain folder)."""

from __future__ import annotations

from typing import Any

from benchutil import log
from memory_bench import _probe


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
