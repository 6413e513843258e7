"""Declared parameter schemas of the notebooks: one frozen dataclass per notebook.

A notebook keeps its papermill ``parameters`` cell of plain variables (papermill injects
there); the next cell validates them all in one call::

    params = BiasParams.from_locals(globals())

Every field carries a :class:`Rule` (what the value must be, in words). A bad value
raises :class:`~steerlab.lab.report.ParameterError` naming the parameter, the value and
what was expected; an unknown name (``max_lenght``) is an error that lists the schema's
real parameters. The runner (``run-notebooks --params``) checks a params file against
these schemas before it executes anything (papermill itself only warns).
"""

# ruff: noqa: RUF009 - param() returns a dataclasses.field (default, rule, help), which ruff cannot see

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, ClassVar, Self, TypeVar

from ..constructions import CONSTRUCTIONS, named_sets
from ..data import genres as _genres
from ..models import Model
from ..study.compare import PRESETS, CompareConfig
from ..study.examples import EXAMPLES
from ..tokens import STEER_POSITIONS
from .report import ParameterError

__all__ = [
    "SCHEMAS",
    "BiasParams",
    "CompareParams",
    "InterpretParams",
    "NotebookParams",
    "Rule",
    "SteerParams",
    "flag",
    "integer",
    "list_of",
    "number",
    "one_of",
    "param",
    "schema_for",
    "text",
    "unknown_names",
    "validate",
]


@dataclass(frozen=True)
class Rule:
    """What a parameter's value must be: a predicate and its description in words.

    ``expected`` may be a callable, for lists known only at run time (the genres).
    """

    ok: Callable[[Any], bool]
    expected: str | Callable[[], str]

    def describe(self) -> str:
        return self.expected() if callable(self.expected) else self.expected

    def check(self, value: Any) -> bool:
        try:
            return bool(self.ok(value))
        except Exception:  # noqa: BLE001 - a predicate that raises means the value is not allowed
            return False


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _maybe(rule: Rule, optional: bool) -> Rule:
    if not optional:
        return rule
    return Rule(lambda v: v is None or rule.ok(v), lambda: f"None or {rule.describe()}")


def integer(*, min: int | None = None, max: int | None = None, optional: bool = False) -> Rule:
    """An integer (never a bool) in ``[min, max]``.

    Example:
        >>> integer(min=2).describe()
        'an integer >= 2'
    """
    if min is not None and max is not None:
        words = f"an integer from {min} to {max}"
    elif min is not None:
        words = f"an integer >= {min}"
    elif max is not None:
        words = f"an integer <= {max}"
    else:
        words = "an integer"
    return _maybe(Rule(lambda v: _is_int(v) and (min is None or v >= min) and (max is None or v <= max), words),
                  optional)


def number(*, min: float | None = None, below: float | None = None, above: float | None = None,
           nonzero: bool = False, optional: bool = False) -> Rule:
    """A finite int or float: ``min <= v``, ``v < below``, ``v > above``, ``v != 0`` as asked.

    Example:
        >>> number(min=0, below=1).describe()
        'a number in [0, 1)'
    """
    if min is not None and below is not None:
        words = f"a number in [{min}, {below})"
    elif above is not None and below is not None:
        words = f"a number in ({above}, {below})"
    elif above is not None:
        words = f"a number > {above}"
    elif min is not None:
        words = f"a number >= {min}"
    else:
        words = "a non-zero number" if nonzero else "a number"
    return _maybe(Rule(lambda v: _is_number(v) and (min is None or v >= min) and (below is None or v < below)
                       and (above is None or v > above) and (not nonzero or v != 0), words), optional)


def flag(*, optional: bool = False) -> Rule:
    """``True`` or ``False`` (not 0 or 1)."""
    return _maybe(Rule(lambda v: isinstance(v, bool), "True or False"), optional)


def text(what: str = "a non-empty string", *, optional: bool = False) -> Rule:
    """A string that is not blank."""
    return _maybe(Rule(lambda v: isinstance(v, str) and bool(v.strip()), what), optional)


def one_of(options: Sequence[Any] | Callable[[], Sequence[Any]], *, optional: bool = False) -> Rule:
    """One of ``options`` (a callable is read when checked: e.g. the genres found in ``data/``).

    Example:
        >>> one_of(["train", "heldout"]).describe()
        "one of 'train', 'heldout'"
    """
    def allowed() -> list[Any]:
        return list(options() if callable(options) else options)

    return _maybe(Rule(lambda v: v in allowed(), lambda: "one of " + ", ".join(repr(o) for o in allowed())),
                  optional)


