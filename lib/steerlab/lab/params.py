"""Declared parameter schemas of the notebooks: one frozen pydantic model per notebook.

A notebook keeps its papermill ``parameters`` cell of plain variables (papermill injects
there); the next cell validates them all in one call::

    params = BiasParams.from_locals(globals())

pydantic checks each value against its field's type (strict: no bool for an integer, no
string read as a number, no NaN); the words of what was expected come from the same
types (their JSON schema), so the rule and its description cannot drift apart. A bad value
raises :class:`~steerlab.lab.report.ParameterError` naming the notebook, the parameter,
the value and what was expected; an unknown name (``max_lenght``) is an error that lists
the schema's real parameters. The runner (``run-notebooks --params``) checks a params file
against these schemas before it executes anything (papermill itself only warns).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import reprlib
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Self, TypeVar

from annotated_types import Ge, Gt, Le, Lt, MaxLen, MinLen
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic.json_schema import JsonDict, JsonSchemaValue
from pydantic_core import ErrorDetails, PydanticCustomError, core_schema

from ..constructions import CONSTRUCTIONS, named_sets
from ..data import genres as _genres
from ..models import Model
from ..study.compare import PRESETS, CompareConfig
from ..study.examples import EXAMPLES
from ..study.task_data import task_names
from ..study.tasks import PRESETS as TASK_PRESETS
from ..study.tasks import TaskConfig
from ..tokens import STEER_POSITIONS
from .report import ParameterError

__all__ = [
    "SCHEMAS",
    "BiasParams",
    "CompareParams",
    "ConceptParams",
    "InterpretParams",
    "ListOf",
    "NotebookParams",
    "OneOf",
    "SteerParams",
    "TaskParams",
    "Text",
    "expected_words",
    "schema_for",
    "shown",
    "unknown_names",
    "validate",
]


@dataclass(frozen=True, eq=False)  # options may be a dict (a registry): compared and hashed by identity
class OneOf:
    """A type's metadata: the value must be one of ``options``, read when a value is checked.

    ``options`` may be a callable, for lists known only at run time (the genres found in
    ``data/``), or a registry that may grow (``CONSTRUCTIONS``).

    Example:
        >>> from pydantic import TypeAdapter
        >>> TypeAdapter(Annotated[str, OneOf(["train", "heldout"])]).validate_python("train")
        'train'
    """

    options: Collection[Any] | Callable[[], Collection[Any]]

    def allowed(self) -> list[Any]:
        """The options now."""
        return list(self.options() if callable(self.options) else self.options)

    def _check(self, value: Any) -> Any:
        if value not in self.allowed():
            raise ValueError(f"{value!r} is not one of {self.allowed()!r}")
        return value

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self._check, handler(source))

    def __get_pydantic_json_schema__(self, schema: core_schema.CoreSchema,
                                     handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        out = handler(schema)
        out["enum"] = self.allowed()
        return out


def _tuple_as_list(value: Any) -> Any:
    """A tuple is a list written with parentheses (a set is not: it has no order)."""
    return list(value) if isinstance(value, tuple) else value


T = TypeVar("T")
ListOf = Annotated[list[T], BeforeValidator(_tuple_as_list), MinLen(1)]
"""A list (or tuple) of at least one ``T``; a further ``MinLen(n)`` after it raises the minimum."""

Text = Annotated[str, StringConstraints(pattern=r"\S")]
"""A string that is not blank."""

Number = float  # strict and finite by the schemas' config: an int is taken (as a float), a bool or "1" is not

# Upper bounds. A params file with max_new_tokens: 10**12 or samples: 10**9 must fail when it is
# checked, before a run folder exists, not hours into a run or in an allocation. Each bound is far
# past what a real run needs; a value past it is a typo or an attack.
MAX_LAYER = 1023  # no model steerlab can load comes near 1,024 blocks (Llama 3.1 405B has 126)
MAX_TEXTS = 10_000  # texts or prompts drawn from a bundled set: the largest holds 364 (mixed, train), and a
#                     number past a set's size takes all of it, so no run needs more
MAX_BATCH = 1024  # texts per forward pass: past the largest set's size it changes nothing
MAX_TOKENS = 32_768  # tokens kept per text: Gemma 3 270M's context, the longest of the models steerlab
#                      loads; every model's own position limit is checked as well
MAX_SAMPLES = 256  # completions per coefficient (03): 32x the default; more is days of CPU generation
MAX_COEFFICIENT = 1000  # |coefficient| in units of the centred norm: text is noise from about 10, and
#                           1,000 keeps c x unit far from float32's overflow (3.4e38)
MAX_COEFFICIENTS = 100  # coefficients in one sweep or grid: every one is a batch of generations
MAX_SEED = 2**32 - 1  # numpy's seed range, the narrowest of the generators a seed feeds

Layer = Annotated[int, Ge(0), Le(MAX_LAYER)]
Coefficient = Annotated[Number, Ge(-MAX_COEFFICIENT), Le(MAX_COEFFICIENT)]
Seed = Annotated[int, Ge(0), Le(MAX_SEED)]


def expected_words(schema: Mapping[str, Any]) -> str:
    """What a value must be, in words, from a field's JSON schema (pydantic's own account of its type).

    A field may give its own words as ``json_schema_extra={"expected": ...}``.

    Example:
        >>> expected_words({"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 0}})
        'a list of at least 1 item(s), each an integer >= 0'
    """
    if "expected" in schema:
        return str(schema["expected"])
    if "anyOf" in schema:
        kinds = [s for s in schema["anyOf"] if s.get("type") != "null"]
        words = " or ".join(expected_words(s) for s in kinds)
        return f"None or {words}" if len(kinds) < len(schema["anyOf"]) else words
    if "enum" in schema:
        return "one of " + ", ".join(repr(o) for o in schema["enum"])
    kind = schema.get("type")
    if kind == "boolean":
        return "True or False"
    if kind == "string":
        return "a non-empty string"
    if kind == "array":
        size = (f"{schema.get('minItems', 0)} to {schema['maxItems']}" if "maxItems" in schema
                else f"at least {schema.get('minItems', 0)}")
        return f"a list of {size} item(s), each {expected_words(schema['items'])}"
    if kind in ("integer", "number"):
        noun = "an integer" if kind == "integer" else "a number"
        low = ("[", schema["minimum"]) if "minimum" in schema else ("(", schema.get("exclusiveMinimum"))
        high = ("]", schema["maximum"]) if "maximum" in schema else (")", schema.get("exclusiveMaximum"))
        if low[1] is not None and high[1] is not None:
            if kind == "integer":
                return f"an integer from {low[1]} to {high[1]}"
            return f"a number in {low[0]}{low[1]}, {high[1]}{high[0]}"
        if low[1] is not None:
            return f"{noun} {'>=' if low[0] == '[' else '>'} {low[1]}"
        if high[1] is not None:
            return f"{noun} {'<=' if high[0] == ']' else '<'} {high[1]}"
        return noun
    raise TypeError(f"no words for the JSON schema {dict(schema)!r}: "
                    "give the field json_schema_extra={'expected': ...}")


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


_SHOWN = reprlib.Repr()  # Python 3.11's Repr takes no keywords: its limits are attributes
_SHOWN.maxlevel, _SHOWN.maxstring, _SHOWN.maxlong, _SHOWN.maxother = 1, 120, 60, 120
_SHOWN.maxtuple = _SHOWN.maxlist = _SHOWN.maxarray = _SHOWN.maxdict = _SHOWN.maxset = _SHOWN.maxfrozenset = 12


def shown(value: Any) -> str:
    """``repr(value)`` for a message, cut to a line: a params file's list of a million items
    (or a YAML alias bomb) is shown by its first items, not printed whole.

    Example:
        >>> shown(list(range(100)))
        '[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, ...]'
    """
    return _SHOWN.repr(value)


def _reads_as_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _not_allowed(expected: str) -> PydanticCustomError:
    """A validator's own account of what was expected (used as is in the error message)."""
    return PydanticCustomError("not_allowed", "expected {expected}", {"expected": expected})


class NotebookParams(BaseModel):
    """Base of the notebook schemas: validation on construction, ``from_locals``, ``as_dict``.

    Constructing one (``SteerParams(samples=2)``) checks every value and raises
    :class:`ParameterError` listing every bad one at once.
    """

    model_config = ConfigDict(strict=True, frozen=True, allow_inf_nan=False, validate_default=True,
                              protected_namespaces=())

    NOTEBOOK: ClassVar[str] = ""

    def __init__(self, **values: Any) -> None:
        message = unknown_names(list(values), self.names(), self.NOTEBOOK)
        if message:
            raise ParameterError(message)
        try:
            super().__init__(**values)
        except ValidationError as err:
            raise ParameterError(self._message(err, values)) from None

    @classmethod
    def _message(cls, err: ValidationError, values: Mapping[str, Any]) -> str:
        """One sentence per bad parameter, in the notebook's order: its value and what was expected.

        Every check is a field's (types and field validators), so each error's ``loc`` starts
        with the parameter's name; a list item's error goes on with the item's index.
        """
        by_name: dict[str, list[ErrorDetails]] = {}
        for e in err.errors(include_url=False):
            by_name.setdefault(str(e["loc"][0]), []).append(e)
        properties = cls.model_json_schema()["properties"]
        problems = []
        for name in (n for n in cls.names() if n in by_name):
            own = [e["ctx"]["expected"] for e in by_name[name] if e["type"] == "not_allowed"]
            items = [e for e in by_name[name] if len(e["loc"]) > 1 and isinstance(e["loc"][1], int)]
            value = values[name] if name in values else cls.defaults()[name]
            expected = own[0] if own else expected_words(properties[name])
            message = f"parameter {name}={shown(value)} is not allowed: expected {expected}"
            if items and not own:
                message += f" (item {items[0]['loc'][1]}: {shown(items[0]['input'])})"
            if isinstance(value, str) and _reads_as_number(value):
                message += (" (text, not a number: in a params file write a number unquoted, and an exponent "
                            "with a dot and a sign, 1.0e+300; YAML reads 1e300 as text)")
            problems.append(message)
        return f"{cls.NOTEBOOK}: " + "; ".join(problems)

    @classmethod
    def names(cls) -> list[str]:
        """The parameter names, in the notebook's order."""
        return list(cls.model_fields)

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Each parameter's default (the value in the notebook's ``parameters`` cell)."""
        return {n: copy.deepcopy(f.get_default(call_default_factory=True)) for n, f in cls.model_fields.items()}

    @classmethod
    def help(cls) -> dict[str, str]:
        """One line per parameter: what it means and what it must be.

        Example:
            >>> BiasParams.help()["max_length"]
            'tokens kept per text (an integer >= 2)'
        """
        properties = cls.model_json_schema()["properties"]
        return {n: f"{f.description} ({expected_words(properties[n])})" for n, f in cls.model_fields.items()}

    @classmethod
    def validate(cls, **values: Any) -> Self:  # type: ignore[override]  # pydantic's v1-era validate(value)
        """Check every value (unknown names too) and return the validated parameters.

        Raises:
            ParameterError: naming each bad parameter, its value and what was expected.

        Example:
            >>> BiasParams.validate(max_length=64).max_length
            64
        """
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
        return self.model_dump()

    def check_shape(self, model: Model) -> None:
        """Check the parameters that depend on the model's depth (layers) against ``model`` (anything with
        ``n_layers`` and ``name``: the runner passes the model's config, read before a run folder exists).
        Nothing to check by default.

        Raises:
            ParameterError: naming the parameter, its value and the model's range.
        """


P = TypeVar("P", bound=NotebookParams)


def validate(schema: type[P], **values: Any) -> P:
    """``schema.validate(**values)``: the one call a notebook makes on its parameters.

    Example:
        >>> params = validate(BiasParams, sample_size=6, max_length=48)
    """
    return schema.validate(**values)


_MODEL: JsonDict = {"expected": "None or a hub id / local path (None: the embedded SmolLM2-135M-Instruct)"}
_FOLDER: JsonDict = {"expected": "a folder path"}


def _check_layer(name: str, value: int, model: Model, *, top: int) -> int:
    if not 0 <= value <= top:
        raise ParameterError(f"parameter {name}={value!r} is not allowed: expected a layer from 0 to {top} "
                             f"({model.name} has {model.n_layers} layers)")
    return value


class BiasParams(NotebookParams):
    """``01_bias.ipynb``: the residual-stream bias per layer."""

    NOTEBOOK: ClassVar[str] = "01_bias.ipynb"
    model_name: Text | None = Field(None, description="the model", json_schema_extra=_MODEL)
    dataset: Annotated[str, OneOf(named_sets)] = Field(
        "general", description="text set standing in for the training distribution")
    split: Annotated[str, OneOf(["train", "heldout"])] | None = Field(
        "train", description="split of that set (None: all)")
    sample_size: Annotated[int, Ge(2), Le(MAX_TEXTS)] | None = Field(
        120, description="texts sampled from the set (None: all)")
    layers: ListOf[Layer] | None = Field(
        None, description="residual layers to measure (None: all, embeddings included)")
    batch_size: Annotated[int, Ge(1), Le(MAX_BATCH)] = Field(16, description="texts per forward pass")
    max_length: Annotated[int, Ge(2), Le(MAX_TOKENS)] = Field(128, description="tokens kept per text")
    seed: Seed = Field(0, description="sampling seed")
    output_dir: Text = Field("../runs/interactive", description="where summary.json and figures go",
                             json_schema_extra=_FOLDER)

    def check_shape(self, model: Model) -> None:
        for layer in self.layers or []:
            _check_layer("layers", layer, model, top=model.n_layers)


class InterpretParams(NotebookParams):
    """``02_interpret.ipynb``: raw, mean-centred and isolated genre vectors through the lens."""

    NOTEBOOK: ClassVar[str] = "02_interpret.ipynb"
    model_name: Text | None = Field(None, description="the model", json_schema_extra=_MODEL)
    genres: Annotated[ListOf[Annotated[str, OneOf(_genres)]], MinLen(2)] | None = Field(
        None, description="genres to compare (None: every genre in data/stories)")
    layer: Layer | None = Field(None, description="lens layer (None: about 60% depth)")
    top_k: Annotated[int, Ge(1), Le(100)] = Field(8, description="tokens per vector in the lens tables")
    sample_size: Annotated[int, Ge(1), Le(MAX_TEXTS)] = Field(
        32, description="training texts per set (each genre and general text)")
    heldout_per_genre: Annotated[int, Ge(1), Le(MAX_TEXTS)] | None = Field(
        None, description="held-out stories per genre to classify (None: all)")
    apply_norm: bool = Field(True, description="apply the final norm before the unembedding in the lens")
    batch_size: Annotated[int, Ge(1), Le(MAX_BATCH)] = Field(16, description="texts per forward pass (held-out stories)")
    max_length: Annotated[int, Ge(2), Le(MAX_TOKENS)] = Field(128, description="tokens kept per text")
    seed: Seed = Field(0, description="sampling seed")
    output_dir: Text = Field("../runs/interactive", description="where summary.json and figures go",
                             json_schema_extra=_FOLDER)

    def check_shape(self, model: Model) -> None:
        self.lens_layer(model)

    def lens_layer(self, model: Model) -> int:
        """The layer of the tables and heatmaps: ``layer``, or ``round(0.6 * n_layers)`` for None;
        one of the layers a vector is built at (``sl.build``: 0 to ``n_layers - 1``).

        Example:
            >>> InterpretParams(layer=12).lens_layer(model)
            12
        """
        layer = round(0.6 * model.n_layers) if self.layer is None else self.layer
        return _check_layer("layer", layer, model, top=model.n_layers - 1)


class SteerParams(NotebookParams):
    """``03_steer.ipynb``: the write-up's steering examples, swept over coefficients."""

    NOTEBOOK: ClassVar[str] = "03_steer.ipynb"
    model_name: Text | None = Field(None, description="the model", json_schema_extra=_MODEL)
    layer_fraction: Annotated[Number, Ge(0), Lt(1)] = Field(0.5, description="steering layer as a fraction of depth")
    examples: ListOf[Annotated[str, OneOf(EXAMPLES)]] = Field(
        ["centring", "isolating", "additional", "love_hate"], description="which examples to run")
    coefficient: Coefficient = Field(
        1.0, description="coefficient shown side by side (x the layer's centred norm, the unit)")
    sweep: Annotated[ListOf[Coefficient], MaxLen(MAX_COEFFICIENTS)] = Field(
        [0.0, 0.5, 1.0, 2.0], description="coefficients of the batched sweep, including 0 (the unsteered control)")
    positions: ListOf[Annotated[str, OneOf(STEER_POSITIONS)]] = Field(
        ["first", "all_prompt"], description="position rules compared")
    samples: Annotated[int, Ge(1), Le(MAX_SAMPLES)] = Field(
        8, description="completions per coefficient (5 or more give the judge's change a CI)")
    max_new_tokens: Annotated[int, Ge(1), Le(512)] = Field(32, description="tokens generated per completion")
    sample_size: Annotated[int, Ge(2), Le(MAX_TEXTS)] = Field(
        32, description="texts sampled from each set to build its mean")
    max_length: Annotated[int, Ge(2), Le(MAX_TOKENS)] = Field(128, description="tokens kept per text when building means")
    seed: Seed = Field(0, description="sampling seed")
    show_widget: bool = Field(True, description="show the live steering widget at the end")
    output_dir: Text = Field("../runs/interactive", description="where summary.json and figures go",
                             json_schema_extra=_FOLDER)

    @field_validator("sweep")
    @classmethod
    def _sweep_has_control(cls, sweep: list[float]) -> list[float]:
        if 0 not in sweep:
            raise _not_allowed(f"a list of 1 to {MAX_COEFFICIENTS} item(s), each a number in "
                               f"[{-MAX_COEFFICIENT}, {MAX_COEFFICIENT}], including 0 (the unsteered control)")
        return sweep

    def steering_layer(self, model: Model) -> int:
        """``round(layer_fraction * n_layers)``, at most the last block's input.

        Example:
            >>> SteerParams(layer_fraction=0.5).steering_layer(model)  # a 30-layer model
            15
        """
        return min(model.n_layers - 1, round(self.layer_fraction * model.n_layers))


def _targets() -> list[str]:
    return [*_genres(), "shakespeare"]


class CompareParams(NotebookParams):
    """``04_compare_methods.ipynb``: a preset of :class:`CompareConfig` with explicit overrides
    (``None``: the preset's value)."""

    NOTEBOOK: ClassVar[str] = "04_compare_methods.ipynb"
    model_name: Text | None = Field(None, description="the model", json_schema_extra=_MODEL)
    preset: Annotated[str, OneOf(PRESETS)] = Field(
        "default", description="quick (tests), default (make run) or full (every target)")
    targets: ListOf[Annotated[str, OneOf(_targets)]] | None = Field(
        None, description="target sets, each with its counter genre (None: the preset's)")
    depths: ListOf[Annotated[Number, Gt(0), Lt(1)]] | None = Field(
        None, description="layers as fractions of the model's depth (None: the preset's)")
    layers: ListOf[Layer] | None = Field(None, description="explicit layers, over depths (None: by depth)")
    coefficients: Annotated[ListOf[Coefficient], MinLen(3), MaxLen(MAX_COEFFICIENTS)] | None = Field(
        None, description="steerability grid x centred norm: 0, a negative and a positive value")
    positions: ListOf[Annotated[str, OneOf(STEER_POSITIONS)]] | None = Field(None, description="position rules")
    methods: ListOf[Annotated[str, OneOf(CONSTRUCTIONS)]] | None = Field(
        None, description="constructions to compare (None: every construction in the registry)")
    n_prompts: Annotated[int, Ge(2), Le(MAX_TEXTS)] | None = Field(
        None, description="story openings: half choose each coefficient, half report the score")
    # A perplexity ratio: 1.5 by default; at 100 the text is already broken, so no run needs more.
    damage_threshold: Annotated[Number, Gt(1), Le(100)] = Field(
        1.5, description="damage reference: perplexity ratio on general text")
    score_dtype: Annotated[str, OneOf(["auto", "float32", "bfloat16"])] = Field(
        "auto", description="forward-pass scores: auto (bfloat16 where the hardware has bfloat16 units)")
    cells_dir: Text | None = Field(
        "auto", description="where each finished (target, layer, position) cell is saved; the same parameters again "
        "read them back. 'auto': a folder 'cells' beside the run folder (runs/cells under make run); None: not saved",
        json_schema_extra={"expected": "'auto', None or a folder path"})
    output_dir: Text = Field("../runs/interactive", description="where summary.json and figures go",
                             json_schema_extra=_FOLDER)

    @field_validator("coefficients")
    @classmethod
    def _coefficients_span_zero(cls, c: list[float] | None) -> list[float] | None:
        if c is not None and not (0 in c and min(c) < 0 < max(c)):
            raise _not_allowed("a list that includes 0, a negative and a positive value (the steerability slope "
                               "runs through the unsteered point, both ways)")
        return c

    def config(self) -> CompareConfig:
        """The experiment: the preset's settings with every non-None parameter over them.

        Example:
            >>> CompareParams(preset="quick", n_prompts=6).config().n_prompts
            6
        """
        overrides = {k: getattr(self, k) for k in ("targets", "depths", "layers", "coefficients", "positions",
                                                   "methods", "n_prompts")}
        try:
            return CompareConfig.from_preset(self.preset, damage_threshold=self.damage_threshold,
                                             score_dtype=self.score_dtype, **overrides)
        except ValueError as err:
            raise ParameterError(f"{self.NOTEBOOK}: {err}") from err

    def check_shape(self, model: Model) -> None:
        self.check_model(self.config(), model)

    def cells_path(self) -> Path | None:
        """Where the cells are saved: ``cells_dir``, ``auto`` being ``cells/`` beside the run folder (so a second
        ``make run``, in a new run folder, reads back what a stopped one measured); ``None``: not saved.

        Example:
            >>> CompareParams(output_dir="../runs/20261207-101500").cells_path().name
            'cells'
        """
        if self.cells_dir is None:
            return None
        if self.cells_dir == "auto":
            return Path(self.output_dir).expanduser().resolve().parent / "cells"
        return Path(self.cells_dir).expanduser()

    def check_model(self, config: CompareConfig, model: Model) -> list[int]:
        """The swept layers on ``model``; a layer that is not a block input names ``layers``.

        Example:
            >>> params.check_model(params.config(), model)  # CompareParams(preset="quick"), 30 layers
            [15]
        """
        try:
            return config.resolved_layers(model)
        except ValueError as err:
            raise ParameterError(f"parameter layers={self.layers!r} is not allowed: {err} "
                                 f"({model.name} has {model.n_layers} layers)") from err


# Those that take your texts as the target (word_pair reads a named set's name as a word).
_TARGET_CONSTRUCTIONS = [n for n, c in CONSTRUCTIONS.items() if "target" in c.inputs and n != "word_pair"]


class ConceptParams(NotebookParams):
    """``05_your_concept.ipynb``: a vector from your own texts, steered and saved."""

    NOTEBOOK: ClassVar[str] = "05_your_concept.ipynb"
    model_name: Text | None = Field(None, description="the model", json_schema_extra=_MODEL)
    texts: Annotated[ListOf[Text], MinLen(2)] = Field(
        ["Arr, matey! Hoist the black flag and make for the island.",
         "The pirate captain buried his gold beneath the old palm tree.",
         "Our ship sailed on, the crew singing shanties under a crescent moon.",
         "Avast! Ready the cannons, lads, a merchant ship lies off the bow."],
        description="texts that show your concept")
    construction: Annotated[str, OneOf(_TARGET_CONSTRUCTIONS)] = Field(
        "mean_centred", description="a construction that takes a target set")
    counter_texts: ListOf[Text] | None = Field(None, description="texts of the opposite, for counterbalanced / pca_diff")
    layer_fraction: Annotated[Number, Gt(0), Lt(1)] = Field(0.5, description="steering layer as a fraction of depth")
    prompt: Text = Field("The weather today is", description="the prompt to steer")
    coefficients: Annotated[ListOf[Coefficient], MaxLen(MAX_COEFFICIENTS)] = Field(
        [0.0, 0.125, 0.25, 0.5], description="coefficients x centred norm; 0 is the unsteered row")
    max_new_tokens: Annotated[int, Ge(1), Le(512)] = Field(32, description="tokens generated per completion")
    top_k: Annotated[int, Ge(1), Le(100)] = Field(10, description="tokens shown by the logit lens")
    name: Annotated[str, StringConstraints(pattern=r"^[\w.-]+$")] = Field(
        "my_concept", description="file name of the saved vector",
        json_schema_extra={"expected": "a file name of letters, digits, _ . and -"})
    output_dir: Text = Field("../runs/interactive", description="where summary.json and the vector go",
                             json_schema_extra=_FOLDER)

    @field_validator("counter_texts")
    @classmethod
    def _counter_when_needed(cls, counter: list[str] | None, info: ValidationInfo) -> list[str] | None:
        construction = info.data.get("construction")
        if counter is None and construction in ("counterbalanced", "pca_diff"):
            raise _not_allowed(f"a list of texts of the opposite: construction {construction!r} needs them")
        return counter


# --- notebook 06 (issue 37): task vectors -------------------------------------------------------------


class TaskParams(NotebookParams):
    """``06_task_vectors.ipynb``: a preset of :class:`~steerlab.study.tasks.TaskConfig` with explicit
    overrides (``None``: the preset's value)."""

    NOTEBOOK: ClassVar[str] = "06_task_vectors.ipynb"
    model_name: Text | None = Field(None, description="the model", json_schema_extra=_MODEL)
    preset: Annotated[str, OneOf(TASK_PRESETS)] = Field(
        "default", description="quick (tests), default (make run) or full (the record)")
    tasks: ListOf[Annotated[str, OneOf(task_names)]] | None = Field(
        None, description="in-context tasks from data/tasks (None: the preset's)")
    shots: Annotated[int, Ge(1), Le(64)] | None = Field(None, description="demonstrations per few-shot prompt")
    vector_prompts: Annotated[int, Ge(2), Le(MAX_TEXTS)] | None = Field(
        None, description="few-shot prompts each task vector is the mean over")
    depths: Annotated[ListOf[Annotated[Number, Gt(0), Lt(1)]], MaxLen(MAX_COEFFICIENTS)] | None = Field(
        None, description="the layer sweep as fractions of the model's depth")
    contrast_depths: Annotated[ListOf[Annotated[Number, Gt(0), Lt(1)]], MaxLen(MAX_COEFFICIENTS)] | None = Field(
        None, description="the contrasts' layers as fractions of depth (named in advance)")
    coefficients: Annotated[ListOf[Annotated[Number, Gt(0), Le(MAX_COEFFICIENT)]], MaxLen(MAX_COEFFICIENTS)] | None = (
        Field(None, description="settings x centred norm, each chosen on half the held-out pairs"))
    heldout_per_task: Annotated[int, Ge(4), Le(MAX_TEXTS)] | None = Field(
        None, description="held-out pairs per task: half choose the setting, half report")
    min_few_shot_accuracy: Annotated[Number, Ge(0), Le(1)] | None = Field(
        None, description="few-shot accuracy a task needs to be kept")
    affine_reference: Annotated[str, OneOf(["general", "shuffled"])] | None = Field(
        None, description="the affine edit's reference point: general text or the shuffled-label prompts")
    output_dir: Text = Field("../runs/interactive", description="where summary.json and figures go",
                             json_schema_extra=_FOLDER)

    def config(self) -> TaskConfig:
        """The experiment: the preset's settings with every non-None parameter over them.

        Example:
            >>> TaskParams(preset="quick", shots=2).config().shots
            2
        """
        overrides = {k: getattr(self, k) for k in ("shots", "vector_prompts", "heldout_per_task",
                                                   "min_few_shot_accuracy", "affine_reference")
                     if getattr(self, k) is not None}
        overrides.update({k: tuple(getattr(self, k)) for k in ("tasks", "depths", "contrast_depths", "coefficients")
                          if getattr(self, k) is not None})
        try:
            return dataclasses.replace(TASK_PRESETS[self.preset], **overrides)
        except ValueError as err:
            raise ParameterError(f"{self.NOTEBOOK}: {err}") from err


SCHEMAS: dict[str, type[NotebookParams]] = {
    s.NOTEBOOK.removesuffix(".ipynb"): s
    for s in (BiasParams, InterpretParams, SteerParams, CompareParams, ConceptParams, TaskParams)
}


def schema_for(notebook: str) -> type[NotebookParams] | None:
    """The schema of a notebook by file name or stem (``03_steer.ipynb``), or ``None``.

    Example:
        >>> schema_for("notebooks/03_steer.ipynb") is SteerParams
        True
    """
    stem = notebook.rsplit("/", 1)[-1].removesuffix(".ipynb")
    return SCHEMAS.get(stem)
