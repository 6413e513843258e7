"""The construction registry: one name, one vector, whichever entry point builds it.

Notebook 03's examples, notebook 04's comparison and the widget all build through
``steerlab.constructions.build``; these tests build every construction through each entry
point on a tiny model and require identical tensors and identical evaluation vocabularies."""

from __future__ import annotations

from typing import Any

import pytest
import steerlab
import torch
from steerlab.constructions import CONSTRUCTIONS, build, named_sets, set_stats, set_word, typical_norm
from steerlab.stats import pool_stats
from steerlab.study import compare, examples
from steerlab.study.vocab import evaluation_vocabulary
from steerlab.vectors import RECIPES

LAYER = 1
SPEC: dict[str, Any] = {"sample_size": 4, "max_length": 32}


def test_every_construction_is_a_recipe_a_vector_can_carry() -> None:
    assert set(CONSTRUCTIONS) == set(RECIPES) - {"imported"}
    for c in CONSTRUCTIONS.values():
        assert c.description and set(c.inputs) <= {"target", "reference", "counter", "plus", "minus"}


def test_the_arithmetic_of_each_construction(tiny_llama: steerlab.Model) -> None:
    m = tiny_llama
    s = {n: set_stats(m, n, **SPEC) for n in ("fantasy", "sports", "general", "mixed")}
    mean = {n: st.mean_at(LAYER) for n, st in s.items()}
    kw = {"target": "fantasy", "counter": "sports", **SPEC}
    torch.testing.assert_close(build("raw", m, [LAYER], **kw).at(LAYER), mean["fantasy"])
    torch.testing.assert_close(build("mean_centred", m, [LAYER], **kw).at(LAYER), mean["fantasy"] - mean["general"])
    torch.testing.assert_close(build("isolated", m, [LAYER], **kw).at(LAYER), mean["fantasy"] - mean["mixed"])
    torch.testing.assert_close(build("counterbalanced", m, [LAYER], **kw).at(LAYER), mean["fantasy"] - mean["sports"])
    torch.testing.assert_close(build("bias", m, [LAYER], **kw).at(LAYER), mean["general"])
    ablated = build("bias_ablated", m, [LAYER], **kw).at(LAYER)
    unit = mean["general"] / mean["general"].norm()
    assert abs(float(ablated @ unit)) < 1e-3 * float(ablated.norm())
    torch.testing.assert_close(ablated + (mean["fantasy"] @ unit) * unit, mean["fantasy"])
    rnd = build("random", m, [LAYER], **kw).at(LAYER)
    centred = mean["fantasy"] - mean["general"]
    assert abs(float(rnd.norm()) - float(centred.norm())) < 1e-4 * float(centred.norm())
    assert abs(float(torch.nn.functional.cosine_similarity(rnd, centred, dim=0))) < 0.5
    pair = steerlab.prompt_pair(m, " fantasy", " sports", [LAYER], after_bos=True).at(LAYER)[-1]
    torch.testing.assert_close(build("word_pair", m, [LAYER], **kw).at(LAYER), pair)
    # mixed pools every genre's statistics, each sampled the same way
    pooled = pool_stats([set_stats(m, g, **SPEC) for g in steerlab.genres()], "mixed")
    torch.testing.assert_close(s["mixed"].mean_at(LAYER), pooled.mean_at(LAYER))
    assert typical_norm(m, LAYER, **SPEC) == pytest.approx(float(s["general"].mean_norm[s["general"].index(LAYER)]))


def test_unknown_names_and_missing_inputs_are_clear_errors(tiny_gpt2: steerlab.Model) -> None:
    with pytest.raises(ValueError, match="unknown construction 'centred'; expected one of raw, mean_centred"):
        build("centred", tiny_gpt2, [LAYER], target="fantasy")
    with pytest.raises(ValueError, match="unknown set 'fantsy' for target; known sets: .*fantasy"):
        build("mean_centred", tiny_gpt2, [LAYER], target="fantsy")
    with pytest.raises(ValueError, match="counterbalanced needs a counter set"):
        build("counterbalanced", tiny_gpt2, [LAYER], target="fantasy")
    with pytest.raises(ValueError, match="target is empty"):
        build("raw", tiny_gpt2, [LAYER])
    with pytest.raises(ValueError, match="sample_size must be an integer >= 1"):
        set_stats(tiny_gpt2, "general", sample_size=0)
    assert set(named_sets()) >= {*steerlab.genres(), "shakespeare", "general", "mixed"}
    assert set_word("science_fiction") == " science fiction"


def test_notebook_compare_and_widget_build_identical_vectors(tiny_llama: steerlab.Model) -> None:
    """Each construction through each entry point: identical tensors and vocabularies."""
    from steerlab.lab.widget import SteeringWidget

    m = tiny_llama
    cfg = compare.CompareConfig(targets=("fantasy",), counters={"fantasy": "sports"}, layers=(LAYER,), sample_size=4,
                                max_length=32)
    via_compare = compare.build_methods(m, cfg, "fantasy", [LAYER], progress=False)
    widget = SteeringWidget(m, layer=LAYER, sample_size=4, max_length=32, max_new_tokens=5, background=False,
                            target="fantasy", reference="sports")
    for name in compare.METHODS:
        if name == "bias_ablated" or name == "bias":
            torch.testing.assert_close(via_compare[name].at(LAYER),
                                       build(name, m, [LAYER], target="fantasy", **SPEC).at(LAYER), rtol=0, atol=0)
            continue
        direct = build(name, m, [LAYER], target="fantasy", counter="sports", **SPEC).at(LAYER)
        torch.testing.assert_close(via_compare[name].at(LAYER), direct, rtol=0, atol=0)
        if name == "prompt_pair":
            widget.controls["target"].value, widget.controls["reference"].value = " fantasy", " "
        else:
            second = "mixed" if name == "isolated" else "sports"  # the box holds the construction's second input
            widget.controls["target"].value, widget.controls["reference"].value = "fantasy", second
        widget.controls["recipe"].value = name
        torch.testing.assert_close(widget.vector().at(LAYER), direct, rtol=0, atol=0, msg=name)
    # The write-up's examples name their construction and inputs; the notebook helper builds the same.
    for name, spec in examples.EXAMPLES.items():
        ex = examples.build_example(m, name, LAYER, sample_size=4, max_length=32)
        inputs = {k: v for k, v in spec.items() if k not in ("construction", "prompt", "vocab")}
        direct = build(spec["construction"], m, [LAYER], **inputs, **SPEC).at(LAYER)
        torch.testing.assert_close(ex.vector.at(LAYER), direct, rtol=0, atol=0)
        assert ex.vocab == evaluation_vocabulary(spec["vocab"])
    # One vocabulary per target, whoever scores with it.
    assert evaluation_vocabulary("fantasy") == examples.build_example(m, "additional", LAYER, **SPEC).vocab


def test_isolated_and_counterbalanced_defaults_differ(tiny_gpt2: steerlab.Model) -> None:
    """isolated's reference defaults to every genre pooled; counterbalanced needs its counter."""
    iso = build("isolated", tiny_gpt2, [LAYER], target="fantasy", **SPEC)
    cb = build("counterbalanced", tiny_gpt2, [LAYER], target="fantasy", counter="sports", **SPEC)
    assert iso.sources["reference"] == "mixed" and cb.sources["minus"].startswith("sports")
    assert not torch.allclose(iso.at(LAYER), cb.at(LAYER))
