"""Activation statistics of the residual stream over a text set: the "bias".

One streaming pass accumulates, per requested layer, in float64:
the token count, the sum of activations (-> mean activation, norm of the mean),
the sum of norms (-> mean norm) and the sum of unit vectors ``u``. The mean of
unit vectors gives two averages exactly, in O(n):

- average cosine to the mean: ``mean(u_i) . mean / |mean|``;
- average pairwise cosine over distinct pairs: ``(n |mean(u)|^2 - 1) / (n - 1)``.

Memory is one batch plus a few ``[layers, d_model]`` sums, whatever the dataset
size. Results are cached on disk, one entry per model fingerprint (checked against a
fast checksum of the weights before every read, so edits through ``param.data`` are
seen), tokenizer, text content, position rule, token limit, centre and the tokenizer's
added BOS; statistics computed inside a steering scope are not cached. The layer set
is not part of the key: an entry holds every layer computed so far, serves any
subset of them without a forward pass, and a request for new layers computes
only those and adds them to the entry. A damaged or altered entry is recomputed
with a warning.

Texts longer than the model's position limit (GPT-2's ``n_positions``) are cut
to it, with a warning, instead of failing inside the model.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .data import TextSet
from .models import Model, cache_root, tokenizer_digest
from .remote import Remote, check_remote
from .store import StoreError, load_tensors, paths_of, save_tensors
from .tokens import STAT_POSITIONS, added_bos_id, check_position, encode, position_limit
from .trace import Reduce, check_layers, residuals

__all__ = ["ActivationStats", "activation_stats", "as_textset", "per_text_means", "pool_stats"]

# 2: tokens get the tokenizer's own special tokens; entries hold any layer set;
# metadata inside the store's checksum.
_CACHE_VERSION = 2


@dataclass
class ActivationStats:
    """Per-layer statistics of residual-stream activations over a text set.

    Tensors are indexed by position in ``layers`` (use :meth:`at`).
    """

    model_name: str
    model_fingerprint: str
    dataset: str
    dataset_hash: str
    layers: list[int]
    position: str
    count: int  # tokens counted (the same at every layer)
    mean: torch.Tensor  # [n_layers_requested, d_model]
    mean_norm: torch.Tensor  # [n_layers_requested]
    norm_of_mean: torch.Tensor
    avg_cos_to_mean: torch.Tensor
    avg_pairwise_cos: torch.Tensor
    centre: str | None = None  # what was subtracted before the statistics, if anything
    mean_unit: torch.Tensor | None = None  # [n_layers_requested, d_model], mean of unit vectors
    # With a centre: average cosine of the centred activations to the centre's direction.
    avg_cos_to_centre: torch.Tensor | None = None

    def index(self, layer: int) -> int:
        if layer not in self.layers:
            raise KeyError(f"layer {layer} was not computed; layers: {self.layers}")
        return self.layers.index(layer)

    def _subset(self, layers: Sequence[int]) -> ActivationStats:
        """The same statistics at ``layers`` only (each must have been computed)."""
        rows = torch.tensor([self.index(layer) for layer in layers], dtype=torch.long)
        pick: dict[str, Any] = {k: v.index_select(0, rows) for k, v in self._tensors().items()}
        return replace(self, layers=list(layers), **pick)

    def mean_at(self, layer: int) -> torch.Tensor:
        """The mean activation ``[d_model]`` at a residual layer."""
        return self.mean[self.index(layer)]

    @property
    def ratio(self) -> torch.Tensor:
        """Norm of the mean over the mean norm, per layer (1 = all activations equal)."""
        return self.norm_of_mean / self.mean_norm.clamp_min(1e-12)

    def table(self) -> list[dict[str, float]]:
        """One row per layer, plain floats (for JSON and tables)."""
        return [
            {
                "layer": layer,
                "norm_of_mean": float(self.norm_of_mean[i]),
                "mean_norm": float(self.mean_norm[i]),
                "ratio": float(self.ratio[i]),
                "avg_cos_to_mean": float(self.avg_cos_to_mean[i]),
                "avg_pairwise_cos": float(self.avg_pairwise_cos[i]),
            }
            for i, layer in enumerate(self.layers)
        ]

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {
            "mean": self.mean,
            "mean_norm": self.mean_norm,
            "norm_of_mean": self.norm_of_mean,
            "avg_cos_to_mean": self.avg_cos_to_mean,
            "avg_pairwise_cos": self.avg_pairwise_cos,
            **({"mean_unit": self.mean_unit} if self.mean_unit is not None else {}),
            **({"avg_cos_to_centre": self.avg_cos_to_centre} if self.avg_cos_to_centre is not None else {}),
        }

    def _meta(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "model_fingerprint": self.model_fingerprint,
            "dataset": self.dataset,
            "dataset_hash": self.dataset_hash,
            "layers": self.layers,
            "position": self.position,
            "count": self.count,
            "centre": self.centre,
            "version": _CACHE_VERSION,
        }


def as_textset(source: TextSet | Sequence[str] | str, name: str | None = None) -> TextSet:
    """Accept a :class:`TextSet`, a list of strings or one string.

    Raises:
        ValueError: an item that is not a string (``None``), naming its index.

    Example:
        >>> as_textset(["One.", "Two."]).name
        '2 texts'
    """
    if isinstance(source, TextSet):
        return source
    texts = [source] if isinstance(source, str) else list(source)
    one = len(texts) == 1 and isinstance(texts[0], str)
    label = name or (texts[0][:40] if one else f"{len(texts)} texts")
    return TextSet.from_texts(label, texts)


def _cache_key(model: Model, data: TextSet, position: str, keep: int | None,
               centre: ActivationStats | None) -> str:
    key = {
        "v": _CACHE_VERSION,
        "model": model.checked_fingerprint(),  # also after an edit through param.data
        "data": data.content_hash,
        "position": position,
        "max_length": keep,
        # Which computation the centre came from; its values are checked per layer.
        "centre": None if centre is None else [centre.model_fingerprint, centre.dataset_hash,
                                               centre.position, centre.count, centre.centre],
        "bos": added_bos_id(model.tokenizer),
        "tokenizer": tokenizer_digest(model.tokenizer),
        "dtype": str(next(model.hf.parameters()).dtype),
    }
    return hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]


def _centre_hashes(centre: ActivationStats, layers: Sequence[int]) -> dict[str, str]:
    """Per layer, a hash of the centre's mean there (JSON keys are strings)."""
    return {str(layer): hashlib.sha1(centre.mean_at(layer).contiguous().numpy().tobytes()).hexdigest()[:16]
            for layer in layers}


