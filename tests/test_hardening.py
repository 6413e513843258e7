"""Issue 26, the core group: what a hostile user found, each pinned by a test that failed before.

Statistics never cached from a steered run (the scope registers itself on the model, per
thread); edits through ``param.data`` and another tokenizer change the statistics cache key;
one length check with messages that name what is too long; a cache that cannot be written
costs a warning, not the result; mixed-model centres, numpy coefficients, NaN, oversized
``k`` and texts with no selected token give clear answers.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import threading
import time
import warnings
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import steerlab
import torch
from steerlab.models import cache_root
from steerlab.sets import UNIT, set_stats, typical_norm, unit_norm
from steerlab.stats import activation_stats, per_text_means
from steerlab.steer import generate, steered_logits, steering

TEXTS = ["The cat sat on the mat today.", "A storm rolled over the grey hills.", "She counted seven ships."]


def _fresh_gpt2(seed: int, tokenizer: Any) -> steerlab.Model:
    """A tiny GPT-2 with weights no other test has (so no cache entry of another test serves it)."""
    from transformers import AutoModelForCausalLM, GPT2Config

    torch.manual_seed(seed)
    config = GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=len(tokenizer), n_positions=256,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    return steerlab.wrap(AutoModelForCausalLM.from_config(config), tokenizer, name=f"fresh-{seed}")


@pytest.fixture
def fresh(tiny_gpt2: steerlab.Model, request: pytest.FixtureRequest) -> steerlab.Model:
    seed = 1000 + zlib.crc32(request.node.name.encode()) % 100_000
    return _fresh_gpt2(seed, tiny_gpt2.tokenizer)


def _big(model: steerlab.Model) -> torch.Tensor:
    torch.manual_seed(7)
    return 50 * torch.randn(model.d_model)


# --- the high one: statistics inside a steering scope -------------------------------------


def test_statistics_inside_a_scope_are_not_cached_as_the_models(fresh: steerlab.Model) -> None:
    plain = activation_stats(fresh, TEXTS, [2], cache=False, progress=False)
    with steering(fresh, _big(fresh), layer=1, coefficient=1.0, scale="raw"):
        assert fresh.steered_here()
        with pytest.warns(UserWarning, match="inside a steering scope"):
            steered = activation_stats(fresh, TEXTS, [2], progress=False)
    assert not torch.allclose(steered.mean, plain.mean)  # the scope's numbers, as asked ...
    after = activation_stats(fresh, TEXTS, [2], progress=False)
    torch.testing.assert_close(after.mean, plain.mean)  # ... but never served as the model's


def test_the_coefficient_unit_inside_a_scope_is_the_unsteered_models(fresh: steerlab.Model) -> None:
    with steering(fresh, _big(fresh), layer=0, coefficient=1.0, scale="raw"):
        inside = typical_norm(fresh, 2)  # e.g. a nested sl.steering(..., scale="typical")
        centred_inside = unit_norm(fresh, 2)  # a nested sl.steering(...) with the default unit
    general = UNIT
    from steerlab.data import load_dataset

    data = load_dataset(general.set_name, "train").sample(general.sample_size, seed=general.seed)
    truth = activation_stats(fresh, data, [2], max_length=general.max_length, cache=False, progress=False)
    assert inside == pytest.approx(float(truth.mean_norm[0]), rel=1e-5)
    assert typical_norm(fresh, 2) == pytest.approx(inside, rel=1e-6)
    assert unit_norm(fresh, 2) == pytest.approx(centred_inside, rel=1e-6)


def test_the_scope_registers_itself_nests_and_is_gone_after_an_error(fresh: steerlab.Model) -> None:
    v = _big(fresh)
    assert not fresh.steered_here()
    with steering(fresh, v, layer=1, scale="raw"):
        with steering(fresh, v, layer=0, scale="raw"):
            assert fresh.steered_here()
        assert fresh.steered_here()
        with fresh.unsteered():
            assert not fresh.steered_here()
        assert fresh.steered_here()
    assert not fresh.steered_here()
    with pytest.raises(KeyError), steering(fresh, v, layer=1, scale="raw"):
        raise KeyError("boom")
    assert not fresh.steered_here()


def test_a_scope_steers_only_its_own_thread(fresh: steerlab.Model) -> None:
    batch = steerlab.encode(fresh.tokenizer, TEXTS)
    inputs = batch.as_inputs()
    with torch.inference_mode():
        plain = fresh.hf(**inputs).logits
    other: list[torch.Tensor] = []

    def forward() -> None:
        with torch.inference_mode():
            other.append(fresh.hf(**inputs).logits)

    with steering(fresh, _big(fresh), layer=1, scale="raw"):
        worker = threading.Thread(target=forward)
        worker.start()
        worker.join(60)
        with torch.inference_mode():
            mine = fresh.hf(**inputs).logits
    torch.testing.assert_close(other[0], plain)  # the other thread's forward is the plain model's
    assert not torch.allclose(mine, plain)  # the opening thread's is steered


# --- the fingerprint and the cache key ----------------------------------------------------


def test_an_edit_through_data_is_seen_by_the_statistics_cache(fresh: steerlab.Model) -> None:
    before = activation_stats(fresh, TEXTS, [2], progress=False)
    fresh.hf.transformer.h[1].mlp.c_fc.weight.data[3, 5:9] += 2.0  # bypasses the version counter
    after = activation_stats(fresh, TEXTS, [2], progress=False)
    truth = activation_stats(fresh, TEXTS, [2], cache=False, progress=False)
    torch.testing.assert_close(after.mean, truth.mean)
    assert not torch.allclose(after.mean, before.mean)
    assert after.model_fingerprint != before.model_fingerprint


def test_one_weight_check_per_call_and_edits_between_calls_still_seen(fresh: steerlab.Model,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """``set_stats("mixed")`` reads nine caches under one checksum; an edit before the next call is seen."""
    from steerlab import models, sets

    sets.set_stats(fresh, "mixed", sample_size=2, max_length=16)
    counted = []
    real = models.content_checksum
    monkeypatch.setattr(models, "content_checksum", lambda hf: counted.append(1) or real(hf))
    first = sets.set_stats(fresh, "mixed", sample_size=2, max_length=16)
    assert len(counted) == 1  # was one per genre and one for the pool (nine)
    with fresh.checked_once() as outer, fresh.checked_once() as inner:
        assert outer == inner == fresh.checked_fingerprint()
    assert len(counted) == 2
    fresh.hf.transformer.h[1].mlp.c_fc.weight.data[3, 5:9] += 2.0  # between calls: seen by the next one
    second = sets.set_stats(fresh, "mixed", sample_size=2, max_length=16)
    assert second.model_fingerprint != first.model_fingerprint
    assert not torch.allclose(second.mean, first.mean)


def test_the_checksum_is_cheap(real_model: steerlab.Model) -> None:
    """What makes checking before every cached read affordable: far cheaper than the full hash."""
    from steerlab.models import content_checksum, content_hash

    def best(f: Any) -> float:
        times = []
        for _ in range(3):
            started = time.perf_counter()
            f(real_model.hf)
            times.append(time.perf_counter() - started)
        return min(times)

    checksum, full = best(content_checksum), best(content_hash)
    assert checksum < full / 3, f"content_checksum {checksum:.3f} s, content_hash {full:.3f} s on SmolLM2-135M"


def test_another_tokenizer_gets_other_statistics(fresh: steerlab.Model) -> None:
    from tokenizers import normalizers

    other_tok = copy.deepcopy(fresh.tokenizer)
    other_tok.backend_tokenizer.normalizer = normalizers.Lowercase()  # same vocabulary, other ids here
    other = steerlab.wrap(fresh.hf, other_tok, name="same weights, lowercasing tokenizer")
    assert other.fingerprint == fresh.fingerprint  # the weights' hash
    texts = ["The CAT Sat ON The MAT.", "A STORM Rolled OVER The HILLS."]
    first = activation_stats(fresh, texts, [2], progress=False)
    second = activation_stats(other, texts, [2], progress=False)
    truth = activation_stats(other, texts, [2], cache=False, progress=False)
    torch.testing.assert_close(second.mean, truth.mean)
    assert not torch.allclose(second.mean, first.mean)


# --- one length check -------------------------------------------------------------------


def test_generate_blames_max_new_tokens_when_that_is_too_long(tiny_gpt2: steerlab.Model) -> None:
    with pytest.raises(ValueError, match=r"max_new_tokens=300 is too many.*256 positions.*at most 2\d\d new tokens"):
        generate(tiny_gpt2, "Hi", None, max_new_tokens=300, do_sample=False)
    long_prompt = "word " * 400
    with pytest.raises(ValueError, match=r"prompt 0 has \d+ tokens, more than the 256 positions"):
        generate(tiny_gpt2, long_prompt, None, max_new_tokens=2, do_sample=False)


def test_forward_entry_points_refuse_texts_past_the_position_limit(tiny_gpt2: steerlab.Model) -> None:
    long_text = "word " * 400
    batch = steerlab.encode(tiny_gpt2.tokenizer, ["short", long_text])
    with pytest.raises(ValueError, match=r"row 1 has \d+ tokens, more than the 256 positions"):
        steered_logits(tiny_gpt2, batch)
    with pytest.raises(ValueError, match=r"row 1 has \d+ tokens, more than the 256 positions"):
        steered_logits(tiny_gpt2, batch, [None, torch.ones(64)], layer=1)
    from steerlab.projection import token_projections

    with pytest.raises(ValueError, match=r"text 0 has \d+ tokens, more than the 256 positions"):
        token_projections(tiny_gpt2, long_text, torch.ones(64), 1)
    with pytest.raises(ValueError, match=r"prompt-pair row \d has \d+ tokens, more than the 256 positions"):
        steerlab.prompt_pair(tiny_gpt2, long_text, "short", [1])
    from steerlab.metrics import completion_perplexity

    completion = tiny_gpt2.tokenizer(long_text)["input_ids"]
    with pytest.raises(ValueError, match=r"prompt \+ completion 0 has \d+ tokens, more than the 256 positions"):
        completion_perplexity(tiny_gpt2, ["short"], [completion])


def test_check_fits_names_the_row_and_the_limit(tiny_gpt2: steerlab.Model) -> None:
    from steerlab.tokens import check_fits

    check_fits(tiny_gpt2.hf.config, [10, 256])
    check_fits(tiny_gpt2.hf.config, [10, 200], max_new_tokens=56)
    with pytest.raises(ValueError, match="continuation 1 has 257 tokens"):
        check_fits(tiny_gpt2.hf.config, [10, 257], what="continuation")
    with pytest.raises(ValueError, match=r"max_new_tokens=57 is too many.*at most 56"):
        check_fits(tiny_gpt2.hf.config, [10, 200], what="prompt", max_new_tokens=57)


# --- caches that cannot be written ------------------------------------------------------


def test_an_unwritable_cache_folder_does_not_fail_the_load(tiny_llama: steerlab.Model, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("STEERLAB_CACHE", str(blocker / "cache"))  # mkdir fails, also for root
    with pytest.warns(UserWarning, match="could not write the fingerprint cache"):
        model = steerlab.load_model(tiny_llama.source)
    assert model.fingerprint == tiny_llama.fingerprint


def test_a_full_disk_while_caching_statistics_keeps_the_result(fresh: steerlab.Model,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import steerlab.stats as stats_mod
    from safetensors import SafetensorError

    def full_disk(*args: Any, **kwargs: Any) -> None:
        raise SafetensorError("Error while serializing: IoError(No space left on device)")

    monkeypatch.setattr(stats_mod, "save_tensors", full_disk)
    with pytest.warns(UserWarning, match="could not write statistics cache.*returned, not cached"):
        got = activation_stats(fresh, TEXTS, [1], progress=False)
    truth = activation_stats(fresh, TEXTS, [1], cache=False, progress=False)
    torch.testing.assert_close(got.mean, truth.mean)


def test_orphan_temp_files_in_the_fingerprint_cache_are_cleaned(tiny_llama: steerlab.Model, tmp_path: Path) -> None:
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(tiny_llama.source, folder)  # new files: a fingerprint-cache miss, so a write
    fingerprints = cache_root() / "fingerprints"
    fingerprints.mkdir(parents=True, exist_ok=True)
    orphan = fingerprints / f".{'ab' * 16}.k3j_x9q2"  # an older steerlab's NamedTemporaryFile
    orphan.write_text("{")
    young = fingerprints / f".{'cd' * 16}.k3j_x9q2"
    young.write_text("{")
    old = time.time() - 3600
    os.utime(orphan, (old, old))
    steerlab.load_model(str(folder))
    assert not orphan.exists()
    assert young.exists()  # perhaps a writer still running
    young.unlink()


# --- mixing and bad arguments -------------------------------------------------------------


def test_a_centre_of_another_model_is_refused(fresh: steerlab.Model, tiny_gpt2: steerlab.Model) -> None:
    centre = activation_stats(tiny_gpt2, TEXTS, [1], progress=False)  # same width, other weights
    with pytest.raises(ValueError, match=r"centre statistics .* were computed on .*compute the centre on this model"):
        activation_stats(fresh, TEXTS, [1], centre=centre, progress=False)


def test_set_stats_sees_changed_data_files(fresh: steerlab.Model, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from steerlab.data import data_dir

    data = tmp_path / "data"
    shutil.copytree(data_dir(), data)
    monkeypatch.setenv("STEERLAB_DATA", str(data))
    before = set_stats(fresh, "general", sample_size=2, max_length=8)
    for path in (data / "general").glob("*.jsonl"):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        for row in rows:
            row["text"] = "Completely different words: " + row["text"][::-1]
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    after = set_stats(fresh, "general", sample_size=2, max_length=8)
    assert after.dataset_hash != before.dataset_hash
    assert not torch.allclose(after.mean, before.mean)


def test_per_text_means_names_the_text_that_selects_no_token(fresh: steerlab.Model) -> None:
    word = "Hello"
    assert len(fresh.tokenizer(word)["input_ids"]) == 1
    with pytest.raises(ValueError, match=r"selects no token in text 2 of .*'Hello'"):
        per_text_means(fresh, ["A long enough text.", "Another one here.", word], [1], progress=False)


def test_top_tokens_with_k_past_the_vocabulary_is_a_clear_error(fresh: steerlab.Model) -> None:
    with pytest.raises(ValueError, match=r"k=1000000 is more than the \d+ tokens"):
        steerlab.top_tokens(fresh, torch.ones(fresh.d_model), k=10**6)
    with pytest.raises(ValueError, match="k must be an integer"):
        steerlab.top_tokens(fresh, torch.ones(fresh.d_model), k=2.5)  # type: ignore[arg-type]


def test_numpy_and_torch_numbers_are_accepted(fresh: steerlab.Model) -> None:
    v = torch.ones(fresh.d_model)
    want = generate(fresh, "Hi", v, layer=1, coefficients=[0.0, 0.5], scale="raw", max_new_tokens=3,
                    do_sample=False)
    for coefficients in (np.array([0.0, 0.5], dtype=np.float32), torch.tensor([0.0, 0.5]),
                         [np.float32(0.0), torch.tensor(0.5)]):
        got = generate(fresh, "Hi", v, layer=1, coefficients=coefficients, scale="raw",  # type: ignore[arg-type]
                       max_new_tokens=np.int64(3), do_sample=False)  # type: ignore[arg-type]
        assert [c.token_ids for c in got] == [c.token_ids for c in want]
        assert [c.coefficient for c in got] == [0.0, 0.5]
    one = generate(fresh, "Hi", v, layer=1, coefficients=np.float32(0.5), scale="raw",  # type: ignore[arg-type]
                   max_new_tokens=torch.tensor(3), do_sample=False)  # type: ignore[arg-type]
    assert one[0].token_ids == want[1].token_ids


def test_nan_coefficients_are_refused_clearly(fresh: steerlab.Model) -> None:
    v = torch.ones(fresh.d_model)
    for bad in (float("nan"), [0.5, float("nan")], np.array([np.nan], dtype=np.float32)):
        with pytest.raises(ValueError, match="must be finite numbers"):
            generate(fresh, "Hi", v, layer=1, coefficients=bad, scale="raw", max_new_tokens=2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must be finite"), steering(fresh, v, layer=1, coefficient=float("inf")):
        pass
    with pytest.raises(TypeError, match="coefficients must be"):
        generate(fresh, "Hi", v, layer=1, coefficients="0.5", max_new_tokens=2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_new_tokens must be an integer >= 1"):
        generate(fresh, "Hi", v, layer=1, coefficients=0.5, scale="raw", max_new_tokens=2.5)  # type: ignore[arg-type]


def test_no_warning_for_plain_statistics(fresh: steerlab.Model) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        activation_stats(fresh, TEXTS, [1], progress=False)


# --- issue 38, the core part: a third pass -------------------------------------------------


@pytest.mark.parametrize("damage", ["empty tokenizer.json", "truncated model.safetensors",
                                    "empty model.safetensors", "cut config.json"])
def test_a_damaged_checkpoint_file_is_named_with_what_is_wrong(tiny_llama: steerlab.Model, tmp_path: Path,
                                                               damage: str) -> None:
    import re
    import shutil

    folder = tmp_path / "damaged"
    shutil.copytree(tiny_llama.source, folder)
    weights = folder / "model.safetensors"
    if damage == "empty tokenizer.json":
        (folder / "tokenizer.json").write_text("")
        want = r"tokenizer.json is empty \(0 bytes\)"
    elif damage == "truncated model.safetensors":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
        want = r"model.safetensors is cut short: [\d,]+ bytes, but its header describes [\d,]+"
    elif damage == "empty model.safetensors":
        weights.write_bytes(b"")
        want = r"model.safetensors is empty \(0 bytes\)"
    else:
        (folder / "config.json").write_text('{"model_type": "llama", ')
        want = r"config.json is not valid JSON"
    with pytest.raises(steerlab.ModelLoadError) as caught:
        steerlab.load_model(str(folder))
    message = str(caught.value)
    assert str(folder) in message and re.search(want, message), message


def test_a_missing_folder_shaped_like_a_hub_id_says_both(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``models/my-model`` is a relative folder and a hub id's shape: the error says neither was found."""
    from huggingface_hub import constants

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(steerlab.ModelLoadError) as caught:
        steerlab.load_model("models/my-model")
    message = str(caught.value)
    assert f"no local folder {tmp_path / 'models' / 'my-model'}" in message, message
    assert "'models/my-model' as a hub id: it is not in the local Hugging Face cache" in message, message


