"""Tokenizing batches and choosing positions by rule (steerlab.tokens), also for a
tokenizer that adds a BOS (a tiny Gemma 3 with the embedded tokenizer set to add one)."""

from __future__ import annotations

from typing import Any

import pytest
import steerlab
import torch
from steerlab.arch import block_hidden, blocks_of
from steerlab.tokens import (
    STAT_POSITIONS,
    STEER_POSITIONS,
    Batch,
    added_bos_id,
    check_position,
    encode,
    leading_bos,
    position_limit,
    position_mask,
)

TEXTS = ["Once upon a time, a dragon slept.", "Hi", "The match ended in a draw"]


def _ids(model: steerlab.Model, text: str) -> list[int]:
    return model.tokenizer(text, add_special_tokens=False)["input_ids"]


# --- encode ----------------------------------------------------------------------


@pytest.mark.parametrize("side", ["right", "left"])
def test_encode_pads_and_keeps_every_real_token(tiny_gpt2: steerlab.Model, side: str) -> None:
    batch = encode(tiny_gpt2.tokenizer, TEXTS, padding_side=side)
    lengths = [len(_ids(tiny_gpt2, t)) for t in TEXTS]
    assert batch.input_ids.shape == (3, max(lengths))
    assert batch.lengths.tolist() == lengths
    for row, text in enumerate(TEXTS):
        real = batch.input_ids[row][batch.attention_mask[row].bool()].tolist()
        assert real == tiny_gpt2.tokenizer(text)["input_ids"]
        mask = batch.attention_mask[row].tolist()
        n = lengths[row]
        expected = [1] * n + [0] * (len(mask) - n) if side == "right" else [0] * (len(mask) - n) + [1] * n
        assert mask == expected
    pad = batch.input_ids[~batch.attention_mask.bool()]
    assert bool((pad == tiny_gpt2.tokenizer.pad_token_id).all())


def test_smollm2_tokenizer_adds_nothing_so_its_tokens_are_unchanged(tiny_gpt2: steerlab.Model) -> None:
    """The embedded tokenizer's defaults add no token: SmolLM2's numbers stay as they were."""
    tok = tiny_gpt2.tokenizer  # the embedded SmolLM2 tokenizer
    batch = encode(tok, TEXTS)
    for row, text in enumerate(TEXTS):
        assert batch.input_ids[row][batch.attention_mask[row].bool()].tolist() == _ids(tiny_gpt2, text)
    assert not bool(batch.bos.any())
    assert added_bos_id(tok) is None
    # Its bos_token (<|im_start|>) written in the text is text, not an added BOS.
    chat = encode(tok, [f"{tok.bos_token}user hello"])
    assert chat.input_ids[0, 0] == tok.bos_token_id and not bool(chat.bos.any())


@pytest.mark.parametrize("side", ["right", "left"])
def test_a_bos_adding_tokenizer_gets_its_bos(tiny_gemma: steerlab.Model, side: str) -> None:
    tok = tiny_gemma.tokenizer
    bos = tok.bos_token_id
    assert added_bos_id(tok) == bos
    batch = encode(tok, TEXTS, padding_side=side)
    assert batch.bos.tolist() == [True, True, True]
    for row, text in enumerate(TEXTS):
        real = batch.input_ids[row][batch.attention_mask[row].bool()].tolist()
        assert real == [bos, *_ids(tiny_gemma, text)]
    assert torch.equal(leading_bos(tok, batch.input_ids, batch.attention_mask), batch.bos)

    plain = [_ids(tiny_gemma, t) for t in TEXTS]
    first_word = [p[0] for p in plain]
    last_word = [p[-1] for p in plain]

    def picked(rule: str) -> list[list[int]]:
        mask = position_mask(batch.attention_mask, rule, batch.bos)
        return [batch.input_ids[r][mask[r]].tolist() for r in range(len(TEXTS))]

    assert picked("first") == [[bos]] * 3
    assert picked("after_bos") == [[w] for w in first_word]
    assert picked("all_but_first") == plain  # the BOS left out, the first word kept
    assert picked("last") == picked("last_prompt") == [[w] for w in last_word]
    assert picked("all") == picked("all_prompt") == [[bos, *p] for p in plain]
    assert [batch.input_ids[r][batch.select("after_bos")[r]].tolist() for r in range(3)] == picked("after_bos")


def test_after_bos_is_first_where_the_tokenizer_adds_none(tiny_gpt2: steerlab.Model) -> None:
    for side in ("right", "left"):
        batch = encode(tiny_gpt2.tokenizer, TEXTS, padding_side=side)
        assert torch.equal(batch.select("after_bos"), batch.select("first"))
        assert not bool(leading_bos(tiny_gpt2.tokenizer, batch.input_ids, batch.attention_mask).any())


