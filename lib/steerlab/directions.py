"""The field's ways to read a direction off activations, as plain functions of tensors: PCA of
paired differences (RepE, repeng's ``pca_diff``), PCA of centred activations (``pca_center``)
and a linear probe's weight vector. No model: the caller gathers the activations (per-text
means, :func:`steerlab.stats.per_text_means`) and the registry turns the direction into a vector.

Each returns a float32 unit vector ``[d]`` (the coefficient unit gives it its length) with a
stated sign, and refuses too few rows, mismatched widths and non-finite values by name.

Two choices, and why:

- **The PCAs are of second moments about a stated point, not about the rows' own mean.** RepE
  shuffles the order within each pair before its (centred) PCA, so the differences are
  ``±(a - b)`` with mean about 0; that equals the uncentred PCA of ``a - b`` used here, without
  the randomness. Centring the differences on their own mean would subtract the very
  direction sought: a concept that moves every pair by the same amount would be gone.
  Likewise :func:`pca_of_centred` measures spread about the given ``mean`` (the general-text
  mean: the project's "centred"), so the target's offset from it counts.
- **The probe's weights are mapped back through the standardisation.** It is fitted on
  standardised features ``z = (x - mu) / sigma``; its decision function in activation space is
  ``(w / sigma) . x + const``, so ``w / sigma`` is the normal to its boundary there.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["pca_of_centred", "pca_of_differences", "probe_direction"]


def _matrix(x: torch.Tensor, name: str, *, min_rows: int) -> torch.Tensor:
    """``x`` as a float64 ``[n, d]`` matrix, checked: a tensor, 2-D, ``n >= min_rows``, finite."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor [n, d], got {type(x).__name__}")
    if x.ndim != 2:
        raise ValueError(f"{name} must be [n, d] (one row per text or pair), got shape {tuple(x.shape)}")
    if x.shape[0] < min_rows:
        raise ValueError(f"{name} has {x.shape[0]} rows; expected at least {min_rows}")
    if x.shape[1] < 1:
        raise ValueError(f"{name} has width 0; expected d >= 1")
    out = x.detach().to(device="cpu", dtype=torch.float64)
    bad = ~torch.isfinite(out).all(dim=1)
    if bool(bad.any()):
        raise ValueError(f"{name} has NaN or inf in rows {torch.nonzero(bad).flatten().tolist()[:10]}")
    return out


def _same_width(a: torch.Tensor, b: torch.Tensor, names: str) -> None:
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(f"{names} differ in width: {a.shape[-1]} and {b.shape[-1]} "
                         "(the same layer's d_model expected)")


def _first_component(x: torch.Tensor, name: str) -> torch.Tensor:
    """The top right singular vector of ``x`` ``[n, d]``: the unit direction of largest second moment."""
    if float(x.abs().max()) == 0.0:
        raise ValueError(f"{name} are all zero: no direction to find")
    _, _, vh = torch.linalg.svd(x, full_matrices=False)  # vh: [min(n, d), d]
    return vh[0]


def _aligned(direction: torch.Tensor, reference: torch.Tensor, what: str) -> torch.Tensor:
    """``direction`` with the sign that makes its dot product with ``reference`` positive, as float32."""
    dot = float(direction @ reference)
    if dot == 0.0:
        raise ValueError(f"the sign is undefined: the first component is orthogonal to {what}")
    return (direction if dot > 0 else -direction).to(torch.float32)


def pca_of_differences(pairs_a: torch.Tensor, pairs_b: torch.Tensor) -> torch.Tensor:
    """First principal component of the paired differences ``a - b`` (RepE / repeng ``pca_diff``),
    signed to agree with their mean.

    The component is of the second moment of the differences (not centred on their mean: see
    the module docstring), which is what RepE's PCA of order-shuffled pairs estimates.

    Args:
        pairs_a: ``[n, d]`` activations of the positive side (row ``i`` pairs with ``pairs_b[i]``).
        pairs_b: ``[n, d]`` activations of the negative side.

    Returns:
        A float32 unit vector ``[d]``.

    Raises:
        ValueError: fewer than 2 pairs, different shapes, non-finite values, all differences 0,
            or a component orthogonal to the mean difference (no sign).

    Example:
        >>> a, b = torch.randn(32, 8) + torch.eye(8)[0], torch.randn(32, 8)
        >>> pca_of_differences(a, b).shape
        torch.Size([8])
    """
    a = _matrix(pairs_a, "pairs_a", min_rows=2)
    b = _matrix(pairs_b, "pairs_b", min_rows=2)
    _same_width(a, b, "pairs_a and pairs_b")
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"pairs_a has {a.shape[0]} rows, pairs_b {b.shape[0]}: row i of each must be one pair")
    diffs = a - b  # [n, d]
    return _aligned(_first_component(diffs, "the paired differences"), diffs.mean(0), "the mean difference")


