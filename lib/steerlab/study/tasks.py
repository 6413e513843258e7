"""Task vectors (function vectors) and the centring question on them (notebook 06, issue 37).

Jorgensen et al. (arXiv 2312.03813) made their headline claim for mean-centring on function
vectors: GPT-J, layer 15, zero-shot accuracy with the vector added 45.7 % centred against
29.2 % uncentred; the authors' own code repository has Llama-2-7B runs that reverse it. This
module asks the same question of the embedded models, through pre-registered contrasts.

The pipeline, one function a step:

1. :func:`measure_ability`: each task's zero-shot, few-shot and shuffled-label few-shot accuracy
   on its held-out pairs; a task is kept only if its few-shot accuracy reaches
   ``min_few_shot_accuracy`` (a vector cannot recover an ability the model lacks).
2. :func:`task_vectors`: per kept task, through the registry (:data:`steerlab.constructions.TASK_CONSTRUCTIONS`),
   from ``vector_prompts`` few-shot prompts of train queries: ``task_raw`` (the mean last-token
   activation, the paper's "mean activation"), ``task_centred`` (less the general-text mean at the
   last token of texts cut to the prompts' median length), ``task_vs_shuffled`` (less the same prompts
   with shuffled labels), ``task_affine`` (the affine edit about a reference point: the general-text
   mean, or the shuffled prompts' mean) and ``shuffled_control`` (``task_centred`` of the shuffled-label
   prompts: the format and the words without the mapping).
3. :func:`sweep`: zero-shot prompts of the held-out pairs, each condition added at the last prompt
   token (``last_prompt``) at every layer and setting: coefficients x the layer's centred norm
   (``scale="unit"``, :func:`steerlab.sets.unit_norm`) and the paper's own scaling, the vector as it
   is (``scale="raw"``, x 1). The measure is Todd et al.'s: is the answer's first token the top-1
   prediction at the last position (forward passes only, batched, the blocks below the layer run
   once for every condition: :func:`steerlab.replay.replay_conditions`).
4. :func:`choose_settings`: each condition's setting per layer is the one with the best accuracy
   on the **selection** half of the held-out pairs, pooled over tasks (ties: the earlier setting);
   everything reported is measured on the other, **report** half.
5. :func:`run_task_contrasts`: :data:`TASK_CONTRASTS`, fixed here before any numbers, per task and
   pooled over tasks, per-item 0/1 accuracy paired by held-out pair, Holm over the whole list
   (:func:`steerlab.study.contrasts.run_contrasts`).
6. :func:`task_answer`: one sentence per model, generated from the verdicts of contrast (a).

The affine edit (Marshall, Scherlis & Belrose, arXiv 2411.09003) moves the activation's coordinate
along ``u`` to the reference point's instead of removing it: ``h' = h - ((h - r) . u) u + c v``. It
is origin ``ablate_then_add`` plus the constant ``(r . u) u``, so :func:`task_edit` writes it as the
one :class:`~steerlab.intervention.Intervention` with that constant in its addition.
"""

from __future__ import annotations

import hashlib
import math
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..constructions import build
from ..intervention import Intervention
from ..lens import lens_logits
from ..models import Model
from ..replay import replay_conditions
from ..sets import UNIT_LABEL, unit_norm
from ..stats import per_text_means
from ..steer import rows
from ..tokens import check_fits, encode
from ..trace import check_layers
from ..vectors import SteeringVector
from .conditions import layer_at
from .contrasts import (
    Contrast,
    ContrastResult,
    Sample,
    at_cells,
    registration,
    run_contrasts,
    samples_from_dicts,
    to_records,
)
from .scoring import PromptSplit, split_prompts
from .sentences import conclusions, signed
from .task_data import Task, TaskPair, answer_token, few_shot_prompts, vector_queries, zero_shot_prompt

__all__ = [
    "ACCURACY_MARGIN",
    "CONDITIONS",
    "PAPER_ANCHORS",
    "POSITION",
    "PRESETS",
    "TASK_CONTRASTS",
    "Ability",
    "Choice",
    "Setting",
    "TaskConfig",
    "TaskStudy",
    "choose_settings",
    "contrast_samples",
    "measure_ability",
    "plain_hits",
    "run_study",
    "run_task_contrasts",
    "steered_hits",
    "sweep",
    "task_answer",
    "task_edit",
    "task_vectors",
]

POSITION = "last_prompt"
"""Where a task vector is added: the last prompt token, the position the answer is predicted from."""

CONDITIONS: tuple[str, ...] = ("task_raw", "task_centred", "task_vs_shuffled", "task_affine", "shuffled_control")
"""The steered conditions, in the order of every table and figure."""

TASK_CONTRASTS: tuple[Contrast, ...] = (
    Contrast("a", "task_centred", "task_raw", "does subtracting the general-text mean help a task vector?"),
    Contrast("b", "task_affine", "task_centred",
             "does editing about a reference point (affine) beat adding the centred vector?"),
    *(Contrast("c", name, "shuffled_control", f"does {name} carry the task beyond the shuffled-label control?")
      for name in ("task_raw", "task_centred", "task_vs_shuffled", "task_affine")),
    *(Contrast("d", name, "unsteered", f"does {name} raise zero-shot accuracy?") for name in CONDITIONS),
)
"""The pre-registered list, stated before any numbers: (a) centred vs raw, (b) affine vs centred,
(c) each task vector vs the shuffled-label control, (d) each condition vs unsteered zero-shot. The
measure is per held-out pair: 1 if the answer's first token is the top-1 prediction, else 0."""

