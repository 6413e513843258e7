"""Steering vectors: a tensor per layer plus where it came from.

Five recipes, in the vocabulary of the motivating write-up:

- ``raw``: the mean activation of a prompt or set (mostly the layer's bias);
- ``mean_centred``: ``mean(target) - mean(general text)``, the bias removed;
- ``counterbalanced``: ``mean(A) - mean(B)`` for two prompts or sets ("Love" - "Hate");
- ``isolated``: ``mean(target set) - mean(reference set)`` where the reference
  shares the features to cancel (sports stories - stories of all genres);
- ``prompt_pair``: ActAdd's per-position difference of two prompts, padded to
  equal length with space tokens, added from the first token on.

Counterbalanced and isolated are the same arithmetic; they differ in intent
and are recorded as different recipes. A random vector of matching norm is
the control.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .data import TextSet
from .models import Model
from .remote import Remote
from .stats import ActivationStats, activation_stats, as_textset
from .store import load_tensors, paths_of, save_tensors
from .tokens import Batch, check_fits
from .trace import check_layers, residuals

__all__ = [
    "ADDED_AT",
    "LayerNotInVectorError",
    "SteeringVector",
    "VectorMismatchError",
    "counterbalanced",
    "isolated",
    "load_vector",
    "mean_centred",
    "prompt_pair",
    "random_like",
    "raw",
    "register_format",
]

# Other file formats, by suffix: (save(vector, path, **options) -> paths, load(path, model) -> vector).
# A format module registers itself (steerlab.llamacpp: ".gguf"); this module knows none by name.
Saver = Callable[..., "list[Path]"]
Loader = Callable[[Path, "Model | None"], "SteeringVector"]
_FORMATS: dict[str, tuple[Saver, Loader]] = {}


def register_format(suffix: str, save: Saver, load: Loader) -> None:
    """Let :meth:`SteeringVector.save` and :func:`load_vector` handle files ending in ``suffix``.

    Example:
        >>> register_format(".gguf", save_gguf_paths, load_gguf)  # what steerlab.llamacpp does
    """
    if not suffix.startswith(".") or len(suffix) < 2:
        raise ValueError(f"a format suffix starts with a dot, like '.gguf'; got {suffix!r}")
    _FORMATS[suffix.lower()] = (save, load)

# Where a vector is added: the residual stream entering block L (Hugging Face's
# ``hidden_states[L]``). steering-vectors, nnterp and llama.cpp add at block *outputs*:
# their layer L is steerlab's L + 1 (llama.cpp's ``direction.N`` is steerlab's layer N + 1).
ADDED_AT = "block_input"

Source = TextSet | Sequence[str] | str | ActivationStats


class VectorMismatchError(ValueError):
    """A vector was made for another model, or has the wrong width."""


class LayerNotInVectorError(KeyError, ValueError):
    """A vector asked for a layer it has no tensor for; the message names the layer and the
    vector's layers. A ``ValueError`` like steerlab's other refusals of a bad value, and a
    ``KeyError`` as it was before; unlike a plain ``KeyError`` it prints without quotes."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


