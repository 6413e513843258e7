"""Numbers that turn "look at these tables" into measurements.

Jaccard overlap of top-k token sets, cosine-similarity matrices between
vectors, and nearest-centroid classification of held-out texts; and the sentences
and headline numbers notebooks 01 and 02 print and record, from their recorded
numbers only (so they are unit-tested on synthetic values).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import torch

__all__ = [
    "bias_findings",
    "bias_headline",
    "centring_findings",
    "cosine_matrix",
    "first_token_findings",
    "interpret_conclusion",
    "interpret_headline",
    "mean_offdiag",
    "mid_layer",
    "nearest_centroid_accuracy",
    "stats_summary",
    "topk_jaccard",
]


def topk_jaccard(table: Mapping[str, Sequence[str]]) -> float:
    """Mean pairwise Jaccard overlap of the token sets in ``table`` (1 = all identical).

    Example:
        >>> topk_jaccard({"fantasy": ["a", "b"], "sports": ["a", "c"]})
        0.3333333333333333
    """
    sets = [set(v) for v in table.values()]
    if len(sets) < 2:
        raise ValueError("need at least two columns to compare")
    pairs = [len(a & b) / len(a | b) if a | b else 1.0 for a, b in itertools.combinations(sets, 2)]
    return sum(pairs) / len(pairs)


def cosine_matrix(vectors: torch.Tensor) -> torch.Tensor:
    """``[n, n]`` cosine similarities between the rows of ``vectors`` ``[n, d]``."""
    unit = vectors.float() / vectors.float().norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return unit @ unit.T


def mean_offdiag(matrix: torch.Tensor) -> float:
    """Mean of the off-diagonal entries of a square matrix."""
    n = matrix.shape[0]
    if n < 2:
        raise ValueError("need at least a 2x2 matrix")
    off = matrix[~torch.eye(n, dtype=torch.bool)]
    return float(off.mean())


def nearest_centroid_accuracy(points: torch.Tensor, labels: Sequence[int], centroids: torch.Tensor) -> float:
    """Fraction of ``points`` ``[n, d]`` whose most cosine-similar centroid ``[g, d]``
    is their own label's."""
    if points.shape[0] != len(labels):
        raise ValueError(f"{points.shape[0]} points but {len(labels)} labels")
    sims = cosine_matrix(torch.cat([points, centroids]))[: points.shape[0], points.shape[0]:]
    predicted = sims.argmax(dim=1)
    return float((predicted == torch.tensor(list(labels))).float().mean())


# --- notebook 01: the bias, in words -----------------------------------------------------

_STAT_FIELDS = ("norm_of_mean", "mean_norm", "ratio", "avg_cos_to_mean", "avg_pairwise_cos")


def stats_summary(stats: Any) -> dict[str, list[float]]:
    """The per-layer numbers 01 records from an :class:`~steerlab.stats.ActivationStats`, as lists."""
    return {k: [float(x) for x in getattr(stats, k)] for k in _STAT_FIELDS}


