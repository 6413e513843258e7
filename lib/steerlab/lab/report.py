"""What notebooks hand back, and the page a run is read from.

- ``summary.json`` holds one key per notebook (``bias``, ``interpret``, ``steer``,
  ``compare``); each notebook replaces only its own key, atomically.
- :func:`save_figure` writes each figure as plotly JSON (what the report draws) and as a
  small standalone HTML file that loads the run folder's one shared ``plotly.min.js``
  (:mod:`steerlab.lab.plotlyjs`), and notes the order figures were saved in
  (``figures/_order.txt``), which is the order the notebooks show them.
- :data:`HEADLINES` says what every headline number means and in what units;
  :func:`headlines` names each the same way for the printed summary and the report.
- the run's page, ``index.html``, is :mod:`steerlab.lab.page` (it reads what this module
  records; this module never imports it).
- :func:`html_table` and :func:`markdown_table` come from :mod:`steerlab.lab.tables`.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..store import atomic_write_text
from ..study.schema import ParameterError
from .plotlyjs import plotlyjs_tag, write_plotlyjs
from .tables import html_table, markdown_table

__all__ = [
    "FIGURE_ORDER",
    "HEADLINES",
    "SUMMARY_KEYS",
    "WIDGET_NOTE",
    "Headline",
    "ParameterError",
    "figure_order",
    "headlines",
    "html_table",
    "load_summary",
    "markdown_table",
    "record",
    "relative_text",
    "save_figure",
    "to_jsonable",
    "widget_with_note",
]


def to_jsonable(obj: Any) -> Any:
    """Tensors and numpy values to lists and floats; NaN and inf to ``None``."""
    if isinstance(obj, torch.Tensor):
        return to_jsonable(obj.detach().cpu().tolist())
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def load_summary(output_dir: str | Path) -> dict[str, Any]:
    """The ``summary.json`` of a run folder (empty if none yet)."""
    path = Path(output_dir) / "summary.json"
    if not path.exists():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


def record(output_dir: str | Path, key: str, values: Mapping[str, Any]) -> Path:
    """Replace ``key`` in ``output_dir/summary.json`` with ``values`` (atomically).

    Example:
        >>> record(output_dir, "bias", {"avg_cos_to_mean": stats.avg_cos_to_mean})
    """
    path = Path(output_dir) / "summary.json"
    summary = load_summary(output_dir)
    summary[key] = to_jsonable(dict(values))
    atomic_write_text(path, json.dumps(summary, indent=1, allow_nan=False))
    return path


FIGURE_ORDER = "_order.txt"
"""In ``figures/``: the names of the figures, one a line, in the order they were saved (first save wins the
place). Plain text, so ``figures/*.json`` stays the figures alone."""


def figure_order(output_dir: str | Path) -> list[str]:
    """The names of a run's figures in the order the notebooks saved (and showed) them.

    Example:
        >>> figure_order("runs/latest")[:2]
        ['01_bias_norms', '01_bias_cosines']
    """
    path = Path(output_dir) / "figures" / FIGURE_ORDER
    if not path.exists():
        return []
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def save_figure(fig: Any, output_dir: str | Path, name: str) -> Path:
    """Write a plotly figure to ``output_dir/figures/name.html`` (and ``name.json`` for the report).

    The HTML loads the run folder's shared ``plotly.min.js`` (written once, beside
    ``figures/``), so it renders offline inside its run folder at a few hundred kB instead
    of 4.8 MB; to send one figure alone, ``fig.write_html(path)`` embeds plotly.js. The
    figure's place in ``figures/_order.txt`` is the order of the calls, so the report shows
    figures as the notebooks do.

    Example:
        >>> save_figure(fig, output_dir, "01_bias_norms")
    """
    if not name or name.startswith(("_", ".")) or "/" in name:
        raise ValueError(f"figure name {name!r}: expected a file stem not starting with '_' or '.', such as "
                         "'01_bias_norms'")
    folder = Path(output_dir) / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    write_plotlyjs(output_dir)
    path = folder / f"{name}.html"
    page = fig.to_html(include_plotlyjs=False, include_mathjax=False, full_html=True)
    page = page.replace("<head>", f"<head>{plotlyjs_tag('..')}", 1)
    atomic_write_text(path, page)
    atomic_write_text(folder / f"{name}.json", fig.to_json())
    order = figure_order(output_dir)
    if name not in order:
        atomic_write_text(folder / FIGURE_ORDER, "".join(f"{n}\n" for n in [*order, name]))
    return path


def relative_text(text: str, run_dir: str | Path, aliases: Sequence[str | Path] = ()) -> str:
    """``text`` with this machine's absolute paths made relative: the run folder becomes ``.``
    (``./figures/x.json``), the repository ``<repo>``, the Python environment ``<venv>``, the
    home folder ``~``.

    Args:
        aliases: other absolute paths of the same run folder, also shown as ``.`` (where it was
            written before it was moved or copied: the notebooks' recorded ``output_dir``).

    Example:
        >>> relative_text("/home/me/steerlab/runs/20261203-120000/figures", "/home/me/steerlab/runs/20261203-120000")
        './figures'
    """
    run_dir = Path(run_dir)
    roots: list[tuple[str, str]] = [(str(a), ".") for a in aliases if Path(a).is_absolute()]
    for path, name in ((run_dir.resolve(), "."), (run_dir.absolute(), "."),
                       (Path(__file__).resolve().parents[3], "<repo>"), (Path(sys.prefix), "<venv>"),
                       (Path(sys.base_prefix), "<python>"), (Path.home(), "~")):
        if str(path) not in ("/", "."):
            roots.append((str(path), name))
    for root, name in sorted(set(roots), key=lambda r: -len(r[0])):
        text = re.sub(re.escape(root) + r"(?![\w.-])", name, text)
    return text


# --- headline numbers: what each means -------------------------------------------------

SUMMARY_KEYS: dict[str, str] = {"bias": "01_bias", "interpret": "02_interpret", "steer": "03_steer",
                                "compare": "04_compare_methods", "concept": "05_your_concept",
                                "tasks": "06_task_vectors"}
"""``summary.json`` key -> the notebook (file stem) that records it."""

# (summary key, headline key) -> (name template, meaning and units). Templates read the
# notebook's headline and its summary entry: {mid_layer}, {top_k}, {threshold}, ...
HEADLINES: dict[tuple[str, str], tuple[str, str]] = {
    ("bias", "mid_layer"): ("middle layer measured", "residual layer the next numbers are read at; 0 = the embeddings"),
    ("bias", "ratio_mid"): ("norm-of-mean ratio at layer {mid_layer}",
                            ("norm of the layer mean / mean activation norm; 1 = all activations identical, "
                            "0 = centred on the origin")),
    ("bias", "avg_pairwise_cos_mid"): ("average cosine between two activations at layer {mid_layer}",
                                       ("cosine similarity of different tokens' activations, averaged; "
                                       "0 = unrelated directions, 1 = the same direction")),
    ("bias", "centred_max_ratio"): ("largest norm-of-mean ratio after mean-centring, any layer",
                                    "should be about 0: centring subtracts the layer mean"),
    ("interpret", "layer"): ("lens layer", "residual layer of the top-k tables and heatmaps"),
    ("interpret", "jaccard_raw"): ("top-{top_k} token overlap across genres, raw vectors, layer {layer}",
                                   ("mean pairwise Jaccard of the genres' top-k token sets; "
                                   "1 = every genre reads as the same tokens")),
    ("interpret", "jaccard_centred"): ("top-{top_k} token overlap across genres, mean-centred vectors, layer {layer}",
                                       ("mean pairwise Jaccard of the genres' top-k token sets; "
                                       "lower than raw = centring separates the genres")),
    ("interpret", "acc_raw_at_layer"): ("held-out genre accuracy, raw, layer {layer}",
                                        ("fraction of {heldout_count} held-out stories whose nearest genre vector "
                                        "(cosine) is their own; chance = 1/{n_genres}")),
    ("interpret", "acc_centred_at_layer"): ("held-out genre accuracy, mean-centred, layer {layer}",
                                            ("as raw, with the general-text mean subtracted from stories and "
                                            "vectors; chance = 1/{n_genres}")),
    ("steer", "*.verdict"): ("verdict, example {example} towards {target}, ×{coefficient} at {position}, layer {layer}",
                             ("read from the 95% CIs of the judge's P(target) change and of the steerability: "
                              "'moves' when one excludes 0, 'not resolved' when every one includes it")),
    ("steer", "*.concept_delta"): ("P({target}) change under the judge, example {example}, ×{coefficient} at {position}",
                                   ("the judge's (not the steered model's) probability of the target class, steered "
                                    "minus unsteered completions paired by sample, 0 to 1; 95% CI {ci}")),
    ("steer", "*.steerability"): ("steerability towards {target}, example {example}, at {position}, layer {layer}",
                                  ("mean slope of log p(target continuation) − log p(other) over held-out story "
                                   "pairs, nats/token per × {unit} (notebook 04's grid); 95% CI {ci}")),
    ("steer", "*"): ("vocabulary-rate change, example {key}, ×{coefficient} at {position}, layer {layer}",
                     ("a run recorded before notebook 03 used the judge: target-vocabulary rate of steered minus "
                      "unsteered completions, as a fraction of words; 0 = no target words gained, which text "
                      "can show while it moves")),
    ("tasks", "kept"): ("tasks the model does few-shot",
                        ("of the {n_tasks} tasks measured (data/tasks), those whose few-shot accuracy reaches "
                         "{few_shot_threshold}; only these are steered")),
    ("tasks", "few_shot"): ("few-shot accuracy, pooled over the kept tasks",
                            ("first-token accuracy with {config[shots]} demonstrations on the report half, 0 to 1: "
                             "what a task vector added to the zero-shot prompt is measured against")),
    ("tasks", "centred_minus_raw"): ("centred − raw task vector, zero-shot accuracy, layer {headline_layer}",
                                     ("contrast (a), pooled over the kept tasks, paired by held-out pair, each "
                                      "vector at its setting chosen on the selection half; 95% CI {ci}; "
                                      "{headline_verdict}")),
    ("compare", "best_condition"): ("best steered condition by held-out AxBench score, pooled over targets",
                                    ("chosen by its mean score on the selection half of the samples (not on those it is "
                                     "reported on); whether it beats prompting is contrast (g), not this ranking")),
    ("compare", "best_score"): ("its held-out AxBench score",
                                ("harmonic mean of concept, fluency and relevance per completion, 0 to 1 (0 if any is 0); "
                                 "95% CI {best_ci}")),
    ("compare", "prompting_score"): ("prompting's held-out AxBench score (no vector: the model is asked)",
                                     ("the baseline beside the best condition, same prompts and scale; 95% CI "
                                      "{prompting_ci}")),
    ("compare", "judge_accuracy"): ("concept judge's held-out accuracy",
                                    "fraction of held-out texts the judge (not the steered model) classifies correctly"),
}


@dataclass(frozen=True)
class Headline:
    """One headline number with its name and meaning."""

    summary_key: str
    key: str
    name: str
    value: Any
    meaning: str

    @property
    def shown(self) -> str:
        """The value as text (floats with up to 4 significant digits; small ones in e notation)."""
        v = self.value
        if isinstance(v, float):
            return f"{v:.2e}" if v != 0 and abs(v) < 1e-3 else f"{v:.4g}"
        return "n/a" if v is None else str(v)

    def line(self) -> str:
        """``name: value (meaning)``, as the printed run summary shows it."""
        return f"{self.name}: {self.shown} ({self.meaning})"


def _ci_text(ci: Any) -> str:
    """A recorded CI as ``[lo, hi]``, or the recorded reason there is none."""
    if isinstance(ci, (list, tuple)) and len(ci) == 2:
        return f"[{ci[0]:.4g}, {ci[1]:.4g}]"
    return str(ci) if ci else "not recorded"


def _fields(key: str, entry: Mapping[str, Any], headline: Mapping[str, Any]) -> dict[str, Any]:
    example = key.rsplit(".", 1)[0]  # per-example keys (03): "<example>.<quantity>"
    examples = entry.get("examples")
    recorded = examples.get(example) if isinstance(examples, Mapping) else None
    per_key = {"example": example, "target": (recorded or {}).get("target", "the target"),
               "ci": _ci_text((entry.get("headline_ci") or {}).get(key))}
    positions = entry.get("positions") or ["?"]
    config = entry.get("config") or {}
    pooled = (entry.get("summary") or {}).get("pooled") or []
    chosen = entry.get("best_chosen")  # (construction, layer, position) chosen on the selection half
    best = next((r for r in pooled if isinstance(r, Mapping) and r.get("ci") and chosen is not None
                 and [r.get("condition", r.get("method")), r.get("layer"), r.get("position")] == list(chosen)), None)
    best_ci = f"[{best['ci'][0]:.3f}, {best['ci'][1]:.3f}]" if best else "not recorded"
    asked = next((r for r in pooled if isinstance(r, Mapping) and r.get("condition") == "prompting" and r.get("ci")),
                 None)
    prompting_ci = f"[{asked['ci'][0]:.3f}, {asked['ci'][1]:.3f}]" if asked else "not recorded"
    return {**per_key, **entry, **headline, "position": positions[-1], "threshold": config.get("damage_threshold", "?"),
            "n_genres": len(entry.get("genres") or []) or "?", "heldout_count": entry.get("heldout_count", "?"),
            "best_ci": best_ci, "prompting_ci": prompting_ci, "unit": recorded_unit(entry)}


def recorded_unit(entry: Mapping[str, Any]) -> str:
    """The coefficient unit a notebook's entry recorded (``"centred norm"``); an entry written
    before steerlab recorded it used the typical norm, steerlab's unit until 2026-12-04."""
    unit = entry.get("coefficient_unit")
    return unit if isinstance(unit, str) else "typical norm"


def headlines(summary: Mapping[str, Any]) -> list[Headline]:
    """Every headline number of a run, named with its meaning and units (:data:`HEADLINES`).

    A key without a description is shown with "no description" (never dropped).

    Example:
        >>> [h.line() for h in headlines(load_summary("runs/latest"))][:1]
        ['norm-of-mean ratio at layer 15: 0.71 (norm of the layer mean / mean activation norm; ...)']
    """
    out = []
    for skey, entry in summary.items():
        if not isinstance(entry, Mapping) or not isinstance(entry.get("headline"), Mapping):
            continue
        shown = entry["headline"]
        for key, value in shown.items():
            name, meaning = (HEADLINES.get((skey, key)) or HEADLINES.get((skey, "*." + key.rsplit(".", 1)[-1]))
                             or HEADLINES.get((skey, "*")) or (key, "no description"))
            ctx = _fields(key, entry, shown)
            try:
                name, meaning = name.format(key=key, **ctx), meaning.format(key=key, **ctx)
            except (KeyError, IndexError, ValueError):
                pass  # a template field the entry lacks: the template text is still a correct name
            out.append(Headline(skey, key, name, value, meaning))
    return out


# --- the run page ------------------------------------------------------------------------

WIDGET_NOTE = ("The live widget needs a running kernel: open this notebook in JupyterLab (<code>make lab</code>) "
               "and run it. A saved or exported copy cannot generate.")


def widget_with_note(ui: Any) -> tuple[Any, Any]:
    """A static note and the widget, to ``display(*widget_with_note(ui))``.

    The note is plain HTML, so a saved notebook and its HTML export show it; the widget
    carries a style that hides the note, so a live widget (rendered by a running kernel's
    widget manager) replaces the note instead of sitting under it.
    """
    import ipywidgets as w
    from IPython.display import HTML

    note = HTML(f'<div class="steerlab-static-note" style="padding:8px;border-left:4px solid #0072B2;'
                f'background:#f3f7fb">{WIDGET_NOTE}</div>')
    hide = w.HTML("<style>.steerlab-static-note { display: none; }</style>")
    return note, w.VBox([hide, ui])
