"""Steering metrics on tiny models with planted answers, and the experiment's helpers."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
import steerlab as sl
import torch
from steerlab.metrics import completion_perplexity, steered_text_scores

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


from contextlib import nullcontext

import numpy as np
from steerlab.metrics import (
    bootstrap_mean_ci,
    continuation_logprobs,
    distinct_n,
    relevance,
    split_story,
    steerability,
)


def test_distinct_n_counts_repeats_exactly() -> None:
    # a maid , a maid , a maid: 8 tokens, 7 bigrams, 3 distinct.
    assert distinct_n("a maid, a maid, a maid", 2) == pytest.approx(3 / 7)
    assert distinct_n("A maid, a MAID, a maid", 1) == pytest.approx(3 / 8)
    assert distinct_n("The old ship sailed past the quiet harbour at dawn.", 2) == 1.0
    assert distinct_n([5, 6, 5, 6, 5, 6], 2) == pytest.approx(2 / 5)
    assert distinct_n(["to", "be", "or", "not", "to", "be"], 2) == pytest.approx(4 / 5)
    assert math.isnan(distinct_n("alone", 2)) and math.isnan(distinct_n([], 1))
    with pytest.raises(ValueError, match="n must be"):
        distinct_n("a b", 0)


def test_bootstrap_mean_ci_covers_the_mean_and_narrows_with_n() -> None:
    rng = np.random.default_rng(0)
    small, large = rng.normal(1.0, 1.0, 20), rng.normal(1.0, 1.0, 2000)
    lo_s, hi_s = bootstrap_mean_ci(small)
    lo_l, hi_l = bootstrap_mean_ci(large)
    assert lo_s <= small.mean() <= hi_s and lo_l <= large.mean() <= hi_l
    assert (hi_l - lo_l) < 0.25 * (hi_s - lo_s)  # ~1/sqrt(100) in theory
    assert bootstrap_mean_ci([2.0]) == (2.0, 2.0)
    assert bootstrap_mean_ci(small, seed=3) == bootstrap_mean_ci(small, seed=3)
    with pytest.raises(ValueError, match="NaN or inf at indices \\[1\\]"):
        bootstrap_mean_ci([1.0, float("nan")])


def test_split_story_cuts_by_words() -> None:
    assert split_story("one two three four", 0.5) == ("one two", " three four")
    assert split_story("one two three four five six", 0.5, max_words=4) == ("one two", " three four")
    assert split_story("one two", 0.9) == ("one", " two")  # at least one word each side
    with pytest.raises(ValueError, match="1 word"):
        split_story("alone")


def _teacher_forced(model: sl.Model, opening: list[int], continuation: list[int], add: torch.Tensor | None,
                    layer: int, position: str) -> float:
    """Mean log-prob of the continuation as generation would see it: the opening run as a prompt
    inside the steering scope, then the continuation fed token by token's worth through its cache."""
    k, m = len(opening), len(continuation)
    scope = nullcontext() if add is None else sl.steering_rows(model, [add], layer=layer, position=position)
    with torch.inference_mode(), scope:
        head = model.hf(input_ids=torch.tensor([opening]), attention_mask=torch.ones(1, k, dtype=torch.long),
                        use_cache=True)
        tail = model.hf(input_ids=torch.tensor([continuation]), attention_mask=torch.ones(1, k + m, dtype=torch.long),
                        position_ids=(k + torch.arange(m))[None], cache=head.cache, use_cache=True)
    logp = torch.cat([head.logits[0, -1:], tail.logits[0, :-1]]).float().log_softmax(-1)
    return float(logp.gather(-1, torch.tensor(continuation)[:, None]).mean())