def list_of(item: Rule, *, min_len: int = 1, must_include: Any = MISSING, optional: bool = False) -> Rule:
    """A list (or tuple) of at least ``min_len`` items, each passing ``item``.

    Example:
        >>> list_of(integer(min=0)).describe()
        'a list of at least 1 item(s), each an integer >= 0'
    """
    def ok(v: Any) -> bool:
        return (isinstance(v, (list, tuple)) and len(v) >= min_len and all(item.check(x) for x in v)
                and (must_include is MISSING or must_include in v))

    def words() -> str:
        extra = "" if must_include is MISSING else f", including {must_include!r}"
        return f"a list of at least {min_len} item(s), each {item.describe()}{extra}"

    return _maybe(Rule(ok, words), optional)


def param(default: Any, rule: Rule, help: str) -> Any:
    """A schema field: its default (the notebook's), its :class:`Rule` and a one-line meaning."""
    meta = {"rule": rule, "help": help}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


def unknown_names(names: Sequence[str], known: Sequence[str], where: str) -> str | None:
    """An error message for names not in ``known`` (with close matches), or ``None``.

    Example:
        >>> unknown_names(["max_lenght"], ["max_length", "seed"], "01_bias.ipynb")
        "unknown parameter 'max_lenght' (did you mean 'max_length'?); 01_bias.ipynb's parameters: max_length, seed"
    """
    bad = [n for n in names if n not in known]
    if not bad:
        return None
    parts = []
    for n in bad:
        close = difflib.get_close_matches(n, list(known), n=1)
        parts.append(f"{n!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    noun = "parameter" if len(bad) == 1 else "parameters"
    return f"unknown {noun} {', '.join(parts)}; {where}'s parameters: {', '.join(known)}"


@dataclass(frozen=True)
class NotebookParams:
    """Base of the notebook schemas: validation on construction, ``from_locals``, ``as_dict``."""

    NOTEBOOK: ClassVar[str] = ""

    def __post_init__(self) -> None:
        problems = []
        for f in fields(self):
            rule: Rule = f.metadata["rule"]
            value = getattr(self, f.name)
            if not rule.check(value):
                problems.append(f"parameter {f.name}={value!r} is not allowed: expected {rule.describe()}")
        problems.extend(self._cross_checks())
        if problems:
            raise ParameterError(f"{self.NOTEBOOK}: " + "; ".join(problems))

    def _cross_checks(self) -> list[str]:
        """Rules between fields (e.g. counter differs from target); messages name the parameter."""
        return []

    @classmethod
    def names(cls) -> list[str]:
        """The parameter names, in the notebook's order."""
        return [f.name for f in fields(cls)]

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Each parameter's default (the value in the notebook's ``parameters`` cell)."""
        out = {}
        for f in fields(cls):
            out[f.name] = f.default_factory() if f.default_factory is not MISSING else f.default
        return out

    @classmethod
    def help(cls) -> dict[str, str]:
        """One line per parameter: what it means and what it must be."""
        return {f.name: f"{f.metadata['help']} ({f.metadata['rule'].describe()})" for f in fields(cls)}

    @classmethod
    def validate(cls, **values: Any) -> Self:
        """Check every value (unknown names too) and return the validated parameters.

        Raises:
            ParameterError: naming each bad parameter, its value and what was expected.

        Example:
            >>> BiasParams.validate(max_length=64).max_length
            64
        """
        message = unknown_names(list(values), cls.names(), cls.NOTEBOOK)
        if message:
            raise ParameterError(message)
        return cls(**values)

    @classmethod
    def from_locals(cls, namespace: Mapping[str, Any]) -> Self:
        """Validate the parameters a notebook defined as variables (``globals()``).

        Example:
            >>> params = SteerParams.from_locals(globals())
        """
        missing = [n for n in cls.names() if n not in namespace]
        if missing:
            raise ParameterError(f"{cls.NOTEBOOK}: parameters {missing} are not defined; "
                                 f"its parameters cell must define {', '.join(cls.names())}")
        return cls.validate(**{n: namespace[n] for n in cls.names()})

    def as_dict(self) -> dict[str, Any]:
        """The values, for ``summary.json`` and the run report."""
        return asdict(self)


P = TypeVar("P", bound=NotebookParams)


def validate(schema: type[P], **values: Any) -> P:
    """``schema.validate(**values)``: the one call a notebook makes on its parameters.

    Example:
        >>> params = validate(BiasParams, sample_size=6, max_length=48)
    """
    return schema.validate(**values)


_MODEL = "None (the embedded SmolLM2-135M-Instruct) or a hub id / local path"


def _check_layer(name: str, value: int, model: Model, *, top: int) -> int:
    if not 0 <= value <= top:
        raise ParameterError(f"parameter {name}={value!r} is not allowed: expected a layer from 0 to {top} "
                             f"({model.name} has {model.n_layers} layers)")
    return value


@dataclass(frozen=True)
class BiasParams(NotebookParams):
    """``01_bias.ipynb``: the residual-stream bias per layer."""

    NOTEBOOK: ClassVar[str] = "01_bias.ipynb"
    model_name: str | None = param(None, text(_MODEL, optional=True), "the model")
    dataset: str = param("general", one_of(named_sets), "text set standing in for the training distribution")
    split: str | None = param("train", one_of([None, "train", "heldout"]), "split of that set (None: all)")
    sample_size: int | None = param(120, integer(min=2, optional=True), "texts sampled from the set (None: all)")
    layers: list[int] | None = param(None, list_of(integer(min=0), optional=True),
                                     "residual layers to measure (None: all, embeddings included)")
    batch_size: int = param(16, integer(min=1), "texts per forward pass")
    max_length: int = param(128, integer(min=2), "tokens kept per text")
    seed: int = param(0, integer(), "sampling seed")
    output_dir: str = param("../runs/interactive", text("a folder path"), "where summary.json and figures go")


@dataclass(frozen=True)
class InterpretParams(NotebookParams):
    """``02_interpret.ipynb``: raw, mean-centred and isolated genre vectors through the lens."""

    NOTEBOOK: ClassVar[str] = "02_interpret.ipynb"
    model_name: str | None = param(None, text(_MODEL, optional=True), "the model")
    genres: list[str] | None = param(None, list_of(one_of(_genres), min_len=2, optional=True),
                                     "genres to compare (None: every genre in data/stories)")
    layer: int | None = param(None, integer(min=0, optional=True), "lens layer (None: about 60% depth)")
    top_k: int = param(8, integer(min=1, max=100), "tokens per vector in the lens tables")
    sample_size: int = param(32, integer(min=1), "training texts per set (each genre and general text)")
    heldout_per_genre: int | None = param(None, integer(min=1, optional=True),
                                          "held-out stories per genre to classify (None: all)")
    apply_norm: bool = param(True, flag(), "apply the final norm before the unembedding in the lens")
    batch_size: int = param(16, integer(min=1), "texts per forward pass (held-out stories)")
    max_length: int = param(128, integer(min=2), "tokens kept per text")
    seed: int = param(0, integer(), "sampling seed")
    output_dir: str = param("../runs/interactive", text("a folder path"), "where summary.json and figures go")

    def lens_layer(self, model: Model) -> int:
        """The layer of the tables and heatmaps: ``layer``, or ``round(0.6 * n_layers)`` for None."""
        layer = round(0.6 * model.n_layers) if self.layer is None else self.layer
        return _check_layer("layer", layer, model, top=model.n_layers)


@dataclass(frozen=True)
class SteerParams(NotebookParams):
    """``03_steer.ipynb``: the write-up's steering examples, swept over coefficients."""

    NOTEBOOK: ClassVar[str] = "03_steer.ipynb"
    model_name: str | None = param(None, text(_MODEL, optional=True), "the model")
    layer_fraction: float = param(0.5, number(min=0, below=1), "steering layer as a fraction of depth")
    examples: list[str] = param(["centring", "isolating", "additional", "love_hate"], list_of(one_of(list(EXAMPLES))),
                                "which examples to run")
    coefficient: float = param(1.0, number(), "coefficient shown side by side (x typical activation norm)")
    sweep: list[float] = param([0.0, 0.5, 1.0, 2.0], list_of(number(), must_include=0),
                               "coefficients of the batched sweep (0 is the unsteered control)")
    positions: list[str] = param(["first", "all_prompt"], list_of(one_of(STEER_POSITIONS)), "position rules compared")
    samples: int = param(2, integer(min=1), "completions per coefficient")
    max_new_tokens: int = param(32, integer(min=1, max=512), "tokens generated per completion")
    sample_size: int = param(32, integer(min=2), "texts sampled from each set to build its mean")
    max_length: int = param(128, integer(min=2), "tokens kept per text when building means")
    seed: int = param(0, integer(), "sampling seed")
    show_widget: bool = param(True, flag(), "show the live steering widget at the end")
    output_dir: str = param("../runs/interactive", text("a folder path"), "where summary.json and figures go")

    def steering_layer(self, model: Model) -> int:
        """``round(layer_fraction * n_layers)``, at most the last block's input."""
        return min(model.n_layers - 1, round(self.layer_fraction * model.n_layers))


