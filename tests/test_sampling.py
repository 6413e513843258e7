"""steerlab.sampling.decode: the lean decoding loop gives generate's tokens (greedy, sampled,
steered, with end-of-sequence rows and padding), on tiny GPT-2 and Llama models."""

from __future__ import annotations

import pytest
import steerlab
import torch
from steerlab.sampling import NucleusSampler, decode, row_generators
from steerlab.steer import eos_ids, steering_rows

PROMPTS = ["Once upon a time there was", "The cat", "In a small village near the sea, a", "Hi"]


def _batch(m: steerlab.Model) -> steerlab.Batch:
    return steerlab.encode(m.tokenizer, PROMPTS, padding_side="left")


def _generate(m: steerlab.Model, n: int, **kw: object) -> torch.Tensor:
    batch = _batch(m)
    with torch.inference_mode():
        out = m.hf.generate(**batch.as_inputs(), max_new_tokens=n, do_sample=False,
                            pad_token_id=m.tokenizer.pad_token_id, **kw)
    return out[:, batch.input_ids.shape[1]:]


def _decode(m: steerlab.Model, n: int, **kw: object) -> torch.Tensor:
    batch = _batch(m)
    return decode(m.hf, batch.input_ids, batch.attention_mask, max_new_tokens=n,
                  pad_token_id=m.tokenizer.pad_token_id, eos_token_ids=eos_ids(m), **kw)


@pytest.mark.parametrize("name", ["tiny_gpt2", "tiny_llama"])
@pytest.mark.parametrize("cache", ["dynamic", "static"])
def test_greedy_decode_equals_generate(name: str, cache: str, request: pytest.FixtureRequest) -> None:
    m = request.getfixturevalue(name)
    if cache == "static" and name == "tiny_gpt2":
        pytest.skip("the static cache is only measured on Llama-shaped models")
    assert torch.equal(_decode(m, 12, cache=cache), _generate(m, 12))


def test_steered_decode_equals_steered_generate(tiny_llama: steerlab.Model) -> None:
    m = tiny_llama
    g = torch.Generator().manual_seed(0)
    adds = [None, 30 * torch.randn(m.d_model, generator=g), None, -30 * torch.randn(m.d_model, generator=g)]
    with steering_rows(m, adds, layer=1, position="all"):
        ours = _decode(m, 10)
        theirs = _generate(m, 10)
    assert torch.equal(ours, theirs)
    assert not torch.equal(ours, _decode(m, 10)), "the steering changed nothing: the test would not see a miss"


def test_sampled_decode_draws_what_generate_draws(tiny_llama: steerlab.Model) -> None:
    from transformers import LogitsProcessorList

    keys = [f"row {i}" for i in range(len(PROMPTS))]
    ours = _decode(tiny_llama, 10, sampler=NucleusSampler(top_p=0.9, generators=row_generators(3, keys)))
    theirs = _generate(tiny_llama, 10, logits_processor=LogitsProcessorList(
        [NucleusSampler(top_p=0.9, generators=row_generators(3, keys))]))
    assert torch.equal(ours, theirs)


def test_rows_that_end_get_padding_and_the_loop_stops_when_all_have(tiny_llama: steerlab.Model) -> None:
    m = tiny_llama
    first = _decode(m, 3)[:, 1].tolist()  # make each row's second token its end of sequence
    batch = _batch(m)
    pad = -1
    new = decode(m.hf, batch.input_ids, batch.attention_mask, max_new_tokens=12, pad_token_id=pad,
                 eos_token_ids=set(first))
    assert new.shape[1] < 12  # every row produced one of the ids by its second token at the latest
    for row in new.tolist():
        ended = next(i for i, t in enumerate(row) if t in set(first))
        assert all(t == pad for t in row[ended + 1:])


def test_should_stop_ends_after_the_step(tiny_llama: steerlab.Model) -> None:
    calls = []
    new = _decode(tiny_llama, 12, should_stop=lambda: calls.append(1) or len(calls) >= 3)
    assert new.shape[1] == 3
    assert torch.equal(new, _generate(tiny_llama, 12)[:, :3])


@pytest.mark.parametrize("bad", [{"max_new_tokens": 0}, {"max_new_tokens": True}, {"cache": "paged"}])
def test_bad_arguments_are_refused(tiny_llama: steerlab.Model, bad: dict[str, object]) -> None:
    batch = _batch(tiny_llama)
    args: dict[str, object] = {"max_new_tokens": 4, "pad_token_id": 0, **bad}
    with pytest.raises(ValueError, match="max_new_tokens|cache"):
        decode(tiny_llama.hf, batch.input_ids, batch.attention_mask, **args)  # type: ignore[arg-type]
