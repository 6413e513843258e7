"""The field's directions on synthetic activations with a planted answer: each recovers a planted
direction from noisy rows (cosine > 0.95) and finds nothing like it in a control without one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA
from steerlab.directions import pca_of_centred, pca_of_differences, probe_direction


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float(a @ b / (a.norm() * b.norm()))


def _unit(d: int, g: torch.Generator) -> torch.Tensor:
    v = torch.randn(d, generator=g)
    return v / v.norm()


def _check_output(v: torch.Tensor, d: int) -> None:
    assert v.dtype == torch.float32 and v.shape == (d,)
    assert float(v.norm()) == pytest.approx(1.0, abs=1e-5)


def test_pca_of_differences_recovers_a_planted_direction() -> None:
    g = torch.Generator().manual_seed(0)
    d, n = 64, 100
    v = _unit(d, g)
    base = 5 * torch.randn(n, d, generator=g)  # each pair's own text, shared by both sides
    size = 3 * (torch.rand(n, generator=g) + 0.5)
    a = base + size[:, None] * v + 0.3 * torch.randn(n, d, generator=g)
    b = base + 0.3 * torch.randn(n, d, generator=g)
    a_before = a.clone()
    found = pca_of_differences(a, b)
    _check_output(found, d)
    assert _cos(found, v) > 0.95
    assert _cos(pca_of_differences(b, a), v) < -0.95  # signed by the mean difference
    assert torch.equal(a, a_before)  # the caller's tensor is not edited
    # A concept that moves every pair by the same amount: the second moment keeps it, a PCA
    # centred on the differences' own mean (scikit-learn's) throws it away.
    same = base + 1.0 * v + 0.3 * torch.randn(n, d, generator=g)
    assert _cos(pca_of_differences(same, b), v) > 0.9
    centred_pca = torch.from_numpy(PCA(n_components=1).fit((same - b).numpy()).components_[0])
    assert abs(_cos(centred_pca, v)) < 0.5
    # Control: no planted difference, nothing like v.
    control = base + 0.3 * torch.randn(n, d, generator=g)
    assert abs(_cos(pca_of_differences(control, b), v)) < 0.4


def test_pca_of_centred_recovers_a_planted_direction_and_needs_the_centre() -> None:
    g = torch.Generator().manual_seed(1)
    d, n = 64, 100
    v = _unit(d, g)
    bias = 20 * _unit(d, g)  # the general-text mean: large, in another direction
    acts = bias + 2 * (torch.rand(n, generator=g) + 0.5)[:, None] * v + 0.3 * torch.randn(n, d, generator=g)
    found = pca_of_centred(acts, bias)
    _check_output(found, d)
    assert _cos(found, v) > 0.95
    minus = bias - 2 * (torch.rand(n, generator=g) + 0.5)[:, None] * v + 0.3 * torch.randn(n, d, generator=g)
    assert _cos(pca_of_centred(minus, bias), v) < -0.95  # signed by the centred mean
    # Without the centre the first component is the bias (the raw vector's problem).
    uncentred = pca_of_centred(acts, torch.zeros(d))
    assert _cos(uncentred, bias) > 0.9 and abs(_cos(uncentred, v)) < 0.5
    control = bias + 0.3 * torch.randn(n, d, generator=g)
    assert abs(_cos(pca_of_centred(control, bias), v)) < 0.4


def test_probe_direction_recovers_a_planted_direction() -> None:
    g = torch.Generator().manual_seed(2)
    d, m = 32, 1000
    v = _unit(d, g)
    bias = 10 * _unit(d, g)  # both sets share it; standardising removes it
    target = bias + 2 * v + torch.randn(m, d, generator=g)
    other = bias + torch.randn(m, d, generator=g)
    found = probe_direction(target, other)
    _check_output(found, d)
    assert _cos(found, v) > 0.95
    assert _cos(probe_direction(other, target), v) < -0.95  # points to the target side
    assert torch.equal(probe_direction(target, other), found)  # deterministic
    # Mapped back to activation space: rescale every coordinate by D and the probe's normal
    # becomes normal / D (standardisation makes the fitted weights themselves identical).
    scale = torch.rand(d, generator=g) * 3 + 0.2
    assert _cos(probe_direction(target * scale, other * scale), found.double() / scale) > 0.99999
    # Control: the two sides drawn alike: nothing like v (with 64 dimensions, a random
    # direction's cosine with v has sd 1/8).
    d2 = 64
    v2 = _unit(d2, g)
    same_a, same_b = torch.randn(300, d2, generator=g), torch.randn(300, d2, generator=g)
    assert abs(_cos(probe_direction(same_a, same_b), v2)) < 0.4


def test_bad_inputs_are_named() -> None:
    x = torch.randn(5, 8)
    with pytest.raises(ValueError, match="pairs_a has 1 rows; expected at least 2"):
        pca_of_differences(x[:1], x[:1])
    with pytest.raises(ValueError, match="differ in width: 8 and 6"):
        pca_of_differences(x, torch.randn(5, 6))
    with pytest.raises(ValueError, match="pairs_a has 5 rows, pairs_b 4"):
        pca_of_differences(x, x[:4])
    with pytest.raises(ValueError, match="all zero"):
        pca_of_differences(x, x.clone())
    bad = x.clone()
    bad[3, 2] = float("nan")
    with pytest.raises(ValueError, match="acts has NaN or inf in rows \\[3\\]"):
        pca_of_centred(bad, torch.zeros(8))
    with pytest.raises(ValueError, match="mean must be \\[d\\]"):
        pca_of_centred(x, torch.zeros(1, 8))
    with pytest.raises(ValueError, match="acts and mean differ in width: 8 and 7"):
        pca_of_centred(x, torch.zeros(7))
    with pytest.raises(ValueError, match="mean has NaN or inf"):
        pca_of_centred(x, torch.full((8,), float("inf")))
    with pytest.raises(ValueError, match="must be \\[n, d\\]"):
        probe_direction(torch.randn(8), x)
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        probe_direction(np.zeros((5, 8)), x)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="other has 1 rows"):
        probe_direction(x, x[:1])
    with pytest.raises(ValueError, match="c is 0"):
        probe_direction(x, torch.randn(5, 8), c=0)
    # Half precision in, float32 unit vector out.
    _check_output(pca_of_differences(x.to(torch.bfloat16), torch.zeros(5, 8, dtype=torch.bfloat16)), 8)