@dataclass
class SteeringVector:
    """A steering vector: ``vectors[layer]`` is ``[d_model]`` (or ``[k, d_model]`` for
    a prompt pair, added to the first ``k`` tokens), plus provenance.

    Example:
        >>> v = mean_centred(model, load_dataset("fantasy", "train"), general, layers=[18])
        >>> v.at(18).shape
        torch.Size([576])
    """

    vectors: dict[int, torch.Tensor]
    model_name: str
    model_fingerprint: str
    d_model: int
    recipe: str
    sources: dict[str, Any]
    position: str
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.recipe, str) or not self.recipe.strip():
            raise ValueError(f"a steering vector's recipe names its construction; got {self.recipe!r}")
        if not self.vectors:
            raise ValueError("a steering vector needs at least one layer")
        for layer, vec in self.vectors.items():
            if vec.shape[-1] != self.d_model or vec.dim() not in (1, 2):
                raise VectorMismatchError(
                    f"vector at layer {layer} has shape {tuple(vec.shape)}; "
                    f"expected [{self.d_model}] or [k, {self.d_model}]"
                )
            if not bool(torch.isfinite(vec).all()):
                raise ValueError(f"vector at layer {layer} contains NaN or inf")

    @property
    def layers(self) -> list[int]:
        return sorted(self.vectors)

    def at(self, layer: int) -> torch.Tensor:
        """The vector at ``layer``.

        Raises:
            LayerNotInVectorError: a layer the vector was not built at (a ``ValueError`` and a
                ``KeyError``), naming the layer and the vector's layers.
        """
        if layer not in self.vectors:
            raise LayerNotInVectorError(
                f"this {self.recipe} vector has no layer {layer}; it has {self.layers}. Use it at one of those "
                f"layers, or build it at layer {layer} (sl.build(..., layers=[{layer}]))")
        return self.vectors[layer]

    def norm(self, layer: int) -> float:
        return float(self.at(layer).norm())

    def check_for(self, model: Model) -> None:
        """Raise :class:`VectorMismatchError` unless this vector fits ``model``."""
        if self.d_model != model.d_model:
            raise VectorMismatchError(
                f"vector has width {self.d_model} but {model.name} has d_model {model.d_model}"
            )
        if self.model_fingerprint != model.fingerprint:
            raise VectorMismatchError(
                f"vector was made for model {self.model_name!r} (fingerprint "
                f"{self.model_fingerprint}), not {model.name!r} ({model.fingerprint})"
            )

    def __repr__(self) -> str:
        norms = ", ".join(f"{la}: {self.norm(la):.3g}" for la in self.layers)
        src = ", ".join(f"{k}={v}" for k, v in self.sources.items() if not isinstance(v, (dict, list)))
        return (f"SteeringVector({self.recipe}, model={self.model_name!r}, layers={self.layers}, "
                f"norm={{{norms}}}, position={self.position!r}, sources=({src}))")

    def describe(self) -> str:
        src = ", ".join(f"{k}={v}" for k, v in self.sources.items())
        return f"{self.recipe}({src}) @ layers {self.layers}, position {self.position}"

    def save(self, path: str | Path, **options: Any) -> list[Path]:
        """Write the vector; returns exactly the paths written.

        The file format follows ``path``'s suffix:

        - none, ``.safetensors`` or ``.json``: the pair ``NAME.safetensors`` and ``NAME.json``
          (no pickle; ``"x"``, ``"x.safetensors"`` and ``"x.json"`` all write ``x.safetensors``
          and ``x.json``). The JSON records ``"added_at": "block_input"``: layer L is the
          residual stream entering block L (peers that add at block outputs call it L - 1).
        - a registered format's suffix writes that format: ``v.save("x.gguf", coefficient=4.0)``
          writes a llama.cpp control vector (:mod:`steerlab.llamacpp`), which
          :func:`load_vector` reads back.
        - any other suffix of letters only (``.pt``, ``.bin``, ``.npy``) is an error listing the
          formats, instead of a quietly written ``x.pt.safetensors``. A dot followed by anything
          else stays part of the name (``"vec_c0.5"`` writes ``vec_c0.5.safetensors`` and
          ``vec_c0.5.json``); end a name with ``.safetensors`` to keep any dot in it.

        ``~`` is expanded.

        Raises:
            ValueError: a suffix of letters that is no format steerlab writes.

        Example:
            >>> v.save("fantasy_l15")
            [PosixPath('fantasy_l15.safetensors'), PosixPath('fantasy_l15.json')]
        """
        target = Path(path).expanduser()
        suffix = target.suffix.lower()
        fmt = _FORMATS.get(suffix)
        if fmt is not None:
            return list(fmt[0](self, target, **options))
        if suffix[1:].isalpha() and suffix not in (".safetensors", ".json"):
            others = f", or {', '.join(sorted(_FORMATS))} (registered formats)" if _FORMATS else ""
            raise ValueError(f"save({str(path)!r}): steerlab writes no {target.suffix!r} files; expected a name "
                             f"without a suffix or ending in .safetensors or .json (writes NAME.safetensors and "
                             f"NAME.json){others}. To keep a dot in the name, end it with .safetensors")
        if options:
            raise TypeError(f"save() options {sorted(options)} apply only to the formats "
                            f"{', '.join(sorted(_FORMATS)) or '(none registered)'}")
        for layer, vec in self.vectors.items():
            if not bool(torch.isfinite(vec).all()):
                raise ValueError(f"vector at layer {layer} contains NaN or inf: refusing to save it")
        meta = {
            "added_at": ADDED_AT,
            "model_name": self.model_name,
            "model_fingerprint": self.model_fingerprint,
            "d_model": self.d_model,
            "recipe": self.recipe,
            "sources": self.sources,
            "position": self.position,
            "extra": self.extra,
            "layers": self.layers,
        }
        save_tensors(target, {f"layer_{k}": v for k, v in self.vectors.items()}, meta)
        return list(paths_of(target))


