"""The live steering widget: its HTML view from plain values (no model), its guidance (the
measured useful range, the warnings, greyed stale numbers, a refused NaN, saves named from
the inputs used) on a tiny model, the whole widget run synchronously (``background=False``)
on the real model, and the per-token projection it shows (on a tiny model, against a plain
forward pass); notebook 03's widget cell and the notebooks' kernel.

The oracle for what the widget shows is the library called directly with the same
settings: :func:`steerlab.build` for the vector, :func:`steerlab.generate` for the
completions (sampling is seeded, one generator per row, on CPU),
:func:`steerlab.metrics.steered_text_scores` for the useful range and
:func:`steerlab.metrics.distinct_n` / :func:`steerlab.metrics.completion_perplexity` for the
warnings.
"""

from __future__ import annotations

import html
import json
import math
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import steerlab
import torch
from steerlab.constructions import build, named_sets, unit_norm
from steerlab.lab.tokens_view import readable_token, tokens_html
from steerlab.lab.widget import SteeringWidget, default_threads, second_input
from steerlab.lab.widget_state import CoefficientScale
from steerlab.lab.widget_view import (
    MetricRow,
    RangeView,
    Side,
    grey,
    metrics_html,
    page_html,
    pane_html,
    range_html,
    track_css,
    warnings_html,
)
from steerlab.lens import lens_logits
from steerlab.metrics import completion_perplexity, distinct_n, steered_text_scores
from steerlab.projection import token_projections
from steerlab.steer import added_vector
from steerlab.study.judge import ConceptJudge
from steerlab.study.matched import damage_range, text_warnings
from steerlab.study.vocab import evaluation_vocabulary, vocab_rate
from steerlab.tokens import encode
from steerlab.trace import residuals

REPO = Path(__file__).resolve().parents[1]
PROMPT = "Yesterday, my son was out kicking a football. Then, he"
SMALL: dict[str, Any] = {"sample_size": 4, "max_length": 32, "max_new_tokens": 8, "seed": 0}
LAYER = 10


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """One intra-op thread while these tests run (restored after).

    On a busy 2-core machine two OpenMP threads were seen to make an 8-token generation
    about 30x slower as they wait on each other; the results are the same either way.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def calls() -> Iterator[list[dict[str, Any]]]:
    """Every ``steered_generate`` call the widget makes: its rows, which rows are steered, and
    whether it had been superseded by the time it returned."""
    import steerlab.lab.widget as module

    record: list[dict[str, Any]] = []
    real = module.steered_generate

    def spy(model: steerlab.Model, prompts: Any, edit: Any, **kw: Any) -> Any:
        out = real(model, prompts, edit, **kw)
        record.append({"rows": len(prompts), "steered": [not edit.is_plain(i) for i in range(edit.n_rows)],
                       "superseded": bool(kw["should_stop"]()), "ids": out})
        return out

    patch = pytest.MonkeyPatch()
    patch.setattr(module, "steered_generate", spy)
    try:
        yield record
    finally:
        patch.undo()


@pytest.fixture(scope="module")
def widget(real_model: steerlab.Model, calls: list[dict[str, Any]],
           tmp_path_factory: pytest.TempPathFactory) -> SteeringWidget:
    """One synchronous widget shared by the real-model tests, constructed with the arguments
    notebook 03 passes (layer, coefficient, sample_size, max_length, max_new_tokens, seed)."""
    w = SteeringWidget(real_model, layer=LAYER, coefficient=0.5, background=False, prompt=PROMPT,
                       recipe="counterbalanced", target="fantasy", reference="sports",
                       save_dir=tmp_path_factory.mktemp("vectors"), **SMALL)
    assert w.last_error is None, w.last_error
    assert w.status.value == "ready"
    return w


def set_controls(w: SteeringWidget, **values: Any) -> None:
    for name, value in values.items():
        w.controls[name].value = value


def baseline(w: SteeringWidget) -> None:
    """The fixture's settings again, with one generation."""
    set_then_generate(w, recipe="counterbalanced", target="fantasy", reference="sports", layer=LAYER,
                      coefficient_text="0.5", position="all", operator="add", greedy=False,
                      samples=1, temperature=1.0, top_p=0.3, max_new_tokens=SMALL["max_new_tokens"])
    assert w.controls["prompt"].value == PROMPT
    assert w.last_error is None, w.last_error


def set_then_generate(w: SteeringWidget, **values: Any) -> None:
    """Set several controls with one generation: the empty prompt makes the in-between
    settings fail fast (no vector is built), restoring it generates once."""
    prompt = w.controls["prompt"].value
    w.controls["prompt"].value = " "
    set_controls(w, **values)
    w.controls["prompt"].value = prompt


def state(pane_html: str) -> str:
    found = re.search(r"data-state='(\w+)'", pane_html)
    assert found, pane_html[:200]
    return found.group(1)


def shown_completions(pane_html: str) -> list[str]:
    return [html.unescape(t) for t in re.findall(r"<span class='completion'>(.*?)</span>", pane_html, re.DOTALL)]


