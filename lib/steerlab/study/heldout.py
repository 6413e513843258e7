"""Held-out stories for steerability: the target's own and the other genres' (notebooks 03 and 04).

Steerability (:func:`steerlab.metrics.steerability_each`) pairs held-out stories of the target
with held-out stories of other genres; both notebooks draw them here, so the same target gets
the same stories in both.
"""

from __future__ import annotations

from ..data import genres, load_dataset

__all__ = ["has_heldout", "heldout_others", "heldout_target"]


def has_heldout(target: str) -> bool:
    """Whether ``target`` is a named set with held-out stories to steer towards (a genre or ``shakespeare``).

    Example:
        >>> has_heldout("fantasy"), has_heldout("general"), has_heldout("Love")
        (True, False, False)
    """
    return target in (*genres(), "shakespeare")


def heldout_target(target: str, n: int) -> list[str]:
    """``n`` held-out texts of ``target`` (all of them if it has fewer), chosen reproducibly.

    Example:
        >>> len(heldout_target("fantasy", 6))
        6
    """
    return load_dataset(target, "heldout").sample(n, seed=0).texts


def heldout_others(target: str, n: int) -> list[str]:
    """``n`` held-out stories of every genre but ``target``, spread evenly over the genres
    (the steerability's other continuations).

    Example:
        >>> len(heldout_others("fantasy", 6))
        6
    """
    pool = [r.text for g in genres() if g != target for r in load_dataset(g, "heldout").records]
    step = max(1, len(pool) // max(1, n))
    return pool[::step][:n]
