"""Where the time of a small comparison run goes (the profile in bench/README.md).

    .venv/bin/python bench/profile_compare.py              # cProfile + torch.profiler, top 15 each
    .venv/bin/python bench/profile_compare.py --top 25 --out bench/results/profile-compare.json

Runs ``steerlab.study.compare.run_compare`` once untimed (statistics built and cached,
first-call costs paid), then once under cProfile (Python functions by cumulative time;
call counts do not depend on other load on the machine) and once under
``torch.profiler`` (operators by self CPU time). Shares of the total are what to read
on a shared machine, not the absolute seconds.
"""

from __future__ import annotations

import argparse
import cProfile
import inspect
import json
import os
import pstats
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _python_top(profile: cProfile.Profile, top: int) -> list[dict[str, Any]]:
    stats = pstats.Stats(profile)
    rows = []
    for (file, line, func), (_cc, calls, tottime, cumtime, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        if "steerlab" not in file:
            continue
        where = file.split("steerlab/", 1)[-1]
        rows.append({"function": f"{where}:{line} {func}", "calls": calls, "cumulative_s": cumtime,
                     "own_s": tottime})
    return sorted(rows, key=lambda r: -r["cumulative_s"])[:top]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--out", type=Path, default=None, help="write the tables as JSON here")
    args = parser.parse_args(argv)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import steerlab as sl
    import torch
    from protocol_bench import compare_quick_config
    from steerlab.study.compare import run_compare
    from torch.profiler import ProfilerActivity, profile

    model = sl.load_model(progress=False)
    cfg = compare_quick_config()
    extra: dict[str, Any] = {}
    if "judge" in inspect.signature(run_compare).parameters:  # train the concept judge once, not per run
        from steerlab.study.judge import ConceptJudge

        extra["judge"] = ConceptJudge.train()
    t0 = time.perf_counter()
    run_compare(model, cfg, progress=False, **extra)  # warm: statistics, units, first calls
    warm = time.perf_counter() - t0

    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    result = run_compare(model, cfg, progress=False, **extra)
    prof.disable()
    wall = time.perf_counter() - t0
    python_top = _python_top(prof, args.top)
    rows = getattr(result, "rows", result)

    with profile(activities=[ProfilerActivity.CPU]) as tprof:
        run_compare(model, cfg, progress=False, **extra)
    ops = sorted(tprof.key_averages(), key=lambda e: -e.self_cpu_time_total)[: args.top]
    total_self = sum(e.self_cpu_time_total for e in tprof.key_averages()) or 1.0
    op_top = [{"op": e.key, "calls": e.count, "self_cpu_s": e.self_cpu_time_total / 1e6,
               "share": e.self_cpu_time_total / total_self} for e in ops]

    print(f"run_compare({cfg}) -> {len(rows) if hasattr(rows, '__len__') else '?'} rows; first run {warm:.1f} s, profiled run {wall:.1f} s "
          f"(torch threads {torch.get_num_threads()}, load average {os.getloadavg()})")
    print("\nsteerlab functions by cumulative time (cProfile):")
    for r in python_top:
        print(f"  {r['cumulative_s']:7.2f} s {r['cumulative_s'] / wall:6.1%}  {r['calls']:7d}  {r['function']}")
    print("\ntorch operators by self CPU time (torch.profiler):")
    for r in op_top:
        print(f"  {r['self_cpu_s']:7.2f} s {r['share']:6.1%}  {r['calls']:7d}  {r['op']}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"config": str(cfg), "wall_s": wall, "first_run_s": warm,
                                        "python": python_top, "ops": op_top}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