def _targets() -> list[str]:
    return [*_genres(), "shakespeare"]


@dataclass(frozen=True)
class CompareParams(NotebookParams):
    """``04_compare_methods.ipynb``: a preset of :class:`CompareConfig` with explicit overrides
    (``None``: the preset's value)."""

    NOTEBOOK: ClassVar[str] = "04_compare_methods.ipynb"
    model_name: str | None = param(None, text(_MODEL, optional=True), "the model")
    preset: str = param("default", one_of(list(PRESETS)), "quick (tests), default (make run) or full (every target)")
    targets: list[str] | None = param(None, list_of(one_of(_targets), optional=True),
                                      "target sets, each with its counter genre (None: the preset's)")
    depths: list[float] | None = param(None, list_of(number(above=0, below=1), optional=True),
                                       "layers as fractions of the model's depth (None: the preset's)")
    layers: list[int] | None = param(None, list_of(integer(min=0), optional=True),
                                     "explicit layers, over depths (None: by depth)")
    coefficients: list[float] | None = param(None, list_of(number(), min_len=3, optional=True),
                                             "steerability grid x typical norm: 0, a negative and a positive value")
    positions: list[str] | None = param(None, list_of(one_of(STEER_POSITIONS), optional=True), "position rules")
    methods: list[str] | None = param(None, list_of(one_of(list(CONSTRUCTIONS)), optional=True),
                                      "constructions to compare (None: every construction in the registry)")
    n_prompts: int | None = param(None, integer(min=2, optional=True),
                                  "story openings: half choose each coefficient, half report the score")
    damage_threshold: float = param(1.5, number(above=1), "damage reference: perplexity ratio on general text")
    score_dtype: str = param("auto", one_of(["auto", "float32", "bfloat16"]),
                             "forward-pass scores: auto (bfloat16 where the hardware has bfloat16 units)")
    output_dir: str = param("../runs/interactive", text("a folder path"), "where summary.json and figures go")

    def _cross_checks(self) -> list[str]:
        c = self.coefficients
        if c is not None and all(isinstance(x, (int, float)) for x in c) and not (0 in c and min(c) < 0 < max(c)):
            return [(f"parameter coefficients={c!r} is not allowed: expected a list that includes 0, a negative and "
                    "a positive value (the steerability slope runs through the unsteered point, both ways)")]
        return []

    def config(self) -> CompareConfig:
        """The experiment: the preset's settings with every non-None parameter over them."""
        overrides = {k: getattr(self, k) for k in ("targets", "depths", "layers", "coefficients", "positions",
                                                   "methods", "n_prompts")}
        try:
            return CompareConfig.from_preset(self.preset, damage_threshold=self.damage_threshold,
                                             score_dtype=self.score_dtype, **overrides)
        except ValueError as err:
            raise ParameterError(f"{self.NOTEBOOK}: {err}") from err

    def check_model(self, config: CompareConfig, model: Model) -> list[int]:
        """The swept layers on ``model``; a layer that is not a block input names ``layers``."""
        try:
            return config.resolved_layers(model)
        except ValueError as err:
            raise ParameterError(f"parameter layers={self.layers!r} is not allowed: {err} "
                                 f"({model.name} has {model.n_layers} layers)") from err


SCHEMAS: dict[str, type[NotebookParams]] = {
    s.NOTEBOOK.removesuffix(".ipynb"): s for s in (BiasParams, InterpretParams, SteerParams, CompareParams)
}


def schema_for(notebook: str) -> type[NotebookParams] | None:
    """The schema of a notebook by file name or stem (``03_steer.ipynb``), or ``None``."""
    stem = notebook.rsplit("/", 1)[-1].removesuffix(".ipynb")
    return SCHEMAS.get(stem)
