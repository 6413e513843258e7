"""The notebooks' generated sentences and headline numbers (01, 02 in study.analysis; 03 in
study.examples), on synthetic recorded numbers with planted answers, both sides of each branch."""

from __future__ import annotations

from typing import Any

import pytest
from steerlab.metrics import bootstrap_mean_ci
from steerlab.study.analysis import (
    bias_findings,
    bias_headline,
    centring_findings,
    first_token_findings,
    interpret_conclusion,
    interpret_headline,
    mid_layer,
)
from steerlab.study.examples import (
    MIN_INTERVAL,
    concept_change,
    steer_conclusion,
    steer_headline,
    steer_headline_ci,
    steer_table,
    verdict,
)


def bias_record() -> dict[str, Any]:
    return {
        "layers": [0, 1, 2, 3, 4], "tokens": 100,
        "norm_of_mean": [1.0, 8.0, 9.0, 10.0, 11.0], "mean_norm": [2.0, 10.0, 10.0, 12.0, 12.0],
        "ratio": [0.5, 0.8, 0.9, 0.8333, 0.9167], "avg_cos_to_mean": [0.4, 0.7, 0.8, 0.75, 0.9],
        "avg_pairwise_cos": [0.1, 0.5, 0.6, 0.7, 0.8],
        "first_token_mean_norm": [2.0, 50.0, 300.0, 24.0, 12.0], "all_tokens_avg_cos_to_mean": [0.4, 0.6, 0.5, 0.7, 0.8],
        "first_token_mean_shift_mid": 4.25,
        "centred": {"ratio": [1e-7, 3e-6, 2e-7, 1e-7, 1e-7], "avg_cos_to_mean": [0.01, -0.04, 0.02, 0.0, 0.0],
                    "avg_pairwise_cos": [0.001, -0.002, 0.003, 0.0, 0.0]},
    }


def test_bias_sentences_read_the_middle_layer() -> None:
    b = bias_record()
    assert mid_layer(b["layers"]) == 2
    lines = bias_findings(b)
    assert lines[0].startswith("100 tokens. At layer 2: norm of the mean 9.0, mean norm 10.0 (ratio 0.90)")
    assert "between activations 0.60" in lines[0]
    assert "is 0.65:" in lines[1]  # mean of layers 1..4: (0.5 + 0.6 + 0.7 + 0.8) / 4
    first = first_token_findings(b)
    assert "up to 30.0x that of other tokens (layer 2)" in first[0]  # 300 / 10 at layer 2
    assert "moves the layer-2 mean by 4.2" in first[1] and "from 0.80 to 0.50" in first[1]
    centred = centring_findings(b)[0]
    assert "ratio 3.00e-06" in centred and "|avg pairwise cos| 0.003" in centred and "old mean direction| 0.040" in centred
    assert bias_headline(b) == {"mid_layer": 2, "ratio_mid": 0.9, "avg_pairwise_cos_mid": 0.6, "centred_max_ratio": 3e-06}
    with pytest.raises(ValueError):
        mid_layer([])


def interpret_record(jaccard_centred: float) -> dict[str, Any]:
    return {
        "model": "tiny", "n_layers": 2, "layer": 1, "layers": [0, 1, 2], "genres": ["a", "b", "c", "d"], "top_k": 5,
        "topk_jaccard": {"raw": 0.9, "centred": jaccard_centred, "isolated": 0.3},
        "cosine_offdiag_by_layer": {"raw": [0.99, 0.95, 0.9], "centred": [0.2, 0.1, 0.05], "isolated": [0.1, 0, 0]},
        "heldout_accuracy": {"raw": [0.25, 0.5, 0.75], "centred": [0.5, 1.0, 0.75]}, "heldout_count": 8,
    }


@pytest.mark.parametrize(("centred", "verdict"), [
    (0.2, "lower: centring separates the genres in the lens"),
    (0.95, "not lower: centring does not separate them here"),
])
def test_interpret_conclusion_branches(centred: float, verdict: str) -> None:
    lines = interpret_conclusion(interpret_record(centred))
    assert lines[0].startswith("On tiny, at layer 1 of 2, the raw genre vectors' top-5 tokens overlap with a mean "
                               "Jaccard of 0.90 across 4 genres")
    assert f"({verdict})." in lines[0]
    assert lines[1] == "The raw genre vectors have a mean pairwise cosine of 0.950; centred, 0.100."
    assert ("peaks at 0.75 (raw, layer 2) and 1.00 (centred, layer 1); at layer 1: raw 0.50, centred 1.00; "
            "chance 0.25.") in lines[2]


def test_interpret_headline() -> None:
    assert interpret_headline(interpret_record(0.2)) == {"layer": 1, "jaccard_raw": 0.9, "jaccard_centred": 0.2,
                                                         "acc_raw_at_layer": 0.5, "acc_centred_at_layer": 1.0}


