"""Where one cell of notebook 04 spends its time and its multiplications: the profile per part.

    .venv/bin/python bench/profile_cell.py                       # SmolLM2, preset default, one cell
    .venv/bin/python bench/profile_cell.py --model gemma3-270m --position all_prompt --out bench/results/cell.json

One (target, layer, position) cell of ``steerlab.study.compare.run_compare`` at a preset, run twice
after a warm-up (statistics cached, the judge trained): once timed, each part of the cell wrapped
with a wall clock; once under ``torch.utils.flop_counter.FlopCounterMode``, which counts the
floating-point operations every matrix multiplication of each part must do. FLOPs do not depend
on what else the machine is doing, so they are the floor to read a shared machine's seconds
against: a part's GFLOP/s against the machine's measured matmul peak (``--peak``, or section 10 of
``bench/run.py``) says how far it is from its floor. The CPU's flags are printed with every row.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

PARTS = ("build_vectors", "build_methods", "damage_curves", "matched_damage", "propensities", "steerability_each",
         "steered_generate", "concept_score", "completion_perplexity", "relevance", "steered_text_scores")
"""The parts of a cell, as the names notebook 04's cell calls them by (``steerlab.study.compare``; the names of
f4752d4's code too, so the same script profiles the baseline: parts a version lacks are left out)."""


def _wrap(module: Any, name: str, clock: dict[str, float], counter: Any | None) -> Callable[[], None]:
    """Replace ``module.name`` by a copy that adds its seconds (and, under ``counter``, its FLOPs) to ``clock``."""
    original = getattr(module, name)

    @functools.wraps(original)
    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        if counter is None:
            try:
                return original(*args, **kwargs)
            finally:
                clock[name] = clock.get(name, 0.0) + time.perf_counter() - started
        from torch.utils.flop_counter import FlopCounterMode

        mode = FlopCounterMode(display=False)
        with mode:
            out = original(*args, **kwargs)
        counter[name] = counter.get(name, 0) + mode.get_total_flops()
        clock[name] = clock.get(name, 0.0) + time.perf_counter() - started
        return out

    setattr(module, name, timed)
    return lambda: setattr(module, name, original)


def profile_cell(model_name: str | None, preset: str, target: str, position: str,
                 overrides: dict[str, Any] | None = None, *, count_flops: bool = True) -> dict[str, Any]:
    """Seconds and (with ``count_flops``) FLOPs per part of one cell (module docstring)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import steerlab as sl
    from steerlab.load import machine
    from steerlab.study import compare
    from steerlab.study.compare import CompareConfig, run_compare
    from steerlab.study.judge import ConceptJudge

    model = sl.load_model(model_name, progress=False)
    cfg = CompareConfig.from_preset(preset, targets=[target], positions=[position], **(overrides or {}))
    judge = ConceptJudge.train()
    # Warm: the statistics (disk cache), units and vectors, and the first calls' costs, outside the timed run.
    from steerlab.sets import unit_norm

    for layer in cfg.resolved_layers(model):
        unit_norm(model, layer)
    for name in ("build_vectors", "build_methods"):
        if hasattr(compare, name):
            getattr(compare, name)(model, cfg, target, cfg.resolved_layers(model), progress=False)
    sl.generate(model, "Once upon a time", max_new_tokens=4, do_sample=False)
    result: dict[str, Any] = {"model": model.name, "preset": preset, "target": target, "position": position,
                              "layers": cfg.resolved_layers(model), "cpu": machine(),
                              "score_dtype": cfg.resolved_score_dtype(model)}
    for counted in (False, True) if count_flops else (False,):
        clock: dict[str, float] = {}
        flops: dict[str, int] | None = {} if counted else None
        undo = [_wrap(compare, name, clock, flops) for name in PARTS
                if name != "concept_score" and hasattr(compare, name)]
        original_score = judge.concept_score

        def score(*a: Any, _score: Any = original_score, _clock: dict[str, float] = clock, **k: Any) -> Any:
            t = time.perf_counter()
            try:
                return _score(*a, **k)
            finally:
                _clock["concept_score"] = _clock.get("concept_score", 0.0) + time.perf_counter() - t

        judge.concept_score = score  # type: ignore[method-assign]
        started = time.perf_counter()
        try:
            run_compare(model, cfg, judge=judge, progress=False)
        finally:
            for u in undo:
                u()
            judge.concept_score = original_score  # type: ignore[method-assign]
        total = time.perf_counter() - started
        if counted:
            result["flops"] = {k: int(v) for k, v in (flops or {}).items()}
            result["seconds_counted"] = total
        else:
            result["seconds"] = {k: round(v, 2) for k, v in clock.items()}
            result["total_seconds"] = round(total, 2)
    return result


def table(result: dict[str, Any], peak: float | None) -> str:
    """The profile as text: per part, seconds, share, GFLOP and GFLOP/s (and the share of ``peak``)."""
    total = result["total_seconds"]
    lines = [(f"{result['model']} {result['preset']} cell {result['target']} L{result['layers']} {result['position']} "
             f"(scores in {result['score_dtype']}; {result['cpu']}): {total:.1f} s")]
    lines.append(f"{'part':24s} {'s':>8s} {'share':>6s} {'GFLOP':>9s} {'GFLOP/s':>8s}" + ("  of peak" if peak else ""))
    for name in sorted(result["seconds"], key=lambda k: -result["seconds"][k]):
        s, gf = result["seconds"][name], result.get("flops", {}).get(name, 0) / 1e9
        rate = gf / s if s else 0.0
        lines.append(f"{name:24s} {s:8.1f} {s / total:6.0%} {gf:9.1f} {rate:8.1f}"
                     + (f"  {rate / peak:6.0%}" if peak and gf else ""))
    if "flops" not in result:
        lines.append("(FLOPs not counted: --no-flops)")
    other = total - sum(result["seconds"].values())
    lines.append(f"{'(rest)':24s} {other:8.1f} {other / total:6.0%}")
    all_flops = sum(result.get("flops", {}).values()) / 1e9
    lines.append(f"{'all matmuls':24s} {'':8s} {'':6s} {all_flops:9.1f} {all_flops / total:8.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="a model name (default: the embedded SmolLM2)")
    parser.add_argument("--preset", default="default")
    parser.add_argument("--target", default="fantasy")
    parser.add_argument("--position", default="all")
    parser.add_argument("--peak", type=float, default=None, help="the machine's matmul GFLOP/s, for the share")
    parser.add_argument("--out", type=Path, default=None, help="write the profile as JSON here")
    parser.add_argument("--no-flops", action="store_true", help="time only (FlopCounterMode makes a cell several "
                        "times slower: its Python runs at every operation)")
    args = parser.parse_args(argv)
    result = profile_cell(args.model, args.preset, args.target, args.position, count_flops=not args.no_flops)
    print(table(result, args.peak))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
