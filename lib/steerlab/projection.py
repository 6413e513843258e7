"""Per-token projections: how far each token's residual points along a steering direction.

For a text, the residual stream entering block ``layer`` (steerlab's layer ``L``, where a
vector is added) is read at every token with :func:`steerlab.trace.residuals` on the
*unsteered* model, and projected on the unit direction of the vector:
``value_t = h_t . v / |v|``. Under steering at ``L`` these values would only shift by the
added amount, so the unsteered reading is the informative one: which tokens the model
already represents as lying along the direction.

The first token of SmolLM2 is an attention sink (residual norm in the hundreds), so its
value is usually far larger than the others; renderers scale colours without it
(:func:`steerlab.lab.tokens_view.tokens_html`).
"""

from __future__ import annotations

import torch

from .models import Model
from .remote import Remote
from .tokens import check_fits, encode
from .trace import check_layers, residuals
from .vectors import SteeringVector

__all__ = ["token_projections"]


def token_projections(model: Model, text: str, vector: SteeringVector | torch.Tensor,
                      layer: int, *, remote: Remote = False) -> list[tuple[str, float]]:
    """Each token of ``text`` with the projection of its residual at ``layer`` on ``vector``'s unit direction.

    ``text`` is tokenized with the tokenizer's own special tokens (a BOS where it adds
    one, which is then the first pair). Token strings are decoded one token at a time
    (a character split over two tokens decodes as ``"\ufffd"`` in each).

    Args:
        vector: a :class:`SteeringVector` with ``layer`` (checked against ``model``) or a
            ``[d_model]`` tensor.
        layer: residual-stream layer, 0 (embeddings) to ``n_layers``.
        remote: ``True`` computes the projections on NDIF (only ``[seq]`` numbers come back);
            ``"local"`` is nnsight's dry run of that request.

    Raises:
        ValueError: an empty text, a bad layer, a zero vector, or one that is not ``[d_model]``
            (a ``[k, d_model]`` prompt pair has no single direction).

    Example:
        >>> v = sl.build("mean_centred", model, [15], target="fantasy")
        >>> token_projections(model, "The dragon slept.", v, 15)[:2]
        [('The', 3.1...), (' dragon', 9.8...)]
    """
    (layer,) = check_layers(model, [layer])
    if isinstance(vector, SteeringVector):
        vector.check_for(model)
        v = vector.at(layer)
    elif isinstance(vector, torch.Tensor):
        v = vector
    else:
        raise TypeError(f"vector must be a SteeringVector or a tensor, got {type(vector).__name__}")
    if v.dim() != 1 or v.shape[0] != model.d_model:
        raise ValueError(f"token_projections needs one [{model.d_model}] direction, got shape {tuple(v.shape)}")
    if not bool(torch.isfinite(v).all()) or float(v.norm()) == 0:
        raise ValueError("token_projections needs a finite, non-zero vector")
    batch = encode(model.tokenizer, [text])
    check_fits(model.hf.config, batch.lengths, what="text")
    unit = v.detach().float().cpu() / v.detach().float().cpu().norm()

    def project(_i: int, hidden: torch.Tensor) -> torch.Tensor:  # where the model runs
        return hidden[0].float() @ unit.to(hidden.device)

    (values,) = residuals(model, batch, [layer], reduce=project, remote=remote)  # [seq]
    values = values.cpu()
    ids = batch.input_ids[0].tolist()
    return [(model.tokenizer.decode([t]), float(x)) for t, x in zip(ids, values)]
