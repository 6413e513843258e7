"""Activation statistics of the residual stream over a text set: the "bias".

One streaming pass accumulates, per requested layer, in float64:
the token count, the sum of activations (-> mean activation, norm of the mean),
the sum of norms (-> mean norm) and the sum of unit vectors ``u``. The mean of
unit vectors gives two averages exactly, in O(n):

- average cosine to the mean: ``mean(u_i) . mean / |mean|``;
- average pairwise cosine over distinct pairs: ``(n |mean(u)|^2 - 1) / (n - 1)``.

Memory is one batch plus a few ``[layers, d_model]`` sums, whatever the dataset
size. Results are cached on disk, keyed by model fingerprint, text content,
layers, position rule and centre; a damaged cache entry is recomputed.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .data import TextSet
from .models import Model, cache_root
from .store import StoreError, load_tensors, save_tensors
from .tokens import STAT_POSITIONS, check_position, encode, position_mask
from .trace import check_layers, residuals

__all__ = ["ActivationStats", "activation_stats", "as_textset", "per_text_means", "pool_stats"]

_CACHE_VERSION = 1


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
    extra: dict[str, Any] = field(default_factory=dict)

    def index(self, layer: int) -> int:
        if layer not in self.layers:
            raise KeyError(f"layer {layer} was not computed; layers: {self.layers}")
        return self.layers.index(layer)

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
    """Accept a :class:`TextSet`, a list of strings or one string."""
    if isinstance(source, TextSet):
        return source
    texts = [source] if isinstance(source, str) else list(source)
    label = name or (texts[0][:40] if len(texts) == 1 else f"{len(texts)} texts")
    return TextSet.from_texts(label, texts)


def _cache_key(model: Model, data: TextSet, layers: list[int], position: str,
               max_length: int, centre: ActivationStats | None) -> str:
    key = {
        "v": _CACHE_VERSION,
        "model": model.fingerprint,
        "data": data.content_hash,
        "layers": layers,
        "position": position,
        "max_length": max_length,
        "centre": None if centre is None else _centre_key(centre),
        "dtype": str(next(model.hf.parameters()).dtype),
    }
    return hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]


def _centre_key(centre: ActivationStats) -> str:
    return hashlib.sha1(centre.mean.numpy().tobytes()).hexdigest()[:16]


def _load_cached(stem: Path, layers: list[int], d_model: int) -> ActivationStats | None:
    if not stem.with_suffix(".json").exists():
        return None
    try:
        tensors, meta = load_tensors(stem)
        if meta.get("layers") != layers or tuple(tensors["mean"].shape) != (len(layers), d_model):
            raise StoreError("shape does not match the request")
        if not all(bool(torch.isfinite(t).all()) for t in tensors.values()):
            raise StoreError("non-finite values")
        fields: dict[str, Any] = {k: meta[k] for k in ("model_name", "model_fingerprint", "dataset",
                                                       "dataset_hash", "layers", "position", "count", "centre")}
        fields.update({k: tensors[k] for k in ("mean", "mean_norm", "norm_of_mean", "avg_cos_to_mean",
                                               "avg_pairwise_cos")})
        return ActivationStats(**fields, mean_unit=tensors.get("mean_unit"),
                               avg_cos_to_centre=tensors.get("avg_cos_to_centre"))
    except (StoreError, KeyError, TypeError) as err:
        warnings.warn(f"ignoring damaged statistics cache entry {stem}: {err}; recomputing",
                      stacklevel=3)
        return None


def activation_stats(
    model: Model,
    data: TextSet | Sequence[str] | str,
    layers: Sequence[int] | None = None,
    *,
    position: str = "all_but_first",
    batch_size: int = 16,
    max_length: int = 256,
    centre: ActivationStats | None = None,
    cache: bool = True,
    progress: bool = True,
) -> ActivationStats:
    """Per-layer statistics of residual activations over ``data``.

    Args:
        model: from :func:`steerlab.load_model`.
        data: a :class:`TextSet`, a list of texts, or one prompt.
        layers: residual layers (0..n_layers); ``None`` for all.
        position: which tokens count: ``all``, ``all_but_first``, ``first``, ``last``.
            On SmolLM2 the first token is an attention-sink outlier with a norm in
            the hundreds; ``all_but_first`` (the default) leaves it out.
        batch_size: texts per forward pass.
        max_length: tokens kept per text.
        centre: subtract this set's mean at each layer before accumulating
            (statistics of mean-centred activations).
        cache: read and write the on-disk cache.
        progress: show a progress bar.

    Raises:
        ValueError: empty data, a layer out of range, an unknown position rule,
            or a rule that selects no token.

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
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if centre is not None:
        missing = [layer for layer in layers if layer not in centre.layers]
        if missing:
            raise ValueError(f"centre statistics lack layers {missing}")
    stem = cache_root() / "stats" / _cache_key(model, textset, layers, position, max_length, centre)
    if cache:
        hit = _load_cached(stem, layers, model.d_model)
        if hit is not None:
            return hit

    d = model.d_model
    sum_x = torch.zeros(len(layers), d, dtype=torch.float64)
    sum_unit = torch.zeros(len(layers), d, dtype=torch.float64)
    sum_norm = torch.zeros(len(layers), dtype=torch.float64)
    count = 0
    centres = None if centre is None else torch.stack([centre.mean_at(layer) for layer in layers])
    texts = textset.texts
    # Sorting by length packs similar lengths together: less padding, same sums.
    lengths = [len(t) for t in texts]
    order = sorted(range(len(texts)), key=lambda i: lengths[i])
    bar = tqdm(total=len(texts), desc=f"stats {textset.name}", unit="text", disable=not progress)
    for start in range(0, len(order), batch_size):
        chunk = [texts[i] for i in order[start:start + batch_size]]
        # A causal model's first token sees only itself: one token per text suffices.
        keep = 1 if position == "first" else max_length
        batch = encode(model.tokenizer, chunk, padding_side="right", max_length=keep)
        mask = position_mask(batch.attention_mask, position)  # [batch, seq]
        acts = residuals(model, batch, layers)
        count += int(mask.sum())
        for i, act in enumerate(acts):
            x = act[mask].to(torch.float64)  # [tokens, d_model]
            if centres is not None:
                x = x - centres[i].to(torch.float64)
            norms = x.norm(dim=-1)
            sum_x[i] += x.sum(dim=0)
            sum_norm[i] += norms.sum()
            sum_unit[i] += (x / norms.clamp_min(1e-12)[:, None]).sum(dim=0)
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
    if cache:
        try:
            save_tensors(stem, stats._tensors(), stats._meta())
        except OSError as err:
            warnings.warn(f"could not write statistics cache {stem}: {err}", stacklevel=2)
    return stats


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


