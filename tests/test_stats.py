"""Activation statistics (steerlab.stats) against a brute-force oracle, batching,
early stopping, streaming memory, the disk cache and centring."""

from __future__ import annotations

import json
import math
import warnings
import weakref
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import steerlab
import steerlab.stats as stats_mod
import torch
from steerlab.arch import block_hidden, blocks_of, final_norm_of
from steerlab.data import TextSet
from steerlab.stats import activation_stats, per_text_means, pool_stats
from steerlab.trace import residuals

TEXTS = [
    "The dragon slept under the mountain for a thousand years.",
    "She kicked the ball into the net.",
    "Rain.",
    "A quiet afternoon in the library, with tea and an old map of the coast.",
    "They laughed",
]


@pytest.fixture(params=["tiny_gpt2", "tiny_llama"])
def tiny(request: pytest.FixtureRequest) -> steerlab.Model:
    return request.getfixturevalue(request.param)


def _all_layers(model: steerlab.Model, text: str) -> list[torch.Tensor]:
    """Every residual layer ``[seq, d_model]`` of one unpadded text, via plain HF."""
    ids = torch.tensor([model.tokenizer(text, add_special_tokens=False)["input_ids"]])
    captured: dict[str, torch.Tensor] = {}
    last = blocks_of(model.hf)[-1]
    hook = last.register_forward_hook(lambda m, a, o: captured.__setitem__("out", block_hidden(o)))
    try:
        with torch.no_grad():
            out = model.hf(input_ids=ids, output_hidden_states=True)
    finally:
        hook.remove()
    # hidden_states[n_layers] has the final norm applied; layer n_layers is the
    # last block's output before it, taken from the hook.
    return [h[0] for h in out.hidden_states[:-1]] + [captured["out"][0]]


_RULES = {
    "all": lambda n: list(range(n)),
    "all_but_first": lambda n: list(range(1, n)),
    "first": lambda n: [0],
    "last": lambda n: [n - 1],
}


def _selected(model: steerlab.Model, texts: list[str], position: str) -> list[torch.Tensor]:
    """Per residual layer, the ``[tokens, d_model]`` activations a rule selects (float64)."""
    per_layer: list[list[torch.Tensor]] = [[] for _ in range(model.n_layers + 1)]
    for text in texts:
        for layer, h in enumerate(_all_layers(model, text)):
            per_layer[layer].append(h[_RULES[position](h.shape[0])])
    return [torch.cat(rows).double() for rows in per_layer]


def _brute(model: steerlab.Model, texts: list[str], position: str) -> dict[str, torch.Tensor]:
    out: dict[str, list[torch.Tensor]] = {k: [] for k in (
        "mean", "mean_norm", "norm_of_mean", "avg_cos_to_mean", "avg_pairwise_cos")}
    for x in _selected(model, texts, position):  # [tokens, d_model]
        n = x.shape[0]
        mean = x.mean(0)
        unit = x / x.norm(dim=1, keepdim=True)
        cos = unit @ unit.T
        out["mean"].append(mean)
        out["mean_norm"].append(x.norm(dim=1).mean())
        out["norm_of_mean"].append(mean.norm())
        out["avg_cos_to_mean"].append((unit @ (mean / mean.norm())).mean())
        out["avg_pairwise_cos"].append((cos.sum() - cos.diagonal().sum()) / (n * (n - 1)))
    return {k: torch.stack(v).float() for k, v in out.items()}


