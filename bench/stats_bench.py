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
from benchutil import log
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


def bench_stats(model: Any, plain: Any, P: dict[str, Any], repeats: int, peers: bool,
                out: dict[str, Any]) -> list:
    import steerlab as sl
    from benchutil import Row, interleaved, judge, loadavg
    from stats_bench import (
        TLPeer,
        count_tokens,
        hf_loop,
        max_abs_diff,
        nnsight_naive,
        sorted_texts,
        steerlab_stats,
    )

    n = model.n_layers
    early, half = max(1, n // 10), n // 2
    all_layers = list(range(n + 1))
    general = sl.load_dataset("general", "train")
    if P["stats_texts"]:
        keep = sorted_texts(general.texts)[: P["stats_texts"]]
        textset = sl.TextSet.from_texts(f"general:train[{len(keep)} shortest]", keep)
    else:
        textset = general
    texts = textset.texts
    n_read, n_avg = count_tokens(model, texts)
    log(f"[stats] {textset.name}: {len(texts)} texts, {n_read} tokens read, {n_avg} averaged; "
        f"layers all (0..{n}), early {early}, half {half}; {repeats} rounds")
    warm_texts = sorted_texts(texts)[:4]
    warm_set = sl.TextSet.from_texts("warm", warm_texts)

    variants: dict[str, Any] = {
        "steerlab all": lambda: steerlab_stats(model, textset, None),
        "transformers all": lambda: hf_loop(model, texts, all_layers, hf=plain),
        "transformers lean all": lambda: hf_loop(model, texts, all_layers, lean=True, hf=plain),
        f"steerlab L{half}": lambda: steerlab_stats(model, textset, [half]),
        f"steerlab L{early}": lambda: steerlab_stats(model, textset, [early]),
        "transformers one layer": lambda: hf_loop(model, texts, [half], hf=plain),
    }
    warmups: dict[str, Any] = {
        "steerlab all": lambda: steerlab_stats(model, warm_set, None),
        "transformers all": lambda: hf_loop(model, warm_texts, all_layers, hf=plain),
        "transformers lean all": lambda: hf_loop(model, warm_texts, all_layers, lean=True, hf=plain),
        f"steerlab L{half}": lambda: steerlab_stats(model, warm_set, [half]),
        f"steerlab L{early}": lambda: steerlab_stats(model, warm_set, [early]),
        "transformers one layer": lambda: hf_loop(model, warm_texts, [half], hf=plain),
    }
    skipped: dict[str, str] = {}
    tl = None
    if peers:
        variants["nnsight naive all"] = lambda: nnsight_naive(model, texts, all_layers)
        warmups["nnsight naive all"] = lambda: nnsight_naive(model, warm_texts, all_layers)
        tl = TLPeer()
        log("[stats] starting TransformerLens peer (bench/.peer-venv) ...")
        if tl.start(model, texts):
            log(f"[stats] TransformerLens {tl.info.get('transformer_lens')} via {tl.info.get('api')}")
            variants["TL all"] = lambda: tl.run(all_layers, n, stop=False)
            variants[f"TL L{half}"] = lambda: tl.run([half], n, stop=True)
            variants[f"TL L{early}"] = lambda: tl.run([early], n, stop=True)
            warmups["TL all"] = lambda: tl.run(all_layers, n, stop=False, limit=1)
            warmups[f"TL L{half}"] = lambda: tl.run([half], n, stop=True, limit=1)
            warmups[f"TL L{early}"] = lambda: tl.run([early], n, stop=True, limit=1)
        else:
            skipped["TransformerLens"] = tl.reason
            log(f"[stats] SKIP TransformerLens: {tl.reason}")
            tl = None
    else:
        skipped["TransformerLens"] = skipped["nnsight naive"] = "peers disabled (--no-peers)"
    try:
        t = interleaved(variants, repeats, warmups=warmups, log=log)
    finally:
        if tl is not None:
            tl.close()

    ref_all = t["steerlab all"].value
    checks = {
        "transformers all": max_abs_diff(ref_all, t["transformers all"].value, all_layers, n),
        "transformers lean all": max_abs_diff(ref_all, t["transformers lean all"].value, all_layers, n),
        f"steerlab L{half}": float((ref_all[half] - t[f"steerlab L{half}"].value[0]).abs().max()),
        f"steerlab L{early}": float((ref_all[early] - t[f"steerlab L{early}"].value[0]).abs().max()),
    }
    for k in ("nnsight naive all", "TL all"):
        if k in t:
            checks[k] = max_abs_diff(ref_all, t[k].value, all_layers, n)
    for k in (f"TL L{half}", f"TL L{early}"):
        if k in t:
            layer = half if k.endswith(str(half)) else early
            checks[k] = float((ref_all[layer] - t[k].value[0]).abs().max())
    out["stats"] = {
        "texts": len(texts), "tokens_read": n_read, "tokens_averaged": n_avg,
        "layers": {"all": all_layers, "early": early, "half": half},
        "seconds": {k: v.seconds for k, v in t.items()},
        "max_abs_diff_of_mean_vs_steerlab": checks, "skipped": skipped, "loadavg_end": loadavg(),
        "tl_info": tl.info if tl is not None else None,
    }
    log(f"[stats] mean agreement with steerlab (max |diff|, layers 0..{n - 1}): "
        + ", ".join(f"{k} {v:.1e}" for k, v in checks.items()))

    def tps(name: str) -> float:
        return n_read / t[name].median

    def row(name: str, subject: str, base: str, base_label: str, target: str = "",
            at_least: float | None = None, note: str = "") -> Row:
        ratio = t[base].median / t[subject].median
        return Row("1 statistics throughput", name, tps(subject), "tok/s", base_label, tps(base), ratio,
                   "x", target, judge(ratio, at_least=at_least) if target else "", note,
                   repeats=t[subject].seconds, ratio_min=t[base].min / t[subject].min)

    rows = [
        row(f"steerlab, all {n + 1} layers vs transformers", "steerlab all", "transformers all",
            "transformers", ">= 0.95x", 0.95,
            note="baseline = a transformers copy of the checkpoint that nnsight never wrapped, "
                 "hf(..., output_hidden_states=True) with full logits, same batches and mask; "
                 "ratio = steerlab throughput / baseline throughput; ratio(min) uses each one's "
                 "fastest repeat"),
        row("steerlab, all layers vs transformers logits_to_keep=1", "steerlab all",
            "transformers lean all", "transformers lean"),
    ]
    if "nnsight naive all" in t:
        rows.append(row("steerlab, all layers vs nnsight naive", "steerlab all", "nnsight naive all",
                        "nnsight naive",
                        note="nnsight naive = one trace a batch saving every layer, no early stop"))
    else:
        rows.append(Row("1 statistics throughput", "steerlab, all layers vs nnsight naive", None, "tok/s",
                        status="SKIP", note=skipped.get("nnsight naive", "")))
    if "TL all" in t:
        rows.append(row("steerlab, all layers vs TransformerLens", "steerlab all", "TL all",
                        "TransformerLens", "> 1.0x", 1.0,
                        note="TransformerLens run_with_cache (TransformerBridge, eager attention) in "
                             "bench/.peer-venv, pre-tokenized batches, names_filter = residual hooks"))
    else:
        rows.append(Row("1 statistics throughput", "steerlab, all layers vs TransformerLens", None, "tok/s",
                        target="> 1.0x", status="SKIP", note=skipped.get("TransformerLens", "")))
    rows.append(row(f"steerlab, layer {half} (half depth) vs transformers", f"steerlab L{half}",
                    "transformers one layer", "transformers", ">= 1.3x", 1.3,
                    note="the transformers loop runs the whole forward whichever layer is read"))
    rows.append(row(f"steerlab, layer {early} (early) vs transformers", f"steerlab L{early}",
                    "transformers one layer", "transformers"))
    for layer in (half, early):
        if f"TL L{layer}" in t:
            rows.append(row(f"steerlab, layer {layer} vs TransformerLens stop_at_layer",
                            f"steerlab L{layer}", f"TL L{layer}", "TransformerLens"))
    return rows
