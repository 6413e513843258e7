"""Models that stay on NDIF (the National Deep Inference Fabric), and the checks before a remote trace.

``sl.load_model(hub_id, remote=True)`` builds a :class:`RemoteModel`: the module tree on
PyTorch's meta device from the hub config, the tokenizer here, no weights. Its traces
(:mod:`steerlab.trace`) run with ``remote=True``: the request goes to NDIF, which runs it
on its copy of the model, named by hub id, and only ``.save()``d values come back.
``remote="local"`` is nnsight's dry run of that path (serialized, deserialized with
steerlab hidden, run here). :func:`check_remote` fails fast, before anything is sent:
no API key, NDIF unreachable, a local model asked to run remotely or the reverse.
steerlab is registered with ``nnsight.register`` so the server can run its code.

What runs remotely, per function: :mod:`steerlab.trace` (statistics, residuals, the
lens, steered logits and generation through ``backend="nnsight"``). The steering scope
(:func:`steerlab.steer.steering`), block replay and completion perplexity need the
weights in this process and refuse a remote model.
"""

from __future__ import annotations

import hashlib
import os
import socket
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from .arch import architecture_of
from .embedded import embedded_model
from .models import Model, ModelLoadError

__all__ = [
    "BACKENDS",
    "REQUEST_TIMEOUT",
    "NdifUnavailableError",
    "Remote",
    "RemoteModel",
    "check_backend",
    "check_local",
    "check_remote",
    "load_remote_model",
    "ndif_answers",
    "ndif_host",
    "reachable",
    "register_steerlab",
    "request_timeout",
]

BACKENDS = ("hook", "nnsight")
Remote = bool | Literal["local"]
_API_KEY_VAR = "NDIF_API_KEY"


def reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to ``url``'s host opens within ``timeout`` seconds (DNS included).

    Run in a thread because name resolution has no timeout of its own.
    """
    parsed = urllib.parse.urlparse(url)
    host, port = parsed.hostname or "", parsed.port or (443 if parsed.scheme == "https" else 80)
    ok: list[bool] = []

    def attempt() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            ok.append(True)
        except OSError:
            pass

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(timeout)
    return bool(ok)



class NdifUnavailableError(RuntimeError):
    """A remote trace could not be sent to NDIF or got no answer: no API key, the service
    unreachable, or no answer within :func:`request_timeout`."""


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

    def checked_fingerprint(self) -> str:
        """The same ``repo@revision`` (no weights here to check)."""
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


REQUEST_TIMEOUT = 30.0
"""Seconds a remote request may wait on NDIF's websocket for any one answer (the handshake,
the session id; with nnsight's ``REMOTE_LOGGING`` off, also each status update) before it fails
with :class:`NdifUnavailableError`; environment ``STEERLAB_NDIF_TIMEOUT``. A live server answers
the handshake and sends the session id within a second; 30 s leaves room for a slow network or a
busy host, and ends a call to a host that will never answer while its user still waits for it
(it was 120 s, long for an interactive call). A job that queues for minutes with remote logging
off needs more: ``STEERLAB_NDIF_TIMEOUT=600``."""


def request_timeout() -> float:
    """The wait limit of a remote request's websocket (:data:`REQUEST_TIMEOUT`, or ``STEERLAB_NDIF_TIMEOUT``)."""
    text = os.environ.get("STEERLAB_NDIF_TIMEOUT", "").strip()
    if text:
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"STEERLAB_NDIF_TIMEOUT={text!r} is not a number of seconds") from None
        if not value > 0:
            raise ValueError(f"STEERLAB_NDIF_TIMEOUT={text!r} must be a positive number of seconds")
        return value
    return REQUEST_TIMEOUT


def _bound_websocket_waits() -> None:
    """nnsight opens NDIF's websocket with no timeout (a host that accepts TCP and never answers
    would hang the call forever): give every websocket connect and receive a limit."""
    import websocket

    websocket.setdefaulttimeout(request_timeout())


def _timed_out(err: BaseException) -> bool:
    """Whether ``err`` is a wait on NDIF's websocket that ran past its limit."""
    if isinstance(err, TimeoutError):  # socket.timeout is TimeoutError
        return True
    websocket = sys.modules.get("websocket")  # imported by nnsight's remote backend, if it ran
    timeout_error = getattr(websocket, "WebSocketTimeoutException", None)
    return isinstance(timeout_error, type) and isinstance(err, timeout_error)


@contextmanager
def ndif_answers(what: str, remote: Remote) -> Iterator[None]:
    """Around a remote trace: a wait on NDIF that runs past :func:`request_timeout` ends as an
    :class:`NdifUnavailableError` naming the host, the limit and how to raise it, instead of
    ``websocket``'s bare "Connection timed out". Does nothing unless ``remote is True``.

    Example:
        >>> with ndif_answers("steered_logits", remote):
        ...     logits = run_the_trace()
    """
    if remote is not True:
        yield
        return
    try:
        yield
    except Exception as err:
        if not _timed_out(err):
            raise
        limit = request_timeout()
        raise NdifUnavailableError(
            f"{what}(remote=True): NDIF at {ndif_host()} accepted the connection but sent no answer within "
            f"{limit:g} s (steerlab's wait limit, STEERLAB_NDIF_TIMEOUT, default {REQUEST_TIMEOUT:g} s). "
            "For a busy server or a long queued job raise it, e.g. STEERLAB_NDIF_TIMEOUT=600; else check "
            "that this is NDIF's address (NDIF_HOST)") from err


def check_remote(model: Model, remote: Remote, what: str, *, timeout: float = 3.0) -> None:
    """Before a remote trace: steerlab registered, an API key set, NDIF reachable.

    nnsight itself would open a websocket with no timeout of its own; this fails in at
    most ``timeout`` seconds instead, before anything is serialized or sent, so nothing
    about the model changes. It also bounds every wait of the request on NDIF's websocket
    (:func:`request_timeout`, 30 s by default): a server that accepts the connection and
    never answers ends the call with :class:`NdifUnavailableError` (:func:`ndif_answers`)
    instead of hanging it.

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
    _bound_websocket_waits()


def check_local(model: Model, what: str) -> None:
    """Refuse a :class:`RemoteModel` where ``what`` needs the weights in this process.

    Raises:
        RuntimeError: naming ``what`` and the remote route, if there is one.

    Example:
        >>> check_local(model, "steering")
    """
    if isinstance(model, RemoteModel):
        raise RuntimeError(  # noqa: TRY004 - like every "cannot run here" refusal
            f"{what} needs the weights in this process, but {model.name!r} was loaded with "
                           "remote=True (its weights are on NDIF). Use steered_logits / steered_generate / "
                           "generate with backend='nnsight', remote=True, or load the model without remote=")


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