def pca_of_centred(acts: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """First principal component of ``acts - mean`` (``pca_center``), signed to agree with the
    mean of the centred activations.

    ``mean`` is the point the spread is measured about (the general-text mean: the bias); the
    rows are not centred again on their own mean, so the target's offset from ``mean`` counts.

    Args:
        acts: ``[n, d]`` target activations (per-text means).
        mean: ``[d]`` the centre, e.g. the general-text mean at the same layer.

    Returns:
        A float32 unit vector ``[d]``.

    Raises:
        ValueError: fewer than 2 rows, a ``mean`` of another width or shape, non-finite
            values, rows all equal to ``mean``, or no sign.

    Example:
        >>> general = torch.randn(8) * 10
        >>> pca_of_centred(general + torch.randn(32, 8) + 3 * torch.eye(8)[2], general).argmax().item()
        2
    """
    x = _matrix(acts, "acts", min_rows=2)
    if not isinstance(mean, torch.Tensor):
        raise TypeError(f"mean must be a torch.Tensor [d], got {type(mean).__name__}")
    if mean.ndim != 1:
        raise ValueError(f"mean must be [d], got shape {tuple(mean.shape)}")
    centre = _matrix(mean[None, :], "mean", min_rows=1)[0]
    _same_width(x, centre, "acts and mean")
    centred = x - centre  # [n, d]
    return _aligned(_first_component(centred, "the centred activations"), centred.mean(0),
                    "the mean of the centred activations")


def probe_direction(target: torch.Tensor, other: torch.Tensor, *, c: float = 1.0, seed: int = 0,
                    max_iter: int = 1000) -> torch.Tensor:
    """The weight vector of a logistic-regression probe, target (1) vs other (0), in activation space.

    Features are standardised (mean and sd of all rows; a constant feature keeps sd 1), the
    probe is fitted with L2 penalty ``1 / c`` (lbfgs, deterministic; ``seed`` fixes anything
    random), and its weights ``w`` are mapped back as ``w / sd``: the normal of the probe's
    boundary in activation space, pointing towards the target.

    Args:
        target: ``[n, d]`` per-text mean activations of target texts.
        other: ``[m, d]`` per-text means of the other texts (general text).
        c: inverse regularisation strength (scikit-learn's ``C``).
        seed: the solver's random state.
        max_iter: the solver's iteration limit.

    Returns:
        A float32 unit vector ``[d]``.

    Raises:
        ValueError: fewer than 2 rows on a side, different widths, non-finite values, a
            non-positive ``c``, or a probe with all weights 0.

    Example:
        >>> probe_direction(torch.randn(40, 8) + 3 * torch.eye(8)[5], torch.randn(40, 8)).argmax().item()
        5
    """
    from sklearn.linear_model import LogisticRegression  # a heavy import, only where used

    t = _matrix(target, "target", min_rows=2)
    o = _matrix(other, "other", min_rows=2)
    _same_width(t, o, "target and other")
    if not (isinstance(c, (int, float)) and np.isfinite(c) and c > 0):
        raise ValueError(f"c is {c!r}; expected a positive number")
    x = torch.cat([t, o]).numpy()  # [n + m, d]
    y = np.r_[np.ones(len(t)), np.zeros(len(o))]
    mu, sd = x.mean(0), x.std(0)
    sd = np.where(sd > 0, sd, 1.0)
    probe = LogisticRegression(C=float(c), random_state=seed, max_iter=max_iter)
    probe.fit((x - mu) / sd, y)
    w = torch.from_numpy(probe.coef_[0] / sd)  # [d], activation space
    norm = float(w.norm())
    if norm == 0.0:
        raise ValueError("the probe's weights are all 0: target and other are not separated at all")
    return (w / norm).to(torch.float32)
