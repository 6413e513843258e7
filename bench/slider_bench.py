"""Section 9: the widget's slider, from a settings change to the first steered token and
to a complete pair of completions (unsteered + steered), with and without another busy
process on the machine.

``SteeringWidget(model, background=False)`` runs each update synchronously inside the
assignment ``ui.controls["coefficient"].value = c``. Where the widget records its own
timings (``ui.timings``: ``first_tokens_s``, when the first streamed tokens are shown,
and ``completion_s``, when both completions are done, each from the settings change),
those are the measurement. Where it does not (a widget that does not stream), the first
steered token is timed by a proxy: a forward hook on ``model.hf`` stamps the end of
every prefill call made inside ``model.hf.generate`` (the call that produces a
generation's first token's logits; its sampling follows within a millisecond), the last
one of an update being the steered generation's; and "complete" is the assignment's
duration. Both are recorded in every case, with the source named.
"""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import steerlab as sl
import torch
from benchutil import log


class PrefillClock:
    """Stamps ``time.perf_counter()`` at the end of every prefill call of ``model.hf`` made
    inside ``model.hf.generate`` (not the scoring passes a widget runs afterwards)."""

    def __init__(self, model: sl.Model) -> None:
        self.stamps: list[float] = []
        self.model = model
        self.depth = 0
        plain_generate = model.hf.generate

        def generate(*args: Any, **kwargs: Any) -> Any:
            self.depth += 1
            try:
                return plain_generate(*args, **kwargs)
            finally:
                self.depth -= 1

        def hook(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
            ids = kwargs.get("input_ids", args[0] if args else None)
            mask = kwargs.get("attention_mask")
            if self.depth and isinstance(ids, torch.Tensor) and (
                    not isinstance(mask, torch.Tensor) or mask.shape[-1] == ids.shape[-1]):
                self.stamps.append(time.perf_counter())

        model.hf.generate = generate
        self.handle = model.hf.register_forward_hook(hook, with_kwargs=True)

    def close(self) -> None:
        self.handle.remove()
        del self.model.hf.generate  # the instance attribute: the class's method shows again


class Widget:
    """The widget and one timed update at a time."""

    def __init__(self, model: sl.Model, tokens: int) -> None:
        from steerlab.lab.widget import SteeringWidget

        self.ui = SteeringWidget(model, background=False, max_new_tokens=tokens, coefficient=0.5)
        if self.ui.last_error:
            raise RuntimeError(f"the widget failed to start: {self.ui.last_error}")
        self.own_timings = hasattr(self.ui, "timings")
        self.clock = PrefillClock(model)
        self.values = [0.75, 0.5]
        self.turn = 0

    @property
    def source(self) -> str:
        return ("the widget's own timings (ui.timings)" if self.own_timings else
                "proxy: end of the steered generation's prefill (forward hook on model.hf); complete = the "
                "assignment's duration")

    def update(self, pair: bool) -> dict[str, float]:
        """Move the coefficient slider; ``pair`` drops the cached unsteered completion first."""
        if pair:
            self.ui._unsteered_cache.clear()
        value = self.values[self.turn % 2]
        self.turn += 1
        self.clock.stamps.clear()
        if self.own_timings:
            self.ui.timings = {}
        started = time.perf_counter()
        self.ui.controls["coefficient"].value = value
        done = time.perf_counter()
        if self.ui.last_error:
            raise RuntimeError(f"widget update failed: {self.ui.last_error}")
        if not self.clock.stamps:
            raise RuntimeError("no prefill call seen during the widget update")
        out = {"assignment_s": done - started, "proxy_first_steered_token_s": self.clock.stamps[-1] - started,
               "prefills": float(len(self.clock.stamps))}
        timings = getattr(self.ui, "timings", {}) if self.own_timings else {}
        if self.own_timings and not {"first_tokens_s", "completion_s"} <= set(timings):
            raise RuntimeError(f"the widget recorded no timings for this update: {timings}")
        out["first_steered_token_s"] = timings.get("first_tokens_s", out["proxy_first_steered_token_s"])
        out["complete_s"] = timings.get("completion_s", out["assignment_s"])
        return out

    def close(self) -> None:
        self.clock.close()


def plain_generate(model: sl.Model, prompt: str, tokens: int) -> list[int]:
    """The baseline: one unsteered ``steerlab.generate`` call, same sampling as the widget."""
    return sl.generate(model, prompt, None, max_new_tokens=tokens, seed=0)[0].token_ids


class Burner:
    """A bounded CPU-burning subprocess (one busy core), killed on close."""

    def __init__(self, seconds: float) -> None:
        code = f"import time\nend = time.time() + {float(seconds)}\nwhile time.time() < end:\n    pass\n"
        self.proc = subprocess.Popen([sys.executable, "-c", code])

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


def bench_slider(model: Any, P: dict[str, Any], repeats: int, out: dict[str, Any]) -> list:
    import statistics

    from benchutil import Row, interleaved, judge, loadavg
    from slider_bench import Burner, Widget, plain_generate

    sec = "9 widget slider"
    N = P["slider_tokens"]
    log(f"[slider] SteeringWidget(background=False), {N} new tokens; building its statistics once ...")
    ui = Widget(model, N)
    prompt = ui.ui.settings()["prompt"].strip()
    res: dict[str, Any] = {"max_new_tokens": N, "source": ui.source}
    out["slider"] = res
    rows: list = []
    try:
        for load in (False, True):
            burner = Burner(P["slider_load_seconds"]) if load else None
            label = "with a busy process" if load else "no other load"
            log(f"[slider] {label}, {repeats} rounds")
            try:
                t = interleaved({
                    "steered": lambda: ui.update(pair=False),
                    "pair": lambda: ui.update(pair=True),
                    "plain 1": lambda: plain_generate(model, prompt, N),
                    "plain 2": lambda: [plain_generate(model, prompt, N) for _ in range(2)],
                    "plain first": lambda: plain_generate(model, prompt, 1),
                }, repeats, log=log, keep_values=True)
                avg = loadavg()
            finally:
                if burner is not None:
                    burner.close()
            key = "load" if load else "quiet"
            steered, pairs = t["steered"].values, t["pair"].values
            res[key] = {"seconds": {k: x.seconds for k, x in t.items()}, "steered_updates": steered,
                        "pair_updates": pairs, "loadavg": avg}

            def med(xs: list[dict[str, float]], field: str) -> float:
                return statistics.median(x[field] for x in xs)

            first = med(steered, "first_steered_token_s")
            first_pair = med(pairs, "first_steered_token_s")
            done = med(pairs, "complete_s")
            plain_first, plain_two = t["plain first"].median, t["plain 2"].median
            tq = "" if load else "<= 0.5 s"
            tc = "" if load else "<= 2.5 s"
            rows.append(Row(sec, f"{label}: first steered token (unsteered cached)", first, "s",
                            "plain 1-token generate", plain_first, first / plain_first, "x time", tq,
                            judge(first, at_most=0.5) if tq else "",
                            f"{ui.source}; prefill proxy {med(steered, 'proxy_first_steered_token_s'):.2f} s"))
            rows.append(Row(sec, f"{label}: first steered token, pair (unsteered not cached)", first_pair, "s",
                            "plain 1-token generate", plain_first, first_pair / plain_first, "x time", "", "",
                            f"unsteered cache dropped before the move; prefill proxy "
                            f"{med(pairs, 'proxy_first_steered_token_s'):.2f} s"))
            rows.append(Row(sec, f"{label}: complete {N}-token pair", done, "s",
                            f"2 plain {N}-token generates", plain_two, done / plain_two, "x time", tc,
                            judge(done, at_most=2.5) if tc else "",
                            f"{ui.source}; the whole assignment (vector, lens, completions, scores, HTML) "
                            f"{med(pairs, 'assignment_s'):.2f} s; steered only (unsteered cached): "
                            f"{med(steered, 'complete_s'):.2f} s"
                            + (f"; load average during the rounds {avg}" if load else "")))
    finally:
        ui.close()
    return rows
