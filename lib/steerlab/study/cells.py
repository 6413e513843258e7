"""Saved cells of a long comparison: each finished (target, layer, position) is written to disk
at once, and a rerun with the same inputs reads it back instead of measuring it again.

A ``full`` comparison runs for hours on a CPU; without this, a crash, a closed laptop or a
killed job at hour three loses everything. With ``run_compare(..., cells_dir=FOLDER)`` every
cell is one JSON file, written atomically when the cell is done. A cell is reused only when its
*key* matches the run's: the recorded configuration (coefficient unit included), the model's
weights and tokenizer, the score dtype, the package versions that compute the numbers, and the
content of steerlab's own code and data. Any change to one of those measures every cell
again, so a resumed run is the run it would have been uninterrupted (a test checks this:
``tests/test_compare.py``). Files of another key are left in place and not read. A file at a
cell's own path that is not exactly what was saved for that cell under this key (truncated,
edited, copied from another configuration, model or cell: each record carries a digest of its
key, cell and rows, and every row names its cell) is refused with a warning and the cell is
measured again; nothing of it is mixed into the result. The code is
compared as Python reads it, without comments and docstrings, and without ``steerlab.lab``
(notebook plumbing: plots, the report, widgets; nothing below it imports it, and a test checks
that), so fixing a sentence or a figure while a run is half done does not throw its cells away;
any change to what measures does.

Example:
    >>> result = run_compare(model, CompareConfig.from_preset("full"), cells_dir="runs/full-cells")
    >>> # killed after 12 of full's 30 cells; the same call again measures the other 18
"""

from __future__ import annotations

import ast
import hashlib
import json
import math
import platform
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import transformers

from ..data import data_dir
from ..models import Model, tokenizer_digest
from ..store import atomic_write_text

__all__ = ["PRESENTATION", "CellStore", "code_text", "json_values", "run_key", "source_digest"]

PARTS = ("rows", "completions", "steerability", "bias", "matched")
"""What one cell contributes to :class:`steerlab.study.compare.CompareResult`, each a list of rows."""


def code_text(source: str | bytes, filename: str = "<source>") -> str:
    """What a Python file does, as text: its syntax tree without comments, docstrings or other bare
    string statements (none of which changes what runs: nothing in steerlab reads ``__doc__``)."""
    tree = ast.parse(source, filename=filename)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and all(isinstance(s, ast.stmt) for s in body):
            kept = [s for s in body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant)
                                              and isinstance(s.value.value, str))]
            node.body = kept or [ast.Pass()]  # type: ignore[attr-defined]
    return ast.dump(tree, include_attributes=False)


PRESENTATION = ("lab",)
"""Subpackages of steerlab left out of :func:`source_digest`: they present numbers, never compute a cell's."""


def _digest_files(root: Path, pattern: str, *, as_code: bool = False, skip: Sequence[str] = ()) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob(pattern) if p.is_file() and "__pycache__" not in p.parts
                       and p.relative_to(root).parts[0] not in skip):
        h.update(str(path.relative_to(root)).encode())
        h.update(b"\0")
        data = path.read_bytes()
        h.update(code_text(data, str(path)).encode() if as_code else data)
        h.update(b"\0")
    return h.hexdigest()


def source_digest(package: Path | None = None, data: Path | None = None) -> str:
    """SHA-256 of steerlab's code (:func:`code_text` of each ``.py`` file outside :data:`PRESENTATION`)
    and of its data folder's bytes: a change to what measures or to any data file changes it; a
    comment, a docstring or a plot does not."""
    package = Path(__file__).resolve().parents[1] if package is None else Path(package)
    data = data_dir() if data is None else Path(data)
    code = _digest_files(package, "*.py", as_code=True, skip=PRESENTATION)
    return hashlib.sha256((code + _digest_files(data, "*")).encode()).hexdigest()


def run_key(model: Model, config: Mapping[str, Any], score_dtype: str) -> str:
    """What a saved cell must match to be reused (module docstring), as one short hex digest."""
    inputs = {"config": config, "model": model.checked_fingerprint(), "tokenizer": tokenizer_digest(model.tokenizer),
              "score_dtype": score_dtype, "python": platform.python_version(), "torch": torch.__version__,
              "transformers": transformers.__version__,
              "source": source_digest()}
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:16]


def json_values(obj: Any) -> Any:
    """``obj`` as JSON holds it (floats, strings, lists, dicts with string keys)."""
    return json.loads(json.dumps(obj, allow_nan=True, default=_unknown))


def _unknown(obj: Any) -> Any:
    if hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:  # numpy and torch scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"cannot save a {type(obj).__name__} in a comparison cell")


