"""The write-up's steering examples and a scored coefficient sweep.

An example is a construction of :mod:`steerlab.constructions` on named sets or prompts,
a prompt, and the vocabulary used to score how far completions moved towards the target
(:func:`steerlab.study.vocab.evaluation_vocabulary`). A sweep runs every coefficient x
sample as one batched generate call. :func:`steer_conclusion` and :func:`steer_headline`
turn a notebook's recorded sweeps into its conclusion and headline numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..constructions import build, typical_norm
from ..llamacpp import save_both
from ..metrics import completion_perplexity
from ..models import Model
from ..steer import Completion, added_vector, relative_scale, steered_generate
from ..vectors import SteeringVector
from .vocab import evaluation_vocabulary, vocab_rate

__all__ = [
    "EXAMPLES",
    "Example",
    "SweepResult",
    "build_example",
    "export_examples",
    "run_sweep",
    "steer_conclusion",
    "steer_headline",
]

# name -> construction inputs for steerlab.constructions.build, the prompt, the vocabulary scored
EXAMPLES: dict[str, dict[str, str]] = {
    "centring": {"construction": "mean_centred", "target": "shakespeare",
                 "prompt": "A girl once had a goose egg. She", "vocab": "shakespeare"},
    "isolating": {"construction": "isolated", "target": "science_fiction", "reference": "mixed",
                  "prompt": "Here is a story:", "vocab": "science_fiction"},
    "additional": {"construction": "counterbalanced", "target": "fantasy", "counter": "sports",
                   "prompt": "Yesterday, my son was out kicking a football. Then, he", "vocab": "fantasy"},
    "love_hate": {"construction": "prompt_pair", "plus": "Love", "minus": "Hate",
                  "prompt": "I hate you because", "vocab": "romance"},
}


@dataclass
class Example:
    name: str
    vector: SteeringVector
    layer: int
    prompt: str
    target: str
    vocab: list[str]
    typical_norm: float


def build_example(model: Model, name: str, layer: int, *, sample_size: int = 32, max_length: int = 128,
                  seed: int = 0) -> Example:
    """Build one of :data:`EXAMPLES` at ``layer``.

    Example:
        >>> ex = build_example(model, "isolating", 15)
    """
    if name not in EXAMPLES:
        raise KeyError(f"unknown example {name!r}; expected one of {list(EXAMPLES)}")
    spec: dict[str, Any] = dict(EXAMPLES[name])
    construction, prompt, vocab_name = spec.pop("construction"), spec.pop("prompt"), spec.pop("vocab")
    spec_kw: dict[str, Any] = {"sample_size": sample_size, "max_length": max_length, "seed": seed}
    vector = build(construction, model, [layer], **spec, **spec_kw)
    return Example(name, vector, layer, prompt, vocab_name, evaluation_vocabulary(vocab_name),
                   typical_norm(model, layer))  # the one unit, steerlab.sets.UNIT


@dataclass
class SweepResult:
    coefficients: list[float]
    completions: dict[float, list[Completion]]
    vocab_rate: list[float]
    perplexity: list[float]
    log_perplexity: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"coefficients": self.coefficients, "vocab_rate": self.vocab_rate, "perplexity": self.perplexity,
                "samples": {str(c): [x.text for x in cs] for c, cs in self.completions.items()}}


def _mean(xs: list[float]) -> float:
    good = [x for x in xs if math.isfinite(x)]
    return sum(good) / len(good) if good else float("nan")


def run_sweep(model: Model, example: Example, *, sweep: list[float], position: str, samples: int = 3,
              max_new_tokens: int = 40, seed: int = 0) -> SweepResult:
    """Every coefficient (x typical norm) x sample in one batched generate call, scored.

    Rows with coefficient 0 are the unsteered control of the same call.
    """
    coefs = sorted({float(c) for c in sweep})
    rows = [c for c in coefs for _ in range(samples)]
    vector = example.vector.at(example.layer)
    ids = steered_generate(model, [example.prompt] * len(rows), [added_vector(vector, c, example.typical_norm) for c in rows],
                           layer=example.layer, position=position, max_new_tokens=max_new_tokens, seed=seed)
    tok = model.tokenizer
    label = example.vector.describe()
    completions: dict[float, list[Completion]] = {c: [] for c in coefs}
    for c, row in zip(rows, ids):
        completions[c].append(Completion(example.prompt, tok.decode(row, skip_special_tokens=True), c, row, label))
    ppl = completion_perplexity(model, [example.prompt] * len(rows), ids)
    by_c = {c: [p for cc, p in zip(rows, ppl) if cc == c] for c in coefs}
    rate = [_mean([vocab_rate(x.text, example.vocab) for x in completions[c]]) for c in coefs]
    perplexity = [_mean(by_c[c]) for c in coefs]
    return SweepResult(coefs, completions, rate, perplexity, [math.log(p) if p > 0 else float("nan") for p in perplexity])


def _at(sweep: Mapping[str, Any], coefficient: float) -> int:
    coefs = [float(c) for c in sweep["coefficients"]]
    if float(coefficient) not in coefs or 0.0 not in coefs:
        raise ValueError(f"the sweep {coefs} lacks coefficient {coefficient} or the unsteered 0")
    return coefs.index(float(coefficient))


def steer_conclusion(by_example: Mapping[str, Mapping[str, Mapping[str, Any]]], positions: Sequence[str],
                     coefficient: float, samples: int) -> list[str]:
    """03's conclusion from its sweeps (``{example: {position: SweepResult.as_dict()}}``), numbers only.

    With ``first`` among several positions it says which position moved the vocabulary rate
    least, and explains it by the attention sink only when ``first`` moved it least;
    otherwise it warns that a few sampled completions can move by chance. A tie (every
    position moved it equally, e.g. not at all) is said as such, with no explanation.

    Example:
        >>> steer_conclusion({"love_hate": {"all": {"coefficients": [0.0, 1.0], "vocab_rate": [0.0, 0.1],
        ...                   "perplexity": [9.0, 12.0]}}}, ["all"], 1.0, 2)
        ['love_hate at ×1.0: all: vocab rate 0.000 -> 0.100, perplexity 9.0 -> 12.0']
    """
    lines = []
    for name, by_pos in by_example.items():
        parts = []
        for pos in positions:
            r = by_pos[pos]
            i = _at(r, coefficient)
            parts.append(f"{pos}: vocab rate {r['vocab_rate'][0]:.3f} -> {r['vocab_rate'][i]:.3f}, "
                         f"perplexity {r['perplexity'][0]:.1f} -> {r['perplexity'][i]:.1f}")
        lines.append(f"{name} at ×{coefficient}: " + "; ".join(parts))
    if "first" in positions and len(positions) > 1:
        moved = {pos: sum(abs(by_pos[pos]["vocab_rate"][_at(by_pos[pos], coefficient)] - by_pos[pos]["vocab_rate"][0])
                          for by_pos in by_example.values()) for pos in positions}
        quiet, loud = min(moved, key=moved.__getitem__), max(moved, key=moved.__getitem__)
        if moved[quiet] == moved[loud]:
            lines.append(f"Summed over examples, the vocabulary rate moved by {moved[quiet]:.3f} with every position "
                         f"rule, from {samples} sampled completion(s) per coefficient: no position stood out.")
            return lines
        lines.append(f"Summed over examples, the vocabulary rate moved least with position '{quiet}' "
                     f"({moved[quiet]:.3f}) and most with '{loud}' ({moved[loud]:.3f}), from {samples} sampled "
                     "completion(s) per coefficient.")
        if quiet == "first":
            lines.append("On SmolLM2 the first token is an attention sink whose residual norm is tens to hundreds of "
                         "times the others' (notebook 01), so a vector of typical-norm size added there is small "
                         "relative to it.")
        else:
            lines.append("Any change to the forward pass changes which tokens are sampled, so with this few samples a "
                         "rate can move by chance; compare the perplexities, and raise `samples` before reading a "
                         "difference between positions.")
    return lines


def steer_headline(by_example: Mapping[str, Mapping[str, Mapping[str, Any]]], positions: Sequence[str],
                   coefficient: float) -> dict[str, float]:
    """03's headline: per example, the vocabulary-rate change at ``coefficient`` at the last position rule."""
    pos = positions[-1]
    return {name: round(by_pos[pos]["vocab_rate"][_at(by_pos[pos], coefficient)] - by_pos[pos]["vocab_rate"][0], 4)
            for name, by_pos in by_example.items()}


def export_examples(examples: Mapping[str, Example], out_dir: str | Path, coefficient: float) -> list[dict[str, str]]:
    """Save each example's vector to ``out_dir/vectors/``: safetensors + JSON, and a llama.cpp
    control vector holding what 03 adds at ``coefficient`` (x the layer's typical norm), where
    llama.cpp can express it. One row per example: the files, or why there is no GGUF.

    Example:
        >>> export_examples(built, "runs/latest", 1.0)[0]["gguf"]
        'runs/latest/vectors/centring-L15.gguf'
    """
    rows = []
    for name, ex in examples.items():
        raw = relative_scale(ex.vector.at(ex.layer), ex.typical_norm, coefficient)
        saved = save_both(ex.vector, Path(out_dir) / "vectors" / f"{name}-L{ex.layer}", coefficient=raw)
        rows.append({"example": name, "vector": str(saved["safetensors"]),
                     "gguf": str(saved["gguf"]) if saved["gguf"] else f"none: {saved['gguf_error']}"})
    return rows
