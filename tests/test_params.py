"""The notebooks' declared parameter schemas (steerlab.lab.params): each kind of bad value
is rejected with a message naming the parameter; the schemas cannot drift from the
notebooks' parameters cells; ``run-notebooks --params`` refuses a misspelled name before
running anything; 04's presets keep their numbers."""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Annotated, Any

import papermill
import pytest
from pydantic import TypeAdapter, ValidationError
from steerlab.constructions import CONSTRUCTIONS
from steerlab.data import genres
from steerlab.lab.cli import main
from steerlab.lab.params import (
    SCHEMAS,
    BiasParams,
    CompareParams,
    ConceptParams,
    InterpretParams,
    NotebookParams,
    OneOf,
    SteerParams,
    expected_words,
    schema_for,
    validate,
)
from steerlab.lab.report import ParameterError
from steerlab.lab.runner import check_parameters
from steerlab.study.compare import PRESETS, CompareConfig

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def parameters_cell(notebook: Path) -> dict[str, Any]:
    """The names and literal values of a notebook's papermill ``parameters`` cell, in order."""
    nb = json.loads(notebook.read_text(encoding="utf-8"))
    cells = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"{notebook.name}: expected one cell tagged 'parameters', found {len(cells)}"
    values: dict[str, Any] = {}
    for node in ast.parse("".join(cells[0]["source"])).body:
        assert isinstance(node, ast.Assign) and len(node.targets) == 1, ast.dump(node)
        target = node.targets[0]
        assert isinstance(target, ast.Name)
        values[target.id] = ast.literal_eval(node.value)
    return values


@pytest.mark.parametrize("stem", sorted(SCHEMAS))
def test_parameters_cell_equals_schema(stem: str) -> None:
    """Same names, same order, same defaults: a parameter added to one and not the other fails."""
    schema = SCHEMAS[stem]
    cell = parameters_cell(NOTEBOOKS / f"{stem}.ipynb")
    assert list(cell) == schema.names()
    assert cell == schema.defaults()
    schema.validate(**cell)  # the notebook's own defaults pass


def test_every_notebook_has_a_schema() -> None:
    stems = {p.stem for p in NOTEBOOKS.glob("[0-9]*.ipynb")}
    assert stems == set(SCHEMAS)
    assert schema_for("notebooks/03_steer.ipynb") is SteerParams and schema_for("99_none") is None


BAD: list[tuple[type[NotebookParams], str, Any, str]] = [
    (BiasParams, "model_name", "  ", "None or"),
    (BiasParams, "dataset", "fantasi", "'fantasy'"),  # an unknown set name lists the known ones
    (BiasParams, "split", "test", "'heldout'"),
    (BiasParams, "sample_size", 1, "integer from 2 to 10000"),
    (BiasParams, "layers", [], "at least 1"),
    (BiasParams, "layers", [1, "2"], "integer from 0 to 1023"),
    (BiasParams, "batch_size", True, "integer from 1 to 1024"),  # a bool is not an integer here
    (BiasParams, "max_length", 2.5, "integer from 2 to 32768"),
    (BiasParams, "seed", "0", "an integer"),
    (BiasParams, "output_dir", 3, "a folder path"),
    (InterpretParams, "genres", ["fantasy"], "at least 2"),
    (InterpretParams, "genres", ["fantasy", "fantasi"], "'science_fiction'"),
    (InterpretParams, "layer", -1, "integer from 0 to 1023"),
    (InterpretParams, "top_k", 101, "from 1 to 100"),
    (InterpretParams, "sample_size", 0, "integer from 1 to 10000"),
    (InterpretParams, "heldout_per_genre", 0, "None or an integer from 1 to 10000"),
    (InterpretParams, "apply_norm", 1, "True or False"),
    (SteerParams, "layer_fraction", 1.0, "[0, 1)"),
    (SteerParams, "examples", ["centring", "centering"], "'love_hate'"),
    (SteerParams, "coefficient", math.nan, "a number"),
    (SteerParams, "sweep", [0.5, 1.0], "including 0"),
    (SteerParams, "positions", ["middle"], "'all_prompt'"),
    (SteerParams, "samples", 0, "integer from 1 to 256"),
    (SteerParams, "max_new_tokens", 513, "from 1 to 512"),
    (SteerParams, "show_widget", "yes", "True or False"),
    (CompareParams, "preset", "fast", "'quick', 'default', 'full'"),
    (CompareParams, "targets", ["fantasi"], "'shakespeare'"),
    (CompareParams, "depths", [1.0], "a number in (0, 1)"),
    (CompareParams, "layers", [-1], "integer from 0 to 1023"),
    (CompareParams, "coefficients", [0, 0.5], "including 0, a negative and a positive value"),
    (CompareParams, "coefficients", [0.0, 0.25, 0.5], "including 0, a negative and a positive"),
    (CompareParams, "positions", ["middle"], "'after_bos'"),
    (CompareParams, "n_prompts", 1, "integer from 2 to 10000"),
    (CompareParams, "damage_threshold", 1.0, "(1, 100]"),
    # upper bounds (issue 38): a value no real run needs fails when checked, before a run folder exists
    (BiasParams, "sample_size", 10**14, "from 2 to 10000"),
    (BiasParams, "seed", 10**30, "from 0 to 4294967295"),
    (SteerParams, "samples", 10**12, "from 1 to 256"),
    (SteerParams, "coefficient", 1e300, "a number in [-1000, 1000]"),
    (SteerParams, "max_new_tokens", 10**12, "from 1 to 512"),
    (CompareParams, "n_prompts", 10**15, "from 2 to 10000"),
    (CompareParams, "layers", [10**12], "from 0 to 1023"),
    (ConceptParams, "coefficients", [0.0, -1e6], "each a number in [-1000, 1000]"),
]


