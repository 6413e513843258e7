"""The comparison's question as pre-registered, paired contrasts with power: estimate, CI,
p-value, minimum detectable difference and a Holm-corrected verdict for each.

The list (:data:`PREREGISTERED`) is fixed here, in code, before any numbers: every contrast
is a paired difference ``a - b`` of one measure (steerability per sample, an AxBench score
per report prompt) at the same target, layer and position on both sides, paired by sample
id. It is run per target and pooled over targets, at every (layer, position) cell present
(or the cells named in advance):

- (a) ``raw`` vs ``random``: a raw vector is mostly the layer's bias; does it steer at all?
- (b) ``mean_centred`` vs ``raw``: does removing the bias help?
- (c) ``bias_ablated`` vs ``mean_centred``: an **equivalence** question: is projecting the
  bias direction out the same as subtracting the whole mean, within ``±margin``
  (:data:`EQUIVALENCE_MARGINS`)? Two one-sided tests (TOST) next to the difference test;
- (d) ``isolated`` vs ``mean_centred`` and (e) ``counterbalanced`` vs ``mean_centred``:
  do other references than general text do better?
- (f) every construction vs ``random``, (g) every construction vs ``prompting`` (no vector:
  the model is asked). "Every construction" is :data:`CONSTRUCTIONS_UNDER_TEST`.

Statistics, the same model for all of them: the **paired t** interval and test of the mean
difference. It is used (rather than a paired bootstrap) because the CI, the p-value, the
TOST and the minimum detectable difference must rest on one model: the CI excludes 0
exactly when the uncorrected test rejects, and the MDD is the difference that test finds
with 80% power. At the sample sizes here (6 to 50 pairs) the percentile bootstrap is too
narrow: it ignores the ``n - 1`` and the t tails, and on normal data its 95% interval covers
the mean about 87% of the time at n = 6, 91% at 12 and 93% at 24, against 95% for t. The t
interval needs the mean difference to be near normal: steerability slopes are averages over
tokens and are; AxBench scores, which pile up at 0, are less so, and there the t interval is
an approximation that grows better with n.

Multiplicity: Holm's step-down correction across every hypothesis of the call
(``family="all"``; per scope and cell with ``family="scope"``). The verdict reads the
corrected test only: ``"A > B"``, ``"A < B"``, ``"equivalent within ±m"`` or ``"not resolved
at this sample size (MDD x)"``, where x is the difference found with 80% power at the
Bonferroni level ``alpha / family size`` (the strictest threshold Holm can apply, so an effect
of x is found whatever the other tests do). A construction missing from the rows makes its
contrasts ``"not run"`` with the reason, never a silent omission.

"Best of N" claims go through :func:`best_of`: the best condition is chosen on a selection
half of the samples and tested on the other half, never on the samples that chose it.

Rows: one :class:`Sample` per (target, construction, layer, position, sample id) with its
value: steerability rows carrying per-sample ``slopes`` convert with :func:`samples_from_lists`,
per-prompt AxBench scores at each condition's chosen coefficient (report prompts) with
:func:`samples_from_dicts`; a condition with no layer (``prompting``) is placed at every cell
with :func:`at_cells`. :func:`to_records` and :func:`registration` give ``summary.json`` the
results and the configuration that produced them.

Everything here is a pure function of plain rows: no model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import numpy as np

from .conditions import CONSTRUCTIONS_UNDER_TEST
from .scoring import PromptSplit, split_prompts
from .stats import (
    ALPHA,
    POWER,
    PairedTest,
    check_level,
    equivalence_mdd,
    holm,
    mdd,
    mdd_factor,
    paired_t_test,
    required_n,
    t_test,
    tost_p,
)

__all__ = [
    "ALPHA",
    "CONSTRUCTIONS_UNDER_TEST",
    "EQUIVALENCE_MARGINS",
    "POWER",
    "PREREGISTERED",
    "BestOf",
    "Contrast",
    "ContrastResult",
    "PairedTest",
    "Sample",
    "at_cells",
    "best_of",
    "holm",
    "mdd",
    "paired_t_test",
    "preregistered",
    "registration",
    "required_n",
    "run_contrasts",
    "samples_from_dicts",
    "samples_from_lists",
    "to_records",
    "tost_p",
]

# Equivalence margins by measure, stated before the numbers. Steerability is in nats per token
# per unit coefficient: 0.10 is a sixth of mean-centring's +0.66 on fantasy (issue 23) and
# twice raw's +0.04, so a smaller gap would not change which construction one uses. The AxBench
# score is on [0, 1]: 0.02 is under half the largest gap measured between conditions so far
# (+0.048, the best method against random, issue 23).
EQUIVALENCE_MARGINS: dict[str, float] = {"steerability": 0.10, "matched": 0.10, "score": 0.02}
"""Per measure, the difference called "the same" in (c): 0.10 nats per unit coefficient of steerability,
0.10 nats of propensity shift at matched damage, 0.02 of the AxBench score (on [0, 1])."""
Unit = Hashable  # what pairs two constructions' values: a sample id, or (target, sample id) pooled
Cell = tuple[int, str]  # (layer, position)


@dataclass(frozen=True)
class Contrast:
    """One pre-registered question: construction ``a`` against ``b`` (the difference ``a - b``).

    Attributes:
        label: its letter in the list, ``"a"`` to ``"g"``.
        a: the construction tested.
        b: the construction it is compared with (same target, layer, position and samples).
        question: what it answers, in words.
        equivalence: an equivalence question (TOST against a margin) as well as a difference one.
    """

    label: str
    a: str
    b: str
    question: str
    equivalence: bool = False

    @property
    def name(self) -> str:
        """``"(c) bias_ablated vs mean_centred"``."""
        return f"({self.label}) {self.a} vs {self.b}"


def preregistered(constructions: Sequence[str] = CONSTRUCTIONS_UNDER_TEST) -> tuple[Contrast, ...]:
    """The list (a)-(g) with (f) and (g) over ``constructions``; a pair already asked is not asked twice.

    Example:
        >>> [c.name for c in preregistered(("raw", "mean_centred"))][:3]
        ['(a) raw vs random', '(b) mean_centred vs raw', '(c) bias_ablated vs mean_centred']
    """
    out = [
        Contrast("a", "raw", "random", "does a raw vector (mostly the bias) steer more than a random direction?"),
        Contrast("b", "mean_centred", "raw", "does removing the general-text mean help?"),
        Contrast("c", "bias_ablated", "mean_centred",
                 "is projecting the bias direction out the same as subtracting the mean?", equivalence=True),
        Contrast("d", "isolated", "mean_centred", "does a genre reference beat the general-text reference?"),
        Contrast("e", "counterbalanced", "mean_centred", "does subtracting the counter genre beat mean-centring?"),
    ]
    asked = {(c.a, c.b) for c in out}
    for name in constructions:
        if name != "random" and (name, "random") not in asked:
            out.append(Contrast("f", name, "random", f"does {name} steer more than a random direction?"))
            asked.add((name, "random"))
    for name in constructions:
        if name != "prompting" and (name, "prompting") not in asked:
            out.append(Contrast("g", name, "prompting", f"does {name} beat asking the model?"))
            asked.add((name, "prompting"))
    return tuple(out)


PREREGISTERED: tuple[Contrast, ...] = preregistered()


@dataclass(frozen=True)
class Sample:
    """One measured value: a condition's ``value`` on one sample at one target, layer, position
    (the condition: a construction, or a baseline such as ``prompting`` or ``unsteered``).

    ``sample_id`` names the unit that pairs constructions: the held-out story (steerability)
    or the report prompt (AxBench score); the same id means the same text on both sides.
    """

    target: str
    condition: str
    layer: int
    position: str
    sample_id: Hashable
    value: float

    def __post_init__(self) -> None:
        if isinstance(self.layer, bool) or not isinstance(self.layer, (int, np.integer)):
            raise ValueError(f"layer is {self.layer!r}; expected an integer")  # noqa: TRY004 - a bad row value
        if isinstance(self.value, bool) or not isinstance(self.value, (int, float, np.integer, np.floating)):
            raise ValueError(f"value of {self._where()} is {self.value!r}; expected a number")  # noqa: TRY004
        if not math.isfinite(float(self.value)):
            raise ValueError(f"value of {self._where()} is {self.value}; expected a finite number")

    def _where(self) -> str:
        return (f"{self.condition!r} on {self.target!r}, layer {self.layer}, {self.position!r}, "
                f"sample {self.sample_id!r}")


def _field(row: Mapping[str, Any], name: str) -> Any:
    if name not in row:
        raise KeyError(f"row has no field {name!r}; its fields: {', '.join(map(str, row))}")
    return row[name]


def samples_from_dicts(rows: Iterable[Mapping[str, Any]], *, value: str = "value",
                       condition: str = "condition", sample_id: str = "sample_id") -> list[Sample]:
    """Long-form dicts (one value each) as :class:`Sample`s; ``target``, ``layer`` and ``position``
    are read as they are, the other three fields under the names given.

    Example:
        >>> samples_from_dicts([{"target": "fantasy", "condition": "raw", "layer": 15, "position": "all_prompt",
        ...                      "prompt_id": 3, "score": 0.4}], value="score", sample_id="prompt_id")
        [Sample(target='fantasy', condition='raw', layer=15, position='all_prompt', sample_id=3, value=0.4)]
    """
    return [Sample(str(_field(r, "target")), str(_field(r, condition)), _field(r, "layer"),
                   str(_field(r, "position")), _field(r, sample_id), _field(r, value)) for r in rows]


def samples_from_lists(rows: Iterable[Mapping[str, Any]], *, values: str = "slopes",
                       condition: str = "condition") -> list[Sample]:
    """Rows that carry one list of per-sample values each (compare's steerability rows with
    ``"slopes"``) as :class:`Sample`s; the sample id is the index in the list, which names the
    same held-out story for every construction at that target, layer and position.

    Example:
        >>> samples_from_lists([{"target": "fantasy", "condition": "raw", "layer": 15,
        ...                      "position": "all_prompt", "slopes": [0.1, -0.2]}])[1].value
        -0.2
    """
    out = []
    for r in rows:
        vals = _field(r, values)
        if isinstance(vals, (str, bytes)) or not isinstance(vals, (Sequence, np.ndarray)):
            raise ValueError(  # noqa: TRY004 - a bad row value, as for every other field
                f"field {values!r} is {type(vals).__name__}; expected a list of per-sample values")
        out += [Sample(str(_field(r, "target")), str(_field(r, condition)), _field(r, "layer"),
                       str(_field(r, "position")), i, float(v) if isinstance(v, np.floating) else v)
                for i, v in enumerate(vals)]
    return out


def at_cells(samples: Iterable[Sample], cells: Iterable[Cell]) -> list[Sample]:
    """Copies of ``samples`` at each (layer, position) of ``cells``: for a condition measured once,
    with no layer (``prompting``: no vector), to be paired with constructions at every cell.

    Example:
        >>> asked = [Sample("fantasy", "prompting", 0, "none", i, v) for i, v in enumerate([0.9, 0.7])]
        >>> len(at_cells(asked, [(9, "all_prompt"), (15, "all_prompt")]))
        4
    """
    items, where = list(samples), [(int(la), str(pos)) for la, pos in cells]
    return [replace(s, layer=la, position=pos) for la, pos in where for s in items]


def to_records(results: Iterable[ContrastResult]) -> list[dict[str, Any]]:
    """Results as JSON-ready dicts (``summary.json``): every field plus ``name``, ``nan`` as ``None``,
    tuples as lists.

    Example:
        >>> to_records(run_contrasts(samples))[0]["verdict"]  # doctest: +SKIP
        'not resolved at this sample size (MDD 0.21)'
    """
    def plain(x: Any) -> Any:
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, tuple):
            return [plain(v) for v in x]
        return x

    return [{"name": r.name, **{k: plain(v) for k, v in asdict(r).items()}} for r in results]


def registration(contrasts: Sequence[Contrast] = PREREGISTERED, *, measure: str = "steerability",
                 margin: float | None = None, alpha: float = ALPHA, power: float = POWER,
                 cells: Sequence[Cell] | None = None, family: str = "all") -> dict[str, Any]:
    """The configuration a :func:`run_contrasts` call is made with, as plain values for ``summary.json``.

    Example:
        >>> registration()["correction"]
        'holm'
    """
    return {"contrasts": [{"name": c.name, **asdict(c)} for c in contrasts], "measure": measure,
            "equivalence_margin": _margin(measure, margin), "alpha": alpha, "power": power,
            "cells": None if cells is None else [list(c) for c in cells], "correction": "holm",
            "family": family, "ci": "paired t", "mdd": "two-sided paired t at alpha / family size, exact power"}


# --- running the list ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ContrastResult:
    """One contrast at one scope (a target or ``"pooled"``) and cell (layer, position).

    Attributes:
        label, a, b, question: the contrast (see :class:`Contrast`).
        scope: the target, or ``"pooled"`` (every target with both sides, units ``(target, sample)``).
        layer, position: the cell, the same on both sides.
        measure: what the values are (``"steerability"``, ``"score"``).
        status: ``"run"`` or ``"not run"`` (then ``reason`` says why; numbers are ``nan``).
        n: number of paired samples.
        estimate: mean of ``a - b``; ``ci`` its ``1 - alpha`` paired t interval (uncorrected).
        sd: spread of the differences (for :func:`required_n`).
        p: two-sided uncorrected p of the difference; ``p_holm`` Holm-corrected over the family.
        mdd: difference found with ``power`` at ``alpha``; ``mdd_corrected`` at ``alpha / family_size``.
        margin: the equivalence margin (equivalence contrasts; else ``None``), ``p_equivalence``
            its TOST p, ``p_equivalence_holm`` corrected, ``equivalence_mdd`` the smallest margin
            TOST confirms with ``power`` when the truth is 0.
        verdict: from the corrected tests only.
        family_size: hypotheses in the Holm family this result was corrected in.
        targets: the targets pooled (one for a per-target result).
        note: how the result was obtained where it is not the plain list (:func:`best_of`).
    """

    label: str
    a: str
    b: str
    question: str
    scope: str
    layer: int
    position: str
    measure: str
    status: Literal["run", "not run"]
    reason: str = ""
    n: int = 0
    estimate: float = math.nan
    ci: tuple[float, float] = (math.nan, math.nan)
    ci_method: str = "paired t"
    sd: float = math.nan
    p: float = math.nan
    p_holm: float = math.nan
    mdd: float = math.nan
    mdd_corrected: float = math.nan
    margin: float | None = None
    p_equivalence: float | None = None
    p_equivalence_holm: float | None = None
    equivalence_mdd: float | None = None
    verdict: str = "not run"
    alpha: float = ALPHA
    power: float = POWER
    family_size: int = 0
    targets: tuple[str, ...] = ()
    note: str = ""

    @property
    def name(self) -> str:
        """``"(b) mean_centred vs raw"``."""
        return f"({self.label}) {self.a} vs {self.b}"

    @property
    def calls_difference(self) -> bool:
        """The corrected verdict says one side is larger (also inside an "equivalent ... (A > B by less
        than the margin)" verdict)."""
        return f"{self.a} > {self.b}" in self.verdict or f"{self.a} < {self.b}" in self.verdict


