"""The write-up's steering examples and a scored coefficient sweep.

An example is a recipe on named sets or prompts, a prompt, and the genre
vocabulary used to score how far completions moved towards the target. A
sweep runs every coefficient x sample as one batched generate call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..data import genres, load_dataset
from ..metrics import completion_perplexity
from ..models import Model
from ..stats import ActivationStats, activation_stats, pool_stats
from ..steer import Completion, relative_addition, steered_generate
from ..vectors import SteeringVector, counterbalanced, isolated, mean_centred, prompt_pair
from .vocab import genre_vocabularies, vocab_rate

__all__ = ["EXAMPLES", "Example", "SweepResult", "build_example", "run_sweep", "vocabularies"]

# name -> (recipe, target, reference, prompt, vocabulary scored)
EXAMPLES: dict[str, tuple[str, str, str, str, str]] = {
    "centring": ("mean_centred", "shakespeare", "general", "A girl once had a goose egg. She", "shakespeare"),
    "isolating": ("isolated", "science_fiction", "mixed", "Here is a story:", "science_fiction"),
    "additional": ("counterbalanced", "fantasy", "sports", "Yesterday, my son was out kicking a football. Then, he", "fantasy"),
    "love_hate": ("prompt_pair", "Love", "Hate", "I hate you because", "romance"),
}

_VOCAB: dict[str, list[str]] = {}


def vocabularies() -> dict[str, list[str]]:
    """Vocabularies of every genre and the Shakespeare-style set, from the training split."""
    if not _VOCAB:
        names = [*genres(), "shakespeare"]
        _VOCAB.update(genre_vocabularies({n: load_dataset(n, "train").texts for n in names}))
    return _VOCAB


@dataclass
class Example:
    name: str
    vector: SteeringVector
    layer: int
    prompt: str
    target: str
    vocab: list[str]
    typical_norm: float


def _set_stats(model: Model, name: str, layer: int, sample_size: int, max_length: int, seed: int) -> ActivationStats:
    if name == "mixed":
        parts = [_set_stats(model, g, layer, sample_size, max_length, seed) for g in genres()]
        return pool_stats(parts, "mixed")
    data = load_dataset(name, "train").sample(sample_size, seed=seed)
    # All layers: one pass costs the same, and the entry is shared with notebook 02's cache.
    return activation_stats(model, data, None, max_length=max_length, progress=False)


def build_example(model: Model, name: str, layer: int, *, sample_size: int = 32, max_length: int = 128,
                  seed: int = 0) -> Example:
    """Build one of :data:`EXAMPLES` at ``layer``."""
    if name not in EXAMPLES:
        raise KeyError(f"unknown example {name!r}; expected one of {list(EXAMPLES)}")
    recipe, target, reference, prompt, vocab_name = EXAMPLES[name]
    general = _set_stats(model, "general", layer, sample_size, max_length, seed)
    if recipe == "prompt_pair":
        vector = prompt_pair(model, target, reference, [layer])
    else:
        t = _set_stats(model, target, layer, sample_size, max_length, seed)
        r = general if reference == "general" else _set_stats(model, reference, layer, sample_size, max_length, seed)
        recipes: dict[str, Any] = {"mean_centred": mean_centred, "isolated": isolated,
                                   "counterbalanced": counterbalanced}
        make = recipes[recipe]
        vector = make(model, t, r, [layer])
    return Example(name, vector, layer, prompt, vocab_name, vocabularies()[vocab_name],
                   float(general.mean_norm[general.index(layer)]))


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
    """Every coefficient x sample in one batched generate call, scored.

    Rows with coefficient 0 are the unsteered control of the same call.
    """
    coefs = sorted({float(c) for c in sweep})
    v = example.vector.at(example.layer)
    unit = relative_addition(v, example.typical_norm, 1.0)
    scaled = SteeringVector({example.layer: unit}, example.vector.model_name, example.vector.model_fingerprint,
                            example.vector.d_model, example.vector.recipe, example.vector.sources, example.vector.position)
    rows = [c for c in coefs for _ in range(samples)]
    ids = steered_generate(model, [example.prompt] * len(rows), [None if c == 0 else c * unit for c in rows],
                           layer=example.layer, position=position, max_new_tokens=max_new_tokens, seed=seed)
    tok = model.tokenizer
    completions: dict[float, list[Completion]] = {c: [] for c in coefs}
    for c, row in zip(rows, ids):
        completions[c].append(Completion(example.prompt, tok.decode(row, skip_special_tokens=True), c, row,
                                         scaled.describe()))
    ppl = completion_perplexity(model, [example.prompt] * len(rows), ids)
    by_c = {c: [p for cc, p in zip(rows, ppl) if cc == c] for c in coefs}
    rate = [_mean([vocab_rate(x.text, example.vocab) for x in completions[c]]) for c in coefs]
    perplexity = [_mean(by_c[c]) for c in coefs]
    return SweepResult(coefs, completions, rate, perplexity, [math.log(p) if p > 0 else float("nan") for p in perplexity])
