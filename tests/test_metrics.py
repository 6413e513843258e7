"""Steering metrics on tiny models with planted answers, and the experiment's helpers."""

from __future__ import annotations

import math

import pytest
import steerlab as sl
import steerlab.study.compare as compare_mod
import torch
from steerlab.constructions import set_word
from steerlab.metrics import completion_perplexity, steered_text_scores
from steerlab.study.compare import (
    METHODS,
    CompareConfig,
    best_points,
    bootstrap_ci,
    conclusion,
    config_dict,
    evaluation_prompts,
    run_compare,
)

TEXTS = ["The river runs past the mill and into the town.", "Please send the report by Friday, thanks."]


def test_unembedding_direction_raises_that_tokens_frequency(tiny_gpt2: sl.Model) -> None:
    model = tiny_gpt2
    target = 1234
    direction = model.hf.get_output_embeddings().weight[target].detach().clone()
    last = model.n_layers - 1  # enters the last block, so little can undo it
    vector = 50 * direction / direction.norm() * 10
    prompts = ["The river runs", "Please send"]
    plain = sl.steered_generate(model, prompts, [None, None], layer=last, max_new_tokens=6, do_sample=False)
    steered = sl.steered_generate(model, prompts, [vector, vector], layer=last, position="all",
                                  max_new_tokens=6, do_sample=False)
    freq = lambda rows: sum(r.count(target) for r in rows) / sum(len(r) for r in rows)
    assert freq(steered) > freq(plain)
    assert freq(steered) >= 0.5


def test_zero_vector_changes_nothing(tiny_llama: sl.Model) -> None:
    zero = torch.zeros(tiny_llama.d_model)
    none_scores, zero_scores = steered_text_scores(tiny_llama, TEXTS, [None, zero], layer=1)
    assert zero_scores["kl"] == pytest.approx(0.0, abs=1e-6)
    assert zero_scores["perplexity_ratio"] == pytest.approx(1.0, abs=1e-5)
    assert zero_scores["logprob_shift"] == pytest.approx(0.0, abs=1e-5)
    assert none_scores == {"nll": none_scores["nll"], "perplexity_ratio": 1.0, "logprob_shift": 0.0, "kl": 0.0}
    prompts = ["The river runs", "Please send the"]
    plain = sl.steered_generate(tiny_llama, prompts, [None, None], layer=1, max_new_tokens=5, do_sample=False)
    zeroed = sl.steered_generate(tiny_llama, prompts, [zero, zero], layer=1, max_new_tokens=5, do_sample=False)
    assert plain == zeroed


def test_damage_grows_with_the_coefficient(tiny_llama: sl.Model) -> None:
    v = torch.randn(tiny_llama.d_model, generator=torch.Generator().manual_seed(0))
    scores = steered_text_scores(tiny_llama, TEXTS, [0.5 * v, 5 * v, 50 * v], layer=1)
    kls = [s["kl"] for s in scores]
    assert kls[0] < kls[1] < kls[2]
    assert all(s["perplexity_ratio"] > 0 for s in scores)


@pytest.mark.parametrize("name", ["tiny_gpt2", "tiny_llama"])
def test_completion_perplexity_matches_a_direct_computation(name: str, request: pytest.FixtureRequest) -> None:
    """Batched rows of different prompt and completion lengths (so padded, and scored
    from the last positions only), some repeated, against one unpadded forward per row."""
    model: sl.Model = request.getfixturevalue(name)
    tok = model.tokenizer
    prompts = ["The river", "Once upon a time, in a town by the sea,", "A"]
    completions = [tok(c, add_special_tokens=False)["input_ids"]
                   for c in (" runs past the mill", " a", " dog barked at the moon all night long")]
    # Repeats: the same completion of the same prompt (scored once, given to both rows),
    # and the same completion after another prompt (a different score).
    prompts += ["The river", "A", "The river"]
    completions += [completions[0], completions[0], completions[2]]

    def direct(prompt: str, completion: list[int]) -> float:
        ids = torch.tensor([tok(prompt, add_special_tokens=False)["input_ids"] + completion])
        logp = model.hf(input_ids=ids).logits.log_softmax(-1)[0]
        start = ids.shape[1] - len(completion)
        nll = -torch.stack([logp[start - 1 + i, t] for i, t in enumerate(completion)]).mean()
        return float(nll.exp())

    got = completion_perplexity(model, prompts, completions, batch_size=3)
    for ppl, prompt, completion in zip(got, prompts, completions):
        want = direct(prompt, completion)
        assert abs(ppl - want) < 1e-3 * want, (prompt, ppl, want)
    assert math.isnan(completion_perplexity(model, ["The river"], [[]])[0])