@pytest.mark.parametrize(("schema", "name", "value", "expected"), BAD,
                         ids=[f"{s.__name__}.{n}={v!r}" for s, n, v, _ in BAD])
def test_bad_value_names_parameter(schema: type[NotebookParams], name: str, value: Any, expected: str) -> None:
    with pytest.raises(ParameterError) as err:
        validate(schema, **{name: value})
    message = str(err.value)
    assert f"parameter {name}={value!r} is not allowed" in message
    assert expected in message
    assert schema.NOTEBOOK in message


def _listing(options: Any) -> str:
    return ", ".join(repr(o) for o in options)


NUMBER_AS_TEXT = (" (text, not a number: in a params file write a number unquoted, and an exponent with a dot and "
                  "a sign, 1.0e+300; YAML reads 1e300 as text)")

FULL: list[tuple[type[NotebookParams], dict[str, Any], str]] = [
    # a wrong type: a string is never read as a number, a bool never counts as an integer
    (BiasParams, {"batch_size": "16"}, "parameter batch_size='16' is not allowed: expected an integer from 1 to 1024"
     + NUMBER_AS_TEXT),
    (SteerParams, {"layer_fraction": "0.5"},
     "parameter layer_fraction='0.5' is not allowed: expected a number in [0, 1)" + NUMBER_AS_TEXT),
    (SteerParams, {"coefficient": True},
     "parameter coefficient=True is not allowed: expected a number in [-1000, 1000]"),
    # an out-of-range number
    (InterpretParams, {"top_k": 101}, "parameter top_k=101 is not allowed: expected an integer from 1 to 100"),
    (CompareParams, {"damage_threshold": 1}, "parameter damage_threshold=1 is not allowed: expected a number in (1, 100]"),
    # an unknown choice lists the known ones
    (CompareParams, {"preset": "fast"},
     "parameter preset='fast' is not allowed: expected one of 'quick', 'default', 'full'"),
    (BiasParams, {"split": "test"},
     "parameter split='test' is not allowed: expected None or one of 'train', 'heldout'"),
    # a bad list element: the whole list, what each item must be, and which item is wrong
    (BiasParams, {"layers": [1, "2"]}, ("parameter layers=[1, '2'] is not allowed: expected None or a list of at least "
                                       "1 item(s), each an integer from 0 to 1023 (item 1: '2')")),
    (CompareParams, {"depths": [0.5, 1.0]}, ("parameter depths=[0.5, 1.0] is not allowed: expected None or a list of "
                                            "0 to 64 item(s), each a number in (0, 1) (item 1: 1.0)")),
    # a rule across the list (CompareConfig's own), said as the notebook's parameter
    (CompareParams, {"targets": ["fantasy", "fantasy"]},
     "parameter targets=['fantasy', 'fantasy'] is not allowed: expected a list without repeats ('fantasy' repeated)"),
    (CompareParams, {"constructions": ["mean_centred", "centred"]},
     ("parameter constructions=['mean_centred', 'centred'] is not allowed: expected None or a list of at least 1 item(s), "
     f"each one of {_listing(CONSTRUCTIONS)} (item 1: 'centred')")),
    (InterpretParams, {"genres": ("fantasy", "fantasi")},
     ("parameter genres=('fantasy', 'fantasi') is not allowed: expected None or a list of at least 2 item(s), "
     f"each one of {_listing(genres())} (item 1: 'fantasi')")),
    # a validator's own words
    (SteerParams, {"sweep": [1.0]}, ("parameter sweep=[1.0] is not allowed: expected a list of 1 to 100 item(s), "
                                    "each a number in [-1000, 1000], including 0 (the unsteered control)")),
    # a huge value is shown by its first items, not printed whole (a YAML alias bomb expands to billions)
    (ConceptParams, {"texts": [["lol"] * 9] * 9}, ("parameter texts=[[...], [...], [...], [...], [...], [...], "
                                                  "[...], [...], [...]] is not allowed: expected a list of at least 2 "
                                                  "item(s), each a non-empty string (item 0: ['lol', 'lol', 'lol', "
                                                  "'lol', 'lol', 'lol', 'lol', 'lol', 'lol'])")),
]


