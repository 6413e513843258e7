"""The answer a reader meets first: a few plain sentences and a table of the write-up's claims, made by
rules from the recorded verdicts, never stronger than the contrasts behind them.

Input: the results the findings script collects into ``docs/results/`` (a dict each): notebook 04's
comparisons (``compare-<model>-<preset>.json``: every pooled contrast with its estimate, CI, MDD and
Holm-corrected verdict), the power projections (``power-<model>.json``), notebooks 01 and 02's
headline numbers (``run-<model>.json``) and notebook 06's task-vector results
(``tasks-<model>-<preset>.json``). Each sentence answers one question of the write-up and ends with
the numbers that carry it: how many cells were called and how, the range of the estimates, and
the minimum detectable difference (MDD) where a contrast was not resolved. The words follow from
the verdicts by the rules in :func:`tally` and :func:`lead`: a set of contrasts none of which was
called says "not resolved at this sample size" and ranks nothing (the tests plant such a set).

Per model the ``full`` preset speaks where it was recorded (more targets, depths and samples), else
``default``; the sentence names which.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "CLAIMS",
    "MEASURE_TITLES",
    "QUESTIONS",
    "Answer",
    "Claim",
    "Tally",
    "answer",
    "classify",
    "from_summary",
    "lead",
    "primary",
    "tally",
]

MEASURE_WORDS = {
    "steerability": ("steerability", "nats per unit coefficient"),
    "matched": ("the shift at matched damage", "nats"),
    "score": ("the held-out AxBench score", "on 0-1"),
}
"""How a sentence names each measure of notebook 04, and the unit of its estimates."""

MEASURE_TITLES = {"steerability": "steerability", "matched": "shift at matched damage", "score": "AxBench score"}
"""How a figure's panel names each measure (shorter than a sentence's words)."""

QUESTIONS: dict[str, str] = {
    "bias": "Are residual-stream activations far from zero?",
    "lens": "Does mean-centring make a vector readable through the logit lens?",
    "centring": "Does removing the bias make a vector steer?",
    "counterbalancing": "Does counterbalancing add anything beyond removing the bias, and where?",
    "field": "How do the field's methods (PCA, probe) and prompting compare?",
    "tasks": "Does centring help task (function) vectors?",
    "limits": "What could this protocol not resolve, and what sample would?",
}
"""The questions the answer takes in turn, in the write-up's order."""


def classify(record: Mapping[str, Any]) -> str:
    """A contrast record's verdict as one word: ``above`` (a > b called), ``below`` (a < b called),
    ``equivalent``, ``unresolved`` or ``not run``.

    Example:
        >>> classify({"status": "run", "a": "x", "b": "y", "verdict": "x > y"})
        'above'
    """
    if record.get("status") != "run":
        return "not run"
    verdict = str(record.get("verdict", ""))
    if verdict.startswith("equivalent"):
        return "equivalent"
    if verdict.startswith(f"{record['a']} > {record['b']}"):
        return "above"
    if verdict.startswith(f"{record['a']} < {record['b']}"):
        return "below"
    return "unresolved"


@dataclass(frozen=True)
class Tally:
    """How one contrast fared over the cells (layer, position) and models it was run at."""

    a: str
    b: str
    measure: str
    counts: dict[str, int]
    estimates: tuple[float, ...]
    called: tuple[float, ...]
    mdds: tuple[float, ...]
    margin: float | None
    where_called: tuple[str, ...] = ()

    @property
    def n(self) -> int:
        return sum(self.counts.get(k, 0) for k in ("above", "below", "equivalent", "unresolved"))

    def count(self, kind: str) -> int:
        return self.counts.get(kind, 0)

    def phrase(self) -> str:
        """The tally in words, with its numbers (the rule every sentence uses).

        Example:
            >>> Tally("x", "y", "steerability", {"unresolved": 2}, (0.1, -0.05), (), (0.3, 0.4), None).phrase()
            'x vs y: not resolved at this sample size in any of 2 cells (estimates −0.05 to +0.1; MDD 0.3-0.4)'
        """
        unit = MEASURE_WORDS.get(self.measure, (self.measure, ""))[1]
        n, above, below, eq = self.n, self.count("above"), self.count("below"), self.count("equivalent")
        rest = n - above - below - eq
        mdd = f"MDD {_range(self.mdds, signed=False)}" if self.mdds else ""
        if n == 0:
            return f"{self.a} vs {self.b}: not run"
        if above == 0 and below == 0 and eq == 0:
            return (f"{self.a} vs {self.b}: not resolved at this sample size in any of {n} cells (estimates "
                    f"{_range(self.estimates)}{'; ' + mdd if mdd else ''})")
        parts = []
        if above:
            parts.append(f"{self.a} > {self.b} in {_share(above, n)} ({_range(self.called_above)} {unit})".rstrip())
        if below:
            parts.append(f"{self.a} < {self.b} in {_share(below, n)} ({_range(self.called_below)} {unit})".rstrip())
        if eq:
            parts.append(f"equivalent within ±{self.margin:g} in {_share(eq, n)}" if self.margin is not None else
                         f"equivalent in {_share(eq, n)}")
        if rest:
            parts.append(f"not resolved in {rest}" + (f" ({mdd})" if mdd else ""))
        return "; ".join(parts)

    @property
    def called_above(self) -> tuple[float, ...]:
        return tuple(x for x in self.called if x > 0)

    @property
    def called_below(self) -> tuple[float, ...]:
        return tuple(x for x in self.called if x < 0)