def test_bootstrap_and_best_points() -> None:
    lo, hi = bootstrap_ci([0.1, 0.2, 0.3, 0.4])
    assert lo <= 0.25 <= hi and lo >= 0.1 and hi <= 0.4
    rows = [
        {"method": "none", "effect": 0.0, "perplexity_ratio": 1.0},
        {"method": "a", "effect": 0.5, "perplexity_ratio": 3.0},
        {"method": "a", "effect": 0.2, "perplexity_ratio": 1.2},
        {"method": "b", "effect": 0.3, "perplexity_ratio": 1.4},
    ]
    best = best_points(rows, 1.5)
    assert [(r["method"], r["effect"]) for r in best] == [("b", 0.3), ("a", 0.2)]
    for r, sel in zip(rows, [0.0, 9.0, 0.4, 0.1]):
        r["selectivity"] = sel
    by_sel = best_points(rows, 1.5, key="selectivity")
    assert [(r["method"], r["selectivity"]) for r in by_sel] == [("a", 0.4), ("b", 0.1)]  # 9.0 is over the threshold


def test_story_half_prompts_are_first_halves_of_other_genres_stories() -> None:
    sets = evaluation_prompts(CompareConfig(target="fantasy", n_prompts=3, n_story_prompts=5))
    assert len(sets["opening"]) == 3 and len(sets["story_half"]) == 5
    heldout = sl.load_dataset("mixed", "heldout").records
    for half in sets["story_half"]:
        words = half.split()
        sources = [r for r in heldout if r.text.split()[: len(words)] == words]
        assert len(sources) == 1 and sources[0].genre != "fantasy"
        assert len(words) == len(sources[0].text.split()) // 2
    assert set_word("science_fiction") == " science fiction"


@pytest.mark.parametrize("do_sample, calls", [(False, 2), (True, 6)])
def test_greedy_decoding_runs_once_whatever_the_seeds(tiny_gpt2: sl.Model, monkeypatch: pytest.MonkeyPatch,
                                                      do_sample: bool, calls: int) -> None:
    """Greedy completions do not depend on the seed: repeating them would only shrink the
    confidence interval. Sampled ones run once per seed and prompt kind."""
    real = compare_mod.steered_generate
    seen: list[int] = []
    monkeypatch.setattr(compare_mod, "steered_generate", lambda *a, **k: seen.append(k["seed"]) or real(*a, **k))
    cfg = CompareConfig(layers=[1], coefficients=[1.0], n_prompts=1, n_story_prompts=1, n_heldout=1, n_general=1,
                        max_new_tokens=2, seeds=[0, 1, 2], do_sample=do_sample, sample_size=2, max_length=16,
                        eval_length=16)
    rows = run_compare(tiny_gpt2, cfg, progress=False)
    assert len(seen) == calls
    assert {r["method"] for r in rows} == set(METHODS) | {"none"}


def test_conclusion_says_what_the_numbers_say() -> None:
    """The generated conclusion: overlap of intervals, methods never under the damage
    threshold, the random control, and selectivity, from the rows alone."""
    def row(method: str, effect: float, ci: tuple[float, float], ppl: float, sel: float) -> dict:
        return {"method": method, "layer": 8, "position": "all_prompt", "coefficient": 0.25, "effect": effect,
                "effect_ci": list(ci), "perplexity_ratio": ppl, "selectivity": sel}

    config = {**config_dict(CompareConfig(methods=("mean_centred", "counterbalanced", "random"))), "n_story_prompts": 1}
    rows = [row("none", 0.0, (0.0, 0.0), 1.0, 0.0), row("mean_centred", 0.05, (0.03, 0.07), 1.2, 0.2),
            row("counterbalanced", 0.02, (0.01, 0.04), 1.1, 0.1), row("random", 0.04, (0.0, 0.08), 9.0, 0.0)]
    text = "\n".join(conclusion("m", config, rows))
    assert "Best within the damage threshold: mean_centred (layer 8, ×0.25, all_prompt): effect 0.050" in text
    assert "overlaps those of counterbalanced" in text
    assert "Never under the damage threshold: random." in text
    assert "The random control's largest effect was 0.040." in text
    assert "the best within the threshold was mean_centred (layer 8, ×0.25): +0.200 nats/token; counterbalanced +0.100." in text
    rows[2]["effect_ci"] = [0.0, 0.02]  # apart from the best's interval now
    assert "overlaps" not in "\n".join(conclusion("m", config, rows))
    assert "No method stayed under" in "\n".join(conclusion("m", config, rows[:1] + [row("random", 0.1, (0, 1), 5.0, 0)]))