@pytest.mark.real
def test_settings_change_generates_the_steered_side_only(real_model: steerlab.Model, widget: SteeringWidget,
                                                          calls: list[dict[str, Any]]) -> None:
    w = widget
    baseline(w)
    before_steered, before_unsteered_html = w.last_steered, w.unsteered.value
    n = len(calls)

    w.controls["coefficient_text"].value = "2"

    assert w.status.value == "ready" and w.last_error is None
    assert len(calls) == n + 1, "one generation for one change"
    assert calls[-1]["steered"] == [True], "only the steered row was generated"
    assert w.unsteered.value == before_unsteered_html
    assert w.last_steered != before_steered
    assert "× +2.00" in w.steered.value and "counterbalanced" in w.steered.value

    # The oracle: the registry and the library's generate, called directly.
    v = build("counterbalanced", real_model, [LAYER], target="fantasy", counter="sports", sample_size=4,
              max_length=32)
    assert w.current is not None and torch.equal(w.current["vector"].at(LAYER), v.at(LAYER))
    steered = steerlab.generate(real_model, PROMPT, v, layer=LAYER, coefficients=2.0, position="all",
                                max_new_tokens=8, seed=0)[0]
    unsteered = steerlab.generate(real_model, PROMPT, max_new_tokens=8, seed=0)[0]
    assert calls[-1]["ids"] == [steered.token_ids]
    assert w.last_steered == steered.text and shown_completions(w.steered.value) == [steered.text]
    assert w.last_unsteered == unsteered.text
    # The live numbers: vocabulary rate, concept judge, perplexity, each side.
    metrics = html.unescape(w.metrics.value)
    rates = [vocab_rate(t, evaluation_vocabulary("fantasy")) for t in (unsteered.text, steered.text)]
    judge = ConceptJudge.train()
    concepts = [judge.concept_score([t], "fantasy")[0] for t in (unsteered.text, steered.text)]
    perplexities = completion_perplexity(real_model, [PROMPT] * 2, [unsteered.token_ids, steered.token_ids])
    for label, values, places in (("'fantasy' vocabulary rate", rates, 3),
                                  ("concept score: judge P('fantasy')", concepts, 3),
                                  ("perplexity under the unsteered model", perplexities, 2)):
        row = next(r for r in metrics.split("<tr>") if label in r)
        shown = [float(x) for x in re.findall(r"<td[^>]*>([-+]?[0-9.]+)</td>", row)]
        # Shown to `places` decimals; the widget's batch and this one may differ in the last
        # float32 bits (a perplexity of 13582.37 here was 13582.36 there).
        close = [abs(v - s) <= 1e-5 * abs(v) + 10 ** -places for v, s in zip(values, shown)]
        assert len(shown) == 2 and all(close), (label, values, row)


@pytest.mark.real
def test_bad_set_name_shows_the_known_sets(widget: SteeringWidget, calls: list[dict[str, Any]]) -> None:
    w = widget
    baseline(w)
    shown, n = w.last_steered, len(calls)

    w.controls["target"].value = "fantsy"

    assert w.last_error is not None and "unknown set 'fantsy'" in w.last_error
    message = html.unescape(w.message.value)
    assert "fantsy" in message and all(name in message for name in named_sets())
    assert len(calls) == n, "nothing is generated for a bad set name"
    # The last completion stays on show, greyed as stale.
    assert state(w.steered.value) == "error" and "opacity:0.4" in w.steered.value
    assert shown_completions(w.steered.value) == [shown]

    w.controls["target"].value = "fantasy"
    assert w.last_error is None and w.status.value == "ready" and w.message.value == ""
    assert state(w.steered.value) == "done" and "opacity" not in w.steered.value.split(">")[0]


@pytest.mark.real
def test_coefficient_box_takes_any_number_and_says_when_beyond_the_slider(
        real_model: steerlab.Model, widget: SteeringWidget, calls: list[dict[str, Any]]) -> None:
    w = widget
    baseline(w)
    box, slider = w.controls["coefficient_text"], w.controls["coefficient"]

    box.value = "100"
    assert w.settings().coefficient == 100.0, "not clamped"
    assert slider.value == slider.max == w.scale.steps and w.scale.coefficient(slider.max) < 100
    message = html.unescape(w.message.value)
    assert "100" in message and "past the slider's ends" in message
    assert "× +100.00" in w.steered.value and w.last_error is None
    size = steerlab.unit_norm(real_model, LAYER)
    assert f"added vector norm {100 * size:.1f}" in w.metrics.value

    n = len(calls)
    box.value = "lots"
    assert "'lots' is not a finite number" in html.unescape(w.message.value)
    assert len(calls) == n and w.settings().coefficient == 100.0

    slider.value = w.scale.position(1.0)
    assert float(box.value) == pytest.approx(1.0, rel=0.03) and w.settings().coefficient == float(box.value)
    assert w.message.value == "" and len(calls) == n + 1


@pytest.mark.real
def test_typed_text_is_debounced(widget: SteeringWidget, calls: list[dict[str, Any]]) -> None:
    w = widget
    baseline(w)
    for name in ("prompt", "target", "reference", "coefficient_text", "seed", "token_text", "layer", "coefficient",
                 "max_new_tokens", "samples", "temperature", "top_p"):
        assert w.controls[name].continuous_update is False, name
    n = len(calls)
    w.controls["target"].value = "shakespeare"  # what the browser sends once, on Enter
    assert len(calls) == n + 1
    assert w.last_error is None and "shakespeare" in w.steered.value
    assert "'shakespeare' vocabulary rate" in html.unescape(w.metrics.value)