def recorded(plain: list[float], steered: list[float], *, slopes: list[float] | None = None,
             target: str = "fantasy") -> dict[str, Any]:
    """A recorded sweep (SweepResult.as_dict's fields) over coefficients 0 and 1: the judge's
    planted per-sample P(target), summarised by the library's own concept_change; a planted
    steerability from per-story slopes; the vocabulary rate at 0 throughout."""
    change = concept_change([0.0, 1.0], [plain, steered])
    steer = None
    if slopes is not None:
        steer = {"steerability": sum(slopes) / len(slopes), "steerability_ci": list(bootstrap_mean_ci(slopes)),
                 "anti_steerable_fraction": sum(x < 0 for x in slopes) / len(slopes), "n_samples": len(slopes),
                 "slopes": slopes}
    return {"coefficients": [0.0, 1.0], "target": target, "n_samples": len(plain), **change, "steerability": steer,
            "vocab_rate": [0.0, 0.0], "perplexity": [10.0, 14.0], "notes": []}


UP = [0.10, 0.12, 0.09, 0.11, 0.10, 0.12, 0.08, 0.10]
NULL_SLOPES = [0.3, -0.2, 0.1, -0.3, 0.2, -0.1, 0.25, -0.25]


def test_moves_when_the_judge_ci_excludes_zero_though_no_target_word_appears() -> None:
    r = recorded(UP, [x + d for x, d in zip(UP, (0.1, 0.14, 0.08, 0.12, 0.1, 0.09, 0.13, 0.11))],
                 slopes=NULL_SLOPES)
    assert r["concept_delta_ci"][1][0] > 0 and r["vocab_rate"] == [0.0, 0.0]  # the plant: judge up, no target word
    lines = steer_conclusion({"additional": {"all_prompt": r}}, ["all_prompt"], 1.0, 8)
    assert len(lines) == 1
    assert lines[0].startswith("additional, all_prompt: moves towards fantasy (judge): P(fantasy) +0.109 [+0.")
    assert "at coefficient ×1 (8 completions per coefficient)" in lines[0]
    assert "steerability 0.000 [" in lines[0] and "4 of 8 story pairs anti-steerable" in lines[0]
    assert "Secondary: vocab rate 0.000 -> 0.000, perplexity 10.0 -> 14.0" in lines[0]
    assert "no movement" not in lines[0]
    # Steerability alone resolves it too; and a resolved decrease reads "away from".
    r = recorded(UP, UP, slopes=[0.2, 0.3, 0.25, 0.2, 0.3, 0.2, 0.25, 0.3])
    assert verdict(r, 1.0) == "moves towards fantasy (steerability)"
    r = recorded(UP, [x - 0.05 for x in UP], slopes=[-0.2, -0.3, -0.25, -0.2, -0.3, -0.2, -0.25, -0.3])
    assert verdict(r, 1.0) == "moves away from fantasy (judge and steerability)"
    r = recorded(UP, [x - 0.05 for x in UP], slopes=[0.2, 0.3, 0.25, 0.2, 0.3, 0.2, 0.25, 0.3])
    assert verdict(r, 1.0) == "instruments disagree"


def test_not_resolved_for_a_null_and_for_too_few_samples() -> None:
    noise = (0.02, -0.03, 0.01, -0.02, 0.03, -0.01, 0.02, -0.02)
    r = recorded(UP, [x + e for x, e in zip(UP, noise)], slopes=NULL_SLOPES)
    assert r["concept_delta_ci"][1][0] < 0 < r["concept_delta_ci"][1][1]
    line = steer_conclusion({"additional": {"all_prompt": r}}, ["all_prompt"], 1.0, 8)[0]
    assert line.startswith("additional, all_prompt: not resolved: P(fantasy) +0.000 [-0.")
    # Two samples that both rose: their bootstrap "interval" would exclude 0; no interval is given instead.
    r = recorded([0.1, 0.1], [0.3, 0.35], slopes=NULL_SLOPES)
    assert r["concept_delta_ci"] == [None, None]
    line = steer_conclusion({"additional": {"all_prompt": r}}, ["all_prompt"], 1.0, 2)[0]
    assert line.startswith("additional, all_prompt: not resolved: P(fantasy) +0.225 (no interval from 2 sample(s); "
                           f"{MIN_INTERVAL} needed)")


