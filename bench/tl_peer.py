"""TransformerLens side of the statistics benchmark; runs in bench/.peer-venv, never
in the project's venv, and imports nothing from steerlab.

Protocol: one JSON object a line on stdin, one JSON reply a line on stdout.

- ``{"cmd": "load", "folder": DIR, "batches": FILE, "threads": N}``: load the
  checkpoint folder with transformers (offline), wrap it in TransformerLens and
  read the pre-tokenized batches (``input_ids`` and the mask of averaged tokens).
- ``{"cmd": "run", "layers": [...], "n_layers": N, "stop": bool, "out": FILE, "limit": K}``:
  one pass (over the first K batches if ``limit`` is set: the untimed warm-up)
  with ``run_with_cache`` caching only the residual hooks needed;
  ``stop`` passes ``stop_at_layer`` so the forward ends at the deepest layer.
  Writes the ``[layers, d_model]`` mean to ``out``.
- ``{"cmd": "quit"}``.

TransformerLens 4 removed ``HookedTransformer``; its replacement is
``TransformerBridge.boot_transformers(name, hf_model=..., tokenizer=...)``,
which wraps an already-loaded Hugging Face model (so no hub access is needed)
and keeps the HF weights unprocessed: residual activations equal transformers'.
On TransformerLens < 4, ``HookedTransformer.from_pretrained(name, hf_model=...)``
is used instead (it folds and centres weights by default; the means then differ
from steerlab's, the timing is still the same work).
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from typing import Any

import torch

HUB_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"
STATE: dict[str, Any] = {}


def _load(msg: dict[str, Any]) -> dict[str, Any]:
    torch.set_num_threads(int(msg.get("threads", torch.get_num_threads())))
    import transformer_lens
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(msg["folder"])
    hf = AutoModelForCausalLM.from_pretrained(msg["folder"], dtype=torch.float32)
    hf.eval()
    version = getattr(transformer_lens, "__version__", "")
    try:
        from transformer_lens.model_bridge import TransformerBridge

        model = TransformerBridge.boot_transformers(HUB_NAME, hf_model=hf, tokenizer=tok, device="cpu")
        api = "TransformerBridge.boot_transformers"
    except ImportError:
        from transformer_lens import HookedTransformer

        model = HookedTransformer.from_pretrained(HUB_NAME, hf_model=hf, tokenizer=tok, device="cpu")
        api = "HookedTransformer.from_pretrained"
    model.eval()
    STATE["model"] = model
    STATE["batches"] = torch.load(msg["batches"])
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        version = dist_version("transformer-lens")
    except PackageNotFoundError:
        pass
    import transformers

    return {"ok": True, "api": api, "transformer_lens": version, "transformers": transformers.__version__,
            "torch": torch.__version__, "load_seconds": time.perf_counter() - started}


def _hook_for(layer: int, n_layers: int) -> str:
    if layer < n_layers:
        return f"blocks.{layer}.hook_resid_pre"
    return f"blocks.{n_layers - 1}.hook_resid_post"


@torch.inference_mode()
def _run(msg: dict[str, Any]) -> dict[str, Any]:
    model = STATE["model"]
    layers: list[int] = msg["layers"]
    n_layers: int = msg["n_layers"]
    kwargs: dict[str, Any] = {}
    names = [_hook_for(layer, n_layers) for layer in layers]
    deepest = max(layers)
    if msg.get("stop") and 0 < deepest < n_layers:
        # stop_at_layer=L runs blocks 0..L-1; the residual entering block L is
        # then the resid_post hook of block L-1.
        names = [f"blocks.{layer - 1}.hook_resid_post" if layer > 0 else "hook_embed" for layer in layers]
        kwargs["stop_at_layer"] = deepest
    sums = torch.zeros(len(layers), model.cfg.d_model, dtype=torch.float64)
    count = 0
    started = time.perf_counter()
    batches = STATE["batches"]
    if msg.get("limit"):
        batches = batches[: int(msg["limit"])]
    for batch in batches:
        _, cache = model.run_with_cache(batch["input_ids"], names_filter=names, **kwargs)
        mask = batch["mask"]
        for i, name in enumerate(names):
            sums[i] += cache[name][mask].to(torch.float64).sum(dim=0)
        count += int(mask.sum())
        del cache
    seconds = time.perf_counter() - started
    torch.save((sums / count).float(), msg["out"])
    return {"ok": True, "seconds": seconds}


def main() -> int:
    # Anything the libraries print goes to stderr; stdout carries only replies.
    replies = sys.stdout
    sys.stdout = sys.stderr
    for line in sys.stdin:
        msg = json.loads(line)
        try:
            if msg["cmd"] == "quit":
                print(json.dumps({"ok": True}), file=replies, flush=True)
                return 0
            reply = _load(msg) if msg["cmd"] == "load" else _run(msg)
        except Exception as err:  # noqa: BLE001 - reported to the benchmark, which skips the row
            traceback.print_exc(file=sys.stderr)
            reply = {"ok": False, "error": f"{type(err).__name__}: {err}"}
        print(json.dumps(reply), file=replies, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