@pytest.mark.parametrize("name", ["tiny_gpt2", "tiny_llama", "tiny_gemma", "tiny_gemma_window"])
@pytest.mark.parametrize("position", ["all", "all_prompt", "last_prompt", "first"])
def test_continuation_logprobs_match_generation_semantics(name: str, position: str,
                                                          request: pytest.FixtureRequest) -> None:
    """Batched, padded, grouped rows against a prompt-then-cache run per row inside the steering
    scope: the position rule means in the forward pass what it means in generation. Rows 4-6
    repeat openings 0 and 1, so with ``share_openings`` they are packed into one sequence
    each (a 4D mask); without it every row is its own. With a sliding window shorter than the
    packs (``tiny_gemma_window``) they must stay rows: one mask cannot hold the window."""
    model: sl.Model = request.getfixturevalue(name)
    tok = model.tokenizer
    ids = lambda s: tok(s, add_special_tokens=False)["input_ids"]
    openings = [ids("The river runs"), ids("Once upon a time, in a town"), ids("The mill stood"), ids("A")]
    continuations = [ids(" past the mill"), ids(" by the sea"), ids(" still and grey all winter"), ids(" dog")]
    openings += [openings[0], openings[1], openings[0]]
    continuations += [ids(" under the old stone bridge"), ids(" lived a baker"), ids(" dry")]
    v = torch.randn(model.d_model, generator=torch.Generator().manual_seed(1))
    additions = [None, 3 * v, -2 * v]
    got = continuation_logprobs(model, openings, continuations, additions, layer=1, position=position, batch_size=2)
    alone = continuation_logprobs(model, openings, continuations, additions, layer=1, position=position,
                                  batch_size=2, share_openings=False)
    assert got.shape == alone.shape == (3, 7)
    for j, add in enumerate(additions):
        for i in range(7):
            want = _teacher_forced(model, openings[i], continuations[i], add, 1, position)
            assert got[j, i] == pytest.approx(want, abs=2e-4), (j, i)
            assert alone[j, i] == pytest.approx(want, abs=2e-4), (j, i)
    assert not np.allclose(got[1], got[0])  # the addition did something


def test_relevance_of_a_zero_addition_is_the_unsteered_logprob(tiny_llama: sl.Model) -> None:
    model = tiny_llama
    prompts = ["The river runs", "Please send the report"]
    plain = sl.steered_generate(model, prompts, [None, None], layer=1, max_new_tokens=6, do_sample=False)
    v = torch.randn(model.d_model, generator=torch.Generator().manual_seed(2))
    unsteered, zero, strong = relevance(model, prompts, plain, [None, torch.zeros(model.d_model), 30 * v], layer=1)
    for i, p in enumerate(prompts):
        pid = sl.encode(model.tokenizer, [p]).input_ids[0].tolist()
        assert unsteered[i] == pytest.approx(_teacher_forced(model, pid, plain[i], None, 1, "all"), abs=1e-4)
    assert zero == pytest.approx(unsteered, abs=1e-5)
    assert all(s < u for s, u in zip(strong, unsteered))  # a large random push: the ordinary answer is less likely
    assert math.isnan(relevance(model, ["Hi"], [[]], [None], layer=1)[0][0])


TARGET_WORDS = " dragon castle wizard sword knight spell crown throne"
OTHER_WORDS = " goal team match score coach season player league"


