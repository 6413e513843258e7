"""Loading models: the embedded ones, or any Hugging Face causal LM by name, checked at load.

``load_model()`` takes the embedded default (SmolLM2-135M-Instruct), the second
embedded model (``"gemma3-270m"``), a local checkpoint folder, a ``.gguf`` file
or a hub id. The embedded models are provisioned into a cache by
:mod:`steerlab.embedded`; everything else goes through
``AutoModelForCausalLM.from_pretrained``. :func:`wrap` takes a model you already
loaded with transformers. :func:`cast` copies a model into another dtype and
:func:`fast_dtype` says which dtype is faster here.

Every load ends with a self-check on a two-token input: the residual that
steerlab reads at layer ``n_layers`` must equal the last block's output, and
the logit lens of that layer must equal the model's own logits. A model whose
modules do not match its family's entry in :mod:`steerlab.arch` fails here,
with a message naming the family and what differed, instead of giving wrong
numbers later.
"""

from __future__ import annotations

import json
import os
import platform
import re
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .arch import architecture_of, block_hidden, blocks_of, final_norm_of
from .embedded import (
    EMBEDDED_MODEL,
    EMBEDDED_MODELS,
    ModelLoadError,
    check_gguf,
    embedded_model,
    provision,
    read_marker,
    rebuild_if_damaged,
)
from .lens import lens_logits
from .models import (
    _TOKENIZER_FILES,
    Model,
    _files_key,
    _read_cached_hash,
    _signature,
    _write_cached_hash,
    content_checksum,
    content_hash,
)
from .remote import load_remote_model, reachable

__all__ = [
    "DTYPES",
    "cast",
    "cpu_model_and_flags",
    "fast_dtype",
    "file_problems",
    "load_model",
    "machine",
    "self_check",
    "wrap",
]

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16}


# --- the self-check ----------------------------------------------------------------