@pytest.mark.parametrize(("schema", "values", "message"), FULL, ids=[f"{s.__name__}.{v}" for s, v, _ in FULL])
def test_message_in_full(schema: type[NotebookParams], values: dict[str, Any], message: str) -> None:
    """The whole message: the notebook, the parameter, the value as given and what was expected."""
    with pytest.raises(ParameterError) as err:
        schema(**values)
    assert str(err.value) == f"{schema.NOTEBOOK}: {message}"


def test_values_kept_or_read_as_documented() -> None:
    """An int is a number (read as a float); a tuple is a list; a set (no order) is not; strings keep their spaces."""
    params = SteerParams(coefficient=2, sweep=(0, 1), positions=("all",))
    assert params.coefficient == 2.0 and isinstance(params.coefficient, float)
    assert params.sweep == [0.0, 1.0] and params.positions == ["all"]
    assert params.as_dict()["sweep"] == [0.0, 1.0]
    with pytest.raises(ParameterError, match=r"parameter positions=\{'all'\} is not allowed: expected a list"):
        SteerParams(positions={"all"})
    assert BiasParams(output_dir=" runs ").output_dir == " runs "
    assert BiasParams(split=None, sample_size=None).split is None


def test_params_are_frozen() -> None:
    params = SteerParams()
    with pytest.raises(ValidationError, match="frozen"):
        params.samples = 3  # type: ignore[misc]
    assert params.samples == 8


def test_help_words_come_from_the_types() -> None:
    """Every field of every schema has words (expected_words knows every type used), the same as in the errors."""
    for schema in SCHEMAS.values():
        assert list(schema.help()) == schema.names()
    assert BiasParams.help()["max_length"] == "tokens kept per text (an integer from 2 to 32768)"
    assert CompareParams.help()["coefficients"].endswith(
        "(None or a list of numbers, finite, distinct, and including 0, a negative and a positive value (a slope "
        "through the unsteered point, both ways))")
    with pytest.raises(TypeError, match="no words for the JSON schema"):
        expected_words({"type": "object"})


def test_choices_are_read_when_checked() -> None:
    """OneOf reads a callable's options at each check (the genres found in data/, a registry that grows)."""
    options = ["a"]
    adapter = TypeAdapter(Annotated[str, OneOf(lambda: options)])
    assert adapter.validate_python("a") == "a"
    with pytest.raises(ValidationError):
        adapter.validate_python("b")
    options.append("b")
    assert adapter.validate_python("b") == "b"
    assert expected_words(adapter.json_schema()) == "one of 'a', 'b'"


def test_unknown_name_lists_real_parameters() -> None:
    with pytest.raises(ParameterError) as err:
        BiasParams.validate(max_lenght=64)
    message = str(err.value)
    assert "'max_lenght' (did you mean 'max_length'?)" in message
    assert all(name in message for name in BiasParams.names())


def test_every_bad_value_reported_at_once() -> None:
    with pytest.raises(ParameterError) as err:
        SteerParams.validate(samples=0, max_new_tokens=0)
    assert "parameter samples=0" in str(err.value) and "parameter max_new_tokens=0" in str(err.value)


def test_from_locals() -> None:
    namespace = {**SteerParams.defaults(), "samples": 5, "unrelated": object()}
    assert SteerParams.from_locals(namespace).samples == 5
    del namespace["seed"]
    with pytest.raises(ParameterError, match="'seed'"):
        SteerParams.from_locals(namespace)


