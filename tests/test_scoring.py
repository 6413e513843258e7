"""AxBench-style scoring on plain rows with planted answers: the zero rule, a choice that never
reads the report half, paired differences that find a planted gap and not a null one."""

from __future__ import annotations

import math

import numpy as np
import pytest
from steerlab.study.scoring import (
    PromptSplit,
    choose_coefficient,
    chosen_rows,
    differences_against,
    fluency_unit,
    harmonic_score,
    heldout_scores,
    paired_difference,
    relevance_unit,
    score_rows,
    split_prompts,
    to_unit,
)

COEFS = (0.0, 0.25, 0.5, 1.0)


def _rows(n_prompts: int, peaks: dict[str, float], *, seed: int = 0, noise: float = 0.05,
          offset: dict[str, float] | None = None) -> list[dict]:
    """Scores that peak at each method's planted coefficient, with per-prompt noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_prompts):
        for method, peak in peaks.items():
            for c in COEFS:
                base = 0.6 - abs(c - peak) + (offset or {}).get(method, 0.0)
                rows.append({"condition": method, "layer": 15, "position": "all_prompt", "coefficient": c,
                             "prompt_id": f"p{p:02d}", "score": base + noise * rng.standard_normal()})
    return rows


def test_harmonic_mean_and_the_zero_rule() -> None:
    assert harmonic_score(1.0, 0.5, 0.5) == pytest.approx(0.6)
    assert harmonic_score(0.3, 0.3, 0.3) == pytest.approx(0.3)
    assert harmonic_score(0.0, 1.0, 1.0) == 0.0
    assert harmonic_score(1.0, 0.0, 1.0) == 0.0 and harmonic_score(1.0, 1.0, 0.0) == 0.0
    assert harmonic_score(1e-9, 1.0, 1.0) > 0.0  # only an exact 0 is the rule
    with pytest.raises(ValueError, match="fluency is 1.5"):
        harmonic_score(0.5, 1.5, 0.5)
    with pytest.raises(ValueError, match="concept is nan"):
        harmonic_score(float("nan"), 0.5, 0.5)


def test_unit_mappings() -> None:
    assert fluency_unit(10.0, 10.0) == 1.0
    assert fluency_unit(5.0, 10.0) == 1.0  # more predictable than unsteered: no bonus
    assert fluency_unit(40.0, 10.0) == pytest.approx(0.25)
    # A loop is predictable (low perplexity) but repetitive: distinct-n costs it.
    assert fluency_unit(3.0, 10.0, distinct=3 / 7, reference_distinct=1.0) == pytest.approx(3 / 7)
    assert fluency_unit(float("nan"), 10.0) == 0.0  # an empty completion
    with pytest.raises(ValueError, match="reference perplexity is nan"):
        fluency_unit(10.0, float("nan"))
    with pytest.raises(ValueError, match="both distinct and reference_distinct"):
        fluency_unit(10.0, 10.0, distinct=0.5)
    assert relevance_unit(-2.0, -2.0) == 1.0
    assert relevance_unit(-2.0 - math.log(4), -2.0) == pytest.approx(0.25)
    assert relevance_unit(-1.0, -2.0) == 1.0
    ratings = to_unit({"concept": 0.6, "perplexity": 12.0, "distinct": 0.9, "relevance_logprob": -2.5},
                      {"perplexity": 10.0, "distinct": 1.0, "relevance_logprob": -2.0})
    assert ratings == pytest.approx({"concept": 0.6, "fluency": 0.75, "relevance": math.exp(-0.5)})
    with pytest.raises(KeyError, match="no field 'perplexity'"):
        to_unit({}, {})


def test_prompt_split_is_seeded_disjoint_and_order_free() -> None:
    ids = [f"p{i}" for i in range(11)]
    split = split_prompts(ids, seed=3)
    assert set(split.selection) | set(split.report) == set(ids)
    assert not set(split.selection) & set(split.report)
    assert (len(split.selection), len(split.report)) == (5, 6)
    assert split_prompts(reversed(ids), seed=3) == split
    assert split_prompts(ids, seed=4) != split
    with pytest.raises(ValueError, match="at least 2"):
        split_prompts(["only"])


def test_choice_reads_the_selection_half_only() -> None:
    rows = _rows(10, {"mean_centred": 0.5, "random": 0.25})
    split = split_prompts({r["prompt_id"] for r in rows}, seed=0)
    choice = choose_coefficient(rows, split.selection)
    assert choice == {("mean_centred", 15, "all_prompt"): 0.5, ("random", 15, "all_prompt"): 0.25}
    # The report half's scores wildly corrupted (even to things that are not numbers): no change.
    corrupted = [dict(r) for r in rows]
    for r in corrupted:
        if r["prompt_id"] in split.report:
            r["score"] = "garbage" if r["coefficient"] == 0.0 else 1e9 * r["coefficient"]
    assert choose_coefficient(corrupted, split.selection) == choice
    # The selection half's scores moved: the choice moves.
    moved = [dict(r) for r in rows]
    for r in moved:
        if r["prompt_id"] in split.selection and r["condition"] == "mean_centred" and r["coefficient"] == 1.0:
            r["score"] += 5.0
    assert choose_coefficient(moved, split.selection)[("mean_centred", 15, "all_prompt")] == 1.0
    # Ties go to the smaller coefficient.
    flat = [{**r, "score": 0.5} for r in rows]
    assert set(choose_coefficient(flat, split.selection).values()) == {0.0}


def test_heldout_scores_report_the_other_half() -> None:
    rows = _rows(20, {"mean_centred": 0.5, "random": 0.25}, offset={"random": -0.2})
    split = split_prompts({r["prompt_id"] for r in rows}, seed=0)
    scores = heldout_scores(rows, split)
    assert [(s.condition, s.coefficient) for s in scores] == [("mean_centred", 0.5), ("random", 0.25)]
    best = scores[0]
    report_mean = np.mean([r["score"] for r in rows if r["prompt_id"] in split.report
                           and r["condition"] == "mean_centred" and r["coefficient"] == 0.5])
    assert best.mean == pytest.approx(report_mean)
    assert best.n_prompts == len(split.report) == 10
    assert best.ci[0] < best.mean < best.ci[1]
    assert best.mean == pytest.approx(0.6, abs=0.05)


def test_several_rows_of_one_prompt_count_once() -> None:
    rows = [{"condition": "m", "layer": 1, "position": "all", "coefficient": 1.0, "prompt_id": p, "score": s}
            for p, s in [("a", 0.0), ("a", 1.0), ("b", 0.2), ("c", 0.4), ("d", 0.6)]]
    split = PromptSplit(selection=("b",), report=("a", "c", "d"))
    (score,) = heldout_scores(rows, split)
    assert score.mean == pytest.approx((0.5 + 0.4 + 0.6) / 3) and score.n_prompts == 3


def test_bootstrap_ci_narrows_with_more_prompts() -> None:
    widths = []
    for n in (10, 40, 160):
        rows = _rows(n, {"mean_centred": 0.5}, noise=0.2)
        (s,) = heldout_scores(rows, split_prompts({r["prompt_id"] for r in rows}, seed=0))
        widths.append(s.ci[1] - s.ci[0])
    assert widths[0] > widths[1] > widths[2]
    assert widths[2] < 0.5 * widths[0]  # ~1/sqrt(16) = 0.25 in theory


def test_paired_difference_finds_a_planted_gap_and_not_a_null_one() -> None:
    rng = np.random.default_rng(1)
    prompt_effect = rng.normal(0.0, 0.3, 30)  # shared by both methods: pairing removes it
    a = {f"p{i}": 0.5 + e + 0.02 * rng.standard_normal() for i, e in enumerate(prompt_effect)}
    b = {f"p{i}": 0.4 + e + 0.02 * rng.standard_normal() for i, e in enumerate(prompt_effect)}
    gap = paired_difference(a, b)
    assert gap.excludes_zero and gap.ci[0] > 0.08 and gap.ci[1] < 0.12
    assert gap.mean == pytest.approx(np.mean([a[p] - b[p] for p in a]))
    c = {f"p{i}": 0.5 + e + 0.02 * rng.standard_normal() for i, e in enumerate(prompt_effect)}
    null = paired_difference(a, c)
    assert null.ci[0] <= 0.0 <= null.ci[1] and not null.excludes_zero
    with pytest.raises(ValueError, match="different prompts"):
        paired_difference(a, {"p0": 0.1})


def test_differences_against_the_random_control() -> None:
    rows = _rows(20, {"mean_centred": 0.5, "raw": 0.5, "random": 0.25}, offset={"random": -0.3, "raw": -0.3})
    split = split_prompts({r["prompt_id"] for r in rows}, seed=0)
    diffs = {d["condition"]: d for d in differences_against(rows, split, "random")}
    assert set(diffs) == {"mean_centred", "raw"}
    assert diffs["mean_centred"]["excludes_zero"]
    assert diffs["mean_centred"]["difference"] == pytest.approx(0.3, abs=0.05)
    assert diffs["raw"]["difference_ci"][0] <= 0.0 <= diffs["raw"]["difference_ci"][1]
    choice = choose_coefficient(rows, split.selection)
    assert diffs["mean_centred"]["difference"] == pytest.approx(paired_difference(
        chosen_rows(rows, choice, ("mean_centred", 15, "all_prompt"), split.report),
        chosen_rows(rows, choice, ("random", 15, "all_prompt"), split.report)).mean)
    with pytest.raises(ValueError, match="baseline 'bias' has no rows"):
        differences_against(rows, split, "bias")


def test_score_rows_rates_against_the_unsteered_row_of_the_same_prompt() -> None:
    def row(method: str, prompt: str, concept: float, ppl: float, distinct: float, lp: float) -> dict:
        return {"condition": method, "layer": 15, "position": "all_prompt",
                "coefficient": 0.0 if method == "none" else 0.5,
                "prompt_id": prompt, "concept": concept, "perplexity": ppl, "distinct": distinct,
                "relevance_logprob": lp}

    rows = [row("none", "a", 0.1, 10.0, 1.0, -2.0), row("none", "b", 0.2, 20.0, 0.8, -3.0),
            row("mean_centred", "a", 0.8, 20.0, 1.0, -2.0 - math.log(2)),  # fluency 0.5, relevance 0.5
            row("mean_centred", "b", 0.0, 20.0, 0.8, -3.0)]  # concept 0: score 0
    scored = score_rows(rows)
    assert scored[0]["score"] == pytest.approx(3 / (1 / 0.1 + 1 + 1))  # the reference: fluency, relevance 1
    assert scored[2]["fluency_unit"] == pytest.approx(0.5) and scored[2]["relevance_unit"] == pytest.approx(0.5)
    assert scored[2]["score"] == pytest.approx(3 / (1 / 0.8 + 2 + 2))
    assert scored[3]["score"] == 0.0
    assert "score" not in rows[0]  # the caller's rows are not edited
    with pytest.raises(ValueError, match="no 'none' row"):
        score_rows(rows[2:])