ACCURACY_MARGIN = 0.05
"""The margin :func:`run_contrasts` needs for a measure it has no pre-registered margin for; unused:
no contrast of :data:`TASK_CONTRASTS` is an equivalence question."""

PAPER_ANCHORS: tuple[dict[str, Any], ...] = (
    {"source": "Jorgensen et al. 2023 (arXiv 2312.03813)", "model": "GPT-J 6B", "layer": 15,
     "unsteered": 0.061, "uncentred": 0.292, "centred": 0.457},
    {"source": "the same authors' code repository", "model": "Llama-2-7B", "layer": 12,
     "unsteered": None, "uncentred": 0.358, "centred": 0.216},
)
"""Zero-shot accuracy with the function vector added, as the paper and its authors' repository report
it, on other models: shown beside ours, never mixed into our tables."""


# --- the configuration -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """How a vector is scaled: ``coefficient`` x the layer's centred norm (``unit``) or x 1 as it is (``raw``)."""

    scale: str
    coefficient: float

    @property
    def label(self) -> str:
        """``"x0.5"`` or ``"raw x1"``."""
        return f"x{self.coefficient:g}" if self.scale == "unit" else f"raw x{self.coefficient:g}"


def _positive_int(name: str, value: Any, low: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} is {value!r}; expected an integer >= {low}")


def _depths(name: str, values: Sequence[float]) -> None:
    if not values or any(isinstance(d, bool) or not isinstance(d, (int, float)) or not 0 < d < 1 for d in values):
        raise ValueError(f"{name} is {values!r}; expected at least one fraction of depth in (0, 1)")


@dataclass(frozen=True)
class TaskConfig:
    """Notebook 06's experiment (a preset of :data:`PRESETS`, with overrides).

    Attributes:
        tasks: task names (``None``: every task in ``data/tasks/``).
        shots: demonstrations per few-shot prompt.
        vector_prompts: few-shot prompts (train queries) each task vector is the mean over.
        depths: the layer sweep, as fractions of the model's depth.
        contrast_depths: the layers of the contrasts, named in advance (always swept too).
        coefficients: the ``unit`` settings, x the layer's centred norm.
        paper_scale: also the paper's setting, the vector added as it is (``raw`` x 1).
        heldout_per_task: held-out pairs per task (``None``: all), half to choose, half to report.
        min_few_shot_accuracy: a task is kept only if its few-shot accuracy reaches this.
        affine_reference: the affine edit's reference point: ``general`` (the general-text mean at
            the last token) or ``shuffled`` (the shuffled-label prompts' mean, the counter class).
        general_texts: general texts the centring mean is taken over.
        batch_size: prompts per forward pass.
        seed: every draw (demonstrations, queries, halves, general texts).
    """

    tasks: tuple[str, ...] | None = None
    shots: int = 5
    vector_prompts: int = 16
    depths: tuple[float, ...] = (0.5, 0.6)
    contrast_depths: tuple[float, ...] = (0.5, 0.6)
    coefficients: tuple[float, ...] = (0.5, 1.0, 2.0)
    paper_scale: bool = True
    heldout_per_task: int | None = None
    min_few_shot_accuracy: float = 0.3
    affine_reference: str = "general"
    general_texts: int = 32
    batch_size: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        if self.tasks is not None and (not self.tasks or len(set(self.tasks)) != len(self.tasks)):
            raise ValueError(f"tasks is {self.tasks!r}; expected None or distinct task names")
        _positive_int("shots", self.shots)
        _positive_int("vector_prompts", self.vector_prompts, 2)
        _depths("depths", self.depths)
        _depths("contrast_depths", self.contrast_depths)
        if not self.coefficients or any(isinstance(c, bool) or not isinstance(c, (int, float)) or not math.isfinite(c)
                                        or c <= 0 for c in self.coefficients):
            raise ValueError(f"coefficients is {self.coefficients!r}; expected positive numbers (x the centred norm; "
                             "the unsteered row is measured apart)")
        if self.heldout_per_task is not None:
            _positive_int("heldout_per_task", self.heldout_per_task, 4)
        if not 0 <= self.min_few_shot_accuracy <= 1:
            raise ValueError(f"min_few_shot_accuracy is {self.min_few_shot_accuracy!r}; expected a number in [0, 1]")
        if self.affine_reference not in ("general", "shuffled"):
            raise ValueError(f"affine_reference is {self.affine_reference!r}; expected 'general' or 'shuffled'")
        _positive_int("general_texts", self.general_texts, 2)
        _positive_int("batch_size", self.batch_size)

    @property
    def settings(self) -> list[Setting]:
        """The unit settings in ascending order, then the paper's (``raw`` x 1) if asked."""
        out = [Setting("unit", float(c)) for c in sorted(set(self.coefficients))]
        return out + ([Setting("raw", 1.0)] if self.paper_scale else [])

    def contrast_layers(self, model: Model) -> list[int]:
        """The contrasts' layers on ``model`` (:func:`steerlab.study.conditions.layer_at`, notebook 04's rule).

        Example:
            >>> TaskConfig().contrast_layers(model)  # SmolLM2, 30 layers
            [15, 18]
        """
        return sorted({layer_at(model.n_layers, d) for d in self.contrast_depths})

    def layers(self, model: Model) -> list[int]:
        """The swept layers on ``model``: the sweep's depths and the contrasts' layers."""
        return sorted({layer_at(model.n_layers, d) for d in self.depths} | set(self.contrast_layers(model)))

    def as_dict(self) -> dict[str, Any]:
        """Plain values, for ``summary.json``."""
        return {**asdict(self), "settings": [s.label for s in self.settings]}


