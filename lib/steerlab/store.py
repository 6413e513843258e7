"""Atomic files: tensors as safetensors beside JSON metadata, never pickle.

A single file (:func:`atomic_write_text`) goes to a temporary file in the same
folder and is renamed into place, so a crash mid-write never leaves a half file
under the final name.

A *pair* (:func:`save_tensors`: ``x.safetensors`` + ``x.json``) is published
with a small journal, so a reader sees the old pair or the new pair, never a
mix, also with two writers at once and a writer killed at any point:

1. both files are written completely under temporary names (``.x.safetensors.<pid>.<hex>.tmp``);
2. under an exclusive lock on the folder (``flock`` on the folder itself, so no
   lock file is left beside the pair), the journal ``.x.publish`` naming the two
   temporary files is renamed into place: this is the commit point;
3. the two temporary files are renamed over ``x.safetensors`` and ``x.json``,
   and the journal is removed; then the lock is released.

A reader holds a shared lock on the folder while it reads both files. Whoever
finds a journal left by a writer that died between steps 2 and 3 (the next
reader or writer of that folder) finishes its renames first ("rolls forward"),
so the pair that was committed is the one seen. A writer that died before step 2
leaves the old pair in place and only temporary files, which a later write
removes once they are :data:`STALE_SECONDS` old and their writer is gone.
Where the folder cannot be locked (no ``fcntl``) the checksums below still
catch a mixed pair on read. Files get the usual mode for the process's umask
(0644 under umask 022), temporary files included.

The JSON side records the SHA-256 of the tensor file (``tensor_sha256``, the
pair's generation id) and of the metadata itself (``meta_sha256``), so a damaged
tensor file, a tensor file from another write and an edited or deleted
metadata field are all detected. Tensors may hold NaN or infinity: whatever
saves, loads. A write that fails (a full disk, a read-only folder) raises an
``OSError`` (:class:`StoreWriteError` where the failure came from safetensors),
so callers that cache opportunistically can catch ``OSError`` and go on.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_bytes
from safetensors.torch import save_file

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: pairs are then checked, not locked
    fcntl = None  # type: ignore[assignment]

__all__ = ["StoreError", "StoreWriteError", "atomic_write", "atomic_write_text", "load_tensors", "paths_of", "save_tensors"]

# A temporary file this old whose writer process is gone is an orphan of a killed write.
STALE_SECONDS = 10 * 60
_SUFFIXES = (".safetensors", ".json")
_JOURNAL = ".publish"


class StoreError(ValueError):
    """A stored tensor file or its metadata is missing, truncated or inconsistent."""


class StoreWriteError(OSError):
    """Writing a tensor file failed (a full disk, a file-size limit): an ``OSError``, whatever library raised it."""


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


def _journaled(folder: Path) -> set[str]:
    """The temporary files that pending journals in ``folder`` still have to publish."""
    names: set[str] = set()
    for journal in folder.glob(f".*{_JOURNAL}"):
        with contextlib.suppress(OSError, ValueError, TypeError, StoreError):
            names.update(_read_journal(journal).values())
    return names


def _clean_stale(folder: Path, now: float | None = None) -> None:
    """Remove our temporary files older than :data:`STALE_SECONDS` whose writer is not running
    (never one a pending journal still names)."""
    now = time.time() if now is None else now
    keep = _journaled(folder)
    for tmp in folder.glob(".*.tmp"):
        ours = _TEMP_NAME.match(tmp.name)
        if ours is None and _OLD_TEMP_NAME.match(tmp.name) is None:
            continue  # another program's file
        if tmp.name in keep or (ours is not None and _pid_alive(int(ours.group(1)))):
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


def _fsync(path: Path) -> None:
    """Flush a file's bytes to the disk, so a journal never names a file the disk does not hold."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_into(tmp: Path, write: Callable[[str], Any]) -> None:
    """Run ``write(tmp)``, keep ``tmp``'s umask mode, flush it; a safetensors failure becomes an OSError."""
    mode = tmp.stat().st_mode & 0o777  # 0666 less the umask, as os.open made it
    try:
        write(str(tmp))
    except SafetensorError as err:
        code = re.search(r"os error (\d+)", str(err))
        raise StoreWriteError(int(code.group(1)) if code else 0, f"cannot write {tmp.name}: {err}") from err
    os.chmod(tmp, mode)  # safetensors replaces the file with one of mode 0600
    _fsync(tmp)


