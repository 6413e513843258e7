"""The numbers beside the steering widget's text: the measures table and the lens of the added vector.

Every number is the study's or the library's (:func:`steerlab.study.vocab.vocab_rate`, the concept
judge :class:`steerlab.study.judge.ConceptJudge`, :func:`steerlab.repetition.distinct_n`, the
perplexities the controller measured with :func:`steerlab.metrics.completion_perplexity`, the
logit lens); this module only chooses what to show for each side and hands it to the view
(:mod:`steerlab.lab.widget_view`). The judge trains once, in the background, on first use.
"""

from __future__ import annotations

import html
import math
import threading
from collections.abc import Callable

import torch

from ..lens import lens_logits
from ..models import Model
from ..repetition import distinct_n
from ..sets import UNIT_LABEL
from ..study.judge import ConceptJudge, JudgeError, default_classes
from ..study.vocab import vocab_rate
from .tokens_view import readable_token
from .widget_state import Settings
from .widget_view import MetricRow, Side, fmt, lens_html, metrics_html

__all__ = ["Judge", "lens_view", "numbers_view"]


def _mean(values: list[float]) -> float:
    real = [v for v in values if not math.isnan(v)]
    return sum(real) / len(real) if real else float("nan")


class Judge:
    """The concept judge, trained once on first use (in a thread of its own when ``background``);
    ``on_ready`` is called when it is (or when it failed, with :attr:`note` saying why)."""

    def __init__(self, *, enabled: bool = True, background: bool = True,
                 on_ready: Callable[[], None] | None = None) -> None:
        self.enabled, self.background, self.on_ready = enabled, background, on_ready
        self.judge: ConceptJudge | None = None
        self.note = ""
        self.classes = set(default_classes())
        self._started = False

    def start(self) -> None:
        """Train the judge if it has not been (so the first completion never waits ~10 s for it)."""
        if not self.enabled or self._started:
            return
        self._started = True
        if self.background:
            threading.Thread(target=self._train, name="steerlab-judge", daemon=True).start()
        else:
            self._train()

    def _train(self) -> None:
        try:
            self.judge = ConceptJudge.train()
        except Exception as err:  # noqa: BLE001 - shown beside the numbers
            self.note = f"{type(err).__name__}: {err}"
        if self.on_ready is not None:
            self.on_ready()


def lens_view(model: Model, signed: torch.Tensor, coefficient: float, operator: str, k: int = 10) -> str:
    """The lens of the vector as added (or of the ablated direction): its top and bottom tokens."""
    logits = lens_logits(model, signed)  # [vocab]
    top, bottom = logits.topk(k), (-logits).topk(k)
    tok = model.tokenizer

    def pairs(values: torch.Tensor, ids: torch.Tensor, sign: float) -> list[tuple[str, float]]:
        return [(readable_token(tok.decode([int(i)])), sign * float(x)) for x, i in zip(values, ids)]

    what = "the ablated direction" if operator == "ablate" else f"the added vector ({'+' if coefficient >= 0 else '−'}v)"
    return lens_html(pairs(top.values, top.indices, 1.0), pairs(bottom.values, bottom.indices, -1.0), what)


def numbers_view(unsteered: Side, steered: Side, s: Settings, *, vocab: list[str] | None, judge: Judge, size: float,
                 live: dict[str, float], state: str, generation: int) -> str:
    """The measures table for both sides, greyed where a side's value is not final, with the added norm."""
    target = s.target.strip()
    # A side is pending while its completion streams in or its perplexity is still to come.
    pending = frozenset(name for name, side in (("unsteered", unsteered), ("steered", steered))
                        if side.state == "live" or (side.texts and not side.perplexity))
    judged = judge.enabled and target in judge.classes
    notes: list[str] = []

    def concept(side: Side) -> str:
        if not judged or not side.texts or judge.judge is None:
            return "…" if judged and side.texts and not judge.note else "—"
        try:
            return fmt(_mean(judge.judge.concept_score(side.texts, target)))
        except JudgeError as err:
            notes.append(str(err))
            return "—"

    def each(side: Side, value: Callable[[Side], float], spec: str = ".3f") -> str:
        return fmt(value(side), spec) if side.texts else "—"

    concepts = (concept(unsteered), concept(steered))
    reason = notes[0] if notes else judge.note
    concept_label = ("concept score (judge off)" if not judge.enabled else
                     "concept score (no judge class for this target)" if not judged else
                     f"concept score: judge P('{html.escape(target)}') (held-out accuracy "
                     f"{judge.judge.heldout_accuracy:.2f})" if judge.judge is not None and not notes else
                     f"concept score (judge unavailable: {html.escape(reason)})" if reason else
                     "concept score (training the judge…)")
    def both(value: Callable[[Side], str]) -> tuple[str, str]:
        return value(unsteered), value(steered)

    def rate(side: Side) -> str:
        return "—" if vocab is None else each(side, lambda y: _mean([vocab_rate(t, vocab) for t in y.texts]))

    def perplexity(side: Side) -> str:
        return fmt(_mean(side.perplexity), ".2f") if side.perplexity else ("…" if side.texts else "—")

    rows = [
        MetricRow(f"'{html.escape(target)}' vocabulary rate" if vocab is not None else
                  "vocabulary rate (no vocabulary for this target)", *both(rate), pending),
        MetricRow(concept_label, *concepts, pending),
        MetricRow("perplexity under the unsteered model", *both(perplexity), pending),
        MetricRow("distinct-2 (share of distinct token pairs; low: a loop)",
                  *both(lambda x: each(x, lambda y: _mean([distinct_n(r, 2) for r in y.ids]))), pending),
        MetricRow("tokens (mean per sample)",
                  *both(lambda x: each(x, lambda y: _mean([float(len(r)) for r in y.ids]), ".0f")), pending)]
    ablate = s.operator == "ablate"
    coefficient = abs(float(s.coefficient or 0.0))
    norm = 0.0 if ablate else coefficient * size
    footer = (f"added vector norm {norm:.1f} = {coefficient if norm else 0:.2f} × {UNIT_LABEL} {size:.1f} at layer "
              f"{s.layer}{' (ablate adds nothing)' if ablate else ''}")
    timing = "" if "first_tokens_s" not in live else f"first tokens after {live['first_tokens_s']:.2f} s" + (
        f", all after {live['completion_s']:.2f} s" if "completion_s" in live else "")
    return metrics_html(rows, state=state, generation=generation, footer=footer, timing=timing)