def _signed(x: float) -> str:
    return f"{x:+.2g}".replace("-", "−")


def _range(values: Sequence[float], *, signed: bool = True) -> str:
    if not values:
        return ""
    lo, hi = min(values), max(values)
    show = _signed if signed else (lambda x: f"{x:.2g}")
    return show(lo) if math.isclose(lo, hi, rel_tol=0.005, abs_tol=1e-9) else f"{show(lo)} to {show(hi)}" if signed \
        else f"{show(lo)}-{show(hi)}"


def _share(k: int, n: int) -> str:
    return f"all {n} cells" if k == n else f"{k} of {n} cells"


def tally(records: Iterable[Mapping[str, Any]], *, a: str, b: str, measure: str) -> Tally:
    """The pooled records of contrast ``a`` vs ``b`` on ``measure``, counted by verdict (:func:`classify`).

    ``where_called`` names each called cell (``"L15 all"``, with the model where records carry one).

    Example:
        >>> tally([{"status": "run", "a": "x", "b": "y", "measure": "steerability", "verdict": "x > y",
        ...         "estimate": 0.4, "mdd_corrected": 0.2, "layer": 15, "position": "all"}],
        ...       a="x", b="y", measure="steerability").count("above")
        1
    """
    counts: dict[str, int] = {}
    estimates, called, mdds, where = [], [], [], []
    margin = None
    for r in records:
        if r.get("a") != a or r.get("b") != b or r.get("measure", measure) != measure:
            continue
        if r.get("scope", "pooled") != "pooled":
            continue
        kind = classify(r)
        counts[kind] = counts.get(kind, 0) + 1
        if kind == "not run":
            continue
        estimates.append(float(r["estimate"]))
        margin = r.get("margin") if r.get("margin") is not None else margin
        if kind in ("above", "below"):
            called.append(float(r["estimate"]))
            where.append((f"{r['model']} " if r.get("model") else "") + f"L{r['layer']} {r['position']}")
        elif kind == "unresolved" and r.get("mdd_corrected") is not None:
            mdds.append(float(r["mdd_corrected"]))
    return Tally(a, b, measure, counts, tuple(estimates), tuple(called), tuple(mdds), margin, tuple(where))


def lead(tallies: Sequence[Tally]) -> str:
    """The one word a sentence opens with, from the tallies it rests on (one per model, say):
    ``"Yes"`` when every tally called ``a > b`` somewhere and none called ``a < b``; ``"No"`` when the
    reverse; ``"Not resolved at this sample size"`` when none called anything; else ``"Mixed"``
    (``"Sometimes"`` when calls are all one way but some tallies have none).

    Example:
        >>> lead([Tally("x", "y", "m", {"unresolved": 3}, (), (), (), None)])
        'Not resolved at this sample size'
    """
    above = [t.count("above") > 0 for t in tallies]
    below = [t.count("below") > 0 for t in tallies]
    if not any(above) and not any(below):
        return "Not resolved at this sample size"
    if any(above) and any(below):
        return "Mixed"
    if any(above):
        return "Yes" if all(above) else "Sometimes"
    return "No" if all(below) else "Sometimes not"


