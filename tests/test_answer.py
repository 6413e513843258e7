"""The answer's sentences and claims come from the verdicts by rules: a null set of contrasts ranks nothing, a
planted ranking is stated, and every number in a sentence is one of the records' (steerlab.study.answer)."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any

import pytest
from steerlab.study.answer import QUESTIONS, answer, classify, lead, primary, tally

REPO = Path(__file__).resolve().parents[1]
CELLS = [(10, "all"), (10, "all_prompt"), (15, "all"), (15, "all_prompt")]
PAIRS = [("raw", "random", "a"), ("mean_centred", "raw", "b"), ("bias_ablated", "mean_centred", "c"),
         ("isolated", "mean_centred", "d"), ("counterbalanced", "mean_centred", "e"),
         *[(n, "random", "f") for n in ("mean_centred", "isolated", "counterbalanced", "pca_diff", "pca_center",
                                         "probe")],
         *[(n, "prompting", "g") for n in ("mean_centred", "isolated", "counterbalanced", "prompting_steered")]]
MEASURES = ("steerability", "matched", "score")


def _record(a: str, b: str, label: str, measure: str, layer: int, position: str, verdict: str,
            estimate: float) -> dict[str, Any]:
    return {"name": f"({label}) {a} vs {b}", "label": label, "a": a, "b": b, "scope": "pooled", "layer": layer,
            "position": position, "measure": measure, "status": "run", "estimate": estimate, "ci": [0.0, 0.0],
            "mdd_corrected": 0.3, "margin": 0.1 if label == "c" else None, "verdict": verdict, "n": 39,
            "family_size": 128}


def _compare(model: str, verdict_of: Any) -> dict[str, Any]:
    contrasts = {m: [_record(a, b, lab, m, la, pos, *verdict_of(a, b, lab, m)) for (a, b, lab) in PAIRS
                     for la, pos in CELLS] for m in MEASURES}
    return {"model": model, "preset": "full", "contrasts": contrasts}


def _null(a: str, b: str, label: str, measure: str) -> tuple[str, float]:
    return "not resolved at this sample size (MDD 0.3)", 0.01


def _planted(a: str, b: str, label: str, measure: str) -> tuple[str, float]:
    if label == "b":
        return f"{a} > {b}", 0.5
    if label == "c":
        return "equivalent within ±0.1", 0.01
    if label == "e" and measure == "matched":
        return f"{a} < {b}", -0.2
    return "not resolved at this sample size (MDD 0.3)", 0.02


@pytest.mark.parametrize("verdict, kind", [("x > y", "above"), ("x < y", "below"), ("equivalent within ±0.1",
                                            "equivalent"), ("not resolved at this sample size (MDD 0.2)",
                                                            "unresolved")])
def test_classify_reads_each_verdict(verdict: str, kind: str) -> None:
    assert classify({"status": "run", "a": "x", "b": "y", "verdict": verdict}) == kind
    assert classify({"status": "not run", "a": "x", "b": "y", "verdict": verdict}) == "not run"


def test_a_null_set_ranks_nothing() -> None:
    got = answer([_compare("m1", _null), _compare("m2", _null)])
    for key in ("centring", "counterbalancing"):
        text = got.sentences[key]
        assert text.startswith("Not resolved at this sample size"), text
        assert "beats raw in none of" in text or "wins in none of" in text
        assert not re.search(r"\ball \d+ cells|\b\d+ of \d+ cells \(\+", text), text  # no called cell
    assert all(c.verdict in ("not resolved", "not supported (equivalent)") or c.claim.startswith(("Activations",
               "Raw", "Mean-centred vectors read")) for c in got.claims)
    contrast_claims = [c for c in got.claims if "notebook 04" in c.where]
    assert contrast_claims and all(c.verdict == "not resolved" for c in contrast_claims)


def test_a_planted_ranking_is_stated_with_its_numbers() -> None:
    got = answer([_compare("m1", _planted), _compare("m2", _planted)])
    centring = got.sentences["centring"]
    assert centring.startswith("Yes"), centring
    assert "all 8 cells (+0.5" in centring  # 4 cells x 2 models, the planted estimate
    assert "equivalent to it in 24 of 24" in centring
    claims = {c.claim.split(":")[0]: c for c in got.claims}
    assert claims["Removing the bias is part of why counterbalancing works"].verdict == "supported"
    preserved = next(c for c in got.claims if c.claim.startswith("Capabilities"))
    assert preserved.verdict == "not supported"  # planted: counterbalanced < mean-centred at matched damage
    assert "other way in 8" in got.sentences["counterbalancing"]


def test_the_per_target_figure_is_named_only_where_per_target_results_were_recorded() -> None:
    pooled = [_compare("m1", _planted), _compare("m2", _planted)]
    assert "answer_targets" not in answer(pooled).sentences["counterbalancing"]
    with_targets = [{**pooled[0], "per_target": [{"label": "d", "a": "isolated", "b": "mean_centred"}]}, pooled[1]]
    assert "(figure `answer_targets`)" in answer(with_targets).sentences["counterbalancing"]


def test_mixed_calls_never_read_as_yes() -> None:
    up = tally([_record("x", "y", "b", "steerability", 10, "all", "x > y", 0.4)], a="x", b="y", measure="steerability")
    down = tally([_record("x", "y", "b", "steerability", 10, "all", "x < y", -0.4)], a="x", b="y",
                 measure="steerability")
    none = tally([_record("x", "y", "b", "steerability", 10, "all", "not resolved", 0.0)], a="x", b="y",
                 measure="steerability")
    assert lead([up, down]) == "Mixed"
    assert lead([up, none]) == "Sometimes"
    assert lead([up, up]) == "Yes"
    assert lead([down, down]) == "No"
    assert lead([none, none]) == "Not resolved at this sample size"


def test_primary_prefers_the_full_preset() -> None:
    got = primary([{"model": "m", "preset": "default"}, {"model": "m", "preset": "full"},
                   {"model": "n", "preset": "default"}])
    assert got["m"]["preset"] == "full" and got["n"]["preset"] == "default"


def test_every_number_of_the_recorded_answer_is_a_recorded_number() -> None:
    """On the recorded results: each signed estimate a sentence quotes is one of the records' (as rounded)."""
    comps = [json.loads(p.read_text()) for p in sorted((REPO / "docs" / "results").glob("compare-*.json"))]
    if not comps:
        pytest.skip("no recorded comparison")
    got = answer(comps)
    assert set(got.sentences) == set(QUESTIONS)
    best = primary(comps)
    shown = {f"{r['estimate']:+.2g}".replace("-", "−") for res in best.values() for recs in
             res["contrasts"].values() for r in recs if r["status"] == "run"}
    for key in ("centring", "counterbalancing", "field"):
        for number in re.findall(r"[+−]\d[\d.e+−]*", got.sentences[key]):
            assert number in shown, (key, number)


