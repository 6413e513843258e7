"""The concept judge on synthetic texts with known labels, and on the project's corpora."""

from __future__ import annotations

import random

import numpy as np
import pytest
from steerlab.study.judge import ConceptJudge, JudgeError, snippets

WORDS = {
    "sea": ["ship", "wave", "harbour", "sail", "anchor", "tide", "gull", "reef", "mast", "captain", "salt",
            "current"],
    "farm": ["barn", "plough", "cow", "harvest", "field", "tractor", "hay", "wheat", "fence", "pig", "orchard",
             "silo"],
    "city": ["taxi", "subway", "tower", "office", "traffic", "neon", "street", "elevator", "cafe", "siren", "crowd",
             "bridge"],
}
GLUE = ["the", "a", "and", "then", "of", "was", "it", "he", "she", "they"]


def _sentences(label: str, n: int, seed: int) -> list[str]:
    """Texts of a label's own words mixed with shared glue words."""
    rng = random.Random(f"{label}-{seed}")
    return [" ".join(rng.choice(WORDS[label] if rng.random() < 0.4 else GLUE) for _ in range(25))
            for _ in range(n)]


def _synthetic(seed: int) -> dict[str, list[str]]:
    return {label: _sentences(label, 20, seed) for label in WORDS}


def test_snippets_cut_by_words() -> None:
    assert snippets("a b c d e", 4) == ["a b c d"]  # "e" is under half of 4 words: dropped
    assert snippets("a b c d e", 2) == ["a b", "c d", "e"]  # half a piece is kept
    assert snippets("a b c d e f g", 4) == ["a b c d", "e f g"]
    with pytest.raises(ValueError, match="words"):
        snippets("a b", 0)


def test_judge_recovers_planted_labels() -> None:
    judge = ConceptJudge.train(_synthetic(0), _synthetic(1), features="word")
    assert judge.classes == sorted(WORDS)
    assert judge.heldout_accuracy == 1.0
    assert judge.confusion.labels == sorted(WORDS)
    assert np.array_equal(judge.confusion.matrix, 20 * np.eye(3, dtype=int))
    fresh = {label: _sentences(label, 5, 7) for label in WORDS}
    p = judge.proba([t for ts in fresh.values() for t in ts])
    assert p.shape == (15, 3)
    assert np.allclose(p.sum(axis=1), 1.0)
    assert [judge.classes[i] for i in p.argmax(axis=1)] == [lab for lab in fresh for _ in range(5)]
    sea = judge.concept_score(fresh["sea"] + fresh["farm"], "sea")
    assert min(sea[:5]) > 0.5 > max(sea[5:])
    with pytest.raises(ValueError, match="unknown target class 'ocean'"):
        judge.concept_score(["ship"], "ocean")


def test_judge_on_shuffled_labels_is_refused() -> None:
    rng = random.Random(0)
    texts = [t for ts in _synthetic(0).values() for t in ts]
    heldout = [t for ts in _synthetic(1).values() for t in ts]
    labels = [lab for lab in WORDS for _ in range(20)]

    def shuffled(items: list[str]) -> dict[str, list[str]]:
        perm = labels[:]
        rng.shuffle(perm)
        return {lab: [t for t, p in zip(items, perm) if p == lab] for lab in WORDS}

    judge = ConceptJudge.train(shuffled(texts), shuffled(heldout), features="word")
    assert judge.heldout_accuracy < 0.6  # chance is 1/3
    with pytest.raises(JudgeError, match="held-out accuracy"):
        judge.concept_score(["ship wave"], "sea")
    # Knowingly lowering the bar lets it score.
    assert len(judge.concept_score(["ship wave"], "sea", min_accuracy=0.0)) == 1


def test_judge_is_deterministic_and_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    import steerlab.study.judge as judge_mod

    a = ConceptJudge.train(_synthetic(0), _synthetic(1), features=["word", "char"])
    assert ConceptJudge.train(_synthetic(0), _synthetic(1), features=["word", "char"]) is a
    assert set(a.candidates) == {"word", "char"}
    assert a.heldout_accuracy == max(a.candidates.values())
    text = ["ship barn taxi the a", "cow hay the fence"]
    monkeypatch.setattr(judge_mod, "_CACHE", {})
    retrained = ConceptJudge.train(_synthetic(0), _synthetic(1), features=["word", "char"])
    assert retrained is not a
    assert np.array_equal(retrained.proba(text), a.proba(text))
    changed = _synthetic(0)
    changed["sea"] = changed["sea"][:-1]
    assert ConceptJudge.train(changed, _synthetic(1), features=["word", "char"]).content_key != a.content_key
    strict = ConceptJudge.train(_synthetic(0), _synthetic(1), features=["word", "char"], min_accuracy=1.0)
    assert strict.min_accuracy == 1.0 and retrained.min_accuracy == 0.8


def test_bad_inputs_are_named() -> None:
    with pytest.raises(ValueError, match="at least two classes"):
        ConceptJudge.train({"sea": ["ship"]}, {"sea": ["ship"]})
    with pytest.raises(ValueError, match=r"held-out classes \['moon'\]"):
        ConceptJudge.train(_synthetic(0), {"moon": ["crater"]})
    with pytest.raises(ValueError, match="unknown features 'bytes'"):
        ConceptJudge.train(_synthetic(0), _synthetic(1), features="bytes")
    with pytest.raises(ValueError, match=r"train\['sea'\]\[0\]"):
        ConceptJudge.train({"sea": [""], "farm": ["barn"]}, {"sea": ["ship"]})


def test_real_judge_is_accurate_enough() -> None:
    judge = ConceptJudge.train()
    print(f"\nreal judge: held-out accuracy {judge.heldout_accuracy:.3f} on {judge.n_heldout} texts "
          f"({judge.n_train} train), features {judge.features}, trained in {judge.train_seconds:.1f} s; "
          f"by snippet words {judge.accuracy_by_words}; per class {judge.confusion.per_class_accuracy()}")
    assert "shakespeare" in judge.classes and len(judge.classes) == 8
    assert judge.heldout_accuracy >= 0.8
    assert judge.confusion.matrix.sum() == judge.n_heldout
    scores = judge.concept_score(["The wizard raised his staff, and the dragon bowed before the elven queen."],
                                 "fantasy")
    assert scores[0] > 1 / len(judge.classes)
