"""Steered generation and forward passes (steerlab.steer): steering is a scope,
batched sweeps equal single runs, position rules pick the right tokens, and a
planted unembedding direction becomes the greedy next token."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
import steerlab
import steerlab.steer as steer_mod
import torch
from steerlab.arch import blocks_of
from steerlab.intervention import addition_tensor
from steerlab.sampling import NucleusSampler, row_generators
from steerlab.steer import generate, steered_generate, steered_logits
from steerlab.vectors import SteeringVector, VectorMismatchError

# Different token lengths, so a batch of them is left-padded.
PROMPTS = ["Once upon a time in a quiet village there lived a", "The dog"]
N_NEW = 6


@pytest.fixture(params=["tiny_gpt2", "tiny_llama"])
def tiny(request: pytest.FixtureRequest) -> steerlab.Model:
    return request.getfixturevalue(request.param)


def _vector(model: steerlab.Model, layer: int, norm: float = 5.0, seed: int = 0) -> SteeringVector:
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(model.d_model, generator=gen)
    return SteeringVector({layer: v / v.norm() * norm}, model.name, model.fingerprint, model.d_model,
                          "raw", {"target": "random test vector"}, "all")


def _greedy(model: steerlab.Model, prompts: Any, vector: SteeringVector | None = None,
            **kw: Any) -> list[list[int]]:
    kw.setdefault("max_new_tokens", N_NEW)
    kw.setdefault("scale", "raw")
    return [c.token_ids for c in generate(model, prompts, vector, do_sample=False, **kw)]


def _state(model: steerlab.Model) -> tuple[dict[str, torch.Tensor], list[int], torch.Tensor]:
    """Weights, hook counts on every module, and the logits of a fixed batch."""
    weights = {k: v.clone() for k, v in model.hf.state_dict().items()}
    hooks = [len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.hf.modules()]
    batch = steerlab.encode(model.tokenizer, PROMPTS)
    with torch.no_grad():
        logits = model.hf(**batch.as_inputs()).logits.clone()
    return weights, hooks, logits


def _assert_untouched(model: steerlab.Model, before: tuple[Any, ...]) -> None:
    weights, hooks, logits = _state(model)
    assert hooks == before[1], "a hook was left on the model"
    assert weights.keys() == before[0].keys()
    for k in weights:
        assert torch.equal(weights[k], before[0][k]), f"weight {k} changed"
    assert torch.equal(logits, before[2])


def test_steered_then_unsteered_equals_never_steered(tiny: steerlab.Model) -> None:
    before = _state(tiny)
    plain = _greedy(tiny, PROMPTS)
    for position in ("first", "all_prompt", "last_prompt", "all"):
        steered = _greedy(tiny, PROMPTS, _vector(tiny, 1, norm=20.0), position=position)
        if position != "first":
            assert steered != plain, f"the vector had no effect at {position!r}"
        assert _greedy(tiny, PROMPTS) == plain
    _assert_untouched(tiny, before)


class _Boom(RuntimeError):
    pass


@pytest.mark.parametrize("position", ["last_prompt", "all"])
@pytest.mark.parametrize("failure", ["bad_addition_inside_trace", "model_raises_mid_generation"])
def test_exception_during_steering_leaves_the_model_untouched(
        tiny: steerlab.Model, monkeypatch: pytest.MonkeyPatch, position: str, failure: str) -> None:
    vector = _vector(tiny, 1, norm=20.0)
    plain = _greedy(tiny, PROMPTS)
    steered = _greedy(tiny, PROMPTS, vector, position=position)
    before = _state(tiny)
    handle = None
    if failure == "bad_addition_inside_trace":
        real = steer_mod.Intervention.apply

        def one_token_too_long(self: Any, hidden: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            edited = real(self, hidden, *args, **kwargs)
            return torch.cat([edited, edited[:, :1]], dim=1)  # [batch, seq + 1, d_model]

        monkeypatch.setattr(steer_mod.Intervention, "apply", one_token_too_long)
        expected: type[BaseException] = Exception
    else:
        calls = {"n": 0}

        def raise_on_third_step(module: Any, args: Any) -> None:
            calls["n"] += 1
            if calls["n"] == 3:
                raise _Boom("interrupted")

        handle = blocks_of(tiny.hf)[-1].register_forward_pre_hook(raise_on_third_step)
        expected = _Boom
    try:
        with pytest.raises(expected):
            _greedy(tiny, PROMPTS, vector, position=position)
    finally:
        if handle is not None:
            handle.remove()
        monkeypatch.undo()
    _assert_untouched(tiny, before)
    assert _greedy(tiny, PROMPTS) == plain
    assert _greedy(tiny, PROMPTS, vector, position=position) == steered


def test_zero_coefficient_equals_unsteered(tiny: steerlab.Model) -> None:
    vector = _vector(tiny, 1)
    plain = _greedy(tiny, PROMPTS)
    assert _greedy(tiny, PROMPTS, vector, coefficients=[0.0]) == plain
    # An explicit zero addition (not skipped as None) also changes nothing.
    zeros = [torch.zeros(tiny.d_model)] * len(PROMPTS)
    assert steered_generate(tiny, PROMPTS, zeros, layer=1, position="all", max_new_tokens=N_NEW,
                            do_sample=False) == plain
    batch = steerlab.encode(tiny.tokenizer, PROMPTS)
    torch.testing.assert_close(steered_logits(tiny, batch, zeros, layer=1), steered_logits(tiny, batch),
                               atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("position", ["first", "all_prompt", "last_prompt", "all"])
def test_batched_coefficient_sweep_equals_single_runs(tiny: steerlab.Model, position: str) -> None:
    vector = _vector(tiny, 1, norm=4.0, seed=1)
    coefficients = [0.0, 2.0, 6.0]
    batched = generate(tiny, PROMPTS, vector, coefficients=coefficients, position=position, scale="raw",
                       do_sample=False, max_new_tokens=N_NEW)
    assert [(c.prompt, c.coefficient) for c in batched] == [(p, c) for p in PROMPTS for c in coefficients]
    for c in batched:
        (single,) = _greedy(tiny, c.prompt, vector, coefficients=c.coefficient, position=position)
        assert c.token_ids == single, (c.prompt, c.coefficient)
        assert c.text == tiny.tokenizer.decode(c.token_ids, skip_special_tokens=True)
        assert c.label == vector.describe()
    if position != "first":
        assert any(batched[i].token_ids != batched[i + 2].token_ids for i in (0, 3)), "no effect"


def test_plain_batched_generation_equals_single_and_hf(tiny: steerlab.Model) -> None:
    rows = _greedy(tiny, PROMPTS)
    for prompt, row in zip(PROMPTS, rows):
        assert _greedy(tiny, prompt) == [row]
        ids = steerlab.encode(tiny.tokenizer, [prompt]).as_inputs()
        with torch.no_grad():
            hf = tiny.hf.generate(**ids, max_new_tokens=N_NEW, do_sample=False,
                                  pad_token_id=tiny.tokenizer.pad_token_id)
        assert hf[0, ids["input_ids"].shape[1]:].tolist() == row


# --- a planted answer: the unembedding row of a token -------------------------------


def _planted_token(model: steerlab.Model) -> tuple[int, torch.Tensor]:
    """A token and a huge layer-0 vector along its unembedding row.

    Every block reads a normalised residual, so a huge addition dominates the
    last layer; the final norm and unembedding then score each token by the dot
    product of its (centred) row with this one, which the row of largest norm
    wins. The token is checked not to be the unsteered prediction.
    """
    w = model.hf.get_output_embeddings().weight.detach()
    centred = w - w.mean(dim=1, keepdim=True)
    token = int(centred.norm(dim=1).argmax())
    return token, 200.0 * centred[token] / centred[token].norm()


@pytest.mark.parametrize("position", ["all_prompt", "last_prompt"])
def test_planted_direction_becomes_the_greedy_next_token(tiny: steerlab.Model, position: str) -> None:
    token, add = _planted_token(tiny)
    plain = _greedy(tiny, PROMPTS)
    assert all(row[0] != token for row in plain)
    rows = steered_generate(tiny, PROMPTS, [add, add], layer=0, position=position,
                            max_new_tokens=3, do_sample=False)
    assert [row[0] for row in rows] == [token, token]


def test_position_all_steers_every_generated_token(tiny: steerlab.Model) -> None:
    token, add = _planted_token(tiny)
    rows = steered_generate(tiny, PROMPTS, [add, None], layer=0, position="all",
                            max_new_tokens=4, do_sample=False)
    assert rows[0] == [token] * 4
    assert rows[1] == _greedy(tiny, PROMPTS[1], max_new_tokens=4)[0]  # the None row is unsteered


def test_position_first_steers_only_the_first_token(tiny: steerlab.Model) -> None:
    token, add = _planted_token(tiny)
    batch = steerlab.encode(tiny.tokenizer, [PROMPTS[0]])
    plain = steered_logits(tiny, batch)
    logits = steered_logits(tiny, batch, [add], layer=0, position="first")
    assert int(logits[0, 0].argmax()) == token
    # Later positions attend to the steered one (their logits move) but are not
    # dominated by it, unlike with "last_prompt" above.
    assert int(logits[0, -1].argmax()) != token
    assert not torch.allclose(logits[0, -1], plain[0, -1])


@pytest.mark.parametrize("position, changed", [
    ("last_prompt", "last"), ("first", "all"), ("all_prompt", "all"),
])
def test_steered_logits_are_causal(tiny_llama: steerlab.Model, position: str, changed: str) -> None:
    batch = steerlab.encode(tiny_llama.tokenizer, [PROMPTS[0]])
    plain = steered_logits(tiny_llama, batch)
    steered = steered_logits(tiny_llama, batch, [_vector(tiny_llama, 1).at(1)], layer=1, position=position)
    diff = (steered - plain).abs().amax(dim=-1)[0]  # [seq]
    if changed == "last":
        assert float(diff[:-1].max()) < 1e-6  # earlier positions cannot see a later addition
        assert float(diff[-1]) > 1e-3
    else:
        assert float(diff.min()) > 1e-3


def test_plain_steered_logits_equal_the_model(tiny_gpt2: steerlab.Model) -> None:
    batch = steerlab.encode(tiny_gpt2.tokenizer, PROMPTS)
    with torch.no_grad():
        want = tiny_gpt2.hf(**batch.as_inputs()).logits
    torch.testing.assert_close(steered_logits(tiny_gpt2, batch), want)
    torch.testing.assert_close(steered_logits(tiny_gpt2, batch, [None, None], layer=1), want)


# --- the hook against an independent implementation: an nnsight intervention ------------


def _nnsight_steered_logits(model: steerlab.Model, batch: steerlab.tokens.Batch, delta: torch.Tensor,
                            layer: int) -> torch.Tensor:
    block = model.envoy(model.arch.blocks)[layer]
    with model.lm.trace(batch.as_inputs()):
        hidden = block.input
        hidden += delta
        logits = model.lm.output.logits.save()
    return logits


def _nnsight_steered_greedy(model: steerlab.Model, prompts: list[str], prompt_delta: torch.Tensor,
                            step_delta: torch.Tensor, layer: int, n: int) -> list[list[int]]:
    batch = steerlab.encode(model.tokenizer, prompts, padding_side="left")
    block = model.envoy(model.arch.blocks)[layer]
    with model.lm.generate(batch.as_inputs(), max_new_tokens=n, min_new_tokens=n, do_sample=False,
                           pad_token_id=model.tokenizer.pad_token_id) as tracer:
        for step in tracer.iter[:n]:
            hidden = block.input
            if hidden.shape[1] == batch.input_ids.shape[1]:
                hidden += prompt_delta
            else:
                hidden += step_delta
        out = tracer.result.save()
    return [row.tolist() for row in out[:, batch.input_ids.shape[1]:]]


@pytest.mark.parametrize("position", ["first", "all_prompt", "last_prompt"])
def test_steered_logits_equal_an_nnsight_intervention(tiny: steerlab.Model, position: str) -> None:
    batch = steerlab.encode(tiny.tokenizer, PROMPTS)
    additions = [_vector(tiny, 1, norm=20.0).at(1), None]
    delta = addition_tensor(tiny, batch, additions, position)
    want = _nnsight_steered_logits(tiny, batch, delta, 1)
    torch.testing.assert_close(steered_logits(tiny, batch, additions, layer=1, position=position), want)


def test_steered_generation_equals_an_nnsight_intervention(tiny: steerlab.Model) -> None:
    vector = _vector(tiny, 1, norm=20.0).at(1)
    rows = steered_generate(tiny, PROMPTS, [vector, None], layer=1, position="all", max_new_tokens=N_NEW,
                            do_sample=False)
    batch = steerlab.encode(tiny.tokenizer, PROMPTS, padding_side="left")
    prompt_delta = addition_tensor(tiny, batch, [vector, None], "all")
    step_delta = torch.stack([vector, torch.zeros_like(vector)])[:, None, :]  # [batch, 1, d_model]
    assert rows == _nnsight_steered_greedy(tiny, PROMPTS, prompt_delta, step_delta, 1, N_NEW)
    assert rows != _greedy(tiny, PROMPTS)


def test_a_one_token_prompt_is_steered_once_at_first(tiny: steerlab.Model) -> None:
    """With a one-token prompt, every forward call has one position: only the first
    call (the prompt) may receive a ``first`` addition, not the generated tokens."""
    _, add = _planted_token(tiny)
    prompt = next(t for t in ("The", " The", "A", "Hi") if len(tiny.tokenizer(t, add_special_tokens=False)["input_ids"]) == 1)
    norms: list[float] = []  # largest norm of block 0's input (after any pre-hook) per forward call
    handle = blocks_of(tiny.hf)[0].register_forward_hook(
        lambda module, args, out: norms.append(float(args[0].norm(dim=-1).max())))
    try:
        steered_generate(tiny, [prompt], [add], layer=0, position="first", max_new_tokens=4, do_sample=False)
    finally:
        handle.remove()
    assert len(norms) >= 2
    assert norms[0] > 100 and all(n < 100 for n in norms[1:]), norms  # the addition has norm 200

# --- which positions receive the addition ------------------------------------------------


def test_addition_tensor_masks_with_left_padding(tiny_llama: steerlab.Model) -> None:
    batch = steerlab.encode(tiny_llama.tokenizer, PROMPTS + ["A cat sat"], padding_side="left")
    width = batch.input_ids.shape[1]
    lengths = batch.lengths.tolist()
    assert len(set(lengths)) == 3
    g = torch.Generator().manual_seed(0)
    adds = [torch.randn(64, generator=g), torch.randn(64, generator=g), None]
    expected_columns = {
        "first": lambda n: [width - n],
        "last_prompt": lambda n: [width - 1],
        "all_prompt": lambda n: list(range(width - n, width)),
        "all": lambda n: list(range(width - n, width)),
    }
    for rule, columns in expected_columns.items():
        delta = addition_tensor(tiny_llama, batch, adds, rule)
        assert delta.shape == (3, width, 64)
        for row, add in enumerate(adds):
            for col in range(width):
                if add is not None and col in columns(lengths[row]):
                    assert torch.equal(delta[row, col], add), (rule, row, col)
                else:
                    assert not delta[row, col].any(), (rule, row, col)


def test_addition_tensor_places_a_prompt_pair_from_the_first_real_token(tiny_llama: steerlab.Model) -> None:
    batch = steerlab.encode(tiny_llama.tokenizer, PROMPTS, padding_side="left")
    width = batch.input_ids.shape[1]
    short = int(batch.lengths[1])
    pair = torch.arange(2 * 64, dtype=torch.float32).reshape(2, 64) + 1
    delta = addition_tensor(tiny_llama, batch, [pair, pair], "first")
    assert torch.equal(delta[0, :2], pair) and not delta[0, 2:].any()
    start = width - short
    assert torch.equal(delta[1, start:start + 2], pair)
    assert not delta[1, :start].any() and not delta[1, start + 2:].any()
    too_long = torch.ones(short + 1, 64)
    with pytest.raises(ValueError, match=f"a {short + 1}-token prompt-pair vector does not fit row 1"):
        addition_tensor(tiny_llama, batch, [None, too_long], "first")


def test_prompt_pair_vector_steers_generation(tiny_gpt2: steerlab.Model) -> None:
    pair = steerlab.prompt_pair(tiny_gpt2, "Love", "I hate you", [1])
    assert pair.at(1).shape[0] == 3
    rows = _greedy(tiny_gpt2, PROMPTS[0], pair, coefficients=[0.0, 50.0], position="first")
    assert rows[0] == _greedy(tiny_gpt2, PROMPTS[0])[0]
    assert rows[1] != rows[0]
    with pytest.raises(ValueError, match="3-token prompt-pair vector does not fit row 0"):
        _greedy(tiny_gpt2, PROMPTS[1], pair, coefficients=1.0, position="first")  # "The dog" has two tokens
    with pytest.raises(ValueError, match="position 'all' needs \\[d_model\\] vectors"):
        _greedy(tiny_gpt2, PROMPTS[0], pair, coefficients=1.0, position="all")


# --- sampling ------------------------------------------------------------------------------


def test_sampling_with_the_same_seed_reproduces(tiny: steerlab.Model) -> None:
    vector = _vector(tiny, 1)
    kw: dict[str, Any] = {"coefficients": [0.0, 3.0], "max_new_tokens": 8, "do_sample": True, "top_p": 0.9}
    first = [c.token_ids for c in generate(tiny, PROMPTS, vector, seed=7, **kw)]
    again = [c.token_ids for c in generate(tiny, PROMPTS, vector, seed=7, **kw)]
    other = [c.token_ids for c in generate(tiny, PROMPTS, vector, seed=8, **kw)]
    assert first == again
    assert first != other
    assert first[0] != _greedy(tiny, PROMPTS[0], max_new_tokens=8)[0]  # it really sampled


def _transformers_filter(scores: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    if temperature != 1.0:
        scores = TemperatureLogitsWarper(temperature)(None, scores)
    if top_k:
        scores = TopKLogitsWarper(top_k)(None, scores)
    if top_p < 1.0:
        scores = TopPLogitsWarper(top_p)(None, scores)
    return scores


@pytest.mark.parametrize(("temperature", "top_k", "top_p"),
                         [(1.0, 50, 0.3), (1.0, 50, 0.95), (0.7, 5, 0.5), (1.3, 0, 0.3), (1.0, 0, 1.0), (1.0, 20, 1.0)])
def test_sampling_filter_keeps_the_tokens_transformers_keeps(temperature: float, top_k: int, top_p: float) -> None:
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(16, 3000, generator=gen) * 3
    scores[0, :] = 0.0  # all tied
    scores[1, :10] = 9.0  # a tie at the k-th value
    scores[2, 7] = 80.0  # one certain token
    ours = NucleusSampler(temperature, top_k, top_p).filter(scores.clone())
    theirs = _transformers_filter(scores.clone(), temperature, top_k, top_p)
    for row in range(3, 16):  # ties are broken arbitrarily by either sort; the kept set is exact elsewhere
        assert torch.equal(torch.isfinite(ours[row]), torch.isfinite(theirs[row])), row
        kept = torch.isfinite(ours[row])
        assert torch.allclose(ours[row][kept], theirs[row][kept])
    if top_p < 1.0:  # the nucleus of a certain token is that token
        assert int(torch.isfinite(ours[2]).sum()) == 1
    for row in (0, 1):  # with ties, which tied tokens stay may differ, but not how many
        assert int(torch.isfinite(ours[row]).sum()) == int(torch.isfinite(theirs[row]).sum()), row
    for row in range(16):
        assert bool(torch.isfinite(ours[row]).any())


def test_nucleus_sampler_draws_from_the_filtered_distribution() -> None:
    """Many draws of one row: each token's frequency matches its probability after filtering."""
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(1, 500, generator=gen) * 2
    sampler = NucleusSampler(0.9, 20, 0.8)
    probs = sampler.filter(logits).softmax(dim=-1)[0]
    torch.manual_seed(0)
    out = sampler(None, logits.expand(40_000, -1).clone())
    assert bool((torch.isfinite(out).sum(dim=-1) == 1).all())  # one token left per row, for greedy to take
    counts = torch.bincount(out.argmax(dim=-1), minlength=500).float() / out.shape[0]
    assert set(counts.nonzero().flatten().tolist()) <= set(probs.nonzero().flatten().tolist())
    assert float((counts - probs).abs().max()) < 0.01  # 40k draws: sd of a frequency is at most 0.0025