def load_vector(path: str | Path, model: Model | None = None) -> SteeringVector:
    """Load a vector saved with :meth:`SteeringVector.save` (or a file of a registered format,
    such as a llama.cpp ``.gguf`` control vector); check it fits ``model``.

    Raises:
        steerlab.store.StoreError: missing, truncated or altered files.
        VectorMismatchError: made for another model or width.
    """
    path = Path(path).expanduser()
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is not None:
        return fmt[1](path, model)
    tensors, meta = load_tensors(path)
    vectors = {int(k.removeprefix("layer_")): v for k, v in tensors.items()}
    if sorted(vectors) != sorted(int(la) for la in meta.get("layers", vectors)):
        raise VectorMismatchError(f"{path}: its metadata lists layers {meta.get('layers')} but it holds "
                                  f"{sorted(vectors)}")
    if meta.get("added_at", ADDED_AT) != ADDED_AT:
        raise VectorMismatchError(f"{path} was saved for {meta['added_at']!r}; steerlab adds at {ADDED_AT!r}")
    vec = SteeringVector(
        vectors=vectors,
        model_name=meta["model_name"],
        model_fingerprint=meta["model_fingerprint"],
        d_model=int(meta["d_model"]),
        recipe=meta["recipe"],
        sources=meta["sources"],
        position=meta["position"],
        extra=meta.get("extra", {}),
    )
    if model is not None:
        vec.check_for(model)
    return vec


def _stats(model: Model, source: Source, layers: list[int], position: str, **kw: Any) -> ActivationStats:
    if isinstance(source, ActivationStats):
        if source.model_fingerprint != model.fingerprint:
            raise VectorMismatchError(f"statistics were computed on {source.model_name!r}, not {model.name!r}")
        missing = [layer for layer in layers if layer not in source.layers]
        if missing:
            raise ValueError(f"statistics of {source.dataset!r} lack layers {missing}")
        return source
    return activation_stats(model, source, layers, position=position, **kw)


def _label(source: Source) -> str:
    if isinstance(source, ActivationStats):
        return source.dataset
    return as_textset(source).name


def _make(model: Model, recipe: str, vectors: dict[int, torch.Tensor], sources: dict[str, Any],
          position: str) -> SteeringVector:
    return SteeringVector(vectors, model.name, model.fingerprint, model.d_model, recipe, sources, position)


def raw(model: Model, source: Source, layers: Sequence[int], *, position: str = "all_but_first",
        **stats_kw: Any) -> SteeringVector:
    """The mean activation of a prompt or set, uncentred.

    Example:
        >>> raw(model, "Love", layers=[6], position="last").at(6).shape
        torch.Size([576])
    """
    ls = check_layers(model, layers)
    s = _stats(model, source, ls, position, **stats_kw)
    return _make(model, "raw", {la: s.mean_at(la).clone() for la in ls}, {"target": _label(source)}, position)


def _difference(model: Model, recipe: str, a: Source, b: Source, layers: Sequence[int], position: str,
                names: tuple[str, str], **stats_kw: Any) -> SteeringVector:
    ls = check_layers(model, layers)
    sa = _stats(model, a, ls, position, **stats_kw)
    sb = _stats(model, b, ls, position, **stats_kw)
    vecs = {la: sa.mean_at(la) - sb.mean_at(la) for la in ls}
    return _make(model, recipe, vecs, {names[0]: _label(a), names[1]: _label(b)}, position)


def mean_centred(model: Model, target: Source, general: Source, layers: Sequence[int], *,
                 position: str = "all_but_first", **stats_kw: Any) -> SteeringVector:
    """``mean(target) - mean(general)``: the target's activation with the layer's bias removed.

    ``general`` stands in for the model's training distribution.

    Example:
        >>> v = mean_centred(model, load_dataset("fantasy", "train"), load_dataset("general", "train"), [18])
    """
    return _difference(model, "mean_centred", target, general, layers, position,
                       ("target", "centre"), **stats_kw)


