"""A soak of the steering scope: 1,000 ``with sl.steering(...)`` blocks in one process, each around a
small forward pass, with resident memory and the model's hooks read before and after.

What it reports (one row each, section "11 steering soak"):

- resident memory (RSS) after a warm-up and after the blocks, and the growth in percent (target
  <= 10 %); the count of live Python objects is in the row's note (a leak of a few objects per
  block shows there long before it shows in RSS);
- hooks left on the model and every one of its modules (blocks included) after the blocks,
  against the count before (target: the same, i.e. 0 left);
- the time per block against the same forward pass without a scope, in the same process
  (``benchutil.interleaved`` rounds), so the ratio is the scope's own cost.

Every 50th block ends in an exception raised inside it (the scope must come off then too). The
blocks steer with the default unit (``scale="unit"``: the layer's centred norm, read from the
statistics cache after the first block), as a user's ``with sl.steering(model, v, coefficient=...)``
does.

Run alone: ``.venv/bin/python bench/soak_bench.py`` (the embedded SmolLM2; ``--blocks``,
``--model``). ``bench/run.py`` calls :func:`soak_rows`.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path
from typing import Any

import steerlab as sl
import torch

SECTION = "11 steering soak"
PROMPT = "The old lighthouse keeper climbed the stairs one last time and"


def rss_bytes() -> int:
    """This process's resident memory now (Linux ``/proc``; 0 where it cannot be read)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def hook_counts(model: sl.Model) -> dict[str, int]:
    """Forward and forward-pre hooks on the model and each of its modules, by module and kind."""
    return {f"{name or 'model'}.{kind}": len(getattr(module, kind))
            for name, module in model.hf.named_modules()
            for kind in ("_forward_pre_hooks", "_forward_hooks") if getattr(module, kind)}


def _changed(before: dict[str, int], after: dict[str, int]) -> dict[str, str]:
    """The modules whose hook counts differ, as ``before -> after``."""
    return {k: f"{before.get(k, 0)} -> {after.get(k, 0)}" for k in sorted(set(before) | set(after))
            if before.get(k, 0) != after.get(k, 0)}


class _Planned(Exception):
    """Raised inside every 50th block: the scope must be gone after an exception too."""


def measure_soak(model: sl.Model, *, blocks: int = 1000, warmup: int = 100, layer: int | None = None,
                 coefficient: float = 0.5, scale: str = "unit", log: Any = print) -> dict[str, Any]:
    """The soak's numbers: RSS and live objects before and after, hooks left, seconds per block.

    Example:
        >>> measure_soak(sl.load_model(), blocks=1000)["rss_growth_pct"]
        0.4
    """
    layer = model.n_layers // 2 if layer is None else layer
    inputs = sl.encode(model.tokenizer, [PROMPT]).as_inputs()
    torch.manual_seed(0)
    v = torch.randn(model.d_model)
    hooks_before = hook_counts(model)

    def block(i: int) -> None:
        try:
            with sl.steering(model, v, layer=layer, coefficient=coefficient, scale=scale), torch.inference_mode():
                model.hf(**inputs)
                if i % 50 == 49:
                    raise _Planned
        except _Planned:
            pass

    log(f"[soak] warm-up: {warmup} blocks (the unit's statistics, allocator pools)")
    for i in range(warmup):
        block(i)
    gc.collect()
    rss_before, objects_before = rss_bytes(), len(gc.get_objects())
    log(f"[soak] {blocks} blocks at layer {layer}, coefficient {coefficient} ({scale})")
    started = time.perf_counter()
    for i in range(blocks):
        block(i)
    seconds = time.perf_counter() - started
    gc.collect()
    rss_after, objects_after = rss_bytes(), len(gc.get_objects())
    hooks_after = hook_counts(model)
    left = sum(hooks_after.values()) - sum(hooks_before.values())
    return {
        "blocks": blocks, "warmup": warmup, "layer": layer, "scale": scale,
        "rss_before_mib": rss_before / 2**20, "rss_after_mib": rss_after / 2**20,
        "rss_growth_pct": 100 * (rss_after - rss_before) / rss_before if rss_before else float("nan"),
        "objects_before": objects_before, "objects_after": objects_after,
        "hooks_before": hooks_before, "hooks_after": hooks_after, "hooks_left": left,
        "steered_after": model.steered_here(),
        "seconds": seconds, "ms_per_block": 1000 * seconds / blocks,
    }


