"""The command line (steerlab.lab.cli): every refusal of ``run-notebooks`` is exit status 2 and
one line naming the problem, before any notebook runs and before a run folder is created."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from steerlab.lab import runner
from steerlab.lab.cli import main
from steerlab.lab.report import ParameterError
from steerlab.lab.runner import check_model_name

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "01_bias.ipynb"


@pytest.fixture
def nothing_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any notebook execution fails the test (the old CLI ran them with a bad --model); no hub."""
    import papermill

    monkeypatch.setattr(runner, "_hub_reachable", lambda timeout=3.0: False, raising=False)

    def execute(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a notebook was executed")

    monkeypatch.setattr(papermill, "execute_notebook", execute)


def _refused(argv: list[str], runs: Path, capsys: pytest.CaptureFixture[str]) -> str:
    code = main([*argv, "--runs-root", str(runs)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and "nothing was run" in err
    assert not runs.exists()  # no run folder
    return err


@pytest.mark.usefixtures("nothing_runs")
def test_a_yaml_syntax_error_is_one_line_naming_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("max_length: [64\ntop_k: 3\n")
    err = _refused(["run-notebooks", "--only", str(NOTEBOOK), "--params", str(params)], tmp_path / "runs", capsys)
    assert f"params file {params} is not valid YAML" in err and "line" in err


@pytest.mark.usefixtures("nothing_runs")
def test_a_params_file_that_is_missing_or_not_a_mapping(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.yaml"
    err = _refused(["run-notebooks", "--only", str(NOTEBOOK), "--params", str(missing)], tmp_path / "runs", capsys)
    assert f"params file not found: {missing}" in err
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    err = _refused(["run-notebooks", "--only", str(NOTEBOOK), "--params", str(listed)], tmp_path / "runs", capsys)
    assert "must hold a mapping of parameter names to values, got list" in err


@pytest.mark.usefixtures("nothing_runs")
def test_a_missing_notebook_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _refused(["run-notebooks", "--only", str(tmp_path / "09_nope.ipynb")], tmp_path / "runs", capsys)
    assert f"notebook not found: {tmp_path / '09_nope.ipynb'}" in err


@pytest.mark.usefixtures("nothing_runs")
@pytest.mark.parametrize("model", ["./models/my-model", "models/my-model", "~/no-such-model", "x.gguf", "a/b/c"])
def test_a_model_that_cannot_be_found_is_refused_before_a_run_folder_exists(
        model: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    err = _refused(["run-notebooks", "--only", str(NOTEBOOK), "--model", model], tmp_path / "runs", capsys)
    assert f"parameter model_name={model!r} is not allowed" in err


def test_check_model_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for fine in (None, "smollm2-135m-instruct", "smollm2", "gemma3-270m"):
        check_model_name(fine)
    (tmp_path / "ckpt").mkdir()
    with pytest.raises(ParameterError, match="folder without config.json"):
        check_model_name(str(tmp_path / "ckpt"))
    (tmp_path / "ckpt" / "config.json").write_text("{}")
    check_model_name(str(tmp_path / "ckpt"))
    monkeypatch.setenv("HOME", str(tmp_path))
    check_model_name("~/ckpt")
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    check_model_name("~/m.gguf")
    with pytest.raises(ParameterError, match="no such .gguf file"):
        check_model_name("~/other.gguf")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ParameterError, match="not in the local Hugging Face cache .* switched off"):
        check_model_name("someone/not-cached-model")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(runner, "_hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(ParameterError, match="no folder someone/not-cached-model here, .* unreachable"):
        check_model_name("someone/not-cached-model")
    monkeypatch.setattr(runner, "_hub_reachable", lambda timeout=3.0: True)
    check_model_name("someone/not-cached-model")  # downloadable: the notebook will try
    for bad in ("", 3):
        with pytest.raises(ParameterError, match="expected a model name"):
            check_model_name(bad)
