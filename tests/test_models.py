"""Loading models (steerlab.models): local folders, GGUF files, clear errors, and
no half-written checkpoint left behind."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import steerlab
import steerlab.models as models_mod
import torch
from steerlab.models import ModelLoadError, _fingerprint, load_model, provision_embedded


def test_tiny_models_load_from_local_folders(tiny_gpt2: steerlab.Model, tiny_llama: steerlab.Model) -> None:
    for model, model_type in ((tiny_gpt2, "gpt2"), (tiny_llama, "llama")):
        assert model.hf.config.model_type == model_type
        assert (model.n_layers, model.d_model) == (2, 64)
        assert Path(model.source).is_dir() and model.name == model.source
        assert model.tokenizer.pad_token is not None
        assert not model.hf.training
        assert not any(p.requires_grad for p in model.hf.parameters())
        assert model.device == torch.device("cpu")
        assert re.fullmatch(r"[0-9a-f]{16}", model.fingerprint)
        assert "n_layers=2, d_model=64" in repr(model)


def test_fingerprint_tells_models_and_weights_apart(tiny_gpt2: steerlab.Model, tiny_llama: steerlab.Model) -> None:
    assert tiny_gpt2.fingerprint != tiny_llama.fingerprint
    again = load_model(tiny_gpt2.source)
    assert again.fingerprint == tiny_gpt2.fingerprint  # deterministic
    with torch.no_grad():
        again.hf.transformer.h[0].mlp.c_fc.weight[0, 0] += 1.0
    assert _fingerprint(again.hf, again.name) != tiny_gpt2.fingerprint


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
    assert loaded[5] != tiny_gpt2.fingerprint  # the name is part of the fingerprint; the weights are the same
    error = out.stdout[out.stdout.index("\nerror "):]  # the message spans lines
    assert "'steerlab-test/not-cached' as a hub id" in error and "smollm2-135m-instruct" in error


def test_truncated_safetensors_checkpoint_is_a_load_error(tiny_llama: steerlab.Model, tmp_path: Path) -> None:
    folder = tmp_path / "broken"
    shutil.copytree(tiny_llama.source, folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ModelLoadError, match=rf"could not load '{re.escape(str(folder))}' as a local folder"):
        load_model(str(folder))


def test_missing_folder_is_a_load_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="embedded default"):
        load_model(str(tmp_path / "no-such-model"))


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


def test_failed_provisioning_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A provisioning run that fails midway leaves neither a final nor a temporary folder."""
    bogus = tmp_path / "pkg" / "model.gguf"
    bogus.parent.mkdir()
    bogus.write_bytes(b"NOPE" + b"\0" * 100)
    cache = tmp_path / "cache"
    monkeypatch.setenv("STEERLAB_CACHE", str(cache))
    monkeypatch.setattr(models_mod, "embedded_gguf_path", lambda: bogus)
    with pytest.raises(ModelLoadError, match="is not a GGUF file"):
        provision_embedded(progress=False)
    assert list((cache / "models").iterdir()) == []


def test_complete_checkpoint_is_reused(monkeypatch: pytest.MonkeyPatch) -> None:
    # The session cache links to the provisioned checkpoint: no de-quantizing again.
    def no_gguf(*args: object, **kwargs: object) -> None:
        raise AssertionError("provisioning re-read the GGUF")

    monkeypatch.setattr(models_mod, "_check_gguf", no_gguf)
    folder = provision_embedded(progress=False)
    assert (folder / "model.safetensors").is_file()
    assert (folder / models_mod._COMPLETE_MARKER).is_file()


@pytest.mark.real
class TestRealModel:
    """A few checks on the embedded SmolLM2-135M-Instruct (real weights)."""

    PROMPT = "A girl once had a goose egg. She"

    def test_loads_with_its_known_shape(self, real_model: steerlab.Model) -> None:
        assert real_model.name == steerlab.EMBEDDED_MODEL
        assert real_model.hf.config.model_type == "llama"
        assert (real_model.n_layers, real_model.d_model) == (30, 576)
        assert len(real_model.tokenizer) == 49152

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