def _every_layer(model: steerlab.Model, ids: torch.Tensor) -> list[torch.Tensor]:
    """Every residual layer ``[1, seq, d_model]`` via plain HF (the last before the final norm)."""
    captured: dict[str, torch.Tensor] = {}
    hook = blocks_of(model.hf)[-1].register_forward_hook(lambda m, a, o: captured.__setitem__("out", block_hidden(o)))
    try:
        with torch.no_grad():
            out = model.hf(input_ids=ids, output_hidden_states=True)
    finally:
        hook.remove()
    return [*out.hidden_states[:-1], captured["out"]]


def test_statistics_leave_the_bos_out_of_all_but_first(tiny_gemma: steerlab.Model) -> None:
    """``all_but_first`` over BOS-led texts equals a plain hidden-states mean over the words."""
    model = tiny_gemma
    stats = steerlab.activation_stats(model, TEXTS, position="all_but_first", batch_size=2,
                                      cache=False, progress=False)
    assert stats.count == sum(len(_ids(model, t)) for t in TEXTS)
    first = steerlab.activation_stats(model, TEXTS, position="first", cache=False, progress=False)
    # Every text's first token is the same BOS, so its activations are identical: ratio 1.
    torch.testing.assert_close(first.ratio, torch.ones_like(first.ratio), atol=1e-5, rtol=0)
    rows = []
    for text in TEXTS:
        ids = torch.tensor([model.tokenizer(text)["input_ids"]])
        assert int(ids[0, 0]) == model.tokenizer.bos_token_id
        layers = _every_layer(model, ids)
        rows.append(torch.stack([h[0, 1:] for h in layers]))  # [layers, tokens, d_model], BOS dropped
    want = torch.cat(rows, dim=1).double().mean(dim=1).float()
    torch.testing.assert_close(stats.mean, want, atol=1e-5, rtol=1e-4)


def test_max_length_counts_special_tokens_and_flags_cut_rows(tiny_gpt2: steerlab.Model,
                                                             tiny_gemma: steerlab.Model) -> None:
    batch = encode(tiny_gpt2.tokenizer, [TEXTS[0], "Hi"], max_length=3)
    assert batch.input_ids.shape == (2, 3)
    assert batch.input_ids[0].tolist() == _ids(tiny_gpt2, TEXTS[0])[:3]
    assert batch.truncated.tolist() == [True, False]
    gemma = encode(tiny_gemma.tokenizer, [TEXTS[0]], max_length=3)
    assert gemma.input_ids[0].tolist() == [tiny_gemma.tokenizer.bos_token_id, *_ids(tiny_gemma, TEXTS[0])[:2]]
    lone = encode(tiny_gemma.tokenizer, [TEXTS[0]], max_length=1)  # a lone BOS: no word after it
    assert lone.select("first").sum() == 1 and lone.select("after_bos").sum() == 0


def test_max_positions_refuses_a_prompt_that_does_not_fit(tiny_gpt2: steerlab.Model) -> None:
    n = len(_ids(tiny_gpt2, TEXTS[0]))
    assert encode(tiny_gpt2.tokenizer, [TEXTS[0]], max_positions=n).lengths.tolist() == [n]
    with pytest.raises(ValueError, match=f"text 1 has {n} tokens, more than the {n - 1} positions"):
        encode(tiny_gpt2.tokenizer, ["Hi", TEXTS[0]], max_positions=n - 1)


def test_position_limit_reads_the_config() -> None:
    from transformers import GPT2Config, LlamaConfig

    assert position_limit(GPT2Config(n_positions=64)) == 64
    assert position_limit(LlamaConfig(max_position_embeddings=512)) == 512
    assert position_limit(object()) is None


@pytest.mark.parametrize("texts, kwargs, match", [
    ([], {}, "no texts given"),
    (["fine", ""], {}, "text 1 is empty"),
    (["   \n"], {}, "text 0 is empty"),
    (["fine", None], {}, "text 1 is None of type NoneType, not a string"),
    ("one string", {}, "got a single string"),
    (["fine"], {"max_length": -1}, r"max_length must be an int >= 1 or None, got -1"),
    (["fine"], {"max_length": 0}, "max_length must be an int >= 1"),
    (["fine"], {"max_length": 2.5}, "max_length must be an int >= 1"),
    (["fine"], {"max_length": True}, "max_length must be an int >= 1"),
    (["fine"], {"max_positions": 0}, "max_positions must be an int >= 1"),
    (["fine"], {"padding_side": "middle"}, "padding_side must be 'right' or 'left'"),
])
def test_encode_rejects_bad_input(tiny_gpt2: steerlab.Model, texts: Any, kwargs: dict[str, Any],
                                  match: str) -> None:
    with pytest.raises(ValueError, match=match):
        encode(tiny_gpt2.tokenizer, texts, **kwargs)


