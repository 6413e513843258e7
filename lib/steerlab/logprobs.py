"""The log-probability engine behind the scores: what a (steered) model assigns to given tokens.

- :func:`completion_perplexity`: each completion's perplexity given its prompt, under the
  unsteered model (a prompt's key-value cache shared by its completions);
- :func:`steered_text_scores`: perplexity ratio and next-token KL of texts under each
  addition against the plain pass (block replay from the steered layer);
- :func:`continuation_logprobs`: the mean log-prob of each continuation after its opening under
  each addition, with generation's position rules, an opening's continuations packed into one
  sequence where the attention allows it.

Log-probabilities are taken 8 vocabulary rows at a time in float32 (:func:`logprobs_of`), so no
float32 copy of a ``[positions, vocab]`` block is made. The measures built on these live in
:mod:`steerlab.metrics`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from .intervention import Intervention
from .models import Model
from .replay import Replay, replay_conditions, steered_logits_each
from .tokens import STEER_POSITIONS, Batch, check_fits, check_position, encode
from .trace import check_layers

__all__ = ["TextScores", "as_conditions", "completion_perplexity", "continuation_logprobs", "logprobs_of", "steered_text_scores", "text_scores"]


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
        check_fits(model.hf.config, [len(pid) + len(completions[i]) for i in rows], what="prompt + completion",
                   names=rows)
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
            rest = logprobs_of(logits.reshape(-1, logits.shape[-1]), following.reshape(-1)).view(len(chunk), width)
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


def logprobs_of(logits: torch.Tensor, tokens: torch.Tensor, *, rows: torch.Tensor | None = None) -> torch.Tensor:
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


def _scores_of(chunks: list[tuple[int, torch.Tensor]], base: list[torch.Tensor], tok: list[torch.Tensor],
               n_tok: int, base_nll: float, logits: torch.Tensor) -> dict[str, float]:
    nll_sum = kl_sum = torch.zeros((), dtype=torch.float64, device=logits.device)
    for (r, pos), b, t in zip(chunks, base, tok):
        lp = logits[r, pos].float().log_softmax(-1)
        nll_sum = nll_sum - lp.gather(-1, t[:, None]).sum().double()
        kl_sum = kl_sum + (b.exp() * (b - lp)).sum().double()
    nll, kl = float(nll_sum) / n_tok, float(kl_sum) / n_tok
    return {"nll": nll, "perplexity_ratio": math.exp(nll - base_nll), "logprob_shift": base_nll - nll, "kl": kl}


def _unsteered(base_nll: float) -> dict[str, float]:
    return {"nll": base_nll, "perplexity_ratio": 1.0, "logprob_shift": 0.0, "kl": 0.0}


def text_scores(batch: Batch, each_logits: Iterator[torch.Tensor],
                additions: Sequence[torch.Tensor | None]) -> list[dict[str, float]]:
    """:func:`steered_text_scores` from the plain logits and then one ``[batch, seq, vocab]``
    logits tensor per addition (``each_logits``), chunk by chunk."""
    chunks, targets, n_tok = _scored_chunks(batch)
    plain = next(each_logits)
    base = [plain[r, pos].float().log_softmax(-1) for r, pos in chunks]  # float32, one chunk each
    tok = [targets[r, pos].to(plain.device) for r, pos in chunks]
    base_nll = float(-sum(lp.gather(-1, t[:, None]).sum() for lp, t in zip(base, tok)) / n_tok)
    return [_unsteered(base_nll) if add is None else _scores_of(chunks, base, tok, n_tok, base_nll, next(each_logits))
            for add in additions]


class TextScores:
    """Scores of one set of texts under any steering condition, on demand: the texts are encoded and their
    plain pass run once (:class:`steerlab.replay.Replay`); each call scores new conditions against it, so a
    caller may choose the next coefficients from the last ones' damage (notebook 04's damage curves stop
    at each vector's first crossing).

    Example:
        >>> scores = TextScores(model, texts, layer=15, position="all", max_length=48)
        >>> scores(sl.rows(model, v, [0.125, 0.25]))[1]["perplexity_ratio"]
    """

    @torch.inference_mode()
    def __init__(self, model: Model, texts: Sequence[str], *, layer: int, position: str,
                 max_length: int = 64) -> None:
        check_position(position, STEER_POSITIONS)
        self.model, self.layer, self.position = model, layer, position
        self.batch = encode(model.tokenizer, texts, padding_side="right", max_length=max_length)
        self.replay = Replay(model, self.batch, layer, bos=self.batch.bos)
        self.chunks, targets, self.n_tok = _scored_chunks(self.batch)
        plain = self.replay.plain
        self.base = [plain[r, pos].float().log_softmax(-1) for r, pos in self.chunks]
        self.tok = [targets[r, pos].to(plain.device) for r, pos in self.chunks]
        self.base_nll = float(-sum(lp.gather(-1, t[:, None]).sum() for lp, t in zip(self.base, self.tok)) / self.n_tok)

    @torch.inference_mode()
    def __call__(self, conditions: Intervention | Sequence[torch.Tensor | None]) -> list[dict[str, float]]:
        """One score per condition (a row of an :class:`Intervention` at this layer and position, or an
        already scaled addition)."""
        additions, _, _ = as_conditions(conditions, self.layer, self.position, self.position, "TextScores")
        out = []
        for add in additions:
            if add is None:
                out.append(_unsteered(self.base_nll))
                continue
            if add.shape[-1] != self.model.d_model or not bool(torch.isfinite(add).all()):
                raise ValueError(f"addition of shape {tuple(add.shape)} does not fit d_model {self.model.d_model} "
                                 "or is not finite")
            edit = Intervention(self.layer, [add], [None], "add", self.position)
            out.append(_scores_of(self.chunks, self.base, self.tok, self.n_tok, self.base_nll,
                                  self.replay.logits(edit)))
        return out


def as_conditions(edit: Intervention | Sequence[torch.Tensor | None], layer: int | None, position: str | None,
                  default_position: str, what: str) -> tuple[list[torch.Tensor | None], int, str]:
    """Conditions given as an :class:`Intervention` (each row one condition, :func:`steerlab.steer.rows`)
    or as already scaled additions with ``layer``/``position``: the additions, the layer, the position."""
    if isinstance(edit, Intervention):
        if layer is not None and layer != edit.layer:
            raise ValueError(f"{what}: layer={layer} but the intervention steers layer {edit.layer}")
        if position is not None and position != edit.position:
            raise ValueError(f"{what}: position={position!r} but the intervention steers {edit.position!r}")
        return edit.additions(), edit.layer, edit.position
    if layer is None:
        raise ValueError(f"{what}: pass an Intervention (sl.rows) or additions with layer=")
    return list(edit), layer, default_position if position is None else position


@torch.inference_mode()
def steered_text_scores(
    model: Model,
    texts: Sequence[str],
    conditions: Intervention | Sequence[torch.Tensor | None],
    *,
    layer: int | None = None,
    position: str | None = None,
    max_length: int = 64,
) -> list[dict[str, float]]:
    """For each condition (a row of ``conditions``, :func:`steerlab.steer.rows`, applied to every
    text; or an already scaled addition with ``layer=``/``position=``, default ``all_prompt``),
    scores of ``texts`` under steering:

    - ``nll``: mean next-token negative log-likelihood per token;
    - ``perplexity_ratio``: ``exp(nll - nll_unsteered)``;
    - ``logprob_shift``: mean per-token log-prob change against unsteered (``-(nll - nll_unsteered)``);
    - ``kl``: mean over positions of KL(unsteered || steered) of next-token distributions.

    An unsteered condition (a ``None`` addition) gives ratio 1, shift 0 and KL 0 exactly (a zero
    vector, which runs through the steering path, gives them up to float error). Log-probabilities
    are float32 whatever the model's dtype.

    Example:
        >>> steered_text_scores(model, texts, sl.rows(model, v, [0, 0.25, 0.5]))[2]["perplexity_ratio"]
    """
    additions, layer, position = as_conditions(conditions, layer, position, "all_prompt", "steered_text_scores")
    batch = encode(model.tokenizer, texts, padding_side="right", max_length=max_length)
    # The plain pass comes first from steered_logits_each, with None or without.
    each = steered_logits_each(model, batch, [None, *(a for a in additions if a is not None)], layer=layer,
                               position=position)
    return text_scores(batch, each, additions)


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
    conditions: Intervention | Sequence[torch.Tensor | None],
    *,
    layer: int | None = None,
    position: str | None = None,
    bos: Sequence[bool] | None = None,
    batch_size: int = 8,
    share_openings: bool = True,
) -> np.ndarray:
    """Mean log-prob per token of each continuation after its opening, under each condition: a row
    of ``conditions`` (:func:`steerlab.steer.rows`), or an already scaled addition with ``layer=``
    (and ``position=``, default ``all``).

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
    additions, layer, position = as_conditions(conditions, layer, position, "all", "continuation_logprobs")
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
            edits = [None if a is None else Intervention(layer, [a], [None], "add", "all_prompt")
                     for a in additions]  # a forward pass's tokens are all "prompt": every one is steered
        else:
            # Generation's prompt-only rules: row r gets a [k_r, d_model] addition on its opening's tokens.
            edits = [None if a is None else Intervention(
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
        for j, logits in enumerate(replay_conditions(model, batch, edits, layer, keep=keep,
                                                     forward_inputs=forward)):  # [kept, vocab]
            logp = logprobs_of(logits, wanted_t, rows=sel).cpu().double()
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

