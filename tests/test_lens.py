"""Logit lens (steerlab.lens): the last residual layer read through the lens is
the model's own logits."""

from __future__ import annotations

import pytest
import steerlab
import torch
from steerlab.lens import lens_logits, top_tokens, topk_table
from steerlab.trace import residuals

PROMPTS = ["The dragon slept under the mountain", "She kicked the ball"]


def _lens_equals_logits(model: steerlab.Model) -> None:
    batch = steerlab.encode(model.tokenizer, PROMPTS)
    (last,) = residuals(model, batch, [model.n_layers])
    with torch.no_grad():
        logits = model.hf(**batch.as_inputs()).logits
    lensed = lens_logits(model, last)
    assert lensed.shape == logits.shape
    real = batch.attention_mask.bool()
    torch.testing.assert_close(lensed[real], logits[real].float(), atol=1e-4, rtol=1e-4)
    # Without the final norm the lens reads something else: the norm is not a no-op.
    raw = lens_logits(model, last, apply_norm=False)
    assert not torch.allclose(raw[real], logits[real], atol=1e-3)


@pytest.mark.parametrize("model_name", ["tiny_gpt2", "tiny_llama"])
def test_lens_of_last_layer_equals_logits(request: pytest.FixtureRequest, model_name: str) -> None:
    _lens_equals_logits(request.getfixturevalue(model_name))


@pytest.mark.real
def test_lens_of_last_layer_equals_logits_on_the_real_model(real_model: steerlab.Model) -> None:
    _lens_equals_logits(real_model)


def test_top_tokens_returns_k_items_best_first(tiny_llama: steerlab.Model) -> None:
    x = torch.randn(tiny_llama.d_model, generator=torch.Generator().manual_seed(0))
    top = top_tokens(tiny_llama, x, k=7)
    assert len(top) == 7
    assert all(isinstance(t, str) and isinstance(v, float) for t, v in top)
    values = [v for _, v in top]
    assert values == sorted(values, reverse=True)
    logits = lens_logits(tiny_llama, x)
    best = int(logits.argmax())
    assert top[0] == (tiny_llama.tokenizer.decode([best]), pytest.approx(float(logits[best])))


def test_top_tokens_finds_a_planted_unembedding_row(tiny_gpt2: steerlab.Model) -> None:
    # The unembedding row with the largest centred norm is the best match for
    # its own direction (GPT-2's final LayerNorm removes the mean component).
    w = tiny_gpt2.hf.get_output_embeddings().weight.detach()
    centred = w - w.mean(dim=1, keepdim=True)
    target = int(centred.norm(dim=1).argmax())
    top = top_tokens(tiny_gpt2, 10 * centred[target], k=3)
    assert top[0][0] == tiny_gpt2.tokenizer.decode([target])


def test_topk_table_has_a_column_per_name(tiny_gpt2: steerlab.Model) -> None:
    g = torch.Generator().manual_seed(1)
    table = topk_table(tiny_gpt2, {"a": torch.randn(64, generator=g), "b": torch.randn(64, generator=g)}, k=4)
    assert list(table) == ["a", "b"]
    assert all(len(col) == 4 for col in table.values())
    assert table["a"] != table["b"]


def test_lens_rejects_bad_input(tiny_gpt2: steerlab.Model) -> None:
    with pytest.raises(ValueError, match=r"expected a last dimension of 64, got shape \(32,\)"):
        lens_logits(tiny_gpt2, torch.ones(32))
    nan = torch.ones(64)
    nan[0] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        lens_logits(tiny_gpt2, nan)
    with pytest.raises(ValueError, match=r"one \[d_model\] vector, got shape \(2, 64\)"):
        top_tokens(tiny_gpt2, torch.ones(2, 64))
    with pytest.raises(ValueError, match="k must be >= 1, got 0"):
        top_tokens(tiny_gpt2, torch.ones(64), k=0)


def test_top_tokens_prints_as_a_readable_table(tiny_llama: steerlab.Model) -> None:
    """It printed as a list of tuples with 16-digit floats; now one quoted token and a two-decimal
    logit per line, and it is still a list of (token, logit) pairs."""
    top = top_tokens(tiny_llama, torch.randn(tiny_llama.d_model, generator=torch.Generator().manual_seed(0)), k=4)
    lines = str(top).splitlines()
    assert len(lines) == 4 and repr(top) == str(top)
    for (token, logit), line in zip(top, lines):
        assert line.startswith(repr(token)) and line.endswith(f"{logit:8.2f}")
    assert isinstance(top, list) and top == [tuple(p) for p in top]
