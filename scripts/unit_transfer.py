"""Which coefficient unit transfers across models: where damage crosses the matched level in each.

For each model (the embedded SmolLM2-135M-Instruct and Gemma 3 270M by default), each depth and
each vector (mean-centred, counterbalanced, random; target fantasy), the damage curve on held-out
general text in units of the typical norm ``||x||`` places the coefficient ``c`` where the
perplexity ratio reaches the level (:func:`steerlab.study.matched.matched_coefficient`); in units of
the centred norm ``||x - mean||`` the same vector is ``c * typical / centred``. A unit transfers
when the same coefficient means the same damage on both models: the script reports, per unit, the
ratio of the two models' geometric-mean crossing coefficients (1 = the same) and names the unit
closer to 1. Writes ``docs/results/unit_transfer.json`` (read by ``scripts/findings.py``).

Usage: ``.venv/bin/python scripts/unit_transfer.py [--models smollm2 gemma3-270m] [--out PATH]``
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import steerlab as sl
from steerlab.data import load_dataset
from steerlab.load import machine
from steerlab.sets import UnitSpec, typical_norm, unit_norm
from steerlab.study.compare import CompareConfig
from steerlab.study.matched import DAMAGE_GRID, MATCHED_LEVEL, damage_curves, matched_coefficient

ROOT = Path(__file__).resolve().parents[1]
VECTORS = {"mean_centred": {"target": "fantasy"}, "counterbalanced": {"target": "fantasy", "counter": "sports"},
           "random": {"target": "fantasy"}}


def measure(model_name: str | None, depths: list[float], level: float) -> dict:
    model = sl.load_model(model_name, progress=False)
    general = load_dataset("general", "heldout").sample(6, seed=0).texts
    rows = []
    for depth in depths:
        (layer,) = CompareConfig(depths=[depth]).resolved_layers(model)  # 04's rule for a depth
        typical = typical_norm(model, layer)
        centred = unit_norm(model, layer, UnitSpec(kind="centred"))
        vectors = {name: sl.build(name, model, [layer], **inputs).at(layer) for name, inputs in VECTORS.items()}
        curves = damage_curves(model, vectors, layer=layer, position="all", general=general, unit=typical,
                               grid=DAMAGE_GRID, max_length=48)
        for name, curve in curves.items():
            c, status = matched_coefficient(DAMAGE_GRID, curve, level)
            rows.append({"depth": depth, "layer": layer, "vector": name, "typical_norm": typical,
                         "centred_norm": centred, "status": status, "typical": c, "centred": c * typical / centred,
                         "damage": curve})
    return {"model": model.name, "n_layers": model.n_layers, "rows": rows}


def geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=[None, "gemma3-270m"])
    parser.add_argument("--depths", nargs="+", type=float, default=[0.35, 0.5, 0.65])
    parser.add_argument("--level", type=float, default=MATCHED_LEVEL)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "unit_transfer.json")
    args = parser.parse_args()
    started = time.perf_counter()
    models = [measure(None if m in (None, "None") else m, args.depths, args.level) for m in args.models]
    summary = {}
    for unit in ("typical", "centred"):
        per_model = {m["model"]: geomean([r[unit] for r in m["rows"] if r["status"] == "interpolated"])
                     for m in models}
        values = list(per_model.values())
        summary[unit] = {"crossing_by_model": per_model, "ratio": max(values) / min(values)}
    chosen = min(summary, key=lambda u: summary[u]["ratio"])
    out = {"level": args.level, "grid": list(DAMAGE_GRID), "depths": args.depths, "models": models,
           "units": summary, "closer": chosen, "seconds": round(time.perf_counter() - started, 1),
           "cpu": machine(), "date": time.strftime("%Y-%m-%d")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    tmp.replace(args.out)
    for unit, block in summary.items():
        cells = ", ".join(f"{k}: {v:.3f}" for k, v in block["crossing_by_model"].items())
        print(f"{unit:8s} crossing (geometric mean x unit) {cells}; ratio {block['ratio']:.2f}")
    print(f"closer across models: {chosen} ({out['seconds']} s, {out['cpu']}) -> {args.out}")


if __name__ == "__main__":
    main()
