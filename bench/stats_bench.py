"""Section 1: activation-statistics throughput, steerlab against a plain transformers
loop, nnsight used naively, and TransformerLens (in its own venv, see tl_peer.py).

Every variant walks the same texts in the same order (sorted by length, as
steerlab does), 16 texts a batch, at most 256 tokens a text, right-padded, and
averages the same tokens (every real token but each text's first, steerlab's
default ``all_but_first``). Each one returns its per-layer mean so the results
can be checked against steerlab's.

nnsight compiles the body of a ``with model.trace()`` block from this file's
source, so the naive nnsight trace lives here, in a function.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import steerlab as sl
import torch
from steerlab.tokens import encode, position_mask

BATCH_SIZE = 16
MAX_LENGTH = 256
HERE = Path(__file__).resolve().parent
PEER_PYTHON = HERE / ".peer-venv" / "bin" / "python"


def sorted_texts(texts: Sequence[str]) -> list[str]:
    """The order steerlab.activation_stats walks texts in (by character length)."""
    return sorted(texts, key=len)


def count_tokens(model: sl.Model, texts: Sequence[str]) -> tuple[int, int]:
    """(real tokens read, tokens averaged) for the texts at MAX_LENGTH."""
    total = 0
    for t in texts:
        total += min(len(model.tokenizer(t, add_special_tokens=False)["input_ids"]), MAX_LENGTH)
    return total, total - len(texts)


def steerlab_stats(model: sl.Model, textset: sl.TextSet, layers: list[int] | None) -> torch.Tensor:
    s = sl.activation_stats(model, textset, layers, cache=False, progress=False,
                            batch_size=BATCH_SIZE, max_length=MAX_LENGTH)
    return s.mean


def _accumulate(sums: torch.Tensor, hidden: Sequence[torch.Tensor], mask: torch.Tensor) -> None:
    for i, h in enumerate(hidden):
        sums[i] += h[mask].to(torch.float64).sum(dim=0)


@torch.inference_mode()
def hf_loop(model: sl.Model, texts: Sequence[str], layers: list[int], *, lean: bool = False,
            hf: Any = None) -> torch.Tensor:
    """The plain transformers baseline: ``output_hidden_states=True``, one forward a batch.

    ``lean`` adds ``logits_to_keep=1`` (no full-vocabulary logits for every
    position), what a user who knows transformers well would write. Note that
    transformers 5 returns the *final-normed* state as the last hidden state,
    so layer ``n_layers`` is not the same quantity as steerlab's (pre-norm).
    ``hf`` is the model to run (default ``model.hf``; the benchmark passes a
    copy nnsight never wrapped, see gen_bench.pristine_model).
    """
    hf = model.hf if hf is None else hf
    tok = model.tokenizer
    tok.padding_side = "right"
    ordered = sorted_texts(texts)
    sums = torch.zeros(len(layers), model.d_model, dtype=torch.float64)
    count = 0
    extra: dict[str, Any] = {"logits_to_keep": 1} if lean else {}
    for start in range(0, len(ordered), BATCH_SIZE):
        enc = tok(ordered[start:start + BATCH_SIZE], add_special_tokens=False, padding=True,
                  truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
        out = hf(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                       output_hidden_states=True, **extra)
        mask = enc["attention_mask"].bool().clone()
        mask[:, 0] = False  # right padding: column 0 is every text's first token
        _accumulate(sums, [out.hidden_states[layer] for layer in layers], mask)
        count += int(mask.sum())
    return (sums / count).float()


@torch.inference_mode()
def nnsight_naive(model: sl.Model, texts: Sequence[str], layers: list[int]) -> torch.Tensor:
    """nnsight as a first-time user writes it: one trace a batch, save every requested
    layer, let the forward run to the logits (no early stop)."""
    tok = model.tokenizer
    ordered = sorted_texts(texts)
    sums = torch.zeros(len(layers), model.d_model, dtype=torch.float64)
    count = 0
    blocks = model.lm.model.layers
    n = model.n_layers
    for start in range(0, len(ordered), BATCH_SIZE):
        batch = encode(tok, ordered[start:start + BATCH_SIZE], padding_side="right",
                       max_length=MAX_LENGTH)
        saved = []
        with model.lm.trace(batch.as_inputs()):
            for layer in layers:
                if layer < n:
                    saved.append(blocks[layer].input.save())
                else:
                    saved.append(blocks[n - 1].output.save())
        mask = position_mask(batch.attention_mask, "all_but_first")
        _accumulate(sums, saved, mask)
        count += int(mask.sum())
    return (sums / count).float()


def max_abs_diff(a: torch.Tensor, b: torch.Tensor, layers: list[int], n_layers: int) -> float:
    """Largest difference of two ``[layers, d_model]`` means, leaving out layer n_layers
    (transformers' last hidden state is post-norm, steerlab's pre-norm)."""
    keep = [i for i, layer in enumerate(layers) if layer < n_layers]
    if not keep:
        return float("nan")
    return float((a[keep] - b[keep]).abs().max())


class TLPeer:
    """TransformerLens in its own venv, driven over a line protocol (see tl_peer.py).

    Started once; each ``run`` is one statistics pass over the batches written at
    start-up. ``None`` from :meth:`start` means skip, with :attr:`reason` set.
    """

    def __init__(self) -> None:
        self.proc: subprocess.Popen[str] | None = None
        self.reason = ""
        self.info: dict[str, Any] = {}
        self._tmp = tempfile.TemporaryDirectory(prefix="steerlab-bench-tl-")

    def start(self, model: sl.Model, texts: Sequence[str]) -> bool:
        if not PEER_PYTHON.exists():
            self.reason = (f"no peer venv at {PEER_PYTHON.parent.parent} "
                           "(create it with bench/setup_peers.sh)")
            return False
        ordered = sorted_texts(texts)
        batches = []
        for start in range(0, len(ordered), BATCH_SIZE):
            b = encode(model.tokenizer, ordered[start:start + BATCH_SIZE], padding_side="right",
                       max_length=MAX_LENGTH)
            batches.append({"input_ids": b.input_ids,
                            "mask": position_mask(b.attention_mask, "all_but_first")})
        path = Path(self._tmp.name) / "batches.pt"
        torch.save(batches, path)
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "OMP_NUM_THREADS": str(torch.get_num_threads())}
        with open(Path(self._tmp.name) / "stderr.log", "w") as log:  # the child keeps its own handle
            self.proc = subprocess.Popen([str(PEER_PYTHON), str(HERE / "tl_peer.py")], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=log, text=True, env=env)
        reply = self._ask({"cmd": "load", "folder": model.source, "batches": str(path),
                           "threads": torch.get_num_threads()})
        if not reply.get("ok"):
            self.reason = f"TransformerLens could not load the model: {reply.get('error', '?')}"
            self.close()
            return False
        self.info = reply
        return True

    def _ask(self, msg: dict[str, Any]) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin and self.proc.stdout
        try:
            self.proc.stdin.write(json.dumps(msg) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except (BrokenPipeError, OSError) as err:
            return {"ok": False, "error": f"peer process died: {err}; {self.stderr_tail()}"}
        if not line:
            return {"ok": False, "error": f"peer process exited; {self.stderr_tail()}"}
        return json.loads(line)

    def stderr_tail(self) -> str:
        try:
            text = (Path(self._tmp.name) / "stderr.log").read_text()
        except OSError:
            return ""
        return " | ".join(text.strip().splitlines()[-3:])

    def run(self, layers: list[int], n_layers: int, stop: bool, limit: int | None = None) -> torch.Tensor:
        out = Path(self._tmp.name) / "mean.pt"
        reply = self._ask({"cmd": "run", "layers": layers, "n_layers": n_layers, "stop": stop,
                           "out": str(out), "limit": limit})
        if not reply.get("ok"):
            raise RuntimeError(f"TransformerLens pass failed: {reply.get('error')}")
        return torch.load(out)

    def close(self) -> None:
        if self.proc is not None:
            try:
                self._ask({"cmd": "quit"})
            except (OSError, ValueError):  # already gone: nothing to ask
                pass
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.proc = None
        self._tmp.cleanup()
