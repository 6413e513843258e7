"""The comparison's report: its tables, the sentences of its conclusion, the contrasts table.

Everything here reads the numbers :mod:`steerlab.study.compare` measured (``summary.json``'s
``compare`` entry or a :func:`~steerlab.study.compare.summarise` result) and writes nothing:
notebook 04 and ``steerlab.lab.cli compare-table`` show what these return.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .conditions import shown_once

__all__ = ["TABLE_COLUMNS", "best_table", "conclusion", "contrasts_table", "describe", "format_cell", "heldout_table",
           "is_called", "not_run_note", "tally"]


def contrasts_table(summary: Mapping[str, Any], measure: str, *, scope: str = "pooled",
                    not_run: bool = False) -> dict[str, list[str]]:
    """The pre-registered contrasts of one measure at one scope as table columns (notebook 04's first
    table): the contrast, where, the estimate with its CI, the minimum detectable difference at 80%
    power after correction, the Holm p and the verdict. Contrasts not run are left to
    :func:`not_run_note` (one line) unless ``not_run``, when each is a row saying why.

    Example:
        >>> contrasts_table(summary, "steerability")["verdict"][0]
        'not resolved at this sample size (MDD 0.21)'
    """
    cols: dict[str, list[str]] = {k: [] for k in ("contrast", "layer", "position", "n", "estimate [95% CI]",
                                                  "MDD", "Holm p", "verdict")}
    for r in summary.get("contrasts", {}).get(measure, {}).get("results", []):
        if r["scope"] != scope or (r["status"] != "run" and not not_run):
            continue
        cols["contrast"].append(r["name"])
        cols["layer"].append("-" if r["layer"] is None else str(r["layer"]))
        cols["position"].append(str(r["position"] or "-"))
        if r["status"] != "run":
            for k in ("n", "estimate [95% CI]", "MDD", "Holm p"):
                cols[k].append("-")
            cols["verdict"].append(f"not run: {r['reason']}")
            continue
        cols["n"].append(str(r["n"]))
        cols["estimate [95% CI]"].append(f"{r['estimate']:+.3f} [{r['ci'][0]:+.3f}, {r['ci'][1]:+.3f}]")
        mdd = r.get("mdd_corrected")
        cols["MDD"].append("-" if mdd is None else f"{mdd:.3f}")
        cols["Holm p"].append("<0.0001" if r["p_holm"] < 1e-4 else f"{r['p_holm']:.3g}")
        cols["verdict"].append(str(r["verdict"]))
    return cols


def not_run_note(summary: Mapping[str, Any], measure: str, *, scope: str = "pooled") -> str | None:
    """One line for the contrasts of a list that could not run at ``scope`` (typically prompting,
    which has no vector for a forward-pass measure), counted by reason; None when all ran.

    Example:
        >>> not_run_note(summary, "steerability")
        "26 of the list's contrasts not run here (each in summary.json): 24 x no 'prompting' rows; ..."
    """
    rows = [r for r in summary.get("contrasts", {}).get(measure, {}).get("results", [])
            if r["scope"] == scope and r["status"] != "run"]
    if not rows:
        return None
    reasons: dict[str, int] = {}
    for r in rows:
        reason = str(r.get("reason") or "no reason recorded").split(" at layer ")[0]
        reasons[reason] = reasons.get(reason, 0) + 1
    return (f"{len(rows)} of the list's contrasts not run here (each in summary.json): "
            + "; ".join(f"{n} x {reason}" for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1])))


TABLE_COLUMNS = ("condition", "layer", "position", "coefficient", "score", "score_ci", "vs_mean_centred",
                 "vs_random", "steerability", "anti_steerable", "concept_effect", "vocab_rate")


def format_cell(value: Any) -> str:
    """A result value as table text: 3 decimals, CIs as ``[lo, hi]``, dicts as ``k v, ...``."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, float) for v in value):
        return f"[{value[0]:.3f}, {value[1]:.3f}]"
    if isinstance(value, dict):
        return ", ".join(f"{k} {format_cell(v)}" for k, v in value.items())
    return str(value)