@dataclass(frozen=True)
class _Values:
    """One construction's values at one target and cell, by sample id (ids sorted by ``repr``)."""

    ids: tuple[Unit, ...]
    values: np.ndarray  # [n], in the order of ids


def _by_unit(samples: Sequence[Sample]) -> dict[tuple[str, str, Cell], _Values]:
    """``(target, construction, cell) -> values by sample``; several rows of one sample count once, by their mean."""
    lists: dict[tuple[str, str, Cell], dict[Unit, list[float]]] = {}
    for s in samples:
        lists.setdefault((s.target, s.condition, (int(s.layer), s.position)), {}).setdefault(
            s.sample_id, []).append(float(s.value))
    out = {}
    for key, by in lists.items():
        ids = tuple(sorted(by, key=repr))
        out[key] = _Values(ids, np.array([sum(by[u]) / len(by[u]) for u in ids]))
    return out


def _paired(a: _Values, b: _Values, where: Callable[[], str]) -> np.ndarray:
    if a.ids != b.ids:
        only_a, only_b = sorted(set(a.ids) - set(b.ids), key=repr)[:5], sorted(set(b.ids) - set(a.ids), key=repr)[:5]
        raise ValueError(f"{where()}: the two sides cover different samples: only in a {only_a}, only in b {only_b}")
    return a.values - b.values