@pytest.mark.parametrize("position", ["all", "all_but_first", "first", "last"])
def test_statistics_equal_brute_force_over_hidden_states(tiny: steerlab.Model, position: str) -> None:
    n = tiny.n_layers
    got = activation_stats(tiny, TEXTS, position=position, batch_size=2, cache=False, progress=False)
    want = _brute(tiny, TEXTS, position)
    assert got.layers == list(range(n + 1))
    lengths = [len(tiny.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in TEXTS]
    assert got.count == sum(len(_RULES[position](k)) for k in lengths)
    for key, value in want.items():
        torch.testing.assert_close(getattr(got, key), value, atol=1e-5, rtol=1e-4, msg=key)
    # Non-degenerate data: the statistics are not all equal to 1 or 0.
    assert float(want["avg_pairwise_cos"].min()) < 0.9
    assert float((want["norm_of_mean"] / want["mean_norm"]).max()) < 0.99


def test_batched_equals_unbatched(tiny: steerlab.Model) -> None:
    one = activation_stats(tiny, TEXTS, batch_size=1, position="all", cache=False, progress=False)
    three = activation_stats(tiny, TEXTS, batch_size=3, position="all", cache=False, progress=False)
    assert one.count == three.count
    for key in ("mean", "mean_norm", "norm_of_mean", "avg_cos_to_mean", "avg_pairwise_cos"):
        torch.testing.assert_close(getattr(one, key), getattr(three, key), atol=1e-6, rtol=1e-5)


def test_padding_really_happens_in_a_batch(tiny_llama: steerlab.Model) -> None:
    batch = steerlab.encode(tiny_llama.tokenizer, TEXTS[:3])
    assert len(set(batch.lengths.tolist())) == 3  # the equality above is not vacuous


def test_requested_layers_in_any_order(tiny_llama: steerlab.Model) -> None:
    s = activation_stats(tiny_llama, TEXTS, layers=[2, 0], cache=False, progress=False)
    full = activation_stats(tiny_llama, TEXTS, cache=False, progress=False)
    assert s.layers == [0, 2]
    torch.testing.assert_close(s.mean_at(2), full.mean_at(2))
    torch.testing.assert_close(s.mean_at(0), full.mean_at(0))
    with pytest.raises(KeyError, match=r"layer 1 was not computed; layers: \[0, 2\]"):
        s.mean_at(1)


def test_table_rows_are_plain_floats(tiny_gpt2: steerlab.Model) -> None:
    s = activation_stats(tiny_gpt2, TEXTS, layers=[0, 1], cache=False, progress=False)
    rows = s.table()
    assert [r["layer"] for r in rows] == [0, 1]
    for i, row in enumerate(rows):
        assert all(isinstance(v, (int, float)) for v in row.values())
        assert row["ratio"] == pytest.approx(float(s.norm_of_mean[i] / s.mean_norm[i]), rel=1e-6)
        assert 0 < row["ratio"] < 1


class _Counter:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, *args: Any) -> None:
        self.calls += 1


@pytest.mark.parametrize("model_name", ["tiny_gpt2", "tiny_llama"])
def test_forward_stops_after_the_deepest_requested_layer(request: pytest.FixtureRequest,
                                                         model_name: str) -> None:
    model: steerlab.Model = request.getfixturevalue(model_name)
    last_block = blocks_of(model.hf)[-1]
    # The last block's sub-modules run only if its forward body runs (reading
    # the block's *input* enters the block but must stop before its body).
    inner = next(m for name, m in last_block.named_children() if "attn" in name)
    counters = {"block0": _Counter(), "last_inner": _Counter(), "norm": _Counter(), "head": _Counter()}
    modules = {"block0": blocks_of(model.hf)[0], "last_inner": inner,
               "norm": final_norm_of(model.hf), "head": model.hf.get_output_embeddings()}
    hooks = [modules[k].register_forward_pre_hook(c) for k, c in counters.items()]
    try:
        activation_stats(model, TEXTS[:2], layers=[0], cache=False, progress=False)
        assert {k: c.calls for k, c in counters.items()} == {
            "block0": 1, "last_inner": 0, "norm": 0, "head": 0}
        activation_stats(model, TEXTS[:2], layers=[1], cache=False, progress=False)
        assert counters["last_inner"].calls == 0
        assert counters["block0"].calls == 2
        activation_stats(model, TEXTS[:2], layers=[model.n_layers], cache=False, progress=False)
        assert counters["last_inner"].calls == 1  # the hooks do see a running block
        assert counters["norm"].calls == 0 and counters["head"].calls == 0
        model.hf(**steerlab.encode(model.tokenizer, TEXTS[:2]).as_inputs())
        assert counters["norm"].calls == 1 and counters["head"].calls == 1
    finally:
        for h in hooks:
            h.remove()