def mid_layer(layers: Sequence[int]) -> int:
    """The layer 01 reads its headline at: the middle of the measured layers.

    Example:
        >>> mid_layer(range(31))
        15
    """
    layers = list(layers)
    if not layers:
        raise ValueError("no layers")
    return layers[len(layers) // 2]


def _mid(bias: Mapping[str, Any]) -> tuple[int, int]:
    layers = list(bias["layers"])
    return mid_layer(layers), len(layers) // 2


def bias_findings(bias: Mapping[str, Any]) -> list[str]:
    """01's reading of the bias at the middle layer (keys as recorded: ``layers``, ``tokens``, per-layer lists).

    Example:
        >>> bias_findings({"layers": [0, 1, 2], "tokens": 10, "norm_of_mean": [1, 2, 3], "mean_norm": [2, 4, 4],
        ...                "ratio": [.5, .5, .75], "avg_cos_to_mean": [.5, .6, .7], "avg_pairwise_cos": [.2, .3, .4]})[0]
        '10 tokens. At layer 1: norm of the mean 2.0, mean norm 4.0 (ratio 0.50); ...'
    """
    mid, i = _mid(bias)
    pairwise = [float(x) for x in bias["avg_pairwise_cos"]]
    rest = pairwise[1:] or pairwise
    return [
        (f"{bias['tokens']} tokens. At layer {mid}: norm of the mean {float(bias['norm_of_mean'][i]):.1f}, mean norm "
        f"{float(bias['mean_norm'][i]):.1f} (ratio {float(bias['ratio'][i]):.2f}); average cosine to the mean "
        f"{float(bias['avg_cos_to_mean'][i]):.2f}, between activations {pairwise[i]:.2f}."),
        (f"Over layers 1..{bias['layers'][-1]}, the average cosine between two activations is "
        f"{sum(rest) / len(rest):.2f}: two unrelated tokens point in much the same direction, because both are "
        "mostly the layer's mean."),
    ]


def first_token_findings(bias: Mapping[str, Any]) -> list[str]:
    """01's first-token outlier, from ``first_token_mean_norm``, ``first_token_mean_shift_mid`` and
    ``all_tokens_avg_cos_to_mean`` beside the per-layer lists."""
    mid, i = _mid(bias)
    ratios = [float(f) / float(o) for f, o in zip(bias["first_token_mean_norm"], bias["mean_norm"])]
    worst = max(range(len(ratios)), key=ratios.__getitem__)
    return [
        f"The first token's mean norm is up to {ratios[worst]:.1f}x that of other tokens (layer {bias['layers'][worst]}).",
        (f"Including it (position 'all') moves the layer-{mid} mean by {float(bias['first_token_mean_shift_mid']):.1f} "
        f"(the mean's norm is {float(bias['norm_of_mean'][i]):.1f}) and changes the average cosine to the mean from "
        f"{float(bias['avg_cos_to_mean'][i]):.2f} to {float(bias['all_tokens_avg_cos_to_mean'][i]):.2f}."),
        ("Which statistics include it: every number above except this section's 'first' and 'all' lines uses "
        "all_but_first."),
    ]


def centring_findings(bias: Mapping[str, Any]) -> list[str]:
    """01's check that centring removes the mean, from ``centred`` (ratio, avg_cos_to_mean, avg_pairwise_cos)."""
    c = bias["centred"]
    return [(f"After centring: largest norm-of-mean / mean-norm ratio {max(float(x) for x in c['ratio']):.2e}; "
            f"largest |avg pairwise cos| {max(abs(float(x)) for x in c['avg_pairwise_cos']):.3f} (raw: up to "
            f"{max(float(x) for x in bias['avg_pairwise_cos']):.2f}); largest |avg cos to the old mean direction| "
            f"{max(abs(float(x)) for x in c['avg_cos_to_mean']):.3f} (raw: up to "
            f"{max(float(x) for x in bias['avg_cos_to_mean']):.2f}).")]


def bias_headline(bias: Mapping[str, Any]) -> dict[str, Any]:
    """01's headline numbers: the middle layer's ratio and pairwise cosine, the largest centred ratio."""
    mid, i = _mid(bias)
    centred_max = max(float(x) for x in bias["centred"]["ratio"])
    return {"mid_layer": mid, "ratio_mid": round(float(bias["ratio"][i]), 3),
            "avg_pairwise_cos_mid": round(float(bias["avg_pairwise_cos"][i]), 3),
            "centred_max_ratio": float(f"{centred_max:.2e}")}


# --- notebook 02: what the vectors mean, in words -----------------------------------------

def interpret_conclusion(r: Mapping[str, Any]) -> list[str]:
    """02's conclusion from its recorded numbers (``topk_jaccard``, ``cosine_offdiag_by_layer``,
    ``heldout_accuracy`` per recipe; ``layer``, ``layers``, ``n_layers``, ``genres``, ``top_k``, ...).

    The first sentence branches on whether centring lowered the top-k overlap.
    """
    jac, cos, acc, layers, layer = r["topk_jaccard"], r["cosine_offdiag_by_layer"], r["heldout_accuracy"], \
        list(r["layers"]), r["layer"]
    li = layers.index(layer)
    verdict = ("lower: centring separates the genres in the lens" if jac["centred"] < jac["raw"]
               else "not lower: centring does not separate them here")
    best = {k: max(acc[k]) for k in ("raw", "centred")}
    at = {k: layers[list(acc[k]).index(best[k])] for k in best}
    return [
        (f"On {r['model']}, at layer {layer} of {r['n_layers']}, the raw genre vectors' top-{r['top_k']} tokens overlap "
        f"with a mean Jaccard of {jac['raw']:.2f} across {len(r['genres'])} genres; after mean-centring the overlap is "
        f"{jac['centred']:.2f} ({verdict})."),
        f"The raw genre vectors have a mean pairwise cosine of {cos['raw'][li]:.3f}; centred, {cos['centred'][li]:.3f}.",
        (f"Nearest-centroid accuracy on {r['heldout_count']} held-out stories peaks at {best['raw']:.2f} (raw, layer "
        f"{at['raw']}) and {best['centred']:.2f} (centred, layer {at['centred']}); at layer {layer}: raw "
        f"{acc['raw'][li]:.2f}, centred {acc['centred'][li]:.2f}; chance {1 / len(r['genres']):.2f}."),
    ]


def interpret_headline(r: Mapping[str, Any]) -> dict[str, Any]:
    """02's headline numbers at the lens layer."""
    li = list(r["layers"]).index(r["layer"])
    jac, acc = r["topk_jaccard"], r["heldout_accuracy"]
    return {"layer": r["layer"], "jaccard_raw": round(jac["raw"], 3), "jaccard_centred": round(jac["centred"], 3),
            "acc_raw_at_layer": round(acc["raw"][li], 3), "acc_centred_at_layer": round(acc["centred"][li], 3)}