@pytest.mark.real
def test_second_box_follows_the_construction(widget: SteeringWidget) -> None:
    w = widget
    baseline(w)
    w.controls["prompt"].value = " "  # the labels change without building every construction's vector
    for name in steerlab.CONSTRUCTIONS:
        w.controls["recipe"].value = name
        role = second_input(name)
        box = w.controls["reference"]
        assert box.disabled is (role is None), name
        assert box.description == (role or "second (unused)"), name
        assert w.controls["target"].disabled is (name == "bias"), name
    w.controls["recipe"].value = "prompt_pair"
    w.controls["prompt"].value = PROMPT
    assert (w.controls["target"].description, w.controls["reference"].description) == ("plus", "minus")
    assert w.last_error is None, w.last_error  # "fantasy" / "sports" read as texts


@pytest.mark.real
def test_tokens_stream_into_the_panes(widget: SteeringWidget) -> None:
    w = widget
    baseline(w)
    seen: list[str] = []

    def record(change: dict[str, Any]) -> None:
        seen.append(change["new"])

    w.steered.observe(record, names="value")
    try:
        w.controls["coefficient_text"].value = "1.5"
    finally:
        w.steered.unobserve(record, names="value")
    states = [state(s) for s in seen]
    assert states[0] == "stale" and "opacity:0.4" in seen[0], "the old completion is greyed at once"
    assert states[-1] == "done"
    live = [shown_completions(s)[0] for s, st in zip(seen, states) if st == "live"]
    assert live and live[0], f"no streamed text before the end: {states}"
    final = w.last_steered or ""
    assert all(final.startswith(text) for text in live), (live, final)
    assert w.timings["first_tokens_s"] < w.timings["completion_s"]


@pytest.mark.real
def test_lens_reads_the_signed_added_vector(real_model: steerlab.Model, widget: SteeringWidget) -> None:
    w = widget
    baseline(w)
    w.controls["coefficient_text"].value = "-1"
    assert w.current is not None
    v = w.current["vector"].at(LAYER)
    logits = lens_logits(real_model, -v)
    tok = real_model.tokenizer
    top = html.escape(readable_token(tok.decode([int(logits.argmax())])))
    bottom = html.escape(readable_token(tok.decode([int(logits.argmin())])))
    head, tail = w.lens.value.split("<b>bottom:</b>")
    assert "(−v)" in head
    codes = re.compile(r"<code[^>]*>(.*?)</code><small[^>]*>([-+][\d.]+)</small>")
    assert codes.findall(head)[0] == (top, f"{float(logits.max()):+.1f}")
    assert codes.findall(tail)[0] == (bottom, f"{float(logits.min()):+.1f}")
    assert len(codes.findall(head)) == len(codes.findall(tail)) == 10


@pytest.mark.real
def test_save_writes_a_loadable_vector(real_model: steerlab.Model, widget: SteeringWidget) -> None:
    w = widget
    baseline(w)
    w.save_button.click()
    stem = w.last_saved
    assert stem is not None and Path(f"{stem}.safetensors").exists() and Path(f"{stem}.json").exists()
    assert w.current is not None
    loaded = steerlab.load_vector(stem, real_model)
    assert torch.equal(loaded.at(LAYER), w.current["vector"].at(LAYER))
    assert loaded.recipe == "counterbalanced"
    # The llama.cpp file holds the added vector itself: coefficient x the unit (centred norm) along v.
    gguf = steerlab.load_vector(f"{stem}.gguf", real_model)
    added = 0.5 * steerlab.unit_norm(real_model, LAYER) * loaded.at(LAYER) / loaded.at(LAYER).norm()
    torch.testing.assert_close(gguf.at(LAYER), added, rtol=1e-5, atol=1e-4)
    assert "sl.build(" in html.unescape(w.saved.value)

    w.controls["position"].value = "all_prompt"  # llama.cpp adds everywhere: not exportable
    w.save_button.click()
    text = html.unescape(w.saved.value)
    assert "no llama.cpp file" in text and "all_prompt" in text
    assert Path(f"{w.last_saved}.safetensors").exists()


@pytest.mark.real
def test_reproduce_code_gives_the_same_tokens(real_model: steerlab.Model, widget: SteeringWidget,
                                              calls: list[dict[str, Any]]) -> None:
    w = widget
    baseline(w)
    set_then_generate(w, greedy=True, coefficient_text="1", position="all_prompt", operator="ablate_then_add")
    assert w.last_error is None, w.last_error
    code = w.reproduce_code(load_model=False)
    namespace: dict[str, Any] = {"model": real_model, "print": lambda *a: None}
    exec(compile(code, "<reproduce>", "exec"), namespace)  # noqa: S102 - the widget's own code
    completions = namespace["completions"]
    assert [c.token_ids for c in completions] == [calls[-1]["ids"][-1]]
    assert completions[0].text == w.last_steered


