"""Atomic files: tensors as safetensors beside JSON metadata, never pickle.

A write goes to a temporary file in the same folder and is renamed into place,
so a crash mid-write never leaves a half file under the final name. The JSON
side records the SHA-256 of the tensor file, so a damaged pair is detected.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

__all__ = ["StoreError", "atomic_write_text", "load_tensors", "save_tensors"]


class StoreError(ValueError):
    """A stored tensor file or its metadata is missing, truncated or inconsistent."""


def _atomic(path: Path, write: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    _atomic(Path(path), lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_tensors(stem: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Save ``stem.safetensors`` and ``stem.json``; the JSON is written last.

    Example:
        >>> save_tensors(Path("out/vec"), {"layer_6": v}, {"recipe": "mean_centred"})
    """
    stem = Path(stem)
    tensor_path = stem.with_suffix(".safetensors")
    clean = {k: t.detach().to("cpu").contiguous() for k, t in tensors.items()}
    _atomic(tensor_path, lambda tmp: save_file(clean, tmp))
    payload = {**meta, "tensor_sha256": _sha256(tensor_path)}
    atomic_write_text(stem.with_suffix(".json"), json.dumps(payload, indent=1, sort_keys=True))


def load_tensors(stem: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load a pair written by :func:`save_tensors`, checking it is intact.

    Raises:
        StoreError: a file is missing, unreadable, truncated, or the checksum differs.
    """
    stem = Path(stem)
    tensor_path, meta_path = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise StoreError(f"cannot read metadata {meta_path}: {err}") from err
    if not isinstance(meta, dict):
        raise StoreError(f"metadata {meta_path} is not a JSON object")
    try:
        if _sha256(tensor_path) != meta.get("tensor_sha256"):
            raise StoreError(f"{tensor_path} does not match the checksum in {meta_path}")
        tensors = load_file(str(tensor_path))
    except StoreError:
        raise
    except Exception as err:  # safetensors raises several types on damage
        raise StoreError(f"cannot read tensors {tensor_path}: {err}") from err
    return tensors, meta
