"""The in-context tasks of notebook 06 (``data/tasks/``) and the few-shot prompts written from them.

Each task is one JSON Lines file, ``data/tasks/<task>.jsonl``, one pair a line with exactly the
fields ``id``, ``task``, ``split`` (``train`` or ``heldout``), ``input``, ``output`` and ``source``
(``data/README.md``, "Tasks"). :func:`load_task` validates a file as :func:`steerlab.data.read_jsonl`
does the text sets (an error names the file and line) and refuses a task whose inputs repeat, so
no input sits in both splits.

Prompts follow function-vector work (Todd et al. 2023): a demonstration is ``"Q: {x}\\nA: {y}\\n\\n"``,
a query ``"Q: {x}\\nA:"``; a few-shot prompt is ``shots`` demonstrations, drawn from the train split
without the query itself, then the query; a zero-shot prompt is the query alone. A
**shuffled-label** prompt has the same demonstrations and query with the outputs permuted among
the demonstrations so that none keeps its own (the format and the words without the mapping).
Every draw is seeded by ``seed`` and the query's id, so a prompt does not depend on which other
queries are asked.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data import DataError, data_dir

__all__ = [
    "TASK_FIELDS",
    "TASK_SPLITS",
    "Task",
    "TaskPair",
    "answer_token",
    "demonstrations",
    "few_shot_prompt",
    "few_shot_prompts",
    "load_task",
    "load_tasks",
    "task_names",
    "tasks_dir",
    "vector_queries",
    "zero_shot_prompt",
]

TASK_FIELDS = ("id", "task", "split", "input", "output", "source")
TASK_SPLITS = ("train", "heldout")


@dataclass(frozen=True)
class TaskPair:
    """One ``input -> output`` pair of a task."""

    id: str
    task: str
    split: str
    input: str
    output: str
    source: str


@dataclass(frozen=True)
class Task:
    """A named in-context task: its pairs, each in the ``train`` or ``heldout`` split.

    Raises:
        ValueError: no pairs, a pair of another task, an unknown split, a repeated id or input,
            or a split with no pair.

    Example:
        >>> t = Task("echo", (TaskPair("e-1", "echo", "train", "a", "a", "mine"),
        ...                   TaskPair("e-2", "echo", "heldout", "b", "b", "mine")))
        >>> [p.input for p in t.heldout]
        ['b']
    """

    name: str
    pairs: tuple[TaskPair, ...]

    def __post_init__(self) -> None:
        if not self.pairs:
            raise ValueError(f"task {self.name!r} has no pairs")
        ids: set[str] = set()
        inputs: dict[str, str] = {}
        for p in self.pairs:
            if p.task != self.name:
                raise ValueError(f"pair {p.id!r} belongs to task {p.task!r}, not {self.name!r}")
            if p.split not in TASK_SPLITS:
                raise ValueError(f"pair {p.id!r} of {self.name!r} has split {p.split!r}; expected one of {TASK_SPLITS}")
            if p.id in ids:
                raise ValueError(f"task {self.name!r} repeats the id {p.id!r}")
            if p.input in inputs:
                raise ValueError(f"task {self.name!r} repeats the input {p.input!r} (pairs {inputs[p.input]!r} and "
                                 f"{p.id!r}): an input may appear once, so never in both splits")
            ids.add(p.id)
            inputs[p.input] = p.id
        for split in TASK_SPLITS:
            if not self.split(split):
                raise ValueError(f"task {self.name!r} has no pair in split {split!r}")

    def split(self, split: str) -> tuple[TaskPair, ...]:
        """The pairs of one split, in file order."""
        if split not in TASK_SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {TASK_SPLITS}")
        return tuple(p for p in self.pairs if p.split == split)

    @property
    def train(self) -> tuple[TaskPair, ...]:
        return self.split("train")

    @property
    def heldout(self) -> tuple[TaskPair, ...]:
        return self.split("heldout")


def tasks_dir(root: Path | None = None) -> Path:
    """The folder of task files: ``tasks/`` in the data folder (:func:`steerlab.data.data_dir`)."""
    return (root or data_dir()) / "tasks"


def task_names(root: Path | None = None) -> list[str]:
    """The tasks found in ``data/tasks/`` (file names without ``.jsonl``), sorted.

    Raises:
        DataError: the folder is missing or holds no ``.jsonl`` file.

    Example:
        >>> "antonyms" in task_names()
        True
    """
    folder = tasks_dir(root)
    found = sorted(p.stem for p in folder.glob("*.jsonl"))
    if not found:
        raise DataError(f"no tasks: {folder} holds no .jsonl files (expected one per task, e.g. tasks/antonyms.jsonl)")
    return found


def _record(path: Path, lineno: int, line: str) -> TaskPair:
    if not line.strip():
        raise DataError(f"{path}:{lineno}: blank line")
    try:
        obj: Any = json.loads(line)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{lineno}: invalid JSON ({err.msg})") from err
    if not isinstance(obj, dict):
        raise DataError(f"{path}:{lineno}: expected a JSON object")
    if sorted(obj) != sorted(TASK_FIELDS):
        raise DataError(f"{path}:{lineno}: fields {', '.join(sorted(obj))}; expected exactly {', '.join(TASK_FIELDS)}")
    for key in TASK_FIELDS:
        if not isinstance(obj[key], str) or not obj[key].strip() or obj[key] != obj[key].strip():
            raise DataError(f"{path}:{lineno}: field {key!r} is {obj[key]!r}: expected a non-empty string without "
                            "leading or trailing spaces")
    return TaskPair(*(obj[k] for k in TASK_FIELDS))


def load_task(name: str, *, root: Path | None = None) -> Task:
    """Read and validate ``data/tasks/<name>.jsonl``.

    Raises:
        KeyError: an unknown task (the message lists the known ones).
        DataError: a malformed line (naming file and line), or pairs that do not make a task
            (a repeated id or input, a pair of another task, an empty split).

    Example:
        >>> len(load_task("antonyms").heldout) > 0
        True
    """
    known = task_names(root)
    if name not in known:
        raise KeyError(f"unknown task {name!r}; known: {', '.join(known)}")
    path = tasks_dir(root) / f"{name}.jsonl"
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read task file {path}: {err}") from err
    pairs = tuple(_record(path, i, line) for i, line in enumerate(text.splitlines(), start=1))
    try:
        return Task(name, pairs)
    except ValueError as err:
        raise DataError(f"{path}: {err}") from err


def load_tasks(names: Sequence[str] | None = None, *, root: Path | None = None) -> list[Task]:
    """Several tasks by name (``None``: every task in ``data/tasks/``), in the order given.

    Example:
        >>> [t.name for t in load_tasks(["antonyms", "country_capital"])]
        ['antonyms', 'country_capital']
    """
    chosen = task_names(root) if names is None else list(names)
    if not chosen:
        raise ValueError(f"no tasks given; known: {', '.join(task_names(root))}")
    return [load_task(n, root=root) for n in chosen]


def zero_shot_prompt(x: str) -> str:
    """The query alone: ``"Q: {x}\\nA:"``.

    Example:
        >>> zero_shot_prompt("hot")
        'Q: hot\\nA:'
    """
    return f"Q: {x}\nA:"


def few_shot_prompt(demos: Sequence[tuple[str, str]], x: str) -> str:
    """Demonstrations ``"Q: {a}\\nA: {b}\\n\\n"`` then the query.

    Example:
        >>> few_shot_prompt([("big", "small")], "hot")
        'Q: big\\nA: small\\n\\nQ: hot\\nA:'
    """
    return "".join(f"Q: {a}\nA: {b}\n\n" for a, b in demos) + zero_shot_prompt(x)


def _count(name: str, value: int, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def demonstrations(task: Task, query: TaskPair, shots: int, seed: int = 0) -> list[TaskPair]:
    """``shots`` train pairs other than ``query``, drawn with ``seed`` and the query's id.

    Raises:
        ValueError: ``shots`` below 1 or more than the train pairs left.

    Example:
        >>> [p.split for p in demonstrations(task, task.heldout[0], 3)]
        ['train', 'train', 'train']
    """
    _count("shots", shots, 1)
    pool = [p for p in task.train if p.id != query.id]
    if shots > len(pool):
        raise ValueError(f"shots={shots} but task {task.name!r} has {len(pool)} train pairs to draw from")
    return random.Random(f"{seed}:{query.id}").sample(pool, shots)


def _shuffled_outputs(demos: Sequence[TaskPair], rng: random.Random, what: str) -> list[str]:
    """The demonstrations' outputs permuted so that no demonstration keeps an output equal to its own."""
    outputs = [p.output for p in demos]
    if len(set(outputs)) < 2:
        raise ValueError(f"cannot shuffle the labels of {what}: its demonstrations' outputs are {outputs!r}")
    for _ in range(10_000):
        order = list(range(len(outputs)))
        rng.shuffle(order)
        moved = [outputs[j] for j in order]
        if all(m != o for m, o in zip(moved, outputs)):
            return moved
    raise ValueError(f"no permutation of {outputs!r} moves every output of {what}")