# The contrasts' depths, 0.5 and 0.6, were fixed before any contrast was run, from a pilot that patched
# the mean few-shot activation into zero-shot prompts (no construction, no contrast): SmolLM2's antonyms
# rose from layer 12 and peaked at 15-18 of 30 (0.5-0.6 of depth), Gemma 3's plurals and capitals at 11 of 18
# (0.61, 81-88%); at a third of depth no task passed 20% on either model.
PRESETS: dict[str, TaskConfig] = {
    # The tests: two tasks SmolLM2 does few-shot, seconds.
    "quick": TaskConfig(tasks=("country_capital", "singular_plural"), shots=3, vector_prompts=4, depths=(0.5,),
                        contrast_depths=(0.5,), coefficients=(1.0,), heldout_per_task=8, min_few_shot_accuracy=0.0,
                        general_texts=4),
    # make run (<= 3 min on 2 cores for SmolLM2): every task, 20 held-out pairs each, the two contrast
    # layers only, two coefficients and the paper's scaling.
    "default": TaskConfig(shots=3, vector_prompts=12, depths=(0.5, 0.6), contrast_depths=(0.5, 0.6),
                          coefficients=(1.0, 2.0), heldout_per_task=20),
    # The record: a layer sweep from 30% to 70% of depth, every held-out pair, more prompts per vector.
    "full": TaskConfig(shots=5, vector_prompts=32, depths=(0.3, 0.4, 0.5, 0.6, 0.7), contrast_depths=(0.5, 0.6),
                       coefficients=(0.5, 1.0, 2.0, 4.0)),
}
"""``quick`` (tests), ``default`` (``make run``) and ``full`` (both models, for the record)."""


# --- accuracy --------------------------------------------------------------------------------------


def _answers(model: Model, pairs: Sequence[TaskPair]) -> torch.Tensor:
    return torch.tensor([answer_token(model.tokenizer, p.output) for p in pairs], dtype=torch.long)


@torch.inference_mode()
def plain_hits(model: Model, prompts: Sequence[str], answers: Sequence[int] | torch.Tensor, *,
               batch_size: int = 32) -> np.ndarray:
    """Whether each answer token is the unsteered model's top-1 prediction after its prompt: ``[n]`` bool.

    The last token's residual after the last block (:func:`steerlab.stats.per_text_means` at the last
    position, prompts never cut) through the final norm and the unembedding (:func:`steerlab.lens.lens_logits`,
    equal to the model's own logits there).

    Example:
        >>> plain_hits(model, ["Q: hot\\nA:"], [answer_token(model.tokenizer, "cold")])
        array([ True])
    """
    target = torch.as_tensor(answers, dtype=torch.long)
    if len(prompts) != len(target):
        raise ValueError(f"{len(prompts)} prompts but {len(target)} answers")
    check_fits(model.hf.config, encode(model.tokenizer, list(prompts)).lengths, what="prompt")
    last = per_text_means(model, list(prompts), [model.n_layers], position="last", batch_size=batch_size,
                          max_length=None, progress=False)[:, 0]  # [n, d_model]
    hits = [lens_logits(model, last[i:i + batch_size]).argmax(-1) for i in range(0, len(prompts), batch_size)]
    return (torch.cat(hits).cpu() == target).numpy()


@torch.inference_mode()
def steered_hits(model: Model, prompts: Sequence[str], answers: Sequence[int] | torch.Tensor, layer: int,
                 edits: Sequence[Intervention | None], *, batch_size: int = 32) -> np.ndarray:
    """Whether each answer token is the top-1 prediction after its prompt under each edit: ``[n_edits, n]`` bool.

    Every edit applies to every prompt; the blocks below ``layer`` run once per batch for all of
    them (:func:`steerlab.replay.replay_conditions`), only the last position is unembedded.
    ``None`` is the unsteered model.

    Example:
        >>> steered_hits(model, prompts, answers, 10, [None, task_edit(v, 10, 1.0, unit_norm(model, 10))])
    """
    check_layers(model, [layer], allow_last=False)
    wrong = [i for i, e in enumerate(edits) if e is not None and e.layer != layer]
    if wrong:
        raise ValueError(f"edit {wrong[0]} is at layer {edits[wrong[0]].layer}, not {layer}")  # type: ignore[union-attr]
    target = torch.as_tensor(answers, dtype=torch.long)
    if len(prompts) != len(target):
        raise ValueError(f"{len(prompts)} prompts but {len(target)} answers")
    out = np.zeros((len(edits), len(prompts)), dtype=bool)
    for start in range(0, len(prompts), batch_size):
        chunk = list(prompts[start:start + batch_size])
        batch = encode(model.tokenizer, chunk, padding_side="right")
        check_fits(model.hf.config, batch.lengths, what="prompt")
        keep = batch.select("last")  # one position a row, in row order
        for j, logits in enumerate(replay_conditions(model, batch, list(edits), layer, bos=batch.bos, keep=keep)):
            out[j, start:start + len(chunk)] = (logits.argmax(-1).cpu() == target[start:start + len(chunk)]).numpy()
    return out


