"""The loaded model (:class:`Model`) and its fingerprint: a hash of its weights and tokenizer.

Loading lives in :mod:`steerlab.load`; this module only knows what a loaded model is.
``Model.fingerprint`` hashes the content of every weight and follows in-place edits after
load (see :attr:`Model.fingerprint`); it keys every cache and every vector's provenance.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    "content_hash",
    "embedded_gguf_path",
    "provision_all",
    "provision_embedded",
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


def _read_cached_hash(key: str) -> str | None:
    try:
        value = json.loads(_hash_cache_file(key).read_text()).get("fingerprint")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) and re.fullmatch(r"[0-9a-f]{16}", value) else None


def _write_cached_hash(key: str, value: str) -> None:
    path = _hash_cache_file(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{key}.", delete=False) as f:
        json.dump({"fingerprint": value, "scheme": _FINGERPRINT_SCHEME}, f)
    os.replace(f.name, path)


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
        ``param.data``, a NumPy view or ``untyped_storage()`` -- is not seen; call
        :meth:`refresh_fingerprint` after one.

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
        return state.value

    def refresh_fingerprint(self) -> str:
        """Hash every weight again now (after an edit through ``.data``); returns the fingerprint."""
        self._fp.value = None
        return self.fingerprint

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
