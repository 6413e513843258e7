"""The pre-registered contrasts on synthetic rows with planted answers: a planted ranking is
recovered, corrected verdicts call a difference under the null at no more than the nominal
rate, TOST needs enough samples, the MDD is the difference found with 80% power, and a best
of N is chosen and tested on different samples."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats
from steerlab.constructions import CONSTRUCTIONS
from steerlab.study.contrasts import (
    CONSTRUCTIONS_UNDER_TEST,
    EQUIVALENCE_MARGINS,
    PREREGISTERED,
    Sample,
    at_cells,
    best_of,
    holm,
    mdd,
    paired_t_test,
    preregistered,
    registration,
    required_n,
    run_contrasts,
    samples_from_dicts,
    samples_from_lists,
    to_records,
    tost_p,
)
from steerlab.study.scoring import PromptSplit
from steerlab.study.sentences import conclusions


# Monte-Carlo margin for a rate estimated from R runs: 3 binomial standard errors.
def _mc_margin(rate: float, runs: int) -> float:
    return 3 * math.sqrt(rate * (1 - rate) / runs)


def _rows(means: dict[str, float], *, targets: tuple[str, ...] = ("fantasy", "horror", "romance"), n: int = 40,
          noise: float = 0.1, shared: float = 0.5, rng: np.random.Generator, layer: int = 15,
          position: str = "all_prompt") -> list[Sample]:
    """Each construction's value on sample i: its planted mean + a per-sample effect shared by every
    construction (pairing removes it) + independent noise."""
    out = []
    for t in targets:
        effect = rng.normal(0.0, shared, n)
        values = {c: m + effect + rng.normal(0.0, noise, n) for c, m in means.items()}
        out += [Sample(t, c, layer, position, i, float(v[i])) for c, v in values.items() for i in range(n)]
    return out


PLANTED = {"random": 0.0, "raw": 0.0, "mean_centred": 0.5, "bias_ablated": 0.5, "isolated": 0.5,
           "counterbalanced": 0.7, "pca_diff": 0.6, "prompting": 1.0}


def test_the_list_is_fixed_and_covers_the_registry() -> None:
    names = [c.name for c in PREREGISTERED]
    assert names[:5] == ["(a) raw vs random", "(b) mean_centred vs raw", "(c) bias_ablated vs mean_centred",
                         "(d) isolated vs mean_centred", "(e) counterbalanced vs mean_centred"]
    assert [c.label for c in PREREGISTERED if c.equivalence] == ["c"]
    assert len(names) == len(set(names))  # raw vs random is asked once, as (a)
    assert {c.label for c in PREREGISTERED} == set("abcdefg")
    assert {c.a for c in PREREGISTERED if c.label == "f"} == set(CONSTRUCTIONS_UNDER_TEST) - {"raw"}
    assert {c.a for c in PREREGISTERED if c.label == "g"} == set(CONSTRUCTIONS_UNDER_TEST) - {"prompting"}
    # A construction added to the registry must be pre-registered here before it is compared.
    assert set(CONSTRUCTIONS) - {"random"} <= set(CONSTRUCTIONS_UNDER_TEST)
    assert {"pca_diff", "pca_center", "probe", "prompting"} <= set(CONSTRUCTIONS_UNDER_TEST)
    assert EQUIVALENCE_MARGINS["steerability"] > 0 and EQUIVALENCE_MARGINS["score"] > 0


def test_a_planted_ranking_is_recovered() -> None:
    samples = _rows(PLANTED, rng=np.random.default_rng(0))
    results = run_contrasts(samples, contrasts=preregistered(tuple(PLANTED)))
    by = {(r.label, r.a, r.b, r.scope): r for r in results}
    scopes = ("fantasy", "horror", "romance", "pooled")
    for s in scopes:
        assert by[("b", "mean_centred", "raw", s)].verdict == "mean_centred > raw"
        assert by[("e", "counterbalanced", "mean_centred", s)].verdict == "counterbalanced > mean_centred"
        assert by[("c", "bias_ablated", "mean_centred", s)].verdict == "equivalent within ±0.1"
        assert by[("a", "raw", "random", s)].verdict.startswith("not resolved at this sample size (MDD ")
        assert by[("d", "isolated", "mean_centred", s)].verdict.startswith("not resolved")
        for c in ("mean_centred", "bias_ablated", "isolated", "counterbalanced", "pca_diff", "prompting"):
            assert by[("f", c, "random", s)].verdict == f"{c} > random"
        for c in ("raw", "random", "mean_centred", "bias_ablated", "isolated", "counterbalanced", "pca_diff"):
            assert by[("g", c, "prompting", s)].verdict == f"{c} < prompting"
    for r in results:
        assert r.status == "run" and r.layer == 15 and r.position == "all_prompt"
        assert r.estimate == pytest.approx(PLANTED[r.a] - PLANTED[r.b], abs=0.06)
        assert r.ci[0] < r.estimate < r.ci[1]
        assert r.sd < 0.2  # paired: the shared per-sample effect (sd 0.5) is gone
        assert r.n == (120 if r.scope == "pooled" else 40)
        assert r.family_size == len(results) + 4  # one extra hypothesis (TOST) per scope
        assert r.p <= r.p_holm <= 1
    pooled = by[("b", "mean_centred", "raw", "pooled")]
    assert pooled.targets == ("fantasy", "horror", "romance")


def test_missing_constructions_are_listed_as_not_run() -> None:
    samples = _rows({"random": 0.0, "raw": 0.0, "mean_centred": 0.5}, targets=("fantasy",), n=12,
                    rng=np.random.default_rng(1))
    results = run_contrasts(samples)
    assert len(results) == 2 * len(PREREGISTERED)  # fantasy and pooled: every contrast listed
    not_run = [r for r in results if r.status == "not run"]
    assert all(math.isnan(r.estimate) and r.verdict == "not run" for r in not_run)
    prompting = [r for r in results if r.label == "g"]
    assert prompting and all(r.status == "not run" and "'prompting'" in r.reason for r in prompting)
    run = {r.name for r in results if r.status == "run"}
    assert run == {"(a) raw vs random", "(b) mean_centred vs raw", "(f) mean_centred vs random"}
    # Only hypotheses that ran enter the Holm family.
    assert {r.family_size for r in results if r.status == "run"} == {6}
    text = conclusions(results)
    assert len(text) == len(results)
    assert "(g) mean_centred vs prompting, fantasy, layer 15, all_prompt (steerability): not run (no 'prompting' rows" \
        in text[[r.name for r in results].index("(g) mean_centred vs prompting")]


def test_conclusions_are_made_of_one_contrast_each() -> None:
    samples = _rows(PLANTED, targets=("fantasy",), rng=np.random.default_rng(2))
    results = run_contrasts(samples, contrasts=preregistered(tuple(PLANTED)), pooled=False)
    for r, sentence in zip(results, conclusions(results)):
        assert sentence.startswith(f"{r.name}, fantasy, layer 15, all_prompt (steerability): {r.a} − {r.b} = ")
        assert f"n = {r.n}" in sentence and f"over {r.family_size} tests" in sentence
        assert sentence.endswith(f": {r.verdict}.")
        lo, hi = (f"{x:+.3g}".replace("-", "−") for x in r.ci)
        assert f"95% CI [{lo}, {hi}]" in sentence
    (c,) = [s for s in conclusions(results) if s.startswith("(c)")]
    assert "equivalence (TOST, ±0.1) Holm p" in c


def test_corrected_verdicts_hold_the_nominal_rate_under_the_null() -> None:
    """2,000 seeded complete nulls (every construction the same mean), 2 targets + pooled, 16
    contrasts, 51 hypotheses: the share of runs with any corrected call of a difference must
    be at most alpha + 3 Monte-Carlo standard errors (0.05 + 0.015); uncorrected, single tests
    reject at about alpha and some test in a run far more often."""
    names = ("random", "raw", "mean_centred", "bias_ablated", "isolated", "counterbalanced", "prompting")
    contrasts = preregistered(names)
    rng = np.random.default_rng(12345)
    runs, any_call, any_raw, single, hypotheses = 2000, 0, 0, 0, 0
    for _ in range(runs):
        results = run_contrasts(_rows(dict.fromkeys(names, 0.3), targets=("fantasy", "horror"), n=10, noise=1.0,
                                      rng=rng), contrasts=contrasts)
        any_call += any(r.calls_difference for r in results)
        any_raw += any(r.p < 0.05 for r in results)
        single += sum(r.p < 0.05 for r in results)
        hypotheses += len(results)
    assert len(results) == 48 and results[0].family_size == 51
    fwer = any_call / runs
    assert fwer <= 0.05 + _mc_margin(0.05, runs), fwer
    per_test = single / hypotheses
    assert abs(per_test - 0.05) <= _mc_margin(0.05, hypotheses) * 3, per_test  # runs are clustered: wider
    assert any_raw / runs > 0.3  # why the correction is there


def test_tost_says_equivalent_with_enough_samples_only() -> None:
    rng = np.random.default_rng(3)

    def verdict(n: int) -> str:
        samples = _rows({"mean_centred": 0.5, "bias_ablated": 0.5}, targets=("fantasy",), n=n, noise=0.3, rng=rng)
        (r,) = run_contrasts(samples, contrasts=[c for c in PREREGISTERED if c.label == "c"], pooled=False)
        return r.verdict

    assert verdict(200) == "equivalent within ±0.1"
    assert verdict(6).startswith("not resolved at this sample size")
    # TOST itself: within the margin, not at it.
    assert tost_p(rng.normal(0.0, 0.1, 400), 0.05) < 1e-4
    assert tost_p(rng.normal(0.2, 0.1, 400), 0.05) > 0.5
    # At the margin the TOST rejects at about its level (it is a size-alpha test).
    p_at_margin = [tost_p(rng.normal(0.1, 0.3, 30), 0.1) for _ in range(2000)]
    rate = float(np.mean(np.array(p_at_margin) < 0.05))
    assert rate <= 0.05 + _mc_margin(0.05, 2000), rate


def test_paired_t_and_holm_match_their_textbook_forms() -> None:
    rng = np.random.default_rng(4)
    a, b = rng.normal(0.3, 1, 15), rng.normal(0.0, 1, 15)
    t = paired_t_test(a - b)
    ref = stats.ttest_rel(a, b)
    assert t.p == pytest.approx(ref.pvalue, rel=1e-9)
    lo, hi = ref.confidence_interval(0.95)
    assert t.ci == pytest.approx((lo, hi), rel=1e-9)
    assert paired_t_test([0.2, 0.2, 0.2]).p == 0.0 and paired_t_test([0.0, 0.0]).p == 1.0
    # Holm by hand: sorted 0.01, 0.03, 0.04 -> 3 x 0.01, max(0.03, 2 x 0.03), max(0.06, 0.04).
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []
    with pytest.raises(ValueError, match="at least 2"):
        paired_t_test([0.1])
    with pytest.raises(ValueError, match="NaN or inf"):
        paired_t_test([0.1, float("nan")])
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        holm([0.1, 1.5])


def test_mdd_scales_as_one_over_root_n_and_has_80_percent_power() -> None:
    values = {n: mdd(1.0, n) for n in (6, 12, 50, 200)}
    assert values[200] / values[50] == pytest.approx(0.5, abs=0.01)
    assert values[6] > values[12] > values[50] > values[200]
    assert values[200] * math.sqrt(200) == pytest.approx(1.96 + 0.8416, abs=0.03)  # the normal limit
    assert mdd(2.0, 12) == pytest.approx(2 * values[12])
    assert mdd(0.0, 12) == 0.0
    assert mdd(1.0, 12, alpha=0.005) > values[12]  # a stricter level needs a larger difference
    # Power by simulation: 2,000 paired data sets whose true mean is the MDD, sd 1, n 12.
    rng = np.random.default_rng(5)
    runs = 2000
    found = sum(paired_t_test(rng.normal(values[12], 1.0, 12)).p < 0.05 for _ in range(runs)) / runs
    assert abs(found - 0.80) <= _mc_margin(0.8, runs), found
    # At a Holm-style level and few samples (where scipy's noncentral t gives nan) as well:
    # 20,000 vectorised draws of n = 6 at alpha = 0.05 / 30.
    k = mdd(1.0, 6, alpha=0.05 / 30)
    x = rng.normal(k, 1.0, (20000, 6))
    t = x.mean(1) / (x.std(1, ddof=1) / math.sqrt(6))
    found = float((np.abs(t) > stats.t.ppf(1 - 0.05 / 60, 5)).mean())
    assert abs(found - 0.80) <= _mc_margin(0.8, 20000), found
    # required_n is mdd's inverse.
    n = required_n(1.0, 0.5)
    assert mdd(1.0, n) <= 0.5 < mdd(1.0, n - 1)
    assert required_n(0.3, 0.5) == 6 and mdd(0.3, 5) > 0.5
    with pytest.raises(ValueError, match="n is 1"):
        mdd(1.0, 1)
    with pytest.raises(ValueError, match="sd is nan"):
        mdd(float("nan"), 10)
    with pytest.raises(ValueError, match="difference is 0"):
        required_n(1.0, 0)


def test_the_corrected_mdd_belongs_to_the_corrected_test() -> None:
    samples = _rows({"random": 0.0, "raw": 0.0, "mean_centred": 0.0}, targets=("fantasy",), n=20,
                    rng=np.random.default_rng(6))
    results = [r for r in run_contrasts(samples) if r.status == "run"]
    for r in results:
        assert r.mdd == pytest.approx(mdd(r.sd, r.n))
        assert r.mdd_corrected == pytest.approx(mdd(r.sd, r.n, alpha=0.05 / r.family_size)) and r.mdd_corrected > r.mdd
        if r.verdict.startswith("not resolved"):
            assert r.verdict == f"not resolved at this sample size (MDD {r.mdd_corrected:.3g})"


def test_best_of_is_chosen_and_tested_on_different_samples() -> None:
    rng = np.random.default_rng(7)
    samples = _rows({"random": 0.0, "raw": 0.1, "mean_centred": 0.5, "counterbalanced": 0.8}, n=30, rng=rng)
    best = best_of(samples, baseline="random")
    assert best.chosen == ("counterbalanced", 15, "all_prompt")
    assert not set(best.split.selection) & set(best.split.report)
    assert best.result.n == len(best.split.report) and best.result.label == "best"
    assert best.result.verdict == "counterbalanced > random"
    assert "selection samples" in conclusions([best.result])[0]
    one = best_of(samples, baseline="random", target="horror")
    assert one.result.scope == "horror" and one.result.n == 15
    with pytest.raises(ValueError, match="winner's curse"):
        best_of(samples, split=PromptSplit(selection=(("fantasy", 0), ("fantasy", 1)), report=(("fantasy", 1),)))
    # Under the null, 20 conditions: the best tested on the samples that chose it looks real
    # more often than the nominal 5% (about 19% here: the conditions share the random side);
    # chosen on one half and tested on the other it does not.
    names = ["random", *(f"m{k}" for k in range(20))]
    runs, same, split = 300, 0, 0
    for _ in range(runs):
        null = _rows(dict.fromkeys(names, 0.0), targets=("fantasy",), n=20, noise=1.0, rng=rng)
        b = best_of(null, target="fantasy")
        split += b.result.calls_difference
        values = {c: np.array([s.value for s in null if s.condition == c]) for c in names}  # sample order
        diffs = {c: values[c] - values["random"] for c in names[1:]}
        top = max(diffs, key=lambda c: float(diffs[c].mean()))
        same += paired_t_test(diffs[top]).p < 0.05
    assert same / runs > 0.05 + _mc_margin(0.05, runs), same / runs
    assert split / runs <= 0.05 + _mc_margin(0.05, runs), split / runs


def test_rows_convert_and_bad_rows_are_named() -> None:
    rows = [{"target": "fantasy", "condition": m, "layer": 15, "position": "all_prompt", "prompt_id": p, "score": s}
            for m, p, s in [("raw", 0, 0.1), ("raw", 1, 0.2), ("random", 0, 0.0), ("random", 1, 0.1)]]
    samples = samples_from_dicts(rows, value="score", sample_id="prompt_id")
    assert samples[0] == Sample("fantasy", "raw", 15, "all_prompt", 0, 0.1)
    (a,) = [r for r in run_contrasts(samples, measure="score", pooled=False) if r.status == "run"]
    assert a.name == "(a) raw vs random" and a.estimate == pytest.approx(0.1) and a.measure == "score"
    steer = [{"target": "fantasy", "condition": "raw", "layer": 15, "position": "all_prompt",
              "slopes": np.array([0.1, -0.2])}]
    assert [s.value for s in samples_from_lists(steer)] == [0.1, -0.2]
    assert [s.sample_id for s in samples_from_lists(steer)] == [0, 1]
    with pytest.raises(KeyError, match="no field 'score'"):
        samples_from_dicts([{"target": "t", "condition": "raw", "layer": 1, "position": "p", "sample_id": 0}],
                           value="score")
    with pytest.raises(ValueError, match="expected a finite number"):
        Sample("fantasy", "raw", 15, "all_prompt", 0, float("inf"))
    with pytest.raises(ValueError, match="layer is '15'"):
        Sample("fantasy", "raw", "15", "all_prompt", 0, 0.1)  # type: ignore[arg-type]
    # Two constructions measured on different samples: an error, not a silent drop.
    with pytest.raises(ValueError, match="different samples: only in a \\[2\\]"):
        run_contrasts([*samples, Sample("fantasy", "raw", 15, "all_prompt", 2, 0.3)], pooled=False)
    with pytest.raises(ValueError, match="cells \\[\\(3, 'last'\\)\\] are not in the samples"):
        run_contrasts(samples, cells=[(3, "last")])
    with pytest.raises(ValueError, match="no pre-registered equivalence margin for measure 'kl'"):
        run_contrasts(samples, measure="kl")
    with pytest.raises(ValueError, match="no samples"):
        run_contrasts([])
    # Several rows of one sample (seeds) count once, by their mean.
    seeds = [*samples, Sample("fantasy", "raw", 15, "all_prompt", 0, 0.3)]
    (a2,) = [r for r in run_contrasts(seeds, pooled=False) if r.status == "run"]
    assert a2.estimate == pytest.approx(((0.2 - 0.0) + (0.2 - 0.1)) / 2)


def test_cells_are_compared_at_the_same_layer_and_position_only() -> None:
    rng = np.random.default_rng(8)
    samples = (_rows({"random": 0.0, "raw": 0.0}, targets=("fantasy",), n=10, rng=rng, layer=9)
               + _rows({"random": 0.0, "raw": 2.0}, targets=("fantasy",), n=10, rng=rng, layer=15))
    contrasts = [PREREGISTERED[0]]
    results = run_contrasts(samples, contrasts=contrasts, pooled=False)
    assert [(r.layer, r.verdict) for r in results][1] == (15, "raw > random")
    assert results[0].layer == 9 and not results[0].calls_difference
    assert results[0].family_size == 2
    (only,) = run_contrasts(samples, contrasts=contrasts, pooled=False, cells=[(15, "all_prompt")])
    assert only.family_size == 1
    per_scope = run_contrasts(samples, contrasts=contrasts, family="scope")
    assert {r.family_size for r in per_scope} == {1}


def test_prompting_pairs_at_every_cell_and_results_go_to_json() -> None:
    rng = np.random.default_rng(9)
    steered = (_rows({"mean_centred": 0.5}, targets=("fantasy",), n=12, rng=rng, layer=9)
               + _rows({"mean_centred": 0.5}, targets=("fantasy",), n=12, rng=rng, layer=15))
    asked = [Sample("fantasy", "prompting", 0, "none", i, 1.0 + 0.1 * rng.standard_normal()) for i in range(12)]
    placed = at_cells(asked, [(9, "all_prompt"), (15, "all_prompt")])
    assert len(placed) == 24 and {(s.layer, s.position) for s in placed} == {(9, "all_prompt"), (15, "all_prompt")}
    (g9, g15) = [r for r in run_contrasts([*steered, *placed], pooled=False)
                 if r.name == "(g) mean_centred vs prompting"]
    assert (g9.layer, g15.layer) == (9, 15) and g9.verdict == g15.verdict == "mean_centred < prompting"
    records = to_records(run_contrasts([*steered, *placed]))
    text = json.dumps(records, allow_nan=False)  # nan of "not run" rows became null
    assert json.loads(text)[0]["name"] == "(a) raw vs random" and records[0]["estimate"] is None
    assert {"estimate", "ci", "mdd", "mdd_corrected", "p_holm", "verdict", "status", "reason"} <= set(records[0])
    config = registration(cells=[(15, "all_prompt")])
    assert config["equivalence_margin"] == EQUIVALENCE_MARGINS["steerability"] and config["correction"] == "holm"
    assert [c["name"] for c in config["contrasts"]] == [c.name for c in PREREGISTERED]
    json.dumps(config, allow_nan=False)