def test_batch_checks_its_fields() -> None:
    ids = torch.ones(2, 3, dtype=torch.long)
    assert Batch(ids, ids).bos.tolist() == [False, False]
    with pytest.raises(TypeError):
        Batch(ids, ids, "right")  # type: ignore[misc]  # the old padding_side field is gone
    with pytest.raises(ValueError, match=r"Batch.bos must be a bool tensor of shape \[2\]"):
        Batch(ids, ids, bos=torch.tensor([1, 0]))
    with pytest.raises(ValueError, match="must both be"):
        Batch(ids, ids[:, :2])


# --- position rules on planted masks ---------------------------------------------------

# Two rows of lengths 4 and 2 in a width-5 batch, padded on either side.
RIGHT = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 0, 0, 0]])
LEFT = torch.tensor([[0, 1, 1, 1, 1], [0, 0, 0, 1, 1]])
NO_BOS = torch.tensor([False, False])
BOS_FIRST_ROW = torch.tensor([True, False])


@pytest.mark.parametrize("mask, rule, bos, expected", [
    (RIGHT, "all", None, [[1, 1, 1, 1, 0], [1, 1, 0, 0, 0]]),
    (RIGHT, "all_but_first", None, [[0, 1, 1, 1, 0], [0, 1, 0, 0, 0]]),
    (RIGHT, "first", None, [[1, 0, 0, 0, 0], [1, 0, 0, 0, 0]]),
    (RIGHT, "last", None, [[0, 0, 0, 1, 0], [0, 1, 0, 0, 0]]),
    (RIGHT, "after_bos", NO_BOS, [[1, 0, 0, 0, 0], [1, 0, 0, 0, 0]]),
    (RIGHT, "after_bos", BOS_FIRST_ROW, [[0, 1, 0, 0, 0], [1, 0, 0, 0, 0]]),
    (RIGHT, "all_but_first", BOS_FIRST_ROW, [[0, 1, 1, 1, 0], [0, 1, 0, 0, 0]]),
    (LEFT, "all", None, [[0, 1, 1, 1, 1], [0, 0, 0, 1, 1]]),
    (LEFT, "all_but_first", None, [[0, 0, 1, 1, 1], [0, 0, 0, 0, 1]]),
    (LEFT, "first", None, [[0, 1, 0, 0, 0], [0, 0, 0, 1, 0]]),
    (LEFT, "last", None, [[0, 0, 0, 0, 1], [0, 0, 0, 0, 1]]),
    (LEFT, "all_prompt", None, [[0, 1, 1, 1, 1], [0, 0, 0, 1, 1]]),
    (LEFT, "last_prompt", None, [[0, 0, 0, 0, 1], [0, 0, 0, 0, 1]]),
    (LEFT, "after_bos", BOS_FIRST_ROW, [[0, 0, 1, 0, 0], [0, 0, 0, 1, 0]]),
    (LEFT, "after_bos", torch.tensor([True, True]), [[0, 0, 1, 0, 0], [0, 0, 0, 0, 1]]),
])
def test_position_mask_selects_real_tokens_by_rule(mask: torch.Tensor, rule: str, bos: torch.Tensor | None,
                                                   expected: list[list[int]]) -> None:
    got = position_mask(mask, rule, bos)
    assert got.dtype == torch.bool
    assert got.int().tolist() == expected


@pytest.mark.parametrize("rule", STAT_POSITIONS + STEER_POSITIONS)
def test_position_mask_never_selects_padding(rule: str) -> None:
    for mask in (RIGHT, LEFT):
        for bos in (NO_BOS, torch.tensor([True, True])):
            assert not bool((position_mask(mask, rule, bos) & ~mask.bool()).any())
    lone_bos = torch.tensor([[1, 0, 0]])
    assert not bool((position_mask(lone_bos, rule, torch.tensor([True])) & ~lone_bos.bool()).any())


def test_single_token_row_has_nothing_but_its_first() -> None:
    mask = torch.tensor([[1, 0, 0]])
    assert position_mask(mask, "all_but_first").sum() == 0
    assert position_mask(mask, "first").int().tolist() == position_mask(mask, "last").int().tolist()


def test_unknown_position_rule_is_named() -> None:
    with pytest.raises(ValueError, match="unknown position rule 'middle'"):
        position_mask(RIGHT, "middle")
    with pytest.raises(ValueError, match="expected one of first, after_bos, all_prompt"):
        check_position("all_but_first", STEER_POSITIONS)
    assert check_position("last", STAT_POSITIONS) == "last"


def test_after_bos_needs_the_bos_flags() -> None:
    with pytest.raises(ValueError, match="'after_bos' needs bos="):
        position_mask(RIGHT, "after_bos")
    with pytest.raises(ValueError, match=r"bos must be a bool tensor of shape \[2\]"):
        position_mask(RIGHT, "after_bos", torch.tensor([1, 0]))
