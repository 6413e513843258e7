"""steerlab benchmark: steerlab against plain transformers, a plain PyTorch hook
and peer libraries, on the embedded SmolLM2-135M-Instruct, with ratios. This file is the driver:
each section lives in its own ``*_bench.py`` (``bench_<section>``).

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
import json
import os
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchutil import HERE, log
from bf16_bench import bench_bf16
from bf16_generation_bench import bench_bf16_generation
from cell_bench import bench_cell
from gen_bench import bench_gen
from load_bench import bench_load
from memory_bench import bench_memory
from protocol_bench import bench_protocol
from roofline_bench import bench_roofline
from slider_bench import bench_slider
from soak_bench import soak_rows, widget_rows
from stats_bench import bench_stats
from suite_bench import bench_suite, compare_budget_rows
from sweep_bench import bench_sweep

SECTIONS = ("stats", "memory", "gen", "sweep", "load", "suite", "bf16", "protocol", "slider", "roofline", "soak",
            "bf16gen", "cell")


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



# ---------------------------------------------------------------- section 2





# ---------------------------------------------------------------- sections 3 and 4











# ---------------------------------------------------------------- section 5



# ---------------------------------------------------------------- section 6













# ---------------------------------------------------------------- section 7





# ---------------------------------------------------------------- section 8



# ---------------------------------------------------------------- section 9



# ---------------------------------------------------------------- section 10



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
                                 "roofline", "soak")):
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
            elif name == "soak":
                rows += soak_rows(model, blocks=200 if args.quick else 1000, warmup=50 if args.quick else 100)
                rows += widget_rows(model, changes=100 if args.quick else 1000, warmup=20 if args.quick else 50)
            elif name == "bf16gen":
                rows += bench_bf16_generation([None, "gemma3-270m"], preset="quick" if args.quick else "default")
            elif name == "cell":
                rows += bench_cell(out, quick=args.quick)
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
