"""The write-up's steering examples and a scored coefficient sweep.

An example is a construction of :mod:`steerlab.constructions` on named sets or prompts,
a prompt, and the vocabulary used to score how far completions moved towards the target
(:func:`steerlab.study.vocab.evaluation_vocabulary`). A sweep runs every coefficient x
sample as one batched generate call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..constructions import build, typical_norm
from ..metrics import completion_perplexity
from ..models import Model
from ..steer import Completion, relative_addition, steered_generate
from ..vectors import SteeringVector
from .vocab import evaluation_vocabulary, vocab_rate

__all__ = ["EXAMPLES", "Example", "SweepResult", "build_example", "run_sweep"]

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
                   typical_norm(model, layer, **spec_kw))


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
    unit = relative_addition(example.vector.at(example.layer), example.typical_norm, 1.0)
    rows = [c for c in coefs for _ in range(samples)]
    ids = steered_generate(model, [example.prompt] * len(rows), [None if c == 0 else c * unit for c in rows],
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