def test_build_takes_only_the_layers_a_vector_can_steer_at(tiny_gpt2: steerlab.Model) -> None:
    """Layer L is the residual entering block L: a 2-block model steers at 0 and 1. ``build`` took layer 2
    ("expected 0..2") and made a vector that ``generate`` then refused ("expected 0..1")."""
    n = tiny_gpt2.n_layers
    with pytest.raises(ValueError, match=rf"layer {n} is out of range .*expected 0\.\.{n - 1} \(a steering layer "
                                         rf"L is the residual stream entering block L.*can be measured"):
        steerlab.build("mean_centred", tiny_gpt2, [n], target=TEXTS, sample_size=4, max_length=16)
    v = steerlab.build("mean_centred", tiny_gpt2, [n - 1], target=TEXTS, sample_size=4, max_length=16)
    assert len(generate(tiny_gpt2, "Hi", v, coefficients=[0.5], max_new_tokens=2, do_sample=False)) == 1
    stats = activation_stats(tiny_gpt2, TEXTS, None, cache=False, progress=False)  # statistics read all n + 1
    assert stats.layers == list(range(n + 1))


def test_a_vector_used_at_a_layer_it_lacks_is_a_clear_error() -> None:
    from steerlab.vectors import LayerNotInVectorError, SteeringVector

    v = SteeringVector({3: torch.ones(8), 5: torch.ones(8)}, "m", "f", 8, "mean_centred", {}, "all")
    with pytest.raises(ValueError) as caught:
        v.at(4)
    assert isinstance(caught.value, LayerNotInVectorError) and isinstance(caught.value, KeyError)  # as before
    assert str(caught.value).startswith("this mean_centred vector has no layer 4; it has [3, 5]")  # no quotes