@pytest.mark.parametrize("operator", ["add", "ablate", "ablate_then_add"])
@pytest.mark.parametrize("coefficient", ["0", "0.5"])
def test_reproduce_code_reproduces_every_operator_and_coefficient_zero(
        tiny_gpt2: steerlab.Model, tiny_widget: SteeringWidget, calls: list[dict[str, Any]], operator: str,
        coefficient: str) -> None:
    """The widget's printed code gives the widget's exact tokens, sampled, under every operator, coefficient 0
    included (the widget once ablated a coefficient-0 row that ``sl.generate`` leaves unsteered)."""
    w = tiny_widget
    set_then_generate(w, operator=operator, coefficient_text=coefficient, samples=2)
    assert w.last_error is None, w.last_error
    namespace: dict[str, Any] = {"model": tiny_gpt2, "print": lambda *a: None}
    exec(compile(w.reproduce_code(load_model=False), "<reproduce>", "exec"), namespace)  # noqa: S102
    got = [c.token_ids for c in namespace["completions"]]
    assert got == w._sides["steered"].ids
    if coefficient == "0":  # the unsteered row under every operator: the unsteered side's tokens
        assert got == w._sides["unsteered"].ids


@pytest.mark.real
def test_several_samples_per_side(widget: SteeringWidget, calls: list[dict[str, Any]]) -> None:
    w = widget
    baseline(w)
    w.controls["samples"].value = 2
    assert calls[-1]["rows"] == 4 and calls[-1]["steered"] == [False] * 2 + [True] * 2
    assert len(shown_completions(w.steered.value)) == 2 == len(shown_completions(w.unsteered.value))
    w.controls["greedy"].value = True
    assert sum(calls[-1]["steered"]) == 1 and calls[-1]["rows"] <= 2  # the greedy unsteered row may be kept
    assert w.controls["samples"].disabled and w.controls["top_p"].disabled


# -- the per-token projection (tiny model, planted answer) ------------------------

def test_token_projections_are_dot_products_with_the_unit_direction(tiny_gpt2: steerlab.Model) -> None:
    model, text, layer = tiny_gpt2, "The dragon slept under the old mountain.", 1
    batch = encode(model.tokenizer, [text])
    with torch.inference_mode():
        hidden = model.hf(**batch.as_inputs(), output_hidden_states=True).hidden_states[layer][0]  # [seq, d]
    planted = 2, 3.0 * hidden[2]  # the direction of token 2's own residual
    pairs = token_projections(model, text, planted[1], layer)
    ids = batch.input_ids[0].tolist()
    assert [t for t, _ in pairs] == [model.tokenizer.decode([i]) for i in ids]
    values = torch.tensor([x for _, x in pairs])
    unit = planted[1] / planted[1].norm()
    torch.testing.assert_close(values, hidden @ unit, rtol=1e-4, atol=1e-4)
    assert values[planted[0]] == pytest.approx(float(hidden[2].norm()), rel=1e-4)  # h . h/|h| = |h|
    (read,) = residuals(model, batch, [layer])
    torch.testing.assert_close(values, read[0] @ unit, rtol=1e-5, atol=1e-5)
    # A negated vector negates every value; a SteeringVector at that layer gives the same.
    flipped = token_projections(model, text, -planted[1], layer)
    torch.testing.assert_close(torch.tensor([x for _, x in flipped]), -values)
    # The remote request (nnsight's dry run): projected where the model runs, same numbers.
    dry = token_projections(model, text, planted[1], layer, remote="local")
    torch.testing.assert_close(torch.tensor([x for _, x in dry]), values, rtol=1e-5, atol=1e-5)


def test_token_projections_refuse_bad_vectors(tiny_gpt2: steerlab.Model) -> None:
    with pytest.raises(ValueError, match="non-zero"):
        token_projections(tiny_gpt2, "Hi there", torch.zeros(tiny_gpt2.d_model), 1)
    with pytest.raises(ValueError, match="direction"):
        token_projections(tiny_gpt2, "Hi there", torch.ones(2, tiny_gpt2.d_model), 1)
    with pytest.raises(ValueError, match="out of range"):
        token_projections(tiny_gpt2, "Hi there", torch.ones(tiny_gpt2.d_model), 9)


def test_tokens_html_colours_by_sign_and_shows_values() -> None:
    view = tokens_html([("The", 100.0), (" dragon", 2.0), (" slept", -1.0), ("\n", 0.0)])
    spans = re.findall(r"<span class='steerlab-token' data-value='([^']+)' title='([^']+)' "
                       r"style='background:rgb\((\d+),(\d+),(\d+)\)", view)
    assert [float(v) for v, *_ in spans] == [100.0, 2.0, -1.0, 0.0]
    assert [t for _, t, *_ in spans] == ["+100.000", "+2.000", "-1.000", "+0.000"]
    rgb = [tuple(int(c) for c in s[2:]) for s in spans]
    # The scale leaves out the first token (an attention sink): 2.0 gets the full red.
    assert rgb[0] == (255, 0, 0) and rgb[1] == (255, 0, 0)
    assert rgb[2] == (128, 128, 255) and rgb[3] == (255, 255, 255)
    assert "&#x27;\\n&#x27;" in view