@torch.inference_mode()
def per_text_means(
    model: Model,
    data: TextSet | Sequence[str],
    layers: Sequence[int] | None = None,
    *,
    position: str = "all_but_first",
    batch_size: int = 16,
    max_length: int = 256,
    progress: bool = True,
) -> torch.Tensor:
    """Mean activation of each text separately: ``[n_texts, n_layers_requested, d_model]``.

    Used to classify held-out texts by their nearest genre vector.
    """
    check_position(position, STAT_POSITIONS)
    textset = as_textset(data)
    if len(textset) == 0:
        raise ValueError(f"dataset {textset.name!r} is empty")
    layers = check_layers(model, layers)
    texts = textset.texts
    out = torch.zeros(len(texts), len(layers), model.d_model)
    bar = tqdm(total=len(texts), desc=f"per-text {textset.name}", unit="text", disable=not progress)
    for start in range(0, len(texts), batch_size):
        chunk = texts[start:start + batch_size]
        batch = encode(model.tokenizer, chunk, padding_side="right", max_length=max_length)
        mask = position_mask(batch.attention_mask, position).float()  # [batch, seq]
        if bool((mask.sum(1) == 0).any()):
            raise ValueError(f"position rule {position!r} selects no token in some text")
        acts = residuals(model, batch, layers)
        for i, act in enumerate(acts):
            out[start:start + len(chunk), i] = (act * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        bar.update(len(chunk))
    bar.close()
    return out