def task_edit(model: Model, vector: SteeringVector, layer: int, setting: Setting) -> Intervention | None:
    """The edit one condition makes at the last prompt token (``None``: coefficient 0, unsteered).

    The row comes from :func:`steerlab.steer.rows`, the one coefficient rule: ``unit`` makes the
    addition ``coefficient`` x the layer's centred norm long, ``raw`` multiplies the vector as it is.
    A ``task_affine`` vector (``extra["edit"] == "affine"``) is edited about its reference point ``r``:
    ``h - ((h - r) . u) u + c v``, which is ``rows``' ``ablate_then_add`` along ``u = v / |v|`` with
    ``(r . u) u`` added to its addition.

    Example:
        >>> task_edit(model, v, 10, Setting("unit", 1.0)).operator
        'add'
    """
    if setting.scale not in ("unit", "raw"):
        raise ValueError(f"unknown scale {setting.scale!r}; expected 'unit' or 'raw'")
    affine = vector.extra.get("edit") == "affine"
    edit = rows(model, vector, [setting.coefficient], layer=layer, scale=setting.scale, position=POSITION,
                operator="ablate_then_add" if affine else "add")
    add = edit.adds[0]
    if add is None:
        return None
    if not affine:
        return edit
    coordinate = vector.extra.get("reference_coordinate", {}).get(str(layer))
    if isinstance(coordinate, bool) or not isinstance(coordinate, (int, float)):
        raise ValueError(  # noqa: TRY004 - a vector without what its recipe needs is a bad value
            f"this task_affine vector has no reference coordinate at layer {layer}: "
                         f"extra['reference_coordinate'] is {vector.extra.get('reference_coordinate')!r}")
    u = edit.directions[0]
    assert u is not None  # ablate_then_add rows carry the unit direction
    return Intervention(layer, [add + float(coordinate) * u], [u], "ablate_then_add", POSITION)


# --- the steps -------------------------------------------------------------------------------------


def _items(task: Task, config: TaskConfig) -> list[TaskPair]:
    """The held-out pairs measured: all, or ``heldout_per_task`` of them drawn with the seed (file order kept)."""
    pairs = list(task.heldout)
    n = config.heldout_per_task
    if n is None or n >= len(pairs):
        return pairs
    chosen = set(sorted((p.id for p in pairs), key=lambda i: hashlib.sha1(f"{config.seed}:{i}".encode()).hexdigest())[:n])
    return [p for p in pairs if p.id in chosen]


@dataclass
class Ability:
    """What each model can do with the tasks unsteered.

    Attributes:
        rows: one per (task, condition, held-out pair): ``condition`` is ``zero_shot``, ``few_shot`` or
            ``few_shot_shuffled``; ``hit`` is 1 if the answer's first token was the top-1 prediction.
        summary: one per task: pairs measured and each condition's accuracy, and ``kept``.
        threshold: the few-shot accuracy a task needed to be kept.
    """

    rows: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    threshold: float

    @property
    def kept(self) -> list[str]:
        return [s["task"] for s in self.summary if s["kept"]]

    @property
    def dropped(self) -> list[str]:
        return [s["task"] for s in self.summary if not s["kept"]]


def measure_ability(model: Model, tasks: Sequence[Task], config: TaskConfig, *, progress: bool = True) -> Ability:
    """Zero-shot, few-shot and shuffled-label few-shot accuracy of each task on its held-out pairs.

    Example:
        >>> ability = measure_ability(model, load_tasks(), PRESETS["default"])
        >>> ability.kept
    """
    rows: list[dict[str, Any]] = []
    summary = []
    for task in tqdm(tasks, desc="few-shot accuracy", unit="task", disable=not progress):
        items = _items(task, config)
        answers = _answers(model, items)
        prompts = {"zero_shot": [zero_shot_prompt(p.input) for p in items],
                   "few_shot": few_shot_prompts(task, items, shots=config.shots, seed=config.seed),
                   "few_shot_shuffled": few_shot_prompts(task, items, shots=config.shots, seed=config.seed,
                                                         shuffled=True)}
        entry: dict[str, Any] = {"task": task.name, "n": len(items)}
        for condition, texts in prompts.items():
            hits = plain_hits(model, texts, answers, batch_size=config.batch_size)
            rows += [{"task": task.name, "condition": condition, "item_id": p.id, "hit": int(h)}
                     for p, h in zip(items, hits)]
            entry[condition] = float(hits.mean())
        entry["kept"] = entry["few_shot"] >= config.min_few_shot_accuracy
        summary.append(entry)
    return Ability(rows, summary, config.min_few_shot_accuracy)


def _median_tokens(model: Model, prompts: Sequence[str]) -> int:
    return int(statistics.median(int(n) for n in encode(model.tokenizer, list(prompts)).lengths))