def soak_rows(model: sl.Model, *, blocks: int = 1000, warmup: int = 100, repeats: int = 5,
              out: dict[str, Any] | None = None, log: Any = print) -> list:
    """The section's rows (``benchutil.Row``); the raw numbers go to ``out["soak"]`` when given.

    The time per block is set against the same forward pass without a scope, timed in interleaved
    rounds of 20 calls each (``repeats`` rounds), so load from elsewhere lands on both alike.

    Example:
        >>> print(render_table(soak_rows(sl.load_model())))
    """
    from benchutil import Row, interleaved, judge

    res = measure_soak(model, blocks=blocks, warmup=warmup, log=log)
    inputs = sl.encode(model.tokenizer, [PROMPT]).as_inputs()
    v = torch.randn(model.d_model)

    def plain() -> None:
        with torch.inference_mode():
            for _ in range(20):
                model.hf(**inputs)

    def scoped() -> None:
        for _ in range(20):
            with sl.steering(model, v, layer=res["layer"], coefficient=0.5), torch.inference_mode():
                model.hf(**inputs)

    n_tokens = int(inputs["input_ids"].shape[1])
    t = interleaved({"plain": plain, "scoped": scoped}, repeats, log=log)
    per_scoped, per_plain = t["scoped"].median / 20, t["plain"].median / 20
    res["ms_per_scoped_forward"], res["ms_per_plain_forward"] = 1000 * per_scoped, 1000 * per_plain
    if out is not None:
        out["soak"] = res
    growth = res["rss_growth_pct"]
    objects = res["objects_after"] - res["objects_before"]
    return [
        Row(SECTION, f"{blocks} steering blocks: resident memory growth after a {warmup}-block warm-up", growth, "%",
            "", None, None, "", "<= 10 %", judge(growth, at_most=10.0),
            f"RSS {res['rss_before_mib']:.0f} -> {res['rss_after_mib']:.0f} MiB; live Python objects "
            f"{res['objects_before']:,} -> {res['objects_after']:,} ({objects:+,}); every 50th block raised inside"),
        Row(SECTION, f"{blocks} steering blocks: hooks left on the model and its blocks", float(res["hooks_left"]),
            "hooks", "hooks before", float(sum(res["hooks_before"].values())), None, "", "0",
            "PASS" if res["hooks_left"] == 0 and not res["steered_after"] else "MISS",
            f"modules whose hooks changed: {_changed(res['hooks_before'], res['hooks_after']) or 'none'} (the "
            f"{sum(res['hooks_before'].values())} before are transformers' and steerlab's permanent ones); "
            f"scope still registered: {res['steered_after']}"),
        Row(SECTION, f"time per block (scope + one forward pass of a {n_tokens}-token prompt)", per_scoped, "s",
            "the same forward without a scope", per_plain, per_scoped / per_plain if per_plain else None,
            "x time", "", "",
            f"soak loop: {res['ms_per_block']:.1f} ms per block over {blocks} blocks (unit scale: the centred "
            "norm looked up per block)"),
    ]


