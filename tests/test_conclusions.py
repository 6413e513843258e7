"""The notebooks' generated sentences and headline numbers (01, 02 in study.analysis; 03 in
study.examples), on synthetic recorded numbers with planted answers, both sides of each branch."""

from __future__ import annotations

from typing import Any

import pytest
from steerlab.study.analysis import (
    bias_findings,
    bias_headline,
    centring_findings,
    first_token_findings,
    interpret_conclusion,
    interpret_headline,
    mid_layer,
)
from steerlab.study.examples import steer_conclusion, steer_headline


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


def sweep(rates: list[float]) -> dict[str, Any]:
    return {"coefficients": [0.0, 1.0, 2.0], "vocab_rate": rates, "perplexity": [10.0, 20.0, 40.0]}


def test_steer_conclusion_sink_explanation_only_when_first_moved_least() -> None:
    quiet_first = {"ex1": {"first": sweep([0.1, 0.1, 0.2]), "all_prompt": sweep([0.1, 0.3, 0.5])},
                   "ex2": {"first": sweep([0.0, 0.05, 0.1]), "all_prompt": sweep([0.0, 0.2, 0.1])}}
    lines = steer_conclusion(quiet_first, ["first", "all_prompt"], 1.0, 2)
    assert lines[0] == ("ex1 at ×1.0: first: vocab rate 0.100 -> 0.100, perplexity 10.0 -> 20.0; "
                        "all_prompt: vocab rate 0.100 -> 0.300, perplexity 10.0 -> 20.0")
    assert "moved least with position 'first' (0.050) and most with 'all_prompt' (0.400)" in lines[2]
    assert "attention sink" in lines[3]
    loud_first = {"ex1": {"first": sweep([0.1, 0.6, 0.2]), "all_prompt": sweep([0.1, 0.2, 0.5])}}
    lines = steer_conclusion(loud_first, ["first", "all_prompt"], 1.0, 1)
    assert "moved least with position 'all_prompt'" in lines[1]
    assert "by chance" in lines[2] and not any("attention sink" in line for line in lines)
    assert len(steer_conclusion(loud_first, ["all_prompt"], 2.0, 1)) == 1  # one position: nothing to compare
    tie = {"ex1": {"first": sweep([0.1, 0.1, 0.2]), "all_prompt": sweep([0.0, 0.0, 0.5])}}
    lines = steer_conclusion(tie, ["first", "all_prompt"], 1.0, 1)
    assert lines[1].startswith("Summed over examples, the vocabulary rate moved by 0.000 with every position rule")
    assert len(lines) == 2  # neither the sink explanation nor the chance warning


def test_steer_headline_and_missing_coefficient() -> None:
    by_example = {"ex1": {"first": sweep([0.1, 0.1, 0.2]), "all_prompt": sweep([0.1, 0.3, 0.5])}}
    assert steer_headline(by_example, ["first", "all_prompt"], 2.0) == {"ex1": 0.4}
    with pytest.raises(ValueError, match="lacks coefficient 3.0"):
        steer_headline(by_example, ["all_prompt"], 3.0)