def task_vectors(model: Model, task: Task, config: TaskConfig, layers: Sequence[int]) -> dict[str, SteeringVector]:
    """Every condition's vector for one task, built through the registry (:data:`CONDITIONS` order).

    The few-shot prompts are ``vector_prompts`` train queries with ``shots`` demonstrations each;
    the shuffled-label prompts are the same with their outputs permuted. General texts are cut
    to the prompts' median token count, so "the last token" is the same kind of position.

    Example:
        >>> vs = task_vectors(model, load_task("antonyms"), PRESETS["default"], [10])
        >>> vs["task_centred"].recipe
        'task_centred'
    """
    queries = vector_queries(task, config.vector_prompts, config.seed)
    real = few_shot_prompts(task, queries, shots=config.shots, seed=config.seed)
    shuffled = few_shot_prompts(task, queries, shots=config.shots, seed=config.seed, shuffled=True)
    cut, n, seed = _median_tokens(model, real), config.general_texts, config.seed
    counter = shuffled if config.affine_reference == "shuffled" else None
    ls = list(layers)
    return {
        "task_raw": build("task_raw", model, ls, target=real),
        "task_centred": build("task_centred", model, ls, target=real, max_length=cut, sample_size=n, seed=seed),
        "task_vs_shuffled": build("task_vs_shuffled", model, ls, target=real, counter=shuffled),
        "task_affine": build("task_affine", model, ls, target=real, counter=counter, max_length=cut, sample_size=n,
                             seed=seed),
        "shuffled_control": build("task_centred", model, ls, target=shuffled, max_length=cut, sample_size=n,
                                  seed=seed),
    }


def sweep(model: Model, tasks: Sequence[Task], vectors: Mapping[str, Mapping[str, SteeringVector]],
          config: TaskConfig, layers: Sequence[int], *, progress: bool = True) -> list[dict[str, Any]]:
    """Zero-shot accuracy of every held-out pair under every condition, layer and setting.

    Returns:
        One row per (task, construction, layer, setting, pair): ``task``, ``construction``,
        ``layer``, ``scale``, ``coefficient``, ``item_id``, ``hit`` (0 or 1).

    Example:
        >>> rows = sweep(model, tasks, {t.name: task_vectors(model, t, config, [10]) for t in tasks}, config, [10])
    """
    settings = config.settings
    rows: list[dict[str, Any]] = []
    bar = tqdm(total=len(tasks) * len(layers), desc="steered zero-shot", unit="layer", disable=not progress)
    for task in tasks:
        if task.name not in vectors:
            raise KeyError(f"no vectors for task {task.name!r}; have {', '.join(vectors)}")
        items = _items(task, config)
        prompts, answers = [zero_shot_prompt(p.input) for p in items], _answers(model, items)
        for layer in layers:
            conditions = [(c, s) for c in CONDITIONS for s in settings]
            edits = [task_edit(model, vectors[task.name][c], layer, s) for c, s in conditions]
            hits = steered_hits(model, prompts, answers, layer, edits, batch_size=config.batch_size)
            for (c, s), row in zip(conditions, hits):
                rows += [{"task": task.name, "construction": c, "layer": layer, "scale": s.scale,
                          "coefficient": s.coefficient, "item_id": p.id, "hit": int(h)} for p, h in zip(items, row)]
            bar.update(1)
    bar.close()
    return rows


@dataclass(frozen=True)
class Choice:
    """A condition's setting at one layer, chosen on the selection half (pooled over tasks)."""

    construction: str
    layer: int
    setting: Setting
    selection_accuracy: float
    n_selection: int


def _halves(ability: Ability, tasks: Sequence[str], seed: int) -> dict[str, PromptSplit]:
    out = {}
    for t in tasks:
        ids = [r["item_id"] for r in ability.rows if r["task"] == t and r["condition"] == "zero_shot"]
        out[t] = split_prompts(ids, seed=seed)
    return out


def choose_settings(rows: Sequence[Mapping[str, Any]], halves: Mapping[str, PromptSplit],
                    settings: Sequence[Setting]) -> dict[tuple[str, int], Choice]:
    """Per (construction, layer), the setting with the best mean hit over every task's selection pairs
    (ties: the earlier in ``settings``).

    Example:
        >>> choose_settings(rows, halves, config.settings)[("task_centred", 10)].setting.label
        'x1'
    """
    selection = {t: set(h.selection) for t, h in halves.items()}
    sums: dict[tuple[str, int, Setting], list[int]] = {}
    for r in rows:
        if r["item_id"] in selection.get(r["task"], ()):
            key = (r["construction"], int(r["layer"]), Setting(r["scale"], float(r["coefficient"])))
            sums.setdefault(key, []).append(int(r["hit"]))
    out: dict[tuple[str, int], Choice] = {}
    for construction, layer in sorted({(k[0], k[1]) for k in sums}):
        candidates = [(s, sums[(construction, layer, s)]) for s in settings if (construction, layer, s) in sums]
        best, hits = max(candidates, key=lambda sh: (float(np.mean(sh[1])), -settings.index(sh[0])))
        out[(construction, layer)] = Choice(construction, layer, best, float(np.mean(hits)), len(hits))
    return out


