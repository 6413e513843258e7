"""The construction registry: each construction's vector against an oracle computed by plain
transformers passes, named sets and your own texts alike; names and inputs checked."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import steerlab
import torch
from steerlab.constructions import CONSTRUCTIONS, build, named_sets, set_stats, typical_norm, unit_norm
from steerlab.sets import UnitSpec, set_word
from steerlab.stats import pool_stats
from steerlab.study import compare, examples
from steerlab.study.vocab import evaluation_vocabulary

LAYER = 1
SPEC: dict[str, Any] = {"sample_size": 4, "max_length": 32}


def test_every_construction_says_what_it_is_and_what_it_needs() -> None:
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
    assert unit_norm(m, LAYER, UnitSpec(**SPEC, kind="typical")) == pytest.approx(
        float(s["general"].mean_norm[s["general"].index(LAYER)]))


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


def _oracle_mean(model: steerlab.Model, texts: list[str], layer: int, max_length: int) -> torch.Tensor:
    """Mean residual at ``layer`` over every token but each text's first, by plain
    ``output_hidden_states=True`` passes, one text at a time: independent of steerlab's tracing."""
    rows = []
    for text in texts:
        ids = model.tokenizer(text, return_tensors="pt", truncation=True, max_length=max_length)["input_ids"]
        with torch.no_grad():
            hidden = model.hf(input_ids=ids, output_hidden_states=True).hidden_states[layer][0]
        rows.append(hidden[1:])
    return torch.cat(rows).double().mean(0).float()


def _set_texts(name: str) -> list[str]:
    return list(steerlab.load_dataset(name, "train").sample(SPEC["sample_size"], seed=0).texts)


def test_constructions_match_an_oracle_from_plain_hidden_states(tiny_llama: steerlab.Model) -> None:
    """Every set-based construction, through the registry and through the comparison's builder,
    equals the arithmetic on means computed by plain transformers passes."""
    m = tiny_llama
    mean = {n: _oracle_mean(m, _set_texts(n), LAYER, SPEC["max_length"]) for n in ("fantasy", "sports", "general")}
    want = {
        "raw": mean["fantasy"],
        "mean_centred": mean["fantasy"] - mean["general"],
        "counterbalanced": mean["fantasy"] - mean["sports"],
        "bias": mean["general"],
    }
    cfg = compare.CompareConfig(targets=("fantasy",), counters={"fantasy": "sports"}, layers=(LAYER,), sample_size=4,
                                max_length=32)
    via_compare = compare.build_vectors(m, cfg, "fantasy", [LAYER], progress=False)
    for name, expected in want.items():
        got = build(name, m, [LAYER], target="fantasy", counter="sports", **SPEC).at(LAYER)
        torch.testing.assert_close(got, expected, atol=2e-4, rtol=2e-4, msg=name)
        torch.testing.assert_close(via_compare[name].at(LAYER), expected, atol=2e-4, rtol=2e-4, msg=name)
    # The write-up's examples name their construction and inputs; the notebook helper builds the same.
    for name, spec in examples.EXAMPLES.items():
        ex = examples.build_example(m, name, LAYER, sample_size=4, max_length=32)
        inputs = {k: v for k, v in spec.items() if k not in ("construction", "prompt", "scored")}
        direct = build(spec["construction"], m, [LAYER], **inputs, **SPEC).at(LAYER)
        torch.testing.assert_close(ex.vector.at(LAYER), direct, rtol=0, atol=0)
        assert ex.target == spec["scored"] and ex.vocab == evaluation_vocabulary(spec["scored"])