@dataclass
class _Pending:
    contrast: Contrast
    scope: str
    cell: Cell
    targets: tuple[str, ...]
    diffs: np.ndarray | None
    reason: str = ""
    test: PairedTest | None = None
    p_eq: float | None = None


def _gather(table: Mapping[tuple[str, str, Cell], _Values], contrast: Contrast, scope: str,
            targets: Sequence[str], cell: Cell) -> _Pending:
    missing = [c for c in (contrast.a, contrast.b) if not any((t, c, cell) in table for t in targets)]
    if missing:
        return _Pending(contrast, scope, cell, (), None,
                        f"no {' or '.join(repr(m) for m in missing)} rows at layer {cell[0]}, {cell[1]!r}")
    both = [t for t in targets if (t, contrast.a, cell) in table and (t, contrast.b, cell) in table]
    if not both:
        return _Pending(contrast, scope, cell, (), None, f"no target has both {contrast.a!r} and {contrast.b!r} rows")
    def where(t: str) -> Callable[[], str]:
        return lambda: f"{contrast.name} on {t}, layer {cell[0]}, {cell[1]!r}"

    diffs = np.concatenate([_paired(table[(t, contrast.a, cell)], table[(t, contrast.b, cell)], where(t))
                            for t in both])
    if diffs.size < 2:
        return _Pending(contrast, scope, cell, tuple(both), None, f"{diffs.size} paired sample (need 2)")
    return _Pending(contrast, scope, cell, tuple(both), diffs)