def contrast_samples(rows: Sequence[Mapping[str, Any]], ability: Ability, choices: Mapping[tuple[str, int], Choice],
                     halves: Mapping[str, PromptSplit], cells: Sequence[int]) -> list[Sample]:
    """The report-half values the contrasts pair: each condition at its chosen setting at each contrast
    layer, and the unsteered zero-shot values placed at every such layer.

    Example:
        >>> samples = contrast_samples(rows, ability, choices, halves, [10, 15])
    """
    report = {t: set(h.report) for t, h in halves.items()}
    picked = [{**r, "position": POSITION, "target": r["task"], "value": r["hit"]} for r in rows
              if int(r["layer"]) in cells and r["item_id"] in report.get(r["task"], ())
              and choices[(r["construction"], int(r["layer"]))].setting == Setting(r["scale"], float(r["coefficient"]))]
    unsteered = [{"target": r["task"], "condition": "unsteered", "layer": 0, "position": "none",
                  "sample_id": r["item_id"], "value": r["hit"]} for r in ability.rows
                 if r["condition"] == "zero_shot" and r["item_id"] in report.get(r["task"], ())]
    return (samples_from_dicts(picked, condition="construction", sample_id="item_id")
            + at_cells(samples_from_dicts(unsteered), [(la, POSITION) for la in cells]))


def run_task_contrasts(samples: Sequence[Sample], cells: Sequence[int]) -> list[ContrastResult]:
    """:data:`TASK_CONTRASTS` per task and pooled over tasks at each contrast layer, Holm over the whole list.

    Example:
        >>> results = run_task_contrasts(contrast_samples(rows, ability, choices, halves, [10]), [10])
    """
    return run_contrasts(samples, contrasts=TASK_CONTRASTS, measure="accuracy", margin=ACCURACY_MARGIN,
                         cells=[(la, POSITION) for la in cells], family="all")


# --- the whole study -------------------------------------------------------------------------------


@dataclass
class TaskStudy:
    """A finished run of notebook 06 on one model: what was measured and the contrasts' results."""

    model: str
    config: TaskConfig
    ability: Ability
    layers: list[int]
    contrast_layers: list[int]
    units: dict[int, float]
    norms: dict[str, dict[str, dict[int, float]]]
    rows: list[dict[str, Any]]
    halves: dict[str, PromptSplit]
    choices: dict[tuple[str, int], Choice]
    results: list[ContrastResult]
    seconds: float = 0.0
    sweep_seconds: float = field(default=0.0)

    @property
    def tasks(self) -> list[str]:
        return list(self.halves)

    def accuracy(self) -> list[dict[str, Any]]:
        """Report-half accuracy per task and pooled: each condition at each layer at its chosen setting,
        and unsteered zero-shot and few-shot (no layer).

        Example:
            >>> [r for r in study.accuracy() if r["task"] == "pooled"][0]["accuracy"]
        """
        report = {t: set(h.report) for t, h in self.halves.items()}
        hits: dict[tuple[str, str, int | None], list[int]] = {}
        for r in self.ability.rows:
            if r["item_id"] in report.get(r["task"], ()) and r["condition"] in ("zero_shot", "few_shot"):
                name = "unsteered" if r["condition"] == "zero_shot" else "few_shot"
                for scope in (r["task"], "pooled"):
                    hits.setdefault((scope, name, None), []).append(int(r["hit"]))
        for r in self.rows:
            chosen = self.choices[(r["construction"], int(r["layer"]))].setting
            if r["item_id"] in report.get(r["task"], ()) and chosen == Setting(r["scale"], float(r["coefficient"])):
                for scope in (r["task"], "pooled"):
                    hits.setdefault((scope, r["construction"], int(r["layer"])), []).append(int(r["hit"]))
        out = []
        for (scope, name, layer), h in hits.items():
            choice = self.choices.get((name, layer)) if layer is not None else None
            out.append({"task": scope, "condition": name, "layer": layer, "accuracy": float(np.mean(h)), "n": len(h),
                        "setting": choice.setting.label if choice else None})
        order = {n: i for i, n in enumerate(("unsteered", "few_shot", *CONDITIONS))}
        scopes = {n: i for i, n in enumerate([*self.tasks, "pooled"])}
        return sorted(out, key=lambda r: (scopes[r["task"]], order[r["condition"]], r["layer"] or -1))

    def sweep_table(self) -> list[dict[str, Any]]:
        """Accuracy on every held-out pair measured (both halves) at every setting, per task, layer and condition."""
        groups: dict[tuple[str, str, int, str, float], list[int]] = {}
        for r in self.rows:
            groups.setdefault((r["task"], r["construction"], int(r["layer"]), r["scale"], float(r["coefficient"])),
                              []).append(int(r["hit"]))
        return [{"task": t, "construction": c, "layer": la, "setting": Setting(s, co).label,
                 "accuracy": float(np.mean(h)), "n": len(h)} for (t, c, la, s, co), h in sorted(groups.items())]

    def answer(self) -> str:
        """The one sentence: does centring help task vectors on this model (:func:`task_answer`)."""
        return task_answer([{"model": self.model, "kept_tasks": self.tasks, "contrasts": to_records(self.results)}])[0]

    def record(self) -> dict[str, Any]:
        """Plain values for ``summary.json`` (key ``"tasks"``) and ``docs/results/``."""
        pooled = [r for r in self.results if r.scope == "pooled"]
        accuracy = self.accuracy()
        few_shot = next((r["accuracy"] for r in accuracy if r["task"] == "pooled" and r["condition"] == "few_shot"),
                        None)
        first = next((r for r in pooled if r.label == "a" and r.layer == self.contrast_layers[0]
                      and r.status == "run"), None)
        headline: dict[str, Any] = {"kept": len(self.ability.kept)}
        if few_shot is not None:
            headline["few_shot"] = few_shot
        if first is not None:
            headline["centred_minus_raw"] = first.estimate
        return {
            "headline": headline,
            "headline_ci": {"centred_minus_raw": list(first.ci)} if first is not None else {},
            "n_tasks": len(self.ability.summary), "headline_layer": self.contrast_layers[0],
            "headline_verdict": first.verdict if first is not None else "not run",
            "model": self.model, "config": self.config.as_dict(), "coefficient_unit": UNIT_LABEL,
            "position": POSITION, "seconds": self.seconds,
            "ability": self.ability.summary, "few_shot_threshold": self.ability.threshold,
            "kept_tasks": self.ability.kept, "dropped_tasks": self.ability.dropped,
            "layers": self.layers, "contrast_layers": self.contrast_layers,
            "unit_norms": {str(k): v for k, v in self.units.items()},
            "vector_norms": {t: {c: {str(la): n for la, n in by.items()} for c, by in v.items()}
                             for t, v in self.norms.items()},
            "chosen": [{"construction": c.construction, "layer": c.layer, "scale": c.setting.scale,
                        "coefficient": c.setting.coefficient, "setting": c.setting.label,
                        "selection_accuracy": c.selection_accuracy, "n_selection": c.n_selection}
                       for c in self.choices.values()],
            "halves": {t: {"selection": list(h.selection), "report": list(h.report)} for t, h in self.halves.items()},
            "accuracy": accuracy, "sweep": self.sweep_table(),
            "registration": registration(TASK_CONTRASTS, measure="accuracy", margin=ACCURACY_MARGIN,
                                         cells=[(la, POSITION) for la in self.contrast_layers]),
            "contrasts": to_records(self.results),
            "answer": self.answer(),
            "conclusion": [self.answer(), *conclusions(pooled)],
            "anchors": [dict(a) for a in PAPER_ANCHORS],
        }


