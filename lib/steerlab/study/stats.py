"""The pure statistics of the pre-registered contrasts: paired t, TOST, Holm, minimum detectable difference.

One model for all of them, the **paired t** interval and test of a mean difference, so the CI,
the p-value, the equivalence test and the minimum detectable difference agree: the CI excludes 0
exactly when the uncorrected test rejects, and the MDD is the difference that test finds with
80% power (exact, from the noncentral t). Why t and not a bootstrap is in
:mod:`steerlab.study.contrasts`. Everything here is a function of numbers: no rows, no model.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import integrate, optimize, special, stats

__all__ = ["ALPHA", "POWER", "PairedTest", "check_level", "equivalence_mdd", "holm", "mdd", "mdd_factor",
           "paired_t_test", "required_n", "t_test", "tost_p"]

ALPHA = 0.05
POWER = 0.80


@functools.lru_cache(maxsize=4096)
def _t_quantile(q: float, df: int) -> float:
    return float(stats.t.ppf(q, df))


def _t_sf(x: float, df: int) -> float:
    return float(special.stdtr(df, -x))


@dataclass(frozen=True)
class PairedTest:
    """The paired t analysis of differences ``a - b``: mean, sd, ``1 - alpha`` CI, two-sided p."""

    mean: float
    sd: float
    n: int
    ci: tuple[float, float]
    p: float


def _differences(differences: Sequence[float] | np.ndarray) -> np.ndarray:
    d = np.asarray(differences, dtype=float).ravel()
    if d.size < 2:
        raise ValueError(f"need at least 2 paired differences, got {d.size}")
    if not np.isfinite(d).all():
        raise ValueError(f"differences contain NaN or inf at indices {np.flatnonzero(~np.isfinite(d)).tolist()}")
    return d


def _mean_sd(d: np.ndarray) -> tuple[float, float]:
    """Mean and sample sd of ``d`` (n >= 2); sd exactly 0 when all values are equal (float sums
    would leave a spurious 1e-17). Plain Python on a list: on the few values here numpy's calls
    cost more than the arithmetic, and the null simulations run this a hundred thousand times."""
    values = d.tolist()
    if min(values) == max(values):
        return float(values[0]), 0.0
    n = len(values)
    mean = math.fsum(values) / n
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))


def check_level(alpha: float, power: float | None = None) -> None:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha is {alpha!r}; expected a number in (0, 1)")
    if power is not None and not 0 < power < 1:
        raise ValueError(f"power is {power!r}; expected a number in (0, 1)")


def paired_t_test(differences: Sequence[float] | np.ndarray, *, alpha: float = ALPHA) -> PairedTest:
    """Mean of paired differences with its t interval and two-sided p-value (H0: mean 0).

    All differences equal (sd 0) gives a zero-width CI and p 1 (mean 0) or 0 (mean not 0).

    Example:
        >>> t = paired_t_test([0.1, 0.3, 0.2, 0.4])
        >>> round(t.mean, 2), round(t.p, 4)
        (0.25, 0.0305)
    """
    check_level(alpha)
    return t_test(_differences(differences), alpha)


def t_test(d: np.ndarray, alpha: float) -> PairedTest:
    """:func:`paired_t_test` of checked differences (``n >= 2``, finite) at a checked ``alpha``."""
    n = d.size
    mean, sd = _mean_sd(d)
    if sd == 0.0:
        return PairedTest(mean, 0.0, n, (mean, mean), 1.0 if mean == 0.0 else 0.0)
    se = sd / math.sqrt(n)
    half = _t_quantile(1 - alpha / 2, n - 1) * se
    p = min(1.0, 2 * _t_sf(abs(mean) / se, n - 1))
    return PairedTest(mean, sd, n, (mean - half, mean + half), p)


def tost_p(differences: Sequence[float] | np.ndarray, margin: float) -> float:
    """Two one-sided tests of equivalence: the larger p of H0 ``mean <= -margin`` and H0 ``mean >= margin``.

    A small value says the mean difference lies within ``±margin`` (reject both).

    Example:
        >>> round(tost_p([0.01, -0.02, 0.0, 0.015, -0.01], 0.1), 6)
        5.1e-05
    """
    if not (isinstance(margin, (int, float)) and math.isfinite(margin) and margin > 0):
        raise ValueError(f"margin is {margin!r}; expected a positive number")
    d = _differences(differences)
    n = d.size
    mean, sd = _mean_sd(d)
    if sd == 0.0:
        return 0.0 if abs(mean) < margin else 1.0
    se = sd / math.sqrt(n)
    p_lower = _t_sf((mean + margin) / se, n - 1)   # H0: mean <= -margin
    p_upper = _t_sf((margin - mean) / se, n - 1)   # H0: mean >= +margin
    return max(p_lower, p_upper)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (reject where adjusted < alpha), in the input order.

    Controls the chance of any false call across the list at ``alpha`` whatever the dependence
    between the tests.

    Example:
        >>> holm([0.01, 0.04, 0.03])
        [0.03, 0.06, 0.06]
    """
    p = np.asarray(p_values, dtype=float)
    if p.size and (not np.isfinite(p).all() or p.min() < 0 or p.max() > 1):
        raise ValueError(f"p-values must be in [0, 1], got {p.tolist()}")
    order = np.argsort(p, kind="stable")
    m = p.size
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * float(p[i])))
        adjusted[i] = running
    return [float(x) for x in adjusted]