def test_model_dependent_checks() -> None:
    model: Any = SimpleNamespace(name="tiny", n_layers=30)
    assert InterpretParams().lens_layer(model) == 18  # round(0.6 * 30)
    assert InterpretParams(layer=29).lens_layer(model) == 29  # the last block's input: a vector is built there
    with pytest.raises(ParameterError, match="parameter layer=30 .* from 0 to 29"):
        InterpretParams(layer=30).lens_layer(model)  # sl.build refuses layer n_layers (issue 38)
    assert SteerParams(layer_fraction=0.99).steering_layer(model) == 29  # never past the last block input
    assert CompareParams(preset="quick").check_model(CompareParams(preset="quick").config(), model) == [15]
    params = CompareParams(layers=[8, 30])
    with pytest.raises(ParameterError, match=r"parameter layers=\[8, 30\] is not allowed: .*\[30\].*0\.\.29"):
        params.check_model(params.config(), model)


@pytest.mark.parametrize("preset", ["quick", "default", "full"])
def test_presets_are_the_configs(preset: str) -> None:
    """A preset is exactly its PRESETS entry over CompareConfig's defaults (None keeps it)."""
    cfg = CompareConfig.from_preset(preset, n_prompts=None, layers=None)
    assert {k: getattr(cfg, k) for k in PRESETS[preset]} == PRESETS[preset]
    assert CompareParams(preset=preset).config() == cfg  # the notebook's defaults add nothing


def test_from_preset_overrides() -> None:
    cfg = CompareConfig.from_preset("default", layers=[12], n_prompts=None, targets=["horror"])
    assert cfg.layers == [12] and cfg.n_prompts == PRESETS["default"]["n_prompts"] and cfg.targets == ["horror"]
    assert CompareParams(preset="quick", n_prompts=6, depths=[0.25]).config() == CompareConfig.from_preset(
        "quick", n_prompts=6, depths=[0.25])
    with pytest.raises(ValueError, match="unknown preset 'fast'; expected one of quick, default, full"):
        CompareConfig.from_preset("fast")
    with pytest.raises(ValueError, match=r"unknown CompareConfig fields \['n_prompt'\].*n_prompts"):
        CompareConfig.from_preset("quick", n_prompt=3)


@pytest.mark.parametrize("params_file", sorted((NOTEBOOKS / "params").glob("*.yaml")), ids=lambda p: p.name)
def test_params_files_are_valid(params_file: Path) -> None:
    """A documented params YAML (e.g. the full sweep) passes the runner's check and names a real preset."""
    import yaml

    params = yaml.safe_load(params_file.read_text())
    notebook = NOTEBOOKS / "04_compare_methods.ipynb"
    given = check_parameters([notebook], params)[notebook]
    assert given == params
    CompareParams.validate(**{**CompareParams.defaults(), **params}).config()


def test_check_parameters_routes_names_to_their_notebooks() -> None:
    nb01, nb02 = NOTEBOOKS / "01_bias.ipynb", NOTEBOOKS / "02_interpret.ipynb"
    given = check_parameters([nb01, nb02], {"top_k": 5, "max_length": 48})
    assert given == {nb01: {"max_length": 48}, nb02: {"top_k": 5, "max_length": 48}}
    with pytest.raises(ParameterError, match="parameter top_k=0"):  # a bad value fails before anything runs
        check_parameters([nb01, nb02], {"top_k": 0})


@pytest.mark.parametrize(("yaml_text", "expected"), [
    ("max_lenght: 64\n", ["'max_lenght' (did you mean 'max_length'?)", "01_bias.ipynb: model_name, dataset"]),
    ("max_length: 0\n", ["parameter max_length=0 is not allowed: expected an integer from 2 to 32768"]),
])
def test_run_notebooks_refuses_bad_params_before_running(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                         yaml_text: str, expected: list[str]) -> None:
    """papermill only warns about an unknown parameter; the runner stops with exit status 2."""
    params = tmp_path / "params.yaml"
    params.write_text(yaml_text)
    runs = tmp_path / "runs"
    code = main(["run-notebooks", "--only", str(NOTEBOOKS / "01_bias.ipynb"), "--params", str(params),
                 "--runs-root", str(runs)])
    err = capsys.readouterr().err
    assert code == 2
    assert "nothing was run" in err
    assert all(e in err for e in expected), err
    assert set(papermill.inspect_notebook(str(NOTEBOOKS / "01_bias.ipynb"))) <= set(BiasParams.names())
    assert not runs.exists()  # no run folder: nothing executed