def run_study(model: Model, tasks: Sequence[Task], ability: Ability, config: TaskConfig, *,
              progress: bool = True) -> TaskStudy:
    """Steps 2-5 for the tasks ``ability`` kept: vectors, sweep, chosen settings, contrasts.

    Raises:
        ValueError: no task was kept (nothing to steer), naming each task's few-shot accuracy.

    Example:
        >>> study = run_study(model, tasks, measure_ability(model, tasks, config), config)
        >>> print(study.answer())
    """
    kept = [t for t in tasks if t.name in ability.kept]
    if not kept:
        scores = ", ".join(f"{s['task']} {s['few_shot']:.2f}" for s in ability.summary)
        raise ValueError(f"no task reached few-shot accuracy {ability.threshold:g} on {model.name} ({scores}): "
                         "there is no ability for a task vector to carry; lower min_few_shot_accuracy or add tasks")
    started = time.perf_counter()
    layers, cells = config.layers(model), config.contrast_layers(model)
    units = {la: unit_norm(model, la) for la in layers}
    vectors = {t.name: task_vectors(model, t, config, layers)
               for t in tqdm(kept, desc="task vectors", unit="task", disable=not progress)}
    norms = {t: {c: {la: v.norm(la) for la in layers} for c, v in by.items()} for t, by in vectors.items()}
    rows = sweep(model, kept, vectors, config, layers, progress=progress)
    halves = _halves(ability, [t.name for t in kept], config.seed)
    choices = choose_settings(rows, halves, config.settings)
    results = run_task_contrasts(contrast_samples(rows, ability, choices, halves, cells), cells)
    return TaskStudy(model.name, config, ability, layers, cells, units, norms, rows, halves, choices, results,
                     sweep_seconds=time.perf_counter() - started)


# --- the answer in words ---------------------------------------------------------------------------


