"""Loading models (steerlab.models, steerlab.embedded): local folders, GGUF files, hub ids,
clear errors, a fingerprint that follows every weight, a cache that is only rebuilt
when proven damaged, dtypes, and the two real embedded models."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import steerlab
import steerlab.embedded as embedded_mod
import steerlab.load as load_mod
import steerlab.models as models_mod
import torch
from steerlab.embedded import EmbeddedModel
from steerlab.load import load_model
from steerlab.models import ModelLoadError, content_hash, provision_embedded


def test_tiny_models_load_from_local_folders(tiny_gpt2: steerlab.Model, tiny_llama: steerlab.Model) -> None:
    for model, model_type in ((tiny_gpt2, "gpt2"), (tiny_llama, "llama")):
        assert model.hf.config.model_type == model_type
        assert (model.n_layers, model.d_model) == (2, 64)
        assert Path(model.source).is_dir() and model.name == model.source
        assert model.tokenizer.pad_token is not None
        assert not model.hf.training
        assert not any(p.requires_grad for p in model.hf.parameters())
        assert model.device == torch.device("cpu") and model.dtype == torch.float32
        assert re.fullmatch(r"[0-9a-f]{16}", model.fingerprint)
        assert "n_layers=2, d_model=64" in repr(model)
        assert not hasattr(model, "extra")


# --- the fingerprint ------------------------------------------------------------------


def _fresh_copy(model: steerlab.Model, folder: Path) -> steerlab.Model:
    shutil.copytree(model.source, folder)
    return load_model(str(folder))


def test_fingerprint_hashes_content_not_the_path(tiny_gpt2: steerlab.Model, tiny_llama: steerlab.Model,
                                                 tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same weights by relative path, absolute path, trailing slash and ``~`` path (and
    from another folder) get one fingerprint; other weights get another."""
    home = tmp_path / "home"
    shutil.copytree(tiny_llama.source, home / "ckpt")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(home)
    spellings = ["ckpt", "./ckpt/", str(home / "ckpt"), str(home / "ckpt") + "/", "~/ckpt"]
    fingerprints = {s: load_model(s).fingerprint for s in spellings}
    assert set(fingerprints.values()) == {tiny_llama.fingerprint}, fingerprints
    assert tiny_gpt2.fingerprint != tiny_llama.fingerprint
    assert content_hash(tiny_llama.hf) == tiny_llama.fingerprint


def test_in_place_edits_anywhere_change_the_fingerprint(tiny_llama: steerlab.Model, tmp_path: Path) -> None:
    model = _fresh_copy(tiny_llama, tmp_path / "m")
    original = model.fingerprint
    block = model.hf.model.layers[1]  # not block 0, not index 0: a strided sample would miss these
    down = block.mlp.down_proj.weight
    kept = down.detach().clone()
    with torch.no_grad():
        down[3, 5:9] *= 1.01
    edited = model.fingerprint
    assert edited != original
    with torch.no_grad():
        down.copy_(kept)
    assert model.fingerprint == original  # the content, not a count of edits
    head_dim = model.hf.config.hidden_size // model.hf.config.num_attention_heads
    with torch.inference_mode():  # in-place edits under inference_mode bump the version too
        block.self_attn.q_proj.weight[2 * head_dim:3 * head_dim] = 0.0  # silence head 2
    zeroed = model.fingerprint
    assert zeroed not in (original, edited)
    # A replaced tensor (new storage) is seen as well.
    block.input_layernorm.weight = torch.nn.Parameter(block.input_layernorm.weight.detach() * 2, requires_grad=False)
    assert model.fingerprint not in (original, edited, zeroed)