_PER_LAYER = ("mean", "mean_norm", "norm_of_mean", "avg_cos_to_mean", "avg_pairwise_cos", "mean_unit")


def _load_cached(stem: Path, position: str, d_model: int, centre: ActivationStats | None,
                 ) -> tuple[ActivationStats, dict[str, str]] | None:
    """The cache entry at ``stem`` and its per-layer centre hashes; ``None`` if absent or damaged."""
    if not paths_of(stem)[1].exists():
        return None
    try:
        tensors, meta = load_tensors(stem)
        layers, count = meta["layers"], meta["count"]
        if (meta.get("version") != _CACHE_VERSION or not isinstance(layers, list) or not layers
                or not all(isinstance(la, int) and not isinstance(la, bool) for la in layers)
                or layers != sorted(set(layers)) or not isinstance(count, int) or count < 1
                or meta["position"] != position):
            raise StoreError(f"metadata does not describe a version-{_CACHE_VERSION} entry for {position!r}")
        wanted = [*_PER_LAYER, *(["avg_cos_to_centre"] if centre is not None else [])]
        if sorted(tensors) != sorted(wanted):
            raise StoreError(f"holds tensors {sorted(tensors)}, expected {sorted(wanted)}")
        for key, t in tensors.items():
            shape = (len(layers), d_model) if key in ("mean", "mean_unit") else (len(layers),)
            if tuple(t.shape) != shape:
                raise StoreError(f"{key} has shape {tuple(t.shape)}, expected {shape}")
            finite = torch.isfinite(t)
            # One token has no pairs: its average pairwise cosine is NaN by construction.
            if key == "avg_pairwise_cos" and count == 1:
                finite = torch.isnan(t)
            if not bool(finite.all()):
                raise StoreError(f"{key} holds unexpected NaN or inf values")
        hashes = meta.get("centre_hashes") or {}
        if centre is not None and sorted(hashes) != sorted(str(la) for la in layers):
            raise StoreError("centre hashes do not cover the layers")
        fields: dict[str, Any] = {k: meta[k] for k in ("model_name", "model_fingerprint", "dataset",
                                                       "dataset_hash", "position", "centre")}
        fields.update({k: tensors[k] for k in _PER_LAYER})
        stats = ActivationStats(**fields, layers=layers, count=count,
                                avg_cos_to_centre=tensors.get("avg_cos_to_centre"))
        return stats, hashes
    except (StoreError, KeyError, TypeError) as err:
        warnings.warn(f"ignoring damaged statistics cache entry {stem}: {err}; recomputing",
                      stacklevel=3)
        return None