def task_answer(results: Sequence[Mapping[str, Any]]) -> list[str]:
    """One sentence per model: does mean-centring help task vectors there, from contrast (a)'s pooled verdicts.

    Each item has ``model`` and ``contrasts`` (:func:`steerlab.study.contrasts.to_records` of a run), and
    optionally ``kept_tasks``. "helps" or "hurts" only where the Holm-corrected verdict says
    ``task_centred > task_raw`` or ``<`` at a layer; where no layer is called the sentence says the
    effect is not resolved at this sample size and gives the largest MDD, never a ranking.

    Example:
        >>> task_answer([{"model": "m", "contrasts": to_records(results)}])[0]
        'On m (6 tasks pooled, ...), mean-centring helps task vectors: at layer 10, centred − raw = +0.21 ...'
    """
    out = []
    for entry in results:
        model = entry.get("model", "?")
        records = [c for c in entry.get("contrasts", []) if c.get("label") == "a" and c.get("scope") == "pooled"]
        ran = sorted((c for c in records if c.get("status") == "run"), key=lambda c: c["layer"])
        if not ran:
            why = "; ".join(sorted({str(c.get("reason")) for c in records})) or "no contrast (a) was recorded"
            out.append(f"On {model}, whether mean-centring helps task vectors was not measured ({why}).")
            continue
        helps = [c for c in ran if c["verdict"] == f"{c['a']} > {c['b']}"]
        hurts = [c for c in ran if c["verdict"] == f"{c['a']} < {c['b']}"]

        def layers_of(cs: list[Mapping[str, Any]]) -> str:
            return ("layer " if len(cs) == 1 else "layers ") + " and ".join(str(c["layer"]) for c in cs)

        if helps and hurts:
            head = f"mean-centring helps task vectors at {layers_of(helps)} and hurts them at {layers_of(hurts)}"
        elif helps:
            head = "mean-centring helps task vectors" + ("" if len(helps) == len(ran) else f" at {layers_of(helps)}")
        elif hurts:
            head = "mean-centring hurts task vectors" + ("" if len(hurts) == len(ran) else f" at {layers_of(hurts)}")
        elif all(float(c["mdd_corrected"]) == 0 for c in ran):  # every pair scored alike on both sides
            head = ("the effect of mean-centring on task vectors is not resolved at this sample size: centred and "
                    "raw scored the same on every held-out pair, so there was no variation to test")
        else:
            worst = max(float(c["mdd_corrected"]) for c in ran)
            head = f"the effect of mean-centring on task vectors is not resolved at this sample size (MDD {worst:.2g})"
        parts = []
        for c in ran:
            text = (f"at layer {c['layer']}, centred − raw = {signed(c['estimate'])} "
                    f"[{signed(c['ci'][0])}, {signed(c['ci'][1])}]")
            if c not in helps and c not in hurts and float(c["mdd_corrected"]) > 0:
                text += f" (not resolved, MDD {float(c['mdd_corrected']):.2g})"
            parts.append(text)
        tasks = entry.get("kept_tasks") or sorted({t for c in ran for t in c.get("targets", [])})
        where = (f"{len(tasks)} task{'s' if len(tasks) != 1 else ''} pooled, zero-shot first-token accuracy, "
                 f"Holm over {ran[0]['family_size']} tests")
        out.append(f"On {model} ({where}), {head}: {'; '.join(parts)}." + _works(entry.get("contrasts", []))
                   + _swept(entry.get("accuracy") or [], {int(c["layer"]) for c in ran}))
    return out


def _swept(accuracy: Sequence[Mapping[str, Any]], registered: set[int]) -> str:
    """The best swept layer of the raw and the centred vector where it is not a registered one: labelled
    exploratory (chosen after seeing the numbers, no test), beside few-shot accuracy, so a reader sees
    whether the registered layers missed where the vectors work."""
    pooled = [r for r in accuracy if r.get("task") == "pooled"]
    few = next((r["accuracy"] for r in pooled if r.get("condition") == "few_shot"), None)
    best = {name: max((r for r in pooled if r.get("condition") == name and r.get("layer") is not None),
                      key=lambda r: r["accuracy"], default=None) for name in ("task_raw", "task_centred")}
    shown = {n: r for n, r in best.items() if r is not None and int(r["layer"]) not in registered and r["accuracy"] > 0}
    if not shown or few is None:
        return ""
    said = "; ".join(f"{n.removeprefix('task_')} {r['accuracy']:.0%} at layer {r['layer']}" for n, r in shown.items())
    return (f" Exploratory (the best swept layer, chosen after seeing it, no test): {said}, against few-shot "
            f"{few:.0%}.")


def _works(contrasts: Sequence[Mapping[str, Any]]) -> str:
    """Contrast (d) for the raw and the centred vector, as a clause: whether either lifts zero-shot accuracy
    above unsteered at all (a comparison of two vectors that both do nothing says nothing about centring)."""
    d = [c for c in contrasts if c.get("label") == "d" and c.get("scope") == "pooled" and c.get("status") == "run"
         and c.get("a") in ("task_raw", "task_centred") and c.get("b") == "unsteered"]
    if not d:
        return ""
    works = {name: sorted(int(c["layer"]) for c in d if c["a"] == name and c["verdict"] == f"{name} > unsteered")
             for name in ("task_raw", "task_centred")}
    if not any(works.values()):
        layers = ", ".join(str(la) for la in sorted({int(c["layer"]) for c in d}))
        return (f" Neither the raw nor the centred task vector lifted zero-shot accuracy above unsteered at layer"
                f"{'s' if ',' in layers else ''} {layers} (contrast (d), Holm-corrected): this run cannot say whether "
                "centring helps a task vector that works.")
    said = [f"{name.removeprefix('task_')} at layer{'s' if len(las) > 1 else ''} {', '.join(map(str, las))}"
            for name, las in works.items() if las]
    # contrast (c): above unsteered is not yet the task; the shuffled-label control says whether it is
    control = {(c["a"], int(c["layer"])): c["verdict"] for c in contrasts if c.get("label") == "c"
               and c.get("scope") == "pooled" and c.get("status") == "run" and c.get("b") == "shuffled_control"}
    unshown = [f"{name.removeprefix('task_')} at layer {la}" for name, las in works.items() for la in las
               if (name, la) in control and control[(name, la)] != f"{name} > shuffled_control"]
    caveat = (f" Not shown above the shuffled-label control (contrast (c), not called): {'; '.join(unshown)}, so "
              "the lift is not shown to be the task's." if unshown else "")
    return f" Above unsteered zero-shot accuracy (contrast (d)): {'; '.join(said)}.{caveat}"

