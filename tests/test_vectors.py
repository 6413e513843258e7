"""Steering vectors (steerlab.vectors): recipes recover a planted direction,
round trips through safetensors + JSON, and mismatches are refused."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import steerlab
import torch
from steerlab.store import StoreError
from steerlab.vectors import (
    SteeringVector,
    VectorMismatchError,
    counterbalanced,
    isolated,
    load_vector,
    mean_centred,
    prompt_pair,
    random_like,
    raw,
)

BASE = [
    "The dragon slept under the mountain for a thousand years and",
    "She kicked the ball into the net and the crowd saw",
    "A quiet afternoon in the library with tea and",
    "They laughed at the old map of the coast and the",
    "Rain fell on the market all day while the",
    "The engine coughed twice before the ship left the",
]
SET_A = [t + " zebra" for t in BASE]  # carries the marker token
SET_B = [t + " apple" for t in BASE]


@pytest.fixture(params=["tiny_gpt2", "tiny_llama"])
def tiny(request: pytest.FixtureRequest) -> steerlab.Model:
    return request.getfixturevalue(request.param)


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm()


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(_unit(a.double()) @ _unit(b.double()))


@contextmanager
def planted(model: steerlab.Model, direction: torch.Tensor, marker: str) -> Iterator[None]:
    """Add ``direction`` to every position's embedding in texts containing ``marker``.

    Layer 0 of the residual stream is then ``embedding + direction`` for those
    texts only: a known feature, present in set A and absent from set B.
    """
    (marker_id,) = model.tokenizer(marker, add_special_tokens=False)["input_ids"]

    def hook(module: Any, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
        has = (args[0] == marker_id).any(dim=1)  # [batch]
        return output + has[:, None, None].to(output.dtype) * direction

    handle = model.hf.get_input_embeddings().register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def _direction(model: steerlab.Model, norm: float, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return _unit(torch.randn(model.d_model, generator=gen)) * norm


def test_marker_is_one_token_absent_from_the_other_set(tiny_gpt2: steerlab.Model) -> None:
    tok = tiny_gpt2.tokenizer
    (zebra,) = tok(" zebra", add_special_tokens=False)["input_ids"]
    for a, b in zip(SET_A, SET_B):
        assert zebra in tok(a, add_special_tokens=False)["input_ids"]
        assert zebra not in tok(b, add_special_tokens=False)["input_ids"]


def test_counterbalanced_recovers_a_planted_direction(tiny: steerlab.Model) -> None:
    # A typical layer-0 activation has norm ~0.2 here; the planted feature is 1.0.
    d = _direction(tiny, 1.0)
    control = counterbalanced(tiny, SET_A, SET_B, [0], cache=False, progress=False)
    assert abs(_cos(control.at(0), d)) < 0.5  # without the plant, nothing points at d
    with planted(tiny, d, " zebra"):
        v = counterbalanced(tiny, SET_A, SET_B, [0], cache=False, progress=False)
    assert v.recipe == "counterbalanced"
    assert _cos(v.at(0), d) > 0.99
    assert v.norm(0) == pytest.approx(1.0, rel=0.1)
    # mean(A) - mean(B) with the plant is the control plus d, exactly.
    torch.testing.assert_close(v.at(0), control.at(0) + d, atol=1e-5, rtol=1e-4)


def test_isolated_points_along_the_planted_direction(tiny: steerlab.Model) -> None:
    d = _direction(tiny, 1.0, seed=2)
    with planted(tiny, d, " zebra"):
        v = isolated(tiny, SET_A, SET_A + SET_B, [0], cache=False, progress=False)
        a = steerlab.activation_stats(tiny, SET_A, [0], cache=False, progress=False)
        union = steerlab.activation_stats(tiny, SET_A + SET_B, [0], cache=False, progress=False)
    assert v.recipe == "isolated"
    assert _cos(v.at(0), d) > 0.99
    # A is a share of the union, so the isolated vector is d scaled by B's share.
    share_b = 1 - a.count / union.count
    assert float(v.at(0) @ _unit(d)) == pytest.approx(share_b * 1.0, rel=0.05)


def test_mean_centred_is_target_minus_general(tiny_llama: steerlab.Model) -> None:
    v = mean_centred(tiny_llama, SET_A, SET_B, [0, 2], cache=False, progress=False)
    a = steerlab.activation_stats(tiny_llama, SET_A, [0, 2], cache=False, progress=False)
    b = steerlab.activation_stats(tiny_llama, SET_B, [0, 2], cache=False, progress=False)
    assert v.layers == [0, 2]
    for layer in (0, 2):
        torch.testing.assert_close(v.at(layer), a.mean_at(layer) - b.mean_at(layer))
    assert v.sources == {"target": "6 texts", "centre": "6 texts"}
    # Statistics can be passed instead of texts, with the same result.
    again = mean_centred(tiny_llama, a, b, [2])
    torch.testing.assert_close(again.at(2), v.at(2))


def test_raw_is_the_mean_activation(tiny_gpt2: steerlab.Model) -> None:
    v = raw(tiny_gpt2, "Love is all you need", [1], position="last", cache=False, progress=False)
    ids = tiny_gpt2.tokenizer("Love is all you need", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        h = tiny_gpt2.hf(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states[1]
    torch.testing.assert_close(v.at(1), h[0, -1], atol=1e-6, rtol=1e-5)
    assert v.sources == {"target": "Love is all you need"} and v.position == "last"


def test_statistics_from_another_model_are_refused(tiny_gpt2: steerlab.Model,
                                                   tiny_llama: steerlab.Model) -> None:
    s = steerlab.activation_stats(tiny_gpt2, BASE, [0], cache=False, progress=False)
    with pytest.raises(VectorMismatchError, match="statistics were computed on"):
        raw(tiny_llama, s, [0])
    with pytest.raises(ValueError, match=r"lack layers \[1\]"):
        raw(tiny_gpt2, s, [0, 1])


# --- prompt pairs and random controls ------------------------------------------------


def test_prompt_pair_pads_with_spaces_to_equal_length(tiny: steerlab.Model) -> None:
    tok = tiny.tokenizer
    plus, minus = "Love", "I hate you"
    v = prompt_pair(tiny, plus, minus, [0, 1])
    ids_plus = tok(plus, add_special_tokens=False)["input_ids"]
    ids_minus = tok(minus, add_special_tokens=False)["input_ids"]
    k = max(len(ids_plus), len(ids_minus))
    assert len(ids_plus) < k  # the padding is exercised
    assert v.at(0).shape == v.at(1).shape == (k, tiny.d_model)
    assert v.recipe == "prompt_pair" and v.position == "first"
    (space,) = tok(" ", add_special_tokens=False)["input_ids"]
    padded = torch.tensor([ids_plus + [space] * (k - len(ids_plus)), ids_minus])
    with torch.no_grad():
        hs = tiny.hf(input_ids=padded, output_hidden_states=True).hidden_states
    for layer in (0, 1):
        torch.testing.assert_close(v.at(layer), hs[layer][0] - hs[layer][1], atol=1e-5, rtol=1e-4)


def test_prompt_pair_after_bos_reads_the_words_at_positions_1_to_k(tiny: steerlab.Model) -> None:
    tok = tiny.tokenizer
    v = prompt_pair(tiny, " fantasy", " ", [1], after_bos=True)
    ids = [tok(p, add_special_tokens=False)["input_ids"] for p in (" fantasy", " ")]
    assert len(ids[0]) == len(ids[1]) == 1
    rows = torch.tensor([[tok.bos_token_id, *ids[0]], [tok.bos_token_id, *ids[1]]])
    with torch.no_grad():
        hs = tiny.hf(input_ids=rows, output_hidden_states=True).hidden_states
    assert v.at(1).shape == (1, tiny.d_model)
    torch.testing.assert_close(v.at(1)[0], hs[1][0, 1] - hs[1][1, 1], atol=1e-5, rtol=1e-4)
    assert v.sources["after"] == "bos"


def test_prompt_pair_rejects_empty_prompts_and_the_last_layer(tiny_gpt2: steerlab.Model) -> None:
    with pytest.raises(ValueError, match="two non-empty prompts"):
        prompt_pair(tiny_gpt2, "Love", "", [0])
    # A single space is a prompt (ActAdd's usual "minus"): padded with spaces.
    assert prompt_pair(tiny_gpt2, "I hate you", " ", [0]).at(0).shape == (3, 64)
    with pytest.raises(ValueError, match=r"layer 2 is out of range .*expected 0\.\.1"):
        prompt_pair(tiny_gpt2, "Love", "Hate", [2])


def test_random_like_keeps_the_norm_and_changes_the_direction(tiny_llama: steerlab.Model) -> None:
    v = counterbalanced(tiny_llama, SET_A, SET_B, [0, 1], cache=False, progress=False)
    r = random_like(v, seed=3)
    assert r.recipe == "random" and r.layers == v.layers
    for layer in v.layers:
        assert r.norm(layer) == pytest.approx(v.norm(layer), rel=1e-5)
        assert abs(_cos(r.at(layer), v.at(layer))) < 0.5
    torch.testing.assert_close(random_like(v, seed=3).at(0), r.at(0))
    assert not torch.allclose(random_like(v, seed=4).at(0), r.at(0))
    pair = prompt_pair(tiny_llama, "Love", "I hate you", [1])
    assert random_like(pair).at(1).shape == pair.at(1).shape


# --- save / load -----------------------------------------------------------------


def test_save_load_round_trip_without_pickle(tiny_gpt2: steerlab.Model, tmp_path: Path) -> None:
    v = counterbalanced(tiny_gpt2, SET_A, SET_B, [0, 2], cache=False, progress=False)
    v.extra["note"] = "planted"
    v.save(tmp_path / "vec")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vec.json", "vec.safetensors"]
    meta = json.loads((tmp_path / "vec.json").read_text())
    assert meta["recipe"] == "counterbalanced" and meta["layers"] == [0, 2]
    assert meta["model_fingerprint"] == tiny_gpt2.fingerprint
    # A safetensors file: an 8-byte little-endian header length, then a JSON header.
    raw_bytes = (tmp_path / "vec.safetensors").read_bytes()
    (header_len,) = struct.unpack("<Q", raw_bytes[:8])
    header = json.loads(raw_bytes[8:8 + header_len])
    assert set(header) - {"__metadata__"} == {"layer_0", "layer_2"}

    back = load_vector(tmp_path / "vec", tiny_gpt2)
    assert back.layers == v.layers and back.recipe == v.recipe and back.sources == v.sources
    assert back.position == v.position and back.extra == {"note": "planted"}
    for layer in v.layers:
        torch.testing.assert_close(back.at(layer), v.at(layer), atol=0, rtol=0)


def test_loading_for_another_model_is_refused(tiny_gpt2: steerlab.Model, tiny_llama: steerlab.Model,
                                              tmp_path: Path) -> None:
    v = raw(tiny_gpt2, BASE, [1], cache=False, progress=False)
    v.save(tmp_path / "vec")
    assert tiny_gpt2.d_model == tiny_llama.d_model  # only the fingerprint tells them apart
    with pytest.raises(VectorMismatchError, match=r"made for model .*tiny-gpt2.*not .*tiny-llama"):
        load_vector(tmp_path / "vec", tiny_llama)
    assert load_vector(tmp_path / "vec").model_fingerprint == tiny_gpt2.fingerprint


def test_wrong_width_is_refused(tiny_gpt2: steerlab.Model) -> None:
    narrow = SteeringVector({0: torch.ones(32)}, tiny_gpt2.name, tiny_gpt2.fingerprint, 32, "raw", {}, "all")
    with pytest.raises(VectorMismatchError, match="width 32 but .* has d_model 64"):
        narrow.check_for(tiny_gpt2)
    with pytest.raises(VectorMismatchError, match=r"shape \(63,\); expected \[64\] or \[k, 64\]"):
        SteeringVector({0: torch.ones(63)}, "m", "f", 64, "raw", {}, "all")
    with pytest.raises(VectorMismatchError, match=r"shape \(2, 2, 64\)"):
        SteeringVector({0: torch.ones(2, 2, 64)}, "m", "f", 64, "raw", {}, "all")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_vector_is_refused(bad: float) -> None:
    vec = torch.ones(64)
    vec[5] = bad
    with pytest.raises(ValueError, match="layer 3 contains NaN or inf"):
        SteeringVector({3: vec}, "m", "f", 64, "raw", {}, "all")


def test_other_construction_errors() -> None:
    # A recipe is provenance (a registry construction, "imported", or your own name), never empty.
    with pytest.raises(ValueError, match="recipe names its construction; got ' '"):
        SteeringVector({0: torch.ones(4)}, "m", "f", 4, " ", {}, "all")
    with pytest.raises(ValueError, match="at least one layer"):
        SteeringVector({}, "m", "f", 4, "raw", {}, "all")
    v = SteeringVector({0: torch.ones(4)}, "m", "f", 4, "raw", {}, "all")
    with pytest.raises(KeyError, match=r"has no layer 5; it has \[0\]"):
        v.at(5)


def test_tampered_or_missing_files_are_refused(tiny_gpt2: steerlab.Model, tmp_path: Path) -> None:
    v = raw(tiny_gpt2, BASE, [0], cache=False, progress=False)
    v.save(tmp_path / "vec")
    data = bytearray((tmp_path / "vec.safetensors").read_bytes())
    data[-1] ^= 0xFF  # one flipped byte in the last float
    (tmp_path / "vec.safetensors").write_bytes(bytes(data))
    with pytest.raises(StoreError, match="does not match the checksum"):
        load_vector(tmp_path / "vec")
    with pytest.raises(StoreError, match="cannot read metadata"):
        load_vector(tmp_path / "missing")


def test_failed_save_leaves_nothing_under_the_final_name(tiny_gpt2: steerlab.Model, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from steerlab import store

    def half_write(tensors: dict[str, torch.Tensor], filename: str) -> None:
        Path(filename).write_bytes(b"\x00" * 10)
        raise OSError("disk full")

    monkeypatch.setattr(store, "save_file", half_write)
    v = raw(tiny_gpt2, BASE, [0], cache=False, progress=False)
    with pytest.raises(OSError, match="disk full"):
        v.save(tmp_path / "vec")
    assert list(tmp_path.iterdir()) == []


def test_save_expands_tilde_returns_its_paths_and_gguf_round_trips(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """save() used to return None, write a literal '~' folder, and write a pair that
    load_vector('x.gguf') could not read when given a .gguf name."""
    monkeypatch.setenv("HOME", str(tmp_path))
    v = SteeringVector({3: torch.randn(8)}, "m", "f", 8, "mean_centred", {"target": "fantasy"}, "all_but_first")
    written = v.save("~/vecs/fantasy")
    assert written == [tmp_path / "vecs" / "fantasy.safetensors", tmp_path / "vecs" / "fantasy.json"]
    assert all(p.is_file() for p in written)
    (gguf,) = v.save("~/vecs/fantasy.gguf", coefficient=2.0)
    assert gguf == tmp_path / "vecs" / "fantasy.gguf"
    back = load_vector("~/vecs/fantasy.gguf")
    torch.testing.assert_close(back.at(3), 2.0 * v.at(3))
    with pytest.raises(TypeError, match="options"):
        v.save(tmp_path / "plain", coefficient=2.0)
    # One line, with the construction, model, layers and norm: not 576 numbers.
    text = repr(v)
    assert "\n" not in text and text.startswith("SteeringVector(mean_centred, model='m', layers=[3], norm={3: ")
