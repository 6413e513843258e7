"""The live steering widget on the real model: setting a control updates the outputs, and
what the widget shows is exactly what a direct library call with the same settings gives.

Sampling is seeded and runs on CPU, so the same call gives the same tokens; the expected
texts are computed with ``steered_generate`` from the widget's own vector and typical norm
(the statistics are cached in the widget, so the direct call uses the same means).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import steerlab
import torch
from steerlab.lab.widget import SteeringWidget, relative_addition

pytestmark = pytest.mark.real

PROMPT = "Yesterday, my son was out kicking a football. Then, he"
SMALL = {"sample_size": 4, "max_length": 32, "max_new_tokens": 8, "seed": 0}


def expected_steered(model: steerlab.Model, widget: SteeringWidget,
                     s: dict[str, Any] | None = None) -> str:
    """The steered completion of a direct library call with the widget's settings."""
    s = s or widget.settings()
    layer = int(s["layer"])
    v = widget.vector(s).at(layer)
    add = relative_addition(v, widget.typical_norm(layer), float(s["coefficient"]))
    ids = steerlab.steered_generate(model, [s["prompt"].strip()], [add], layer=layer, position=s["position"],
                                    max_new_tokens=int(s["max_new_tokens"]), seed=int(s["seed"]))
    return model.tokenizer.decode(ids[0], skip_special_tokens=True)


