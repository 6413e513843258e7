"""Your own concept end to end (notebook 05): a vector from your texts, steered against unsteered
text with the judge-free measures, and the files to take it further.

The measures need no judge and no target vocabulary, so they work for any concept: perplexity of
each completion under the unsteered model (is it still language the model finds ordinary),
distinct-2 (a loop such as "m m m m" is predictable, so it has low perplexity; its share of
distinct word pairs falls towards 0), and the completion's projection on the vector at the
steered layer (how much of the concept the steered text carries when the unsteered model reads it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data import load_dataset
from ..llamacpp import save_both
from ..metrics import completion_perplexity, distinct_n
from ..models import Model
from ..projection import token_projections
from ..sets import UNIT_LABEL
from ..steer import rows, steered_generate
from ..vectors import SteeringVector
from .matched import fluent_perplexity

__all__ = ["ConceptRow", "concept_conclusion", "projection_noise", "rows_as_dicts", "save_concept", "steer_rows"]


@dataclass
class ConceptRow:
    """One completion of the prompt at one coefficient, with its judge-free measures.

    ``perplexity_ratio`` is against the larger of the unsteered completion's perplexity and fluent text's
    (:func:`steerlab.study.matched.fluent_perplexity`): a degenerate unsteered baseline (a timestamp, digits)
    is very predictable and would make any fluent text look damaged. ``projection`` is the change against
    the unsteered completion; ``noise`` is the spread of that measure on general text of the same length
    (:func:`projection_noise`): a change is called only past twice it.
    """

    coefficient: float
    text: str
    perplexity: float
    perplexity_ratio: float
    distinct_2: float
    projection: float
    noise: float = float("nan")


def steer_rows(model: Model, vector: SteeringVector, layer: int, prompt: str, coefficients: Sequence[float], *,
               position: str = "all", max_new_tokens: int = 40) -> list[ConceptRow]:
    """Greedy completions of ``prompt`` at each coefficient (x the centred norm; 0 is the unsteered
    row), in one batched call, each scored.

    ``projection`` is the mean over the completion's tokens of the unsteered residual at ``layer``
    projected on the vector's unit direction, minus the unsteered completion's: positive means
    the steered text carries more of the concept.

    Example:
        >>> rows = steer_rows(model, v, 15, "The weather today is", [0, 0.25, 0.5])
    """
    coefs = sorted({float(c) for c in coefficients} | {0.0})
    direction = vector.at(layer)
    if direction.dim() != 1:
        raise ValueError(f"steer_rows needs a [d_model] vector; the {vector.recipe} vector at layer {layer} has "
                         f"shape {tuple(direction.shape)}")
    ids = steered_generate(model, [prompt] * len(coefs), rows(model, vector, coefs, layer=layer, position=position),
                           max_new_tokens=max_new_tokens, do_sample=False)
    ppl = completion_perplexity(model, [prompt] * len(coefs), ids)
    texts = [model.tokenizer.decode(r, skip_special_tokens=True) for r in ids]
    proj = [_mean_projection(model, text, direction, layer) for text in texts]
    base_ppl, base_proj = ppl[coefs.index(0.0)], proj[coefs.index(0.0)]
    reference = max(x for x in (base_ppl, fluent_perplexity(model)) if math.isfinite(x)) if any(
        math.isfinite(x) for x in (base_ppl, fluent_perplexity(model))) else float("nan")
    noise = projection_noise(model, direction, layer, tokens=max(1, max(len(r) for r in ids)))
    return [ConceptRow(c, t, p, p / reference if reference and math.isfinite(reference) else float("nan"),
                       distinct_n(t, 2), pr - base_proj, noise) for c, t, p, pr in zip(coefs, texts, ppl, proj)]


def _mean_projection(model: Model, text: str, direction: torch.Tensor, layer: int) -> float:
    """The text's mean projection on ``direction`` at ``layer``, read alone by the unsteered model (its first
    token, a BOS or the attention sink, left out)."""
    scores = [p for _, p in token_projections(model, text, direction, layer)[1:]] if text.strip() else []
    return sum(scores) / len(scores) if scores else float("nan")


def projection_noise(model: Model, direction: torch.Tensor, layer: int, *, tokens: int, n: int = 8) -> float:
    """How much the mean projection of an ordinary text of ``tokens`` tokens varies: the standard deviation
    over ``n`` held-out general texts cut to that length. A steered completion's projection change is called
    "more (or less) of the concept" only past twice this (two texts differ by about sqrt(2) sd by chance).

    Example:
        >>> projection_noise(model, v.at(15), 15, tokens=32)
    """
    tok = model.tokenizer
    cut = []
    for text in load_dataset("general", "heldout").sample(n, seed=1).texts:
        ids = tok(text, add_special_tokens=False)["input_ids"][:tokens]
        cut.append(tok.decode(ids))
    values = [v for v in (_mean_projection(model, t, direction, layer) for t in cut) if math.isfinite(v)]
    return float(np.std(values, ddof=1)) if len(values) >= 2 else float("nan")


def concept_conclusion(rows: Sequence[ConceptRow], *, damage_ratio: float = 2.0, min_distinct: float = 0.5) -> list[str]:
    """Sentences from the rows only: which coefficients moved the text towards the concept (a projection change
    past twice its noise on ordinary text) without breaking it (perplexity ratio against fluent text under
    ``damage_ratio``, distinct-2 above ``min_distinct``).

    Example:
        >>> concept_conclusion(rows)[0]
        'At 0.25 x centred norm the completion carries more of the concept than unsteered (projection +1.2, ...'
    """
    out = []
    for r in rows:
        if r.coefficient == 0:
            continue
        broken = []
        if not r.perplexity_ratio < damage_ratio:
            broken.append(f"perplexity {r.perplexity_ratio:.1f}x fluent text's")
        if not r.distinct_2 > min_distinct:
            broken.append(f"distinct-2 {r.distinct_2:.2f}: repetitive")
        threshold = 2 * r.noise
        if math.isfinite(threshold) and abs(r.projection) <= threshold:
            moved = (f"about as much of the concept as unsteered (projection {r.projection:+.2f}, within twice the "
                     f"noise of ordinary text, ±{threshold:.2f})")
        else:
            direction = "more" if r.projection > 0 else "less"
            moved = (f"{direction} of the concept than unsteered (projection {r.projection:+.2f}"
                     + (f", past twice the noise of ordinary text, ±{threshold:.2f})" if math.isfinite(threshold) else ")"))
        line = f"At {r.coefficient:g} x {UNIT_LABEL} the completion carries {moved}"
        out.append(line + (f", but the text is damaged ({'; '.join(broken)})." if broken else ", and reads intact."))
    return out or ["Only the unsteered row was generated."]


def save_concept(vector: SteeringVector, out_dir: str | Path, name: str, layer: int,
                 coefficient: float, unit: float) -> dict[str, Any]:
    """Save the vector (safetensors + JSON) and, where llama.cpp can hold it, a GGUF control vector
    scaled to what ``coefficient`` x the centred norm adds; returns what was written (or why not)."""
    from ..steer import relative_scale

    scale = relative_scale(vector.at(layer), unit, coefficient) if coefficient else 1.0
    saved = save_both(vector, Path(out_dir).expanduser() / "vectors" / name, coefficient=scale)
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in dict(saved).items()}


def rows_as_dicts(rows: Sequence[ConceptRow]) -> list[dict[str, Any]]:
    """Rows as plain values (for ``summary.json``)."""
    return [asdict(r) for r in rows]