def test_without_judge_class_or_stories_it_says_so() -> None:
    r = {**recorded(UP, UP), "target": "pirates", "concept": None, "concept_ci": None, "concept_delta": None,
         "concept_delta_ci": None, "notes": ["not judged: the concept judge has no class 'pirates'"]}
    line = steer_conclusion({"mine": {"all": r}}, ["all"], 1.0, 8)[0]
    assert line.startswith("mine, all: not measured by the judge or steerability (not judged: the concept judge has "
                           "no class 'pirates'); vocabulary rate only: vocab rate 0.000 -> 0.000")
    r["steerability"] = recorded(UP, UP, slopes=NULL_SLOPES)["steerability"]
    line = steer_conclusion({"mine": {"all": r}}, ["all"], 1.0, 8)[0]
    assert line.startswith("mine, all: not resolved: P(pirates) not judged (no judge class 'pirates'); steerability")
    assert steer_headline({"mine": {"all": r}}, ["all"], 1.0)["mine.concept_delta"] is None
    assert steer_headline_ci({"mine": {"all": r}}, ["all"], 1.0)["mine.concept_delta"].startswith("not judged")


def test_positions_compared_by_paired_steerability() -> None:
    low = [0.01, 0.02, 0.01, 0.015, 0.02, 0.01, 0.012, 0.018]
    high = [0.3, 0.25, 0.35, 0.3, 0.28, 0.32, 0.3, 0.27]
    by_example = {"ex1": {"first": recorded(UP, UP, slopes=low), "all_prompt": recorded(UP, UP, slopes=high)}}
    lines = steer_conclusion(by_example, ["first", "all_prompt"], 1.0, 8)
    assert "least with position 'first' (0.014) and most with 'all_prompt' (0.296)" in lines[2]
    assert "is resolved for 1 of 1" in lines[2] and "attention sink" in lines[3]
    # The same totals with per-story noise that hides the difference: no explanation, "not resolved".
    noisy = [x + e for x, e in zip(high, (0.9, -0.8, 0.7, -0.9, 0.8, -0.7, 0.6, -0.6))]
    by_example = {"ex1": {"first": recorded(UP, UP, slopes=low), "all_prompt": recorded(UP, UP, slopes=noisy)}}
    lines = steer_conclusion(by_example, ["first", "all_prompt"], 1.0, 8)
    assert "is resolved for 0 of 1" in lines[2] and lines[3].startswith("Not resolved at this sample size (8 story")
    assert not any("attention sink" in line for line in lines)
    # 'first' steering most: no sink explanation.
    by_example = {"ex1": {"first": recorded(UP, UP, slopes=high), "all_prompt": recorded(UP, UP, slopes=low)}}
    lines = steer_conclusion(by_example, ["first", "all_prompt"], 1.0, 8)
    assert "least with position 'all_prompt'" in lines[2] and len(lines) == 3
    # No steerability anywhere: positions not compared.
    by_example = {"ex1": {"first": recorded(UP, UP), "all_prompt": recorded(UP, UP)}}
    assert steer_conclusion(by_example, ["first", "all_prompt"], 1.0, 8)[2].startswith("No example has a steerability")


def test_steer_headline_and_missing_coefficient() -> None:
    r = recorded(UP, [x + 0.1 for x in UP], slopes=NULL_SLOPES)
    by_example = {"ex1": {"first": recorded(UP, UP), "all_prompt": r}}
    headline = steer_headline(by_example, ["first", "all_prompt"], 1.0)
    assert headline == {"ex1.verdict": "moves towards fantasy (judge)", "ex1.concept_delta": 0.1,
                        "ex1.steerability": 0.0}
    ci = steer_headline_ci(by_example, ["first", "all_prompt"], 1.0)
    assert ci["ex1.concept_delta"] == pytest.approx([0.1, 0.1]) and ci["ex1.steerability"][0] < 0
    with pytest.raises(ValueError, match="lacks coefficient 3.0"):
        steer_headline(by_example, ["all_prompt"], 3.0)
    with pytest.raises(ValueError, match="lack 0"):
        concept_change([0.5, 1.0], [UP, UP])
    table = steer_table(by_example, ["first", "all_prompt"], 1.0)
    assert list(table)[2:5] == ["verdict", "P(target) change [95% CI]", "steerability [95% CI] (nats/token per × centred norm)"]
    assert table["P(target) change [95% CI]"][1] == "P(fantasy) +0.100 [+0.100, +0.100]"
    assert table["vocab rate ×0 → steered (secondary)"] == ["0.000 → 0.000"] * 2


def test_03_measures_steerability_on_04s_default_grid() -> None:
    """03's steerability slopes read as notebook 04's: the same grid as 04's default preset."""
    from steerlab.study.compare import PRESETS, CompareConfig
    from steerlab.study.examples import STEERABILITY_GRID

    assert list(STEERABILITY_GRID) == list(CompareConfig.from_preset("default").coefficients)
    assert list(STEERABILITY_GRID) == list(PRESETS["default"]["coefficients"])