def test_sampled_generation_is_transformers_generate_with_the_sampler(tiny: steerlab.Model) -> None:
    """Unsteered sampling through steerlab (nnsight, one batched call) draws the same tokens as
    plain transformers given the same sampler and seed."""
    from transformers import LogitsProcessorList

    prompt = PROMPTS[0]
    ours = generate(tiny, prompt, None, max_new_tokens=8, seed=3, do_sample=True, top_p=0.9, top_k=20,
                    temperature=0.8)[0].token_ids
    ids = steerlab.encode(tiny.tokenizer, [prompt]).as_inputs()
    generators = row_generators(3, steer_mod.row_keys([prompt], [None]))
    with torch.no_grad():
        hf = tiny.hf.generate(**ids, max_new_tokens=8, do_sample=False, pad_token_id=tiny.tokenizer.pad_token_id,
                              logits_processor=LogitsProcessorList([NucleusSampler(0.8, 20, 0.9, generators)]))
    assert hf[0, ids["input_ids"].shape[1]:].tolist() == ours


def test_a_rows_sample_does_not_depend_on_the_rest_of_the_batch(tiny: steerlab.Model) -> None:
    """Adding rows (another method, another prompt) to a sampled batch leaves each row's tokens as
    they were, and torch's global generator is never touched."""
    vector = _vector(tiny, 1)
    kw: dict[str, Any] = {"max_new_tokens": 8, "do_sample": True, "top_p": 0.95, "seed": 11, "scale": "raw"}
    alone = generate(tiny, PROMPTS[0], vector, coefficients=[3.0], **kw)[0].token_ids
    state = torch.get_rng_state()
    crowd = generate(tiny, [PROMPTS[1], PROMPTS[0]], vector, coefficients=[0.0, 1.0, 3.0], **kw)
    assert torch.equal(state, torch.get_rng_state()), "sampling moved the global generator"
    mine = [c for c in crowd if c.prompt == PROMPTS[0] and c.coefficient == 3.0]
    assert mine[0].token_ids == alone
    other = _vector(tiny, 1, seed=5)
    mixed = steered_generate(tiny, [PROMPTS[0]] * 3, [None, 3.0 * other.at(1), 3.0 * vector.at(1)], layer=1,
                             position="all", max_new_tokens=8, do_sample=True, top_p=0.95, seed=11)
    assert mixed[2] == alone
    # Two samples of one row in one batch are distinct draws, not copies.
    twice = steered_generate(tiny, [PROMPTS[0]] * 2, [None, None], layer=1, max_new_tokens=8, do_sample=True,
                             top_p=1.0, top_k=0, seed=11)
    assert twice[0] != twice[1]