def test_edits_through_data_need_a_refresh(tiny_llama: steerlab.Model, tmp_path: Path) -> None:
    """The documented limit: ``param.data`` does not share torch's version counter."""
    model = _fresh_copy(tiny_llama, tmp_path / "m")
    before = model.fingerprint
    model.hf.model.layers[1].mlp.up_proj.weight.data[7, 11] += 1.0
    assert model.fingerprint == before
    assert model.refresh_fingerprint() != before
    # The edited hash never reaches the on-disk cache of the unchanged files.
    assert load_model(model.source).fingerprint == before


def test_reading_the_fingerprint_is_cheap_and_survives_forward_passes(tiny_llama: steerlab.Model) -> None:
    from steerlab.trace import residuals

    first = tiny_llama.fingerprint
    residuals(tiny_llama, steerlab.encode(tiny_llama.tokenizer, ["Hello there"]), [1])
    steerlab.generate(tiny_llama, "Hello", None, do_sample=False, max_new_tokens=2)
    signature = tiny_llama._fp.signature
    assert tiny_llama.fingerprint == first
    assert tiny_llama._fp.signature is signature  # no version bump, so no re-hash


def test_after_an_edit_the_stats_cache_misses_and_old_vectors_are_refused(tiny_llama: steerlab.Model,
                                                                         tmp_path: Path) -> None:
    from steerlab.stats import activation_stats

    model = _fresh_copy(tiny_llama, tmp_path / "m")
    texts = ["The cat sat on the mat.", "A storm rolled over the hills."]
    before = activation_stats(model, texts, [2], cache=True, progress=False)
    vector = steerlab.SteeringVector({1: torch.ones(64)}, model.name, model.fingerprint, 64, "raw", {}, "all")
    vector.check_for(model)
    with torch.no_grad():
        model.hf.model.layers[1].mlp.down_proj.weight[3, 5:9] *= 1.5
    after = activation_stats(model, texts, [2], cache=True, progress=False)
    fresh = activation_stats(model, texts, [2], cache=False, progress=False)
    torch.testing.assert_close(after.mean, fresh.mean)  # the edited model's numbers ...
    assert not torch.allclose(after.mean, before.mean)  # ... not the cached ones of the old weights
    assert after.model_fingerprint == model.fingerprint != before.model_fingerprint
    with pytest.raises(steerlab.VectorMismatchError, match="fingerprint"):
        vector.check_for(model)  # intended: a vector is tied to the weights it was made on


