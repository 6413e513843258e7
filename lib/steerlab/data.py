"""The project's text corpora in ``data/``: loading by name, with validation.

Every file is JSON Lines with the fields ``id``, ``genre``, ``split``, ``text``
and ``source`` (see ``data/README.md``). Names:

- a genre (``fantasy``, ``science_fiction``, ``sports``, ...): its stories;
- ``mixed``: the stories of every genre together (derived here, so it cannot
  drift from the genre files), the reference set for isolating one genre;
- ``shakespeare``: Shakespeare-style passages;
- ``general``: everyday non-fiction, the stand-in for the training
  distribution whose mean is used for mean-centring;
- ``prompts``: neutral story openings for steering.

Splits: ``train`` (vector building), ``heldout`` (evaluation), ``eval``
(prompts), ``None`` (everything).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from .tokens import check_unicode

__all__ = [
    "DataError",
    "Record",
    "TextSet",
    "data_dir",
    "genres",
    "load_dataset",
    "read_jsonl",
]

_FIELDS = ("id", "genre", "split", "text", "source")
_SPLITS = ("train", "heldout", "eval")


class DataError(ValueError):
    """A data file is malformed; the message names the file and line."""


@dataclass(frozen=True)
class Record:
    id: str
    genre: str
    split: str
    text: str
    source: str


@dataclass(frozen=True)
class TextSet:
    """A named, ordered set of texts (and the records they came from)."""

    name: str
    records: tuple[Record, ...]

    @property
    def texts(self) -> list[str]:
        return [r.text for r in self.records]

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[str]:
        return iter(self.texts)

    @property
    def content_hash(self) -> str:
        """Hash of the texts in order: the dataset part of statistics cache keys."""
        digest = hashlib.sha1()
        for text in self.texts:
            digest.update(text.encode())
            digest.update(b"\0")
        return digest.hexdigest()[:16]

    def sample(self, n: int | None, seed: int = 0) -> TextSet:
        """At most ``n`` records, chosen reproducibly (``None``: all of them)."""
        if n is None or n >= len(self.records):
            return self
        import random

        chosen = sorted(random.Random(seed).sample(range(len(self.records)), n))
        return TextSet(f"{self.name}[{n}@{seed}]", tuple(self.records[i] for i in chosen))

    @classmethod
    def from_texts(cls, name: str, texts: Sequence[str]) -> TextSet:
        """A set of inline texts; each must be a string.

        Raises:
            ValueError: a text that is not a string (``None``) or not Unicode text (a lone
                surrogate), naming its index.

        Example:
            >>> len(TextSet.from_texts("mine", ["One.", "Two."]))
            2
        """
        if isinstance(texts, str):
            raise ValueError("expected a list of texts, got a single string: wrap it in a list")  # noqa: TRY004
        texts = list(texts)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise ValueError(  # noqa: TRY004 - bad text input is a ValueError throughout
                    f"text {i} of {name!r} is {text!r} of type {type(text).__name__}, not a string")
            check_unicode(text, f"text {i} of {name!r}")  # before its content is hashed as UTF-8
        recs = tuple(Record(f"{name}-{i}", name, "train", t, "inline") for i, t in enumerate(texts))
        return cls(name, recs)


def data_dir() -> Path:
    """The folder holding the corpora, looked up in this order.

    1. ``$STEERLAB_DATA``, if set (it must be a folder; ``~`` is expanded);
    2. ``steerlab/corpora`` beside this module: the corpora shipped as package
       data by ``pip install .`` (in a checkout, a symlink to the repository's
       ``data/``, the one source of truth);
    3. the checkout's ``data/`` (``lib/steerlab/../../data``), for a checkout
       whose file system dropped the symlink.

    Raises:
        DataError: ``$STEERLAB_DATA`` is not a folder, or no candidate holds ``stories/``.

    Example:
        >>> (data_dir() / "prompts.jsonl").is_file()
        True
    """
    env = os.environ.get("STEERLAB_DATA")
    if env:
        folder = Path(env).expanduser()
        if not folder.is_dir():
            raise DataError(f"STEERLAB_DATA={env!r} is not a folder")
        return folder
    here = Path(__file__).resolve().parent
    candidates = [here / "corpora", here.parents[1] / "data"]
    for folder in candidates:
        if (folder / "stories").is_dir():
            return folder
    raise DataError(
        f"no data folder found (looked in {', '.join(str(c) for c in candidates)}); "
        "set STEERLAB_DATA to the folder holding stories/, general/ and prompts.jsonl"
    )


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number, line)`` of a UTF-8 text file; bytes that are not UTF-8 are a DataError naming the line."""
    try:
        raw = Path(path).read_bytes()
    except OSError as err:
        raise DataError(f"cannot read data file {path}: {err}") from err
    for lineno, line in enumerate(raw.splitlines(keepends=True), start=1):
        try:
            yield lineno, line.decode("utf-8")
        except UnicodeDecodeError as err:
            raise DataError(f"{path}:{lineno}: not UTF-8 text (byte {line[err.start:err.start + 1]!r} at column "
                            f"{err.start + 1}); data files are UTF-8 JSON Lines") from err