def test_top_k_one_is_greedy(tiny: steerlab.Model) -> None:
    sampled = generate(tiny, PROMPTS, None, max_new_tokens=6, seed=5, do_sample=True, top_k=1, top_p=1.0)
    assert [c.token_ids for c in sampled] == _greedy(tiny, PROMPTS)


# --- bad input -------------------------------------------------------------------------------


def test_bad_input_gets_a_clear_error(tiny_gpt2: steerlab.Model, tiny_llama: steerlab.Model) -> None:
    m = tiny_gpt2
    v = _vector(m, 1)
    nan = torch.ones(64)
    nan[3] = float("nan")
    cases: list[tuple[Any, type[Exception], str]] = [
        (lambda: generate(m, "", v), ValueError, "text 0 is empty"),
        (lambda: generate(m, ["ok", " "], v), ValueError, "text 1 is empty"),
        (lambda: generate(m, [], v), ValueError, "no texts given"),
        (lambda: generate(m, "Hi", v, layer=0), KeyError, r"has no layer 0; it has \[1\]"),
        (lambda: generate(m, "Hi", v, coefficients=[]), ValueError, "no coefficients given"),
        (lambda: generate(m, "Hi", v, position="middle"), ValueError, "unknown position rule 'middle'"),
        (lambda: generate(m, "Hi", v, position="last"), ValueError, "unknown position rule 'last'"),
        (lambda: generate(tiny_llama, "Hi", v), VectorMismatchError, "made for model"),
        (lambda: generate(m, "Hi", None, layer=2), ValueError, r"layer 2 is out of range .*0\.\.1"),
        (lambda: generate(m, "Hi", None, max_new_tokens=0), ValueError, "max_new_tokens must be an integer >= 1"),
        (lambda: generate(m, "Hi", v, coefficients="48"), TypeError, "coefficients must be numbers, got '48'"),
        (lambda: generate(m, "Hi", v, operator="scale"), ValueError, "unknown operator 'scale'"),
        (lambda: generate(m, "Hi", v, scale="percent"), ValueError, "unknown scale 'percent'"),
        (lambda: steered_generate(m, ["Hi"], [nan], layer=0), ValueError, "row 0 contains NaN or inf"),
        (lambda: steered_generate(m, ["Hi"], [torch.ones(32)], layer=0), ValueError,
         r"row 0 has shape \(32,\); expected \[64\]"),
        (lambda: steered_generate(m, ["Hi", "Yo"], [None], layer=0), ValueError, "1 additions for 2 prompts"),
        (lambda: steered_logits(m, steerlab.encode(m.tokenizer, ["Hi"]), [nan], layer=1), ValueError, "NaN or inf"),
        (lambda: steered_logits(m, steerlab.encode(m.tokenizer, ["Hi"]), [nan]), ValueError, "pass an Intervention"),
        (lambda: steered_logits(m, steerlab.encode(m.tokenizer, ["Hi"]), layer=-1), ValueError,
         "layer -1 is out of range"),
    ]
    cases += [
        (lambda: generate(m, "Hi", v, top_p=0.0), ValueError, r"top_p must be in \(0, 1\]"),
        (lambda: generate(m, "Hi", v, top_k=-1), ValueError, "top_k must be an integer >= 0"),
        (lambda: generate(m, "Hi", v, temperature=0.0), ValueError, "temperature must be > 0"),
    ]
    two = SteeringVector({0: torch.ones(64), 1: torch.ones(64)}, m.name, m.fingerprint, 64, "raw", {}, "all")
    cases.append((lambda: generate(m, "Hi", two), ValueError, r"layers \[0, 1\]: pass layer="))
    for call, error, match in cases:
        with pytest.raises(error, match=match):
            call()