def test_an_edited_checkpoint_saved_in_place_gets_a_new_fingerprint_in_a_new_process(
        tiny_llama: steerlab.Model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "ckpt"
    model = _fresh_copy(tiny_llama, folder)
    original = model.fingerprint
    # Loading the unchanged folder again reads the hash cache instead of hashing.
    real_hash = load_mod.content_hash

    def no_hash(hf: object) -> str:
        raise AssertionError("hashed the weights although the checkpoint files did not change")

    monkeypatch.setattr(load_mod, "content_hash", no_hash)
    assert load_model(str(folder)).fingerprint == original
    monkeypatch.setattr(load_mod, "content_hash", real_hash)
    with torch.no_grad():
        model.hf.model.layers[1].self_attn.o_proj.weight[5, 9:12] += 0.25
    edited = model.fingerprint
    assert edited != original
    model.hf.save_pretrained(folder)  # same folder, same file names, same sizes
    assert load_model(str(folder)).fingerprint == edited
    code = f"import steerlab\nprint('fp', steerlab.load_model({str(folder)!r}).fingerprint)\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"fp {edited}" in out.stdout.splitlines()


# --- paths, folders, hub ids --------------------------------------------------------


def test_a_hub_id_loads_by_name_from_a_hub_cache(tiny_gpt2: steerlab.Model, tmp_path: Path) -> None:
    """The route users with a hub take (``load_model("gpt2")``), without a network: a
    checkpoint saved into the Hugging Face cache layout under a hub id, loaded by that
    id in a fresh process with the hub offline; an id not in the cache is a clear error."""
    snapshot = tmp_path / "hub" / "models--steerlab-test--tiny-gpt2" / "snapshots" / ("0" * 40)
    shutil.copytree(tiny_gpt2.source, snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    code = (
        "import steerlab\n"
        "m = steerlab.load_model('steerlab-test/tiny-gpt2', progress=False)\n"
        "print('loaded', m.name, m.hf.config.model_type, m.n_layers, m.d_model, m.fingerprint)\n"
        "try:\n"
        "    steerlab.load_model('steerlab-test/not-cached', progress=False)\n"
        "except steerlab.ModelLoadError as err:\n"
        "    print('error', err)\n"
    )
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1",
           "STEERLAB_CACHE": str(tmp_path / "steerlab-cache")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    loaded = next(line for line in out.stdout.splitlines() if line.startswith("loaded")).split()
    assert loaded[1:5] == ["steerlab-test/tiny-gpt2", "gpt2", "2", "64"]
    assert loaded[5] == tiny_gpt2.fingerprint  # the same weights under another name
    error = out.stdout[out.stdout.index("\nerror "):]  # the message spans lines
    assert "'steerlab-test/not-cached' as a hub id" in error and "smollm2-135m-instruct" in error
    assert "not in the local Hugging Face cache" in error and "HF_HUB_OFFLINE" in error


def test_an_uncached_hub_id_fails_fast_when_the_hub_is_unreachable(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    started = time.perf_counter()
    with pytest.raises(ModelLoadError, match=r"'steerlab-test/absent' as a hub id: it is not in the local "
                                             r"Hugging Face cache .* the hub \(http://127.0.0.1:9\) is unreachable"):
        load_model("steerlab-test/absent")
    assert time.perf_counter() - started < 10


@pytest.mark.parametrize("spelling", ["./no-such-model", "~/no-such-steerlab-model", "nested/no-such/model", "ABS"])
def test_a_missing_local_path_is_no_such_folder(tmp_path: Path, spelling: str) -> None:
    name = str(tmp_path / "no-such-model") if spelling == "ABS" else spelling
    with pytest.raises(ModelLoadError, match=r"no such folder: .*no-such.*model"):
        load_model(name)


def test_a_folder_without_tokenizer_files_is_a_clear_error(tiny_llama: steerlab.Model, tmp_path: Path) -> None:
    folder = tmp_path / "weights-only"
    tiny_llama.hf.save_pretrained(folder)
    with pytest.raises(ModelLoadError, match=rf"no tokenizer files in {re.escape(str(folder))}: expected one of "
                                             r"tokenizer.json"):
        load_model(str(folder))
    (folder / "config.json").unlink()
    with pytest.raises(ModelLoadError, match="no config.json in"):
        load_model(str(folder))


def test_truncated_safetensors_checkpoint_is_a_load_error(tiny_llama: steerlab.Model, tmp_path: Path) -> None:
    folder = tmp_path / "broken"
    shutil.copytree(tiny_llama.source, folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ModelLoadError, match=rf"could not load '{re.escape(str(folder))}' as a local folder"):
        load_model(str(folder))


def test_bogus_gguf_files_are_load_errors(tmp_path: Path) -> None:
    not_gguf = tmp_path / "x.gguf"
    not_gguf.write_bytes(b"this is not a model at all")
    with pytest.raises(ModelLoadError, match=r"is not a GGUF file \(magic bytes b'this'\)"):
        load_model(str(not_gguf))
    # Right magic, then garbage: the reader fails and the error names the file.
    garbage = tmp_path / "y.gguf"
    garbage.write_bytes(b"GGUF" + bytes(range(256)) * 4)
    with pytest.raises(ModelLoadError, match=rf"could not read GGUF file {re.escape(str(garbage))}"):
        load_model(str(garbage))
    with pytest.raises(ModelLoadError, match="GGUF file not found"):
        load_model(str(tmp_path / "missing.gguf"))


def test_truncated_real_gguf_is_a_load_error(tmp_path: Path) -> None:
    head = models_mod.embedded_gguf_path().open("rb").read(200_000)
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(head)
    with pytest.raises(ModelLoadError, match="could not read GGUF file"):
        load_model(str(truncated))


def test_unknown_architecture_is_refused(tiny_gpt2: steerlab.Model, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, BertConfig

    config = BertConfig(vocab_size=len(tiny_gpt2.tokenizer), hidden_size=32, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=64, is_decoder=True)
    folder = tmp_path / "bert"
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tiny_gpt2.tokenizer.save_pretrained(folder)
    with pytest.raises(steerlab.UnsupportedArchitectureError, match=r"'bert'; steerlab supports: .*llama"):
        load_model(str(folder))


# --- dtype and device ---------------------------------------------------------------


def test_bfloat16_loads_and_other_dtypes_are_refused(tiny_llama: steerlab.Model) -> None:
    for dtype in (torch.bfloat16, "bfloat16"):
        half = load_model(tiny_llama.source, dtype=dtype)
        assert half.dtype == torch.bfloat16 and all(p.dtype == torch.bfloat16 for p in half.hf.parameters())
        assert half.fingerprint != tiny_llama.fingerprint  # the dtype is part of the fingerprint
    assert load_model(tiny_llama.source, dtype="float32").fingerprint == tiny_llama.fingerprint
    for bad in (torch.float16, "fp32", torch.int8):
        with pytest.raises(ModelLoadError, match=r"unsupported dtype .*expected torch.float32 .*torch.bfloat16"):
            load_model(tiny_llama.source, dtype=bad)  # type: ignore[arg-type]


def test_cast_copies_into_the_other_dtype_and_leaves_the_model_alone(tiny_llama: steerlab.Model) -> None:
    from steerlab.load import cast

    before = tiny_llama.fingerprint
    half = cast(tiny_llama, "bfloat16")
    assert half.dtype == torch.bfloat16 and tiny_llama.dtype == torch.float32
    assert half.hf is not tiny_llama.hf and half.tokenizer is tiny_llama.tokenizer and half.name == tiny_llama.name
    assert tiny_llama.fingerprint == before and half.fingerprint != before
    assert cast(tiny_llama, torch.float32) is tiny_llama  # already that dtype: no copy
    ids = torch.tensor([[5, 17, 300, 42]])
    with torch.inference_mode():
        want = tiny_llama.hf(input_ids=ids).logits
        got = half.hf(input_ids=ids).logits.float()
    assert (got - want).abs().max() / want.abs().max() < 0.05  # the same model, rounded
    with pytest.raises(ModelLoadError, match="unsupported dtype"):
        cast(tiny_llama, "float16")


def test_the_unembedding_gets_a_contiguous_input_once_per_model(tiny_llama: steerlab.Model) -> None:
    """``logits_to_keep=1`` slices ``hidden[:, -1:, :]``; torch's CPU bmm copies the unembedding once
    per row for such a view (pytorch/pytorch#151934), so every loaded model makes it contiguous."""
    from steerlab.load import _contiguous_input, cast, contiguous_unembedding_input

    head = tiny_llama.hf.get_output_embeddings()
    seen: list[bool] = []
    probe = head.register_forward_pre_hook(lambda m, a: seen.append(a[0].is_contiguous()))
    ids = torch.tensor([[5, 17, 300, 42], [9, 8, 7, 6]])
    try:
        with torch.inference_mode():
            full = tiny_llama.hf(input_ids=ids).logits
            last = tiny_llama.hf(input_ids=ids, logits_to_keep=1).logits
    finally:
        probe.remove()
    assert seen == [True, True]  # the sliced view arrives contiguous
    torch.testing.assert_close(last, full[:, -1:], rtol=1e-5, atol=1e-5)  # the same numbers (matmul shapes differ)
    contiguous_unembedding_input(tiny_llama.hf)  # idempotent: a second call, or a cast copy, adds none
    half = cast(tiny_llama, "bfloat16")
    for model in (tiny_llama, half):
        hooks = model.hf.get_output_embeddings()._forward_pre_hooks.values()
        assert sum(h is _contiguous_input for h in hooks) == 1


def test_fast_dtype_follows_the_hardware_probes(monkeypatch: pytest.MonkeyPatch) -> None:
    from steerlab.load import fast_dtype

    for avx, amx, want in ((True, False, torch.bfloat16), (False, True, torch.bfloat16), (False, False, torch.float32)):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda a=avx: a, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda a=amx: a, raising=False)
        assert fast_dtype("cpu") == want

    def broken() -> bool:
        raise RuntimeError("probe changed")

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", broken, raising=False)
    assert fast_dtype("cpu") == torch.float32  # a failing probe falls back to the safe choice
    assert fast_dtype("meta") == torch.float32


def test_bad_arguments_fail_before_the_embedded_cache_is_touched(monkeypatch: pytest.MonkeyPatch) -> None:
    """``load_model(device="cuda")`` on a machine without CUDA used to delete and rebuild
    the embedded checkpoint; now arguments are checked before any file is read."""

    def touched(*args: object, **kwargs: object) -> None:
        raise AssertionError("the embedded cache was touched")

    monkeypatch.setattr(embedded_mod, "provision", touched)
    monkeypatch.setattr(load_mod, "provision", touched)
    if not torch.cuda.is_available():
        with pytest.raises(ModelLoadError, match=r"device 'cuda' requested but CUDA is not available"):
            load_model(device="cuda")
    with pytest.raises(ModelLoadError, match=r"unknown device 'gpu0'"):
        load_model(device="gpu0")
    with pytest.raises(ModelLoadError, match="unsupported dtype"):
        load_model(dtype="float16")


# --- the embedded cache: rebuilt only when proven damaged ------------------------------------


@pytest.fixture
def fake_embedded(tiny_llama: steerlab.Model, tmp_path: Path,
                  monkeypatch: pytest.MonkeyPatch) -> tuple[EmbeddedModel, list[str]]:
    """An embedded model whose "de-quantizing" copies the tiny Llama, in a private cache."""
    monkeypatch.setenv("STEERLAB_CACHE", str(tmp_path / "cache"))
    rebuilt: list[str] = []

    def dequantize(gguf: Path, out: Path, steps: object) -> None:
        rebuilt.append(str(out))
        shutil.copytree(tiny_llama.source, out)
        embedded_mod._write_marker(out, gguf.name)

    spec = EmbeddedModel("fake-tiny", (), "pip install nothing", lambda: "fake:1", lambda scratch: Path("fake.gguf"))
    monkeypatch.setattr(embedded_mod, "_dequantize", dequantize)
    monkeypatch.setitem(embedded_mod.EMBEDDED_MODELS, spec.name, spec)
    return spec, rebuilt


def test_embedded_checkpoint_is_provisioned_once_and_reused(fake_embedded: tuple[EmbeddedModel, list[str]],
                                                          tiny_llama: steerlab.Model) -> None:
    spec, rebuilt = fake_embedded
    model = load_model("fake-tiny", progress=False)
    assert model.name == "fake-tiny" and model.fingerprint == tiny_llama.fingerprint and len(rebuilt) == 1
    marker = json.loads((spec.checkpoint_dir() / embedded_mod.COMPLETE_MARKER).read_text())
    assert marker["files"]["model.safetensors"]["bytes"] == (spec.checkpoint_dir() / "model.safetensors").stat().st_size
    load_model("fake-tiny", progress=False)
    assert len(rebuilt) == 1


def test_a_checkpoint_from_an_older_steerlab_is_upgraded_in_place(fake_embedded: tuple[EmbeddedModel, list[str]],
                                                                  tiny_llama: steerlab.Model) -> None:
    """Older checkpoints kept the GGUF quantization_config (transformers then attaches a GGUF
    quantizer to the float32 weights and refuses save_pretrained) and a marker without a
    file list: both are fixed in place, without de-quantizing again."""
    spec, rebuilt = fake_embedded
    folder = embedded_mod.provision(spec, progress=False)
    config = json.loads((folder / "config.json").read_text())
    config["quantization_config"] = {"dequantize": False, "gguf_file": "x.gguf", "quant_method": "gguf"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / embedded_mod.COMPLETE_MARKER).write_text(json.dumps({"gguf": "x.gguf", "gguf_bytes": 1, "written": 0}))
    model = load_model("fake-tiny", progress=False)
    assert len(rebuilt) == 1 and not getattr(model.hf, "is_quantized", False)
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())
    assert embedded_mod.verify_checksums(folder) == [] and "files" in embedded_mod.read_marker(folder)  # type: ignore[operator]
    assert model.fingerprint == tiny_llama.fingerprint


def test_a_load_failure_with_intact_files_leaves_the_checkpoint_alone(
        fake_embedded: tuple[EmbeddedModel, list[str]], monkeypatch: pytest.MonkeyPatch) -> None:
    spec, rebuilt = fake_embedded
    folder = embedded_mod.provision(spec, progress=False)
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}

    def fails(*args: object, **kwargs: object) -> None:
        raise RuntimeError("out of memory (planted)")

    monkeypatch.setattr(load_mod, "_from_folder", fails)
    with pytest.raises(ModelLoadError, match=r"out of memory \(planted\).*checksums, so it was left in place"):
        load_model("fake-tiny", progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before and len(rebuilt) == 1


@pytest.mark.parametrize("damage", ["truncate", "flip-bytes", "no-marker"])
def test_a_damaged_checkpoint_is_moved_aside_and_rebuilt(fake_embedded: tuple[EmbeddedModel, list[str]],
                                                        tiny_llama: steerlab.Model, damage: str) -> None:
    spec, rebuilt = fake_embedded
    folder = embedded_mod.provision(spec, progress=False)
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    if damage == "truncate":  # caught by the size check before loading
        weights.write_bytes(data[: len(data) // 2])
    elif damage == "flip-bytes":  # same size: the load fails, then the checksums prove the damage
        data[8:40] = b"\xff" * 32  # inside the JSON header
        weights.write_bytes(bytes(data))
    else:
        (folder / embedded_mod.COMPLETE_MARKER).unlink()
    model = load_model("fake-tiny", progress=False)
    assert model.fingerprint == tiny_llama.fingerprint and len(rebuilt) == 2
    (aside,) = folder.parent.glob(f".{folder.name}.damaged-*")  # renamed, not deleted
    assert (aside / "model.safetensors").exists()
    why = (aside / "steerlab-damaged.txt").read_text()
    assert {"truncate": "model.safetensors has", "flip-bytes": "SHA-256", "no-marker": "marker"}[damage] in why


def test_a_checkpoint_rebuilt_by_another_process_is_retried_not_moved(
        fake_embedded: tuple[EmbeddedModel, list[str]]) -> None:
    """Two processes whose loads failed on one damaged checkpoint: the second finds the
    marker changed (the first rebuilt it) and retries the new folder instead of
    renaming it aside."""
    spec, rebuilt = fake_embedded
    folder = embedded_mod.provision(spec, progress=False)
    seen_before_the_rebuild = {"format": 2, "written": 0.0, "files": {}}
    retry, why = embedded_mod.rebuild_if_damaged(spec, folder, seen_before_the_rebuild)
    assert retry == folder and why == ["rebuilt by another process"]
    assert embedded_mod.rebuild_if_damaged(spec, folder, embedded_mod.read_marker(folder)) == (None, [])
    assert len(rebuilt) == 1 and not list(folder.parent.glob(".*damaged*"))


def test_provision_all_skips_an_uninstalled_optional_model(fake_embedded: tuple[EmbeddedModel, list[str]],
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    spec, _ = fake_embedded

    def missing() -> str:
        raise ModelLoadError("the package 'absent_pkg' is not installed: run `make setup`")

    absent = EmbeddedModel("absent", (), "pip install absent", missing, lambda scratch: Path("x.gguf"))
    monkeypatch.setattr(embedded_mod, "EMBEDDED_MODELS", {spec.name: spec, absent.name: absent})
    monkeypatch.setattr(embedded_mod, "EMBEDDED_MODEL", spec.name)
    assert embedded_mod.provision_all(progress=False) == {"fake-tiny": spec.checkpoint_dir()}
    assert "skipping absent: the package 'absent_pkg' is not installed" in capsys.readouterr().out
    monkeypatch.setattr(embedded_mod, "EMBEDDED_MODEL", absent.name)  # the default one is required
    with pytest.raises(ModelLoadError, match="absent_pkg"):
        embedded_mod.provision_all(progress=False)


def test_failed_provisioning_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A provisioning run that fails midway leaves neither a final nor a temporary folder."""
    bogus = tmp_path / "pkg" / "model.gguf"
    bogus.parent.mkdir()
    bogus.write_bytes(b"NOPE" + b"\0" * 100)
    cache = tmp_path / "cache"
    monkeypatch.setenv("STEERLAB_CACHE", str(cache))
    monkeypatch.setattr(embedded_mod, "embedded_gguf_path", lambda: bogus)
    with pytest.raises(ModelLoadError, match="is not a GGUF file"):
        provision_embedded(progress=False)
    assert [p for p in (cache / "models").iterdir() if p.is_dir()] == []


def test_complete_checkpoint_is_reused(monkeypatch: pytest.MonkeyPatch) -> None:
    # The session cache links to the provisioned checkpoint: no de-quantizing again.
    def no_gguf(*args: object, **kwargs: object) -> None:
        raise AssertionError("provisioning re-read the GGUF")

    monkeypatch.setattr(embedded_mod, "check_gguf", no_gguf)
    folder = provision_embedded(progress=False)
    assert (folder / "model.safetensors").is_file()
    assert embedded_mod.checkpoint_problems(folder) == []


# --- the real models ----------------------------------------------------------------------


@pytest.mark.real
class TestRealModel:
    """A few checks on the embedded SmolLM2-135M-Instruct (real weights)."""

    PROMPT = "A girl once had a goose egg. She"

    def test_loads_with_its_known_shape(self, real_model: steerlab.Model) -> None:
        assert real_model.name == steerlab.EMBEDDED_MODEL
        assert real_model.hf.config.model_type == "llama"
        assert (real_model.n_layers, real_model.d_model) == (30, 576)
        assert len(real_model.tokenizer) == 49152
        assert steerlab.load_model("smollm2", progress=False).fingerprint == real_model.fingerprint

    def test_an_edit_in_a_middle_block_changes_the_fingerprint(self, real_model: steerlab.Model) -> None:
        original = real_model.fingerprint
        weight = real_model.hf.model.layers[15].mlp.down_proj.weight
        kept = weight[3].clone()
        try:
            with torch.no_grad():
                weight[3, 5:9] *= 1.01
            assert real_model.fingerprint != original
        finally:
            with torch.no_grad():
                weight[3].copy_(kept)
        assert real_model.fingerprint == original

    def test_bfloat16_is_cast_at_load_and_the_checkpoint_stays_float32(self, real_model: steerlab.Model) -> None:
        from safetensors import safe_open

        half = steerlab.load_model(dtype=torch.bfloat16, progress=False)
        assert half.dtype == torch.bfloat16 and half.fingerprint != real_model.fingerprint
        with safe_open(Path(half.source) / "model.safetensors", "pt") as f:
            assert f.get_slice("model.norm.weight").get_dtype() == "F32"

    def test_first_token_is_an_attention_sink(self, real_model: steerlab.Model) -> None:
        from steerlab.trace import residuals

        text = "The old lighthouse keeper climbed the stairs every night to light the lamp."
        batch = steerlab.encode(real_model.tokenizer, [text])
        (middle,) = residuals(real_model, batch, [15])
        norms = middle[0].norm(dim=-1)  # [seq]
        assert norms.shape[0] > 10
        assert float(norms[0]) > 3 * float(norms[1:].median())

    def test_greedy_continuation_looks_like_english(self, real_model: steerlab.Model) -> None:
        (completion,) = steerlab.generate(real_model, self.PROMPT, None, do_sample=False,
                                          max_new_tokens=20)
        text = completion.text
        letters = sum(c.isascii() and (c.isalpha() or c in " .,;:'\"!?-\n") for c in text)
        words = re.findall(r"[A-Za-z]+", text)
        assert len(text) > 20
        assert letters / len(text) > 0.9, text
        assert len(words) >= 5, text
        common = {"the", "a", "she", "her", "was", "and", "to", "it", "of", "he", "had", "egg", "goose"}
        assert common & {w.lower() for w in words}, text


@pytest.mark.real
class TestGemma:
    """The second embedded model, Gemma 3 270M (real weights)."""

    PROMPT = "Yesterday, my son was out kicking a football. Then, he"

    def test_loads_by_short_name_with_its_known_shape(self, gemma_model: steerlab.Model) -> None:
        assert gemma_model.name == "gemma3-270m"
        assert gemma_model.hf.config.model_type == "gemma3_text"
        assert (gemma_model.n_layers, gemma_model.d_model) == (18, 640)
        assert gemma_model.arch == steerlab.arch.ARCHITECTURES["gemma3_text"]

    def test_layer_0_is_the_scaled_embedding(self, gemma_model: steerlab.Model) -> None:
        from steerlab.trace import residuals

        batch = steerlab.encode(gemma_model.tokenizer, [self.PROMPT])
        (h0,) = residuals(gemma_model, batch, [0])
        table = gemma_model.hf.get_input_embeddings().weight
        torch.testing.assert_close(h0[0], table[batch.input_ids[0]] * 640**0.5, atol=1e-4, rtol=1e-4)

    def test_greedy_continuation_with_bos_is_not_a_repetition_loop(self, gemma_model: steerlab.Model) -> None:
        tok = gemma_model.tokenizer
        enc = tok(self.PROMPT, return_tensors="pt")  # default special tokens: <bos> first
        assert int(enc["input_ids"][0, 0]) == tok.bos_token_id
        with torch.inference_mode():
            out = gemma_model.hf.generate(**enc, max_new_tokens=24, do_sample=False)
        text = tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        words = [w.lower() for w in re.findall(r"[A-Za-z']+", text)]
        assert len(words) >= 10, text
        top = max(words.count(w) for w in set(words))
        assert top / len(words) < 0.3 and len(set(words)) >= 6, text  # " he he he ..." has 1.0 and 1


def test_the_nnsight_wrapper_is_built_on_first_trace_only(tiny_llama: steerlab.Model) -> None:
    """Loading and hook steering never wrap the model in nnsight; the first trace does, once."""
    model = steerlab.load_model(tiny_llama.source)
    assert "lm" not in model.__dict__
    v = torch.ones(model.d_model)
    steerlab.generate(model, "The cat", v, layer=1, coefficients=1.0, scale="raw", max_new_tokens=2, do_sample=False)
    assert "lm" not in model.__dict__
    steerlab.activation_stats(model, ["The cat sat."], [1], cache=False, progress=False)
    lm = model.__dict__["lm"]
    assert model.lm is lm and lm._module is model.hf
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        model.nope  # noqa: B018