def _diff_text(d: Mapping[str, Any] | None) -> str:
    if d is None:
        return "-"
    lo, hi = d["difference_ci"]
    return f"{d['difference']:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def heldout_table(summary: Mapping[str, Any], steer_rows: Sequence[Mapping[str, Any]],
                  target: str | None = None, rows: Sequence[Mapping[str, Any]] = ()) -> list[dict[str, Any]]:
    """One row per condition: held-out score with CI, paired differences from mean-centring and
    from the random control, and the steerability of that (method, layer, position); ``target``
    ``None`` gives the pooled table. With a target and the result ``rows``, the concept effect and
    the vocabulary rate (the old measure, kept as a secondary column) at the chosen coefficient."""
    if target is None:
        scores = [dict(s, coefficient="per target") for s in shown_once(summary["pooled"])]
        diffs = summary["pooled_differences"]
        steer = [s for s in steer_rows]
    else:
        scores = [dict(s) for s in shown_once(summary["per_target"][target]["heldout"])]
        diffs = summary["per_target"][target]["differences"]
        steer = [s for s in steer_rows if s["target"] == target]
    out = []
    for s in scores:
        key = (s["condition"], s["layer"], s["position"])

        def find(b: str, key: tuple[Any, ...] = key) -> Mapping[str, Any] | None:
            return next((d for d in diffs.get(b, []) if (d["condition"], d["layer"], d["position"]) == key), None)

        st = [x for x in steer if (x["condition"], x["layer"], x["position"]) == key]
        out.append({"condition": s["condition"], "layer": s["layer"], "position": s["position"],
                    "coefficient": s["coefficient"], "score": s["mean"], "score_ci": list(s["ci"]),
                    "vs_mean_centred": _diff_text(find("mean_centred")), "vs_random": _diff_text(find("random")),
                    "steerability": float(np.mean([x["steerability"] for x in st])) if st else float("nan"),
                    "anti_steerable": float(np.mean([x["anti_steerable_fraction"] for x in st])) if st
                    else float("nan")})
        at = next((r for r in rows if target is not None and r["target"] == target
                   and (r["condition"], r["layer"], r["position"]) == key and r["coefficient"] == s["coefficient"]), None)
        out[-1].update(concept_effect=at["concept_delta"] if at else float("nan"),
                       vocab_rate=at["vocab_rate"] if at else float("nan"))
    return out


def best_table(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[str]]:
    """Columns of a :func:`heldout_table`, formatted."""
    return {c: [f"{r[c]:.3g}" if isinstance(r[c], float) and c == "coefficient" else format_cell(r[c]) for r in rows]
            for c in TABLE_COLUMNS}


def describe(config: Mapping[str, Any], layers: Sequence[int] | None = None) -> str:
    """What a run swept, in one line, from :func:`config_dict` (or ``summary.json``'s copy; a run before
    2026-12-07 recorded ``constructions`` as ``methods``)."""
    c = config
    where = f"layers {list(layers)}" if layers is not None else (
        f"layers {list(c['layers'])}" if c.get("layers") else f"depths {list(c['depths'])}")
    return (f"targets {list(c['targets'])}, {len(c.get('constructions', c.get('methods', [])))} constructions, {where}, coefficients "
            f"{list(c['coefficients'])} x {(c.get('coefficient_unit') or {}).get('what', 'typical norm')}, positions {list(c['positions'])}, {c['n_prompts']} prompts "
            + ("(each vector generates at its matched-damage coefficient; every prompt reports)"
               if c.get("generate_at", "grid") == "matched" else "(half choose the coefficient, half report)")
            + f", greedy, {c['max_new_tokens']} new tokens"
            + (f"; matched damage at perplexity ratio {c['matched_level']:g}" if c.get("matched_level") else "")
            + (f"; baselines {list(c['baselines'])}" if c.get("baselines") else ""))


def _ci(x: Sequence[float]) -> str:
    return f"[{x[0]:.3f}, {x[1]:.3f}]"


def is_called(result: Mapping[str, Any]) -> bool:
    """A contrast that ran and whose corrected verdict says something (a direction or equivalence)."""
    return result.get("status", "run") == "run" and bool(result["verdict"]) and \
        not str(result["verdict"]).startswith("not resolved")


def tally(results: Sequence[Mapping[str, Any]], baseline: str) -> str:
    """How contrasts against one baseline came out: who is above, below, and how many are unresolved.

    Example:
        >>> tally(pooled_f_rows, "random")
        'above random: isolated; below random: none; 19 of 20 comparisons not resolved at this sample size'
    """
    above = sorted({r["a"] for r in results if str(r["verdict"]).startswith(f"{r['a']} >")})
    below = sorted({r["a"] for r in results if str(r["verdict"]).startswith(f"{r['a']} <")})
    unresolved = sum(1 for r in results if str(r["verdict"]).startswith("not resolved"))
    parts = [f"above {baseline}: {', '.join(above) if above else 'none'}",
             f"below {baseline}: {', '.join(below) if below else 'none'}",
             f"{unresolved} of {len(results)} comparisons not resolved at this sample size"]
    return "; ".join(parts)


