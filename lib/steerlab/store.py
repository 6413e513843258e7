"""Atomic files: tensors as safetensors beside JSON metadata, never pickle.

A write goes to a temporary file in the same folder and is renamed into place,
so a crash mid-write never leaves a half file under the final name; temporary
files left by a writer that died are removed by the next write into the folder.
Files get the usual mode for the process's umask (0644 under umask 022).

The JSON side records the SHA-256 of the tensor file and of the metadata itself
(``meta_sha256``), so a damaged tensor file and an edited metadata field are
both detected. Tensors may hold NaN or infinity: whatever saves, loads.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

__all__ = ["StoreError", "atomic_write_text", "load_tensors", "paths_of", "save_tensors"]

# A temporary file this old whose writer process is gone is an orphan of a killed write.
STALE_SECONDS = 10 * 60
_SUFFIXES = (".safetensors", ".json")


class StoreError(ValueError):
    """A stored tensor file or its metadata is missing, truncated or inconsistent."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


# ".{final name}.{pid}.{8 hex}.tmp"; and tempfile.mkstemp's ".{final name}.{8 chars}.tmp",
# the names of earlier versions, which carry no pid.
_TEMP_NAME = re.compile(r"^\..+\.(\d+)\.[0-9a-f]{8}\.tmp$")
_OLD_TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


def _clean_stale(folder: Path, now: float | None = None) -> None:
    """Remove our temporary files older than :data:`STALE_SECONDS` whose writer is not running."""
    now = time.time() if now is None else now
    for tmp in folder.glob(".*.tmp"):
        ours = _TEMP_NAME.match(tmp.name)
        if ours is None and _OLD_TEMP_NAME.match(tmp.name) is None:
            continue  # another program's file
        if ours is not None and _pid_alive(int(ours.group(1))):
            continue
        with contextlib.suppress(OSError):  # another cleaner got there first, or it vanished
            if now - tmp.stat().st_mtime > STALE_SECONDS:
                tmp.unlink()


def _new_temp(path: Path) -> Path:
    """Create an empty temporary file beside ``path``, mode ``0666`` less the umask."""
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        try:
            # os.open applies the umask, unlike tempfile.mkstemp, which always makes 0600.
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise OSError(f"could not create a temporary file beside {path}")


def _atomic(path: Path, write: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale(path.parent)
    tmp = _new_temp(path)
    try:
        mode = tmp.stat().st_mode & 0o777  # 0666 less the umask, as os.open made it
        write(str(tmp))
        os.chmod(tmp, mode)  # safetensors replaces the file with one of mode 0600
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically.

    Example:
        >>> atomic_write_text(Path("out/summary.json"), "{}")
    """
    _atomic(Path(path), lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _meta_sha256(payload: dict[str, Any]) -> str:
    """Checksum of a metadata object as JSON reads it back (so saving and loading agree)."""
    body = {k: v for k, v in payload.items() if k != "meta_sha256"}
    canonical = json.dumps(json.loads(json.dumps(body)), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def paths_of(stem: Path | str) -> tuple[Path, Path]:
    """The ``(tensor file, JSON file)`` of a stem: suffixes are appended, never substituted.

    ``"x_c0.5"`` gives ``x_c0.5.safetensors`` and ``x_c0.5.json``; a stem given
    with one of those two suffixes is taken without it.

    Example:
        >>> paths_of("out/vec_c0.5")
        (PosixPath('out/vec_c0.5.safetensors'), PosixPath('out/vec_c0.5.json'))
    """
    stem = Path(stem)
    name = stem.name
    for suffix in _SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            name = name[: -len(suffix)]
            break
    if not name or name in (".", ".."):
        raise StoreError(f"{str(stem)!r} names no file stem")
    return stem.with_name(name + ".safetensors"), stem.with_name(name + ".json")


def save_tensors(stem: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Save ``stem.safetensors`` and ``stem.json``; the JSON is written last.

    Raises:
        StoreError: ``meta`` uses the reserved keys ``tensor_sha256`` / ``meta_sha256``.

    Example:
        >>> save_tensors(Path("out/vec"), {"layer_6": v}, {"recipe": "mean_centred"})
    """
    tensor_path, meta_path = paths_of(stem)
    reserved = {"tensor_sha256", "meta_sha256"} & set(meta)
    if reserved:
        raise StoreError(f"metadata keys {sorted(reserved)} are reserved for the store's checksums")
    clean = {k: t.detach().to("cpu").contiguous() for k, t in tensors.items()}
    _atomic(tensor_path, lambda tmp: save_file(clean, tmp))
    payload = {**meta, "tensor_sha256": _sha256(tensor_path)}
    payload["meta_sha256"] = _meta_sha256(payload)
    atomic_write_text(meta_path, json.dumps(payload, indent=1, sort_keys=True))


def load_tensors(stem: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load a pair written by :func:`save_tensors`, checking it is intact.

    Returns the tensors and the metadata as saved (without the checksums).
    A JSON file written before metadata checksums existed (no ``meta_sha256``)
    is checked by its tensor checksum only.

    Raises:
        StoreError: a file is missing, unreadable, truncated, or a checksum differs.

    Example:
        >>> tensors, meta = load_tensors(Path("out/vec"))
    """
    tensor_path, meta_path = paths_of(stem)
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise StoreError(f"cannot read metadata {meta_path}: {err}") from err
    if not isinstance(meta, dict):
        raise StoreError(f"metadata {meta_path} is not a JSON object")
    if "meta_sha256" in meta and meta["meta_sha256"] != _meta_sha256(meta):
        raise StoreError(f"metadata {meta_path} was altered: it does not match its own checksum")
    try:
        if _sha256(tensor_path) != meta.get("tensor_sha256"):
            raise StoreError(f"{tensor_path} does not match the checksum in {meta_path}")
        tensors = load_file(str(tensor_path))
    except StoreError:
        raise
    except Exception as err:  # safetensors raises several types on damage
        raise StoreError(f"cannot read tensors {tensor_path}: {err}") from err
    return tensors, {k: v for k, v in meta.items() if k not in ("tensor_sha256", "meta_sha256")}