def _digest(key: str, cell: Sequence[Any], parts: Mapping[str, Any]) -> str:
    """SHA-256 of a cell record's key, cell and parts, as JSON holds them: written with the record,
    so an edited file, or parts pasted in from another cell's file, no longer match it."""
    text = json.dumps({"key": key, "cell": list(cell), "parts": {p: parts[p] for p in PARTS}}, sort_keys=True,
                      allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _stray_row(cell: Sequence[Any], parts: Mapping[str, Any]) -> str | None:
    """Why a row of ``parts`` is not ``cell``'s own (its target, layer or position is another's), or None."""
    own = dict(zip(("target", "layer", "position"), cell))
    for part in PARTS:
        for i, row in enumerate(parts[part]):
            if not isinstance(row, dict):
                return f"row {i} of {part!r} is not a record"
            for field, value in own.items():
                if field in row and row[field] != value:
                    return f"row {i} of {part!r} has {field} {row[field]!r}, not this cell's {value!r}"
    return None


class CellStore:
    """One folder of saved cells for one run key.

    Args:
        folder: where the cell files go (created if missing).
        key: :func:`run_key` of the run.
    """

    def __init__(self, folder: str | Path, key: str) -> None:
        if not isinstance(folder, (str, Path)) or not str(folder).strip():
            raise ValueError(f"cells_dir must be a folder path, got {folder!r}")
        self.folder = Path(folder).expanduser()
        if self.folder.exists() and not self.folder.is_dir():
            raise ValueError(f"cells_dir {str(self.folder)!r} exists and is not a folder")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.key = key
        self.reused = 0
        self.reused_seconds = 0.0  # what the cells read back took when they were measured

    def path(self, cell: Sequence[Any]) -> Path:
        """The file of one (target, layer, position) cell under this key."""
        name = "-".join(str(part) for part in cell)
        return self.folder / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}.{self.key}.json"

    def load(self, cell: Sequence[Any]) -> dict[str, list[dict[str, Any]]] | None:
        """The saved parts of ``cell``, or None when it was not saved under this key.

        A file at this cell's path that is not exactly what :meth:`save` wrote for this cell under
        this key is refused with a warning naming it and why, and the cell is measured again
        (:meth:`save` then replaces the file): a truncated or unreadable file, one of another
        configuration or model (another key), one whose ``cell`` is another's, one whose content
        does not match the digest written with it (edited, or rows pasted in from another file),
        or rows whose own target, layer or position are not this cell's. Nothing of such a file
        is mixed into a result.
        """
        path = self.path(cell)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None  # not measured yet
        except (OSError, UnicodeDecodeError) as err:
            return self._refuse(path, f"it cannot be read ({err})")
        try:
            saved = json.loads(text)
        except ValueError as err:
            return self._refuse(path, f"it is not whole JSON (truncated? {err})")
        if not isinstance(saved, dict):
            return self._refuse(path, "it is not a cell record")
        if saved.get("key") != self.key:
            return self._refuse(path, f"it was saved under key {saved.get('key')!r}, not this run's {self.key} "
                                      "(another configuration, model or code)")
        if list(saved.get("cell", [])) != list(cell):
            return self._refuse(path, f"it holds cell {saved.get('cell')!r}, not {list(cell)!r}")
        parts = saved.get("parts")
        if not isinstance(parts, dict) or any(not isinstance(parts.get(p), list) for p in PARTS):
            return self._refuse(path, f"it lacks one of the parts {', '.join(PARTS)}")
        if saved.get("digest") != _digest(self.key, cell, parts):
            return self._refuse(path, "its content does not match the digest written with it (edited or mixed)")
        stray = _stray_row(cell, parts)
        if stray is not None:
            return self._refuse(path, stray)
        self.reused += 1
        seconds = saved.get("seconds")
        self.reused_seconds += float(seconds) if isinstance(seconds, (int, float)) and math.isfinite(seconds) else 0.0
        return {p: parts[p] for p in PARTS}

    def _refuse(self, path: Path, why: str) -> dict[str, list[dict[str, Any]]] | None:
        """Warn that the file at ``path`` is not read back, and why; None, as :meth:`load` returns then."""
        warnings.warn(f"saved cell {path} not read back: {why}; measuring the cell again", stacklevel=3)
        return None

    def summary(self, n_cells: int) -> dict[str, Any]:
        """What a run's record says of its cells: where, under which key, how many were read back
        and how long those took when measured (so a resumed run's time can count them)."""
        return {"dir": str(self.folder), "key": self.key, "n": n_cells, "reused": self.reused,
                "reused_seconds": round(self.reused_seconds, 1)}

    def save(self, cell: Sequence[Any], parts: Mapping[str, list[dict[str, Any]]], seconds: float) -> dict[str, Any]:
        """Write ``cell``'s parts atomically; returns them as a later :meth:`load` will (JSON's types),
        so a measured cell and a reused one are the same values."""
        plain = json_values({p: parts[p] for p in PARTS})
        record = {"key": self.key, "cell": list(cell), "seconds": round(seconds, 1) if math.isfinite(seconds) else None,
                  "digest": _digest(self.key, cell, plain), "parts": plain}
        atomic_write_text(self.path(cell), json.dumps(record, allow_nan=True) + "\n")
        return plain