def _verdict(r: _Pending, p_holm: float, p_eq_holm: float | None, margin: float | None, alpha: float,
             mdd_corrected: float) -> str:
    assert r.test is not None
    c = r.contrast
    difference = p_holm < alpha
    side = f"{c.a} > {c.b}" if r.test.mean > 0 else f"{c.a} < {c.b}"
    if p_eq_holm is not None and p_eq_holm < alpha:
        return f"equivalent within ±{margin:g}" + (f" ({side} by less than the margin)" if difference else "")
    if difference:
        return side
    return f"not resolved at this sample size (MDD {mdd_corrected:.3g})"


def _finish(pending: Sequence[_Pending], *, measure: str, margin: float | None, alpha: float, power: float,
            family: Literal["all", "scope"], note: str = "") -> list[ContrastResult]:
    for r in pending:
        if r.diffs is not None:
            r.test = t_test(r.diffs, alpha)  # finite (Sample checks) and n >= 2 (_gather checks)
            if r.contrast.equivalence:
                if margin is None:
                    raise ValueError(f"{r.contrast.name} is an equivalence question: it needs a margin")
                r.p_eq = tost_p(r.diffs, margin)
    # Holm families: every hypothesis of the call, or of each (scope, cell).
    groups: dict[Any, list[tuple[int, str, float]]] = {}
    for i, r in enumerate(pending):
        if r.test is None:
            continue
        hyps = groups.setdefault("all" if family == "all" else (r.scope, r.cell), [])
        hyps.append((i, "difference", r.test.p))
        if r.p_eq is not None:
            hyps.append((i, "equivalence", r.p_eq))
    adjusted: dict[tuple[int, str], float] = {}
    sizes: dict[int, int] = {}
    for hyps in groups.values():
        for (i, kind, _), q in zip(hyps, holm([p for _, _, p in hyps])):
            adjusted[(i, kind)] = q
            sizes[i] = len(hyps)
    out = []
    for i, r in enumerate(pending):
        c = r.contrast
        base: dict[str, Any] = {"label": c.label, "a": c.a, "b": c.b, "question": c.question, "scope": r.scope,
                "layer": r.cell[0], "position": r.cell[1], "measure": measure, "alpha": alpha, "power": power,
                "targets": r.targets, "note": note}
        if r.test is None:
            out.append(ContrastResult(**base, status="not run", reason=r.reason,
                                      margin=margin if c.equivalence else None))
            continue
        t, m = r.test, sizes[i]
        p_holm = adjusted[(i, "difference")]
        p_eq_holm = adjusted.get((i, "equivalence"))
        # alpha and power were checked by the caller: the factor directly (the simulations call this a lot)
        mdd_corr = t.sd * mdd_factor(t.n, alpha / m, power) / math.sqrt(t.n)
        out.append(ContrastResult(
            **base, status="run", n=t.n, estimate=t.mean, ci=t.ci, sd=t.sd, p=t.p, p_holm=p_holm,
            mdd=t.sd * mdd_factor(t.n, alpha, power) / math.sqrt(t.n), mdd_corrected=mdd_corr,
            margin=margin if c.equivalence else None, p_equivalence=r.p_eq, p_equivalence_holm=p_eq_holm,
            equivalence_mdd=equivalence_mdd(t.sd, t.n, alpha / m, power) if c.equivalence else None,
            verdict=_verdict(r, p_holm, p_eq_holm, margin if c.equivalence else None, alpha, mdd_corr),
            family_size=m))
    return out