def _stories(words: str, n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    pool = words.split()
    return [" ".join(rng.choice(pool) for _ in range(16)) for _ in range(n)]


@pytest.fixture(scope="module")
def planted_model(tiny_gpt2: sl.Model, tmp_path_factory: pytest.TempPathFactory) -> tuple[sl.Model, torch.Tensor]:
    """A tiny GPT-2 whose unembedding gives every token of the target words a component along a
    planted direction ``u`` (zero mean, so the final layer norm keeps it): adding ``u`` to the
    residual raises exactly those tokens' logits."""
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = tiny_gpt2.tokenizer
    config = GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=len(tok), n_positions=128,
                        tie_word_embeddings=False, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    hf = GPT2LMHeadModel(config)
    u = torch.randn(64, generator=torch.Generator().manual_seed(5))
    u = (u - u.mean()) / (u - u.mean()).norm()
    target_ids = {t for w in TARGET_WORDS.split() for t in tok(" " + w, add_special_tokens=False)["input_ids"]}
    other_ids = {t for w in OTHER_WORDS.split() for t in tok(" " + w, add_special_tokens=False)["input_ids"]}
    assert target_ids and not target_ids & other_ids
    with torch.no_grad():
        for t in target_ids:
            hf.lm_head.weight[t] += 0.5 * u
    folder = tmp_path_factory.mktemp("planted-gpt2")
    hf.save_pretrained(folder)
    tok.save_pretrained(folder)
    return sl.load_model(str(folder)), u


def test_steerability_finds_the_planted_direction(planted_model: tuple[sl.Model, torch.Tensor]) -> None:
    model, u = planted_model
    targets, others = _stories(TARGET_WORDS, 6, 0), _stories(OTHER_WORDS, 9, 1)
    coefs = [-1.0, -0.5, 0.0, 0.5, 1.0]
    # Every token steered, so the positions that predict continuation tokens carry the vector.
    planted = steerability(model, u, layer=1, target_texts=targets, other_texts=others, coefficients=coefs,
                           position="all", unit=0.5, batch_size=5)
    r = torch.randn(64, generator=torch.Generator().manual_seed(9))
    r = r - r.mean() - (r - r.mean()) @ u * u  # orthogonal to u, zero mean
    control = steerability(model, r, layer=1, target_texts=targets, other_texts=others, coefficients=coefs,
                           position="all", unit=0.5, batch_size=5)
    print(f"\nplanted steerability {planted.mean:.3f} {planted.ci}, random {control.mean:.3f} {control.ci}")
    assert planted.propensity.shape == (6, 5) and planted.n_samples == 6
    assert planted.other_index == [0, 1, 3, 4, 6, 7]  # spread over the others
    assert planted.mean > 1.0 and planted.ci[0] > 0
    assert planted.anti_steerable_fraction == 0.0
    assert abs(control.mean) < 0.1 * planted.mean
    # The slope is ordinary least squares, per sample.
    for row, slope in zip(planted.propensity, planted.slopes):
        assert slope == pytest.approx(np.polyfit(coefs, row, 1)[0], rel=1e-9, abs=1e-12)
    assert planted.mean == pytest.approx(float(planted.slopes.mean()))
    # Coefficient 0 is the unsteered model: the crossed propensity from plain forward passes.
    tok = model.tokenizer
    def lp(opening: str, cont: str) -> float:
        o, c = tok(opening, add_special_tokens=False)["input_ids"], tok(cont, add_special_tokens=False)["input_ids"]
        return _teacher_forced(model, o, c, None, 1, "all")
    for i in (0, 5):
        (to, tc), (oo, oc) = split_story(targets[i]), split_story(others[planted.other_index[i]])
        want = 0.5 * ((lp(to, tc) - lp(to, oc)) + (lp(oo, tc) - lp(oo, oc)))
        assert planted.propensity[i, 2] == pytest.approx(want, abs=1e-4)
    # unit is the coefficient's length: c = 1 in units of 0.25 is c = 0.5 in units of 0.5.
    quarter = steerability(model, u, layer=1, target_texts=targets, other_texts=others, coefficients=coefs,
                           position="all", unit=0.25, batch_size=5)
    assert np.allclose(quarter.propensity[:, [0, 4]], planted.propensity[:, [1, 3]], atol=1e-5)
    # Steering the openings only (generation's all_prompt): the continuation reads the vector
    # through the opening's keys and values and the one position that predicts its first token.
    opening_only = steerability(model, u, layer=1, target_texts=targets, other_texts=others, coefficients=coefs,
                                unit=0.5, batch_size=5)
    assert 0 < opening_only.mean < planted.mean
    summary = planted.summary()
    assert summary["steerability"] == planted.mean and summary["n_samples"] == 6
    assert set(summary["propensity_by_coefficient"]) == set(coefs)


def test_steerability_refuses_bad_grids(tiny_gpt2: sl.Model) -> None:
    v = torch.ones(tiny_gpt2.d_model)
    kw = {"layer": 1, "target_texts": ["a b c d"], "other_texts": ["e f g h"]}
    with pytest.raises(ValueError, match="including 0, a negative and a positive"):
        steerability(tiny_gpt2, v, coefficients=[0.0, 0.5, 1.0], **kw)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="vector_direction must be"):
        steerability(tiny_gpt2, torch.ones(3), coefficients=[-1.0, 0.0, 1.0], **kw)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown position rule"):
        steerability(tiny_gpt2, v, coefficients=[-1.0, 0.0, 1.0], position="middle", **kw)  # type: ignore[arg-type]


def test_replay_keeps_only_the_positions_asked_for(tiny_llama: sl.Model) -> None:
    """``keep=``: the logits of exactly those positions, per condition, as the full replay gives them."""
    from steerlab.intervention import Intervention
    from steerlab.replay import replay_conditions

    model = tiny_llama
    batch = sl.encode(model.tokenizer, ["The river runs past the mill", "A dog"], padding_side="right")
    v = torch.randn(model.d_model, generator=torch.Generator().manual_seed(2))
    conditions = [None, Intervention(1, [3 * v], [None], "add", "all_prompt")]
    keep = batch.attention_mask.bool() & (torch.arange(batch.input_ids.shape[1]) % 2 == 0)
    full = list(replay_conditions(model, batch, conditions, 1))
    kept = list(replay_conditions(model, batch, conditions, 1, keep=keep))
    for f, k in zip(full, kept):
        assert k.shape == (int(keep.sum()), f.shape[-1])
        torch.testing.assert_close(k, f[keep], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="keep must be a bool mask of shape"):
        next(replay_conditions(model, batch, conditions, 1, keep=keep[:, :2]))