def test_readable_tokens() -> None:
    assert readable_token(" dragon") == "␣dragon"
    assert readable_token("a\nb") == "a\\nb"
    assert readable_token("\xa0") == repr("\xa0") and readable_token("\n\n") == "'\\n\\n'"
    assert readable_token("dragon") == "dragon"


def test_default_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert default_threads() == 1
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert 1 <= default_threads() <= 2


# -- the worker thread ---------------------------------------------------------------

def wait_ready(w: SteeringWidget, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while w.status.value != "ready":
        assert w.last_error is None, w.last_error
        assert time.monotonic() < deadline, f"widget not ready after {timeout} s: {w.status.value!r}"
        time.sleep(0.05)


@pytest.mark.real
def test_newer_request_supersedes(real_model: steerlab.Model, calls: list[dict[str, Any]],
                                  widget: SteeringWidget) -> None:
    n = len(calls)
    w = SteeringWidget(real_model, background=True, prompt=PROMPT + " quickly", recipe="counterbalanced",
                       target="fantasy", reference="sports", layer=LAYER, coefficient=0.5, **SMALL)
    try:
        # The first request is in flight or queued; two rapid changes follow it.
        w.controls["coefficient_text"].value = "1"
        w.controls["coefficient_text"].value = "-0.75"
        assert "generating" in w.status.value
        wait_ready(w, timeout=90)
        assert w._pool is not None
        w._pool.submit(lambda: None).result(timeout=90)  # everything queued has run
        assert w.status.value == "ready" and w.last_error is None
        assert w.settings().coefficient == -0.75 and "× -0.75" in w.steered.value
        finished = [c for c in calls[n:] if not c["superseded"]]
        assert len(finished) == 1 and finished[0]["steered"] == [False, True], calls[n:]
    finally:
        assert w._pool is not None
        w._pool.shutdown(wait=True, cancel_futures=True)


# -- the view: plain values in, HTML out (no model) -----------------------------------

def test_panes_grey_stale_and_failed_text_only() -> None:
    for state, greyed in (("done", False), ("live", False), ("stale", True), ("error", True), ("empty", False)):
        view = pane_html("steered", "Once <upon>", Side(["a dragon & a knight"], state=state))
        assert f"data-state='{state}'" in view
        assert ("opacity:0.4" in view.split(">")[0]) is greyed, state
        assert "Once &lt;upon&gt;" in view and "a dragon &amp; a knight" in view  # escaped


def test_metrics_grey_every_pending_number() -> None:
    rows = [MetricRow("perplexity under the unsteered model", "3.95", "…", frozenset({"steered"})),
            MetricRow("tokens (mean per sample)", "20", "4", frozenset({"steered"}))]
    view = metrics_html(rows, state="live", generation=7, footer="added vector norm 37.5", timing="first tokens")
    cells = re.findall(r"<td class='(steerlab-\w+)' style='([^']*)'>([^<]*)</td>", view)
    assert [(c, v) for c, _, v in cells] == [("steerlab-value", "3.95"), ("steerlab-pending", "…"),
                                             ("steerlab-value", "20"), ("steerlab-pending", "4")]
    assert all(("opacity:0.4" in style) is (cls == "steerlab-pending") for cls, style, _ in cells)
    assert "data-generation='7'" in view and "data-state='live'" in view
    done = metrics_html([MetricRow("x", "1", "2")], state="done", generation=8)
    assert "opacity" not in done and "steerlab-pending" not in done
    # A view computed for older settings is greyed whole, its content kept.
    assert grey(done).startswith("<div class='steerlab-stale' data-state='stale' style='opacity:0.4;'>")
    assert done in grey(done) and grey("") == ""


def test_range_and_warnings_views() -> None:
    inside = range_html(RangeView(-0.28, 0.26, 1.25, 15, "counterbalanced", "all", 4, coefficient=0.24))
    past = range_html(RangeView(-0.28, 0.26, 1.25, 15, "counterbalanced", "all_prompt", 4, coefficient=0.5))
    assert "data-inside='true'" in inside and "-0.28 to +0.26" in inside and "layer 15" in inside
    assert "data-inside='false'" in past and "is past it" in past and "under 1.25" in past and "all_prompt" in past
    # a coefficient just past an end gets the digits that tell them apart
    edge = range_html(RangeView(-0.27, 0.1794, 1.25, 15, "mean_centred", "all", 4, coefficient=0.1813))
    assert "-0.270 to +0.179" in edge and "the coefficient +0.181 is past it" in edge
    measuring = range_html(None, measuring="raw at layer 3, all tokens")
    assert "data-state='measuring'" in measuring and "raw at layer 3" in measuring and "-0.28" not in measuring
    assert range_html(None) == "" and warnings_html([]) == ""
    shown = warnings_html(["repetition: distinct-2 0.03 <low>"])
    assert "role='alert'" in shown and "&lt;low&gt;" in shown
    page = page_html({"unsteered": "<p>U</p>", "steered": "<p>S</p>", "warnings": shown, "metrics": "<p>M</p>"})
    assert page.startswith("<!DOCTYPE html>")
    assert page.index("steerlab-warnings") < page.index("<p>U</p>") < page.index("<p>S</p>") < page.index("<p>M</p>")
    band = track_css("steerlab-coef-7", 0.4, 0.75)
    assert ".steerlab-coef-7 .noUi-target" in band and "#8fd18f 40.0%" in band and "#8fd18f 75.0%" in band
    assert track_css("x", None, 0.5) == ""


# -- the guidance: warnings and the useful range ----------------------------------------

def test_text_warnings_catch_damage_and_loops_a_low_perplexity_hides() -> None:
    fluent = list(range(100, 130))  # 30 distinct tokens
    loop = [42, 17] * 15  # "m m m m": 2 distinct bigrams of 29
    assert text_warnings([4.0, 3.0], [5.0], [fluent]) == []
    # A loop is very predictable: its perplexity is below the unsteered text's, it must warn anyway.
    found = text_warnings([4.0, 3.0], [1.2], [fluent, loop])
    assert len(found) == 1 and found[0].startswith("repetition") and f"{distinct_n(loop, 2):.2f}" in found[0]
    found = text_warnings([4.0, 3.0], [5.0, 3.5 * 9], [fluent, fluent])  # 9x the unsteered mean 3.5
    assert len(found) == 1 and found[0].startswith("damage") and "9.0 ×" in found[0]
    assert text_warnings([float("nan")], [float("nan")], [[]]) == []  # empty completions: nothing to judge
    # A degenerate unsteered baseline (a timestamp: perplexity 1.5) does not make fluent text "damaged":
    # the reference is the larger of it and fluent text's perplexity.
    assert text_warnings([1.5], [30.0], [fluent]) != []
    assert text_warnings([1.5], [30.0], [fluent], fluent=20.0) == []
    assert "fluent text's" in text_warnings([1.5], [300.0], [fluent], fluent=20.0)[0]


def test_damage_range_is_where_general_text_damage_reaches_the_level(tiny_llama: steerlab.Model) -> None:
    """On a random tiny Llama the damage grows smoothly and stays small (ratios 1.00-1.03): the level is
    planted between two measured ratios; the range is the study's matched coefficient on each side."""
    from steerlab.study.matched import general_texts, matched_coefficient

    model, layer = tiny_llama, 1
    torch.manual_seed(3)
    v = torch.randn(model.d_model)
    size = unit_norm(model, layer)
    grid = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
    # The oracle: the library's damage measure at every grid coefficient, called directly.
    texts = general_texts()
    ratios = {c: steered_text_scores(model, texts, [added_vector(v, c, size)], layer=layer, position="all",
                                     max_length=32)[0]["perplexity_ratio"] for c in grid}
    below, above = 1.0, 2.0
    level = math.sqrt(ratios[below] * ratios[above])
    assert max(ratios[g] for g in grid if g <= below) < level < ratios[above], ratios
    found = damage_range(model, v, layer, level=level, grid=grid, texts=texts)
    assert found.reached_high and below < found.high < above
    assert found.high == pytest.approx(matched_coefficient(grid, [ratios[c] for c in grid], level)[0], rel=1e-4)
    expected = below + (above - below) * (math.log(level) - math.log(ratios[below])) / (
        math.log(ratios[above]) - math.log(ratios[below]))
    assert found.high == pytest.approx(expected, rel=1e-4)
    # the curve stops at its first crossing (2.0): the larger coefficients are never measured
    ups = [r for c, r in zip(found.coefficients, found.ratios) if c > 0]
    assert ups == pytest.approx([ratios[c] for c in grid if c <= above], rel=1e-4)
    assert found.low < 0 and found.contains(0.0) and not found.contains(above)
    assert found.ratio_at(above) == pytest.approx(ratios[above], rel=1e-4)
    # Asked again: read back, not measured again (a changed model never reads it: the key has its fingerprint).
    assert damage_range(model, v, layer, level=level, grid=grid, texts=texts) is found
    # A level nothing reaches: the range ends at the grid's largest coefficient, marked so.
    far = damage_range(model, v, layer, level=1e12, grid=grid, texts=texts)
    assert (far.high, far.reached_high, far.low, far.reached_low) == (8.0, False, -8.0, False)
    with pytest.raises(ValueError, match="> 1"):
        damage_range(model, v, layer, level=1.0)


def test_the_coefficient_slider_is_signed_and_logarithmic() -> None:
    scale = CoefficientScale()
    assert scale.coefficient(0) == 0.0 and scale.position(0.0) == 0
    assert scale.coefficient(scale.steps) == pytest.approx(scale.largest)
    assert scale.coefficient(-1) == pytest.approx(-scale.smallest)
    for c in (0.02, 0.1, 0.26, 0.5, 1.0, 3.0, -0.3):
        assert scale.coefficient(scale.position(c)) == pytest.approx(c, rel=0.03), c
    # Fine inside a typical useful range: at least 15 steps between 0.2 and 0.5.
    assert scale.position(0.5) - scale.position(0.2) >= 15
    assert scale.position(100.0) == scale.steps and scale.position(-100.0) == -scale.steps
    assert 0.5 < scale.fraction(0.3) < scale.fraction(1.0) < 1.0
    with pytest.raises(ValueError):
        scale.position(float("nan"))


# -- the guidance in the widget (tiny model, synchronous) -----------------------------

TINY: dict[str, Any] = {"sample_size": 4, "max_length": 32, "max_new_tokens": 6, "seed": 0, "judge": False,
                        "background": False, "layer": 1}


@pytest.fixture()
def tiny_widget(tiny_gpt2: steerlab.Model, calls: list[dict[str, Any]], tmp_path: Path) -> SteeringWidget:
    """A widget on the tiny GPT-2 without a coefficient: it opens at the measured default."""
    w = SteeringWidget(tiny_gpt2, prompt=PROMPT, recipe="counterbalanced", target="fantasy", reference="sports",
                       save_dir=tmp_path / "run" / "vectors", **TINY)
    assert w.last_error is None, w.last_error
    return w


def test_widget_opens_at_the_measured_range_and_marks_it_on_the_track(tiny_gpt2: steerlab.Model,
                                                                     tiny_widget: SteeringWidget) -> None:
    w = tiny_widget
    v = build("counterbalanced", tiny_gpt2, [1], target="fantasy", counter="sports", sample_size=4,
              max_length=32).at(1)
    expected = damage_range(tiny_gpt2, v, 1, position="all")  # the study's range at the position steered
    assert w.range is expected
    coefficient = w.settings().coefficient
    assert coefficient == pytest.approx(round(expected.high, 4)) and expected.contains(coefficient)
    assert w.controls["coefficient"].value == w.scale.position(coefficient)
    assert w.controls["coefficient_text"].value == f"{coefficient:g}"
    note = html.unescape(w.range_note.value)
    assert "useful range" in note and "data-inside='true'" in note and "under 1.25" in note
    assert w._css in w.track.value and "#8fd18f" in w.track.value


def test_a_nan_typed_never_becomes_the_coefficient(tiny_widget: SteeringWidget,
                                                   calls: list[dict[str, Any]]) -> None:
    w, n = tiny_widget, len(calls)
    before = w.settings().coefficient
    w.controls["coefficient_text"].value = "nan"
    assert w.settings().coefficient == before and len(calls) == n, "nothing generated for a NaN"
    assert "not a finite number" in html.unescape(w.message.value)


def test_every_number_is_greyed_while_stale(tiny_widget: SteeringWidget) -> None:
    w = tiny_widget
    seen: dict[str, list[str]] = {"metrics": [], "lens": [], "tokens": [], "range_note": []}
    def recorder(log: list[str]) -> Any:
        return lambda change: log.append(change["new"])

    recorders = {name: recorder(log) for name, log in seen.items()}
    for name in seen:
        getattr(w, name).observe(recorders[name], names="value")
    try:
        w.controls["layer"].value = 0  # a new vector, a new range: everything goes stale
    finally:
        for name in seen:
            getattr(w, name).unobserve(recorders[name], names="value")
    assert w.last_error is None, w.last_error
    for name in ("metrics", "lens", "tokens"):
        first = seen[name][0]
        assert "data-state='stale'" in first.split(">")[0] and "opacity:0.4" in first.split(">")[0], (name, first[:120])
        assert "data-state='stale'" not in seen[name][-1].split(">")[0], name
    # The old range is never shown for the new settings: "measuring" until the new one is known.
    assert "data-state='measuring'" in seen["range_note"][0] and "data-state='done'" in seen["range_note"][-1]
    # While the steered side streams in, its numbers are greyed and its perplexity waits.
    live = [m for m in seen["metrics"] if "data-state='live'" in m]
    assert live
    for m in live:
        row = next(r for r in m.split("<tr>") if "perplexity under the unsteered model" in r)
        steered = re.findall(r"<td class='(steerlab-\w+)'[^>]*>([^<]*)</td>", row)[1]
        assert steered == ("steerlab-pending", "…"), row
    final = seen["metrics"][-1]
    assert "data-state='done'" in final and "steerlab-pending" not in final


def test_warnings_follow_the_steered_text_not_the_range(tiny_gpt2: steerlab.Model, tiny_widget: SteeringWidget,
                                                        calls: list[dict[str, Any]]) -> None:
    from steerlab.study.matched import fluent_perplexity

    w = tiny_widget
    assert w.range is not None
    for typed in ("0", "100"):
        w.controls["coefficient_text"].value = typed
        assert w.last_error is None, w.last_error
        ids = calls[-1]["ids"]
        unsteered = w._sides["unsteered"]
        perplexity = completion_perplexity(tiny_gpt2, [PROMPT] * len(ids), ids)
        expected = text_warnings(unsteered.perplexity, perplexity[-1:], ids[-1:],
                                 fluent=fluent_perplexity(tiny_gpt2))  # the oracle
        shown = html.unescape(w.warnings.value)
        assert w.warnings_found == expected and all(text in shown for text in expected), (expected, shown)
        assert "useful range" not in shown  # leaving the range is shown on the track, not warned


def test_save_names_the_inputs_used_and_writes_into_save_dir(tiny_gpt2: steerlab.Model,
                                                              tiny_widget: SteeringWidget, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    w = tiny_widget
    w.controls["recipe"].value = "mean_centred"  # no second input: "sports" is not used
    assert w.last_error is None, w.last_error
    stem = w.save()
    c = w.settings().coefficient
    assert stem == tmp_path / "run" / "vectors" / f"mean_centred-fantasy-L1-c{c:g}"
    assert "sports" not in stem.name and Path(f"{stem}.safetensors").exists()
    loaded = steerlab.load_vector(stem, tiny_gpt2)
    assert loaded.recipe == "mean_centred" and loaded.layers == [1]
    w.controls["recipe"].value = "counterbalanced"
    assert w.save() == tmp_path / "run" / "vectors" / f"counterbalanced-fantasy-sports-L1-c{c:g}"
    w.controls["save_path"].value = "mine/pirate"  # a typed stem: relative to save_dir
    assert w.save() == tmp_path / "run" / "vectors" / "mine" / "pirate"
    assert not (REPO / "notebooks" / "runs").exists()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    w.controls["save_path"].value = "~/pirate"  # ~ is the user's home, not a folder named "~"
    assert w.save() == tmp_path / "home" / "pirate"


def test_a_weight_edit_makes_the_cached_unsteered_text_stale(tiny_widget: SteeringWidget) -> None:
    """The unsteered completion was cached by prompt and sampling only: after a weight edit the
    widget kept showing the old model's text."""
    w = tiny_widget
    before = w.settings().unsteered_key(w.model.fingerprint)
    weight = next(w.model.hf.parameters())
    kept = weight.detach().clone()
    try:
        with torch.no_grad():
            weight.add_(0.5)
        assert w.settings().unsteered_key(w.model.fingerprint) != before
    finally:
        with torch.no_grad():
            weight.copy_(kept)  # the tiny model is shared by the session's tests: restored bit for bit
    assert w.settings().unsteered_key(w.model.fingerprint) == before


# -- notebook 03's widget cell and the notebooks' kernel ---------------------------------

def test_notebook_03_widget_saves_into_its_run_folder_and_measures_its_default(tmp_path: Path) -> None:
    """Run 03's widget cell with a stand-in widget that records how it was made."""
    import nbformat

    nb = nbformat.read(REPO / "notebooks" / "03_steer.ipynb", as_version=4)
    cell = next(c.source for c in nb.cells if c.cell_type == "code" and "SteeringWidget(" in c.source)
    made: list[dict[str, Any]] = []

    class Recorder:
        def __init__(self, model: Any, **kwargs: Any) -> None:
            made.append(kwargs)
            self.ui = None

    import steerlab.lab.widget as module

    class Params:
        show_widget, sample_size, max_length, max_new_tokens, seed = True, 32, 128, 32, 0
        coefficient, output_dir = 1.0, str(tmp_path / "runs" / "20261203")

    patch = pytest.MonkeyPatch()
    patch.setattr(module, "SteeringWidget", Recorder)
    try:
        exec(compile(cell, "03_steer widget cell", "exec"),  # noqa: S102 - the notebook's own cell
             {"params": Params, "model": None, "layer": 15, "display": lambda *a: None,
              "widget_with_note": lambda ui: (ui,)})
    finally:
        patch.undo()
    (kwargs,) = made
    assert Path(kwargs["save_dir"]) == tmp_path / "runs" / "20261203" / "vectors"
    assert kwargs.get("coefficient") is None, "the widget should open at its measured default"


def test_notebooks_open_on_the_projects_kernel() -> None:
    make = (REPO / "Makefile").read_text()
    install = re.search(r"ipykernel install .*--name (\S+) --display-name \"([^\"]+)\"", make)
    assert install, "the Makefile no longer installs the project's kernel"
    for path in sorted((REPO / "notebooks").glob("*.ipynb")):
        spec = json.loads(path.read_text())["metadata"]["kernelspec"]
        assert (spec["name"], spec["display_name"], spec["language"]) == (*install.groups(), "python"), path.name


@pytest.mark.real
def test_broken_text_warns_on_the_real_model_and_fluent_text_does_not(widget: SteeringWidget) -> None:
    w = widget
    baseline(w)
    assert w.range is not None and w.range.low < 0 < w.range.high, w.range
    w.controls["coefficient_text"].value = "0.2"
    assert w.warnings_found == [], (w.last_steered, w.warnings_found)
    w.controls["coefficient_text"].value = "3"  # far past the useful range: loops or gibberish
    shown = html.unescape(w.warnings.value)
    assert "repetition:" in shown or "damage:" in shown, (w.last_steered, shown)

def test_a_soak_of_control_changes_keeps_memory_flat_and_leaves_no_hook(tiny_gpt2: steerlab.Model) -> None:
    """The widget driven through 300 control changes in one process (bench/soak_bench.py runs 1,000 on the real
    model): resident memory flat after a warm-up, and no hook left on the model."""
    import sys

    sys.path.insert(0, str(REPO / "bench"))
    from soak_bench import widget_soak

    got = widget_soak(tiny_gpt2, changes=300, warmup=60)
    assert got["hooks_changed"] == {}, got["hooks_changed"]
    assert got["generations"] >= 250  # every change but a no-op one generated
    assert got["growth"] <= 0.10, got