def primary(results: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """Per model, the comparison that speaks for it: its ``full`` preset where recorded, else ``default``,
    else any (models in name order).

    Example:
        >>> sorted(primary([{"model": "m", "preset": "default"}, {"model": "m", "preset": "full"}])["m"].values())
        ['full', 'm']
    """
    rank = {"full": 0, "default": 1}
    best: dict[str, Mapping[str, Any]] = {}
    for r in results:
        model = str(r["model"])
        if model not in best or rank.get(str(r["preset"]), 2) < rank.get(str(best[model]["preset"]), 2):
            best[model] = r
    return dict(sorted(best.items()))


def _records(result: Mapping[str, Any], measure: str) -> list[dict[str, Any]]:
    return [{**r, "model": result["model"]} for r in result.get("contrasts", {}).get(measure, [])]


@dataclass(frozen=True)
class Claim:
    """One claim of the write-up and what this suite found: ``supported``, ``not supported`` or
    ``not resolved``, the number that carries it and where it is shown."""

    claim: str
    verdict: str
    evidence: str
    where: str


@dataclass
class Answer:
    """The answer: one sentence per question (:data:`QUESTIONS`), the claims table and its sources."""

    sentences: dict[str, str] = field(default_factory=dict)
    claims: list[Claim] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    directions: dict[str, dict[str, dict[str, float | None]]] = field(default_factory=dict)
    """Per model and construction: ``anti_steerable_fraction`` (story pairs steered the wrong way) and
    ``cosine_with_mean_centred`` (does the direction that detects, the probe's, also point where
    centring does?)."""

    def markdown(self) -> list[str]:
        """The sentences as a numbered list and the claims as a table (the README's and the report's)."""
        lines = [f"{i}. **{QUESTIONS[k]}** {v}" for i, (k, v) in enumerate(self.sentences.items(), 1)]
        lines += ["", "| the write-up's claim | this suite's verdict | the number | where |", "|---|---|---|---|"]
        lines += [f"| {c.claim} | **{c.verdict}** | {c.evidence} | {c.where} |" for c in self.claims]
        return lines + self.details()

    def details(self) -> list[str]:
        """A folded table per construction: its anti-steerable share and its cosine with mean-centring."""
        if not self.directions:
            return []
        models = list(self.directions)
        names = sorted({n for d in self.directions.values() for n in d})

        def cell(m: str, n: str) -> str:
            d = self.directions[m].get(n) or {}
            anti, cos = d.get("anti_steerable_fraction"), d.get("cosine_with_mean_centred")
            return (f"{anti:.0%}" if anti is not None else "–") + " / " + (f"{cos:+.2f}" if cos is not None else "–")

        head = "| construction | " + " | ".join(f"{_short_name(m)}: wrong way / cos with centred" for m in models)
        return ["", ("<details><summary>Per construction: the share of held-out story pairs it steers the wrong way "
                "(negative slope; Tan et al. 2024), and its cosine with the mean-centred vector (the probe's: does "
                "the direction that detects also point where centring steers?)</summary>"), "", head + " |",
                "|---|" + "---|" * len(models), *[f"| {n} | " + " | ".join(cell(m, n) for m in models) + " |"
                                                   for n in names], "", "</details>"]

    def text(self) -> str:
        """The sentences and claims as plain text (the terminal's)."""
        out = [f"{i}. {QUESTIONS[k]} {v}" for i, (k, v) in enumerate(self.sentences.items(), 1)]
        out += ["", "The write-up's claims:"]
        out += [f"- {c.claim}: {c.verdict.upper()} ({c.evidence}; {c.where})" for c in self.claims]
        return "\n".join(out)


def _models(best: Mapping[str, Mapping[str, Any]]) -> str:
    return " and ".join(f"{_short_name(m)} (`{r['preset']}`)" for m, r in best.items())


def _short_name(model: str) -> str:
    return model.split("-")[0]


def _per_model(best: Mapping[str, Mapping[str, Any]], a: str, b: str, measure: str) -> dict[str, Tally]:
    return {m: tally(_records(r, measure), a=a, b=b, measure=measure) for m, r in best.items()}


def _every(best: Mapping[str, Mapping[str, Any]], a: str, b: str, measure: str) -> Tally:
    return tally([x for r in best.values() for x in _records(r, measure)], a=a, b=b, measure=measure)


def _short(best: Mapping[str, Mapping[str, Any]], a: str, b: str, measure: str) -> str:
    """``"9 of 12 cells (+0.04 to +0.15 nats)"``, the direction named where a call goes the other way, the
    MDD where none was called, and each model's share where the models differ."""
    every, per = _every(best, a, b, measure), _per_model(best, a, b, measure)
    unit = MEASURE_WORDS[measure][1]
    up, down = every.count("above"), every.count("below")
    if every.n == 0:
        return "not run"
    if up == 0 and down == 0:
        text = f"none of {every.n} cells (MDD {_range(every.mdds, signed=False)} {unit})"
    else:
        text = f"{_share(up, every.n).replace(' cells', '')} cells"
        if up:
            text += f" ({_range(every.called_above)} {unit})"
        if down:
            text += f", and the other way in {down} ({_range(every.called_below)})"
    shares = {m: f"{t.count('above')}/{t.n}" for m, t in per.items()}
    if len(set(shares.values())) > 1:
        text += " [" + ", ".join(f"{_short_name(m)} {v}" for m, v in shares.items()) + "]"
    return text


def _pooled_phrase(best: Mapping[str, Mapping[str, Any]], a: str, b: str, measure: str) -> tuple[str, list[Tally]]:
    """One phrase over every model's cells (with each model's share where they differ)."""
    return f"{MEASURE_WORDS[measure][0]}: {_short(best, a, b, measure)}", list(_per_model(best, a, b, measure).values())


def _bias_sentence(runs: Mapping[str, Mapping[str, Any]]) -> tuple[str, list[Claim]]:
    got = {m: r["bias"] for m, r in runs.items() if r.get("bias")}
    if not got:
        return "Not recorded: run `make run` and `scripts/findings.py collect-run` (notebook 01).", []
    far = all(float(b["ratio_mid"]) >= 0.5 for b in got.values())
    numbers = "; ".join(f"{m}: the norm of the mean is {float(b['ratio_mid']):.2f} of the typical norm at layer "
                        f"{b['mid_layer']}, and two unrelated activations have cosine {float(b['avg_pairwise_cos_mid']):.2f}"
                        for m, b in got.items())
    word = "Yes" if far else "Not on every model"
    verdict = "supported" if far else "not supported"
    return (f"{word}: at the middle layer most of an activation is the layer's mean ({numbers}).",
            [Claim("Activations are not zero-centred: each layer has a large mean", verdict, numbers,
                   "notebook 01, figure `01_norms`")])


def _lens_sentence(runs: Mapping[str, Mapping[str, Any]]) -> tuple[str, list[Claim]]:
    got = {m: r["interpret"] for m, r in runs.items() if r.get("interpret")}
    if not got:
        return "Not recorded: run `make run` and `scripts/findings.py collect-run` (notebook 02).", []
    alike = all(float(i["jaccard_raw"]) >= 0.5 for i in got.values())
    apart = all(float(i["jaccard_centred"]) <= float(i["jaccard_raw"]) / 2 for i in got.values())
    numbers = "; ".join(f"{m} layer {i['layer']}: top-k overlap between genres {float(i['jaccard_raw']):.2f} raw, "
                        f"{float(i['jaccard_centred']):.2f} centred; nearest-centroid accuracy "
                        f"{float(i['acc_raw_at_layer']):.2f} raw, {float(i['acc_centred_at_layer']):.2f} centred"
                        for m, i in got.items())
    word = "Yes" if alike and apart else "Not on every model"
    sentence = (f"{word}: raw genre vectors promote {'nearly ' if alike else ''}the same tokens, mean-centred ones "
                f"{'their own genre' if apart else 'not always different ones'} ({numbers}; a description, no test).")
    return sentence, [
        Claim("A raw vector is mostly the bias, so raw vectors read alike through the lens",
              "supported" if alike else "not supported", numbers, "notebook 02, table of top tokens"),
        Claim("Mean-centred vectors read as their genre", "supported" if apart else "not supported", numbers,
              "notebook 02, figure `02_topk_jaccard`")]


def _contrast_claim(claim: str, best: Mapping[str, Mapping[str, Any]], a: str, b: str, measure: str,
                    where: str) -> Claim:
    phrase, per = _pooled_phrase(best, a, b, measure)
    word = lead(per)
    verdict = {"Yes": "supported", "No": "not supported", "Not resolved at this sample size": "not resolved"}.get(
        word, "supported in part" if word == "Sometimes" else "mixed")
    equivalent = all(t.count("equivalent") == t.n and t.n for t in per)
    if equivalent:
        verdict = "not supported (equivalent)"
    return Claim(claim, verdict, phrase, where)


def answer(compares: Sequence[Mapping[str, Any]], *, runs: Mapping[str, Mapping[str, Any]] | None = None,
           powers: Mapping[str, Mapping[str, Any]] | None = None,
           tasks: Sequence[str] | None = None) -> Answer:
    """The answer from the recorded results (module docstring).

    Args:
        compares: notebook 04's recorded comparisons (any models and presets; :func:`primary` picks).
        runs: per model, notebook 01's ``bias`` and notebook 02's ``interpret`` headline numbers.
        powers: per model, the power projection (``rows`` of each pooled contrast's MDD per preset).
        tasks: the task-vector sentence(s), made from notebook 06's verdicts by
            :func:`steerlab.study.tasks.task_answer`; ``None``: not recorded.

    Example:
        >>> print(answer([json.loads(p.read_text()) for p in Path("docs/results").glob("compare-*.json")]).text())
    """
    out = Answer()
    best = primary(compares)
    runs = runs or {}
    s, claims = _bias_sentence(runs)
    out.sentences["bias"] = s
    out.claims += claims
    s, claims = _lens_sentence(runs)
    out.sentences["lens"] = s
    out.claims += claims
    if not best:
        for key in ("centring", "counterbalancing", "field", "limits"):
            out.sentences[key] = "Not recorded: run notebook 04 and `scripts/findings.py collect`."
        return out
    models = _models(best)
    measures = list(MEASURE_WORDS)

    def across(a: str, b: str) -> str:
        return "; ".join(f"{_short(best, a, b, m)} on {MEASURE_WORDS[m][0]}" for m in measures)

    # (3) centring: (b) on every measure, (c) as an equivalence.
    main = lead(list(_per_model(best, "mean_centred", "raw", "steerability").values()))
    c_all = [_every(best, "bias_ablated", "mean_centred", m) for m in measures]
    eq, n = sum(t.count("equivalent") for t in c_all), sum(t.n for t in c_all)
    out.sentences["centring"] = (
        f"{main}, on {models}. Mean-centred beats raw in {across('mean_centred', 'raw')}. Projecting the bias "
        f"direction out instead of subtracting the whole mean is equivalent to it in {eq} of {n} (measure, cell) pairs.")
    # (4) counterbalancing beyond the bias: (d) and (e).
    tallies = [t for a in ("isolated", "counterbalanced") for m in measures
               for t in _per_model(best, a, "mean_centred", m).values()]
    wins = [w for a in ("isolated", "counterbalanced") for m in measures
            for w in _every(best, a, "mean_centred", m).where_called]
    at_all = sum(1 for w in wins if w.endswith(" all"))
    where = (f" {at_all} of the {len(wins)} called cells steer every token (position `all`)." if wins else "")
    out.sentences["counterbalancing"] = (
        f"{lead(tallies)}. Against mean-centring alone, isolating (target − every genre) wins in "
        f"{across('isolated', 'mean_centred')}; counterbalancing (target − its counter genre) wins in "
        f"{across('counterbalanced', 'mean_centred')}.{where}"
        + (" Per target the winner can differ from the pooled one (figure `answer_targets`)."
           if any(res.get("per_target") for res in best.values()) else ""))
    # (5) the field's methods and prompting: (f) for pca_diff, pca_center, probe; (g) on the score.
    field_parts = [f"{name} {_short(best, name, 'random', 'score')}" for name in ("pca_diff", "pca_center", "probe")]
    asked = [f"{name} {_short(best, name, 'prompting', 'score')}"
             for name in ("mean_centred", "isolated", "counterbalanced", "prompting_steered")
             if _every(best, name, "prompting", "score").n]
    asked_names = sorted({str(r["a"]) for res in best.values() for r in _records(res, "score")
                                  if r.get("b") == "prompting"})
    below = [name for name in asked_names if _every(best, name, "prompting", "score").count("below")]
    out.sentences["field"] = (
        "On the held-out AxBench score, above a random direction: " + "; ".join(field_parts)
        + ". Above asking the model (prompting, no vector): " + ("; ".join(asked) if asked else "not measured")
        + (f". Called below prompting somewhere: {', '.join(below)}." if below else
           ". No construction is called below prompting in any cell."))
    # (6) tasks
    out.sentences["tasks"] = " ".join(tasks) if tasks else (
        "Not recorded: run notebook 06 on both models and `scripts/tasks_findings.py collect RUN_DIR`.")
    # (7) limits: the unresolved (d), (e) and (a) contrasts, and what each preset's MDD is.
    out.sentences["limits"] = _limits(best, powers or {})
    out.claims += [
        _contrast_claim("Removing the bias is part of why counterbalancing works: a mean-centred vector steers more "
                        "than a raw one", best, "mean_centred", "raw", "steerability",
                        "notebook 04, contrast (b); figure `answer`"),
        _contrast_claim("Isolating one feature (target − every genre) beats centring alone", best, "isolated",
                        "mean_centred", "steerability", "notebook 04, contrast (d); figure `answer`"),
        _contrast_claim("A counterbalanced pair (more target, less counter) beats centring alone", best,
                        "counterbalanced", "mean_centred", "steerability", "notebook 04, contrast (e); figure `answer`"),
        *[_contrast_claim(f"Steering with a{'n' if name[0] in 'aeiou' else ''} {name.replace('_', '-')} vector works "
                          "(above a random direction)", best, name, "random", "steerability", "notebook 04, contrast (f)")
          for name in ("mean_centred", "isolated", "counterbalanced")],
        _contrast_claim("Capabilities are better preserved by counterbalanced additions: more steering at equal damage "
                        "than centring alone", best, "counterbalanced", "mean_centred", "matched",
                        "notebook 04, contrast (e) at matched damage"),
    ]
    out.sources = [f"compare-{m}-{r['preset']}" for m, r in best.items()]
    out.directions = {m: dict(r["directions"]) for m, r in best.items() if isinstance(r.get("directions"), Mapping)}
    return out


def _limits(best: Mapping[str, Mapping[str, Any]], powers: Mapping[str, Mapping[str, Any]]) -> str:
    """What the recorded presets could not tell apart: (d) and (e), per measure, with the MDD of the
    unresolved cells and the pooled pairs the power projection asks for to call the median estimate."""
    parts = []
    for measure in MEASURE_WORDS:
        for a in ("isolated", "counterbalanced"):
            every = _every(best, a, "mean_centred", measure)
            open_cells = every.count("unresolved")
            if not open_cells:
                continue
            need = sorted(int(row["presets"]["full"]["n_needed"]) for p in powers.values() for row in p.get("rows", [])
                          if row["measure"] == measure and row["name"].endswith(f"{a} vs mean_centred")
                          and (row.get("presets", {}).get("full") or {}).get("n_needed"))
            needed = f"; ~{need[len(need) // 2]} pairs" if need else ""
            parts.append(f"{a} on {MEASURE_WORDS[measure][0]} in {open_cells} cells (MDD "
                         f"{_range(every.mdds, signed=False)} {MEASURE_WORDS[measure][1]}{needed})")
    if not parts:
        return "Every (d) and (e) contrast recorded was called."
    return ("Whether the second subtraction helps is open where it was not resolved: " + "; ".join(parts)
            + ". A difference smaller than its MDD is not ruled out; \"pairs\" is how many pooled story pairs or "
              "prompts the power projection asks for to call the median estimate seen. Every contrast and the "
              "projection per preset: `docs/FINDINGS.md`.")


def from_summary(summary: Mapping[str, Any]) -> Answer | None:
    """The answer of one run folder's ``summary.json`` (notebook 04's contrasts, 01's and 02's headlines, 06's
    task sentence where recorded); ``None`` when notebook 04 did not record contrasts.

    Example:
        >>> print(from_summary(load_summary("runs/latest")).text())
    """
    compare = summary.get("compare")
    if not isinstance(compare, Mapping) or not isinstance(compare.get("contrasts"), Mapping):
        return None
    model = str(compare.get("model", "model"))
    result = {"model": model, "preset": compare.get("preset", "this run"),
              "contrasts": {m: list(block.get("results") or []) for m, block in compare["contrasts"].items()
                            if isinstance(block, Mapping)}}
    runs = {model: {key: summary[name]["headline"] for key, name in (("bias", "bias"), ("interpret", "interpret"))
                    if isinstance(summary.get(name), Mapping) and isinstance(summary[name].get("headline"), Mapping)}}
    tasks = summary.get("tasks")
    task_lines = None
    if isinstance(tasks, Mapping) and isinstance(tasks.get("contrasts"), list):
        from .tasks import task_answer  # torch and the model code: only for a run that recorded notebook 06

        task_lines = task_answer([tasks])
    return answer([result], runs=runs, tasks=task_lines)


CLAIMS = ("bias", "lens", "centring", "isolating", "second feature", "steering works", "capabilities preserved")
"""The write-up's claims the table checks, in its order."""
