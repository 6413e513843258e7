"""Where each supported architecture keeps its blocks, final norm and unembedding.

This is the only module that knows module paths such as ``transformer.h`` or
``model.layers``; everything else asks it. Residual-stream layer numbering
follows Hugging Face's ``hidden_states``: layer 0 is the input to block 0 (the
embeddings), layer ``L`` is the input to block ``L`` and layer ``n_layers`` is
the output of the last block, *before* the final norm. For the Gemma families
layer 0 is the *scaled* embedding (``embed_tokens`` multiplies by
``sqrt(d_model)``), as in ``hidden_states[0]``; their final logits may be soft
capped (``final_logit_softcapping``: set for Gemma 2, ``None`` for Gemma 3).
``steerlab.load.self_check`` verifies each entry on the loaded model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "UnsupportedArchitectureError",
    "architecture_of",
    "block_hidden",
    "blocks_of",
    "final_norm_of",
    "logit_softcap_of",
]


class UnsupportedArchitectureError(ValueError):
    """The model's ``config.model_type`` is not one steerlab knows how to take apart."""


@dataclass(frozen=True)
class Architecture:
    """Attribute paths (dot-separated, from the causal-LM module) of one model family."""

    blocks: str
    final_norm: str
    # Name of the config attribute that caps final logits (Gemma 2/3), if any.
    logit_softcap_attr: str | None = None


_LLAMA_LIKE = Architecture(blocks="model.layers", final_norm="model.norm")
_GEMMA = Architecture(
    blocks="model.layers", final_norm="model.norm", logit_softcap_attr="final_logit_softcapping"
)

ARCHITECTURES: dict[str, Architecture] = {
    "gpt2": Architecture(blocks="transformer.h", final_norm="transformer.ln_f"),
    "llama": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
    "qwen3": _LLAMA_LIKE,
    "gemma": _GEMMA,
    "gemma2": _GEMMA,
    "gemma3_text": _GEMMA,
    "gpt_neox": Architecture(blocks="gpt_neox.layers", final_norm="gpt_neox.final_layer_norm"),
}


def _get(module: nn.Module, path: str) -> nn.Module:
    for part in path.split("."):
        module = getattr(module, part)
    return module


def architecture_of(model: nn.Module) -> Architecture:
    """Return the :class:`Architecture` of a Hugging Face causal LM.

    Raises:
        UnsupportedArchitectureError: naming the model type and the supported ones.

    Example:
        >>> architecture_of(hf_model).blocks
        'model.layers'
    """
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in ARCHITECTURES:
        raise UnsupportedArchitectureError(
            f"unsupported architecture {model_type!r}; steerlab supports: "
            + ", ".join(sorted(ARCHITECTURES))
        )
    return ARCHITECTURES[model_type]


def blocks_of(model: nn.Module) -> nn.ModuleList:
    """The list of decoder blocks of a Hugging Face causal LM."""
    blocks = _get(model, architecture_of(model).blocks)
    assert isinstance(blocks, nn.ModuleList)
    return blocks


def final_norm_of(model: nn.Module) -> nn.Module:
    """The norm applied after the last block, before the unembedding."""
    return _get(model, architecture_of(model).final_norm)


def logit_softcap_of(model: nn.Module) -> float | None:
    """The final-logit soft cap (Gemma 2/3), or ``None``."""
    attr = architecture_of(model).logit_softcap_attr
    cap = getattr(model.config, attr, None) if attr else None
    return float(cap) if cap else None


def block_hidden(output: object) -> torch.Tensor:
    """The hidden-state tensor of a decoder block's output.

    Transformers 5 returns a plain ``[batch, seq, d_model]`` tensor, transformers 4
    a tuple whose first item is that tensor. Indexing ``[0]`` on the tensor would
    silently take the first batch item, so the shape is checked.
    """
    hidden = output[0] if isinstance(output, tuple) else output
    if not isinstance(hidden, torch.Tensor) or hidden.dim() != 3:
        raise TypeError(
            f"expected a block output of shape [batch, seq, d_model], got {type(hidden).__name__}"
            + (f" of shape {tuple(hidden.shape)}" if isinstance(hidden, torch.Tensor) else "")
        )
    return hidden