def test_save_writes_what_its_suffix_says_or_refuses(tmp_path: Path) -> None:
    from steerlab.vectors import SteeringVector

    v = SteeringVector({3: torch.ones(8)}, "m", "f", 8, "mean_centred", {}, "all")
    for bad in ("x.pt", "x.bin", "x.npy"):
        with pytest.raises(ValueError, match=rf"steerlab writes no '\.{bad[2:]}' files; expected .*\.safetensors "
                                             r"or \.json .*\.gguf"):
            v.save(tmp_path / bad)
    assert not any(tmp_path.iterdir())  # nothing written, e.g. no x.pt.safetensors
    pair = [tmp_path / "x.safetensors", tmp_path / "x.json"]
    assert v.save(tmp_path / "x") == v.save(tmp_path / "x.safetensors") == v.save(tmp_path / "x.json") == pair
    assert v.save(tmp_path / "vec_c0.5") == [tmp_path / "vec_c0.5.safetensors", tmp_path / "vec_c0.5.json"]
    assert v.save(tmp_path / "v.pt.safetensors") == [tmp_path / "v.pt.safetensors", tmp_path / "v.pt.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["x.safetensors", "x.json", "vec_c0.5.safetensors", "vec_c0.5.json", "v.pt.safetensors", "v.pt.json"])


HOSTILE_PARAMS: list[tuple[str, str, bytes | str, str]] = [
    # (case, notebook, params file content, what the one-line message must say)
    ("unknown key", "01_bias", "max_lenght: 64\n", r"unknown parameter 'max_lenght' \(did you mean 'max_length'\?\)"),
    ("wrong type", "01_bias", "sample_size: ten\n",
     r"parameter sample_size='ten' is not allowed: expected None or an integer from 2 to 10000"),
    ("huge max_new_tokens", "03_steer", "max_new_tokens: 1000000000000\n",
     r"parameter max_new_tokens=1000000000000 is not allowed: expected an integer from 1 to 512"),
    ("huge n_prompts", "04_compare_methods", "n_prompts: 1.0e+300\n",
     r"parameter n_prompts=1e\+300 is not allowed: expected None or an integer from 2 to 10000"),
    ("n_prompts as YAML text", "04_compare_methods", "n_prompts: 1e300\n",
     r"parameter n_prompts='1e300' is not allowed: .*text, not a number"),
    ("huge samples", "03_steer", "samples: 1000000000\n", r"parameter samples=1000000000 .*from 1 to 256"),
    ("huge coefficient", "03_steer", "coefficient: 1.0e+300\n", r"parameter coefficient=1e\+300 .*\[-1000, 1000\]"),
    ("huge seed", "01_bias", f"seed: {10**30}\n", r"parameter seed=1000000000000000000000000000000 .*4294967295"),
    ("huge layer", "01_bias", "layers: [1000000000000]\n", r"each an integer from 0 to 1023"),
    ("a list", "01_bias", "- max_length\n- 64\n", r"must hold a mapping of parameter names to values, got list \(write one"),
    ("a scalar", "01_bias", "max_length\n", r"must hold a mapping .*, got str"),
    ("empty", "01_bias", "", r"is empty: expected a mapping of parameter names to values"),
    ("binary junk", "01_bias", bytes(range(128, 256)) * 4, r"is not text \(byte 0x80 at offset 0 is not UTF-8\)"),
    ("NUL bytes", "01_bias", b"max_length: 64\x00\x00\n", r"is not valid YAML"),
    ("a number as a name", "01_bias", "1: 2\n", r"parameter names are words, got 1 \(int\)"),
    ("nested thousands deep", "01_bias", "layers: " + "[" * 5000 + "]" * 5000 + "\n",
     r"nests lists or mappings too deeply"),
    ("an alias bomb", "05_your_concept",
     ("texts: [&a [x, x, x, x, x, x, x, x, x], &b [*a, *a, *a, *a, *a, *a, *a, *a, *a], "
      "&c [*b, *b, *b, *b, *b, *b, *b, *b, *b], &d [*c, *c, *c, *c, *c, *c, *c, *c, *c], "
      "&e [*d, *d, *d, *d, *d, *d, *d, *d, *d], [*e, *e, *e, *e, *e, *e, *e, *e, *e]]\n"),
     r"parameter texts=\[\[\.\.\.\], .*\] is not allowed: expected a list of at least 2 item\(s\), each a non-empty"),
    ("another notebook's file", "01_bias", "preset: quick\ntargets: [fantasy]\ncells_dir: cells\n",
     r"unknown parameters 'preset', 'targets', 'cells_dir'; the notebooks' parameters are 01_bias.ipynb: model_name"),
]


def _write_params(path: Path, content: bytes | str) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def _check_refusal(case: str, code: int, stderr: str, params: Path, message: str, runs: Path) -> None:
    import re

    lines = stderr.strip().splitlines()
    assert code == 2, (case, code, stderr[-2000:])
    assert len(lines) == 1 and len(lines[0]) < 2000, (case, stderr[-3000:])
    assert str(params) in lines[0] and lines[0].startswith("run-notebooks: "), (case, lines[0])
    assert re.search(message, lines[0]), (case, lines[0])
    assert "nothing was run" in lines[0]
    assert not runs.exists(), f"{case}: a run folder was created: {list(runs.iterdir())}"


@pytest.mark.parametrize(("case", "notebook", "content", "message"), HOSTILE_PARAMS,
                         ids=[case for case, *_ in HOSTILE_PARAMS])
def test_a_hostile_params_file_fails_in_one_line_before_a_run_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                     case: str, notebook: str, content: bytes | str,
                                                                     message: str) -> None:
    """``run-notebooks --only NB --params FILE`` (what ``make notebook PARAMS=...`` runs): every one of these
    fails with exit status 2 and one line naming the file or the parameter and what was expected, before a
    run folder is created. In process, through the CLI's ``main``; the test below runs it as a subprocess."""
    from steerlab.lab.cli import main

    params = _write_params(tmp_path / "params.yaml", content)
    runs = tmp_path / "runs"
    notebook_path = Path(__file__).resolve().parents[1] / "notebooks" / f"{notebook}.ipynb"
    code = main(["run-notebooks", "--only", str(notebook_path), "--params", str(params), "--runs-root", str(runs)])
    _check_refusal(case, code, capsys.readouterr().err, params, message, runs)


