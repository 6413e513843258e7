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

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Self, TypeAlias, TypeVar

from annotated_types import Ge, Gt, Le, Lt, MaxLen, MinLen
from pydantic import (
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
)
from pydantic.json_schema import JsonDict

from ..constructions import CONSTRUCTIONS, named_sets
from ..data import genres as _genres
from ..models import Model
from ..study.compare import PRESETS, CompareConfig
from ..study.examples import EXAMPLES
from ..study.schema import (
    MAX_BATCH,
    MAX_COEFFICIENT,
    MAX_COEFFICIENTS,
    MAX_SAMPLES,
    MAX_TEXTS,
    MAX_TOKENS,
    Coefficient,
    Layer,
    ListOf,
    Number,
    OneOf,
    ParameterError,
    Schema,
    Seed,
    Text,
    expected_words,
    not_allowed,
    shown,
    unknown_names,
)
from ..study.task_data import task_names
from ..study.tasks import PRESETS as TASK_PRESETS
from ..study.tasks import TaskConfig
from ..tokens import STEER_POSITIONS

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


class NotebookParams(Schema):
    """Base of the notebook schemas: validation on construction, ``from_locals``, ``as_dict``.

    Constructing one (``SteerParams(samples=2)``) checks every value and raises
    :class:`ParameterError` listing every bad one at once.
    """

    model_config = ConfigDict(strict=True, frozen=True, allow_inf_nan=False, validate_default=True,
                              protected_namespaces=())

    NOTEBOOK: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.WHERE = cls.NOTEBOOK  # the messages open with the notebook's file name

    @classmethod
    def help(cls) -> dict[str, str]:
        """One line per parameter: what it means and what it must be.

        Example:
            >>> BiasParams.help()["max_length"]
            'tokens kept per text (an integer from 2 to 32768)'
        """
        return super().help()

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
            raise not_allowed(f"a list of 1 to {MAX_COEFFICIENTS} item(s), each a number in "
                               f"[{-MAX_COEFFICIENT}, {MAX_COEFFICIENT}], including 0 (the unsteered control)")
        return sweep

    def steering_layer(self, model: Model) -> int:
        """``round(layer_fraction * n_layers)``, at most the last block's input.

        Example:
            >>> SteerParams(layer_fraction=0.5).steering_layer(model)  # a 30-layer model
            15
        """
        return min(model.n_layers - 1, round(self.layer_fraction * model.n_layers))


def _override(name: str) -> Any:
    """``CompareConfig``'s declared type of field ``name``, or ``None`` (the preset's value): one rule, one place."""
    return _declared(name) | None


def _declared(name: str) -> Any:
    """``CompareConfig``'s declared type of field ``name``, constraints included."""
    f = CompareConfig.model_fields[name]
    return Annotated[f.annotation, *f.metadata] if f.metadata else f.annotation  # type: ignore[name-defined]


def _described(name: str, default: Any = None) -> Any:
    """A parameter field with ``CompareConfig``'s description and expected words for ``name``."""
    f = CompareConfig.model_fields[name]
    extra = dict(f.json_schema_extra) if isinstance(f.json_schema_extra, dict) else None
    if default is not None:
        return Field(default, description=f.description, json_schema_extra=extra)
    if extra and "expected" in extra:
        extra["expected"] = f"None or {extra['expected']}"
    return Field(None, description=f"{f.description} (None: the preset's)", json_schema_extra=extra)


if TYPE_CHECKING:  # built at import from CompareConfig's fields, which a type checker cannot follow
    _Targets: TypeAlias = Any
    _Depths: TypeAlias = Any
    _Layers: TypeAlias = Any
    _Coefficients: TypeAlias = Any
    _Positions: TypeAlias = Any
    _Constructions: TypeAlias = Any
    _NPrompts: TypeAlias = Any
    _Threshold: TypeAlias = Any
    _ScoreDtype: TypeAlias = Any
else:
    _Targets = _override("targets")
    _Depths = _override("depths")
    _Layers = _override("layers")
    _Coefficients = _override("coefficients")
    _Positions = _override("positions")
    _Constructions = _override("constructions")
    _NPrompts = _override("n_prompts")
    _Threshold = _declared("damage_threshold")
    _ScoreDtype = _declared("score_dtype")


class CompareParams(NotebookParams):
    """``04_compare_methods.ipynb``: a preset of :class:`CompareConfig` with explicit overrides (``None``: the
    preset's value). Each override has ``CompareConfig``'s own type, and the merged configuration is built once
    on construction, so a rule across fields (the steerability grid, repeats) is the configuration's rule, said
    in the notebook's words.

    Example:
        >>> CompareParams(coefficients=[0.0, 0.25])
        Traceback (most recent call last):
        ParameterError: 04_compare_methods.ipynb: parameter coefficients=[0.0, 0.25] is not allowed: expected ...
    """

    NOTEBOOK: ClassVar[str] = "04_compare_methods.ipynb"
    model_name: Text | None = Field(None, description="the model", json_schema_extra=_MODEL)
    preset: Annotated[str, OneOf(PRESETS)] = Field(
        "default", description="quick (tests), default (make run) or full (every target)")
    targets: _Targets = _described("targets")
    depths: _Depths = _described("depths")
    layers: _Layers = _described("layers")
    coefficients: _Coefficients = _described("coefficients")
    positions: _Positions = _described("positions")
    constructions: _Constructions = _described("constructions")
    n_prompts: _NPrompts = _described("n_prompts")
    damage_threshold: _Threshold = _described("damage_threshold", 1.5)
    score_dtype: _ScoreDtype = _described("score_dtype", "auto")
    cells_dir: Text | None = Field(
        "auto", description="where each finished (target, layer, position) cell is saved; the same parameters again "
        "read them back. 'auto': a folder 'cells' beside the run folder (runs/cells under make run); None: not saved",
        json_schema_extra={"expected": "'auto', None or a folder path"})
    output_dir: Text = Field("../runs/interactive", description="where summary.json and figures go",
                             json_schema_extra=_FOLDER)

    _OVERRIDES: ClassVar[tuple[str, ...]] = ("targets", "depths", "layers", "coefficients", "positions",
                                             "constructions", "n_prompts")

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        # the rules across fields, checked now, in the notebook's words, on the values as given
        self._merged({k: values[k] if k in values else getattr(self, k) for k in self._OVERRIDES})

    def config(self) -> CompareConfig:
        """The experiment: the preset's settings with every non-None parameter over them.

        Raises:
            ParameterError: a value the configuration refuses, named as this notebook's parameter.

        Example:
            >>> CompareParams(preset="quick", n_prompts=6).config().n_prompts
            6
        """
        return self._merged({k: getattr(self, k) for k in self._OVERRIDES})

    def _merged(self, overrides: Mapping[str, Any]) -> CompareConfig:
        checked = _NotebookConfig.from_preset(self.preset, damage_threshold=self.damage_threshold,
                                              score_dtype=self.score_dtype, **overrides)
        return CompareConfig(**checked.model_dump())

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
            raise ParameterError(f"{self.NOTEBOOK}: parameter layers={self.layers!r} is not allowed: {err} "
                                 f"({model.name} has {model.n_layers} layers)") from err


class _NotebookConfig(CompareConfig):
    """:class:`CompareConfig` whose messages name notebook 04's parameters (the same rules)."""

    WHERE: ClassVar[str] = CompareParams.NOTEBOOK
    NOUN: ClassVar[str] = "parameter"


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
            raise not_allowed(f"a list of texts of the opposite: construction {construction!r} needs them")
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
