"""The batch runner behind ``make run``: every notebook, in order, with papermill.

Each run goes to ``runs/<timestamp>/``: the executed ``.ipynb``, an HTML export
(figures render offline), figures as standalone HTML, ``summary.json``, ``run.json``
(durations, status, the parameters passed) and ``index.html``, the run's report page.
``runs/latest`` points at the newest run. Parameters are checked against every
notebook's parameters cell and schema (:mod:`steerlab.lab.params`) before anything
runs: a misspelled name is an error, not papermill's warning. A failing notebook is
reported with its error and the run goes on with the next one; the exit status is
non-zero if any failed.
"""

from __future__ import annotations

import json
import os
import re
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

__all__ = ["NotebookResult", "check_model_name", "check_parameters", "export_html", "repo_root", "run_notebooks"]


def repo_root() -> Path:
    """The repository (the folder holding ``notebooks/`` and ``runs/``)."""
    return Path(__file__).resolve().parents[3]


@dataclass
class NotebookResult:
    """How one notebook of a run went."""

    notebook: str
    ok: bool
    seconds: float
    error: str = ""


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
# nbconvert's lab template without the CDN scripts it adds (require.js, MathJax): the
# notebooks need neither, and an export should make no request at all.
_OFFLINE_TEMPLATE = """{%- extends "lab/index.html.j2" -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
"""


def export_html(executed: Path) -> Path:
    """Export an executed notebook to ``NAME.html`` beside it; figures render offline.

    The export loads the run folder's one shared ``plotly.min.js`` (:mod:`steerlab.lab.plotlyjs`). Widget
    outputs and saved widget state are removed first (from the ``.ipynb`` too): rendered
    from saved state, a widget shows controls with no kernel behind them; without it, the
    page shows the notebook's static note instead (:func:`steerlab.lab.report.widget_with_note`).

    Example:
        >>> export_html(Path("runs/latest/01_bias.ipynb"))
    """
    import jinja2
    import nbconvert
    import nbformat

    nb = nbformat.read(executed, as_version=4)
    widget_outputs = 0
    for cell in nb.cells:
        kept = [o for o in cell.get("outputs", []) if WIDGET_VIEW not in o.get("data", {})]
        widget_outputs += len(cell.get("outputs", [])) - len(kept)
        if "outputs" in cell:
            cell.outputs = kept
    if widget_outputs or "widgets" in nb.metadata:
        nb.metadata.pop("widgets", None)
        nbformat.write(nb, executed)
    exporter = nbconvert.HTMLExporter(
        extra_loaders=[jinja2.DictLoader({"steerlab_offline.html.j2": _OFFLINE_TEMPLATE})],
        template_file="steerlab_offline.html.j2")
    body, _ = exporter.from_notebook_node(nb)
    out = executed.with_suffix(".html")
    out.write_text(body, encoding="utf-8")
    return out


def check_parameters(paths: Sequence[Path], parameters: Mapping[str, Any]) -> dict[Path, dict[str, Any]]:
    """The parameters each notebook gets, after checking them all; raises before anything runs.

    A name no notebook of the run declares is an error naming it, a close match, and each
    notebook's real parameters. Values are checked against each notebook's schema (with
    the notebook's defaults for the rest), so a bad value fails here too.

    Raises:
        ParameterError: an unknown name or a value a notebook cannot use.

    Example:
        >>> check_parameters([Path("notebooks/01_bias.ipynb")], {"max_lenght": 64})
        Traceback (most recent call last):
        ParameterError: unknown parameter 'max_lenght' (did you mean 'max_length'?); ...
    """
    import papermill

    from .params import schema_for, unknown_names
    from .report import ParameterError

    declared = {p: list(papermill.inspect_notebook(str(p))) for p in paths}
    known = list(dict.fromkeys(n for names in declared.values() for n in names))
    message = unknown_names(list(parameters), known, "the run")
    if message:
        listing = "; ".join(f"{p.name}: {', '.join(names)}" for p, names in declared.items())
        raise ParameterError(f"{message.split(';')[0]}; the notebooks' parameters are {listing}")
    out = {}
    for p, names in declared.items():
        given = {k: v for k, v in parameters.items() if k in names}
        schema = schema_for(p.name)
        if schema is not None:
            schema.validate(**{**schema.defaults(), **given})
        out[p] = given
    return out


# A hub id: "name" or "org/name" (what huggingface_hub accepts).
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


