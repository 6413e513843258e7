"""Issue 26, the core group: what a hostile user found, each pinned by a test that failed before.

Statistics never cached from a steered run (the scope registers itself on the model, per
thread); edits through ``param.data`` and another tokenizer change the statistics cache key;
one length check with messages that name what is too long; a cache that cannot be written
costs a warning, not the result; mixed-model centres, numpy coefficients, NaN, oversized
``k`` and texts with no selected token give clear answers.
"""

from __future__ import annotations

import copy
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