def _merge(old: ActivationStats, new: ActivationStats) -> ActivationStats:
    """One entry with the layers of both (``new`` wins where both have a layer)."""
    layers = sorted(set(old.layers) | set(new.layers))
    source = [new if layer in new.layers else old for layer in layers]
    merged: dict[str, Any] = {}
    for key in new._tensors():
        merged[key] = torch.stack([getattr(s, key)[s.index(layer)] for s, layer in zip(source, layers)])
    return replace(new, layers=layers, **merged)


def _check_count(name: str, value: int | None, *, allow_none: bool) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1{' or None' if allow_none else ''}, got {value!r}")


def _token_budget(model: Model, max_length: int | None) -> tuple[int | None, int | None]:
    """``(tokens kept per text, the model's limit if it is what cuts)``."""
    limit = position_limit(model.hf.config)
    if limit is not None and (max_length is None or max_length > limit):
        return limit, limit
    return max_length, None


def _warn_cut(model: Model, textset: TextSet, cut: int, limit: int | None, max_length: int | None) -> None:
    if limit is not None and cut:
        warnings.warn(
            f"{cut} of {len(textset)} texts of {textset.name!r} are longer than {model.name}'s limit of "
            f"{limit} positions: their statistics use the first {limit} tokens (max_length={max_length})",
            stacklevel=3,
        )


