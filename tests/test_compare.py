"""The comparison's own logic on synthetic results with planted answers: the frontier, the
held-out summary, the generated conclusion and the configuration's checks. The sweep itself
runs on a tiny model (shapes and by-construction controls) and, in notebook 04, on the real ones."""

from __future__ import annotations

import itertools
import json
import math
import random
from pathlib import Path
from typing import Any

import pytest
import steerlab as sl
import steerlab.study.compare as compare_mod
import torch
from steerlab.study.cells import CellStore, code_text, json_values, run_key, source_digest
from steerlab.study.compare import (
    CompareConfig,
    CompareResult,
    config_dict,
    frontier,
    run_compare,
    summarise,
)
from steerlab.study.compare_report import conclusion, contrasts_table, heldout_table, not_run_note, per_target_tally
from steerlab.study.scoring import split_prompts


def _synthetic(planted: str = "mean_centred", gap: float = 0.3, n_prompts: int = 16,
               targets: tuple[str, ...] = ("fantasy", "shakespeare")) -> CompareResult:
    """Completion rows where ``planted`` scores ``gap`` more than every other method at
    coefficient 0.25 (and less at 0.5, so the choice matters); noise is small."""
    rng = random.Random(0)
    comps = []
    for t in targets:
        for j in range(n_prompts):
            comps.append({"target": t, "condition": "none", "layer": 15, "position": "all", "coefficient": 0.0,
                          "prompt_id": j, "score": 0.2 + rng.gauss(0, 0.01)})
            for m in ("mean_centred", "raw", "random", "counterbalanced"):
                for c in (0.25, 0.5):
                    base = 0.3 + (gap if m == planted and c == 0.25 else 0.0) - (0.1 if c == 0.5 else 0.0)
                    comps.append({"target": t, "condition": m, "layer": 15, "position": "all", "coefficient": c,
                                  "prompt_id": j, "score": base + rng.gauss(0, 0.02)})
    return CompareResult(rows=[], completions=comps, steerability=[], bias=[], judge={},
                         split=split_prompts(range(n_prompts)), layers=[15])


def _config() -> dict[str, Any]:
    return config_dict(CompareConfig(targets=("fantasy", "shakespeare"), constructions=("mean_centred", "raw", "random",
                                                                                  "counterbalanced")))


@pytest.mark.parametrize("planted", ["mean_centred", "raw"])
def test_the_summary_and_conclusion_name_the_planted_winner(planted: str) -> None:
    result = _synthetic(planted)
    summary = summarise(result)
    best = next(r for r in summary["pooled"] if r["condition"] != "none")
    assert best["condition"] == planted
    for t in ("fantasy", "shakespeare"):
        heldout = summary["per_target"][t]["heldout"]
        assert next(h for h in heldout if h["condition"] == planted)["coefficient"] == 0.25
    vs_random = next(d for d in summary["pooled_differences"]["random"] if d["condition"] == planted)
    assert vs_random["excludes_zero"] and vs_random["difference"] == pytest.approx(0.3, abs=0.05)
    lines = conclusion("model-x", _config(), summary)
    # Claims come from the pre-registered contrasts, Holm-corrected; the best is chosen on the
    # selection half and tested on the report half.
    best_line = next(line for line in lines if line.startswith("(best)"))
    assert f"(best) {planted} vs random" in best_line and f"{planted} > random" in best_line
    assert "selection samples, tested on" in best_line
    want = "mean_centred > raw" if planted == "mean_centred" else "mean_centred < raw"
    assert any(line.startswith("(b) mean_centred vs raw, pooled") and want in line for line in lines)
    table = heldout_table(summary, [])
    assert table[0]["condition"] == planted


def test_the_unsteered_control_is_never_the_best_method() -> None:
    # When every vector costs more fluency than it buys (CI saw this on both real models), the
    # unsteered row scores highest; "best of N" still chooses among the methods.
    result = _synthetic(planted="mean_centred", gap=0.0)
    for c in result.completions:
        if c["condition"] == "none":
            c["score"] = 0.9
    best = summarise(result)["contrasts"]["score"]["best_of"]
    assert best["chosen"] is not None and best["chosen"][0] in ("mean_centred", "raw", "counterbalanced")