def _margin(measure: str, margin: float | None) -> float:
    if margin is None:
        if measure not in EQUIVALENCE_MARGINS:
            raise ValueError(f"no pre-registered equivalence margin for measure {measure!r} (known: "
                             f"{', '.join(EQUIVALENCE_MARGINS)}); pass margin=")
        return EQUIVALENCE_MARGINS[measure]
    if not (isinstance(margin, (int, float)) and math.isfinite(margin) and margin > 0):
        raise ValueError(f"margin is {margin!r}; expected a positive number")
    return float(margin)


def _check_samples(samples: Iterable[Sample]) -> list[Sample]:
    items = list(samples)
    if not items:
        raise ValueError("no samples: expected Sample rows (see samples_from_dicts)")
    for s in items:
        if not isinstance(s, Sample):
            raise TypeError(f"expected Sample rows (see samples_from_dicts), got {type(s).__name__}")
    return items


def run_contrasts(samples: Iterable[Sample], *, contrasts: Sequence[Contrast] = PREREGISTERED,
                  measure: str = "steerability", margin: float | None = None, alpha: float = ALPHA,
                  power: float = POWER, cells: Sequence[Cell] | None = None, pooled: bool = True,
                  family: Literal["all", "scope"] = "all") -> list[ContrastResult]:
    """Every contrast, per target (sorted) and pooled over targets, at each cell, in list order.

    Args:
        samples: the measured values (:func:`samples_from_dicts`, :func:`samples_from_lists`).
        contrasts: the pre-registered list (default :data:`PREREGISTERED`).
        measure: the values' name; picks the equivalence margin from :data:`EQUIVALENCE_MARGINS`.
        margin: an equivalence margin instead of the pre-registered one.
        alpha, power: the tests' level and the power of the MDD.
        cells: the (layer, position) cells to test, named in advance; default every cell in
            ``samples`` (more cells, a larger Holm family).
        pooled: also run each contrast pooled over targets (units ``(target, sample)``).
        family: ``"all"``: Holm across every hypothesis returned; ``"scope"``: within each
            (scope, cell).

    Raises:
        ValueError: no samples, a cell not in the samples, or two constructions of one target
            and cell measured on different samples (pairing would drop some silently).

    Example:
        >>> results = run_contrasts(samples_from_lists(result.steerability))
        >>> print("\\n".join(conclusions(results)))
    """
    items = _check_samples(samples)
    check_level(alpha, power)
    if family not in ("all", "scope"):
        raise ValueError(f"family is {family!r}; expected 'all' or 'scope'")
    m = _margin(measure, margin)
    table = _by_unit(items)
    present = sorted({(int(s.layer), s.position) for s in items})
    if cells is None:
        chosen = present
    else:
        chosen = [(int(la), str(pos)) for la, pos in cells]
        unknown = [c for c in chosen if c not in present]
        if unknown:
            raise ValueError(f"cells {unknown} are not in the samples; present: {present}")
    targets = sorted({s.target for s in items})
    scopes = [(t, [t]) for t in targets] + ([("pooled", targets)] if pooled else [])
    pending = [_gather(table, c, scope, ts, cell) for scope, ts in scopes for cell in chosen for c in contrasts]
    return _finish(pending, measure=measure, margin=m, alpha=alpha, power=power, family=family)