def test_your_own_texts_build_like_a_named_set(tiny_llama: steerlab.Model) -> None:
    """target=[...] takes your own texts: the oracle mean of exactly those texts, minus general text."""
    m = tiny_llama
    mine = ["Arr, the pirate hoisted the black flag.", "The ship's crew sang sea shanties all night long.",
            "Buried treasure lay under the palm tree."]
    v = build("mean_centred", m, [LAYER], target=mine, **SPEC)
    general = _oracle_mean(m, _set_texts("general"), LAYER, SPEC["max_length"])
    torch.testing.assert_close(v.at(LAYER), _oracle_mean(m, mine, LAYER, SPEC["max_length"]) - general,
                               atol=2e-4, rtol=2e-4)
    cb = build("counterbalanced", m, [LAYER], target=mine, counter=["A calm office memo about budgets."], **SPEC)
    assert cb.at(LAYER).shape == (m.d_model,)
    with pytest.raises(ValueError, match="target is an empty list"):
        build("mean_centred", m, [LAYER], target=[])
    with pytest.raises(ValueError, match=r"target\[1\] is None"):
        build("mean_centred", m, [LAYER], target=["ok", None])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="must be a named set for this construction"):
        build("word_pair", m, [LAYER], target=mine, counter="sports")


def test_isolated_and_counterbalanced_defaults_differ(tiny_gpt2: steerlab.Model) -> None:
    """isolated's reference defaults to every genre pooled; counterbalanced needs its counter."""
    iso = build("isolated", tiny_gpt2, [LAYER], target="fantasy", **SPEC)
    cb = build("counterbalanced", tiny_gpt2, [LAYER], target="fantasy", counter="sports", **SPEC)
    assert iso.sources["reference"] == "mixed" and cb.sources["minus"].startswith("sports")
    assert not torch.allclose(iso.at(LAYER), cb.at(LAYER))


@pytest.mark.parametrize("name", ["pca_diff", "pca_center", "probe"])
def test_the_fields_directions_point_along_the_planted_mean_difference(tiny_llama: steerlab.Model, name: str) -> None:
    """pca_diff, pca_center and probe, built from real per-text means of a tiny model: each is
    aligned (cosine > 0) with the mean difference it is read from and has its length along it,
    and a steering vector of each steers: generate at 0 equals the plain run, at 2 differs."""
    m = tiny_llama
    v = build(name, m, [LAYER], target="fantasy", counter="sports", **SPEC).at(LAYER)
    ref = "sports" if name == "pca_diff" else "general"
    diff = (_oracle_mean(m, _set_texts("fantasy"), LAYER, SPEC["max_length"])
            - _oracle_mean(m, _set_texts(ref), LAYER, SPEC["max_length"]))
    cos = float(torch.nn.functional.cosine_similarity(v, diff, dim=0))
    assert cos > 0.5, cos  # (d.u)^2 >= 0 always: the test is that u is close to d, not its sign
    assert CONSTRUCTIONS[name].description
    with pytest.raises(ValueError):
        build(name, m, [LAYER], target="fantsy", counter="sports", **SPEC)


def test_the_centred_unit_is_the_mean_norm_around_the_mean(tiny_llama: steerlab.Model) -> None:
    """The default unit, ``UnitSpec(kind="centred")``: mean ||x - mean|| over the unit's texts, against
    plain hidden states; ``kind="typical"`` (and :func:`typical_norm`): mean ||x||."""
    m = tiny_llama
    rows = []
    for text in _set_texts("general"):
        ids = m.tokenizer(text, return_tensors="pt", truncation=True, max_length=SPEC["max_length"])["input_ids"]
        with torch.no_grad():
            rows.append(m.hf(input_ids=ids, output_hidden_states=True).hidden_states[LAYER][0][1:])
    acts = torch.cat(rows).double()
    centred = float((acts - acts.mean(0)).norm(dim=-1).mean())
    typical = float(acts.norm(dim=-1).mean())
    assert unit_norm(m, LAYER, UnitSpec(**SPEC)) == pytest.approx(centred, rel=1e-4)
    assert unit_norm(m, LAYER, UnitSpec(**SPEC, kind="typical")) == pytest.approx(typical, rel=1e-4)
    assert UnitSpec().kind == "centred" and steerlab.sets.UNIT_LABEL == "centred norm"
    # typical_norm: UNIT's texts, the typical kind (notebook 01's measure, scale="typical").
    assert typical_norm(m, LAYER) == unit_norm(m, LAYER, replace(steerlab.sets.UNIT, kind="typical"))
    assert typical_norm(m, LAYER) > unit_norm(m, LAYER)
    with pytest.raises(ValueError, match="unit kind 'bias': expected one of centred, typical"):
        UnitSpec(kind="bias")