def _write_text(path: Path, text: str) -> None:
    Path(path).write_text(text, encoding="utf-8")


def atomic_write(path: Path | str, write: Callable[[str], Any]) -> Path:
    """Write one file atomically: ``write(temporary name)`` fills a temporary file beside ``path``,
    which is renamed over ``path`` when complete (and removed if ``write`` raises).

    The file gets mode ``0666`` less the umask whatever ``write`` does to the temporary
    file's mode; stale temporary files of dead writers in the folder are removed first.

    Returns:
        ``path`` (as a ``Path``).

    Raises:
        OSError: the file could not be written (:class:`StoreWriteError` for a failure inside safetensors).

    Example:
        >>> atomic_write("out/v.bin", lambda tmp: Path(tmp).write_bytes(b"\\x00"))
        PosixPath('out/v.bin')
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale(path.parent)
    tmp = _new_temp(path)
    try:
        _write_into(tmp, write)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically.

    Example:
        >>> atomic_write_text(Path("out/summary.json"), "{}")
    """
    atomic_write(Path(path), lambda tmp: _write_text(Path(tmp), text))


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


# --- the pair's journal and the folder lock -------------------------------------------


def _journal_of(tensor_path: Path) -> Path:
    return tensor_path.with_name(f".{tensor_path.name.removesuffix('.safetensors')}{_JOURNAL}")


def _read_journal(journal: Path) -> dict[str, str]:
    """``{final name: temporary name}`` of a journal; only plain names of our temporary files."""
    entries = json.loads(journal.read_text(encoding="utf-8"))
    stem = journal.name[1: -len(_JOURNAL)]
    finals = {stem + suffix for suffix in _SUFFIXES}
    if not isinstance(entries, dict) or set(entries) != finals or not all(
            isinstance(tmp, str) and "/" not in tmp and _TEMP_NAME.match(tmp) for tmp in entries.values()):
        raise StoreError(f"{journal} is not a journal of the pair {stem}")
    return entries


def _roll_forward(journal: Path) -> None:
    """Finish the renames a committed journal lists, then remove it (idempotent)."""
    try:
        entries = _read_journal(journal)
    except FileNotFoundError:
        return
    except (OSError, ValueError, StoreError):
        journal.unlink(missing_ok=True)  # unreadable: it cannot have been committed by us
        return
    for suffix in _SUFFIXES:  # the tensors first, as the writer does
        final = journal.with_name(journal.name[1: -len(_JOURNAL)] + suffix)
        tmp = journal.with_name(entries[final.name])
        if tmp.exists():
            os.replace(tmp, final)
    journal.unlink(missing_ok=True)


def _recover(folder: Path) -> None:
    """Roll forward every pending journal in ``folder`` (call under the exclusive lock)."""
    for journal in folder.glob(f".*{_JOURNAL}"):
        _roll_forward(journal)


class _FolderLock:
    """An ``flock`` on a folder itself: shared for readers, exclusive for publishing a pair."""

    def __init__(self, folder: Path) -> None:
        self.fd: int | None = None
        if fcntl is not None:
            with contextlib.suppress(OSError):
                self.fd = os.open(folder, os.O_RDONLY)

    def hold(self, exclusive: bool) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # releases the lock
            self.fd = None


@contextlib.contextmanager
def _locked(folder: Path, exclusive: bool) -> Iterator[_FolderLock]:
    lock = _FolderLock(folder)
    try:
        lock.hold(exclusive)
        yield lock
    finally:
        lock.close()