@pytest.mark.parametrize("case", ["huge max_new_tokens", "a number as a name", "an alias bomb"])
def test_the_cli_refuses_a_hostile_params_file_as_a_subprocess(tmp_path: Path, case: str) -> None:
    """The same through ``python -m steerlab.lab.cli`` in a fresh process, as ``make notebook`` runs it: a
    traceback (exit status 1) or a run folder would fail here."""
    import subprocess
    import sys

    _, notebook, content, message = next(row for row in HOSTILE_PARAMS if row[0] == case)
    params = _write_params(tmp_path / "params.yaml", content)
    runs = tmp_path / "runs"
    notebook_path = Path(__file__).resolve().parents[1] / "notebooks" / f"{notebook}.ipynb"
    done = subprocess.run([sys.executable, "-m", "steerlab.lab.cli", "run-notebooks", "--only", str(notebook_path),
                           "--params", str(params), "--runs-root", str(runs)],
                          capture_output=True, text=True, timeout=300, check=False)
    _check_refusal(case, done.returncode, done.stderr, params, message, runs)


def _cell_parts(target: str, layer: int, position: str, value: float) -> dict[str, list[dict[str, Any]]]:
    row = {"target": target, "method": "mean_centred", "layer": layer, "position": position, "coefficient": 0.25,
           "concept": value}
    return {"rows": [row], "completions": [dict(row, text="Once upon a time")],
            "steerability": [dict(row, slope=value)], "bias": [{"target": target, "layer": layer, "cosine": 0.9}],
            "matched": [dict(row, damage=1.25)]}