def read_jsonl(path: Path) -> list[Record]:
    """Read and validate one data file (UTF-8 JSON Lines, one record of exactly the five fields a line).

    Raises:
        DataError: an unreadable file, bytes that are not UTF-8, bad JSON, a missing or
            extra field, an empty text, an unknown split or a duplicate id, naming the
            file and line.

    Example:
        >>> read_jsonl(data_dir() / "prompts.jsonl")[0].split
        'eval'
    """
    records: list[Record] = []
    seen: dict[str, int] = {}
    for lineno, line in _lines(path):
        if not line.strip():
            raise DataError(f"{path}:{lineno}: blank line")
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{lineno}: invalid JSON ({err.msg})") from err
        if not isinstance(obj, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object")
        missing = [k for k in _FIELDS if k not in obj]
        if missing:
            raise DataError(f"{path}:{lineno}: missing field(s) {', '.join(missing)}")
        extra = [k for k in obj if k not in _FIELDS]
        if extra:
            raise DataError(f"{path}:{lineno}: unknown field(s) {', '.join(map(repr, extra))}; "
                            f"expected exactly {', '.join(_FIELDS)}")
        for key in _FIELDS:
            if not isinstance(obj[key], str) or not obj[key].strip():
                raise DataError(f"{path}:{lineno}: field {key!r} is empty or not a string")
        if obj["split"] not in _SPLITS:
            raise DataError(f"{path}:{lineno}: split {obj['split']!r} is not one of {_SPLITS}")
        if obj["id"] in seen:
            raise DataError(
                f"{path}:{lineno}: duplicate id {obj['id']!r} (first on line {seen[obj['id']]})"
            )
        seen[obj["id"]] = lineno
        records.append(Record(*(obj[k] for k in _FIELDS)))
    if not records:
        raise DataError(f"{path}: no records")
    return records


def _files(root: Path) -> dict[str, list[Path]]:
    files: dict[str, list[Path]] = {}
    for path in sorted((root / "stories").glob("*.jsonl")):
        files[path.stem] = [path]
    files["shakespeare"] = [root / "shakespeare.jsonl"]
    files["general"] = sorted((root / "general").glob("*.jsonl"))
    files["prompts"] = [root / "prompts.jsonl"]
    return files


def genres(root: Path | None = None) -> list[str]:
    """The story genres found in ``data/stories/`` (file names without ``.jsonl``).

    Raises:
        DataError: ``stories/`` is missing or holds no ``.jsonl`` file (an empty list would
            make every genre loop and the ``mixed`` set silently empty).

    Example:
        >>> "fantasy" in genres()
        True
    """
    root = root or data_dir()
    found = sorted(p.stem for p in (root / "stories").glob("*.jsonl"))
    if not found:
        raise DataError(f"no story genres: {root / 'stories'} holds no .jsonl files (expected one per genre, "
                        "e.g. stories/fantasy.jsonl)")
    return found


def load_dataset(name: str, split: str | None = None, *, root: Path | None = None,
                 include_generated: bool = False) -> TextSet:
    """Load a named text set, optionally one split of it.

    Args:
        name: a genre, ``mixed``, ``shakespeare``, ``general`` or ``prompts``.
        split: ``train``, ``heldout``, ``eval`` or ``None`` for all records.
        include_generated: also read model-generated rows from ``data/generated/``
            (kept apart from the written text, never mixed in silently).

    Raises:
        KeyError: an unknown name (the message lists the known ones).
        DataError: a malformed file (naming file and line), a missing or empty folder
            (``stories/``, ``general/``), or a split with no records.

    Example:
        >>> len(load_dataset("fantasy", "train")) > 0
        True
    """
    root = root or data_dir()
    files = _files(root)
    if split is not None and split not in _SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {_SPLITS} or None")
    if name == "mixed":
        paths = [p for g in genres(root) for p in files[g]]
    elif name in files:
        paths = files[name]
    else:
        raise KeyError(f"unknown dataset {name!r}; known: mixed, {', '.join(sorted(files))}")
    if include_generated:
        names = genres(root) if name == "mixed" else [name]
        paths = paths + [p for n in names if (p := root / "generated" / f"{n}.jsonl").is_file()]
    if not paths:  # general/ missing or empty
        raise DataError(f"dataset {name!r} has no files: expected {root / name}/*.jsonl")
    records: list[Record] = []
    for path in paths:
        if not path.is_file():
            raise DataError(f"data file missing: {path}")
        records.extend(read_jsonl(path))
    if split is not None:
        records = [r for r in records if r.split == split]
        if not records:
            raise DataError(f"dataset {name!r} has no records in split {split!r}")
    label = name if split is None else f"{name}:{split}"
    return TextSet(label, tuple(records))