def counterbalanced(model: Model, a: Source, b: Source, layers: Sequence[int], *,
                    position: str = "all_but_first", **stats_kw: Any) -> SteeringVector:
    """``mean(A) - mean(B)``: more of A and less of B (e.g. fantasy - sports).

    Example:
        >>> v = counterbalanced(model, "Love", "Hate", [6], position="last")
    """
    return _difference(model, "counterbalanced", a, b, layers, position, ("plus", "minus"), **stats_kw)


def isolated(model: Model, target: Source, reference: Source, layers: Sequence[int], *,
             position: str = "all_but_first", **stats_kw: Any) -> SteeringVector:
    """``mean(target set) - mean(reference set)``: one feature, the shared ones cancelled.

    Example:
        >>> v = isolated(model, load_dataset("sports", "train"), load_dataset("mixed", "train"), [18])
    """
    return _difference(model, "isolated", target, reference, layers, position,
                       ("target", "reference"), **stats_kw)


@torch.inference_mode()
def prompt_pair(model: Model, plus: str, minus: str, layers: Sequence[int], *,
                after_bos: bool = False, remote: Remote = False) -> SteeringVector:
    """ActAdd's vector: per-position activations of ``plus`` minus those of ``minus``.

    The shorter prompt is padded at the end with space tokens to equal length, as
    ActAdd does; the result at each layer is ``[k, d_model]``, added to the first
    ``k`` tokens of the steered prompt.

    Args:
        after_bos: read the pair after the tokenizer's BOS token (or EOS, if it has
            no BOS), as TransformerLens's ``to_tokens`` does in ActAdd's own code. Then
            the words do not sit at position 0, which on SmolLM2 is an attention sink
            with a residual norm in the thousands: a difference read there is mostly
            the sink's, not the words'.
        remote: as in :func:`steerlab.trace.residuals` (``True``: read on NDIF). The
            set-based builders above take ``remote=`` too and pass it to
            :func:`steerlab.stats.activation_stats`.

    Example:
        >>> prompt_pair(model, "Love", "Hate", [6]).at(6).shape
        torch.Size([1, 576])
    """
    ls = check_layers(model, layers, allow_last=False)
    tok = model.tokenizer
    ids = [tok(p, add_special_tokens=False)["input_ids"] if p else [] for p in (plus, minus)]
    if not ids[0] or not ids[1]:
        raise ValueError("prompt_pair needs two non-empty prompts (a single space is allowed)")
    space = tok(" ", add_special_tokens=False)["input_ids"]
    if len(space) != 1:
        raise ValueError("the tokenizer has no single space token to pad with")
    k = max(len(ids[0]), len(ids[1]))
    prefix: list[int] = []
    if after_bos:
        bos = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        if bos is None:
            raise ValueError("after_bos=True but the tokenizer has neither a BOS nor an EOS token")
        prefix = [int(bos)]
    padded = [prefix + row + space * (k - len(row)) for row in ids]
    ids_t = torch.tensor(padded, dtype=torch.long)
    batch = Batch(ids_t, torch.ones_like(ids_t))
    check_fits(model.hf.config, batch.lengths, what="prompt-pair row")
    acts = residuals(model, batch, ls, remote=remote)
    vecs = {la: (act[0, len(prefix):] - act[1, len(prefix):]).float() for la, act in zip(ls, acts)}  # [k, d_model]
    sources: dict[str, Any] = {"plus": plus, "minus": minus, **({"after": "bos"} if after_bos else {})}
    return _make(model, "prompt_pair", vecs, sources, "first")


def random_like(vector: SteeringVector, seed: int = 0) -> SteeringVector:
    """A random direction with the same norm as ``vector`` at each layer (the control)."""
    gen = torch.Generator().manual_seed(seed)
    vecs = {}
    for layer, v in vector.vectors.items():
        r = torch.randn(v.shape, generator=gen)
        vecs[layer] = r / r.norm() * v.norm()
    return SteeringVector(vecs, vector.model_name, vector.model_fingerprint, vector.d_model, "random",
                          {"like": vector.describe(), "seed": seed}, vector.position)