def activation_stats(
    model: Model,
    data: TextSet | Sequence[str] | str,
    layers: Sequence[int] | None = None,
    *,
    position: str = "all_but_first",
    batch_size: int = 16,
    max_length: int | None = 256,
    centre: ActivationStats | None = None,
    cache: bool = True,
    progress: bool = True,
    remote: Remote = False,
) -> ActivationStats:
    """Per-layer statistics of residual activations over ``data``.

    Args:
        model: from :func:`steerlab.load_model`.
        data: a :class:`TextSet`, a list of texts, or one prompt.
        layers: residual layers (0..n_layers); ``None`` for all.
        position: which tokens count: ``all``, ``all_but_first``, ``first``, ``last``.
            On SmolLM2 the first token is an attention-sink outlier with a norm in
            the hundreds; ``all_but_first`` (the default) leaves it out.
            Tokens are the tokenizer's own (Gemma's ``<bos>`` included); ``all_but_first``
            leaves position 0 out whether it is a BOS or the first word, ``first`` is
            that position.
        batch_size: texts per forward pass.
        max_length: tokens kept per text (special tokens included); ``None`` for all.
            Never more than the model's position limit: longer texts are cut to it,
            with a warning.
        centre: subtract this set's mean at each layer before accumulating
            (statistics of mean-centred activations).
        cache: read and write the on-disk cache. An entry computed for more layers
            answers a request for fewer without a forward pass; new layers are
            computed alone and added to the entry. The result carries the
            caller's dataset name.
        progress: show a progress bar.
        remote: ``True`` runs the forward passes on NDIF (a model from
            ``load_model(hub_id, remote=True)``); each batch is reduced there to its
            float64 sums, so only ``3 x layers x d_model`` numbers come back per batch.
            ``"local"`` is nnsight's dry run of that request. The cache works as locally,
            keyed by the model's ``repo@revision``.

    Raises:
        ValueError: empty data, a text that is not a string, a layer that is not an
            integer or is out of range, an unknown position rule, ``batch_size`` or
            ``max_length`` below 1, or a rule that selects no token.
        NdifUnavailableError: ``remote=True`` without an API key or a reachable NDIF
            (checked before anything is sent).

    Example:
        >>> s = activation_stats(model, load_dataset("general", "train"), layers=[0, 10])
        >>> float(s.ratio[1])  # norm of the mean over the mean norm at layer 10
    """
    check_position(position, STAT_POSITIONS)
    textset = as_textset(data)
    if len(textset) == 0:
        raise ValueError(f"dataset {textset.name!r} is empty: nothing to average")
    # Checked here, not per batch: batches are sorted by length, so a batch's
    # row number would not be the text's index in the dataset.
    empty = [i for i, text in enumerate(textset.texts) if not text.strip()]
    if empty:
        raise ValueError(f"text {empty[0]} of {textset.name!r} is empty: every text needs a token")
    layers = check_layers(model, layers)
    _check_count("batch_size", batch_size, allow_none=False)
    _check_count("max_length", max_length, allow_none=True)
    if centre is not None:
        if not isinstance(centre, ActivationStats):
            raise TypeError(f"centre must be ActivationStats (from activation_stats), got {type(centre).__name__}")
        if centre.model_fingerprint != model.checked_fingerprint():
            raise ValueError(f"centre statistics of {centre.dataset!r} were computed on {centre.model_name!r} "
                             f"(fingerprint {centre.model_fingerprint}), not on {model.name!r} (fingerprint "
                             f"{model.fingerprint}): compute the centre on this model")
        missing = [layer for layer in layers if layer not in centre.layers]
        if missing:
            raise ValueError(f"centre statistics lack layers {missing}")
    if cache and model.steered_here():
        # The scope's hook edits these activations: they describe a steered run, which no
        # cache key (the model's fingerprint) names, so they are neither read nor kept.
        warnings.warn(f"activation_stats on {model.name} inside a steering scope: these are the steered "
                      "model's statistics, computed without the statistics cache (compute them outside "
                      "the `with sl.steering(...)` block for the model's own)", stacklevel=2)
        cache = False
    # A causal model's first token sees only itself: one token per text suffices.
    keep, limit = (1, None) if position == "first" else _token_budget(model, max_length)
    stem = cache_root() / "stats" / _cache_key(model, textset, position, keep, centre)
    cached = _load_cached(stem, position, model.d_model, centre) if cache else None
    have: list[int] = []
    if cached is not None:
        hit, hashes = cached
        if centre is not None:  # a layer counts only if it was centred on these very values
            current = _centre_hashes(centre, [la for la in hit.layers if la in centre.layers])
            have = [la for la in hit.layers if hashes.get(str(la)) == current.get(str(la))]
        else:
            have = list(hit.layers)
    todo = [layer for layer in layers if layer not in have]
    label = None if centre is None else f"{centre.dataset} mean"
    if not todo:
        assert cached is not None
        return replace(cached[0]._subset(layers), dataset=textset.name, centre=label)
    check_remote(model, remote, "activation_stats")  # before the first batch: fail fast, send nothing

    fresh, cut = _compute(model, textset, todo, position, batch_size, keep, centre, progress, remote)
    entry = fresh
    if cached is not None and have:
        old = cached[0]._subset(have)
        if old.count == fresh.count:
            entry = _merge(old, fresh)
        else:  # the entry counted other tokens: trust neither it nor a mix of the two
            warnings.warn(f"statistics cache entry {stem} counted {old.count} tokens where this pass counts "
                          f"{fresh.count}; recomputing every requested layer", stacklevel=2)
            fresh, cut = _compute(model, textset, layers, position, batch_size, keep, centre, progress, remote)
            entry = fresh
    _warn_cut(model, textset, cut, limit, max_length)
    if cache:
        meta = entry._meta()
        if centre is not None:
            meta["centre_hashes"] = _centre_hashes(centre, entry.layers)
        try:
            save_tensors(stem, entry._tensors(), meta)
        except Exception as err:  # noqa: BLE001 - OSError, or safetensors' SafetensorError on a full disk
            warnings.warn(f"could not write statistics cache {stem}: {err}; the statistics were computed and "
                          "are returned, not cached", stacklevel=2)
    return replace(entry._subset(layers), dataset=textset.name, centre=label)


