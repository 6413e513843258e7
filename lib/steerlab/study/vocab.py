"""Genre vocabularies: word stems frequent in one genre's stories and rare in the others.

Computed from the training split only (as the follow-up paper on mean-centring
does for its genre-steering evaluation), never typed by hand. A completion's
*vocabulary rate* is the fraction of its words whose stem is in a genre's set.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping

__all__ = ["STOPWORDS", "evaluation_vocabulary", "genre_vocabularies", "stem", "vocab_rate", "vocabularies", "words"]

_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")
STOPWORDS = frozenset(
    ["a", "about", "above", "after", "again", "against", "all", "am", "an", "and", "any", "are", "as", "at", "be", "because", "been", "before", "being", "below", "between", "both", "but", "by", "could", "did", "do", "does", "doing", "down", "during", "each", "few", "for", "from", "further", "had", "has", "have", "having", "he", "her", "here", "hers", "herself", "him", "himself", "his", "how", "i", "if", "in", "into", "is", "it", "its", "itself", "just", "me", "more", "most", "my", "myself", "no", "nor", "not", "now", "of", "off", "on", "once", "only", "or", "other", "our", "ours", "out", "over", "own", "same", "she", "should", "so", "some", "such", "than", "that", "the", "their", "theirs", "them", "then", "there", "these", "they", "this", "those", "through", "to", "too", "under", "until", "up", "very", "was", "we", "were", "what", "when", "where", "which", "while", "who", "whom", "why", "will", "with", "would", "you", "your", "yours", "one", "two", "said", "like", "back", "still", "into"]
)
_SUFFIXES = ("ingly", "edly", "ness", "ment", "ings", "ing", "ied", "ies", "ed", "es", "ly", "s")


def stem(word: str) -> str:
    """A light suffix-stripping stem (``dragons`` -> ``dragon``, ``racing`` -> ``rac``)."""
    word = word.lower().split("'")[0]
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            base = word[: -len(suffix)]
            return base + "y" if suffix in ("ied", "ies") else base
    return word


def words(text: str) -> list[str]:
    """Lower-cased word tokens of a text."""
    return _WORD.findall(text.lower())


def genre_vocabularies(
    texts_by_genre: Mapping[str, Iterable[str]],
    *,
    top_n: int = 40,
    min_doc_freq: float = 0.06,
    max_other_doc_freq: float = 0.04,
) -> dict[str, list[str]]:
    """For each genre, the ``top_n`` stems by document frequency that appear in at
    least ``min_doc_freq`` of its texts and in at most ``max_other_doc_freq`` of the
    texts of every other genre. Lists are disjoint by construction when
    ``min_doc_freq > max_other_doc_freq``.

    Example:
        >>> vocab = genre_vocabularies({g: load_dataset(g, "train").texts for g in genres()})
        >>> vocab["fantasy"][:5]
        ['dragon', 'spell', ...]
    """
    if min_doc_freq <= max_other_doc_freq:
        raise ValueError("min_doc_freq must exceed max_other_doc_freq for disjoint vocabularies")
    doc_freq: dict[str, dict[str, float]] = {}
    for genre, texts in texts_by_genre.items():
        docs = [{stem(w) for w in words(t) if w not in STOPWORDS} for t in texts]
        if not docs:
            raise ValueError(f"genre {genre!r} has no texts")
        counts = Counter(s for doc in docs for s in doc)
        doc_freq[genre] = {s: c / len(docs) for s, c in counts.items()}
    vocab: dict[str, list[str]] = {}
    for genre, freqs in doc_freq.items():
        others = [f for g, f in doc_freq.items() if g != genre]
        keep = [
            (f, s) for s, f in freqs.items()
            if f >= min_doc_freq and len(s) > 2
            and all(o.get(s, 0.0) <= max_other_doc_freq for o in others)
        ]
        keep.sort(key=lambda fs: (-fs[0], fs[1]))
        vocab[genre] = [s for _, s in keep[:top_n]]
    return vocab


def vocab_rate(text: str, vocab: Iterable[str]) -> float:
    """Fraction of the words of ``text`` whose stem is in ``vocab`` (0 for no words)."""
    vocab_set = set(vocab)
    ws = words(text)
    if not ws:
        return 0.0
    return sum(stem(w) in vocab_set for w in ws) / len(ws)


_VOCAB: dict[str, list[str]] = {}


def vocabularies() -> dict[str, list[str]]:
    """The evaluation vocabularies: every genre and the Shakespeare-style set against each other,
    from the training split. The one set of lists notebooks 03, 04 and the widget score with."""
    if not _VOCAB:
        from ..data import genres, load_dataset

        names = [*genres(), "shakespeare"]
        _VOCAB.update(genre_vocabularies({n: load_dataset(n, "train").texts for n in names}))
    return _VOCAB


def evaluation_vocabulary(target: str) -> list[str]:
    """The vocabulary a completion steered towards ``target`` is scored against.

    Example:
        >>> evaluation_vocabulary("fantasy")[:3]
    """
    vocab = vocabularies()
    if target not in vocab:
        raise ValueError(f"no vocabulary for {target!r}; known: {', '.join(vocab)}")
    return vocab[target]
