"""Where the time of steered generation goes (the investigation behind bench/README.md).

    .venv/bin/python bench/profile_gen.py                # overhead table + cProfile
    .venv/bin/python bench/profile_gen.py --tokens 64 --batch 1 --repeats 7

Two measurements:

1. Framework overhead per generation step, isolated on a *tiny* Llama with the
   embedded model's layout (30 blocks, same module tree, hidden size 64, random
   weights): its arithmetic is negligible, so the difference between variants
   is the Python each one adds per step (nnsight's per-module controllers, its
   interleaver, a plain hook). Measured as CPU time with one torch thread, which
   other work on the machine barely changes; medians and minimums are shown.
2. cProfile of one steered ``steerlab.generate`` call on the real model, against
   the same call of ``hf.generate`` on a copy nnsight never wrapped, by
   function-call counts (which other load on the machine does not change) and
   time.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _cpu_time(fn: Any, repeats: int, warm: bool = True) -> list[float]:
    """CPU seconds of this process per call (one torch thread: CPU time then
    counts only while the call actually runs, so other load barely moves it)."""
    if warm:
        fn()
    out = []
    for _ in range(repeats):
        t = time.process_time()
        fn()
        out.append(time.process_time() - t)
    return out


def tiny_overhead(batch: int, tokens: int, repeats: int) -> None:
    import steerlab as sl
    import transformers
    from gen_bench import hf_generate, hook_generate, steerlab_generate
    from steerlab.load import _wrap
    from transformers import LlamaConfig, LlamaForCausalLM

    real_tok = sl.load_model(progress=False).tokenizer
    cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=30, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=len(real_tok), max_position_embeddings=2048,
                      tie_word_embeddings=True)
    torch.manual_seed(0)
    hf = LlamaForCausalLM(cfg).eval()
    plain = LlamaForCausalLM(cfg).eval()
    plain.load_state_dict(hf.state_dict())
    model = _wrap(hf, real_tok, "tiny-llama-30", "random", time.perf_counter())
    layer = 6
    vec = torch.randn(64)
    v = sl.SteeringVector({layer: vec}, model.name, model.fingerprint, 64, "random", {}, "first")
    prompts = sl.load_dataset("prompts", "eval").texts[:batch]
    variants = {
        "pristine transformers generate": lambda: hf_generate(model, prompts, tokens, hf=plain),
        "model.hf.generate (nnsight-wrapped, no trace)": lambda: hf_generate(model, prompts, tokens),
        "plain pre-hook, position=all (pristine)": lambda: hook_generate(model, prompts, vec, layer, "all",
                                                                        tokens, hf=plain),
        "steerlab.generate, no vector": lambda: steerlab_generate(model, prompts, None, 0.0, "first", tokens,
                                                                  layer=layer),
        "steerlab.generate position=first": lambda: steerlab_generate(model, prompts, v, 1.0, "first", tokens),
        "steerlab.generate position=all": lambda: steerlab_generate(model, prompts, v, 1.0, "all", tokens),
    }
    print(f"tiny 30-layer Llama (d=64), batch {batch}, {tokens} new tokens, {repeats} repeats, "
          f"CPU time with 1 torch thread; transformers {transformers.__version__}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    res: dict[str, list[float]] = {k: [] for k in variants}
    try:
        for f in variants.values():
            f()
        for r in range(repeats):  # interleaved rounds, rotating order, as in run.py
            names = list(variants)
            names = names[r % len(names):] + names[:r % len(names)]
            for k in names:
                res[k] += _cpu_time(variants[k], 1, warm=False)
    finally:
        torch.set_num_threads(threads)
    base_med = statistics.median(res["pristine transformers generate"])
    base_min = min(res["pristine transformers generate"])
    print(f"{'variant':48s} {'ms/step med':>11s} {'ms/step min':>11s} {'+ms/step vs pristine (med/min)':>32s}")
    for k, v_ in res.items():
        med, mn = statistics.median(v_), min(v_)
        print(f"{k:48s} {med / tokens * 1e3:11.2f} {mn / tokens * 1e3:11.2f} "
              f"{(med - base_med) / tokens * 1e3:15.2f} / {(mn - base_min) / tokens * 1e3:.2f}")


def real_profile(batch: int, tokens: int) -> None:
    import steerlab as sl
    from gen_bench import hf_generate, make_vector, pristine_model, steerlab_generate

    model = sl.load_model(progress=False)
    plain = pristine_model(model)
    layer = 6
    v = make_vector(model, layer)
    prompts = sl.load_dataset("prompts", "eval").texts[:batch]
    runs = {
        "pristine hf.generate": lambda: hf_generate(model, prompts, tokens, hf=plain),
        "model.hf.generate (wrapped)": lambda: hf_generate(model, prompts, tokens),
        "steerlab.generate position=all": lambda: steerlab_generate(model, prompts, v, 4.0, "all", tokens),
        "steerlab.generate position=first": lambda: steerlab_generate(model, prompts, v, 4.0, "first", tokens),
    }
    for name, fn in runs.items():
        fn()
        prof = cProfile.Profile()
        t = time.perf_counter()
        prof.enable()
        fn()
        prof.disable()
        wall = time.perf_counter() - t
        st = pstats.Stats(prof)
        linear = sum(v_[2] for k, v_ in st.stats.items() if k[2] == "<built-in method torch._C._nn.linear>")  # type: ignore[attr-defined]
        print(f"\n===== {name}: {st.total_calls} Python calls ({st.total_calls / tokens:.0f} a step), "  # type: ignore[attr-defined]
              f"{wall:.2f} s under cProfile, of which linear layers {linear:.2f} s")
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(12)
        print("\n".join(buf.getvalue().splitlines()[6:22]))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--skip-real", action="store_true")
    args = parser.parse_args()
    import transformers

    transformers.utils.logging.disable_progress_bar()
    tiny_overhead(args.batch, args.tokens, args.repeats)
    if not args.skip_real:
        real_profile(args.batch, args.tokens)
    return 0


if __name__ == "__main__":
    sys.exit(main())
