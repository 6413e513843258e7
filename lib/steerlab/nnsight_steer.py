"""Steering as nnsight traces: the second backend, local or remote on NDIF.

:func:`steerlab.steer.steered_logits`, :func:`steerlab.steer.steered_generate` and
:func:`steerlab.steer.generate` take ``backend="hook"`` (default: a forward pre-hook,
:func:`steerlab.steer.steering`) or ``backend="nnsight"``: the traces below, which make
the same edit with the same code, :meth:`steerlab.steer.Intervention.apply`, so the
mathematics lives in one place. ``remote=True`` sends the trace to NDIF (the National
Deep Inference Fabric), which runs it on its copy of the model, named by hub id; only
``.save()``d values come back. ``remote="local"`` is nnsight's dry run of that path: the
request is serialized and deserialized with steerlab hidden, then run here.

Where the edit goes: steerlab's layer ``L`` is the residual stream *entering* block
``L``, so the trace replaces ``blocks[L].input`` (for every ``L``, layer 0 included:
the embeddings entering block 0), as the hook backend edits block ``L``'s input.

Which tokens: in the first call (the prompt) the positions the rule selects, from the
batch's attention mask (and its BOS flags, for ``after_bos``); under ``position="all"``
also every generated token, one ``tracer.iter`` step each (an edit outside the loop
binds to the first call only). The generated ids are read in a second, empty
``tracer.invoke()``, so they come back also when generation ends early (every row at end-of-sequence, or ``should_stop``) and the
step loop is left waiting for a step that never ran.

Inputs: nnsight adds ``position_ids`` counted from each row's first real token to a
left-padded *forward*; the hook backend calls the model without them, so
:func:`nnsight_logits` passes the positions the model would use itself
(``0 .. seq-1``) and both backends compute the same logits. Generation gets its
positions from ``generate`` on both backends.

Per function, what the nnsight backend does with what the hook backend offers:

- :func:`steerlab.steer.steered_logits`: everything (operators, positions, per-row
  additions, prompt pairs); returns the full ``[batch, seq, vocab]`` logits, which
  remotely is what comes back over the network.
- :func:`steerlab.steer.steered_generate` / :func:`steerlab.steer.generate`: locally
  everything, :class:`steerlab.sampling.NucleusSampler` and ``should_stop`` included
  (they are passed to ``generate`` as on the hook backend). Remotely, ``should_stop``
  is an error (it polls this process while the server generates; generate without it),
  and sampling uses the same sampler, whose per-row generators travel with the request.
- ``scale="typical"`` in :func:`steerlab.steer.generate` reads the typical norm from
  cached statistics, computed locally; for a remote model pass ``scale="raw"``.
- Local-only, hook backend only: :mod:`steerlab.replay` (calls blocks directly) and
  :func:`steerlab.metrics.completion_perplexity` (shares a prompt's key-value cache).
  They need the weights in this process.

A model loaded with :func:`load_remote_model` (``sl.load_model(hub_id, remote=True)``)
has no weights here: its modules are on PyTorch's meta device. It traces only with
``remote=True``; anything that would run it here is refused.
"""

from __future__ import annotations

import hashlib
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from .arch import architecture_of
from .models import Model, ModelLoadError, reachable
from .tokens import Batch

if TYPE_CHECKING:
    from .steer import Intervention

__all__ = [
    "BACKENDS",
    "NdifUnavailableError",
    "Remote",
    "RemoteModel",
    "check_backend",
    "check_remote",
    "load_remote_model",
    "ndif_host",
    "nnsight_generate",
    "nnsight_lens",
    "nnsight_logits",
    "register_steerlab",
]

BACKENDS = ("hook", "nnsight")
Remote = bool | Literal["local"]
# A dangling step loop ends generation that stopped before max_new_tokens: expected here.
_DANGLING = r".*was never reached: the loop asked for a step the run did not make"
_API_KEY_VAR = "NDIF_API_KEY"


class NdifUnavailableError(RuntimeError):
    """A remote trace could not be sent to NDIF: no API key, or the service is unreachable."""