def expected_unsteered(model: steerlab.Model, s: dict[str, Any]) -> str:
    return steerlab.generate(model, s["prompt"].strip(), max_new_tokens=int(s["max_new_tokens"]),
                             seed=int(s["seed"]))[0].text


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """One intra-op thread while these tests run (restored after).

    On a busy 2-core machine two OpenMP threads were seen to make an 8-token generation
    about 30x slower (16 s against 0.6 s) as they wait on each other; the results are the
    same either way, and the widget and the direct calls run with the same setting.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def widget(real_model: steerlab.Model) -> SteeringWidget:
    """One synchronous widget shared by the tests below (its means are computed once)."""
    w = SteeringWidget(real_model, background=False, prompt=PROMPT, recipe="counterbalanced", target="fantasy",
                       reference="sports", layer=10, coefficient=0.5, position="all_prompt", **SMALL)
    assert w.last_error is None, w.last_error
    return w


def set_controls(w: SteeringWidget, **values: Any) -> None:
    for name, value in values.items():
        w.controls[name].value = value


def test_coefficient_change_updates_steered_only(real_model: steerlab.Model, widget: SteeringWidget) -> None:
    w = widget
    set_controls(w, prompt=PROMPT, recipe="counterbalanced", target="fantasy", reference="sports", layer=10,
                 coefficient=0.5, position="all_prompt")
    assert w.status.value == "ready" and w.last_error is None
    before_steered, before_unsteered = w.last_steered, w.last_unsteered
    before_unsteered_html = w.unsteered.value
    assert before_steered and before_unsteered

    w.controls["coefficient"].value = 2.0

    assert w.status.value == "ready" and w.last_error is None
    assert w.last_steered != before_steered
    assert w.last_unsteered == before_unsteered
    assert w.unsteered.value == before_unsteered_html
    assert "× +2.00" in w.steered.value and "counterbalanced" in w.steered.value
    assert "lens" in w.lens.value and "<code>" in w.lens.value
    # The same settings through the library give the same texts.
    s = w.settings()
    assert s["coefficient"] == 2.0
    assert w.last_steered == expected_steered(real_model, w, s)
    assert w.last_unsteered == expected_unsteered(real_model, s)


def test_errors_show_in_the_widget(widget: SteeringWidget) -> None:
    w = widget
    set_controls(w, prompt=PROMPT, recipe="counterbalanced", target="fantasy", reference="sports")
    assert w.last_error is None
    shown, shown_html = w.last_steered, w.steered.value

    w.controls["reference"].value = ""  # counterbalanced needs a reference: no exception escapes
    assert w.last_error is not None and "reference" in w.last_error
    assert "error" in w.status.value and "reference" in w.status.value
    assert w.last_steered == shown and w.steered.value == shown_html  # the last good completion stays

    w.controls["prompt"].value = "   "
    assert w.last_error is not None and "prompt is empty" in w.last_error
    assert "error" in w.status.value and "prompt is empty" in w.status.value

    w.controls["prompt"].value = PROMPT  # the reference is still missing
    assert w.last_error is not None and "reference" in w.last_error

    w.controls["reference"].value = "sports"  # back to the first settings: the same completion
    assert w.last_error is None and w.status.value == "ready"
    assert w.last_steered == shown


def test_switch_to_prompt_pair(real_model: steerlab.Model, widget: SteeringWidget) -> None:
    w = widget
    set_controls(w, prompt=PROMPT, coefficient=2.0, position="all_prompt")
    # Emptying the target first keeps the intermediate settings from generating.
    w.controls["target"].value = ""
    assert w.last_error is not None and "target is empty" in w.last_error
    set_controls(w, recipe="prompt_pair", reference="Hate")
    assert w.last_error is not None and "target is empty" in w.last_error
    w.controls["target"].value = "Love"  # prompts typed in place of set names
    assert w.last_error is None, w.last_error
    assert w.status.value == "ready"
    assert "prompt_pair(" in w.steered.value and "Love" in w.steered.value
    assert w.last_steered == expected_steered(real_model, w)


def wait_ready(w: SteeringWidget, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while w.status.value != "ready":
        assert w.last_error is None, w.last_error
        assert time.monotonic() < deadline, f"widget not ready after {timeout} s: {w.status.value!r}"
        time.sleep(0.05)


@pytest.fixture
def generations(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bool]]:
    """Every generation the widget starts: ("steered" or "unsteered", whether it was superseded)."""
    import steerlab.lab.widget as widget_module

    calls: list[tuple[str, bool]] = []
    real_generate = widget_module.generate

    def spy(*args: Any, **kwargs: Any) -> Any:
        out = real_generate(*args, **kwargs)
        kind = "unsteered" if len(args) < 3 and kwargs.get("vector") is None else "steered"
        calls.append((kind, bool(kwargs["should_stop"]())))
        return out

    monkeypatch.setattr(widget_module, "generate", spy)
    return calls


@pytest.fixture
def background_widget(real_model: steerlab.Model,
                      generations: list[tuple[str, bool]]) -> Iterator[SteeringWidget]:
    w = SteeringWidget(real_model, background=True, prompt=PROMPT, recipe="counterbalanced", target="fantasy",
                       reference="sports", layer=10, coefficient=0.5, position="all_prompt", **SMALL)
    try:
        yield w
    finally:
        assert w._pool is not None
        w._pool.shutdown(wait=True, cancel_futures=True)


def test_newer_request_supersedes(real_model: steerlab.Model, background_widget: SteeringWidget,
                                  generations: list[tuple[str, bool]]) -> None:
    w = background_widget
    # The first request (means + generation) is in flight, or still queued; two rapid
    # changes follow it before it can finish.
    w.controls["coefficient"].value = 1.0
    w.controls["coefficient"].value = -1.5
    assert "generating" in w.status.value
    wait_ready(w, timeout=90)
    # Everything queued has run (one worker: a no-op submitted now runs last).
    assert w._pool is not None
    w._pool.submit(lambda: None).result(timeout=90)
    assert w.status.value == "ready" and w.last_error is None
    s = w.settings()
    assert s["coefficient"] == -1.5
    assert "× -1.50" in w.steered.value
    assert w.last_steered == expected_steered(real_model, w, s)
    # Only the latest settings generated to the end: the first request's generation (if it
    # had started) was stopped, and the middle request never generated.
    finished = [kind for kind, superseded in generations if not superseded]
    assert finished == ["unsteered", "steered"], generations
    assert w.last_unsteered == expected_unsteered(real_model, s)
