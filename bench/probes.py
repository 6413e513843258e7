"""Fresh-process measurements (sections 2 and 5), one per subprocess so that one
run's allocations, imports and caches never contaminate another's.

Run as ``python bench/probes.py KIND [options]``; prints one JSON line on stdout.

- ``memory --factor K --layers all|N[,N] --texts N``: peak resident memory of one
  ``activation_stats`` pass over the general set (its first N texts, or all)
  repeated K times. The peak is reset after the model is loaded (Linux
  ``/proc/self/clear_refs``), so ``pass_peak_mib`` is the pass's own peak
  (model weights included, they are resident) and ``pass_growth_mib`` what the
  pass added on top of the loaded model. ``ru_maxrss`` is the whole process.
- ``memory-hf ...``: the same for the plain transformers loop (for context).
- ``load-cached``: ``import steerlab`` then ``load_model()``, timed separately.
- ``load-folder``: plain ``from_pretrained`` of the cached checkpoint folder.
- ``load-gguf``: plain transformers ``from_pretrained(..., gguf_file=...)``.
- ``first-token``: import, load, build a vector, one steered token (the
  caller also times the whole process from outside).
- ``first-token-hf``: import transformers, load the folder, one unsteered token.
- ``first-steered-token-hf``: the same job as ``first-token`` in plain transformers: load the
  folder, the Love - Hate vector from ``output_hidden_states`` (last token, layer
  ``--layer``), a forward pre-hook adding it x4 at every position, one token.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from typing import Any

T0 = time.perf_counter()


def _vm(field: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0  # kB -> MiB
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _plain_transformers() -> tuple[float, Any, Any, float]:
    """Plain transformers' load of the embedded model's cached folder: (start, tokenizer, model, end);
    the imports come before the start, as in the steerlab probes."""
    import torch
    from steerlab.models import provision_embedded
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = provision_embedded(progress=False)
    t1 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(folder)
    hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    return t1, tok, hf, time.perf_counter()


def _memory(args: argparse.Namespace, hf: bool) -> dict:
    import gc

    import steerlab as sl
    import torch

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
    from stats_bench import hf_loop

    model = sl.load_model(progress=False)
    general = sl.load_dataset("general", "train")
    texts = general.texts if args.texts <= 0 else general.texts[: args.texts]
    texts = texts * args.factor
    layers = None if args.layers == "all" else [int(x) for x in args.layers.split(",")]
    data = sl.TextSet.from_texts(f"general x{args.factor}", texts)
    gc.collect()
    loaded = _vm("VmRSS")
    reset = _reset_peak()
    started = time.perf_counter()
    if hf:
        from gen_bench import pristine_model

        plain = pristine_model(model)
        gc.collect()
        loaded = _vm("VmRSS")
        reset = _reset_peak()
        started = time.perf_counter()
        hf_loop(model, texts, layers or list(range(model.n_layers + 1)), hf=plain)
    else:
        sl.activation_stats(model, data, layers, cache=False, progress=False)
    seconds = time.perf_counter() - started
    peak = _vm("VmHWM") if reset else None
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    n_tokens = sum(min(len(model.tokenizer(t, add_special_tokens=False)["input_ids"]), 256)
                   for t in texts[: len(texts) // args.factor]) * args.factor
    return {
        "factor": args.factor, "texts": len(texts), "tokens": n_tokens, "layers": args.layers,
        "rss_after_load_mib": loaded, "pass_peak_mib": peak,
        "pass_growth_mib": None if peak is None or loaded is None else peak - loaded,
        "ru_maxrss_mib": maxrss, "seconds": seconds, "peak_reset": reset,
        "threads": torch.get_num_threads(),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind")
    parser.add_argument("--factor", type=int, default=1)
    parser.add_argument("--layers", default="all")
    parser.add_argument("--texts", type=int, default=0)
    parser.add_argument("--layer", type=int, default=6)
    args = parser.parse_args()
    out: dict = {"kind": args.kind}
    if args.kind in ("memory", "memory-hf"):
        out.update(_memory(args, hf=args.kind == "memory-hf"))
    elif args.kind == "load-cached":
        import steerlab as sl

        t1 = time.perf_counter()
        model = sl.load_model(progress=False)
        t2 = time.perf_counter()
        del model
        again = sl.load_model(progress=False)
        t3 = time.perf_counter()
        out.update(import_s=t1 - T0, load_s=t2 - t1, reload_s=t3 - t2, reported_load_s=again.load_seconds)
    elif args.kind == "load-folder":
        import torch
        from steerlab.models import provision_embedded
        from transformers import AutoModelForCausalLM, AutoTokenizer

        folder = provision_embedded(progress=False)
        t1 = time.perf_counter()
        AutoTokenizer.from_pretrained(folder)
        AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        out.update(import_s=t1 - T0, load_s=time.perf_counter() - t1)
    elif args.kind == "load-gguf":
        import torch
        from steerlab.models import embedded_gguf_path
        from transformers import AutoModelForCausalLM, AutoTokenizer

        gguf = embedded_gguf_path()
        t1 = time.perf_counter()
        AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        out.update(import_s=t1 - T0, load_s=time.perf_counter() - t1)
    elif args.kind == "first-token":
        import steerlab as sl

        t1 = time.perf_counter()
        model = sl.load_model(progress=False)
        t2 = time.perf_counter()
        v = sl.counterbalanced(model, "Love", "Hate", [args.layer], position="last", cache=False,
                               progress=False)
        t3 = time.perf_counter()
        c = sl.generate(model, "Last Tuesday, my neighbour knocked on the door and", v,
                        coefficients=4.0, scale="raw", max_new_tokens=1, do_sample=False)
        t4 = time.perf_counter()
        out.update(import_s=t1 - T0, load_s=t2 - t1, vector_s=t3 - t2, generate_s=t4 - t3,
                   in_process_s=t4 - T0, token=c[0].text)
    elif args.kind == "first-token-hf":
        import torch

        t1, tok, hf, t2 = _plain_transformers()
        enc = tok("Last Tuesday, my neighbour knocked on the door and", return_tensors="pt",
                  add_special_tokens=False)
        with torch.inference_mode():
            hf.generate(**enc, max_new_tokens=1, do_sample=False, pad_token_id=tok.eos_token_id)
        t3 = time.perf_counter()
        out.update(import_s=t1 - T0, load_s=t2 - t1, generate_s=t3 - t2, in_process_s=t3 - T0)
    elif args.kind == "first-steered-token-hf":
        import torch

        t1, tok, hf, t2 = _plain_transformers()
        with torch.inference_mode():
            def last(word: str) -> torch.Tensor:
                out = hf(**tok(word, return_tensors="pt"), output_hidden_states=True)
                return out.hidden_states[args.layer][0, -1]

            vector = last("Love") - last("Hate")
            t3 = time.perf_counter()

            def add(module: torch.nn.Module, a: tuple, kw: dict) -> tuple:
                if a:
                    return (a[0] + 4.0 * vector, *a[1:]), kw
                return a, {**kw, "hidden_states": kw["hidden_states"] + 4.0 * vector}

            handle = hf.model.layers[args.layer].register_forward_pre_hook(add, with_kwargs=True)
            enc = tok("Last Tuesday, my neighbour knocked on the door and", return_tensors="pt")
            ids = hf.generate(**enc, max_new_tokens=1, do_sample=False, pad_token_id=tok.eos_token_id)
            handle.remove()
        t4 = time.perf_counter()
        out.update(import_s=t1 - T0, load_s=t2 - t1, vector_s=t3 - t2, generate_s=t4 - t3, in_process_s=t4 - T0,
                   token=tok.decode(ids[0, -1:]))
    else:
        parser.error(f"unknown probe {args.kind!r}")
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