def _max_rel_diff(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = got.float(), want.float()
    return float((got - want).abs().max()) / max(1.0, float(want.abs().max()))


def self_check(model: Model) -> None:
    """Check on a two-token input that steerlab reads this model's layout right.

    One forward pass with hooks on the modules that :mod:`steerlab.arch` names
    (the ones :func:`steerlab.trace.residuals` reads through nnsight, so the
    read is the same; that nnsight's read equals these hooks is tested per
    family in ``tests/test_arch.py``). It checks that every block at the
    table's path runs once, in order; that the input of block 0 (layer 0)
    equals Hugging Face's ``hidden_states[0]`` (the embeddings, scaled for
    Gemma); that the last block's output (layer ``n_layers``) is what the final
    norm receives, once; and that the logit lens of that layer (final norm,
    unembedding, soft cap: :func:`steerlab.lens.lens_logits`) equals the
    model's own logits. Costs one forward pass of two tokens plus one lens.

    Raises:
        ModelLoadError: naming the family and what did not match.

    Example:
        >>> self_check(load_model("gpt2"))  # raises if steerlab.arch is wrong for it
    """
    hf = model.hf
    where = f"the {hf.config.model_type!r} entry of steerlab.arch ({model.arch}) does not match {model.name}"
    blocks = blocks_of(hf)
    n = len(blocks)
    configured = getattr(hf.config, "num_hidden_layers", None)
    if configured is not None and configured != n:
        raise ModelLoadError(f"{where}: {model.arch.blocks!r} holds {n} blocks, the config says {configured}")
    vocab = int(hf.get_input_embeddings().weight.shape[0])
    ids = torch.tensor([[min(100, vocab - 1), min(200, vocab - 1)]], device=model.device)
    calls: list[int] = []
    seen: dict[str, list[torch.Tensor]] = {"first_in": [], "last_out": [], "norm_in": []}

    def first_input(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        seen["first_in"].append(args[0] if args else kwargs["hidden_states"])

    def norm_input(module: nn.Module, args: tuple[Any, ...]) -> None:
        seen["norm_in"].append(args[0])

    hooks = [block.register_forward_hook(lambda m, a, o, i=i: calls.append(i)) for i, block in enumerate(blocks)]
    hooks.append(blocks[0].register_forward_pre_hook(first_input, with_kwargs=True))
    hooks.append(blocks[-1].register_forward_hook(lambda m, a, o: seen["last_out"].append(block_hidden(o))))
    hooks.append(final_norm_of(hf).register_forward_pre_hook(norm_input))
    try:
        with torch.inference_mode():
            out = hf(input_ids=ids, attention_mask=torch.ones_like(ids), output_hidden_states=True)
    finally:
        for hook in hooks:
            hook.remove()
    if calls != list(range(n)):
        raise ModelLoadError(f"{where}: a forward pass ran the blocks at {model.arch.blocks!r} in the order "
                             f"{calls}, expected each of 0..{n - 1} once")
    if len(seen["norm_in"]) != 1:
        raise ModelLoadError(f"{where}: the final norm {model.arch.final_norm!r} ran {len(seen['norm_in'])} "
                             "times in one forward pass, expected once, after the last block")
    last = seen["last_out"][0]
    tolerance = 1e-4 if model.dtype == torch.float32 else 2e-2
    attr = model.arch.logit_softcap_attr
    cap = f"soft cap config.{attr} = {getattr(hf.config, attr, None)}" if attr else "no soft cap"
    checks = [
        ("the residual at layer 0 (input of block 0)", seen["first_in"][0], out.hidden_states[0],
         "Hugging Face's hidden_states[0]"),
        (f"the residual at layer {n} (output of the last block)", last, seen["norm_in"][0],
         f"the input of the final norm {model.arch.final_norm!r}"),
        (f"the logit lens of layer {n} (final norm {model.arch.final_norm!r}, {cap})", lens_logits(model, last),
         out.logits, "the model's logits"),
    ]
    for what, got, want, against in checks:
        if got.shape != want.shape:
            raise ModelLoadError(f"{where}: {what} has shape {tuple(got.shape)}, {against} {tuple(want.shape)}")
        diff = _max_rel_diff(got, want)
        if not diff <= tolerance:
            raise ModelLoadError(f"{where}: {what} differs from {against} by up to {diff:.3g} "
                                 f"(relative to its largest value; tolerance {tolerance:g})")


def _contiguous_input(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Forward pre-hook: the module's first input, made contiguous (a no-op when it already is)."""
    if args and isinstance(args[0], torch.Tensor) and not args[0].is_contiguous():
        return (args[0].contiguous(), *args[1:])
    return args


def contiguous_unembedding_input(hf: Any) -> None:
    """Make the unembedding's input contiguous before its matmul (idempotent; every load does it).

    transformers computes logits for the last position only (``logits_to_keep=1``, as ``generate``
    does on every prompt) by slicing ``hidden[:, -1:, :]``, a non-contiguous view. ``F.linear``
    cannot fold such a 3-D input into one matrix multiply, so torch's CPU ``bmm`` path copies the
    whole unembedding once per row (pytorch/pytorch#151934): measured here, 32 rows x 128 tokens
    of SmolLM2, 1138 ms in bfloat16 and 114 ms in float32 against 3.8 ms and 20 ms for the same
    input made contiguous (``bench/`` section 10). Copying the ``[batch, 1, d_model]`` slice costs
    nothing by comparison. The logits are the same numbers either way.
    """
    head = hf.get_output_embeddings() if hasattr(hf, "get_output_embeddings") else None
    if isinstance(head, nn.Module) and _contiguous_input not in head._forward_pre_hooks.values():
        head.register_forward_pre_hook(_contiguous_input)


def _wrap(hf: Any, tokenizer: Any, name: str, source: str, started: float,
          files: list[Path] | None = None, check: bool = True) -> Model:
    """Wrap a loaded HF model; ``files`` (the checkpoint's) let a cached content hash be reused."""
    arch = architecture_of(hf)  # fail early, with the supported list, on unknown types
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    hf.eval()
    hf.requires_grad_(False)
    contiguous_unembedding_input(hf)
    model = Model(name=name, hf=hf, lm=None, tokenizer=tokenizer, arch=arch, source=source)  # nnsight on first use
    if files:
        # Now, while the weights are exactly the files' (hashed later, an edit through
        # .data could slip into the on-disk cache under the unchanged files' key).
        key = _files_key(files, model.dtype)
        signature = _signature(hf)
        cached = _read_cached_hash(key)
        if cached is None:
            cached = content_hash(hf)
            _write_cached_hash(key, cached)
        model._fp.value, model._fp.signature = cached, signature
        model._fp.checksum = content_checksum(hf)  # what checked_fingerprint compares with
    if check:
        self_check(model)
    model.load_seconds = time.perf_counter() - started
    return model


def wrap(hf_model: Any, tokenizer: Any, *, name: str | None = None) -> Model:
    """A model you already loaded with transformers, ready for every steerlab function.

    The load-time self-check runs on it (a layout steerlab reads wrong is an error naming
    the family); its fingerprint is the hash of its weights and tokenizer, so statistics
    and vectors are cached and checked exactly as for :func:`load_model`. The model is
    put in eval mode with gradients off; a tokenizer without a pad token gets its
    end-of-sequence token as pad token.

    Args:
        hf_model: a causal LM (``AutoModelForCausalLM.from_pretrained(...)``) of a
            supported family (:data:`steerlab.arch.ARCHITECTURES`).
        tokenizer: its tokenizer.
        name: what to call it in plots and provenance (default: its config's
            ``_name_or_path``, else its model type).

    Raises:
        TypeError: ``hf_model`` is not a PyTorch module, or ``tokenizer`` cannot encode text.
        UnsupportedArchitectureError: a model family steerlab does not know.
        ModelLoadError: the self-check found a layout steerlab would read wrong.

    Example:
        >>> from transformers import AutoModelForCausalLM, AutoTokenizer
        >>> hf = AutoModelForCausalLM.from_pretrained("gpt2")
        >>> model = sl.wrap(hf, AutoTokenizer.from_pretrained("gpt2"))
    """
    if isinstance(hf_model, Model):
        return hf_model
    if not isinstance(hf_model, nn.Module) or not hasattr(hf_model, "config"):
        raise TypeError(f"wrap() needs a loaded transformers model (a torch.nn.Module with a .config), "
                        f"got {type(hf_model).__name__}")
    if not callable(tokenizer) or not hasattr(tokenizer, "decode"):
        raise TypeError(f"wrap() needs the model's tokenizer (AutoTokenizer.from_pretrained(...)), "
                        f"got {type(tokenizer).__name__}")
    if name is None:
        config = hf_model.config
        name = str(getattr(config, "_name_or_path", "") or getattr(config, "model_type", "model"))
    return _wrap(hf_model, tokenizer, name, f"wrapped:{name}", time.perf_counter())


# --- a copy in another dtype ------------------------------------------------------


def cast(model: Model, dtype: torch.dtype | str) -> Model:
    """``model`` in ``dtype``: itself when it already is, else a copy of its weights cast to
    ``dtype`` on the same device, with the same tokenizer and name, checked at load like any
    model. The original is not touched (memory: one more copy of the weights, in ``dtype``).

    Used by the comparison to score forward passes in bfloat16 while vectors and
    generations come from the float32 model (``CompareConfig.score_dtype``).

    Example:
        >>> fast = cast(model, "bfloat16")
        >>> fast.dtype, model.dtype
        (torch.bfloat16, torch.float32)
    """
    import copy

    torch_dtype = _resolve_dtype(dtype)
    if model.dtype == torch_dtype:
        return model
    hf = copy.deepcopy(model.hf).to(torch_dtype)
    return _wrap(hf, model.tokenizer, model.name, model.source, time.perf_counter())


def fast_dtype(device: torch.device | str = "cpu") -> torch.dtype:
    """The faster dtype for forward passes on ``device``, as measured in ``bench/`` (section 7):
    ``torch.bfloat16`` where the hardware has bfloat16 units (a CPU with AVX512-BF16 or AMX,
    a CUDA GPU that supports it), else ``torch.float32`` (emulated bfloat16 is slower).

    Example:
        >>> fast_dtype("cpu")  # on a CPU with avx512_bf16
        torch.bfloat16
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float32
    if device.type == "cpu":
        probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
        try:
            fast = any(bool(probe()) for probe in probes if probe is not None)
        except (RuntimeError, TypeError, AttributeError):  # a private probe that changed: the safe choice
            fast = False
        return torch.bfloat16 if fast else torch.float32
    return torch.float32


def cpu_model_and_flags() -> tuple[str, frozenset[str]]:
    """The CPU's model name and the flags it reports (``/proc/cpuinfo``'s first processor); the
    platform's name and no flags where that file cannot be read.

    Example:
        >>> "avx512_bf16" in cpu_model_and_flags()[1]
        True
    """
    name, flags = "", frozenset[str]()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name") and ":" in line and not name:
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and ":" in line and not flags:
                flags = frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return name or platform.processor() or platform.machine(), flags


def machine() -> str:
    """This machine in one line, to record next to every time: CPU model, cores, its bfloat16 and
    AVX-512 flags, and the GPU if torch sees one.

    Example:
        >>> machine()
        'AMD EPYC 7B13, 2 cores, avx512f avx512_bf16 (no amx_bf16)'
    """
    name, flags = cpu_model_and_flags()
    wanted = ("avx512f", "avx512_bf16", "amx_bf16")
    have = [f for f in wanted if f in flags]
    lacks = [f for f in wanted if f not in flags]
    text = f"{name}, {os.cpu_count()} cores, {' '.join(have) or 'no AVX-512'}" + (f" (no {' '.join(lacks)})" if lacks else "")
    if torch.cuda.is_available():
        text += f"; GPU {torch.cuda.get_device_name(0)}"
    return text


# --- arguments, folders and the hub ----------------------------------------------------


def _resolve_dtype(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, str) and dtype in DTYPES:
        return DTYPES[dtype]
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    raise ModelLoadError(f"unsupported dtype {dtype!r}: expected torch.float32 (the default) or torch.bfloat16, "
                         f"or the strings {', '.join(map(repr, DTYPES))}")


def _resolve_device(device: str | torch.device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ModelLoadError(f"unknown device {device!r}: expected 'cpu', 'cuda', 'cuda:N' or 'mps'") from err
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelLoadError(f"device {device!r} requested but CUDA is not available on this machine "
                                 f"(torch {torch.__version__}); use device='cpu'")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ModelLoadError(f"device {device!r} requested but only {torch.cuda.device_count()} CUDA device(s) "
                                 "are visible")
        return dev
    if dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ModelLoadError(f"device {device!r} requested but MPS is not available on this machine")
        return dev
    raise ModelLoadError(f"unsupported device {device!r}: expected 'cpu', 'cuda', 'cuda:N' or 'mps'")


def _checkpoint_files(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
            and p.name != "steerlab-complete.json"]


def _check_folder(folder: Path) -> None:
    if not folder.is_dir():
        raise ModelLoadError(f"{folder} is not a folder (nor a .gguf file): expected a checkpoint folder "
                             "with config.json, weights and tokenizer files")
    if not (folder / "config.json").is_file():
        raise ModelLoadError(f"no config.json in {folder}: expected a Hugging Face checkpoint folder")
    if not any((folder / f).is_file() for f in _TOKENIZER_FILES):
        raise ModelLoadError(f"no tokenizer files in {folder}: expected one of {', '.join(_TOKENIZER_FILES)} "
                             "(save the tokenizer with tokenizer.save_pretrained(folder))")


def _safetensors_problem(path: Path) -> str | None:
    """What is wrong with a ``.safetensors`` file, read from its header alone (no tensor data), or None.

    The format: 8 bytes of header length ``n``, ``n`` bytes of JSON naming each tensor's byte range
    in the data that follows. A file cut short (an interrupted download or copy) ends before the
    header or the data it describes.
    """
    size = path.stat().st_size
    if size == 0:
        return f"{path.name} is empty (0 bytes)"
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return f"{path.name} is cut short: {size} bytes, less than the 8-byte header length"
        n = int.from_bytes(head, "little")
        if 8 + n > size:
            return (f"{path.name} is cut short: its header says {n:,} bytes of metadata follow, but the file holds "
                    f"{size:,} bytes in all")
        try:
            header = json.loads(f.read(n))
        except (ValueError, UnicodeDecodeError):
            return f"{path.name} is damaged: its {n:,}-byte header is not valid JSON"
    if not isinstance(header, dict):
        return f"{path.name} is damaged: its header is not a JSON object"
    try:
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    except (TypeError, KeyError, IndexError, ValueError):
        return f"{path.name} is damaged: its header has a tensor entry without data_offsets"
    if 8 + n + end > size:
        return (f"{path.name} is cut short: {size:,} bytes, but its header describes {8 + n + end:,} "
                "(an interrupted download or copy?)")
    return None


def file_problems(folder: Path) -> list[str]:
    """What is wrong with a checkpoint folder's files, one line per bad file naming it: an empty
    file, a JSON file (config, tokenizer) that does not parse, a ``.safetensors`` file cut short
    or with a damaged header, a shard its index names that is missing. Reads headers and the small
    JSON files only. Used to say which file broke a load that failed.

    Example:
        >>> file_problems(Path("models/broken"))
        ['tokenizer.json is empty (0 bytes)']
    """
    problems: list[str] = []
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        try:
            if path.suffix == ".safetensors":
                problem = _safetensors_problem(path)
            elif path.stat().st_size == 0 and (path.suffix in (".json", ".model", ".txt", ".jinja")
                                                or path.name in _TOKENIZER_FILES):
                problem = f"{path.name} is empty (0 bytes)"
            elif path.suffix == ".json":
                try:
                    data = json.loads(path.read_text(encoding="utf-8"))
                except UnicodeDecodeError as err:
                    problem = f"{path.name} is not UTF-8 text ({err.reason} at byte {err.start})"
                except ValueError as err:
                    problem = f"{path.name} is not valid JSON ({err})"
                else:
                    problem = None
                    shards = data.get("weight_map") if isinstance(data, dict) else None
                    if isinstance(shards, dict):
                        missing = sorted({str(s) for s in shards.values()} - {p.name for p in folder.iterdir()})
                        if missing:
                            problem = f"{path.name} names shard(s) that are missing: {', '.join(missing)}"
            else:
                problem = None
        except OSError as err:
            problem = f"{path.name} cannot be read ({err.strerror or err})"
        if problem:
            problems.append(problem)
    return problems


def _from_folder(folder: Path | str, dtype: torch.dtype, device: torch.device, **kwargs: Any) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
    hf: Any = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, **kwargs)
    hf = hf.to(device)
    if len(tokenizer) == 0:
        raise ModelLoadError(f"the tokenizer in {folder} is empty")
    return hf, tokenizer


def _looks_local(name: str) -> bool:
    """A path rather than a hub id (``org/model`` or ``model``)."""
    if name.startswith(("/", "./", "../", "~", ".\\", "..\\")) or name in (".", ".."):
        return True
    if os.sep != "/" and os.sep in name:
        return True
    return not re.fullmatch(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?", name)


def _hub_offline() -> bool:
    return any(os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on")
               for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub (or the HTTPS proxy in front of it) answers within ``timeout``."""
    from huggingface_hub import constants

    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    return reachable(proxy or constants.ENDPOINT, timeout)


def _hub_snapshot(name: str) -> Path | None:
    """The local Hugging Face cache's snapshot folder of hub id ``name``, if it holds one."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(name, "config.json")
    return Path(found).parent if isinstance(found, str) else None


def _no_hub_advice() -> str:
    return (f"Without a reachable model hub, use an embedded model ({', '.join(map(repr, EMBEDDED_MODELS))}; "
            f"the default is {EMBEDDED_MODEL!r}) or a local checkpoint folder.")


def _check_hub_for_remote(name: str | None) -> None:
    """Before building a remote model from the hub: its config cached here, or the hub reachable
    (checked in 3 s, as for a local load, instead of the hub client's ~47 s of retries)."""
    if not isinstance(name, str) or embedded_model(name) is not None or Path(name).expanduser().is_dir():
        return  # load_remote_model refuses the first two and builds a local folder offline
    try:
        snapshot = _hub_snapshot(name)
    except Exception:  # noqa: BLE001 - not a valid hub id: load_remote_model says so
        return
    if snapshot is not None:
        return
    from huggingface_hub import constants

    where = f"its config is not in the local Hugging Face cache ({constants.HF_HUB_CACHE})"
    if _hub_offline():
        raise ModelLoadError(f"could not load {name!r} for remote use: {where} and the hub is switched off "
                             "(HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE)")
    if not _hub_reachable():
        raise ModelLoadError(f"could not load {name!r} for remote use: {where} and the hub ({constants.ENDPOINT}) "
                             "is unreachable (no connection within 3 s); remote models need the hub's config "
                             "and tokenizer once, then NDIF")


def _load_embedded(name: str | None, dtype: torch.dtype, device: torch.device, progress: bool,
                   started: float) -> Model:
    spec = embedded_model(name)
    assert spec is not None
    folder = provision(spec, progress=progress)  # rebuilds only a checkpoint proven damaged
    marker = read_marker(folder)
    try:
        hf, tok = _from_folder(folder, dtype, device)
    except Exception as err:  # sorted below into "damaged" and "not ours to fix"
        retry, damage = rebuild_if_damaged(spec, folder, marker, progress=progress)
        if retry is None:
            raise ModelLoadError(f"could not load the {spec.name} checkpoint {folder}: {err}. Its files match "
                                 "their recorded checksums, so it was left in place.") from err
        folder = retry
        try:
            hf, tok = _from_folder(folder, dtype, device)
        except Exception as err2:  # noqa: BLE001 - re-raised as ModelLoadError
            raise ModelLoadError(f"could not load the {spec.name} checkpoint {folder}, rebuilt because "
                                 f"{'; '.join(damage)}: {err2}") from err
    return _wrap(hf, tok, spec.name, str(folder), started, files=_checkpoint_files(folder))


def load_model(
    name: str | None = None,
    *,
    dtype: torch.dtype | str = torch.float32,
    device: str | torch.device = "cpu",
    progress: bool = True,
    remote: bool = False,
) -> Model:
    """Load a causal LM for tracing and steering, and check steerlab reads it right.

    ``remote=True``: a hub id NDIF serves, built without weights for remote traces
    (:func:`steerlab.remote.load_remote_model`; ``dtype``/``device`` do not apply).

    Args:
        name: ``None`` or ``"smollm2-135m-instruct"`` for the embedded default;
            ``"gemma3-270m"`` for the second embedded model; a local checkpoint
            folder (``~`` is expanded); a path to a ``.gguf`` file; or a Hugging
            Face hub id (``"gpt2"``, ``"meta-llama/Llama-3.2-1B"``), read from the
            local Hugging Face cache when it is there.
        dtype: ``torch.float32`` (default) or ``torch.bfloat16`` (or ``"float32"``,
            ``"bfloat16"``). The embedded checkpoints are float32 on disk and cast
            at load.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``; checked before
            anything is read.
        progress: show a progress bar while provisioning an embedded model.

    Raises:
        ModelLoadError: a bad dtype or device, a missing folder or file, missing
            tokenizer files, a truncated or corrupt checkpoint (the message names
            the path), a hub id that is neither cached nor reachable, or a model
            whose layout fails the load-time self-check.
        UnsupportedArchitectureError: the model type is not in
            :data:`steerlab.arch.ARCHITECTURES`.

    Example:
        >>> model = load_model()
        >>> model.n_layers, model.d_model
        (30, 576)
    """
    started = time.perf_counter()
    torch_dtype = _resolve_dtype(dtype)  # before any file is touched
    torch_device = _resolve_device(device)
    if remote:
        _check_hub_for_remote(name)
        return load_remote_model(name)  # type: ignore[arg-type]  # it rejects None with a clear error
    if embedded_model(name) is not None:
        return _load_embedded(name, torch_dtype, torch_device, progress, started)
    assert name is not None
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelLoadError(f"GGUF file not found: {path}")
        check_gguf(path)
        try:
            hf, tok = _from_folder(path.parent, torch_dtype, torch_device, gguf_file=path.name)
        except Exception as err:
            raise ModelLoadError(f"could not read GGUF file {path}: {err}") from err
        return _wrap(hf, tok, name, str(path), started, files=[path])
    if path.exists() or _looks_local(name):
        if not path.exists():
            raise ModelLoadError(f"no such folder: {path} (from {name!r}); expected a checkpoint folder, a .gguf "
                                 f"file, a hub id or an embedded model ({', '.join(map(repr, EMBEDDED_MODELS))})")
        return _load_folder(name, path, torch_dtype, torch_device, started, "local folder")
    snapshot = _hub_snapshot(name)
    if snapshot is not None:
        return _load_folder(name, snapshot, torch_dtype, torch_device, started, "hub id from the local cache")
    from huggingface_hub import constants

    # A name like "models/my-model" is also a hub id's shape: say that neither was found.
    no_folder = f"There is no local folder {path.resolve()} either."
    where = f"it is not in the local Hugging Face cache ({constants.HF_HUB_CACHE})"
    if _hub_offline():
        raise ModelLoadError(f"could not load {name!r} as a hub id: {where} and the hub is switched off "
                             f"(HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE). {no_folder} {_no_hub_advice()}")
    if not _hub_reachable():
        raise ModelLoadError(f"could not load {name!r} as a hub id: {where} and the hub "
                             f"({constants.ENDPOINT}) is unreachable. {no_folder} {_no_hub_advice()}")
    try:
        hf, tok = _from_folder(name, torch_dtype, torch_device)
    except Exception as err:  # safetensors' SafetensorError derives from Exception only
        raise ModelLoadError(f"could not load {name!r} as a hub id: {err}. {no_folder} "
                             f"{_no_hub_advice()}") from err
    snapshot = _hub_snapshot(name)
    return _wrap(hf, tok, name, str(snapshot or name), started,
                 files=_checkpoint_files(snapshot) if snapshot else None)


def _load_folder(name: str, folder: Path, dtype: torch.dtype, device: torch.device, started: float,
                 kind: str) -> Model:
    _check_folder(folder)
    try:
        hf, tok = _from_folder(folder, dtype, device, local_files_only=True)
    except Exception as err:  # safetensors' SafetensorError derives from Exception only
        bad = file_problems(folder)  # which file, and what is wrong with it
        why = f"{'; '.join(bad)} (the loader said: {err})" if bad else str(err)
        raise ModelLoadError(f"could not load {name!r} as a {kind} ({folder}): {why}") from err
    return _wrap(hf, tok, name, str(folder), started, files=_checkpoint_files(folder))
