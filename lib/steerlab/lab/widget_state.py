"""The steering widget's state as values: its settings, the coefficient slider's scale, and what the
settings say without a model running (the build call, the reproduce code, a save's file name).

No ipywidgets and no forward pass here: the controller (:mod:`steerlab.lab.widget`) reads its
controls into a :class:`Settings`, and everything below is a pure function of it, tested alone.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from ..constructions import CONSTRUCTIONS
from ..models import EMBEDDED_MODEL
from ..sets import STATS_SAMPLE

__all__ = ["CoefficientScale", "Settings", "first_input", "second_input"]


def second_input(construction: str) -> str | None:
    """The role of the widget's second box for a construction (``None``: the box is unused).

    Example:
        >>> second_input("counterbalanced"), second_input("mean_centred")
        ('counter', None)
    """
    roles = [r for r in CONSTRUCTIONS[construction].inputs if r not in ("target", "plus")]
    return roles[0] if roles else None


def first_input(construction: str) -> str | None:
    """The role of the first box: ``target``, ``plus`` (prompt pairs), or ``None`` (``bias``).

    Example:
        >>> first_input("prompt_pair"), first_input("bias")
        ('plus', None)
    """
    roles = [r for r in CONSTRUCTIONS[construction].inputs if r in ("target", "plus")]
    return roles[0] if roles else None


def _slug(text: str) -> str:
    keep = "".join(ch if ch.isalnum() else "_" for ch in text.strip())[:24].strip("_")
    return keep or "empty"


@dataclass(frozen=True)
class Settings:
    """Everything one steered generation of the widget depends on.

    ``coefficient`` is ``None`` until the first useful range gives the default. ``target`` and
    ``reference`` are the two boxes, whose roles depend on the construction (:func:`first_input`,
    :func:`second_input`).
    """

    prompt: str = "Yesterday, my son was out kicking a football. Then, he"
    construction: str = "counterbalanced"
    target: str = "fantasy"
    reference: str = "sports"
    layer: int = 15
    coefficient: float | None = None
    position: str = "all"
    operator: str = "add"
    max_new_tokens: int = 30
    seed: int = 0
    samples: int = 1
    greedy: bool = False
    temperature: float = 1.0
    top_p: float = 0.3
    sample_size: int = STATS_SAMPLE.sample_size
    max_length: int = STATS_SAMPLE.max_length

    def with_(self, **changes: Any) -> Settings:
        """A copy with ``changes``.

        Example:
            >>> Settings().with_(layer=9).layer
            9
        """
        return replace(self, **changes)

    @property
    def n(self) -> int:
        """Completions per side (one under greedy decoding)."""
        return 1 if self.greedy else int(self.samples)

    def sampling(self) -> dict[str, Any]:
        """The :class:`steerlab.steer.Sampling` keywords these settings generate with."""
        if self.greedy:
            return {"do_sample": False}
        return {"do_sample": True, "seed": int(self.seed), "temperature": float(self.temperature),
                "top_p": float(self.top_p)}

    def build_spec(self) -> tuple[str, dict[str, Any]]:
        """The construction and the keyword arguments of :func:`steerlab.build` the settings describe.

        The first box is the target set (the ``plus`` text for ``prompt_pair``); the second is the
        construction's second input (reference, counter, minus), unused by ``raw``,
        ``mean_centred``, ``random`` and ``bias``.

        Example:
            >>> Settings(construction="mean_centred", target="fantasy").build_spec()[1]["target"]
            'fantasy'
        """
        name = self.construction
        first, second = self.target.strip(), self.reference.strip()
        spec: dict[str, Any] = {"sample_size": self.sample_size, "max_length": self.max_length}
        if name == "random" and int(self.seed):
            spec["seed"] = int(self.seed)
        if first_input(name) == "plus":  # texts as typed: a leading space is part of the prompt's tokens
            spec["plus"] = self.target if first else ""
            if second:
                spec["minus"] = self.reference
        elif first_input(name) == "target":
            spec["target"] = first
            role = second_input(name)
            if role is not None and second:
                spec[role] = second
        return name, spec

    def vector_key(self) -> tuple[Any, ...]:
        """What the vector (and so its useful range at a position) depends on."""
        name, spec = self.build_spec()
        return (name, tuple(sorted(spec.items())), int(self.layer))

    def unsteered_key(self, fingerprint: str) -> tuple[Any, ...]:
        """What the unsteered completions depend on (the model's ``fingerprint`` included)."""
        sampling = ("greedy",) if self.greedy else (int(self.samples), float(self.temperature), float(self.top_p))
        return (fingerprint, self.prompt.strip(), int(self.max_new_tokens), int(self.seed), *sampling)

    def reproduce_code(self, model_name: str, *, load_model: bool = True, path: str | Path | None = None) -> str:
        """Python lines that reproduce the steered side with the library (:func:`steerlab.generate`).

        Example:
            >>> print(Settings(coefficient=0.25).reproduce_code("smollm2-135m-instruct"))
            import steerlab as sl
            ...
        """
        name, spec = self.build_spec()
        args = "".join(f", {k}={v!r}" for k, v in spec.items())
        model_arg = "" if model_name == EMBEDDED_MODEL else repr(model_name)
        sampling = ", ".join(f"{k}={v!r}" for k, v in self.sampling().items())
        coefficient = float(self.coefficient if self.coefficient is not None else 0.0)
        lines = ["import steerlab as sl", ""]
        if load_model:
            lines.append(f"model = sl.load_model({model_arg})")
        lines.append(f"vector = sl.build({name!r}, model, [{int(self.layer)}]{args})")
        if path is not None:
            lines.append(f"# or the saved copy: vector = sl.load_vector({str(path)!r}, model)")
        lines += [
            f"completions = sl.generate(model, [{self.prompt.strip()!r}] * {self.n}, vector, layer={int(self.layer)},",
            (f"                          coefficients={coefficient!r}, position={self.position!r}, "
             f"operator={self.operator!r},"),
            f"                          max_new_tokens={int(self.max_new_tokens)}, {sampling})",
            "for c in completions:",
            "    print(c.text)",
        ]
        return "\n".join(lines) + "\n"

    def file_stem(self) -> str:
        """A save's default file name: the construction, the inputs it used, the layer and the
        coefficient (``mean_centred`` has no second input, so its name has none).

        Example:
            >>> Settings(coefficient=0.22).file_stem()
            'counterbalanced-fantasy-sports-L15-c0.22'
        """
        name, spec = self.build_spec()
        used = [_slug(str(spec[k])) for k in ("target", "plus", "reference", "counter", "minus") if k in spec]
        if "seed" in spec:
            used.append(f"seed{spec['seed']}")
        coefficient = "" if self.coefficient is None else f"-c{float(self.coefficient):g}"
        return "-".join([name, *used, f"L{int(self.layer)}"]) + coefficient

    def as_dict(self) -> dict[str, Any]:
        """The settings as plain values (the page's static summary)."""
        return asdict(self)


@dataclass(frozen=True)
class CoefficientScale:
    """The coefficient slider's scale: signed and logarithmic, so a step is a fixed share of the
    coefficient (about 6% at the defaults), fine inside a useful range of 0.1-0.5 and still
    reaching a few units.

    Slider position ``p`` (an integer in ``[-steps, steps]``) means ``0`` at ``p = 0`` and
    ``sign(p) x smallest x (largest / smallest) ** ((|p| - 1) / (steps - 1))`` otherwise.

    Example:
        >>> s = CoefficientScale()
        >>> s.coefficient(s.position(0.25))
        0.25...
    """

    smallest: float = 1 / 64
    largest: float = 4.0
    steps: int = 100

    def __post_init__(self) -> None:
        if not (0 < self.smallest < self.largest and math.isfinite(self.largest) and self.steps >= 2):
            raise ValueError(f"a slider scale needs 0 < smallest < largest and steps >= 2, got {self}")

    def coefficient(self, position: int) -> float:
        """The coefficient at slider ``position``."""
        p = max(-self.steps, min(self.steps, int(position)))
        if p == 0:
            return 0.0
        magnitude = self.smallest * (self.largest / self.smallest) ** ((abs(p) - 1) / (self.steps - 1))
        return math.copysign(magnitude, p)

    def position(self, coefficient: float) -> int:
        """The nearest slider position to ``coefficient`` (the ends for coefficients beyond them)."""
        c = float(coefficient)
        if not math.isfinite(c):
            raise ValueError(f"coefficient {coefficient!r} is not a finite number")
        if abs(c) < self.smallest / 2:
            return 0
        k = 1 + (self.steps - 1) * math.log(max(abs(c), self.smallest) / self.smallest) / math.log(
            self.largest / self.smallest)
        return int(math.copysign(min(self.steps, round(k)), c))

    def fraction(self, coefficient: float) -> float:
        """Where ``coefficient`` sits along the slider's track, from 0 (left end) to 1 (right end)."""
        return (self.position(coefficient) + self.steps) / (2 * self.steps)