# --- best of N -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BestOf:
    """The best condition, chosen on the selection samples, tested against ``baseline`` on the report samples.

    Attributes:
        chosen: ``(construction, layer, position)`` with the highest mean on the selection samples.
        selection_means: every candidate's mean on the selection samples.
        split: the selection and report units (sample ids, or ``(target, sample_id)`` pooled).
        result: ``chosen`` vs ``baseline`` at the same layer and position on the report units only.
    """

    chosen: tuple[str, int, str]
    selection_means: dict[tuple[str, int, str], float]
    split: PromptSplit
    result: ContrastResult


def best_of(samples: Iterable[Sample], *, baseline: str = "random", target: str | None = None,
            split: PromptSplit | None = None, seed: int = 0, measure: str = "steerability",
            alpha: float = ALPHA, power: float = POWER, exclude: Sequence[str] = ()) -> BestOf:
    """"Best of N" without the winner's curse: choose on one half of the samples, test on the other.

    Candidates are every (construction, layer, position) but ``baseline`` and ``exclude``. Units
    are sample ids of ``target``, or ``(target, sample_id)`` over every target when ``target`` is
    None; ``split`` (default: :func:`steerlab.study.scoring.split_prompts` of the units, seeded)
    must be disjoint. The result is one test (its own Holm family of 1), labelled ``"best"``.

    Raises:
        ValueError: overlapping halves, no candidate, or the baseline missing at the chosen cell.

    Example:
        >>> best = best_of(samples, baseline="random")
        >>> best.chosen, best.result.verdict
    """
    items = _check_samples(samples)
    check_level(alpha, power)
    if target is not None:
        items = [s for s in items if s.target == target]
        if not items:
            raise ValueError(f"no samples of target {target!r}")

    def unit(s: Sample) -> Unit:
        return s.sample_id if target is not None else (s.target, s.sample_id)

    units = {unit(s) for s in items}
    halves = split or split_prompts(units, seed=seed)
    selection, report = set(halves.selection), set(halves.report)
    if selection & report:
        raise ValueError(f"selection and report halves share samples {sorted(selection & report, key=repr)[:5]}: "
                         "a best chosen and tested on the same samples is the winner's curse")
    sel: dict[tuple[str, int, str], list[float]] = {}
    for s in items:
        if s.condition != baseline and s.condition not in exclude and unit(s) in selection:
            sel.setdefault((s.condition, int(s.layer), s.position), []).append(float(s.value))
    if not sel:
        raise ValueError(f"no candidate besides {baseline!r} on the {len(selection)} selection samples")
    means = {k: float(np.mean(v)) for k, v in sel.items()}
    chosen = max(sorted(means), key=lambda k: means[k])
    cell = (chosen[1], chosen[2])
    if not any(s.condition == baseline and (int(s.layer), s.position) == cell for s in items):
        raise ValueError(f"baseline {baseline!r} has no rows at layer {cell[0]}, {cell[1]!r}")
    report_items = [s for s in items if unit(s) in report and (int(s.layer), s.position) == cell]
    relabelled = [Sample("pooled" if target is None else s.target, s.condition, s.layer, s.position,
                         unit(s), s.value) for s in report_items]
    table = _by_unit(relabelled)
    scope = target if target is not None else "pooled"
    contrast = Contrast("best", chosen[0], baseline,
                        f"is the best of {len(means)} conditions (chosen on other samples) above {baseline}?")
    pending = _gather(table, contrast, scope, [scope], cell)
    if target is None:
        pending.targets = tuple(sorted({s.target for s in report_items}))
    note = (f"chosen as the best of {len(means)} conditions on {len(selection)} selection samples, "
            f"tested on {len(report)} other (report) samples")
    (result,) = _finish([pending], measure=measure, margin=None, alpha=alpha, power=power, family="all", note=note)
    return BestOf(chosen, means, halves, result)