def _batch_sums(mask: torch.Tensor, centres: torch.Tensor | None) -> Reduce:
    """The reduction of one batch at the ``i``-th layer: ``[sum x, sum x/|x|, sum |x|]`` in float64
    over the tokens ``mask`` selects (``centres[i]`` subtracted first, if given)."""
    def reduce(i: int, hidden: torch.Tensor) -> torch.Tensor:
        x = hidden[mask.to(hidden.device)].to(torch.float64)  # [tokens, d_model]
        if centres is not None:
            x = x - centres[i].to(device=x.device, dtype=torch.float64)
        norms = x.norm(dim=-1)
        unit = x / norms.clamp_min(1e-12)[:, None]
        return torch.cat([x.sum(dim=0), unit.sum(dim=0), norms.sum().reshape(1)])
    return reduce


def _compute(model: Model, textset: TextSet, layers: list[int], position: str, batch_size: int,
             keep: int | None, centre: ActivationStats | None, progress: bool,
             remote: Remote = False) -> tuple[ActivationStats, int]:
    """One streaming pass over ``textset``: the statistics and how many texts ``keep`` cut."""
    d = model.d_model
    sum_x = torch.zeros(len(layers), d, dtype=torch.float64)
    sum_unit = torch.zeros(len(layers), d, dtype=torch.float64)
    sum_norm = torch.zeros(len(layers), dtype=torch.float64)
    count = 0
    cut = 0
    centres = None if centre is None else torch.stack([centre.mean_at(layer) for layer in layers])
    texts = textset.texts
    # Sorting by length packs similar lengths together: less padding, same sums.
    lengths = [len(t) for t in texts]
    order = sorted(range(len(texts)), key=lambda i: lengths[i])
    bar = tqdm(total=len(texts), desc=f"stats {textset.name}", unit="text", disable=not progress)
    for start in range(0, len(order), batch_size):
        chunk = [texts[i] for i in order[start:start + batch_size]]
        batch = encode(model.tokenizer, chunk, padding_side="right", max_length=keep)
        cut += int(batch.truncated.sum())
        mask = batch.select(position)  # [batch, seq]
        count += int(mask.sum())
        # Reduced where the model runs (on NDIF when remote): one [2 d_model + 1] row per layer.
        for i, row in enumerate(residuals(model, batch, layers, reduce=_batch_sums(mask, centres), remote=remote)):
            sum_x[i] += row[:d].cpu()
            sum_unit[i] += row[d:2 * d].cpu()
            sum_norm[i] += row[2 * d].cpu()
        bar.update(len(chunk))
    bar.close()
    if count == 0:
        raise ValueError(f"position rule {position!r} selected no token in {textset.name!r}")

    derived = _finish(count, sum_x / count, sum_norm / count, sum_unit / count)
    stats = ActivationStats(
        model_name=model.name,
        model_fingerprint=model.fingerprint,
        dataset=textset.name,
        dataset_hash=textset.content_hash,
        layers=layers,
        position=position,
        count=count,
        centre=None if centre is None else f"{centre.dataset} mean",
        avg_cos_to_centre=None if centres is None else (
            (sum_unit / count) * centres.double() / centres.double().norm(dim=-1, keepdim=True).clamp_min(1e-30)
        ).sum(-1).float(),
        **derived,
    )
    return stats, cut


def _finish(count: int, mean: torch.Tensor, mean_norm: torch.Tensor, mean_unit: torch.Tensor,
            ) -> dict[str, Any]:
    """Derived statistics from the float64 running means."""
    norm_of_mean = mean.norm(dim=-1)
    avg_cos_to_mean = (mean_unit * mean).sum(-1) / norm_of_mean.clamp_min(1e-30)
    if count > 1:
        avg_pairwise = (count * mean_unit.pow(2).sum(-1) - 1) / (count - 1)
    else:
        avg_pairwise = torch.full(mean_norm.shape, float("nan"), dtype=torch.float64)
    return {"mean": mean.float(), "mean_norm": mean_norm.float(), "norm_of_mean": norm_of_mean.float(),
            "avg_cos_to_mean": avg_cos_to_mean.float(), "avg_pairwise_cos": avg_pairwise.float(),
            "mean_unit": mean_unit.float()}