def check_model_name(name: object) -> None:
    """Check that ``model_name`` names a model that can be found, without loading it (cheap).

    Accepted: ``None`` (the embedded default), an embedded model's name, an existing
    checkpoint folder (holding ``config.json``) or ``.gguf`` file (``~`` expanded), or a
    hub id that is in the local Hugging Face cache or, with the hub not switched off
    (``HF_HUB_OFFLINE``), may be downloaded. Whether the files load is the notebook's to find.

    Raises:
        ParameterError: a path that does not exist or is not a checkpoint, a name that is
            neither a path nor a hub id, a hub id not cached while the hub is switched off.

    Example:
        >>> check_model_name("models/nowhere")
        Traceback (most recent call last):
        ParameterError: parameter model_name='models/nowhere' is not allowed: no such file or folder ...
    """
    from ..embedded import EMBEDDED_MODELS, embedded_model
    from .report import ParameterError

    def refuse(why: str) -> ParameterError:
        return ParameterError(f"parameter model_name={name!r} is not allowed: {why}")

    if name is None:
        return
    if not isinstance(name, str) or not name.strip():
        raise refuse("expected a model name, a checkpoint folder, a .gguf file or a hub id")
    if embedded_model(name) is not None:
        return
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise refuse(f"no such .gguf file: {path}")
        return
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise refuse(f"{path} is a folder without config.json, not a Hugging Face checkpoint folder")
        return
    local = name.startswith(("/", "./", "../", "~")) or path.exists() or not _HUB_ID.fullmatch(name)
    if local:
        raise refuse(f"no such file or folder: {path}; expected a checkpoint folder, a .gguf file, a hub id "
                     f"or an embedded model ({', '.join(map(repr, EMBEDDED_MODELS))})")
    from huggingface_hub import constants, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(name, "config.json"), str):
        return
    offline = constants.HF_HUB_OFFLINE or any(
        os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on")
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    if offline or not _hub_reachable():
        why = "the hub is switched off (HF_HUB_OFFLINE)" if offline else f"the hub ({constants.ENDPOINT}) is unreachable"
        raise refuse(f"there is no folder {path} here, and as a hub id {name!r} is not in the local Hugging Face "
                     f"cache ({constants.HF_HUB_CACHE}) while {why}; embedded models: "
                     f"{', '.join(map(repr, EMBEDDED_MODELS))}")


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub (or the HTTPS proxy in front of it) accepts a connection within ``timeout``."""
    from huggingface_hub import constants

    from ..remote import reachable

    return reachable(os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy") or constants.ENDPOINT, timeout)


def _point_latest(root: Path, run_dir: Path) -> None:
    link = root / "latest"
    tmp = root / f".latest.{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(run_dir.name)
    os.replace(tmp, link)


def _headline(summary: Mapping[str, Any]) -> list[str]:
    from .report import headlines

    return [f"  {h.summary_key}: {h.line()}" for h in headlines(summary)]


def run_notebooks(
    notebooks: Sequence[Path] | None = None,
    *,
    runs_root: Path | None = None,
    parameters: Mapping[str, Any] | None = None,
    kernel_name: str = "python3",
    progress: bool = True,
) -> tuple[Path, list[NotebookResult]]:
    """Execute notebooks headless into a new timestamped run folder.

    Args:
        notebooks: paths; ``None`` for every ``notebooks/*.ipynb`` in name order.
        runs_root: where run folders go (default ``runs/`` in the repository).
        parameters: papermill parameters for every notebook (``output_dir`` is set
            to the run folder); a notebook ignores the ones it does not declare.

    Returns:
        The run folder and one result per notebook.

    Raises:
        FileNotFoundError: a notebook that does not exist (before anything runs).
        ParameterError: a bad parameter or ``model_name`` (:func:`check_parameters`,
            :func:`check_model_name`), before a run folder is created.

    Example:
        >>> run_dir, results = run_notebooks([Path("notebooks/01_bias.ipynb")], parameters={"max_length": 32})
    """
    import papermill

    from .report import build_report

    root = repo_root()
    paths = sorted((root / "notebooks").glob("[0-9]*.ipynb")) if notebooks is None else [Path(p) for p in notebooks]
    if not paths:
        raise FileNotFoundError("no notebooks to run")
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"notebook not found: {p}")
    given = check_parameters(paths, {k: v for k, v in (parameters or {}).items() if k != "output_dir"})
    check_model_name((parameters or {}).get("model_name"))  # before a run folder exists
    runs_root = Path(runs_root) if runs_root is not None else root / "runs"
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = runs_root / stamp
    suffix = 1
    while run_dir.exists():
        suffix += 1
        run_dir = runs_root / f"{stamp}-{suffix}"
    run_dir.mkdir(parents=True)
    run_started = time.perf_counter()
    results: list[NotebookResult] = []
    for i, path in enumerate(paths, start=1):
        print(f"[{i}/{len(paths)}] {path.name} ...", flush=True)
        executed = run_dir / path.name
        # Relative to the notebook's working folder (papermill's cwd): no absolute path of this
        # machine in the injected parameters cell of the executed notebooks and their exports.
        params = {**given[path], "output_dir": os.path.relpath(run_dir.resolve(), path.parent.resolve())}
        started = time.perf_counter()
        try:
            papermill.execute_notebook(
                str(path), str(executed), parameters=params, kernel_name=kernel_name,
                cwd=str(path.parent), progress_bar=progress,
            )
            result = NotebookResult(path.name, True, time.perf_counter() - started)
        except Exception as err:  # noqa: BLE001 - papermill raises PapermillExecutionError with the cell's traceback
            message = str(err) if str(err) else traceback.format_exc()
            result = NotebookResult(path.name, False, time.perf_counter() - started, message)
            print(f"    FAILED: {path.name}\n{message}", flush=True)
        if executed.exists():
            try:
                export_html(executed)
            except Exception as err:  # noqa: BLE001 - an export problem must not hide the run's results
                print(f"    (HTML export of {executed.name} failed: {err})", flush=True)
        results.append(result)
        print(f"    {'ok' if result.ok else 'FAILED'} in {result.seconds:.0f} s", flush=True)
    run_info = {"started": stamp, "seconds": time.perf_counter() - run_started,
                "parameters": dict(parameters or {}), "notebooks": [asdict(r) for r in results]}
    (run_dir / "run.json").write_text(json.dumps(run_info, indent=1, default=str), encoding="utf-8")
    report = build_report(run_dir)
    _point_latest(runs_root, run_dir)
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    print(f"\nrun folder: {run_dir}")
    for r in results:
        print(f"  {'ok    ' if r.ok else 'FAILED'} {r.notebook:32s} {r.seconds:6.0f} s")
    print("headline numbers (summary.json):")
    print("\n".join(_headline(summary)) or "  (none)")
    print(f"report: {report}")
    return run_dir, results
