"""The architecture table (steerlab.arch): every listed family resolves on a real
Hugging Face model of that family, and the paths are the right ones."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import steerlab
import torch
from steerlab.arch import (
    ARCHITECTURES,
    Architecture,
    UnsupportedArchitectureError,
    architecture_of,
    block_hidden,
    blocks_of,
    final_norm_of,
    logit_softcap_of,
)
from steerlab.load import _wrap
from steerlab.models import ModelLoadError
from steerlab.trace import residuals
from torch import nn


def _config(model_type: str, vocab: int) -> Any:
    import transformers as T

    common = {"vocab_size": vocab, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                  "num_attention_heads": 4, "num_key_value_heads": 2}
    makers = {
        "gpt2": lambda: T.GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=vocab, n_positions=64,
                                     bos_token_id=0, eos_token_id=0),
        "llama": lambda: T.LlamaConfig(**common),
        "mistral": lambda: T.MistralConfig(**common),
        "qwen2": lambda: T.Qwen2Config(**common),
        "qwen3": lambda: T.Qwen3Config(**common, head_dim=8),
        "gemma": lambda: T.GemmaConfig(**common, head_dim=8),
        # A small cap so that capping visibly changes the logits.
        "gemma2": lambda: T.Gemma2Config(**common, head_dim=8, final_logit_softcapping=0.05),
        "gemma3_text": lambda: T.Gemma3TextConfig(**common, head_dim=8),
        "gpt_neox": lambda: T.GPTNeoXConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64,
                                            num_hidden_layers=2, num_attention_heads=4),
    }
    return makers[model_type]()


def _save_tiny(model_type: str, tokenizer: Any, folder: Path) -> Path:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(_config(model_type, len(tokenizer))).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("model_type", sorted(ARCHITECTURES))
def test_every_family_in_the_table_loads_and_passes_the_self_check(tiny_gpt2: steerlab.Model, model_type: str,
                                                                   tmp_path: Path) -> None:
    """A family added to the table without a test config fails here (KeyError in _config);
    one whose paths are wrong fails the self-check that load_model runs."""
    folder = _save_tiny(model_type, tiny_gpt2.tokenizer, tmp_path / model_type)
    model = steerlab.load_model(str(folder))
    assert model.hf.config.model_type == model_type and model.arch == ARCHITECTURES[model_type]
    assert model.n_layers == 2


@pytest.mark.parametrize(("model_type", "wrong", "complaint"), [
    # The table points at another norm: the lens no longer reproduces the logits.
    ("llama", Architecture(blocks="model.layers", final_norm="model.layers.1.post_attention_layernorm"),
     r"output of the last block\) differs from the input of the final norm 'model.layers.1.post_attention_layernorm'"),
    # The table forgets Gemma 2's soft cap.
    ("gemma2", Architecture(blocks="model.layers", final_norm="model.norm"), r"logit lens of layer 2 .* differs"),
    # The table names the first block's sub-layers as the block list.
    ("gpt2", Architecture(blocks="transformer.h", final_norm="transformer.h.1.ln_2"), r"final norm"),
])
def test_a_table_entry_that_does_not_match_the_model_fails_at_load(
        tiny_gpt2: steerlab.Model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        model_type: str, wrong: Architecture, complaint: str) -> None:
    folder = _save_tiny(model_type, tiny_gpt2.tokenizer, tmp_path / model_type)
    monkeypatch.setitem(ARCHITECTURES, model_type, wrong)
    with pytest.raises(ModelLoadError, match=rf"the '{model_type}' entry of steerlab.arch .*: .*({complaint})"):
        steerlab.load_model(str(folder))


def test_the_self_check_sees_a_change_between_the_last_block_and_the_norm(tiny_llama: steerlab.Model) -> None:
    """A model that changes the residual between its last block and the final norm (here a
    hook that scales it): what steerlab calls layer n_layers is then not what the norm
    receives, although the lens still equals the logits."""
    model = steerlab.load_model(tiny_llama.source)
    hf = model.hf
    hf.model.norm.register_forward_pre_hook(lambda m, a: (a[0] * 3.0,))
    with pytest.raises(ModelLoadError, match=r"'llama' entry .*layer 2 \(output of the last block\) differs "
                                             r"from the input of the final norm"):
        _wrap(hf, model.tokenizer, "swapped", "test", time.perf_counter())


@pytest.mark.parametrize("model_type", sorted(ARCHITECTURES))
def test_paths_resolve_and_residuals_match_hidden_states(tiny_gpt2: steerlab.Model,
                                                         model_type: str) -> None:
    from transformers import AutoModelForCausalLM

    tokenizer = tiny_gpt2.tokenizer  # the embedded tokenizer
    torch.manual_seed(0)
    hf = AutoModelForCausalLM.from_config(_config(model_type, len(tokenizer)))
    assert hf.config.model_type == model_type
    blocks = blocks_of(hf)
    assert isinstance(blocks, nn.ModuleList) and len(blocks) == 2
    norm = final_norm_of(hf)
    assert "norm" in type(norm).__name__.lower()

    model = _wrap(hf, tokenizer, model_type, "config", time.perf_counter())
    batch = steerlab.encode(tokenizer, ["Hello world how are you", "Hi"])
    acts = residuals(model, batch, [0, 1, 2])
    captured: dict[str, torch.Tensor] = {}
    hook = blocks[-1].register_forward_hook(lambda m, a, o: captured.__setitem__("out", block_hidden(o)))
    try:
        out = hf(**batch.as_inputs(), output_hidden_states=True)
    finally:
        hook.remove()
    for layer in (0, 1):
        torch.testing.assert_close(acts[layer], out.hidden_states[layer])
    # HF's last hidden state has the final norm applied; layer n_layers is before it.
    torch.testing.assert_close(acts[2], captured["out"])
    # The lens of the last residual layer reproduces the model's logits (with the
    # Gemma 2 soft cap, which this config makes small enough to matter).
    torch.testing.assert_close(steerlab.lens_logits(model, acts[2]), out.logits, atol=1e-5, rtol=1e-4)
    cap = logit_softcap_of(hf)
    if model_type == "gemma2":
        assert cap == pytest.approx(0.05)
        with torch.no_grad():
            uncapped = hf.get_output_embeddings()(norm(acts[2]))
        assert float(uncapped.abs().max()) > 0.1  # so the cap is what makes them match
    else:
        assert cap is None


@pytest.mark.parametrize("model_type", sorted(ARCHITECTURES))
def test_shortcuts_equal_plain_passes_on_every_family(tiny_gpt2: steerlab.Model, model_type: str) -> None:
    """The two shortcuts that call blocks or the cache directly, on each family's real
    module code: replaying the blocks from the steered layer equals a full steered
    forward, and scoring completions on a shared prompt cache equals scoring each
    prompt + completion on its own."""
    from steerlab.metrics import completion_perplexity
    from steerlab.replay import steered_logits_each
    from steerlab.steer import steered_logits
    from transformers import AutoModelForCausalLM

    tokenizer = tiny_gpt2.tokenizer
    torch.manual_seed(0)
    hf = AutoModelForCausalLM.from_config(_config(model_type, len(tokenizer)))
    model = _wrap(hf, tokenizer, model_type, "config", time.perf_counter())
    batch = steerlab.encode(tokenizer, ["Hello world how are you", "Hi"])
    adds = [torch.randn(32, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    for layer in (0, 1):
        each = list(steered_logits_each(model, batch, [adds[0], None, adds[1]], layer=layer))
        torch.testing.assert_close(each[1], steered_logits(model, batch))
        for add, got in zip([adds[0], adds[1]], [each[0], each[2]]):
            torch.testing.assert_close(got, steered_logits(model, batch, [add, add], layer=layer), atol=1e-5, rtol=1e-4)
    completions = [tokenizer(c, add_special_tokens=False)["input_ids"] for c in (" and you", " there, my old friend")]
    prompt = "Hello world how are you"
    shared = completion_perplexity(model, [prompt, prompt], completions)
    for ppl, completion in zip(shared, completions):
        (alone,) = completion_perplexity(model, [prompt], [completion])
        ids = torch.tensor([tokenizer(prompt, add_special_tokens=False)["input_ids"] + completion])
        with torch.no_grad():
            logp = hf(input_ids=ids).logits.log_softmax(-1)[0]
        start = ids.shape[1] - len(completion)
        want = float((-torch.stack([logp[start - 1 + i, t] for i, t in enumerate(completion)]).mean()).exp())
        assert ppl == pytest.approx(want, rel=1e-4) and alone == pytest.approx(want, rel=1e-4)


def test_unknown_architecture_names_type_and_supported_ones() -> None:
    fake = SimpleNamespace(config=SimpleNamespace(model_type="bert"))
    with pytest.raises(UnsupportedArchitectureError, match=r"unsupported architecture 'bert'.*gpt2.*llama"):
        architecture_of(fake)  # type: ignore[arg-type]
    with pytest.raises(UnsupportedArchitectureError, match="None"):
        architecture_of(nn.Linear(2, 2))


def test_block_hidden_accepts_tensor_or_tuple_and_guards_shape() -> None:
    h = torch.randn(2, 3, 4)
    assert block_hidden(h) is h
    assert block_hidden((h, None)) is h
    with pytest.raises(TypeError, match=r"shape \[batch, seq, d_model\].*\(3, 4\)"):
        block_hidden(h[0])  # what indexing [0] on a transformers-5 output would give
    with pytest.raises(TypeError, match="str"):
        block_hidden(("not a tensor",))


def test_tiny_models_use_their_own_families(tiny_gpt2: steerlab.Model, tiny_llama: steerlab.Model) -> None:
    assert tiny_gpt2.arch == ARCHITECTURES["gpt2"]
    assert tiny_llama.arch == ARCHITECTURES["llama"]
    assert blocks_of(tiny_gpt2.hf) is tiny_gpt2.hf.transformer.h
    assert final_norm_of(tiny_llama.hf) is tiny_llama.hf.model.norm