def test_a_null_difference_is_reported_as_not_separable() -> None:
    result = _synthetic(planted="mean_centred", gap=0.0)
    summary = summarise(result)
    lines = conclusion("model-x", _config(), summary)
    pooled = [line for line in lines if line.startswith(("(a)", "(b)", "(c)", "(d)", "(e)")) and "pooled" in line]
    assert pooled and all("not resolved at this sample size" in line for line in pooled
                          if "mean_centred vs raw" in line or "counterbalanced vs mean_centred" in line)
    for d in summary["pooled_differences"]["mean_centred"]:
        if d["condition"] in ("raw", "counterbalanced", "random"):
            assert d["difference_ci"][0] <= 0 <= d["difference_ci"][1] or abs(d["difference"]) < 0.03


def test_the_report_half_cannot_move_the_chosen_coefficient() -> None:
    result = _synthetic()
    report = set(result.split.report)
    before = summarise(result)["per_target"]["fantasy"]["heldout"]
    for c in result.completions:
        if c["prompt_id"] in report and c["coefficient"] == 0.5:
            c["score"] = 5.0  # the report half now loves 0.5
    after = summarise(result)["per_target"]["fantasy"]["heldout"]
    chosen = lambda rows: {(r["condition"], r["coefficient"]) for r in rows}
    assert chosen(before) == chosen(after)


def test_frontier_is_the_best_effect_at_each_damage_level_never_sweep_order() -> None:
    rows = [{"condition": "m", "perplexity_ratio": d, "concept_delta": e} for d, e in
            [(1.5, 0.2), (1.0, 0.0), (1.1, 0.1), (1.2, 0.05), (3.0, 0.5), (2.0, 0.15)]]
    f = frontier(rows, "m")
    assert [(p["damage"], p["effect"]) for p in f] == [(1.0, 0.0), (1.1, 0.1), (1.5, 0.2), (3.0, 0.5)]
    assert all(b["effect"] > a["effect"] and b["damage"] >= a["damage"] for a, b in itertools.pairwise(f))
    assert frontier(rows + [{"condition": "m", "perplexity_ratio": math.nan, "concept_delta": 9.0}], "m") == f


def test_bad_configurations_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="including 0, a negative and a positive"):
        CompareConfig(coefficients=(0.0, 0.25))
    with pytest.raises(ValueError, match="targets=\\('fantsy',\\) is not allowed: .*\\(item 0: 'fantsy'\\)"):
        CompareConfig(targets=("fantsy",))
    with pytest.raises(ValueError, match="needs a counter genre other than itself"):
        CompareConfig(targets=("sports",), counters={"sports": "sports"})
    with pytest.raises(ValueError, match="constructions"):
        CompareConfig(constructions=("centred",))
    with pytest.raises(ValueError, match="unknown preset 'tiny'"):
        CompareConfig.from_preset("tiny")
    assert CompareConfig.from_preset("quick", n_prompts=None).n_prompts == 4
    with pytest.raises(ValueError, match="score_dtype='float16' is not allowed"):
        CompareConfig(score_dtype="float16")