def test_memory_is_one_batch_whatever_the_dataset_size(tiny_llama: steerlab.Model,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Per-batch residuals are consumed and dropped, never accumulated."""
    calls: list[int] = []
    alive: list[list[weakref.ref[torch.Tensor]]] = []

    def watched(model: steerlab.Model, batch: Any, layers: Any, *, reduce: Any, **kw: Any) -> list[torch.Tensor]:
        # When batch k+1 is requested, batches up to k-1 must be garbage (batch
        # k may still be bound to the loop variable).
        for refs in alive[:-1]:
            assert all(r() is None for r in refs), "an earlier batch's activations are still alive"
        calls.append(int(batch.input_ids.shape[0]))
        refs: list[weakref.ref[torch.Tensor]] = []

        def spy(i: int, hidden: torch.Tensor) -> torch.Tensor:
            refs.append(weakref.ref(hidden))  # the activations the trace hands to the reduction
            return reduce(i, hidden)

        rows = residuals(model, batch, layers, reduce=spy, **kw)
        assert all(tuple(r.shape) == (2 * model.d_model + 1,) for r in rows)  # sums come back, not activations
        alive.append(refs)
        return rows

    monkeypatch.setattr(stats_mod, "residuals", watched)
    small = activation_stats(tiny_llama, TEXTS * 2, batch_size=3, cache=False, progress=False)
    assert calls == [3, 3, 3, 1]
    calls.clear()
    alive.clear()
    large = activation_stats(tiny_llama, TEXTS * 4, batch_size=3, cache=False, progress=False)
    assert len(calls) == math.ceil(len(TEXTS) * 4 / 3) and max(calls) == 3
    # The result is [layers, d_model] sums whatever the size; twice the data
    # (repeated) gives twice the count and the same means.
    assert large.mean.shape == small.mean.shape == (tiny_llama.n_layers + 1, tiny_llama.d_model)
    assert large.count == 2 * small.count
    torch.testing.assert_close(large.mean, small.mean, atol=1e-6, rtol=1e-5)


def test_per_text_means_equal_plain_means(tiny_gpt2: steerlab.Model) -> None:
    got = per_text_means(tiny_gpt2, TEXTS, layers=[0, 2], batch_size=2, progress=False)
    assert got.shape == (len(TEXTS), 2, tiny_gpt2.d_model)
    for i, text in enumerate(TEXTS):
        layers = _all_layers(tiny_gpt2, text)
        for j, layer in enumerate((0, 2)):
            torch.testing.assert_close(got[i, j], layers[layer][1:].mean(0), atol=1e-6, rtol=1e-5)


# --- cache -------------------------------------------------------------------


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("STEERLAB_CACHE", str(tmp_path))
    return tmp_path / "stats"


def _no_forward(*args: Any, **kw: Any) -> None:
    raise AssertionError("the forward pass ran although the cache should have answered")


def _assert_same(a: steerlab.ActivationStats, b: steerlab.ActivationStats) -> None:
    assert a.count == b.count and a.layers == b.layers and a.position == b.position
    for key in ("mean", "mean_norm", "norm_of_mean", "avg_cos_to_mean", "avg_pairwise_cos"):
        torch.testing.assert_close(getattr(a, key), getattr(b, key), atol=0, rtol=0)


def test_second_call_is_answered_by_the_cache(tiny_gpt2: steerlab.Model, cache_dir: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    first = activation_stats(tiny_gpt2, TEXTS, layers=[0, 1], progress=False)
    assert len(list(cache_dir.glob("*.safetensors"))) == 1
    assert len(list(cache_dir.glob("*.json"))) == 1
    monkeypatch.setattr(stats_mod, "residuals", _no_forward)
    _assert_same(activation_stats(tiny_gpt2, TEXTS, layers=[0, 1], progress=False), first)
    with pytest.raises(AssertionError, match="forward pass ran"):
        activation_stats(tiny_gpt2, TEXTS, layers=[0, 1], progress=False, cache=False)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("damage", ["truncate_tensors", "garbage_json", "json_list", "nan_tensors"])
def test_damaged_cache_entry_is_recomputed_with_a_warning(tiny_gpt2: steerlab.Model, cache_dir: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          damage: str) -> None:
    first = activation_stats(tiny_gpt2, TEXTS, layers=[0, 1], progress=False)
    (tensor_file,) = cache_dir.glob("*.safetensors")
    json_file = tensor_file.with_suffix(".json")
    if damage == "truncate_tensors":
        _truncate(tensor_file)
    elif damage == "garbage_json":
        json_file.write_text("{not json")
    elif damage == "json_list":
        json_file.write_text("[1, 2]")
    else:  # a well-formed, checksummed entry holding NaN
        from steerlab.store import load_tensors, save_tensors

        tensors, meta = load_tensors(tensor_file.with_suffix(""))
        tensors["mean"] = torch.full_like(tensors["mean"], float("nan"))
        save_tensors(tensor_file.with_suffix(""), tensors, meta)
    calls = []
    monkeypatch.setattr(stats_mod, "residuals", lambda *a, **kw: calls.append(1) or residuals(*a, **kw))
    with pytest.warns(UserWarning, match="damaged statistics cache entry"):
        again = activation_stats(tiny_gpt2, TEXTS, layers=[0, 1], progress=False)
    assert calls, "the damaged entry was trusted instead of recomputed"
    _assert_same(again, first)
    # The recomputed entry replaced the damaged one and is trusted next time.
    monkeypatch.setattr(stats_mod, "residuals", _no_forward)
    _assert_same(activation_stats(tiny_gpt2, TEXTS, layers=[0, 1], progress=False), first)


def test_cache_keys_differ_by_position_data_centre_and_model(
        tiny_gpt2: steerlab.Model, tiny_llama: steerlab.Model, cache_dir: Path) -> None:
    base = activation_stats(tiny_gpt2, TEXTS, layers=[0, 1], progress=False)
    variants = [
        activation_stats(tiny_gpt2, TEXTS, layers=[0, 1], position="all", progress=False),
        activation_stats(tiny_gpt2, TEXTS[:-1], layers=[0, 1], progress=False),
        activation_stats(tiny_gpt2, TEXTS, layers=[0, 1], centre=base, progress=False),
        activation_stats(tiny_gpt2, TEXTS, layers=[0, 1], max_length=3, progress=False),
        activation_stats(tiny_llama, TEXTS, layers=[0, 1], progress=False),
    ]
    assert len(list(cache_dir.glob("*.json"))) == 1 + len(variants)
    for v in variants:
        assert not torch.equal(v.mean, base.mean)
    # Other layers of the same computation join its entry instead of making a new one.
    activation_stats(tiny_gpt2, TEXTS, layers=[2], progress=False)
    assert len(list(cache_dir.glob("*.json"))) == 1 + len(variants)


class _CountingResiduals:
    """Stands in for ``stats.residuals``, recording the layers of every forward pass."""

    def __init__(self) -> None:
        self.passes: list[list[int]] = []

    def __call__(self, model: steerlab.Model, batch: Any, layers: Any, **kw: Any) -> list[torch.Tensor]:
        self.passes.append(list(layers))
        return residuals(model, batch, layers, **kw)


def test_a_cached_superset_of_layers_serves_a_subset(tiny_gpt2: steerlab.Model, cache_dir: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    counter = _CountingResiduals()
    monkeypatch.setattr(stats_mod, "residuals", counter)
    every = activation_stats(tiny_gpt2, TEXTS, progress=False)
    assert counter.passes and every.layers == [0, 1, 2]
    counter.passes.clear()
    one = activation_stats(tiny_gpt2, TEXTS, layers=[1], progress=False)
    assert counter.passes == []  # no forward pass at all
    _assert_same(one, every._subset([1]))
    two = activation_stats(tiny_gpt2, TEXTS, layers=[2, 0], progress=False)
    assert counter.passes == [] and two.layers == [0, 2]
    torch.testing.assert_close(two.mean_unit, every.mean_unit[[0, 2]], atol=0, rtol=0)


def test_new_layers_are_computed_alone_and_join_the_entry(tiny_llama: steerlab.Model, cache_dir: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    counter = _CountingResiduals()
    monkeypatch.setattr(stats_mod, "residuals", counter)
    first = activation_stats(tiny_llama, TEXTS, layers=[1], batch_size=8, progress=False)
    both = activation_stats(tiny_llama, TEXTS, layers=[0, 1, 2], batch_size=8, progress=False)
    assert counter.passes == [[1], [0, 2]]  # layer 1 came from the cache
    fresh = activation_stats(tiny_llama, TEXTS, layers=[0, 1, 2], cache=False, progress=False)
    for key in ("mean", "mean_norm", "avg_pairwise_cos", "mean_unit"):
        torch.testing.assert_close(getattr(both, key), getattr(fresh, key), atol=1e-6, rtol=1e-5, msg=key)
    _assert_same(both._subset([1]), first)
    counter.passes.clear()
    activation_stats(tiny_llama, TEXTS, layers=[0, 2], progress=False)
    assert counter.passes == []
    assert len(list(cache_dir.glob("*.json"))) == 1


def test_a_centred_entry_serves_a_sliced_centre_but_not_another_centre(
        tiny_gpt2: steerlab.Model, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    general = activation_stats(tiny_gpt2, TEXTS[:2], progress=False)
    centred = activation_stats(tiny_gpt2, TEXTS, centre=general, progress=False)
    counter = _CountingResiduals()
    monkeypatch.setattr(stats_mod, "residuals", counter)
    sliced = activation_stats(tiny_gpt2, TEXTS[:2], layers=[1], progress=False)  # from the cache
    again = activation_stats(tiny_gpt2, TEXTS, layers=[1], centre=sliced, progress=False)
    assert counter.passes == []
    _assert_same(again, centred._subset([1]))
    # Same provenance, other values at layer 1 (a tampered centre): layer 1 is recomputed.
    shifted = replace(sliced, mean=sliced.mean + 1.0)
    moved = activation_stats(tiny_gpt2, TEXTS, layers=[1], centre=shifted, progress=False)
    assert counter.passes == [[1]]
    torch.testing.assert_close(moved.mean, centred._subset([1]).mean - 1.0, atol=1e-5, rtol=1e-5)


def test_a_one_token_entry_is_valid_although_its_pairwise_cosine_is_nan(
        tiny_gpt2: steerlab.Model, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    one = activation_stats(tiny_gpt2, ["Rain."], layers=[0, 1], position="first", progress=False)
    assert one.count == 1 and bool(torch.isnan(one.avg_pairwise_cos).all())
    monkeypatch.setattr(stats_mod, "residuals", _no_forward)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "damaged entry" warning either
        again = activation_stats(tiny_gpt2, ["Rain."], layers=[0, 1], position="first", progress=False)
    assert again.count == 1 and bool(torch.isnan(again.avg_pairwise_cos).all())
    torch.testing.assert_close(again.mean, one.mean, atol=0, rtol=0)


def test_a_cache_hit_carries_the_callers_dataset_name(tiny_gpt2: steerlab.Model, cache_dir: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    activation_stats(tiny_gpt2, TextSet.from_texts("first name", TEXTS), layers=[0], progress=False)
    monkeypatch.setattr(stats_mod, "residuals", _no_forward)
    hit = activation_stats(tiny_gpt2, TextSet.from_texts("second name", TEXTS), layers=[0], progress=False)
    assert hit.dataset == "second name"


@pytest.mark.parametrize("edit", ["count", "layers", "position", "dataset_hash"])
def test_edited_cache_metadata_is_damage_not_data(tiny_gpt2: steerlab.Model, cache_dir: Path,
                                                  monkeypatch: pytest.MonkeyPatch, edit: str) -> None:
    """A hand-edited ``count`` would reweight pooled statistics: it must not be trusted."""
    first = activation_stats(tiny_gpt2, TEXTS, layers=[0, 1], progress=False)
    (json_file,) = cache_dir.glob("*.json")
    meta = json.loads(json_file.read_text())
    meta[edit] = {"count": meta["count"] * 10, "layers": [0, 2], "position": "all",
                  "dataset_hash": "0" * 16}[edit]
    json_file.write_text(json.dumps(meta))
    counter = _CountingResiduals()
    monkeypatch.setattr(stats_mod, "residuals", counter)
    with pytest.warns(UserWarning, match="damaged statistics cache entry.*altered"):
        again = activation_stats(tiny_gpt2, TEXTS, layers=[0, 1], progress=False)
    assert counter.passes, "the edited entry was trusted"
    _assert_same(again, first)


def test_unwritable_cache_warns_and_still_returns(tiny_gpt2: steerlab.Model, cache_dir: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(stats_mod, "save_tensors", fail)
    with pytest.warns(UserWarning, match="could not write statistics cache.*disk full"):
        s = activation_stats(tiny_gpt2, TEXTS, layers=[0], progress=False)
    assert s.count > 0
    assert not list(cache_dir.glob("*"))


# --- centring ------------------------------------------------------------------


def test_centring_on_the_same_data_removes_the_mean(tiny: steerlab.Model) -> None:
    plain = activation_stats(tiny, TEXTS, cache=False, progress=False)
    centred = activation_stats(tiny, TEXTS, centre=plain, cache=False, progress=False)
    assert centred.centre is not None and plain.centre is None
    assert float(centred.ratio.max()) < 1e-5
    assert float(plain.ratio.min()) > 0.1  # there was a mean to remove
    # The mean norm of centred tokens is their average distance to the mean.
    spread = torch.stack([(x - x.mean(0)).norm(dim=1).mean() for x in _selected(tiny, TEXTS, "all_but_first")])
    torch.testing.assert_close(centred.mean_norm, spread.float(), atol=1e-5, rtol=1e-4)


def test_centring_with_another_set_subtracts_its_mean(tiny_llama: steerlab.Model) -> None:
    other = activation_stats(tiny_llama, ["Completely different words here."], cache=False, progress=False)
    plain = activation_stats(tiny_llama, TEXTS, cache=False, progress=False)
    centred = activation_stats(tiny_llama, TEXTS, centre=other, cache=False, progress=False)
    torch.testing.assert_close(centred.mean, plain.mean - other.mean, atol=1e-6, rtol=1e-5)


# --- bad input ---------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, error, match", [
    ({"layers": [3]}, ValueError, r"layer 3 is out of range for .*expected 0\.\.2"),
    ({"layers": [-1]}, ValueError, "layer -1 is out of range"),
    ({"layers": []}, ValueError, "no layers given"),
    ({"position": "middle"}, ValueError, "unknown position rule 'middle'"),
    ({"position": "all_prompt"}, ValueError, "unknown position rule 'all_prompt'"),
    ({"batch_size": 0}, ValueError, "batch_size must be an int >= 1, got 0"),
    ({"layers": [2.7]}, ValueError, r"layer 2.7 is not an integer layer index: expected an int in 0\.\.2"),
    ({"layers": [True]}, ValueError, "layer True is not an integer"),
    ({"layers": ["1"]}, ValueError, "layer '1' is not an integer"),
    ({"layers": 1}, ValueError, r"layers must be a list of ints in 0\.\.2 or None, got 1"),
    ({"max_length": -1}, ValueError, "max_length must be an int >= 1 or None, got -1"),
    ({"max_length": 0}, ValueError, "max_length must be an int >= 1"),
])
def test_bad_arguments_are_named(tiny_gpt2: steerlab.Model, kwargs: dict[str, Any],
                                 error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        activation_stats(tiny_gpt2, TEXTS, cache=False, progress=False, **kwargs)


def test_empty_dataset_and_empty_text_are_rejected(tiny_gpt2: steerlab.Model) -> None:
    with pytest.raises(ValueError, match="is empty: nothing to average"):
        activation_stats(tiny_gpt2, [], cache=False, progress=False)
    with pytest.raises(ValueError, match="text 1 of '2 texts' is empty"):
        activation_stats(tiny_gpt2, ["fine", "  "], batch_size=4, cache=False, progress=False)
    with pytest.raises(ValueError, match="is empty"):
        per_text_means(tiny_gpt2, [], progress=False)
    with pytest.raises(ValueError, match="text 1 of '2 texts' is None of type NoneType, not a string"):
        activation_stats(tiny_gpt2, ["fine", None], cache=False, progress=False)  # type: ignore[list-item]
    with pytest.raises(ValueError, match="text 2 of '3 texts' is None"):
        per_text_means(tiny_gpt2, ["fine", "also", None], progress=False)  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"max_length must be an int >= 1 or None, got -1"):
        per_text_means(tiny_gpt2, ["fine"], max_length=-1, progress=False)


def test_numpy_integer_layers_are_accepted(tiny_gpt2: steerlab.Model) -> None:
    import numpy as np

    s = activation_stats(tiny_gpt2, TEXTS, layers=[np.int64(1)], cache=False, progress=False)
    assert s.layers == [1] and type(s.layers[0]) is int


# --- the model's position limit -----------------------------------------------------------


@pytest.fixture(scope="module")
def short_gpt2(_isolated_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> steerlab.Model:
    """A tiny GPT-2 that takes at most 64 positions."""
    from conftest import _embedded_tokenizer, _save_and_load, _special_ids
    from transformers import GPT2Config

    config = GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=len(_embedded_tokenizer()),
                        n_positions=64, **_special_ids())
    return _save_and_load(tmp_path_factory, "short-gpt2", config)


LONG = " ".join(["The river ran past the old mill and under the stone bridge."] * 12)  # ~150 tokens


def test_texts_longer_than_the_position_limit_are_cut_with_a_warning(short_gpt2: steerlab.Model) -> None:
    texts = [LONG, TEXTS[0]]
    assert len(short_gpt2.tokenizer(LONG)["input_ids"]) > 64
    with pytest.warns(UserWarning, match=r"1 of 2 texts of '2 texts' are longer than .*limit of 64 positions"):
        got = activation_stats(short_gpt2, texts, cache=False, progress=False)  # max_length=256 by default
    want = activation_stats(short_gpt2, texts, max_length=64, cache=False, progress=False)
    _assert_same(got, want)
    assert got.count == 63 + len(short_gpt2.tokenizer(TEXTS[0])["input_ids"]) - 1
    with pytest.warns(UserWarning, match="limit of 64 positions"):
        means = per_text_means(short_gpt2, texts, layers=[1], max_length=None, progress=False)
    torch.testing.assert_close(means, per_text_means(short_gpt2, texts, layers=[1], max_length=64,
                                                     progress=False))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # short texts: nothing cut, nothing said
        activation_stats(short_gpt2, TEXTS, cache=False, progress=False)


def test_centre_lacking_layers_is_rejected(tiny_gpt2: steerlab.Model) -> None:
    centre = activation_stats(tiny_gpt2, TEXTS, layers=[0], cache=False, progress=False)
    with pytest.raises(ValueError, match=r"centre statistics lack layers \[1\]"):
        activation_stats(tiny_gpt2, TEXTS, layers=[0, 1], centre=centre, cache=False, progress=False)


# --- pooling and the cosine to the centre ------------------------------------------------


def test_pooled_statistics_equal_those_of_the_union(tiny: steerlab.Model) -> None:
    a, b = TEXTS[:2], TEXTS[2:]
    parts = [activation_stats(tiny, t, cache=False, progress=False) for t in (a, b)]
    pooled = stats_mod.pool_stats(parts, "union")
    union = activation_stats(tiny, a + b, cache=False, progress=False)
    assert pooled.count == union.count and pooled.dataset == "union"
    for key in ("mean", "mean_norm", "norm_of_mean", "avg_cos_to_mean", "avg_pairwise_cos"):
        torch.testing.assert_close(getattr(pooled, key), getattr(union, key), atol=1e-5, rtol=1e-4, msg=key)
    # Pooling is not averaging the parts' statistics: the parts differ from the union.
    assert not torch.allclose(parts[0].avg_pairwise_cos, union.avg_pairwise_cos, atol=1e-3)


def test_pooling_refuses_mismatched_parts(tiny_gpt2: steerlab.Model) -> None:
    one = activation_stats(tiny_gpt2, TEXTS, layers=[0], cache=False, progress=False)
    other = activation_stats(tiny_gpt2, TEXTS, layers=[1], cache=False, progress=False)
    with pytest.raises(ValueError, match="one model and the same layers"):
        stats_mod.pool_stats([one, other], "x")
    with pytest.raises(ValueError, match="nothing to pool"):
        stats_mod.pool_stats([], "x")


def test_cached_statistics_can_still_be_pooled(tiny_gpt2: steerlab.Model, cache_dir: Path) -> None:
    fresh = activation_stats(tiny_gpt2, TEXTS[:2], layers=[1], progress=False)
    cached = activation_stats(tiny_gpt2, TEXTS[:2], layers=[1], progress=False)
    assert cached.mean_unit is not None
    torch.testing.assert_close(cached.mean_unit, fresh.mean_unit)


def test_avg_cos_to_centre_equals_brute_force(tiny_llama: steerlab.Model) -> None:
    other = ["Completely different words here, about engines and rain."]
    centre = activation_stats(tiny_llama, other, cache=False, progress=False)
    centred = activation_stats(tiny_llama, TEXTS, centre=centre, cache=False, progress=False)
    assert centred.avg_cos_to_centre is not None
    want = []
    for layer, x in enumerate(_selected(tiny_llama, TEXTS, "all_but_first")):
        c = centre.mean_at(layer).double()
        y = x - c
        want.append(((y @ c) / (y.norm(dim=1) * c.norm())).mean())
    torch.testing.assert_close(centred.avg_cos_to_centre, torch.stack(want).float(), atol=1e-5, rtol=1e-4)
    assert activation_stats(tiny_llama, TEXTS, cache=False, progress=False).avg_cos_to_centre is None


def test_pooling_first_and_the_rest_gives_all_tokens(tiny_llama: steerlab.Model) -> None:
    texts = ["The river runs past the mill.", "Send it by Friday", "A dog barked twice at night."]
    first = steerlab.activation_stats(tiny_llama, texts, position="first", cache=False, progress=False)
    rest = steerlab.activation_stats(tiny_llama, texts, position="all_but_first", cache=False, progress=False)
    every = steerlab.activation_stats(tiny_llama, texts, position="all", cache=False, progress=False)
    with pytest.raises(ValueError, match="different position rules"):
        pool_stats([first, rest], "x")
    pooled = pool_stats([first, rest], "x", position="all")
    assert pooled.count == every.count and pooled.position == "all"
    for key in ("mean", "mean_norm", "avg_cos_to_mean", "avg_pairwise_cos"):
        torch.testing.assert_close(getattr(pooled, key), getattr(every, key), rtol=1e-4, atol=1e-4)
