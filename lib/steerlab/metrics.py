"""How much a steered model moved towards a target, and how much it was damaged.

- effect: target-vocabulary rate of completions (see :mod:`steerlab.vocab`), and
  the log-probability shift of held-out target text under steering;
- steerability (Tan et al. 2024): the per-sample slope of a target-vs-other propensity
  against the coefficient, from forward passes only (:func:`steerability`);
- damage: perplexity ratio and next-token KL divergence on general text with
  the vector applied, against the unsteered model;
- fluency: perplexity of completions under the unsteered model, and repetition
  (:func:`distinct_n`);
- relevance: how much the steered model still expects the unsteered completion of a
  prompt (:func:`relevance`).

Judge-free stand-ins for AxBench's three LLM ratings (concept, instruction relevance,
fluency; Wu et al. 2025). The concept rating lives in :mod:`steerlab.study.judge`.

- **fluency**: perplexity of a completion under the unsteered model says whether the text
  is language the model finds ordinary; it is blind to loops (a repeated phrase becomes
  very predictable), which :func:`distinct_n` catches: the share of distinct n-grams drops
  towards ``1/k`` for a phrase repeated ``k`` times. Both are needed; neither alone is
  the judge's "is it fluent".
- **relevance**: the judge asks whether the response still addresses the instruction.
  The unsteered completion is the model's own answer to the prompt; its mean log-prob
  per token under the *steered* model measures how much of that prompt-following the
  steered model keeps. It is 0 change at coefficient 0 by construction, falls as steering
  pulls the model off the prompt, and needs no text to be generated per condition. Its
  limit: it also falls for the intended change of topic, so it is read against the
  unsteered value and beside the concept score, as AxBench's harmonic mean does.

Positions in the forward-pass metrics (:func:`continuation_logprobs`, :func:`relevance`,
:func:`steerability`) mean what they mean in steered generation, with the opening (the
prompt) followed by the continuation (the tokens the model would generate): ``all`` steers
every token, ``all_prompt`` every opening token, ``last_prompt`` the opening's last,
``first`` / ``after_bos`` its first (after an added BOS); continuation tokens are
steered only under ``all``. So a forward-pass score and a generation at one position
measure the same intervention.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .intervention import Intervention
from .models import Model
from .replay import replay_conditions, steered_logits_each
from .steer import added_vector
from .tokens import STEER_POSITIONS, Batch, check_position, encode
from .trace import check_layers

__all__ = [
    "SteerabilityResult",
    "bootstrap_mean_ci",
    "completion_perplexity",
    "continuation_logprobs",
    "distinct_n",
    "relevance",
    "split_story",
    "steerability",
    "steerability_each",
    "steered_text_scores",
]


@torch.inference_mode()
def completion_perplexity(model: Model, prompts: Sequence[str], completions: Sequence[Sequence[int]],
                          *, batch_size: int = 32) -> list[float]:
    """Perplexity of each completion's tokens given its prompt, under the unsteered model.

    A completion with no tokens (or a prompt with none) gets ``nan``. Completions of
    one prompt share its forward pass: a sweep's rows (one prompt, many
    coefficients or methods) run the prompt once per ``batch_size`` completions and
    repeat its key-value cache for them, so only completion tokens are recomputed;
    identical completions of one prompt are scored once.

    Example:
        >>> completion_perplexity(model, ["Hi"], [model.tokenizer(" there")["input_ids"]])
    """
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    tok = model.tokenizer
    device = model.device
    out = [float("nan")] * len(prompts)
    # prompt -> distinct completion -> the rows that have it: a sweep's weak conditions
    # often reproduce the unsteered completion, which is scored once.
    by_prompt: dict[str, dict[tuple[int, ...], list[int]]] = {}
    for i, p in enumerate(prompts):
        if len(completions[i]):
            by_prompt.setdefault(p, {}).setdefault(tuple(int(t) for t in completions[i]), []).append(i)
    for prompt, distinct in by_prompt.items():
        rows = [same[0] for same in distinct.values()]
        if not prompt.strip():
            continue
        pid = encode(tok, [prompt]).input_ids[0].tolist()  # as generation encodes it (a BOS where the tokenizer adds one)
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            head = model.hf(input_ids=torch.tensor([pid], device=device), use_cache=True)
            first = head.logits[0, -1].float().log_softmax(-1)  # [vocab], predicts each first token
            cache = head.cache
            cache.batch_repeat_interleave(len(chunk))
            width = max(len(completions[i]) for i in chunk)
            ids = torch.full((len(chunk), width), tok.pad_token_id or 0, dtype=torch.long)
            real = torch.zeros_like(ids, dtype=torch.bool)
            for j, i in enumerate(chunk):  # right padding: pads follow every real token
                ids[j, :len(completions[i])] = torch.tensor(list(completions[i]))
                real[j, :len(completions[i])] = True
            ids, real = ids.to(device), real.to(device)
            mask = torch.cat([torch.ones(len(chunk), len(pid), dtype=torch.long, device=device), real.long()], dim=1)
            position_ids = (len(pid) + torch.arange(width, device=device)).expand(len(chunk), width)
            logits = model.hf(input_ids=ids, attention_mask=mask, position_ids=position_ids,
                              cache=cache, use_cache=True).logits  # [chunk, width, vocab]
            # Position j predicts token j + 1; the first token is predicted by the prompt's last position.
            following = torch.cat([ids[:, 1:], torch.zeros_like(ids[:, :1])], dim=1)
            rest = _logprobs_of(logits.reshape(-1, logits.shape[-1]), following.reshape(-1)).view(len(chunk), width)
            token_logp = torch.cat([first[ids[:, :1]], rest[:, :-1]], dim=1).masked_fill(~real, 0.0)  # [chunk, width]
            nll = -token_logp.sum(1) / real.sum(1)
            for j, i in enumerate(chunk):
                for k in distinct[tuple(int(t) for t in completions[i])]:
                    out[k] = float(nll[j].exp())
    return out


# Vocabulary rows per chunk when logits become log-probabilities: 8 x 262,144 float32 values
# (Gemma's vocabulary) stay in cache, which makes the log-softmax ~3x faster than over a whole
# [positions, vocab] block on this CPU, and no float32 copy of the block is made.
_ROWS = 8


def _logprobs_of(logits: torch.Tensor, tokens: torch.Tensor, *, rows: torch.Tensor | None = None) -> torch.Tensor:
    """``log p(tokens[i])`` under ``logits[i]`` (``[n, vocab]``, any float dtype), in float32,
    on the logits' device, the log-normaliser :data:`_ROWS` rows at a time. With ``rows``
    (``[m]`` indices into ``logits``), ``log p(tokens[i])`` under ``logits[rows[i]]``: one
    row may score several tokens, its normaliser computed once."""
    norm = torch.empty(logits.shape[0], dtype=torch.float32, device=logits.device)
    for start in range(0, logits.shape[0], _ROWS):
        norm[start:start + _ROWS] = logits[start:start + _ROWS].float().logsumexp(-1)
    index = torch.arange(logits.shape[0], device=logits.device) if rows is None else rows.to(logits.device)
    return logits[index, tokens.to(logits.device)].float() - norm[index]


def _scored_chunks(batch: Batch) -> tuple[list[tuple[int, torch.Tensor]], torch.Tensor, int]:
    """The positions that predict a real next token, as ``(row, positions)`` chunks of at most
    :data:`_ROWS`; the next tokens ``[batch, seq-1]``; their count."""
    mask = (batch.attention_mask[:, 1:] * batch.attention_mask[:, :-1]).bool()
    chunks = [(r, pos[start:start + _ROWS]) for r in range(mask.shape[0])
              for pos in [mask[r].nonzero()[:, 0]] for start in range(0, len(pos), _ROWS)]
    return chunks, batch.input_ids[:, 1:], int(mask.sum())


def _text_scores(batch: Batch, each_logits: Iterator[torch.Tensor],
                 additions: Sequence[torch.Tensor | None]) -> list[dict[str, float]]:
    """:func:`steered_text_scores` from the plain logits and then one ``[batch, seq, vocab]``
    logits tensor per addition (``each_logits``), chunk by chunk."""
    chunks, targets, n_tok = _scored_chunks(batch)
    plain = next(each_logits)
    base = [plain[r, pos].float().log_softmax(-1) for r, pos in chunks]  # float32, one chunk each
    tok = [targets[r, pos].to(plain.device) for r, pos in chunks]
    base_nll = float(-sum(lp.gather(-1, t[:, None]).sum() for lp, t in zip(base, tok)) / n_tok)
    results = []
    for add in additions:
        if add is None:
            results.append({"nll": base_nll, "perplexity_ratio": 1.0, "logprob_shift": 0.0, "kl": 0.0})
            continue
        logits = next(each_logits)
        nll_sum = kl_sum = torch.zeros((), dtype=torch.float64, device=plain.device)
        for (r, pos), b, t in zip(chunks, base, tok):
            lp = logits[r, pos].float().log_softmax(-1)
            nll_sum = nll_sum - lp.gather(-1, t[:, None]).sum().double()
            kl_sum = kl_sum + (b.exp() * (b - lp)).sum().double()
        nll, kl = float(nll_sum) / n_tok, float(kl_sum) / n_tok
        results.append({"nll": nll, "perplexity_ratio": math.exp(nll - base_nll), "logprob_shift": base_nll - nll,
                        "kl": kl})
    return results


@torch.inference_mode()
def steered_text_scores(
    model: Model,
    texts: Sequence[str],
    additions: Sequence[torch.Tensor | None],
    *,
    layer: int,
    position: str = "all_prompt",
    max_length: int = 64,
) -> list[dict[str, float]]:
    """For each addition (one condition), scores of ``texts`` under steering:

    - ``nll``: mean next-token negative log-likelihood per token;
    - ``perplexity_ratio``: ``exp(nll - nll_unsteered)``;
    - ``logprob_shift``: mean per-token log-prob change against unsteered (``-(nll - nll_unsteered)``);
    - ``kl``: mean over positions of KL(unsteered || steered) of next-token distributions.

    A ``None`` addition gives ratio 1, shift 0 and KL 0 exactly (a zero vector,
    which runs through the steering path, gives them up to float error). Log-probabilities
    are float32 whatever the model's dtype.
    """
    batch = encode(model.tokenizer, texts, padding_side="right", max_length=max_length)
    # The plain pass comes first from steered_logits_each, with None or without.
    each = steered_logits_each(model, batch, [None, *(a for a in additions if a is not None)], layer=layer,
                               position=position)
    return _text_scores(batch, each, additions)


def bootstrap_mean_ci(values: Sequence[float] | np.ndarray, *, n_boot: int = 2000, seed: int = 0,
                      level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean of ``values``.

    Non-finite values are an error (drop them knowingly first); one value gives ``(v, v)``.

    Example:
        >>> bootstrap_mean_ci([0.1, 0.2, 0.3, 0.4])
        (0.15, 0.35000000000000003)
    """
    vals = np.asarray(values, dtype=float).ravel()
    if vals.size == 0:
        raise ValueError("no values to bootstrap")
    if not np.isfinite(vals).all():
        raise ValueError(f"values contain NaN or inf at indices {np.flatnonzero(~np.isfinite(vals)).tolist()}")
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 1:
        raise ValueError(f"n_boot must be an integer >= 1, got {n_boot!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    rng = np.random.default_rng(seed)
    means = vals[rng.integers(0, vals.size, size=(n_boot, vals.size))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


_WORD = re.compile(r"\w+|[^\w\s]")


def distinct_n(tokens: str | Sequence[int] | Sequence[str], n: int = 2) -> float:
    """Share of distinct n-grams among a text's n-grams: 1 for no repeat, low for loops.

    A string is split into lower-cased words and punctuation marks (``\\w+|[^\\w\\s]``);
    a sequence of token ids or of words is used as it is. A phrase of ``m`` tokens repeated
    ``k`` times has ``m`` distinct n-grams among ``k*m - n + 1``. Fewer than ``n`` tokens
    (an empty completion) give ``nan``: no n-gram, no rate.

    Example:
        >>> distinct_n("a maid, a maid, a maid", 2)  # 3 distinct of 7 bigrams
        0.42857142857142855
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    items: list[Any] = _WORD.findall(tokens.lower()) if isinstance(tokens, str) else list(tokens)
    grams = [tuple(items[i:i + n]) for i in range(len(items) - n + 1)]
    return len(set(grams)) / len(grams) if grams else float("nan")


def _position_addition(add: torch.Tensor, opening_length: int, bos: bool, position: str) -> torch.Tensor:
    """The ``[k, d_model]`` addition that steers a row's opening of ``k`` tokens by generation's rule:
    the edit :meth:`Intervention.apply` makes to a prompt of ``k`` tokens, applied to zeros."""
    zeros = torch.zeros(1, opening_length, add.shape[-1], dtype=add.dtype)
    real = torch.ones(1, opening_length, dtype=torch.bool)
    edit = Intervention(0, [add], [None], "add", position)
    return edit.apply(zeros, real, continuing=False, bos=torch.tensor([bool(bos)]))[0]


@torch.inference_mode()
def continuation_logprobs(
    model: Model,
    openings: Sequence[Sequence[int]],
    continuations: Sequence[Sequence[int]],
    additions: Sequence[torch.Tensor | None],
    *,
    layer: int,
    position: str = "all",
    bos: Sequence[bool] | None = None,
    batch_size: int = 8,
    share_openings: bool = True,
) -> np.ndarray:
    """Mean log-prob per token of each continuation after its opening, under each addition.

    Row ``i`` is ``openings[i] + continuations[i]`` (token ids; the opening with the special
    tokens the tokenizer adds, as :func:`steerlab.tokens.encode` gives them). Only the
    continuation's tokens are scored, each with everything before it as context. ``position``
    follows generation (module docstring); ``bos[i]`` says the opening starts with an added
    BOS (``after_bos`` needs it). All additions share one plain pass of the blocks below
    ``layer`` per chunk of ``batch_size`` sequences (block replay, as in
    :func:`steerlab.replay.steered_logits_each`); rows of any opening length share a chunk.
    With ``share_openings``, rows whose openings are equal (same tokens and ``bos``) are one
    sequence: the opening once, then each continuation, which attends to the opening and to
    itself only (a 4D attention mask, positions numbered as in its own row), so the opening's
    tokens are computed once per condition instead of once per row; the scores are the
    separate rows' up to float rounding (the tests check both against generation).
    ``None`` is the unsteered model; an empty continuation gives ``nan``.

    Returns:
        ``[len(additions), len(openings)]`` array.

    Example:
        >>> continuation_logprobs(model, [[1, 2]], [[3, 4]], [None, 4 * v], layer=6).shape
        (2, 1)
    """
    check_position(position, STEER_POSITIONS)
    check_layers(model, [layer], allow_last=False)
    if len(openings) != len(continuations):
        raise ValueError(f"{len(openings)} openings but {len(continuations)} continuations")
    flags = [False] * len(openings) if bos is None else [bool(b) for b in bos]
    if len(flags) != len(openings):
        raise ValueError(f"{len(flags)} bos flags for {len(openings)} openings")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    for i, o in enumerate(openings):
        if not len(o):
            raise ValueError(f"opening {i} has no tokens: a continuation needs at least one token before it")
    for j, a in enumerate(additions):
        if a is not None and (a.dim() != 1 or a.shape[0] != model.d_model or not bool(torch.isfinite(a).all())):
            raise ValueError(f"addition {j} has shape {tuple(a.shape)} or is not finite; expected a finite "
                             f"[{model.d_model}] tensor")
    out = np.full((len(additions), len(openings)), np.nan)
    # Rows with one opening share it (steerability's crossed pairs): one packed sequence
    # holds the opening once, then each continuation, which sees the opening and itself only.
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i in range(len(openings)):
        if len(continuations[i]):
            key = (tuple(int(t) for t in openings[i]), flags[i]) if share_openings else (i,)
            groups.setdefault(key, []).append(i)
    # A pack longer than a sliding attention window would let a layer of that window see further
    # than in the rows alone (the 4D mask stands for every layer's), so such groups stay rows.
    window = _packing_window(model)
    packs_or_rows: list[list[int]] = []
    for rows in groups.values():
        fits = len(openings[rows[0]]) + sum(len(continuations[i]) for i in rows) <= window
        packs_or_rows += [rows] if fits or len(rows) == 1 else [[i] for i in rows]
    # Longest first, neighbours in length share a chunk: little padding.
    packs = sorted(packs_or_rows, key=lambda rows: -(len(openings[rows[0]]) +
                                                       sum(len(continuations[i]) for i in rows)))
    pad = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    for start in range(0, len(packs), batch_size):
        chunk = packs[start:start + batch_size]
        seqs, segments, positions, places = [], [], [], []
        for rows in chunk:
            ko = len(openings[rows[0]])
            seq, seg, pos = [int(t) for t in openings[rows[0]]], [0] * ko, list(range(ko))
            place = []  # per row: (its first continuation position in the sequence, its length)
            for k, i in enumerate(rows, 1):
                m = len(continuations[i])
                place.append((len(seq), m))
                seq += [int(t) for t in continuations[i]]
                seg += [k] * m
                pos += range(ko, ko + m)  # numbered on from the opening, as in its own row
            seqs.append(seq)
            segments.append(seg)
            positions.append(pos)
            places.append(place)
        width = max(len(q) for q in seqs)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        seg_ids = torch.full((len(chunk), width), -1, dtype=torch.long)
        pos_ids = torch.zeros((len(chunk), width), dtype=torch.long)
        for r, (q, seg, pos) in enumerate(zip(seqs, segments, positions)):
            ids[r, :len(q)] = torch.tensor(q)
            mask[r, :len(q)] = 1
            seg_ids[r, :len(q)] = torch.tensor(seg)
            pos_ids[r, :len(q)] = torch.tensor(pos)
        firsts = [rows[0] for rows in chunk]
        batch = Batch(ids, mask, bos=torch.tensor([flags[i] for i in firsts], dtype=torch.bool))
        forward = None
        if any(len(rows) > 1 for rows in chunk):
            forward = {"input_ids": ids, "attention_mask": _packed_attention(seg_ids, model.dtype),
                       "position_ids": pos_ids}
        if position == "all":
            conditions = [None if a is None else Intervention(layer, [a], [None], "add", "all_prompt")
                          for a in additions]  # a forward pass's tokens are all "prompt": every one is steered
        else:
            # Generation's prompt-only rules: row r gets a [k_r, d_model] addition on its opening's tokens.
            conditions = [None if a is None else Intervention(
                layer, [_position_addition(a, len(openings[i]), flags[i], position) for i in firsts],
                [None] * len(chunk), "add", "first") for a in additions]
        # Only the positions that predict a continuation token go through the unembedding: the
        # opening's last (which predicts every continuation's first token) and each continuation's.
        keep = torch.zeros((len(chunk), width), dtype=torch.bool)
        flat: list[int] = []
        wanted: list[int] = []
        owner: list[int] = []
        rows_in_chunk: list[int] = []
        for r, (rows, place) in enumerate(zip(chunk, places)):
            ko = len(openings[rows[0]])
            for i, (s0, m) in zip(rows, place):
                predictors = [ko - 1, *range(s0, s0 + m - 1)]
                keep[r, predictors] = True
                flat += [r * width + p for p in predictors]
                wanted += [int(t) for t in continuations[i]]
                owner += [len(rows_in_chunk)] * m
                rows_in_chunk.append(i)
        kept_index = keep.flatten().long().cumsum(0) - 1
        sel = kept_index[torch.tensor(flat)]
        wanted_t, owner_t = torch.tensor(wanted), torch.tensor(owner)
        counts = torch.bincount(owner_t, minlength=len(rows_in_chunk)).double()
        for j, logits in enumerate(replay_conditions(model, batch, conditions, layer, keep=keep,
                                                     forward_inputs=forward)):  # [kept, vocab]
            logp = _logprobs_of(logits, wanted_t, rows=sel).cpu().double()
            means = torch.zeros(len(rows_in_chunk), dtype=torch.float64).index_add_(0, owner_t, logp) / counts
            out[j, rows_in_chunk] = means.numpy()
    return out


def _packing_window(model: Model) -> float:
    """The longest packed sequence :func:`continuation_logprobs` may build on ``model``: its
    sliding attention window where it has one; 0 (no packing) unless its attention takes a 4D
    mask as given (``sdpa``, ``eager``)."""
    config = model.hf.config
    if getattr(config, "_attn_implementation", "eager") not in ("sdpa", "eager"):
        return 0
    window = getattr(config, "sliding_window", None)
    return float(window) if window else math.inf


def _packed_attention(segments: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The additive ``[batch, 1, seq, seq]`` mask of packed sequences (``segments``: 0 for the
    opening, ``k`` for continuation ``k``, -1 for padding): causal, and a continuation sees the
    opening and itself only. Every position sees itself, so no row of the softmax is empty."""
    width = segments.shape[1]
    q, k = segments[:, :, None], segments[:, None, :]
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    allowed = (causal & (k >= 0) & ((k == 0) | (k == q))) | torch.eye(width, dtype=torch.bool)
    return torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)[:, None]


def relevance(
    model: Model,
    prompts: Sequence[str],
    unsteered_completions: Sequence[Sequence[int]],
    additions: Sequence[torch.Tensor | None],
    *,
    layer: int,
    position: str = "all",
    batch_size: int = 8,
) -> list[list[float]]:
    """For each addition, the mean log-prob per token of each prompt's unsteered completion
    under the steered model: how much the steered model still expects the ordinary answer.

    ``unsteered_completions[i]`` are the token ids :func:`steerlab.steer.steered_generate`
    gave for ``prompts[i]`` with no addition; prompts are encoded as it encodes them. A
    ``None`` addition gives the unsteered log-prob; compare a condition with it (the
    difference is a per-token log probability ratio). ``position`` follows generation
    (module docstring). Empty completions give ``nan``.

    Returns:
        ``[len(additions)][len(prompts)]`` floats (nats per token, <= 0).

    Example:
        >>> plain = steered_generate(model, prompts, [None] * len(prompts), layer=6, do_sample=False)
        >>> unsteered, steered = relevance(model, prompts, plain, [None, 4 * v], layer=6)
    """
    if len(prompts) != len(unsteered_completions):
        raise ValueError(f"{len(prompts)} prompts but {len(unsteered_completions)} completions")
    batch = encode(model.tokenizer, prompts)
    openings = [batch.input_ids[i, :int(n)].tolist() for i, n in enumerate(batch.lengths)]
    scores = continuation_logprobs(model, openings, unsteered_completions, additions, layer=layer,
                                   position=position, bos=batch.bos.tolist(), batch_size=batch_size)
    return [[float(x) for x in row] for row in scores]


def split_story(text: str, split_fraction: float = 0.5, max_words: int | None = 60) -> tuple[str, str]:
    """A text cut into an opening and a continuation, by words.

    The text's first ``max_words`` words (all with ``None``) are cut after
    ``round(split_fraction * n)`` words (at least one on each side); the continuation
    keeps its leading space, so tokenizing it alone gives the tokens it has in the text.

    Example:
        >>> split_story("one two three four", 0.5)
        ('one two', ' three four')
    """
    if not 0 < split_fraction < 1:
        raise ValueError(f"split_fraction must be in (0, 1), got {split_fraction!r}")
    if max_words is not None and (isinstance(max_words, bool) or not isinstance(max_words, int) or max_words < 2):
        raise ValueError(f"max_words must be an integer >= 2 or None, got {max_words!r}")
    words = text.split()[:max_words]
    if len(words) < 2:
        raise ValueError(f"text {text[:40]!r} has {len(words)} word(s); an opening and a continuation need 2")
    cut = min(max(round(split_fraction * len(words)), 1), len(words) - 1)
    return " ".join(words[:cut]), " " + " ".join(words[cut:])


@dataclass
class SteerabilityResult:
    """Per-sample propensities and slopes of one vector at one layer and position.

    Attributes:
        coefficients: the grid, in the order of ``propensity``'s columns.
        propensity: ``[n_samples, n_coefficients]`` target-minus-other log-prob per token.
        slopes: ``[n_samples]`` least-squares slope of each row against the coefficients.
        mean: mean slope (nats per token per unit coefficient); ``ci`` its bootstrap interval.
        anti_steerable_fraction: share of samples with a negative slope.
        other_index: the other text each sample is paired with (index into ``other_texts``).
    """

    coefficients: list[float]
    propensity: np.ndarray
    slopes: np.ndarray
    mean: float
    ci: tuple[float, float]
    anti_steerable_fraction: float
    other_index: list[int] = field(default_factory=list)

    @property
    def n_samples(self) -> int:
        return int(self.slopes.shape[0])

    def summary(self) -> dict[str, Any]:
        """Plain numbers for a results row: ``steerability``, its CI, the anti-steerable share,
        the mean propensity at each coefficient."""
        return {"steerability": self.mean, "steerability_ci": list(self.ci),
                "anti_steerable_fraction": self.anti_steerable_fraction, "n_samples": self.n_samples,
                "propensity_by_coefficient": dict(zip(self.coefficients, self.propensity.mean(0).tolist()))}


def _least_squares_slopes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Slope of each row of ``y`` ``[n, k]`` against ``x`` ``[k]``."""
    xc = x - x.mean()
    return ((y - y.mean(axis=1, keepdims=True)) @ xc) / float(xc @ xc)


def steerability(
    model: Model,
    vector_direction: torch.Tensor,
    *,
    layer: int,
    target_texts: Sequence[str],
    other_texts: Sequence[str],
    coefficients: Sequence[float],
    position: str = "all_prompt",
    split_fraction: float = 0.5,
    typical_norm: float | None = None,
    max_words: int | None = 60,
    batch_size: int = 8,
    n_boot: int = 2000,
    seed: int = 0,
) -> SteerabilityResult:
    """Forward-pass steerability (Tan et al. 2024): per-sample slope of propensity against coefficient.

    Each text is cut into an opening and a continuation (:func:`split_story`: by words,
    ``split_fraction`` of its first ``max_words``). Sample ``i`` pairs target text ``i`` with
    other text ``j(i)`` (spread evenly over ``other_texts``: ``j = i * n_other // n_target``,
    cycling when there are fewer others) and crosses them: both continuations are scored
    after both openings, so neither gains from following its own opening::

        propensity_i(c) = 1/2 [ (lp(T_cont | T_open) - lp(O_cont | T_open))
                              + (lp(T_cont | O_open) - lp(O_cont | O_open)) ]

    where ``lp`` is the mean log-prob per continuation token under the addition for
    coefficient ``c``: ``added_vector(vector_direction, c, typical_norm)`` when
    ``typical_norm`` is given (``c`` in units of the layer's typical norm), else
    ``c * vector_direction``. The steerability of sample ``i`` is the least-squares slope of
    ``propensity_i`` against ``c``; the grid must hold 0, a negative and a positive value.
    ``position`` follows generation (module docstring): under the default ``all_prompt``
    the openings are steered and the continuations read them, as generated tokens read a
    steered prompt. All coefficients share the blocks below ``layer``.

    Example:
        >>> r = steerability(model, v, layer=15, target_texts=fantasy, other_texts=others,
        ...                  coefficients=[-0.5, -0.25, 0, 0.25, 0.5], typical_norm=typical_norm(model, 15))
        >>> r.mean, r.ci, r.anti_steerable_fraction
    """
    return steerability_each(model, [vector_direction], layer=layer, target_texts=target_texts,
                             other_texts=other_texts, coefficients=coefficients, position=position,
                             split_fraction=split_fraction, typical_norm=typical_norm, max_words=max_words,
                             batch_size=batch_size, n_boot=n_boot, seed=seed)[0]


def steerability_each(
    model: Model,
    vector_directions: Sequence[torch.Tensor],
    *,
    layer: int,
    target_texts: Sequence[str],
    other_texts: Sequence[str],
    coefficients: Sequence[float],
    position: str = "all_prompt",
    split_fraction: float = 0.5,
    typical_norm: float | None = None,
    max_words: int | None = 60,
    batch_size: int = 8,
    n_boot: int = 2000,
    seed: int = 0,
    share_openings: bool = True,
) -> list[SteerabilityResult]:
    """:func:`steerability` of several vectors on the same texts, layer and grid: one result each.

    Every vector's conditions share one plain pass (and the blocks below ``layer``) per chunk
    of rows, so ``n`` vectors cost less than ``n`` calls of :func:`steerability`. The two
    continuations of each opening are scored from one sequence (``share_openings``, see
    :func:`continuation_logprobs`; ``False`` scores every row alone, for comparison).

    Example:
        >>> [r.mean for r in steerability_each(model, [v, w], layer=15, target_texts=fantasy,
        ...                                    other_texts=others, coefficients=[-0.25, 0, 0.25])]
    """
    check_position(position, STEER_POSITIONS)
    directions = list(vector_directions)
    if not directions:
        raise ValueError("no vector directions given")
    for k, vector_direction in enumerate(directions):
        if not isinstance(vector_direction, torch.Tensor) or vector_direction.shape != (model.d_model,):
            raise ValueError(f"vector_direction must be a [{model.d_model}] tensor, got "
                             f"{getattr(vector_direction, 'shape', type(vector_direction).__name__)} (vector {k})")
        if not bool(torch.isfinite(vector_direction).all()) or float(vector_direction.norm()) == 0:
            raise ValueError(f"vector_direction must be finite and non-zero (vector {k})")
    coefs = [float(c) for c in coefficients]
    if not all(math.isfinite(c) for c in coefs) or 0.0 not in coefs or min(coefs) >= 0 or max(coefs) <= 0:
        raise ValueError(f"coefficients {coefs} must be finite and include 0, a negative and a positive value "
                         "(a slope through the unsteered point, both ways)")
    if typical_norm is not None and not (math.isfinite(typical_norm) and typical_norm > 0):
        raise ValueError(f"typical_norm must be a positive number or None, got {typical_norm!r}")
    targets, others = list(target_texts), list(other_texts)
    if not targets or not others:
        raise ValueError(f"need target and other texts, got {len(targets)} and {len(others)}")
    tok = model.tokenizer
    n = len(targets)
    other_index = [i * len(others) // n if len(others) >= n else i % len(others) for i in range(n)]

    def pieces(texts: list[str]) -> tuple[list[list[int]], list[bool], list[list[int]]]:
        cuts = [split_story(t, split_fraction, max_words) for t in texts]
        enc = encode(tok, [o for o, _ in cuts])
        opens = [enc.input_ids[i, :int(k)].tolist() for i, k in enumerate(enc.lengths)]
        conts = [[int(x) for x in tok(c, add_special_tokens=False)["input_ids"]] for _, c in cuts]
        return opens, enc.bos.tolist(), conts

    t_open, t_bos, t_cont = pieces(targets)
    o_open, o_bos, o_cont = pieces([others[j] for j in other_index])
    # Rows per sample: (T_open, T_cont), (T_open, O_cont), (O_open, T_cont), (O_open, O_cont).
    openings = [o for i in range(n) for o in (t_open[i], t_open[i], o_open[i], o_open[i])]
    conts = [c for i in range(n) for c in (t_cont[i], o_cont[i], t_cont[i], o_cont[i])]
    bos = [b for i in range(n) for b in (t_bos[i], t_bos[i], o_bos[i], o_bos[i])]
    # One unsteered condition (c = 0) for every vector: it is the same pass.
    adds: list[torch.Tensor | None] = [None]
    for vector_direction in directions:
        direction = vector_direction.detach().float().cpu()
        adds += [added_vector(direction, c, typical_norm) for c in coefs if c != 0]
    lp_all = continuation_logprobs(model, openings, conts, adds, layer=layer, position=position, bos=bos,
                                   batch_size=batch_size, share_openings=share_openings)  # [1 + vectors x (coefs - 1), 4 n]
    per = len(coefs) - 1
    results = []
    for k in range(len(directions)):
        steered = iter(lp_all[1 + k * per:1 + (k + 1) * per])
        lp = np.stack([lp_all[0] if c == 0 else next(steered) for c in coefs]).reshape(len(coefs), n, 4)
        propensity = 0.5 * ((lp[..., 0] - lp[..., 1]) + (lp[..., 2] - lp[..., 3])).T  # [sample, coef]
        slopes = _least_squares_slopes(np.array(coefs), propensity)
        results.append(SteerabilityResult(
            coefficients=coefs, propensity=propensity, slopes=slopes, mean=float(slopes.mean()),
            ci=bootstrap_mean_ci(slopes, n_boot=n_boot, seed=seed),
            anti_steerable_fraction=float(np.mean(slopes < 0)), other_index=other_index))
    return results