# --- the public steering scope ----------------------------------------------------------------


@pytest.mark.parametrize("position", ["all", "all_prompt", "first", "last_prompt"])
def test_plain_hf_generate_inside_the_scope_equals_sl_generate(tiny: steerlab.Model, position: str) -> None:
    """Left-padded batch, one of whose prompts is a single token."""
    vector = _vector(tiny, 1, norm=20.0)
    prompts = [PROMPTS[0], "Hello"]
    ours = _greedy(tiny, prompts, vector, coefficients=1.0, position=position)
    batch = steerlab.encode(tiny.tokenizer, prompts, padding_side="left")
    assert int(batch.lengths[1]) == 1 and batch.input_ids.shape[1] > 1
    before = _state(tiny)
    with steerlab.steering(tiny, vector, coefficient=1.0, position=position, scale="raw"), torch.no_grad():
        out = tiny.hf.generate(**batch.as_inputs(), max_new_tokens=N_NEW, do_sample=False,
                               pad_token_id=tiny.tokenizer.pad_token_id)
    theirs = [steer_mod.until_eos(row.tolist(), steer_mod.eos_ids(tiny)) for row in out[:, batch.input_ids.shape[1]:]]
    assert theirs == ours
    _assert_untouched(tiny, before)


def test_a_hand_written_sampling_loop_is_steered_at_every_step(tiny_llama: steerlab.Model) -> None:
    """A third-party loop (no cache: the whole sequence each step) under position 'all' equals
    sl.generate's greedy tokens, which use a cache: the scope reads each call's own mask."""
    m = tiny_llama
    vector = _vector(m, 1, norm=20.0)
    ours = _greedy(m, PROMPTS[0], vector, coefficients=1.0, position="all")[0]
    ids = steerlab.encode(m.tokenizer, [PROMPTS[0]]).input_ids
    with steerlab.steering(m, vector, coefficient=1.0, position="all", scale="raw"), torch.no_grad():
        for _ in range(N_NEW):
            nxt = m.hf(input_ids=ids).logits[:, -1].argmax(-1, keepdim=True)
            ids = torch.cat([ids, nxt], dim=1)
    assert ids[0, -N_NEW:].tolist() == ours


