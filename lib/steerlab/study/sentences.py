"""The contrasts in words: one sentence per result, made from that result only (its estimate, CI,
corrected p and corrected verdict, or why it was not run).

The answer a reader meets first (a few sentences over every result) is
:mod:`steerlab.study.answer`; this module writes the full record, one line per contrast.
"""

from __future__ import annotations

from collections.abc import Iterable

from .contrasts import ContrastResult

__all__ = ["conclusions", "signed"]


def signed(x: float) -> str:
    return f"{x:+.3g}".replace("-", "−")


def _p(p: float) -> str:
    return "< 0.0001" if p < 1e-4 else f"= {p:.2g}"


def conclusions(results: Iterable[ContrastResult]) -> list[str]:
    """One sentence per result, from that result only: the contrast, where, the estimate with
    its CI, the corrected p and the corrected verdict (or why it was not run).

    Example:
        >>> conclusions(run_contrasts(samples))[0]  # doctest: +SKIP
        '(a) raw vs random, fantasy, layer 15, all_prompt (steerability): raw − random = +0.0412, 95% CI
        [−0.0609, +0.143] (paired t, n = 24); Holm p = 1 over 30 tests: not resolved at this sample size (MDD 0.21).'
    """
    out = []
    for r in results:
        where = f"{r.name}, {r.scope}" + (f" ({', '.join(r.targets)})" if r.scope == "pooled" and r.targets else "")
        where += f", layer {r.layer}, {r.position} ({r.measure})"
        if r.status != "run":
            out.append(f"{where}: not run ({r.reason}).")
            continue
        level = f"{round(100 * (1 - r.alpha))}%"
        ci = f"{level} CI [{signed(r.ci[0])}, {signed(r.ci[1])}]"
        text = (f"{where}: {r.a} − {r.b} = {signed(r.estimate)}, {ci} ({r.ci_method}, n = {r.n}); "
                f"Holm p {_p(r.p_holm)} over {r.family_size} tests")
        if r.p_equivalence_holm is not None and r.margin is not None:
            text += f"; equivalence (TOST, ±{r.margin:g}) Holm p {_p(r.p_equivalence_holm)}"
        if r.note:
            text += f"; {r.note}"
        out.append(f"{text}: {r.verdict}.")
    return out