class RemoteModel(Model):
    """A model whose weights stay on NDIF: the module tree on the meta device, no weights here.

    ``fingerprint`` is ``repo@revision`` (the commit the config was read at, where known)
    instead of a hash of weights that are not here. ``on_hub`` is False for one built
    from a local folder (offline checks only: NDIF runs models by hub id).
    """

    def __init__(self, *args: Any, remote_id: str, revision: str, on_hub: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.remote_id = remote_id
        self.revision = revision
        self.on_hub = on_hub

    @property
    def fingerprint(self) -> str:
        """``repo@revision``: which checkpoint NDIF runs (no weights here to hash)."""
        return f"{self.remote_id}@{self.revision}"

    def refresh_fingerprint(self) -> str:
        """The same ``repo@revision`` (nothing to rehash)."""
        return self.fingerprint

    def __repr__(self) -> str:
        return (f"RemoteModel({self.name!r} on NDIF, {self.hf.config.model_type}, n_layers={self.n_layers}, "
                f"d_model={self.d_model})")


def check_backend(backend: str, remote: Remote, model: Model, what: str) -> None:
    """Validate ``backend`` / ``remote`` for a call of ``what`` (a function name) on ``model``.

    Raises:
        ValueError: an unknown backend or ``remote`` value, or ``remote`` with the hook backend.
        RuntimeError: a :class:`RemoteModel` asked to run here.

    Example:
        >>> check_backend("nnsight", False, model, "steered_logits")
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r} for {what}; expected one of {', '.join(BACKENDS)}")
    if remote not in (False, True, "local"):
        raise ValueError(f"remote must be False, True or 'local' for {what}, got {remote!r}")
    if remote and backend != "nnsight":
        raise ValueError(f"{what}(remote={remote!r}) needs backend='nnsight': the hook backend runs the "
                         "model in this process")
    if isinstance(model, RemoteModel) and remote is not True:
        raise RuntimeError(f"{model.name!r} was loaded with remote=True: its weights are on NDIF, not here. "
                           f"Call {what}(..., backend='nnsight', remote=True), or load it without remote= "
                           "to run it locally")


def register_steerlab() -> None:
    """Ship steerlab's code with remote requests (``nnsight.register``); idempotent.

    The NDIF server has no steerlab installed; registered, the classes and functions a
    trace uses (:class:`steerlab.steer.Intervention`, the position rules) are pickled by
    value, source and all.

    Example:
        >>> register_steerlab()
    """
    import nnsight

    import steerlab

    nnsight.register(steerlab)


def ndif_host() -> str:
    """The NDIF API address nnsight sends to (``CONFIG.API.HOST``; env ``NDIF_HOST``)."""
    from nnsight.schema.config import CONFIG

    return str(CONFIG.API.HOST)


def check_remote(model: Model, remote: Remote, what: str, *, timeout: float = 3.0) -> None:
    """Before a remote trace: steerlab registered, an API key set, NDIF reachable.

    nnsight itself would open a websocket with no timeout of its own; this fails in at
    most ``timeout`` seconds instead, before anything is serialized or sent, so nothing
    about the model changes.

    Raises:
        RuntimeError: ``remote=True`` on a model not loaded with ``remote=True``, or a
            :class:`RemoteModel` without ``remote=True``.
        NdifUnavailableError: no API key (``NDIF_API_KEY``), or NDIF unreachable.

    Example:
        >>> check_remote(model, True, "steered_logits")
    """
    if isinstance(model, RemoteModel) and remote is not True:
        how = "backend='nnsight', remote=True" if what.startswith(("steered_", "generate")) else "remote=True"
        raise RuntimeError(f"{model.name!r} was loaded with remote=True: its weights are on NDIF, not here. "
                           f"Call {what}(..., {how})")
    if not remote:
        return
    register_steerlab()
    if remote == "local":
        return
    if not isinstance(model, RemoteModel):  # RuntimeError like every "cannot run here" refusal
        raise RuntimeError(  # noqa: TRY004
            f"{what}(remote=True) needs a model loaded with sl.load_model(<hub id>, remote=True); "
            f"{model.name!r} was loaded locally (NDIF runs models by hub id)")
    if not model.on_hub:
        raise RuntimeError(f"{what}(remote=True): {model.name!r} was built from a local folder; NDIF runs models "
                           "by hub id: load_model('<org>/<name>', remote=True)")
    from nnsight.schema.config import CONFIG

    host = ndif_host()
    if not CONFIG.API.APIKEY:
        raise NdifUnavailableError(
            f"{what}(remote=True): no NDIF API key. Set the environment variable {_API_KEY_VAR} (read when "
            "nnsight is imported) or run nnsight.login() (see https://ndif.us)")
    if not reachable(host, timeout):
        raise NdifUnavailableError(
            f"{what}(remote=True): NDIF at {host} is unreachable from this machine (no connection within "
            f"{timeout:g} s). Remote traces need network access to NDIF and an API key ({_API_KEY_VAR}); "
            "nothing was sent and the model is unchanged")


def _forward_inputs(model: Model, batch: Batch, remote: Remote) -> dict[str, torch.Tensor]:
    device = torch.device("cpu") if remote is True else model.device
    inputs = {k: v.to(device) for k, v in batch.as_inputs().items()}
    ids = inputs["input_ids"]
    # The positions the model counts itself without position_ids (what the hook backend
    # gets), so nnsight does not add left-padding-corrected ones.
    inputs["position_ids"] = torch.arange(ids.shape[1], device=device).expand_as(ids)
    return inputs


def _block(model: Model, layer: int) -> Any:
    return model.envoy(model.arch.blocks)[layer]


@torch.inference_mode()
def nnsight_logits(model: Model, batch: Batch, intervention: Intervention | None, *,
                   remote: Remote = False) -> torch.Tensor:
    """Logits ``[batch, seq, vocab]`` of one forward pass, block ``intervention.layer``'s input edited.

    The nnsight form of :func:`steerlab.steer.steered_logits` (which validates the
    arguments and builds the :class:`~steerlab.steer.Intervention`); ``None`` is the
    plain forward.

    Example:
        >>> logits = nnsight_logits(model, batch, Intervention(6, [v], [None], "add", "all_prompt"))
    """
    check_remote(model, remote, "steered_logits")
    inputs = _forward_inputs(model, batch, remote)
    lm = model.lm
    real, bos = batch.attention_mask.bool(), batch.bos
    if intervention is None:
        with lm.trace(inputs, remote=remote):
            logits = lm.output.logits.save()
    else:
        block = _block(model, intervention.layer)
        with lm.trace(inputs, remote=remote):
            block.input = intervention.apply(block.input, real, continuing=False, bos=bos)
            logits = lm.output.logits.save()
    return logits.float()


@torch.inference_mode()
def nnsight_generate(model: Model, batch: Batch, intervention: Intervention | None, *,
                     max_new_tokens: int, generate_kwargs: Mapping[str, Any],
                     remote: Remote = False) -> torch.Tensor:
    """Generate from a left-padded ``batch``, steered like the hook backend; ``[batch, new]`` token ids.

    The nnsight form of :func:`steerlab.steer.steered_generate`: the prompt call is
    edited at the positions the rule selects; under ``position="all"`` every later step
    at its one new token. ``generate_kwargs`` go to ``generate`` (``do_sample``,
    ``pad_token_id``, ``logits_processor``, ``stopping_criteria``).

    Example:
        >>> ids = nnsight_generate(model, batch, None, max_new_tokens=5,
        ...                        generate_kwargs={"do_sample": False})
    """
    check_remote(model, remote, "steered_generate")
    device = torch.device("cpu") if remote is True else model.device
    inputs = {k: v.to(device) for k, v in batch.as_inputs().items()}
    prompt_len = batch.input_ids.shape[1]
    kwargs = {"max_new_tokens": max_new_tokens, **generate_kwargs}
    lm = model.lm
    real, bos = batch.attention_mask.bool(), batch.bos
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_DANGLING)
        if intervention is None:
            with lm.generate(inputs, remote=remote, **kwargs) as tracer:
                ids = tracer.result.save()
        elif intervention.position != "all":
            block = _block(model, intervention.layer)
            with lm.generate(inputs, remote=remote, **kwargs) as tracer:
                block.input = intervention.apply(block.input, real, continuing=False, bos=bos)
                ids = tracer.result.save()
        else:
            block = _block(model, intervention.layer)
            with lm.generate(remote=remote, **kwargs) as tracer:
                with tracer.invoke(inputs):
                    block.input = intervention.apply(block.input, real, continuing=False, bos=bos)
                    for _step in tracer.iter[1:max_new_tokens]:
                        hidden = block.input  # [batch, 1, d_model]: the token generated last
                        new = torch.ones(hidden.shape[:2], dtype=torch.bool)
                        block.input = intervention.apply(hidden, new, continuing=True)
                with tracer.invoke():
                    ids = tracer.result.save()
    return ids[:, prompt_len:].cpu()


@torch.inference_mode()
def nnsight_lens(model: Model, x: torch.Tensor, *, apply_norm: bool = True, remote: Remote = False) -> torch.Tensor:
    """``unembed(final_norm(x))`` for ``x`` ``[..., d_model]`` run in an nnsight session (on NDIF with
    ``remote=True``); before any logit soft cap, which :func:`steerlab.lens.lens_logits` applies.

    Example:
        >>> logits = nnsight_lens(model, vector.at(16), remote=True)  # [vocab]
    """
    check_remote(model, remote, "lens_logits")
    output = model.hf.get_output_embeddings()
    path = next(name for name, module in model.hf.named_modules() if module is output)
    head = model.envoy(path)
    norm = model.envoy(model.arch.final_norm) if apply_norm else None
    lm = model.lm
    h = x.detach().float().cpu()
    with lm.session(remote=remote):
        # The server's weights decide device and dtype (meta here, bfloat16 there, perhaps).
        h = h.to(device=head.weight.device, dtype=head.weight.dtype)
        if norm is not None:
            h = norm(h)
        logits = head(h).save()
    return logits.float().cpu()


# --- loading a model that stays on NDIF ------------------------------------------------


def _revision_of(name: str, revision: str | None, local: Path | None) -> str:
    """The commit the config was read at, where the hub cache knows it; else the name given."""
    if local is not None:
        config = (local / "config.json").read_bytes()
        return "local-config-" + hashlib.sha256(config).hexdigest()[:12]
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(name, "config.json", revision=revision)
    if isinstance(found, str):
        parts = Path(found).parts
        if "snapshots" in parts:
            return parts[parts.index("snapshots") + 1]
    return revision or "main"


def load_remote_model(name: str, *, revision: str | None = None) -> RemoteModel:
    """An NDIF-hosted model by hub id: its module tree and tokenizer here, no weights.

    nnsight builds the architecture on PyTorch's meta device from the hub config, so
    nothing the size of the weights is read or allocated; traces on it must run with
    ``remote=True``. steerlab is registered with ``nnsight.register`` so remote traces
    can use its code. ``sl.load_model(name, remote=True)`` calls this. A local folder
    (config and tokenizer, no weights needed) builds the same meta model, for offline
    checks; NDIF cannot run it.

    Raises:
        ModelLoadError: the config or tokenizer cannot be read (offline and not cached).
        UnsupportedArchitectureError: a model family steerlab does not know.

    Example:
        >>> model = sl.load_model("meta-llama/Llama-3.1-8B", remote=True)
        >>> logits = sl.steered_logits(model, batch, [v], layer=16, backend="nnsight", remote=True)
    """
    import nnsight

    from .embedded import embedded_model

    if not isinstance(name, str) or embedded_model(name) is not None:
        raise ModelLoadError(f"remote=True needs a Hugging Face hub id of a model NDIF serves (e.g. "
                             f"'meta-llama/Llama-3.1-8B'), got {name!r}; the embedded models run locally")
    started = time.perf_counter()
    path = Path(name).expanduser()
    local = path if path.is_dir() else None
    from transformers import AutoTokenizer

    source = str(path) if local else name
    try:
        # nnsight's pipeline does not find a local folder's tokenizer by itself: hand it one.
        tokenizer = AutoTokenizer.from_pretrained(source, revision=revision)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        lm = nnsight.TransformersModel(source, revision=revision, tokenizer=tokenizer, task="text-generation")
    except Exception as err:  # hub errors, missing files: all re-raised with the name
        raise ModelLoadError(f"could not build {name!r} for remote use from its config and tokenizer: {err}") from err
    hf = lm._module
    arch = architecture_of(hf)
    if any(p.device.type != "meta" for p in hf.parameters()):  # nnsight built it eagerly: refuse, do not run
        raise ModelLoadError(f"{name!r} was loaded with weights; expected a meta-device build for remote use")
    register_steerlab()
    rev = _revision_of(name, revision, local)
    model = RemoteModel(name=name, hf=hf, lm=lm, tokenizer=tokenizer, arch=arch, source=f"ndif:{name}@{rev}",
                        remote_id=str(local.resolve()) if local else name, revision=rev, on_hub=local is None)
    model.load_seconds = time.perf_counter() - started
    return model
