"""Tokenizing batches and choosing positions by rule (steerlab.tokens)."""

from __future__ import annotations

import pytest
import steerlab
import torch
from steerlab.tokens import STAT_POSITIONS, STEER_POSITIONS, check_position, encode, position_mask

TEXTS = ["Once upon a time, a dragon slept.", "Hi", "The match ended in a draw"]


def _ids(model: steerlab.Model, text: str) -> list[int]:
    return model.tokenizer(text, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("side", ["right", "left"])
def test_encode_pads_and_keeps_every_real_token(tiny_gpt2: steerlab.Model, side: str) -> None:
    batch = encode(tiny_gpt2.tokenizer, TEXTS, padding_side=side)
    lengths = [len(_ids(tiny_gpt2, t)) for t in TEXTS]
    assert batch.input_ids.shape == (3, max(lengths))
    assert batch.lengths.tolist() == lengths
    assert batch.padding_side == side
    for row, text in enumerate(TEXTS):
        real = batch.input_ids[row][batch.attention_mask[row].bool()].tolist()
        assert real == _ids(tiny_gpt2, text)
        mask = batch.attention_mask[row].tolist()
        n = lengths[row]
        expected = [1] * n + [0] * (len(mask) - n) if side == "right" else [0] * (len(mask) - n) + [1] * n
        assert mask == expected
    pad = batch.input_ids[~batch.attention_mask.bool()]
    assert bool((pad == tiny_gpt2.tokenizer.pad_token_id).all())


def test_encode_adds_no_special_tokens_and_truncates(tiny_gpt2: steerlab.Model) -> None:
    tok = tiny_gpt2.tokenizer
    batch = encode(tok, [TEXTS[0]], max_length=3)
    assert batch.input_ids.shape == (1, 3)
    assert batch.input_ids[0].tolist() == _ids(tiny_gpt2, TEXTS[0])[:3]
    assert tok.bos_token_id not in encode(tok, ["Hello"]).input_ids[0].tolist()


@pytest.mark.parametrize("texts, match", [
    ([], "no texts given"),
    (["fine", ""], "text 1 is empty"),
    (["   \n"], "text 0 is empty"),
])
def test_encode_rejects_empty_input(tiny_gpt2: steerlab.Model, texts: list[str], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        encode(tiny_gpt2.tokenizer, texts)


# Two rows of lengths 4 and 2 in a width-5 batch, padded on either side.
RIGHT = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 0, 0, 0]])
LEFT = torch.tensor([[0, 1, 1, 1, 1], [0, 0, 0, 1, 1]])


@pytest.mark.parametrize("mask, rule, expected", [
    (RIGHT, "all", [[1, 1, 1, 1, 0], [1, 1, 0, 0, 0]]),
    (RIGHT, "all_but_first", [[0, 1, 1, 1, 0], [0, 1, 0, 0, 0]]),
    (RIGHT, "first", [[1, 0, 0, 0, 0], [1, 0, 0, 0, 0]]),
    (RIGHT, "last", [[0, 0, 0, 1, 0], [0, 1, 0, 0, 0]]),
    (LEFT, "all", [[0, 1, 1, 1, 1], [0, 0, 0, 1, 1]]),
    (LEFT, "all_but_first", [[0, 0, 1, 1, 1], [0, 0, 0, 0, 1]]),
    (LEFT, "first", [[0, 1, 0, 0, 0], [0, 0, 0, 1, 0]]),
    (LEFT, "last", [[0, 0, 0, 0, 1], [0, 0, 0, 0, 1]]),
    (LEFT, "all_prompt", [[0, 1, 1, 1, 1], [0, 0, 0, 1, 1]]),
    (LEFT, "last_prompt", [[0, 0, 0, 0, 1], [0, 0, 0, 0, 1]]),
])
def test_position_mask_selects_real_tokens_by_rule(mask: torch.Tensor, rule: str,
                                                   expected: list[list[int]]) -> None:
    got = position_mask(mask, rule)
    assert got.dtype == torch.bool
    assert got.int().tolist() == expected


@pytest.mark.parametrize("rule", STAT_POSITIONS + STEER_POSITIONS)
def test_position_mask_never_selects_padding(rule: str) -> None:
    for mask in (RIGHT, LEFT):
        assert not bool((position_mask(mask, rule) & ~mask.bool()).any())


def test_single_token_row_has_nothing_but_its_first() -> None:
    mask = torch.tensor([[1, 0, 0]])
    assert position_mask(mask, "all_but_first").sum() == 0
    assert position_mask(mask, "first").int().tolist() == position_mask(mask, "last").int().tolist()


def test_unknown_position_rule_is_named() -> None:
    with pytest.raises(ValueError, match="unknown position rule 'middle'"):
        position_mask(RIGHT, "middle")
    with pytest.raises(ValueError, match="expected one of first, all_prompt"):
        check_position("all_but_first", STEER_POSITIONS)
    assert check_position("last", STAT_POSITIONS) == "last"