def test_sentences_are_few_and_answer_each_question() -> None:
    got = answer([_compare("m1", _planted)])
    assert list(got.sentences) == list(QUESTIONS)
    assert 5 <= len(got.sentences) <= 8
    md = "\n".join(got.markdown())
    assert md.count("\n1. ") + md.startswith("1. ") == 1
    for a, b in itertools.pairwise(got.markdown()[: len(QUESTIONS)]):
        assert a.split(".")[0] != b.split(".")[0]


def test_a_run_folders_answer_says_what_its_notebook_06_found() -> None:
    """A run's page (``from_summary``) words notebook 06's contrasts with the recorded answer's own
    sentence (``task_answer``), and says "not recorded" only where 06 did not run."""
    from steerlab.study.answer import from_summary
    from steerlab.study.tasks import task_answer

    compare = _compare("m1", _planted)
    summary = {"compare": {"model": "m1", "preset": "quick",
                           "contrasts": {m: {"results": rs} for m, rs in compare["contrasts"].items()}}}
    assert from_summary(summary).sentences["tasks"].startswith("Not recorded")  # type: ignore[union-attr]
    a = {"label": "a", "a": "task_centred", "b": "task_raw", "scope": "pooled", "layer": 15, "status": "run",
         "estimate": 0.1, "ci": [0.05, 0.15], "mdd_corrected": 0.04, "verdict": "task_centred > task_raw",
         "family_size": 12, "targets": ["antonyms"]}
    tasks = {"model": "m1", "kept_tasks": ["antonyms"], "contrasts": [a], "answer": "an older sentence"}
    said = from_summary({**summary, "tasks": tasks}).sentences["tasks"]  # type: ignore[union-attr]
    assert said == task_answer([tasks])[0] and said.startswith("On m1 (1 task pooled") and "helps" in said