def test_a_tampered_cell_file_is_refused_never_mixed_in(tmp_path: Path) -> None:
    """Each way a saved cell of notebook 04 can be tampered with: refused with a warning naming the file,
    so the cell is measured again. Before, a file whose JSON was valid and whose ``key`` and ``cell`` fields
    matched its name was read back whatever rows it held."""
    from steerlab.study.cells import CellStore

    ours, other = CellStore(tmp_path, "a" * 16), CellStore(tmp_path / "other", "b" * 16)  # two keys: config/model
    cell, sibling = ("fantasy", 1, "all"), ("fantasy", 1, "all_prompt")
    ours.save(cell, _cell_parts(*cell, 0.5), 3.0)
    assert ours.load(cell) == _cell_parts(*cell, 0.5)
    path = ours.path(cell)
    good = json.loads(path.read_text())

    def tampered(record: dict[str, Any] | str, why: str) -> None:
        path.write_text(record if isinstance(record, str) else json.dumps(record))
        with pytest.warns(UserWarning, match=rf"saved cell {path} not read back: {why}"):
            assert CellStore(tmp_path, ours.key).load(cell) is None

    tampered(path.read_text()[: len(path.read_text()) // 2], "it is not whole JSON")  # truncated
    other.save(cell, _cell_parts(*cell, 9.0), 3.0)  # another configuration's or model's file, copied over ours
    tampered(other.path(cell).read_text(), f"it was saved under key '{other.key}'")
    tampered(dict(json.loads(other.path(cell).read_text()), key=ours.key), "its content does not match the digest")
    tampered(dict(good, parts=_cell_parts(*cell, 0.75)), "its content does not match the digest")  # edited values
    ours.save(sibling, _cell_parts(*sibling, 0.1), 3.0)  # another cell's file under our name
    tampered(ours.path(sibling).read_text(), r"it holds cell \['fantasy', 1, 'all_prompt'\]")
    from steerlab.study.cells import _digest

    pasted = _cell_parts(*sibling, 0.1)  # rows of another cell, with a digest made to match
    tampered(dict(good, parts=pasted, digest=_digest(ours.key, cell, pasted)),
             "row 0 of 'rows' has position 'all_prompt', not this cell's 'all'")
    path.write_text(json.dumps(good))
    assert CellStore(tmp_path, ours.key).load(cell) == _cell_parts(*cell, 0.5)  # the untouched file is read


def test_a_tampered_cell_is_measured_again_on_the_tiny_model(tiny_llama: steerlab.Model, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """End to end on the ``quick`` preset: a cell file with rows pasted in from elsewhere is measured again,
    and the run's rows are the measured ones, not the file's."""
    from steerlab.study import compare as compare_mod
    from steerlab.study.compare import CompareConfig, run_compare

    cfg = CompareConfig.from_preset("quick", constructions=("mean_centred",), n_prompts=2, positions=("all",),
                                    score_dtype="float32", baselines=())
    first = run_compare(tiny_llama, cfg, progress=False, cells_dir=tmp_path)
    (saved,) = sorted(tmp_path.glob("*.json"))
    record = json.loads(saved.read_text())
    for row in record["parts"]["rows"]:
        row["concept"] = 123.0  # a forged number the report would otherwise show
    saved.write_text(json.dumps(record))
    measured: list[str] = []
    measure = compare_mod._measure_cell
    monkeypatch.setattr(compare_mod, "_measure_cell",
                        lambda *args, **kwargs: measured.append(args[7]) or measure(*args, **kwargs))
    with pytest.warns(UserWarning, match="not read back: its content does not match the digest"):
        again = run_compare(tiny_llama, cfg, progress=False, cells_dir=tmp_path)
    assert measured == ["all"] and again.cells is not None and again.cells["reused"] == 0
    assert all(row["concept"] != 123.0 for row in again.rows)
    assert [r["concept"] for r in again.rows] == pytest.approx([r["concept"] for r in first.rows])
    assert json.loads(saved.read_text())["parts"]["rows"][0]["concept"] != 123.0  # the file is replaced


ODD_TEXTS = {
    "emoji": "I love 🙂🙃 and 👨\u200d👩\u200d👧\u200d👦 so much 🎉",
    "right-to-left": "שלום עולם، مرحبا بالعالم",
    "combining marks": "e\u0301\u0301\u0301 Z\u0337\u0322\u031ba\u0334l\u0338g\u0335o\u0336",
    "NUL characters": "a\x00b\x00\x00 c",
    "only NULs": "\x00\x00",
    "controls and overrides": "\x1b[31mred\x1b[0m \u202eevil\u202c \ufeffbom \u200b",
}


@pytest.mark.parametrize("kind", list(ODD_TEXTS))
def test_texts_the_tokenizer_splits_oddly_go_through_every_entry_point(fresh: steerlab.Model, kind: str) -> None:
    """On the tiny model (with the real SmolLM2 tokenizer): each works end to end."""
    from steerlab.tokens import encode

    text = ODD_TEXTS[kind]
    batch = encode(fresh.tokenizer, [text, "A plain sentence."])
    assert int(batch.lengths[0]) >= 1
    v = steerlab.build("mean_centred", fresh, [1], target=[text, "Another plain one here."], sample_size=4,
                       max_length=32)
    assert torch.isfinite(v.at(1)).all()
    (c,) = generate(fresh, text, v, coefficients=[0.5], max_new_tokens=3, do_sample=False)
    assert len(c.token_ids) == 3 and isinstance(c.text, str)
    stats = activation_stats(fresh, [text], [1], position="all", cache=False, progress=False)
    assert stats.count == int(batch.lengths[0]) and torch.isfinite(stats.mean).all()
    assert len(steerlab.top_tokens(fresh, v.at(1), k=5)) == 5


def test_a_lone_surrogate_is_a_clear_error_not_a_tokenizer_type_error(fresh: steerlab.Model) -> None:
    """A lone surrogate (a file read with surrogateescape, JSON's "\\ud83d" alone) is not text; the tokenizer
    raised ``TypeError: TextEncodeInput must be Union[...]``."""
    from steerlab.tokens import encode

    bad = "fine, then \ud83d broken"
    for call in (lambda: encode(fresh.tokenizer, ["ok", bad]),
                 lambda: generate(fresh, bad, None, max_new_tokens=2, do_sample=False),
                 lambda: activation_stats(fresh, ["ok", bad], [1], cache=False, progress=False),
                 lambda: steerlab.build("mean_centred", fresh, [1], target=["ok", bad], sample_size=4)):
        with pytest.raises(ValueError, match=r"text \d( of .*)? holds '\\ud83d' at character 11, half of a "
                                             r"surrogate pair"):
            call()


def test_a_megabyte_of_one_word_is_cut_or_refused_quickly(fresh: steerlab.Model) -> None:
    """1 MB of one word (250,000 tokens): statistics cut it to ``max_length``, a prompt is refused as too long
    for the model's positions; seconds, not minutes, and no memory blow-up."""
    import resource

    from steerlab.tokens import encode

    word = "word" * 250_000
    started, peak = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    batch = encode(fresh.tokenizer, [word, "short"], max_length=64)
    assert batch.input_ids.shape == (2, 64) and batch.truncated.tolist() == [True, False]
    stats = activation_stats(fresh, [word], [1], max_length=64, cache=False, progress=False)
    assert stats.count == 63  # all_but_first of the 64 kept tokens
    with pytest.raises(ValueError, match=r"prompt 0 has 250000 tokens, more than the 256 positions"):
        generate(fresh, word, None, max_new_tokens=2, do_sample=False)
    elapsed = time.perf_counter() - started
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak) / 1024
    assert elapsed < 120, f"{elapsed:.0f} s"  # a hang guard, not a timing: about 10 s on a loaded 2-core machine
    assert grown_mib < 1024, f"peak memory grew by {grown_mib:.0f} MiB"


def test_the_token_views_escape_characters_a_reader_cannot_see() -> None:
    """A lens or projection view of tokens holding NUL, ESC (a terminal command) or a right-to-left override
    showed them raw: an invisible token, or the rest of the line reversed."""
    from steerlab.lab.tokens_view import readable_token, tokens_html

    assert readable_token("a\x00") == "a\\x00"
    assert readable_token("\x1b[31m") == "\\x1b[31m"
    assert readable_token("\u202eevil") == "\\u202eevil"
    assert readable_token(" dragon") == "␣dragon" and readable_token("🙂") == "🙂" and readable_token("שלום") == "שלום"
    page = tokens_html([("\x00", 1.0), ("\u202eevil", 2.0), ("x\ny", -1.0), ("e\u0301", 0.5)])
    assert not any(c in page for c in "\x00\x1b\u202e")
    assert "\\x00" in page and "\\u202eevil" in page and "x\\n<br>y" in page and "e\u0301" in page


@functools.cache
def _soak() -> Any:
    """``bench/soak_bench.py`` (scripts, not a package), for its memory and hook probes: one copy of each."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("soak_bench", Path(__file__).resolve().parents[1] / "bench"
                                                  / "soak_bench.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rss_bytes() -> int:
    return int(_soak().rss_bytes())


def _hooks(model: steerlab.Model) -> dict[str, int]:
    return dict(_soak().hook_counts(model))


def test_a_thousand_steering_scopes_leave_memory_flat_and_no_hook(fresh: steerlab.Model) -> None:
    """The soak: 1,000 ``with sl.steering(...)`` blocks, each around a small forward pass (every 10th in the
    default unit, which reads the cached statistics; every 50th ends in an exception): resident memory flat
    after a warm-up (<= 10 % growth; Python objects too), and no hook left on the model or any block.
    ``bench/soak_bench.py`` measures the same on SmolLM2 and prints the numbers."""
    import gc

    inputs = steerlab.encode(fresh.tokenizer, ["The cat sat on the mat."]).as_inputs()
    v = torch.randn(fresh.d_model)
    before_hooks = _hooks(fresh)

    class Planned(Exception):
        pass

    def block(i: int) -> None:
        scale = "unit" if i % 10 == 0 else "raw"
        try:
            with steering(fresh, v, layer=1, coefficient=0.5, scale=scale), torch.inference_mode():
                fresh.hf(**inputs)
                if i % 50 == 49:
                    raise Planned
        except Planned:
            pass

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 64-wide model: threads only add contention on a shared machine
    try:
        for i in range(100):  # warm-up: the unit's statistics, allocator pools, lazy imports
            block(i)
        gc.collect()
        rss, objects = _rss_bytes(), len(gc.get_objects())
        for i in range(1000):
            block(i)
        gc.collect()
        grown, new_objects = _rss_bytes() - rss, len(gc.get_objects()) - objects
    finally:
        torch.set_num_threads(threads)
    assert _hooks(fresh) == before_hooks, "a steering scope left a hook behind"
    assert not fresh.steered_here()
    if rss:
        assert grown <= 0.10 * rss, f"resident memory grew {grown / 2**20:.1f} MiB ({100 * grown / rss:.1f} %)"
    assert new_objects < 1000, f"{new_objects} more Python objects after 1,000 blocks"


def test_a_run_prints_no_unencrypted_kernel_warning(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """``make run`` printed ipykernel's "Kernel is running over TCP without encryption" once per notebook
    (the kernel's stderr is this process's): the runner's kernels now talk over an encrypted channel."""
    import nbformat
    from steerlab.lab.runner import run_notebooks

    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "language": "python",
                                                           "display_name": "Python 3"},
                                            "language_info": {"name": "python"}})
    nb.cells = [nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("print('kernel says', x + 1)")]
    folder = tmp_path / "notebooks"
    folder.mkdir()
    nbformat.write(nb, folder / "tiny.ipynb")
    run_dir, results = run_notebooks([folder / "tiny.ipynb"], runs_root=tmp_path / "runs", progress=False)
    captured = capfd.readouterr()
    assert [r.ok for r in results] == [True], results
    executed = nbformat.read(run_dir / "tiny.ipynb", as_version=4)
    assert "kernel says 2" in executed.cells[-1].outputs[0]["text"]
    assert "without encryption" not in captured.err + captured.out, captured.err[-2000:]