@pytest.mark.parametrize(("override", "message"), [
    ({"max_new_tokens": 0}, "max_new_tokens=0 is not allowed: expected an integer from 1 to 4096"),
    ({"n_steer": 0}, "n_steer=0 is not allowed: expected an integer from 1 to 10000"),
    ({"n_general": -1}, "n_general=-1 is not allowed: expected an integer from 1 to 10000"),
    ({"sample_size": 0}, "sample_size=0 is not allowed: expected an integer from 1 to 10000"),
    ({"max_length": -5}, "max_length=-5 is not allowed: expected an integer from 2 to 32768"),
    ({"eval_length": 0}, "eval_length=0 is not allowed: expected an integer from 2 to 32768"),
    ({"n_prompts": "8"}, r"n_prompts='8' is not allowed: expected an integer from 2 to 10000 \(text, not a number"),
    ({"max_new_tokens": 8.0}, "max_new_tokens=8.0 is not allowed: expected an integer"),
    ({"coefficients": [-0.25, 0.0, float("nan"), 0.25]},
     r"coefficients=\[-0.25, 0.0, nan, 0.25\] is not allowed: expected a list of numbers, finite, distinct, .*item 2: nan"),
    ({"coefficients": [-0.25, 0.0, 0.25, 0.25]}, "coefficients=.* expected a list of numbers, finite, distinct"),
    ({"positions": []}, r"positions=\[\] is not allowed: expected a list of at least 1 item\(s\), each one of 'first'"),
    ({"positions": ["all", "all"]}, r"positions=.*'all' repeated"),
    ({"depths": []}, r"^depths is empty and layers is None: give the layers, or fractions of the depth$"),
    ({"depths": [0.5, float("nan")]}, r"depths=\[0.5, nan\] is not allowed: .* \(item 1: nan\)"),
    ({"layers": []}, r"layers=\[\] is not allowed: expected None or a list of at least 1 item\(s\), each an integer from 0"),
    ({"layers": [3, -1]}, r"layers=\[3, -1\] is not allowed: .* \(item 1: -1\)"),
    ({"min_judge_accuracy": 1.5}, r"min_judge_accuracy=1.5 is not allowed: expected a number in \[0, 1\]"),
    ({"damage_threshold": float("nan")}, r"damage_threshold=nan is not allowed: expected a number in \(1, 100\]"),
    ({"damage_threshold": 0.5}, "damage_threshold=0.5 is not allowed"),
    ({"constructions": ["raw", "mean_centred", "raw"]}, r"constructions=.* is not allowed: .*'raw' repeated"),
    ({"targets": ["fantasy", "fantasy"]}, r"targets=.*'fantasy' repeated"),
    ({"split_seed": None, "targets": "fantasy"}, "targets='fantasy' is not allowed: expected a list of at least 1"),
    ({"baselines": ["asking"]}, r"baselines=\['asking'\] is not allowed: .*\(item 0: 'asking'\)"),
    ({"prompting_style": "polite"}, "prompting_style='polite' is not allowed: expected one of 'auto', 'chat', 'prefix'"),
    ({"matched_level": 1.0}, r"matched_level=1.0 is not allowed: expected a number in \(1, 100\]"),
    ({"damage_grid": [0.5]}, r"damage_grid=\[0.5\] is not allowed: expected at least two distinct positive numbers"),
    ({"damage_grid": [0.5, -1.0]}, r"damage_grid=\[0.5, -1.0\] is not allowed: .*\(item 1: -1.0\)"),
])
def test_every_field_is_checked_before_any_model_work(override: dict[str, Any], message: str) -> None:
    """Each of these was accepted (``positions=[]`` and ``depths=[]`` then "succeeded" with 0 rows;
    ``max_new_tokens=0`` failed only after the judge and the statistics were computed)."""
    with pytest.raises(ValueError, match=message):
        CompareConfig.from_preset("quick", **override)


def test_numpy_and_torch_numbers_are_accepted_as_python_numbers() -> None:
    import json

    import numpy as np

    cfg = CompareConfig.from_preset(
        "quick", coefficients=np.array([-0.25, 0.0, 0.25], dtype=np.float32), max_new_tokens=np.int64(6),
        n_prompts=torch.tensor(4), depths=[np.float32(0.5)], damage_threshold=np.float64(2.0),
        min_judge_accuracy=torch.tensor(0.75), sample_size=np.int32(3), layers=torch.tensor([1, 2]))
    assert cfg.coefficients == [-0.25, 0.0, 0.25] and cfg.max_new_tokens == 6 and cfg.n_prompts == 4
    assert cfg.layers == [1, 2] and cfg.depths == [0.5] and cfg.sample_size == 3
    assert cfg.damage_threshold == 2.0 and cfg.min_judge_accuracy == 0.75
    for value in (cfg.max_new_tokens, cfg.n_prompts, cfg.sample_size, *cfg.layers):
        assert type(value) is int
    for value in (*cfg.coefficients, *cfg.depths, cfg.damage_threshold, cfg.min_judge_accuracy):
        assert type(value) is float
    json.dumps(config_dict(cfg))  # plain Python values throughout
    assert cfg.generation_coefficients == [0.25]


