"""The batch runner behind ``make run``: every notebook, in order, with papermill.

Each run goes to ``runs/<timestamp>/``: the executed ``.ipynb``, an HTML export
(figures render offline), figures as standalone HTML, ``summary.json``, ``run.json``
(durations, status, the parameters passed) and ``index.html``, the run's report page.
``runs/latest`` points at the newest run whose notebooks all finished (a failed run leaves it
where it was). While a notebook runs, the progress it reports (notebook 04's cells,
:mod:`steerlab.lab.progress`) is printed as it comes. Parameters are checked against every
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

from .progress import watching

__all__ = ["NotebookResult", "check_model_name", "check_model_shape", "check_parameters", "export_html",
           "kernel_config", "model_depth", "repo_root", "run_notebooks"]


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


def kernel_config() -> Any:
    """The kernel manager's settings for the runs: an encrypted channel to the kernel.

    ipykernel warns "Kernel is running over TCP without encryption ... susceptible to
    eavesdropping" once per notebook when jupyter_client starts it on plain TCP, jupyter_client's
    default; to a newcomer reading ``make run``'s output it looks like a security problem. It is
    one only if another user of the machine listens on localhost, and the fix is the one the
    warning names: jupyter_client provisions CurveZMQ keys (``transport_encryption="auto"``,
    used when the kernelspec declares support, as ipykernel's does), so the channel is encrypted
    and the warning is not printed. Where jupyter_client or pyzmq cannot do that, the kernel
    talks over Unix sockets in jupyter's private runtime folder (``transport="ipc"``), which
    ipykernel does not warn about either.

    Example:
        >>> papermill.execute_notebook("nb.ipynb", "out.ipynb", config=kernel_config())
    """
    import zmq
    from jupyter_client.manager import KernelManager
    from traitlets.config import Config

    if zmq.has("curve") and KernelManager.class_traits().get("transport_encryption") is not None:
        return Config({"KernelManager": {"transport_encryption": "auto"}})
    if os.name == "posix":
        return Config({"KernelManager": {"transport": "ipc"}})
    return Config()


def model_depth(name: object) -> int | None:
    """The number of blocks of the model ``name`` names, from its config alone (no weights): the embedded models'
    cached checkpoints and checkpoint folders; ``None`` where that needs more (a hub id, a ``.gguf`` file) and
    the notebook checks instead."""
    from transformers import AutoConfig

    from ..embedded import embedded_model

    spec = embedded_model(None if name is None else str(name)) if name is None or isinstance(name, str) else None
    folder: Path | None = None
    if spec is not None:
        from ..embedded import provision

        try:
            folder = Path(provision(spec, progress=False))
        except Exception:  # noqa: BLE001 - not provisioned yet: the notebook finds out when it loads it
            return None
    elif isinstance(name, str) and Path(name).expanduser().is_dir():
        folder = Path(name).expanduser()
    if folder is None or not (folder / "config.json").is_file():
        return None
    config = AutoConfig.from_pretrained(folder)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    layers = getattr(text, "num_hidden_layers", None)
    return int(layers) if isinstance(layers, int) else None


def check_model_shape(given: Mapping[Path, Mapping[str, Any]], model_name: object) -> None:
    """Check each notebook's parameters that depend on the model's depth (``layers: [40]`` on a 30-layer model)
    before a run folder exists, from the model's config (:func:`model_depth`).

    Raises:
        ParameterError: the notebook, the parameter, its value and the model's range.
    """
    from types import SimpleNamespace

    from .params import schema_for
    from .report import ParameterError

    depth = model_depth(model_name)
    if depth is None:
        return
    shape = SimpleNamespace(n_layers=depth, name=str(model_name or "the embedded model"))
    for path, values in given.items():
        schema = schema_for(path.name)
        if schema is None:
            continue
        try:
            schema.validate(**{k: v for k, v in values.items() if k in schema.names()}).check_shape(shape)  # type: ignore[arg-type]
        except ParameterError as err:
            message = str(err)
            raise ParameterError(message if message.startswith(path.name) else f"{path.name}: {message}") from None


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

    from .page import build_report

    root = repo_root()
    paths = sorted((root / "notebooks").glob("[0-9]*.ipynb")) if notebooks is None else [Path(p) for p in notebooks]
    if not paths:
        raise FileNotFoundError("no notebooks to run")
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"notebook not found: {p}")
    given = check_parameters(paths, {k: v for k, v in (parameters or {}).items() if k != "output_dir"})
    check_model_name((parameters or {}).get("model_name"))  # before a run folder exists
    check_model_shape(given, (parameters or {}).get("model_name"))  # layers against the model's depth, likewise
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
            with watching(run_dir):  # notebook 04 reports each finished cell there; shown here as it comes
                papermill.execute_notebook(
                    str(path), str(executed), parameters=params, kernel_name=kernel_name,
                    cwd=str(path.parent), progress_bar=False, config=kernel_config(),
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
    if all(r.ok for r in results):
        _point_latest(runs_root, run_dir)  # a failed run never takes "latest" from the last one that finished
    else:
        print(f"runs/latest still points at the last run that finished: {run_dir.name} had a failed notebook",
              flush=True)
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    print(f"\nrun folder: {run_dir}")
    for r in results:
        print(f"  {'ok    ' if r.ok else 'FAILED'} {r.notebook:32s} {r.seconds:6.0f} s")
    print("headline numbers (summary.json):")
    print("\n".join(_headline(summary)) or "  (none)")
    print(f"report: {report}")
    return run_dir, results
