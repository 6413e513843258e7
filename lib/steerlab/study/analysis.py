"""Numbers that turn "look at these tables" into measurements.

Jaccard overlap of top-k token sets, cosine-similarity matrices between
vectors, and nearest-centroid classification of held-out texts.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import torch

__all__ = ["cosine_matrix", "mean_offdiag", "nearest_centroid_accuracy", "topk_jaccard"]


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
