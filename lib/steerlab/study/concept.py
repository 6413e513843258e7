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

from ..llamacpp import save_both
from ..metrics import completion_perplexity, distinct_n
from ..models import Model
from ..projection import token_projections
from ..sets import UNIT_LABEL
from ..steer import rows, steered_generate
from ..vectors import SteeringVector

__all__ = ["ConceptRow", "concept_conclusion", "rows_as_dicts", "save_concept", "steer_rows"]


@dataclass
class ConceptRow:
    """One completion of the prompt at one coefficient, with its judge-free measures."""

    coefficient: float
    text: str
    perplexity: float
    perplexity_ratio: float
    distinct_2: float
    projection: float


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
    proj = []
    for text in texts:
        # The completion read alone by the unsteered model, its first token (BOS or sink) left out.
        scores = [p for _, p in token_projections(model, text, direction, layer)[1:]] if text.strip() else []
        proj.append(sum(scores) / len(scores) if scores else float("nan"))
    base_ppl, base_proj = ppl[coefs.index(0.0)], proj[coefs.index(0.0)]
    return [ConceptRow(c, t, p, p / base_ppl if base_ppl and math.isfinite(base_ppl) else float("nan"),
                       distinct_n(t, 2), pr - base_proj) for c, t, p, pr in zip(coefs, texts, ppl, proj)]


def concept_conclusion(rows: Sequence[ConceptRow], *, damage_ratio: float = 2.0, min_distinct: float = 0.5) -> list[str]:
    """Sentences from the rows only: which coefficients moved the text towards the concept without
    breaking it (perplexity ratio under ``damage_ratio``, distinct-2 above ``min_distinct``).

    Example:
        >>> concept_conclusion(rows)[0]
        'At 0.25 x centred norm the completion carries more of the concept (projection +1.2) ...'
    """
    out = []
    for r in rows:
        if r.coefficient == 0:
            continue
        broken = []
        if not r.perplexity_ratio < damage_ratio:
            broken.append(f"perplexity {r.perplexity_ratio:.1f}x the unsteered text's")
        if not r.distinct_2 > min_distinct:
            broken.append(f"distinct-2 {r.distinct_2:.2f}: repetitive")
        moved = "more" if r.projection > 0 else "less"
        line = (f"At {r.coefficient:g} x {UNIT_LABEL} the completion carries {moved} of the concept than unsteered "
                f"(projection {r.projection:+.2f})")
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