def test_steerability_of_several_vectors_equals_one_call_each(planted_model: tuple[sl.Model, torch.Tensor]) -> None:
    """steerability_each shares the plain pass between vectors; the numbers are the single calls'."""
    from steerlab.metrics import steerability_each

    model, u = planted_model
    r = torch.randn(model.d_model, generator=torch.Generator().manual_seed(5))
    kw: dict[str, Any] = {"layer": 1, "target_texts": ["the red fox ran far away", "a red hen sat on a wall"],
                          "other_texts": ["the blue sea was calm today", "a blue bird sang all day"],
                          "coefficients": [-1.0, 0.0, 1.0, 2.0]}
    both = steerability_each(model, [u, r], **kw)
    for got, v in zip(both, (u, r)):
        want = steerability(model, v, **kw)
        np.testing.assert_allclose(got.propensity, want.propensity, atol=1e-5)
        assert got.mean == pytest.approx(want.mean, abs=1e-5) and got.ci == pytest.approx(want.ci, abs=1e-5)
    with pytest.raises(ValueError, match=r"must be finite and non-zero \(vector 1\)"):
        steerability_each(model, [u, torch.zeros(model.d_model)], **kw)


def test_chunked_log_probs_equal_a_whole_log_softmax() -> None:
    """The metrics' chunked log-probs (8 rows at a time, float32 from any dtype) against log_softmax of the block."""
    from steerlab.logprobs import logprobs_of as _logprobs_of

    torch.manual_seed(0)
    logits = torch.randn(19, 301) * 4  # 19 rows: two full chunks and a partial one
    tokens = torch.randint(0, 301, (19,))
    want = logits.log_softmax(-1).gather(-1, tokens[:, None])[:, 0]
    assert torch.allclose(_logprobs_of(logits, tokens), want, atol=1e-5)
    half = _logprobs_of(logits.bfloat16(), tokens)
    assert half.dtype == torch.float32
    assert torch.allclose(half, logits.bfloat16().float().log_softmax(-1).gather(-1, tokens[:, None])[:, 0], atol=1e-5)


def test_text_scores_match_a_direct_computation(tiny_llama: sl.Model) -> None:
    """steered_text_scores (block replay, chunked log-softmax) against full forwards and one log_softmax each."""
    from steerlab.steer import steered_logits

    model = tiny_llama
    texts = ["The river runs past the old mill and on to the sea", "A dog"]  # padded rows
    v = torch.randn(model.d_model, generator=torch.Generator().manual_seed(3))
    got = steered_text_scores(model, texts, [None, 2 * v, 8 * v], layer=1, max_length=32)
    batch = sl.encode(model.tokenizer, texts, padding_side="right", max_length=32)
    mask = (batch.attention_mask[:, 1:] * batch.attention_mask[:, :-1]).bool()
    targets = batch.input_ids[:, 1:]

    def logp(add: torch.Tensor | None) -> torch.Tensor:
        rows = None if add is None else [add, add]
        return steered_logits(model, batch, rows, layer=1, position="all_prompt")[:, :-1].log_softmax(-1)

    base = logp(None)
    base_nll = float(-base.gather(-1, targets[..., None])[..., 0][mask].mean())
    for add, scores in zip([2 * v, 8 * v], got[1:]):
        lp = logp(add)
        nll = float(-lp.gather(-1, targets[..., None])[..., 0][mask].mean())
        kl = float((base.exp() * (base - lp)).sum(-1)[mask].mean())
        assert scores["nll"] == pytest.approx(nll, abs=1e-4) and scores["kl"] == pytest.approx(kl, abs=1e-4)
        assert scores["perplexity_ratio"] == pytest.approx(math.exp(nll - base_nll), rel=1e-4)
    assert got[0]["nll"] == pytest.approx(base_nll, abs=1e-4) and got[0]["kl"] == 0.0
