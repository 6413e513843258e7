"""Declared schemas: strict pydantic models whose every bad value is one sentence naming it and what was expected.

The machinery the notebooks' parameters (:mod:`steerlab.lab.params`) and notebook 04's configuration
(:class:`steerlab.study.compare.CompareConfig`) share, so each is validated once, by its own types: pydantic
checks each value against its field's type (strict: no bool for an integer, no string read as a number, no NaN);
the words of what was expected come from the same types (their JSON schema), so a rule and its description
cannot drift apart. Upper bounds (:data:`MAX_TOKENS` and the others) stop a typo or a hostile file before any
work starts.
"""

from __future__ import annotations

import copy
import difflib
import reprlib
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, TypeVar

from annotated_types import Ge, Le, MinLen
from pydantic import (
    BaseModel,
    BeforeValidator,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    StringConstraints,
    ValidationError,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import ErrorDetails, PydanticCustomError, core_schema

__all__ = [
    "MAX_BATCH",
    "MAX_COEFFICIENT",
    "MAX_COEFFICIENTS",
    "MAX_LAYER",
    "MAX_SAMPLES",
    "MAX_SEED",
    "MAX_TEXTS",
    "MAX_TOKENS",
    "Coefficient",
    "Layer",
    "ListOf",
    "Number",
    "OneOf",
    "ParameterError",
    "Schema",
    "Seed",
    "Text",
    "expected_words",
    "not_allowed",
    "shown",
    "unknown_names",
]


class ParameterError(ValueError):
    """A parameter (of a notebook, a params file or a configuration) that is missing, unknown or not allowed;
    the message names it, its value and what was expected."""


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


def not_allowed(expected: str) -> PydanticCustomError:
    """A validator's own account of what was expected (used as is in the error message)."""
    return PydanticCustomError("not_allowed", "expected {expected}", {"expected": expected})



class Schema(BaseModel):
    """Base of the declared schemas: every value checked on construction, every bad one named at once.

    ``WHERE`` opens the message (a notebook's file name; empty for none) and ``NOUN`` names a field in it
    (``"parameter"`` for a notebook, ``"CompareConfig"`` for notebook 04's configuration)::

        04_compare_methods.ipynb: parameter layers=[40] is not allowed: expected ...
    """

    WHERE: ClassVar[str] = ""
    NOUN: ClassVar[str] = "parameter"

    def __init__(self, **values: Any) -> None:
        message = unknown_names(list(values), self.names(), self.WHERE or type(self).__name__)
        if message:
            raise ParameterError(message)
        try:
            super().__init__(**values)
        except ValidationError as err:
            raise ParameterError(self._message(err, values)) from None

    @classmethod
    def _message(cls, err: ValidationError, values: Mapping[str, Any]) -> str:
        """One sentence per bad value, in the fields' order: the value and what was expected.

        Every check is a field's (types and field validators), so each error's ``loc`` starts
        with the field's name; a list item's error goes on with the item's index. A check across
        fields (a model validator) gives its own sentence.
        """
        by_name: dict[str, list[ErrorDetails]] = {}
        whole: list[str] = []
        for e in err.errors(include_url=False):
            if e["loc"]:
                by_name.setdefault(str(e["loc"][0]), []).append(e)
            else:
                whole.append(str(e["ctx"]["expected"]) if e["type"] == "not_allowed" else
                             str(e["ctx"]["error"]) if e["type"] == "value_error" else e["msg"])
        properties = cls.model_json_schema()["properties"]
        problems = []
        for name in (n for n in cls.names() if n in by_name):
            own = [e["ctx"]["expected"] for e in by_name[name] if e["type"] == "not_allowed"]
            items = [e for e in by_name[name] if len(e["loc"]) > 1 and isinstance(e["loc"][1], int)]
            value = values[name] if name in values else cls.defaults()[name]
            expected = own[0] if own else expected_words(properties[name])
            message = f"{cls.NOUN} {name}={shown(value)} is not allowed: expected {expected}"
            if items and not own:
                message += f" (item {items[0]['loc'][1]}: {shown(items[0]['input'])})"
            if isinstance(value, str) and _reads_as_number(value):
                message += (" (text, not a number: in a params file write a number unquoted, and an exponent "
                            "with a dot and a sign, 1.0e+300; YAML reads 1e300 as text)")
            problems.append(message)
        return (f"{cls.WHERE}: " if cls.WHERE else "") + "; ".join(problems + whole)

    @classmethod
    def names(cls) -> list[str]:
        """The field names, in order."""
        return list(cls.model_fields)

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Each field's default."""
        return {n: copy.deepcopy(f.get_default(call_default_factory=True)) for n, f in cls.model_fields.items()}

    @classmethod
    def help(cls) -> dict[str, str]:
        """One line per field: what it means and what it must be."""
        properties = cls.model_json_schema()["properties"]
        return {n: f"{f.description} ({expected_words(properties[n])})" for n, f in cls.model_fields.items()}