def test_the_scope_restores_the_model_after_an_exception(tiny_gpt2: steerlab.Model) -> None:
    before = _state(tiny_gpt2)
    batch = steerlab.encode(tiny_gpt2.tokenizer, PROMPTS)
    with pytest.raises(_Boom), steerlab.steering(tiny_gpt2, _vector(tiny_gpt2, 1), coefficient=3.0, scale="raw"):
        tiny_gpt2.hf(**batch.as_inputs())
        raise _Boom("user code failed inside the scope")
    _assert_untouched(tiny_gpt2, before)


def test_a_batch_size_that_does_not_match_the_rows_is_an_error(tiny_gpt2: steerlab.Model) -> None:
    batch = steerlab.encode(tiny_gpt2.tokenizer, PROMPTS + ["third"])
    before = _state(tiny_gpt2)
    with pytest.raises(ValueError, match="has 2 rows but a forward call has batch size 3"), \
            steerlab.steering(tiny_gpt2, _vector(tiny_gpt2, 1), coefficient=[1.0, 2.0], scale="raw"):
        tiny_gpt2.hf(**batch.as_inputs())
    _assert_untouched(tiny_gpt2, before)


def test_ablation_projects_the_direction_out_at_the_selected_positions(tiny_llama: steerlab.Model) -> None:
    """At the steered layer, 'ablate' leaves h - (h.u)u, 'ablate_then_add' adds c v on top, and
    unselected positions stay as they were."""
    from steerlab.trace import residuals

    m = tiny_llama
    vector = _vector(m, 1, norm=7.0)
    u = vector.at(1) / vector.at(1).norm()
    batch = steerlab.encode(m.tokenizer, PROMPTS, padding_side="left")
    plain = residuals(m, batch, [1])[0]
    seen: dict[str, torch.Tensor] = {}

    def grab(name: str) -> Any:
        def hook(module: Any, args: Any, kwargs: Any) -> None:
            seen[name] = (args[0] if args else kwargs["hidden_states"]).detach().clone()
        return hook

    block = blocks_of(m.hf)[1]
    for op in ("ablate", "ablate_then_add"):
        with steerlab.steering(m, vector, coefficient=2.0, operator=op, position="last_prompt", scale="raw"):
            handle = block.register_forward_pre_hook(grab(op), with_kwargs=True)  # runs after the scope's edit
            try:
                with torch.no_grad():
                    m.hf(**batch.as_inputs())
            finally:
                handle.remove()
    last = batch.input_ids.shape[1] - 1
    ablated = plain[:, last] - (plain[:, last] @ u)[:, None] * u
    torch.testing.assert_close(seen["ablate"][:, last], ablated, atol=1e-4, rtol=1e-4)
    assert float((seen["ablate"][:, last] @ u).abs().max()) < 1e-4
    torch.testing.assert_close(seen["ablate_then_add"][:, last], ablated + 2.0 * vector.at(1), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(seen["ablate"][:, :last], plain[:, :last], atol=1e-5, rtol=1e-5)


def test_replay_applies_the_same_operators_as_the_scope(tiny: steerlab.Model) -> None:
    from steerlab.replay import steered_logits_each

    vector = _vector(tiny, 1, norm=9.0)
    batch = steerlab.encode(tiny.tokenizer, PROMPTS)
    add = 2.0 * vector.at(1)
    for op in ("add", "ablate", "ablate_then_add"):
        (replayed,) = list(steered_logits_each(tiny, batch, [add], layer=1, position="all_prompt", operator=op,
                                               directions=[vector.at(1)]))
        direct = steered_logits(tiny, batch, [add, add], layer=1, position="all_prompt", operator=op,
                                directions=[vector.at(1)] * 2)
        torch.testing.assert_close(replayed, direct, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("scale", ["unit", "typical"])
def test_a_relative_scale_sets_the_added_norm(tiny_gpt2: steerlab.Model, scale: str) -> None:
    """coefficient c adds a vector of norm c x the layer's centred norm (``scale="unit"``, the
    default) or its typical norm (``scale="typical"``); the two differ, so the scale is read."""
    vector = _vector(tiny_gpt2, 1, norm=3.0)
    intervention = steerlab.rows(tiny_gpt2, vector, [0.5, 0.0], layer=1, scale=scale)
    size = steerlab.unit_norm(tiny_gpt2, 1) if scale == "unit" else steerlab.typical_norm(tiny_gpt2, 1)
    centred, typical = steerlab.unit_norm(tiny_gpt2, 1), steerlab.typical_norm(tiny_gpt2, 1)
    assert abs(centred - typical) > 3e-3 * typical  # far enough apart for the check below to tell them apart
    assert intervention.adds[1] is None
    assert intervention.adds[0] is not None
    assert abs(float(intervention.adds[0].norm()) - 0.5 * size) < 1e-3 * size
    assert inspect.signature(steerlab.steering).parameters["scale"].default == "unit"


# --- a tokenizer that adds a BOS (Gemma) ----------------------------------------------------------


def test_after_bos_steers_the_first_word_not_the_bos(tiny_gemma: steerlab.Model) -> None:
    """With a BOS-adding tokenizer the scope reads the BOS from each call's own ids: 'after_bos'
    edits the first word, 'first' the BOS; left padding included; a [k, d] pair starts after the BOS."""
    m = tiny_gemma
    batch = steerlab.encode(m.tokenizer, PROMPTS, padding_side="left")
    assert bool(batch.bos.all())
    v = torch.randn(m.d_model)
    delta = addition_tensor(m, batch, [v, v], "after_bos")
    start = (batch.input_ids.shape[1] - batch.lengths).tolist()  # the BOS of each row
    for row, s0 in enumerate(start):
        assert torch.equal(delta[row, s0 + 1], v)
        assert int((delta[row].abs().sum(-1) > 0).sum()) == 1
    pair = torch.randn(2, m.d_model)
    delta = addition_tensor(m, batch, [pair, pair], "first")
    for row, s0 in enumerate(start):
        assert not delta[row, s0].any() and torch.equal(delta[row, s0 + 1:s0 + 3], pair)
    vector = _vector(m, 1, norm=20.0)
    for position in ("after_bos", "all"):
        ours = _greedy(m, PROMPTS, vector, coefficients=1.0, position=position)
        with steerlab.steering(m, vector, coefficient=1.0, position=position, scale="raw"), torch.no_grad():
            out = m.hf.generate(**batch.as_inputs(), max_new_tokens=N_NEW, do_sample=False,
                                pad_token_id=m.tokenizer.pad_token_id)
        assert [steer_mod.until_eos(r.tolist(), steer_mod.eos_ids(m)) for r in out[:, batch.input_ids.shape[1]:]] \
            == ours
    assert _greedy(m, PROMPTS, vector, coefficients=1.0, position="after_bos") != _greedy(m, PROMPTS)


def test_added_vector_is_the_one_coefficient_rule() -> None:
    """One scale for the library, the widget's llama.cpp export and notebook 03's: a [k, d] prompt
    pair is measured by its largest row, not its Frobenius norm; coefficient 0 adds nothing."""
    from steerlab.steer import added_vector, relative_scale

    v = torch.tensor([3.0, 4.0])
    assert relative_scale(v, 10.0, 0.5) == pytest.approx(1.0)
    pair = torch.tensor([[3.0, 4.0], [0.0, 1.0]])
    assert relative_scale(pair, 10.0, 1.0) == pytest.approx(2.0)
    torch.testing.assert_close(added_vector(pair, 1.0, 10.0), pair * 2.0)
    torch.testing.assert_close(added_vector(v, -0.5, 10.0), torch.tensor([-3.0, -4.0]))
    torch.testing.assert_close(added_vector(v, 2.0, None), 2 * v)  # scale="raw"
    assert added_vector(v, 0.0, 10.0) is None and added_vector(v, 0, None) is None
    with pytest.raises(ValueError, match="not finite"):
        added_vector(v, float("nan"), 10.0)
    with pytest.raises(ValueError, match="zero vector"):
        relative_scale(torch.zeros(3), 1.0, 1.0)


@pytest.mark.parametrize("operator", ["ablate", "ablate_then_add"])
def test_coefficient_zero_is_the_unsteered_row_under_every_operator(tiny_llama: steerlab.Model,
                                                                    operator: str) -> None:
    """generate(coefficients=[0, c]) documents row 0 as unsteered: under the ablating operators it
    was ablated too (its text differed from the add operator's row 0)."""
    m = tiny_llama
    v = steerlab.build("mean_centred", m, [1], target="fantasy", sample_size=4, max_length=32)
    kw = {"layer": 1, "max_new_tokens": 8, "do_sample": False}
    plain = generate(m, PROMPTS, None, **kw)
    ablated = generate(m, PROMPTS, v, coefficients=[0, 1.0], operator=operator, **kw)
    assert [c.token_ids for c in ablated if c.coefficient == 0] == [c.token_ids for c in plain]
    assert [c.token_ids for c in ablated if c.coefficient != 0] != [c.token_ids for c in plain]
    batch = steerlab.encode(m.tokenizer, PROMPTS)
    with steerlab.steering(m, v, coefficient=0.0, operator=operator):
        scoped = m.hf(**batch.as_inputs()).logits
    torch.testing.assert_close(scoped, m.hf(**batch.as_inputs()).logits)