def pool_stats(parts: Sequence[ActivationStats], name: str, *, position: str | None = None) -> ActivationStats:
    """Exact statistics of the union of disjoint token sets, from their statistics.

    The mixed-stories reference is the pool of every genre's statistics, so it
    costs no extra forward pass. Parts with different position rules may be
    pooled when they cover disjoint tokens of the same texts; ``position`` then
    names the result (``first`` + ``all_but_first`` -> ``all``).

    Example:
        >>> mixed = pool_stats([stats[g] for g in genres], "mixed")
        >>> everything = pool_stats([first, rest], "general", position="all")
    """
    if not parts:
        raise ValueError("nothing to pool")
    first = parts[0]
    for p in parts:
        if p.layers != first.layers or p.model_fingerprint != first.model_fingerprint:
            raise ValueError("can only pool statistics of one model and the same layers")
        if position is None and p.position != first.position:
            raise ValueError("parts have different position rules: pass position= to name the pooled rule")
        if p.mean_unit is None or p.centre != first.centre:
            raise ValueError(f"statistics of {p.dataset!r} cannot be pooled (no mean_unit, or another centre)")
    total = sum(p.count for p in parts)
    def wsum(get: Any) -> torch.Tensor:
        return sum((get(p).double() * (p.count / total) for p in parts), torch.zeros(()))  # type: ignore[arg-type]
    derived = _finish(total, wsum(lambda p: p.mean), wsum(lambda p: p.mean_norm), wsum(lambda p: p.mean_unit))
    digest = hashlib.sha1("".join(p.dataset_hash for p in parts).encode()).hexdigest()[:16]
    return ActivationStats(model_name=first.model_name, model_fingerprint=first.model_fingerprint,
                           dataset=name, dataset_hash=digest, layers=list(first.layers),
                           position=position or first.position, count=total, centre=first.centre, **derived)


def _text_means(mask: torch.Tensor) -> Reduce:
    """Each row's mean over the tokens ``mask`` ``[batch, seq]`` (float) selects: ``[batch, d_model]``."""
    def reduce(_i: int, hidden: torch.Tensor) -> torch.Tensor:
        m = mask.to(hidden.device)[..., None]
        return (hidden.float() * m).sum(1) / m.sum(1)
    return reduce


@torch.inference_mode()
def per_text_means(
    model: Model,
    data: TextSet | Sequence[str],
    layers: Sequence[int] | None = None,
    *,
    position: str = "all_but_first",
    batch_size: int = 16,
    max_length: int | None = 256,
    progress: bool = True,
    remote: Remote = False,
) -> torch.Tensor:
    """Mean activation of each text separately: ``[n_texts, n_layers_requested, d_model]``.

    Used to classify held-out texts by their nearest genre vector. Texts and
    positions as in :func:`activation_stats` (no cache); ``remote`` as there (each
    batch comes back as its per-text means).

    Example:
        >>> per_text_means(model, load_dataset("fantasy", "heldout"), layers=[15]).shape
        torch.Size([13, 1, 576])
    """
    check_position(position, STAT_POSITIONS)
    textset = as_textset(data)
    if len(textset) == 0:
        raise ValueError(f"dataset {textset.name!r} is empty")
    layers = check_layers(model, layers)
    _check_count("batch_size", batch_size, allow_none=False)
    _check_count("max_length", max_length, allow_none=True)
    keep, limit = (1, None) if position == "first" else _token_budget(model, max_length)
    check_remote(model, remote, "per_text_means")
    texts = textset.texts
    out = torch.zeros(len(texts), len(layers), model.d_model)
    cut = 0
    bar = tqdm(total=len(texts), desc=f"per-text {textset.name}", unit="text", disable=not progress)
    for start in range(0, len(texts), batch_size):
        chunk = texts[start:start + batch_size]
        try:
            batch = encode(model.tokenizer, chunk, padding_side="right", max_length=keep)
        except ValueError as err:  # name the text by its index in the dataset, not in the batch
            raise ValueError(f"{textset.name!r}, batch from text {start}: {err}") from err
        cut += int(batch.truncated.sum())
        mask = batch.select(position).float()  # [batch, seq]
        none = (mask.sum(1) == 0).nonzero().flatten().tolist()
        if none:
            i = start + int(none[0])
            raise ValueError(f"position rule {position!r} selects no token in text {i} of {textset.name!r} "
                             f"({texts[i][:40]!r}, {int(batch.lengths[none[0]])} token(s)); "
                             f"{len(none)} text(s) of this batch select none")
        for i, means in enumerate(residuals(model, batch, layers, reduce=_text_means(mask), remote=remote)):
            out[start:start + len(chunk), i] = means.float().cpu()
        bar.update(len(chunk))
    bar.close()
    _warn_cut(model, textset, cut, limit, max_length)
    return out
