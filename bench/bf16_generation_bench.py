"""Section 11 of the benchmark: may notebook 04 generate in bfloat16? Judged by what the study needs, not by tokens.

The rule, written before the numbers (issue 35): notebook 04 may generate its completions in bfloat16 on a CPU
with bfloat16 units when, on both models, a comparison whose completions come from the bfloat16 model gives
**every pooled contrast the same verdict** as the one whose completions come from the float32 model, **and each
estimate within a quarter of that contrast's MDD** (:data:`MDD_FRACTION`): a change smaller than what the run can
detect, never a different answer. Token identity (the earlier rule: 75% of rows equal) asks more than that.
Forward-pass scores stay in ``score_dtype`` either way; only the generations differ.

On a CPU without bfloat16 units the section is a SKIP row with the reason: torch emulates bfloat16 there (minutes
per row), and notebook 04 generates in float32 (``CompareConfig.generate_dtype``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from benchutil import Row, cpu_flags, has_bf16_units, log

MDD_FRACTION = 0.25
"""How far a bfloat16-generated estimate may move, as a share of its contrast's MDD (pre-registered)."""


def rule(float32: Mapping[str, Any], bfloat16: Mapping[str, Any], *,
         fraction: float = MDD_FRACTION) -> dict[str, Any]:
    """The rule on two runs' contrasts (``summarise(...)["contrasts"]``): verdicts equal, estimates within
    ``fraction`` x MDD, over every pooled contrast both ran.

    Example:
        >>> rule({"score": {"results": [a]}}, {"score": {"results": [b]}})["holds"]
    """
    changed, far, compared = [], [], 0
    for measure, block in float32.items():
        other = {(r["name"], r["layer"], r["position"]): r for r in bfloat16[measure]["results"]
                 if r["scope"] == "pooled"}
        for r in block["results"]:
            key = (r["name"], r["layer"], r["position"])
            if r["scope"] != "pooled" or r["status"] != "run" or key not in other:
                continue
            compared += 1
            b = other[key]
            if b["verdict"] != r["verdict"]:
                changed.append(f"{measure} {key}: {r['verdict']} -> {b['verdict']}")
            mdd = r.get("mdd_corrected") or r.get("mdd") or 0.0
            if abs(b["estimate"] - r["estimate"]) > fraction * mdd:
                far.append(f"{measure} {key}: {r['estimate']:+.3g} -> {b['estimate']:+.3g} (MDD {mdd:.3g})")
    return {"holds": not changed and not far and compared > 0, "compared": compared, "verdicts_changed": changed,
            "estimates_moved": far, "fraction": fraction}


def bench_bf16_generation(models: Sequence[str | None], preset: str = "quick") -> list[Row]:
    """One row per model: the rule's outcome (PASS: it holds), with the two runs' times."""
    sec = "11 bfloat16 generation (the study's rule)"
    if not has_bf16_units():
        return [Row(sec, "notebook 04 generating in bfloat16: same verdicts, estimates within MDD/4", None, "",
                    status="SKIP", note=(f"no bfloat16 units on this CPU (flags: {', '.join(cpu_flags()) or 'none'}): "
                                         "not measurable here; notebook 04 generates in float32"))]
    import steerlab as sl
    from steerlab.study.compare import CompareConfig, run_compare, summarise
    from steerlab.study.judge import ConceptJudge

    judge = ConceptJudge.train()
    rows = []
    for name in models:
        model = sl.load_model(name, progress=False)
        runs, seconds = {}, {}
        for dtype in ("float32", "bfloat16"):
            cfg = CompareConfig.from_preset(preset, generate_dtype=dtype)
            started = time.perf_counter()
            runs[dtype] = summarise(run_compare(model, cfg, judge=judge, progress=False))["contrasts"]
            seconds[dtype] = time.perf_counter() - started
            log(f"[bf16gen] {model.name} {preset}, generation in {dtype}: {seconds[dtype]:.0f} s")
        found = rule(runs["float32"], runs["bfloat16"])
        rows.append(Row(sec, f"{model.name}, {preset}: bfloat16 generation keeps the answer", seconds["bfloat16"], "s",
                        "float32 generation", seconds["float32"], seconds["float32"] / seconds["bfloat16"], "x faster",
                        f"verdicts equal, estimates within {MDD_FRACTION:g} x MDD",
                        "PASS" if found["holds"] else "MISS",
                        note=(f"{found['compared']} pooled contrasts compared; verdicts changed: "
                              f"{len(found['verdicts_changed'])}; estimates past the bound: "
                              f"{len(found['estimates_moved'])}")))
    return rows
