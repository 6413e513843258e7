"""The loaded model (:class:`Model`) and its fingerprint: a hash of its weights and tokenizer.

Loading lives in :mod:`steerlab.load`; this module only knows what a loaded model is.
``Model.fingerprint`` hashes the content of every weight and follows in-place edits after
load (see :attr:`Model.fingerprint`); it keys every cache and every vector's provenance.
:meth:`Model.checked_fingerprint` also sees edits through ``param.data`` (a fast content
checksum) and is what the statistics caches use; :func:`tokenizer_digest` puts the
tokenizer in their keys. A model also knows which threads have a steering scope open
on it (:meth:`Model.steered_here`), so steered statistics never reach a cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import re
import threading
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .arch import Architecture, blocks_of
from .embedded import (
    EMBEDDED_MODEL,
    EMBEDDED_MODELS,
    ModelLoadError,
    cache_root,
    embedded_gguf_path,
    provision_all,
    provision_embedded,
)

__all__ = [
    "EMBEDDED_MODEL",
    "EMBEDDED_MODELS",
    "Model",
    "ModelLoadError",
    "cache_root",
    "content_checksum",
    "content_hash",
    "embedded_gguf_path",
    "provision_all",
    "provision_embedded",
    "tokenizer_digest",
]

# Bump when the bytes that go into the content hash change, so cached hashes are not reused.
_FINGERPRINT_SCHEME = "content-sha256-v1"
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "spiece.model", "vocab.txt")


# --- the fingerprint ---------------------------------------------------------------


def _tensors(hf: Any) -> list[tuple[str, torch.Tensor]]:
    # named_parameters drops tied duplicates (lm_head = embed_tokens), so shared weights count once.
    return list(itertools.chain(hf.named_parameters(), hf.named_buffers()))


def _config_text(hf: Any) -> str:
    # Keys starting with "_" hold the path it was loaded from (_name_or_path) and similar.
    config = {k: v for k, v in hf.config.to_dict().items() if not k.startswith("_") and k != "transformers_version"}
    return json.dumps(config, sort_keys=True, default=str)


def _signature(hf: Any) -> tuple[Any, ...] | None:
    """Cheap summary that changes when any weight is replaced or edited in place.

    torch bumps ``tensor._version`` on every in-place op (also under ``no_grad``
    and ``inference_mode``) and a replaced tensor has a new ``data_ptr``. ``None``
    when a tensor has no version counter (made under ``inference_mode``): then
    edits cannot be seen cheaply and every read hashes again.
    """
    items: list[Any] = [_config_text(hf)]
    for name, t in _tensors(hf):
        try:
            version = t._version
        except RuntimeError:
            return None
        items.append((name, t.data_ptr(), version, t.dtype, tuple(t.shape), str(t.device)))
    return tuple(items)


def content_hash(hf: Any) -> str:
    """SHA-256 over the config and the bytes of every parameter and buffer (16 hex digits).

    Names of tensors, their dtype, shape and bytes go in, so the same weights in
    float32 and bfloat16 hash differently (the dtype is part of the fingerprint);
    the name or path the model was loaded from does not. Measured on this
    project's 2-core CPU (SHA-256 at ~1.5 GB/s when idle): 0.3-0.7 s for
    SmolLM2-135M (540 MB), 0.6-1.9 s for Gemma 3 270M (1.07 GB), depending on
    load. So :func:`load_model` caches it on disk, keyed by the checkpoint files'
    path, size, mtime, ctime and inode and the dtype, and a cached load reads it
    back in milliseconds.

    Example:
        >>> content_hash(model.hf) == model.fingerprint
        True
    """
    digest = hashlib.sha256(_FINGERPRINT_SCHEME.encode())
    digest.update(_config_text(hf).encode())
    with torch.no_grad():
        for name, t in sorted(_tensors(hf), key=lambda item: item[0]):
            digest.update(f"\0{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
            raw = t.detach().contiguous().reshape(-1).view(torch.uint8).cpu().numpy()
            digest.update(raw.data)
    return digest.hexdigest()[:16]


def content_checksum(hf: Any) -> int:
    """A fast checksum of every weight's bytes: the wrapping sum of their 64-bit words.

    Not a cryptographic hash: it catches edits that :attr:`Model.fingerprint`'s version
    counters miss (through ``param.data``, a NumPy view, ``untyped_storage()``), so
    :meth:`Model.checked_fingerprint` can afford to run it before every cached statistics
    read and rehash fully only when it changed. Measured on this project's 2-core CPU
    (shared, load average 13): 60-120 ms for SmolLM2-135M in float32 (540 MB) where the
    SHA-256 :func:`content_hash` took 0.83-0.87 s; well under a millisecond for the tests'
    tiny models.

    Example:
        >>> isinstance(content_checksum(model.hf), int)
        True
    """
    total = 0
    with torch.no_grad():
        for _name, t in _tensors(hf):
            flat = t.detach().reshape(-1)
            if flat.numel() == 0 or flat.device.type == "meta":
                continue
            raw = flat.contiguous().view(torch.uint8).cpu().numpy()
            whole = raw.size // 8 * 8
            # 64-bit words summed in uint64 (wrapping): no conversion, memory-bound. NumPy, not
            # torch: torch's threaded integer sum slowed down 10x on a loaded 2-core machine.
            if whole:
                total += int(raw[:whole].view(np.uint64).sum(dtype=np.uint64))
            if whole < raw.size:
                total += int(raw[whole:].sum(dtype=np.uint64))
    return total & 0xFFFFFFFFFFFFFFFF


def tokenizer_digest(tokenizer: Any) -> str:
    """A hash of what the tokenizer does (16 hex digits): vocabulary, merges, special tokens.

    Part of every statistics cache key, so the same weights with another tokenizer are
    not served the first tokenizer's statistics. A fast tokenizer is hashed through its
    full JSON (``backend_tokenizer.to_str()``, ~0.1 s for SmolLM2's), a slow one through
    its vocabulary; the result is remembered per tokenizer object, its length and
    special tokens, so repeated calls are free.

    Example:
        >>> len(tokenizer_digest(model.tokenizer))
        16
    """
    special = json.dumps(getattr(tokenizer, "special_tokens_map", {}), sort_keys=True, default=str)
    memo_key = (id(tokenizer), len(tokenizer), special, type(tokenizer).__name__)
    cached = _TOKENIZER_DIGESTS.get(memo_key)
    if cached is not None and cached[0] is tokenizer:
        return cached[1]
    digest = hashlib.sha256(type(tokenizer).__name__.encode() + b"\0" + special.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and hasattr(backend, "to_str"):
        digest.update(backend.to_str().encode())
    else:
        digest.update(json.dumps(sorted(tokenizer.get_vocab().items()), default=str).encode())
    digest.update(str(len(tokenizer)).encode())
    value = digest.hexdigest()[:16]
    if len(_TOKENIZER_DIGESTS) > 64:
        _TOKENIZER_DIGESTS.clear()
    _TOKENIZER_DIGESTS[memo_key] = (tokenizer, value)
    return value


_TOKENIZER_DIGESTS: dict[tuple[Any, ...], tuple[Any, str]] = {}


def _files_key(files: list[Path], dtype: torch.dtype) -> str:
    """Key of the on-disk hash cache: the checkpoint files' identity (no bytes read)."""
    stats = []
    for path in sorted(files):
        st = path.stat()  # follows the hub cache's symlinks to the blobs
        stats.append([str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino])
    text = json.dumps([_FINGERPRINT_SCHEME, str(dtype), stats])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _hash_cache_file(key: str) -> Path:
    return cache_root() / "fingerprints" / f"{key}.json"


@dataclass
class _FingerprintState:
    signature: tuple[Any, ...] | None = None
    value: str | None = None
    checksum: int | None = None  # content_checksum of the weights ``value`` was computed (or verified) on
    # Per thread: the checked value pinned by an open :meth:`Model.checked_once` and its depth.
    pinned: threading.local = field(default_factory=threading.local)


@dataclass
class _ScopeState:
    """Which threads have steering scopes open on a model, and which of them paused theirs."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    open: Counter[int] = field(default_factory=Counter)
    paused: Counter[int] = field(default_factory=Counter)


def _read_cached_hash(key: str) -> str | None:
    try:
        value = json.loads(_hash_cache_file(key).read_text()).get("fingerprint")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) and re.fullmatch(r"[0-9a-f]{16}", value) else None


# Temp files of steerlab versions that wrote with tempfile.NamedTemporaryFile(prefix=".{key}.").
_OLD_TEMP = re.compile(r"^\.[0-9a-f]{32}\.[a-z0-9_]{8}$")
_STALE_SECONDS = 10 * 60


def _clean_old_temps(folder: Path) -> None:
    """Remove orphan temp files older writers left in the fingerprint cache (newer ones: the store cleans)."""
    if not folder.is_dir():
        return
    now = time.time()
    for tmp in folder.glob(".*"):
        if _OLD_TEMP.match(tmp.name):
            with contextlib.suppress(OSError):  # another cleaner got there first
                if now - tmp.stat().st_mtime > _STALE_SECONDS:
                    tmp.unlink()


def _write_cached_hash(key: str, value: str) -> None:
    """Remember a content hash on disk; a cache folder that cannot be written costs a warning, not the load."""
    from .store import atomic_write_text  # cleans orphan temp files of killed writers, umask modes

    path = _hash_cache_file(key)
    _clean_old_temps(path.parent)
    try:
        atomic_write_text(path, json.dumps({"fingerprint": value, "scheme": _FINGERPRINT_SCHEME}))
    except OSError as err:
        warnings.warn(f"could not write the fingerprint cache {path}: {err}; the model's weights will be hashed "
                      "again at the next load", stacklevel=3)


# --- the model -------------------------------------------------------------------


_LM_LOCK = threading.Lock()


@dataclass
class Model:
    """A loaded causal LM, its nnsight wrapper and what steerlab needs to know about it.

    Attributes:
        name: what it was loaded as (``smollm2-135m-instruct``, ``gpt2``, a path).
        hf: the Hugging Face model (eval mode, no gradients).
        lm: the ``nnsight.TransformersModel`` wrapping ``hf``, used for every trace; built on
            first use when constructed with ``lm=None`` (:func:`load_model` does: wrapping costs
            ~0.2 s, and steering with the hook backend never needs it).
        tokenizer: its tokenizer, with a pad token set.
        arch: where blocks and norms live (see :mod:`steerlab.arch`).
        load_seconds: wall time of :func:`load_model`, self-check included.
        source: the folder or file the weights were read from.
    """

    name: str
    hf: Any
    lm: Any
    tokenizer: Any
    arch: Architecture
    load_seconds: float = 0.0
    source: str = ""
    _fp: _FingerprintState = field(default_factory=_FingerprintState, repr=False, compare=False)
    _scopes: _ScopeState = field(default_factory=_ScopeState, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.lm is None:
            del self.lm  # built by __getattr__ on first use

    def __getattr__(self, name: str) -> Any:
        # Only reached for attributes not found normally: here, an ``lm`` not built yet.
        if name != "lm":
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        import nnsight

        with _LM_LOCK:  # the widget's worker thread and the kernel may ask at once
            if "lm" not in self.__dict__:
                self.__dict__["lm"] = nnsight.TransformersModel(self.hf, tokenizer=self.tokenizer,
                                                                task="text-generation")
        return self.__dict__["lm"]

    @property
    def fingerprint(self) -> str:
        """Hash of the config and the content of every weight (16 hex digits).

        Used in cache keys and vector provenance: the statistics cache misses and
        :meth:`SteeringVector.check_for` refuses old vectors once any weight has
        changed. The same weights give the same fingerprint whatever path they
        were loaded from; float32 and bfloat16 copies differ. Reading it is cheap
        (a signature of every tensor's ``data_ptr`` and version counter); the full
        hash is recomputed only after a tensor was replaced or edited in place.

        Limit: an edit that bypasses torch's version counter -- through
        ``param.data``, a NumPy view or ``untyped_storage()`` -- is not seen here; the
        statistics caches read :meth:`checked_fingerprint`, which sees it (a fast
        checksum), and :meth:`refresh_fingerprint` updates this value after one.

        Example:
            >>> before = model.fingerprint
            >>> with torch.no_grad():
            ...     model.hf.model.layers[3].mlp.down_proj.weight[3, 5:9] *= 1.01
            >>> model.fingerprint != before
            True
        """
        state = self._fp
        signature = _signature(self.hf)
        if state.value is None or signature is None or signature != state.signature:
            state.value = content_hash(self.hf)
            state.signature = signature
            state.checksum = content_checksum(self.hf)
        return state.value

    def checked_fingerprint(self) -> str:
        """:attr:`fingerprint`, also after an edit through ``param.data``: what statistics caches use.

        Compares a fast checksum of every weight (:func:`content_checksum`, 60-120 ms on
        SmolLM2-135M on 2 loaded CPU cores) with the one recorded with the fingerprint and hashes
        every weight again when it differs, so no cached statistics of the old weights are
        served after any edit.

        Example:
            >>> model.hf.model.layers[3].mlp.down_proj.weight.data[0, 0] += 1.0
            >>> model.checked_fingerprint() != model.fingerprint_before_the_edit
            True
        """
        pinned = getattr(self._fp.pinned, "value", None)
        if pinned is not None:  # inside checked_once: verified at its start
            return pinned
        value = self.fingerprint
        checksum = content_checksum(self.hf)
        if checksum != self._fp.checksum:
            value = self.refresh_fingerprint()
        return value

    @contextmanager
    def checked_once(self) -> Iterator[str]:
        """Check the weights once (:meth:`checked_fingerprint`) for a whole call that reads several caches.

        Inside the block, in this thread, :meth:`checked_fingerprint` returns the value checked
        on entry without checksumming again: ``set_stats("mixed")`` reads nine caches and a
        steered generation three, and each check costs a pass over every weight (18 ms on
        SmolLM2 on an idle 2-core CPU). Nested blocks reuse the outer check; weights must not be
        edited inside one (a block spans one library call, not user code).

        Example:
            >>> with model.checked_once() as fp:
            ...     fp == model.checked_fingerprint()
            True
        """
        local = self._fp.pinned
        if getattr(local, "value", None) is not None:
            yield local.value
            return
        local.value = self.checked_fingerprint()
        try:
            yield local.value
        finally:
            local.value = None

    def refresh_fingerprint(self) -> str:
        """Hash every weight again now (after an edit through ``.data``); returns the fingerprint."""
        self._fp.value = None
        return self.fingerprint

    # --- steering scopes (opened by steerlab.steer.steering) ---------------------------

    def _scope_opened(self) -> int:
        """Record a steering scope opened by the calling thread; returns the thread's id."""
        owner = threading.get_ident()
        with self._scopes.lock:
            self._scopes.open[owner] += 1
        return owner

    def _scope_closed(self, owner: int) -> None:
        with self._scopes.lock:
            self._scopes.open[owner] -= 1
            if self._scopes.open[owner] <= 0:
                del self._scopes.open[owner]

    def steers(self, owner: int) -> bool:
        """Whether a scope opened by thread ``owner`` applies to the current call: only in that
        thread, and not while it computes statistics (:meth:`unsteered`)."""
        return threading.get_ident() == owner and not self._scopes.paused[owner]

    def steered_here(self) -> bool:
        """Whether calls of the model from this thread are steered now (a scope is open and not paused).

        Example:
            >>> with sl.steering(model, v, layer=6):
            ...     model.steered_here()
            True
        """
        owner = threading.get_ident()
        with self._scopes.lock:
            return self._scopes.open[owner] > 0 and not self._scopes.paused[owner]

    @contextmanager
    def unsteered(self) -> Iterator[None]:
        """Pause this thread's steering scopes for the block (other threads are never steered by them).

        Used for the statistics of named sets and the coefficient unit, which describe the
        model, not a steered run of it.

        Example:
            >>> with sl.steering(model, v, layer=6), model.unsteered():
            ...     logits = model.hf(**inputs).logits  # the plain model's
        """
        owner = threading.get_ident()
        with self._scopes.lock:
            self._scopes.paused[owner] += 1
        try:
            yield
        finally:
            with self._scopes.lock:
                self._scopes.paused[owner] -= 1
                if self._scopes.paused[owner] <= 0:
                    del self._scopes.paused[owner]

    @property
    def n_layers(self) -> int:
        """Number of decoder blocks. Residual layers run from 0 to ``n_layers``."""
        return len(blocks_of(self.hf))

    @property
    def d_model(self) -> int:
        """Width of the residual stream."""
        return int(self.hf.get_input_embeddings().weight.shape[1])

    @property
    def device(self) -> torch.device:
        return next(self.hf.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """Parameter dtype (``torch.float32`` or ``torch.bfloat16``)."""
        return next(self.hf.parameters()).dtype

    def envoy(self, path: str) -> Any:
        """The nnsight envoy at a dotted module path (``model.layers``)."""
        node = self.lm
        for part in path.split("."):
            node = getattr(node, part)
        return node

    def __repr__(self) -> str:
        return (
            f"Model({self.name!r}, {self.hf.config.model_type}, n_layers={self.n_layers}, "
            f"d_model={self.d_model})"
        )