def widget_soak(model: sl.Model, *, changes: int = 1000, warmup: int = 50, new_tokens: int = 2) -> dict[str, Any]:
    """The steering widget driven through ``changes`` control changes in one process (synchronous, greedy, a few
    new tokens each): slider positions, the coefficient box, layer, position, operator, construction; resident
    memory after a warm-up and at the end, and the model's hooks before and after."""
    import tempfile

    from steerlab.lab.widget import SteeringWidget

    before_hooks = hook_counts(model)
    w = SteeringWidget(model, recipe="mean_centred", target="fantasy", greedy=True, max_new_tokens=new_tokens,
                       background=False, judge=False, save_dir=Path(tempfile.mkdtemp()), sample_size=8,
                       max_length=32)
    c = w.controls
    layers = [max(1, model.n_layers // 2 - 1), model.n_layers // 2]
    # Each kind of change comes round every 6th change; ``k`` counts its own turns, so each turn changes it.
    moves = [lambda k: setattr(c["coefficient"], "value", (7 * k) % 40 - 20 or 1),
             lambda k: setattr(c["coefficient_text"], "value", f"{0.05 * (1 + k % 9):g}"),
             lambda k: setattr(c["layer"], "value", layers[k % 2]),
             lambda k: setattr(c["position"], "value", ("all", "all_prompt")[k % 2]),
             lambda k: setattr(c["operator"], "value", ("add", "ablate_then_add")[k % 2]),
             lambda k: setattr(c["recipe"], "value", ("raw", "mean_centred")[k % 2])]
    gc.collect()
    rss0 = objects0 = 0
    started = time.perf_counter()
    for i in range(changes):
        moves[i % len(moves)](i // len(moves) + 1)
        if w.last_error:
            raise RuntimeError(f"the widget failed at change {i}: {w.last_error}")
        if i + 1 == warmup:
            gc.collect()
            rss0, objects0 = rss_bytes(), len(gc.get_objects())
    seconds = time.perf_counter() - started
    gc.collect()
    rss1, objects1 = rss_bytes(), len(gc.get_objects())
    after_hooks = hook_counts(model)
    return {"changes": changes, "warmup": warmup, "seconds": seconds, "rss_after_warmup": rss0, "rss_end": rss1,
            "growth": (rss1 - rss0) / rss0 if rss0 else float("nan"), "objects_added": objects1 - objects0,
            "generations": w.generations, "hooks_changed": _changed(before_hooks, after_hooks)}


def widget_rows(model: sl.Model, *, changes: int = 1000, warmup: int = 50) -> list[Any]:
    """The widget soak as rows for ``bench/run.py`` (section "11 steering soak")."""
    from benchutil import Row, judge

    got = widget_soak(model, changes=changes, warmup=warmup)
    return [Row(SECTION, f"widget, {changes} control changes: resident memory growth after warm-up", 100 * got["growth"],
                "%", target="<= 10 %", status=judge(got["growth"], at_most=0.10),
                note=(f"{got['rss_after_warmup'] / 2**20:.0f} -> {got['rss_end'] / 2**20:.0f} MiB; "
                      f"{got['objects_added']} Python objects added; {got['generations']} generations in "
                      f"{got['seconds']:.0f} s")),
            Row(SECTION, f"widget, {changes} control changes: hooks left on the model", len(got["hooks_changed"]),
                "modules changed", target="0", status="PASS" if not got["hooks_changed"] else "MISS",
                note=str(got["hooks_changed"]) or "none")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model name or path (default: the embedded SmolLM2)")
    parser.add_argument("--blocks", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from benchutil import render_table

    model = sl.load_model(args.model, progress=False)
    out: dict[str, Any] = {}
    rows = soak_rows(model, blocks=args.blocks, warmup=args.warmup, repeats=args.repeats, out=out,
                     log=lambda m: print(m, file=sys.stderr, flush=True))
    res = out["soak"]
    print(f"RSS before {res['rss_before_mib']:.1f} MiB, after {res['rss_after_mib']:.1f} MiB, growth "
          f"{res['rss_growth_pct']:+.2f} %; hooks left {res['hooks_left']}; "
          f"{res['ms_per_block']:.2f} ms per block ({res['blocks']} blocks)")
    print(render_table(rows))
    return 0 if all(r.status in ("PASS", "") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