def save_tensors(stem: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Save ``stem.safetensors`` and ``stem.json`` as one pair (see the module docstring).

    Raises:
        StoreError: ``meta`` uses the reserved keys ``tensor_sha256`` / ``meta_sha256``.
        OSError: the files could not be written (:class:`StoreWriteError` for a failure inside
            safetensors, such as a full disk); the pair saved before, if any, is left as it was.

    Example:
        >>> save_tensors(Path("out/vec"), {"layer_6": v}, {"recipe": "mean_centred"})
    """
    tensor_path, meta_path = paths_of(stem)
    reserved = {"tensor_sha256", "meta_sha256"} & set(meta)
    if reserved:
        raise StoreError(f"metadata keys {sorted(reserved)} are reserved for the store's checksums")
    clean = {k: t.detach().to("cpu").contiguous() for k, t in tensors.items()}
    folder = tensor_path.parent
    folder.mkdir(parents=True, exist_ok=True)
    _clean_stale(folder)
    journal = _journal_of(tensor_path)
    temps: list[Path] = []
    committed = False
    try:
        temps.append(_new_temp(tensor_path))
        _write_into(temps[0], lambda tmp: save_file(clean, tmp))
        payload = {**meta, "tensor_sha256": _sha256(temps[0])}
        payload["meta_sha256"] = _meta_sha256(payload)
        temps.append(_new_temp(meta_path))
        _write_into(temps[1], lambda tmp: _write_text(Path(tmp), json.dumps(payload, indent=1, sort_keys=True)))
        entries = {tensor_path.name: temps[0].name, meta_path.name: temps[1].name}
        with _locked(folder, exclusive=True):
            _recover(folder)
            atomic_write(journal, lambda tmp: _write_text(Path(tmp), json.dumps(entries)))
            committed = True  # from here on the journal owns the temporary files
            _roll_forward(journal)
    except BaseException:
        if not committed:
            for tmp in temps:
                tmp.unlink(missing_ok=True)
        raise


def load_tensors(stem: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load a pair written by :func:`save_tensors`, checking it is intact and one pair.

    Returns the tensors and the metadata as saved (without the checksums). A pair
    whose write was committed but not finished by a writer that died is finished
    first (where the folder is writable).

    Raises:
        StoreError: a file is missing, unreadable or truncated; a checksum differs; the
            metadata checksum ``meta_sha256`` is missing (deleted, or written before
            steerlab checked metadata, 2026-12-01: save it again).

    Example:
        >>> tensors, meta = load_tensors(Path("out/vec"))
    """
    tensor_path, meta_path = paths_of(stem)
    with _locked(tensor_path.parent, exclusive=False) as lock:
        journal = _journal_of(tensor_path)
        if journal.exists():
            lock.hold(exclusive=True)
            with contextlib.suppress(OSError):  # a read-only folder: read what is there
                _roll_forward(journal)
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise StoreError(f"cannot read metadata {meta_path}: {err}") from err
        try:
            data = tensor_path.read_bytes()
        except OSError as err:
            raise StoreError(f"cannot read tensors {tensor_path}: {err}") from err
    if not isinstance(meta, dict):
        raise StoreError(f"metadata {meta_path} is not a JSON object")
    if "meta_sha256" not in meta:
        raise StoreError(f"metadata {meta_path} has no meta_sha256 checksum: it was edited, or written before "
                         "steerlab checked metadata (2026-12-01); save it again")
    if meta["meta_sha256"] != _meta_sha256(meta):
        raise StoreError(f"metadata {meta_path} was altered: it does not match its own checksum")
    if hashlib.sha256(data).hexdigest() != meta.get("tensor_sha256"):
        raise StoreError(f"{tensor_path} does not match the checksum in {meta_path}")
    try:
        tensors = load_bytes(data)
    except Exception as err:  # safetensors raises several types on damage
        raise StoreError(f"cannot read tensors {tensor_path}: {err}") from err
    return tensors, {k: v for k, v in meta.items() if k not in ("tensor_sha256", "meta_sha256")}