def _two_sided_power(df: int, k: float, crit: float) -> float:
    """P(|T| > crit) for T ~ noncentral t(df, k): scipy's ``nctdtr``, or where that gives nan
    (it does for some small df and large crit) the same integral over the chi-square."""
    value = (1.0 - float(special.nctdtr(df, k, crit))) + (1.0 - float(special.nctdtr(df, -k, crit)))
    if math.isfinite(value):
        return value

    def integrand(v: float) -> float:
        s = crit * math.sqrt(v / df)
        return float(stats.chi2.pdf(v, df) * (special.ndtr(k - s) + special.ndtr(-s - k)))

    lo, hi = float(stats.chi2.ppf(1e-12, df)), float(stats.chi2.ppf(1 - 1e-12, df))
    return float(integrate.quad(integrand, lo, hi, limit=200, epsabs=1e-12)[0])


@functools.lru_cache(maxsize=4096)
def mdd_factor(n: int, alpha: float, power: float) -> float:
    """``k`` such that the two-sided paired t test at ``alpha`` finds a mean of ``k * sd / sqrt(n)``
    with probability ``power`` (exact, from the noncentral t)."""
    df = n - 1
    crit = _t_quantile(1 - alpha / 2, df)

    def shortfall(k: float) -> float:
        return _two_sided_power(df, k, crit) - power

    hi = crit + 4.0
    while shortfall(hi) < 0:
        hi *= 2
    return float(optimize.brentq(shortfall, 0.0, hi, xtol=1e-10))


def _check_sd_n(sd: float, n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise ValueError(f"n is {n!r}; expected an integer >= 2 (a paired t test needs 2 differences)")
    if not (isinstance(sd, (int, float, np.floating)) and math.isfinite(sd) and sd >= 0):
        raise ValueError(f"sd is {sd!r}; expected a finite number >= 0")


def mdd(sd: float, n: int, *, alpha: float = ALPHA, power: float = POWER) -> float:
    """Minimum detectable difference: the mean paired difference a two-sided paired t test at
    ``alpha`` finds with probability ``power``, for ``n`` pairs whose differences have spread ``sd``.

    Scales as ``1 / sqrt(n)`` once ``n`` is moderate (about ``2.8 sd / sqrt(n)`` at 80%, 5%).

    Example:
        >>> round(mdd(1.0, 20), 3)
        0.66
    """
    _check_sd_n(sd, n)
    check_level(alpha, power)
    return float(sd) * mdd_factor(int(n), float(alpha), float(power)) / math.sqrt(n)


def required_n(sd: float, difference: float, *, alpha: float = ALPHA, power: float = POWER) -> int:
    """The fewest pairs whose :func:`mdd` is at most ``difference``, for differences of spread ``sd``
    (a spread measured in a pilot run: ``ContrastResult.sd``).

    Example:
        >>> required_n(1.0, 0.5)
        34
    """
    _check_sd_n(sd, 2)
    check_level(alpha, power)
    if not (isinstance(difference, (int, float)) and math.isfinite(difference) and difference > 0):
        raise ValueError(f"difference is {difference!r}; expected a positive number")
    if sd == 0:
        return 2
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    n = max(2, int((z * sd / difference) ** 2))  # the normal answer: never more than the t answer
    while mdd(sd, n, alpha=alpha, power=power) > difference:
        n += 1
        if n > 10_000_000:
            raise ValueError(f"more than 10 million pairs needed for {difference} at sd {sd}")
    return n


def equivalence_mdd(sd: float, n: int, alpha: float, power: float) -> float:
    """The smallest margin TOST confirms with probability ``power`` when the true difference is 0
    (the usual approximation: ``(t_{1-alpha} + t_{1-(1-power)/2}) sd / sqrt(n)``)."""
    df = n - 1
    return (_t_quantile(1 - alpha, df) + _t_quantile(1 - (1 - power) / 2, df)) * sd / math.sqrt(n)