def per_target_tally(results: Sequence[Mapping[str, Any]], *, shown: int = 3) -> str:
    """Called per-target contrasts grouped by contrast and verdict, (a) to (g), each with how many
    times and (up to ``shown``) where: so no kind of call hides behind another's many.

    Example:
        >>> per_target_tally(called_rows)
        '(b) mean_centred vs raw: mean_centred > raw x6 (shakespeare L6 all, ...); (c) bias_ablated vs ...'
    """
    groups: dict[tuple[str, str], list[str]] = {}
    for r in sorted(results, key=lambda r: str(r["label"])):  # stable: the list's order within a label
        groups.setdefault((r["name"], str(r["verdict"])), []).append(f"{r['scope']} L{r['layer']} {r['position']}")
    return "; ".join(
        f"{name}: {verdict} x{len(where)} ({', '.join(where[:shown])}{', ...' if len(where) > shown else ''})"
        for (name, verdict), where in groups.items())


def conclusion(model_name: str, config: Mapping[str, Any], summary: Mapping[str, Any],
               bias_rows: Sequence[Mapping[str, Any]] = (), judge: Mapping[str, Any] | None = None) -> list[str]:
    """The plain-language answer of a run, sentence by sentence, from the pre-registered contrasts only.

    Each sentence after the first two is one contrast pooled over targets (its estimate, CI, and
    verdict after Holm's correction over the whole list: "not resolved at this sample size (MDD x)"
    is an answer), then the one "best of N" claim allowed (chosen on half the samples, tested on
    the other half), then how many per-target contrasts were called. No ranking is read off the
    point estimates.
    """
    lines = [f"Model {model_name}: {describe(config)}."]
    if judge:
        lines.append(f"The concept judge (not the steered model) scored {judge['heldout_accuracy']:.2f} held-out "
                     f"accuracy over {len(judge['classes'])} classes.")
    contrasts = summary.get("contrasts") or {}
    if not contrasts:
        return [*lines, "No contrast could be run (no steered condition was scored)."]
    for measure, block in contrasts.items():
        records = block["results"]
        run = [r for r in records if r["status"] == "run"]
        called = [r for r in run if is_called(r)]
        hypotheses = max((r.get("family_size") or 0 for r in run), default=0)
        equivalence = sum(1 for r in run if r.get("p_equivalence") is not None)
        family = (f"Holm-corrected together as {hypotheses} hypotheses (each of the {equivalence} equivalence "
                  "contrasts is two: a difference and an equivalence)" if equivalence else "Holm-corrected together")
        skipped = [r for r in records if r["status"] != "run"]
        why = ""
        if skipped:
            no_prompting = sum(1 for r in skipped if r["b"] == "prompting" or r["a"] == "prompting")
            why = (f" ({len(skipped)} not run: " + (f"{no_prompting} are (g) against prompting, which has no vector "
                   f"for this measure to steer with" if no_prompting else "") + (
                       f"{'; ' if no_prompting else ''}{len(skipped) - no_prompting} lack a condition, each reason in "
                       "summary.json" if len(skipped) > no_prompting else "") + ")")
        lines.append(f"{measure}: {len(run)} pre-registered contrasts run{why}, "
                     f"{family}; {len(called)} called, the rest not resolved at this sample size.")
        lines += [c for c, r in zip(block["conclusions"], records)
                  if r["scope"] == "pooled" and r["status"] == "run" and r["label"] in "abcde"]
        asked = [r for r in run if r["scope"] == "pooled" and r["label"] == "g"]
        if asked:
            lines.append(f"{measure}, against asking the model (g): " + tally(asked, "prompting") + ".")
        lines += block["best_of"]["conclusion"]
        per_target = [r for r in called if r["scope"] != "pooled"]
        if per_target:
            lines.append(f"{measure}, per target ({len(per_target)} called): {per_target_tally(per_target)}.")
    if bias_rows:
        cos = [r["cosine"] for r in bias_rows]
        lo, hi = f"{min(cos):.3f}", f"{max(cos):.3f}"
        lines.append(f"Raw vectors point along the bias: cosine with the general-text mean "
                     f"{lo if lo == hi else f'{lo}-{hi}'} over targets and layers.")
    return lines