def few_shot_prompts(task: Task, queries: Sequence[TaskPair], *, shots: int, seed: int = 0,
                     shuffled: bool = False) -> list[str]:
    """One few-shot prompt per query; ``shuffled=True``: the same demonstrations with their outputs
    permuted so that none keeps its own (the shuffled-label control).

    Example:
        >>> few_shot_prompts(task, task.heldout[:1], shots=2)[0].count("Q:")
        3
    """
    out = []
    for q in queries:
        demos = demonstrations(task, q, shots, seed)
        outputs = [p.output for p in demos]
        if shuffled:
            outputs = _shuffled_outputs(demos, random.Random(f"{seed}:{q.id}:shuffle"), f"the prompt for {q.id!r}")
        out.append(few_shot_prompt([(p.input, y) for p, y in zip(demos, outputs)], q.input))
    return out


def vector_queries(task: Task, n: int, seed: int = 0) -> list[TaskPair]:
    """``n`` train pairs, drawn with ``seed``: the queries of the prompts a task vector is built from.

    Raises:
        ValueError: ``n`` below 1 or more than the train pairs.

    Example:
        >>> len(vector_queries(task, 16))
        16
    """
    _count("vector_prompts", n, 1)
    if n > len(task.train):
        raise ValueError(f"vector_prompts={n} but task {task.name!r} has {len(task.train)} train pairs")
    return random.Random(f"{seed}:{task.name}:vector").sample(list(task.train), n)


def answer_token(tokenizer: Any, output: str) -> int:
    """The first token of ``" " + output`` (what follows ``"A:"``), without special tokens.

    Example:
        >>> tokenizer.decode([answer_token(tokenizer, "cold")])
        ' cold'
    """
    ids = tokenizer(" " + output, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ValueError(f"the answer {output!r} has no token")
    return int(ids[0])