def test_auto_scores_in_the_fast_dtype_and_keeps_a_bfloat16_model(tiny_llama: sl.Model,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from steerlab.study import config

    assert CompareConfig(score_dtype="float32").resolved_score_dtype(tiny_llama) == "float32"
    for fast, want in ((torch.bfloat16, "bfloat16"), (torch.float32, "float32")):
        monkeypatch.setattr(config, "fast_dtype", lambda device, f=fast: f)
        assert CompareConfig().resolved_score_dtype(tiny_llama) == want
    half = sl.load_model(tiny_llama.source, dtype="bfloat16")
    assert CompareConfig().resolved_score_dtype(half) == "bfloat16"  # fast_dtype says float32 here


def test_the_sweep_on_a_tiny_model_has_its_shape_and_its_controls(tiny_llama: sl.Model) -> None:
    """Shapes, finiteness and the by-construction controls; never which method wins."""
    cfg = CompareConfig.from_preset("quick", constructions=("mean_centred", "random", "bias_ablated"), n_prompts=4,
                                    score_dtype="bfloat16")
    result = run_compare(tiny_llama, cfg, progress=False)
    assert result.score_dtype == "bfloat16" and tiny_llama.dtype == torch.float32
    # none, each method and prompting_steered at each positive coefficient, prompting once
    n_conditions = 2 + (len(cfg.constructions) + 1) * len(cfg.generation_coefficients)
    assert len(result.rows) == n_conditions * len(cfg.targets) * len(result.layers) * len(cfg.positions)
    assert result.prompting_style == "prefix"  # the tiny model is not named as instruction-tuned
    assert len(result.completions) == len(result.rows) * cfg.n_prompts
    none = [r for r in result.rows if r["condition"] == "none"]
    for r in none:  # the unsteered control: no damage, no change, full fluency and relevance
        assert r["perplexity_ratio"] == 1.0 and r["kl"] == 0.0 and r["concept_delta"] == 0.0
        assert r["fluency"] == pytest.approx(1.0) and r["relevance"] == pytest.approx(1.0)
    for r in result.rows:
        asked = r["condition"].startswith("prompting")  # no vector on general text: no damage measured there
        assert all(math.isfinite(r[k]) != (asked and k in ("perplexity_ratio", "kl"))
                   for k in ("concept", "score", "perplexity_ratio", "kl"))
        assert 0.0 <= r["score"] <= 1.0
    cells = len(cfg.targets) * len(result.layers) * len(cfg.positions)
    assert sorted(r["condition"] for r in result.matched) == sorted(list(cfg.constructions) * cells)
    for m in result.matched:  # a coefficient on the grid's range, a shift per story pair
        assert m["status"] in ("interpolated", "not reached") and 0 < m["coefficient"] <= max(cfg.damage_grid)
        assert len(m["shifts"]) == cfg.n_steer and len(m["damage"]) == len(cfg.damage_grid)
    assert len(result.steerability) == len(cfg.constructions) * len(cfg.targets) * len(result.layers) * len(cfg.positions)
    assert all(math.isfinite(s["steerability"]) and 0 <= s["anti_steerable_fraction"] <= 1
               for s in result.steerability)
    assert result.judge["heldout_accuracy"] >= 0.8
    assert all(-1 <= b["cosine"] <= 1 for b in result.bias)
    summary = summarise(result)
    assert set(summary["contrasts"]) == {"steerability", "matched", "score"}
    asked = [r for r in summary["contrasts"]["score"]["results"] if r["b"] == "prompting"]
    ran = {r["a"] for r in asked if r["status"] == "run"}
    assert ran == {*cfg.constructions, "prompting_steered"} - {"random"}  # every construction run (random is the control)
    assert summary["pooled"] and conclusion(tiny_llama.name, config_dict(cfg), summary, result.bias, result.judge)


def test_the_bias_line_gives_the_range_or_one_value() -> None:
    summary = summarise(_synthetic("raw"))
    rows = [{"target": "fantasy", "layer": 15, "cosine": 0.9991}, {"target": "shakespeare", "layer": 15, "cosine": 0.9702}]
    same = [dict(r, cosine=0.99951) for r in rows]
    assert "cosine with the general-text mean 0.970-0.999 over" in " ".join(
        conclusion("m", _config(), summary, bias_rows=rows))
    assert "cosine with the general-text mean 1.000 over" in " ".join(conclusion("m", _config(), summary, bias_rows=same))


def test_contrasts_that_could_not_run_are_one_line_under_the_table() -> None:
    ran = {"scope": "pooled", "status": "run", "name": "(b) mean_centred vs raw", "layer": 15, "position": "all",
           "n": 12, "estimate": 0.1, "ci": [0.0, 0.2], "mdd_corrected": 0.15, "p_holm": 0.04, "verdict": "x"}
    missing = [{"scope": "pooled", "status": "not run", "name": f"(g) {m} vs prompting", "layer": 15,
                "position": "all", "reason": "no 'prompting' rows at layer 15, 'all'"} for m in ("raw", "isolated")]
    summary = {"contrasts": {"steerability": {"results": [ran, *missing, {**missing[0], "scope": "fantasy"}]}}}
    assert contrasts_table(summary, "steerability")["contrast"] == ["(b) mean_centred vs raw"]
    assert len(contrasts_table(summary, "steerability", not_run=True)["contrast"]) == 3
    assert not_run_note(summary, "steerability") == ("2 of the list's contrasts not run here (each in summary.json): "
                                                     "2 x no 'prompting' rows")
    assert not_run_note({"contrasts": {"score": {"results": [ran]}}}, "score") is None


def test_a_killed_run_resumes_from_its_saved_cells_to_the_same_result(tiny_llama: sl.Model, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """``cells_dir``: a run killed in its second cell keeps the first; the rerun reads it back, measures
    the second, and ends where one uninterrupted run ends. Another configuration reads nothing back."""
    cfg = CompareConfig.from_preset("quick", constructions=("mean_centred", "random"), n_prompts=4,
                                    positions=("all", "all_prompt"), score_dtype="float32", baselines=())
    whole = run_compare(tiny_llama, cfg, progress=False)
    measure = compare_mod._measure_cell
    calls: list[str] = []

    class Killed(Exception):
        pass

    def dies_in_the_second_cell(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[7])  # the cell's position rule
        if len(calls) == 2:
            raise Killed
        return measure(*args, **kwargs)

    monkeypatch.setattr(compare_mod, "_measure_cell", dies_in_the_second_cell)
    with pytest.raises(Killed):
        run_compare(tiny_llama, cfg, progress=False, cells_dir=tmp_path)
    saved = sorted(tmp_path.glob("*.json"))
    assert len(saved) == 1 and saved[0].name.startswith("fantasy-") and "-all." in saved[0].name
    assert sorted(p.name for p in tmp_path.iterdir()) == [saved[0].name]  # nothing half-written beside it
    calls.clear()
    resumed = run_compare(tiny_llama, cfg, progress=False, cells_dir=tmp_path)
    assert calls == ["all_prompt"]  # only the cell the kill lost is measured again
    assert "1 of 2 cells read back" in capsys.readouterr().out
    assert whole.cells is None and resumed.cells is not None
    assert (resumed.cells["n"], resumed.cells["reused"]) == (2, 1) and resumed.cells["reused_seconds"] > 0

    def same(a: Any, b: Any) -> bool:
        return json.dumps(json_values(a), sort_keys=True) == json.dumps(json_values(b), sort_keys=True)

    assert same(summarise(resumed), summarise(whole))
    for part in ("rows", "completions", "steerability", "bias", "matched"):
        assert same(getattr(resumed, part), getattr(whole, part)), part
    # Another configuration is another key: its store reads nothing back; a damaged file is not trusted.
    other = CompareConfig.from_preset("quick", constructions=("mean_centred", "random"), n_prompts=2,
                                      positions=("all", "all_prompt"), score_dtype="float32", baselines=())
    key = run_key(tiny_llama, config_dict(cfg), "float32")
    assert run_key(tiny_llama, config_dict(other), "float32") != key
    assert run_key(tiny_llama, config_dict(cfg), "bfloat16") != key
    assert CellStore(tmp_path, key).load(("fantasy", resumed.layers[0], "all")) is not None
    assert CellStore(tmp_path, run_key(tiny_llama, config_dict(other), "float32")).load(
        ("fantasy", resumed.layers[0], "all")) is None
    saved[0].write_text("{not json", encoding="utf-8")
    assert CellStore(tmp_path, key).load(("fantasy", resumed.layers[0], "all")) is None
    with pytest.raises(ValueError, match="not a folder"):
        run_compare(tiny_llama, cfg, progress=False, cells_dir=saved[0])


def test_the_source_digest_ignores_comments_and_docstrings_but_not_code(tmp_path: Path) -> None:
    """A saved cell survives a docstring fix made while a long run is half done, not a change to what runs."""
    package, data = tmp_path / "pkg", tmp_path / "data"
    package.mkdir()
    data.mkdir()
    (data / "prompts.txt").write_text("Once upon a time\n")
    module = package / "m.py"
    module.write_text('"""Module."""\n\n\ndef f(x):\n    """Twice."""\n    return 2 * x  # double\n')
    before = source_digest(package, data)
    module.write_text('"""Module, reworded."""\n\n\ndef f(x):\n    """Two times x."""\n    # a comment\n    return 2 * x\n')
    assert source_digest(package, data) == before
    module.write_text('"""Module."""\n\n\ndef f(x):\n    """Twice."""\n    return 3 * x\n')
    assert source_digest(package, data) != before
    module.write_text('"""Module."""\n\n\ndef f(x):\n    """Twice."""\n    return 2 * x\n')
    assert source_digest(package, data) == before
    (data / "prompts.txt").write_text("Once upon a time.\n")
    assert source_digest(package, data) != before
    (data / "prompts.txt").write_text("Once upon a time\n")
    assert source_digest(package, data) == before
    # the presentation layer is not part of it; the same file anywhere else is
    (package / "lab").mkdir()
    (package / "lab" / "plots.py").write_text("WIDTH = 600\n")
    assert source_digest(package, data) == before
    (package / "study").mkdir()
    (package / "study" / "m.py").write_text("WIDTH = 600\n")
    assert source_digest(package, data) != before
    # a string that is a value, not a bare statement, is code
    assert code_text('X = "a"\n') != code_text('X = "b"\n')
    assert code_text('def f():\n    "only a docstring"\n') == code_text("def f():\n    pass\n")


def test_per_target_calls_are_grouped_so_a_rare_kind_is_not_hidden_behind_many() -> None:
    def row(name: str, verdict: str, target: str) -> dict[str, Any]:
        return {"name": name, "label": name[1], "verdict": verdict, "scope": target, "layer": 6, "position": "all"}

    equivalences = [row("(c) bias_ablated vs mean_centred", "equivalent within ±0.1", f"t{k}") for k in range(9)]
    rare = row("(b) mean_centred vs raw", "mean_centred > raw", "horror")
    text = per_target_tally([*equivalences, rare])
    # (b) first (the list's order), once, with where; the nine equivalences counted, three places shown.
    assert text == ("(b) mean_centred vs raw: mean_centred > raw x1 (horror L6 all); "
                    "(c) bias_ablated vs mean_centred: equivalent within ±0.1 x9 (t0 L6 all, t1 L6 all, t2 L6 all, ...)")
    lines = conclusion("model-x", _config(), summarise(_synthetic("mean_centred")))
    per_target = next(line for line in lines if line.startswith("score, per target ("))
    assert "(b) mean_centred vs raw: mean_centred > raw x2 (fantasy L15 all, shakespeare L15 all)" in per_target
