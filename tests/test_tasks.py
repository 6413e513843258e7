"""Notebook 06's task vectors: the task data, the prompts, the registry's task constructions against
plain ``output_hidden_states=True`` passes, the affine edit against a hand-written oracle, the accuracy
pipeline on a planted task vector, and the answer's wording from planted and null verdict sets."""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import steerlab
import torch
from steerlab.constructions import CONSTRUCTIONS, TASK_CONSTRUCTIONS, build
from steerlab.data import DataError, load_dataset
from steerlab.intervention import Intervention
from steerlab.lab.params import TaskParams
from steerlab.lab.report import ParameterError
from steerlab.replay import replay_conditions
from steerlab.study import tasks as T
from steerlab.study.task_data import (
    Task,
    TaskPair,
    answer_token,
    demonstrations,
    few_shot_prompt,
    few_shot_prompts,
    load_task,
    load_tasks,
    task_names,
    tasks_dir,
    vector_queries,
    zero_shot_prompt,
)
from steerlab.vectors import SteeringVector

REPO = Path(__file__).resolve().parents[1]


# --- the data ------------------------------------------------------------------------------------


def _split_rule(task: str, x: str) -> str:
    """data/README.md, "Tasks": held out where the first 8 hex digits of sha1("task:input") are 0 or 1 mod 5."""
    return "heldout" if int(hashlib.sha1(f"{task}:{x}".encode()).hexdigest()[:8], 16) % 5 < 2 else "train"


def test_at_least_six_tasks_of_100_pairs_with_a_heldout_split() -> None:
    names = task_names()
    assert len(names) >= 6
    for name in names:
        task = load_task(name)
        assert len(task.pairs) >= 100, name
        assert len(task.heldout) >= 30 and len(task.train) >= 60, name
        assert all(p.split == _split_rule(name, p.input) for p in task.pairs), name
        assert all(p.source.startswith("written for steerlab") for p in task.pairs), name


def test_no_duplicates_and_no_leakage_between_splits() -> None:
    for task in load_tasks():
        inputs = [p.input for p in task.pairs]
        assert len(inputs) == len(set(inputs)), task.name  # so no input is in both splits
        assert len({p.id for p in task.pairs}) == len(task.pairs)
        train_inputs = {p.input for p in task.train}
        assert not train_inputs & {p.input for p in task.heldout}
        # a held-out pair is not a train pair turned round (antonyms: "cold -> hot" beside "hot -> cold")
        train = {(p.input, p.output) for p in task.train}
        assert not [(p.input, p.output) for p in task.heldout if (p.output, p.input) in train], task.name
        assert all(p.output.strip() and p.output != p.input for p in task.pairs if task.name != "next_item"), task.name


def test_a_bad_task_file_names_file_and_line(tmp_path: Path) -> None:
    folder = tmp_path / "tasks"
    folder.mkdir()
    good = {"id": "t-1", "task": "t", "split": "train", "input": "a", "output": "b", "source": "mine"}
    (folder / "t.jsonl").write_text(json.dumps(good) + "\n" + json.dumps({**good, "id": "t-2", "extra": 1}) + "\n")
    with pytest.raises(DataError, match=r"t\.jsonl:2: fields .* expected exactly id, task, split"):
        load_task("t", root=tmp_path)
    (folder / "t.jsonl").write_text(json.dumps(good) + "\n" + json.dumps({**good, "id": "t-2", "split": "heldout"}))
    with pytest.raises(DataError, match="repeats the input 'a'.*never in both splits"):
        load_task("t", root=tmp_path)
    with pytest.raises(KeyError, match="unknown task 'nope'; known: t"):
        load_task("nope", root=tmp_path)
    with pytest.raises(DataError, match="no tasks"):
        task_names(tmp_path / "empty")


def test_the_data_card_lists_every_task_with_its_counts() -> None:
    card = (REPO / "data" / "README.md").read_text(encoding="utf-8")
    for task in load_tasks():
        row = f"| `{task.name}` | {len(task.pairs)} | {len(task.train)} | {len(task.heldout)} |"
        assert row in card, row
    assert tasks_dir().name == "tasks"


# --- prompts -------------------------------------------------------------------------------------


def _toy(n_train: int = 12, n_heldout: int = 8, output: str = "{x}s") -> Task:
    pairs = [TaskPair(f"toy-{i:03d}", "toy", "train" if i < n_train else "heldout", f"w{i}", output.format(x=f"w{i}"),
                      "test") for i in range(n_train + n_heldout)]
    return Task("toy", tuple(pairs))


def test_prompt_format_and_seeded_demonstrations() -> None:
    assert zero_shot_prompt("hot") == "Q: hot\nA:"
    assert few_shot_prompt([("big", "small"), ("up", "down")], "hot") == "Q: big\nA: small\n\nQ: up\nA: down\n\nQ: hot\nA:"
    task = _toy()
    q = task.train[0]
    demos = demonstrations(task, q, 5, seed=3)
    assert q not in demos and len(set(demos)) == 5 and all(p.split == "train" for p in demos)
    assert demos == demonstrations(task, q, 5, seed=3) != demonstrations(task, q, 5, seed=4)
    # a prompt does not depend on which other queries are asked
    assert few_shot_prompts(task, task.heldout[:3], shots=4)[2] == few_shot_prompts(task, task.heldout[2:3], shots=4)[0]
    with pytest.raises(ValueError, match="shots=12 but task 'toy' has 11 train pairs"):
        demonstrations(task, q, 12)
    with pytest.raises(ValueError, match="vector_prompts=13 but task 'toy' has 12"):
        vector_queries(task, 13)


def test_shuffled_labels_keep_the_demonstrations_and_move_every_output() -> None:
    task = _toy()
    for q in task.heldout:
        real, shuffled = (few_shot_prompts(task, [q], shots=5, shuffled=s)[0] for s in (False, True))
        pairs = [re.findall(r"Q: (\S+)\nA: (\S+)", p) for p in (real, shuffled)]
        assert [a for a, _ in pairs[0]] == [a for a, _ in pairs[1]]  # the same inputs, in order
        assert sorted(b for _, b in pairs[0]) == sorted(b for _, b in pairs[1])  # the same outputs
        assert all(b1 != b2 for (_, b1), (_, b2) in zip(*pairs))  # none kept its own
        assert real.endswith(zero_shot_prompt(q.input)) and shuffled.endswith(zero_shot_prompt(q.input))
    same = _toy(output="same")
    with pytest.raises(ValueError, match="cannot shuffle the labels"):
        few_shot_prompts(same, same.heldout[:1], shots=3, shuffled=True)


def test_answer_token_is_the_first_token_after_a_space(real_tokenizer: Any) -> None:
    assert real_tokenizer.decode([answer_token(real_tokenizer, "cold")]) == " cold"
    ids = real_tokenizer(" APPLE", add_special_tokens=False)["input_ids"]
    assert answer_token(real_tokenizer, "APPLE") == ids[0] and len(ids) > 1


@pytest.fixture(scope="module")
def real_tokenizer(tiny_llama: steerlab.Model) -> Any:
    return tiny_llama.tokenizer  # the embedded model's tokenizer


# --- the registry's task constructions against plain passes -----------------------------------


def _last_states(model: steerlab.Model, texts: Sequence[str], layers: Sequence[int],
                 max_length: int | None = None) -> torch.Tensor:
    """Each text's residual at its last token, one plain ``output_hidden_states=True`` pass per text:
    ``[n_texts, n_layers, d_model]``."""
    out = []
    with torch.inference_mode():
        for t in texts:
            ids = model.tokenizer(t, return_tensors="pt")["input_ids"][:, :max_length]
            hs = model.hf(input_ids=ids, output_hidden_states=True).hidden_states
            out.append(torch.stack([hs[la][0, -1] for la in layers]))
    return torch.stack(out).float()


PROMPTS = few_shot_prompts(_toy(), _toy().heldout, shots=3)
SHUFFLED = few_shot_prompts(_toy(), _toy().heldout, shots=3, shuffled=True)


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gemma"])
def test_task_vectors_equal_means_of_plain_passes(fixture: str, request: pytest.FixtureRequest) -> None:
    m: steerlab.Model = request.getfixturevalue(fixture)
    layers = [1]  # at 0 every prompt's last token is the same ':' embedding: nothing to tell apart
    kw = {"max_length": 12, "sample_size": 5, "seed": 0}
    raw = _last_states(m, PROMPTS, layers).mean(0)
    general = load_dataset("general", "train").sample(5, seed=0).texts
    centre = _last_states(m, general, layers, max_length=12).mean(0)
    counter = _last_states(m, SHUFFLED, layers).mean(0)
    built = {n: build(n, m, layers, target=PROMPTS, counter=SHUFFLED, **kw) for n in TASK_CONSTRUCTIONS}
    for k, la in enumerate(layers):
        torch.testing.assert_close(built["task_raw"].at(la), raw[k], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(built["task_centred"].at(la), raw[k] - centre[k], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(built["task_vs_shuffled"].at(la), raw[k] - counter[k], rtol=1e-4, atol=1e-4)
        # task_affine with a counter: the direction about the counter prompts' mean, and r . u
        v = built["task_affine"].at(la)
        torch.testing.assert_close(v, raw[k] - counter[k], rtol=1e-4, atol=1e-4)
        coordinate = built["task_affine"].extra["reference_coordinate"][str(la)]
        assert coordinate == pytest.approx(float(counter[k] @ (v / v.norm())), rel=1e-4, abs=1e-4)
    # without a counter the affine reference point is the general-text mean at the last token
    general_ref = build("task_affine", m, [1], target=PROMPTS, **kw)
    torch.testing.assert_close(general_ref.at(1), built["task_centred"].at(1))
    assert built["task_centred"].recipe == "task_centred" and built["task_raw"].position == "last"


def test_task_constructions_sit_apart_from_the_genre_registry(tiny_llama: steerlab.Model) -> None:
    assert not set(TASK_CONSTRUCTIONS) & set(CONSTRUCTIONS)  # notebook 04, 05 and the widget iterate CONSTRUCTIONS
    assert all(c.description for c in TASK_CONSTRUCTIONS.values())
    with pytest.raises(ValueError, match="task_raw needs target= as a list of few-shot prompts"):
        build("task_raw", tiny_llama, [1], target="fantasy")
    with pytest.raises(ValueError, match="task_vs_shuffled needs counter= as a list of few-shot prompts"):
        build("task_vs_shuffled", tiny_llama, [1], target=PROMPTS)
    with pytest.raises(ValueError, match="or a task construction: task_raw"):
        build("task_rwa", tiny_llama, [1], target=PROMPTS)


def test_the_mean_activation_builder_recovers_a_planted_offset(tiny_llama: steerlab.Model) -> None:
    """Every prompt ends in ':'; adding delta to that token's embedding moves the layer-0 task vector
    (the embeddings, hidden_states[0]) by exactly delta. A builder that averaged every position, not
    the last, would move by the share of ':' tokens times delta."""
    colon = tiny_llama.tokenizer(":", add_special_tokens=False)["input_ids"]
    assert len(colon) == 1 and all(p.endswith("A:") for p in PROMPTS)
    delta = torch.randn(tiny_llama.d_model, generator=torch.Generator().manual_seed(7))
    hf = copy.deepcopy(tiny_llama.hf)
    with torch.no_grad():
        hf.get_input_embeddings().weight[colon[0]] += delta
    planted = steerlab.wrap(hf, tiny_llama.tokenizer, name="tiny-llama-planted")
    before = build("task_raw", tiny_llama, [0], target=PROMPTS).at(0)
    after = build("task_raw", planted, [0], target=PROMPTS).at(0)
    torch.testing.assert_close(after - before, delta, rtol=1e-5, atol=1e-5)


# --- the affine edit against a hand-written oracle ---------------------------------------------


def _affine_vector(m: steerlab.Model, layer: int, seed: int = 0) -> tuple[SteeringVector, torch.Tensor]:
    """A task_affine vector ``v`` with a reference point ``r`` (returned too), both random."""
    g = torch.Generator().manual_seed(seed)
    v, r = torch.randn(m.d_model, generator=g), 3 * torch.randn(m.d_model, generator=g)
    u = v / v.norm()
    extra = {"edit": "affine", "operator": "ablate_then_add", "reference_coordinate": {str(layer): float(r @ u)}}
    return SteeringVector({layer: v}, m.name, m.fingerprint, m.d_model, "task_affine", {}, "last", extra), r


def _by_hand(h: torch.Tensor, last: torch.Tensor, v: torch.Tensor, r: torch.Tensor, c: float) -> torch.Tensor:
    """``h - ((h - r) . u) u + c v`` at the last real token of each row, ``h`` elsewhere."""
    u = v / v.norm()
    out = h.clone()
    x = h[last]
    out[last] = x - ((x - r) @ u)[:, None] * u + c * v
    return out


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gemma"])
def test_the_affine_edit_equals_the_oracle_at_the_residual(fixture: str, request: pytest.FixtureRequest) -> None:
    m: steerlab.Model = request.getfixturevalue(fixture)
    layer = 1
    vector, r = _affine_vector(m, layer)
    edit = T.task_edit(m, vector, layer, T.Setting("raw", 1.5))
    assert edit is not None and edit.operator == "ablate_then_add" and edit.position == "last_prompt"
    batch = steerlab.encode(m.tokenizer, ["Q: hot\nA:", "Q: a longer question here\nA:"])
    with torch.inference_mode():
        plain = m.hf(**batch.as_inputs(), output_hidden_states=True).hidden_states[layer]
    seen: list[torch.Tensor] = []
    block = steerlab.arch.blocks_of(m.hf)[layer]
    with steerlab.steering_rows(m, edit.adds, layer=layer, position=edit.position, operator=edit.operator,
                                directions=edit.directions):
        handle = block.register_forward_pre_hook(  # registered after the scope's: sees the edited input
            lambda mod, args, kwargs: seen.append((args[0] if args else kwargs["hidden_states"]).clone()),
            with_kwargs=True)
        try:
            with torch.inference_mode():
                m.hf(**batch.as_inputs())
        finally:
            handle.remove()
    expected = _by_hand(plain, batch.select("last"), vector.at(layer), r, 1.5)
    torch.testing.assert_close(seen[0], expected, rtol=1e-4, atol=1e-4)
    # the edit is not the origin's ablate_then_add: that one lands (r . u) u away
    assert float((seen[0] - _by_hand(plain, batch.select("last"), vector.at(layer), torch.zeros_like(r), 1.5)).norm()) > 1


def test_the_affine_edit_equals_the_oracle_in_the_logits(tiny_llama: steerlab.Model) -> None:
    """At layer 0 the residual is the embeddings: the hand-edited embeddings, fed as inputs_embeds,
    give the logits the replayed edit gives, and its top-1 at the last token is what steered_hits reads."""
    m = tiny_llama
    vector, r = _affine_vector(m, 0, seed=1)
    edit = T.task_edit(m, vector, 0, T.Setting("raw", 2.0))
    assert edit is not None
    prompts = ["Q: hot\nA:", "Q: a much longer question\nA:", "Q: up\nA:"]
    batch = steerlab.encode(m.tokenizer, prompts)
    last = batch.select("last")
    with torch.inference_mode():
        embeds = m.hf.get_input_embeddings()(batch.input_ids)
        oracle = m.hf(inputs_embeds=_by_hand(embeds, last, vector.at(0), r, 2.0),
                      attention_mask=batch.attention_mask).logits
        (replayed,) = replay_conditions(m, batch, [edit], 0, bos=batch.bos)
    torch.testing.assert_close(replayed[batch.attention_mask.bool()], oracle[batch.attention_mask.bool()],
                               rtol=1e-4, atol=1e-4)
    top = oracle[last].argmax(-1)
    hits = T.steered_hits(m, prompts, top, 0, [None, edit], batch_size=2)
    assert hits[1].all() and not hits[0].all()


def test_task_edit_follows_the_coefficient_rule(tiny_llama: steerlab.Model) -> None:
    m = tiny_llama
    v = SteeringVector({1: torch.ones(m.d_model)}, m.name, m.fingerprint, m.d_model, "task_centred", {}, "last")
    unit = steerlab.unit_norm(m, 1)
    edit = T.task_edit(m, v, 1, T.Setting("unit", 0.5))
    assert edit is not None and edit.operator == "add"
    assert float(edit.adds[0].norm()) == pytest.approx(0.5 * unit, rel=1e-5)  # type: ignore[union-attr]
    raw = T.task_edit(m, v, 1, T.Setting("raw", 1.0))
    torch.testing.assert_close(raw.adds[0], torch.ones(m.d_model))  # type: ignore[union-attr]
    assert T.task_edit(m, v, 1, T.Setting("unit", 0.0)) is None  # coefficient 0 is the unsteered row
    with pytest.raises(ValueError, match="unknown scale 'typical'"):
        T.task_edit(m, v, 1, T.Setting("typical", 1.0))
    broken = SteeringVector(v.vectors, m.name, m.fingerprint, m.d_model, "task_affine", {}, "last", {"edit": "affine"})
    with pytest.raises(ValueError, match="no reference coordinate at layer 1"):
        T.task_edit(m, broken, 1, T.Setting("unit", 1.0))


# --- the accuracy pipeline and a planted task vector ------------------------------------------


def test_plain_hits_equal_the_models_own_top1_batched_or_not(tiny_gemma: steerlab.Model) -> None:
    m = tiny_gemma
    prompts = ["Q: hot\nA:", "Q: a much longer question than the first\nA:", "Q: up\nA:"]
    with torch.inference_mode():
        top = torch.stack([m.hf(**m.tokenizer(p, return_tensors="pt")).logits[0, -1].argmax() for p in prompts])
    assert T.plain_hits(m, prompts, top, batch_size=3).all()
    assert T.plain_hits(m, prompts, top, batch_size=1).all()
    assert not T.plain_hits(m, prompts, top + 1).any()
    assert (T.steered_hits(m, prompts, top, 1, [None], batch_size=2)[0]).all()
    with pytest.raises(ValueError, match="3 prompts but 2 answers"):
        T.plain_hits(m, prompts, top[:2])


def _planted(m: steerlab.Model, layer: int, answer: int, norm: float = 2000.0) -> torch.Tensor:
    """A vector along the answer's unembedding row: added at the last block's input, it makes the answer top-1."""
    w = m.hf.get_output_embeddings().weight[answer].detach().float()
    return norm * w / w.norm()


def _constant_task(n_train: int = 16, n_heldout: int = 24) -> Task:
    """Every output starts with " yes" (so a single vector can answer all of it), outputs distinct (so
    labels can be shuffled)."""
    words = [f"item{i}" for i in range(n_train + n_heldout)]
    pairs = [TaskPair(f"const-{i:03d}", "const", "train" if i < n_train else "heldout", w, f"yes {w}", "test")
             for i, w in enumerate(words)]
    return Task("const", tuple(pairs))


def test_a_planted_task_vector_makes_the_answer_top1(tiny_llama: steerlab.Model) -> None:
    m = tiny_llama
    task = _constant_task()
    yes = answer_token(m.tokenizer, "yes you")
    prompts = [zero_shot_prompt(p.input) for p in task.heldout]
    answers = [answer_token(m.tokenizer, p.output) for p in task.heldout]
    assert set(answers) == {yes}
    v = SteeringVector({1: _planted(m, 1, yes)}, m.name, m.fingerprint, m.d_model, "planted", {}, "last")
    edit = T.task_edit(m, v, 1, T.Setting("raw", 1.0))
    hits = T.steered_hits(m, prompts, answers, 1, [None, edit])
    assert hits[0].mean() <= 0.1 and hits[1].mean() == 1.0  # ~chance without, 1 with
    assert T.plain_hits(m, prompts, answers).mean() == hits[0].mean()


def test_the_pipeline_recovers_a_planted_task_vector(tiny_llama: steerlab.Model,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole study on a tiny model whose task_centred vector is planted (promotes the answer) and
    whose other vectors are random: the contrasts call centred > raw and centred > unsteered, and the
    answer says centring helps."""
    m = tiny_llama
    task = _constant_task()
    yes = answer_token(m.tokenizer, "yes you")
    config = T.TaskConfig(tasks=("const",), shots=2, vector_prompts=4, depths=(0.5,), contrast_depths=(0.5,),
                          coefficients=(1.0,), min_few_shot_accuracy=0.0, general_texts=4)
    layer = config.contrast_layers(m)[0]
    g = torch.Generator().manual_seed(0)

    def fake_vectors(model: steerlab.Model, t: Task, c: T.TaskConfig, layers: Sequence[int]) -> dict[str, SteeringVector]:
        def vec(name: str, x: torch.Tensor) -> SteeringVector:
            return SteeringVector({la: x for la in layers}, m.name, m.fingerprint, m.d_model, name, {}, "last")
        rand = {n: 2000 * torch.randn(m.d_model, generator=g) for n in T.CONDITIONS}
        return {"task_raw": vec("task_raw", rand["task_raw"]),
                "task_centred": vec("task_centred", _planted(m, layer, yes)),
                "task_vs_shuffled": vec("task_vs_shuffled", rand["task_vs_shuffled"]),
                "task_affine": _affine_vector(m, layer)[0],
                "shuffled_control": vec("task_centred", rand["shuffled_control"])}

    monkeypatch.setattr(T, "task_vectors", fake_vectors)
    ability = T.measure_ability(m, [task], config, progress=False)
    assert ability.kept == ["const"] and ability.summary[0]["zero_shot"] <= 0.1
    study = T.run_study(m, [task], ability, config, progress=False)
    pooled = {r.name: r for r in study.results if r.scope == "pooled"}
    assert pooled["(a) task_centred vs task_raw"].verdict == "task_centred > task_raw"
    assert pooled["(d) task_centred vs unsteered"].verdict == "task_centred > unsteered"
    assert pooled["(c) task_centred vs shuffled_control"].verdict == "task_centred > shuffled_control"
    acc = {(r["condition"], r["layer"]): r["accuracy"] for r in study.accuracy() if r["task"] == "pooled"}
    assert acc[("task_centred", layer)] == 1.0 and acc[("unsteered", None)] <= 0.1
    assert study.answer().startswith(f"On {m.name} (1 task pooled") and "mean-centring helps task vectors" in study.answer()
    record = study.record()
    json.dumps(record, allow_nan=False)  # plain values
    # selection and report halves are disjoint and cover the held-out pairs measured
    for h in study.halves.values():
        assert not set(h.selection) & set(h.report)
        assert len(h.selection) + len(h.report) == len(task.heldout)
    assert {c["setting"] for c in record["chosen"] if c["construction"] == "task_centred"} == {"raw x1"}


def test_choose_settings_uses_the_selection_half_only_and_breaks_ties_early() -> None:
    from steerlab.study.scoring import PromptSplit

    halves = {"t": PromptSplit(("s1", "s2"), ("r1", "r2"))}
    settings = [T.Setting("unit", 0.5), T.Setting("unit", 1.0), T.Setting("raw", 1.0)]
    rows = []
    for s, hits in zip(settings, ({"s1": 1, "s2": 0, "r1": 0, "r2": 0}, {"s1": 1, "s2": 0, "r1": 1, "r2": 1},
                                  {"s1": 0, "s2": 0, "r1": 1, "r2": 1})):
        rows += [{"task": "t", "construction": "task_raw", "layer": 3, "scale": s.scale, "coefficient": s.coefficient,
                  "item_id": i, "hit": h} for i, h in hits.items()]
    choice = T.choose_settings(rows, halves, settings)[("task_raw", 3)]
    assert choice.setting == settings[0] and choice.selection_accuracy == 0.5 and choice.n_selection == 2


def test_config_and_parameters_refuse_bad_values() -> None:
    with pytest.raises(ValueError, match="coefficients is \\(0.0,\\); expected positive numbers"):
        T.TaskConfig(coefficients=(0.0,))
    with pytest.raises(ValueError, match="affine_reference is 'zero'"):
        T.TaskConfig(affine_reference="zero")
    with pytest.raises(ParameterError, match="parameter tasks=\\['antonym'\\] is not allowed: expected None or a list"):
        TaskParams(tasks=["antonym"])
    with pytest.raises(ParameterError, match="parameter coefficients=\\[-1.0\\] is not allowed"):
        TaskParams(coefficients=[-1.0])
    assert TaskParams(preset="quick", shots=2).config().shots == 2
    assert TaskParams(preset="full").config() == T.PRESETS["full"]


# --- the answer in words -----------------------------------------------------------------------------


def _record(layer: int, verdict: str, estimate: float, mdd: float = 0.08, status: str = "run") -> dict[str, Any]:
    return {"label": "a", "a": "task_centred", "b": "task_raw", "scope": "pooled", "layer": layer, "status": status,
            "estimate": estimate, "ci": [estimate - 0.05, estimate + 0.05], "mdd_corrected": mdd, "verdict": verdict,
            "family_size": 66, "targets": ["antonyms", "country_capital"], "reason": "no 'task_raw' rows"}


def test_the_answer_follows_the_verdicts() -> None:
    helps = [_record(9, "task_centred > task_raw", 0.21), _record(11, "task_centred > task_raw", 0.12)]
    null = [_record(9, "not resolved at this sample size (MDD 0.08)", 0.02),
            _record(11, "not resolved at this sample size (MDD 0.11)", -0.01, mdd=0.11)]
    mixed = [_record(9, "task_centred > task_raw", 0.21), _record(11, "task_centred < task_raw", -0.15)]
    one = [_record(9, "task_centred < task_raw", -0.2), _record(11, "not resolved at this sample size (MDD 0.1)", 0.0,
                                                              mdd=0.1)]
    said = T.task_answer([{"model": "m1", "contrasts": helps}, {"model": "m2", "contrasts": null},
                          {"model": "m3", "contrasts": mixed}, {"model": "m4", "contrasts": one},
                          {"model": "m5", "contrasts": [_record(9, "not run", 0.0, status="not run")]}])
    assert said[0].startswith("On m1 (2 tasks pooled") and "mean-centring helps task vectors:" in said[0]
    assert "+0.21" in said[0] and "not resolved" not in said[0]
    # a null set: no ranking, the sample size and its MDD
    assert "not resolved at this sample size (MDD 0.11)" in said[1]
    assert not re.search(r"helps|hurts|better|worse|>|<", said[1])
    assert "helps task vectors at layer 9 and hurts them at layer 11" in said[2]
    assert "mean-centring hurts task vectors at layer 9" in said[3] and "(not resolved, MDD 0.1)" in said[3]
    assert said[4] == "On m5, whether mean-centring helps task vectors was not measured (no 'task_raw' rows)."
    flat = T.task_answer([{"model": "m", "contrasts": [_record(9, "not resolved at this sample size (MDD 0)", 0.0,
                                                               mdd=0.0)]}])[0]
    assert "not resolved at this sample size: centred and raw scored the same on every held-out pair" in flat
    assert "MDD 0" not in flat and not re.search(r"helps|hurts|>|<", flat)
    # contrast (d): whether the vectors do anything at all, said after the centring sentence
    def d(name: str, layer: int, verdict: str) -> dict[str, Any]:
        return {**_record(layer, verdict, 0.0), "label": "d", "a": name, "b": "unsteered"}

    floor = T.task_answer([{"model": "m", "contrasts": null + [d("task_raw", 9, "not resolved at this sample size"),
                                                                d("task_centred", 11, "not resolved")]}])[0]
    assert floor.endswith("Neither the raw nor the centred task vector lifted zero-shot accuracy above unsteered at "
                          "layers 9, 11 (contrast (d), Holm-corrected): this run cannot say whether centring helps a "
                          "task vector that works.")
    works = T.task_answer([{"model": "m", "contrasts": helps + [d("task_raw", 9, "task_raw > unsteered"),
                                                                 d("task_centred", 9, "task_centred > unsteered"),
                                                                 d("task_centred", 11, "task_centred > unsteered")]}])[0]
    assert works.endswith("Above unsteered zero-shot accuracy (contrast (d)): raw at layer 9; centred at layers 9, 11.")
    # ... and where the shuffled-label control (c) was measured and not beaten, the lift is not called the task's
    c = {**d("task_centred", 11, "not resolved at this sample size (MDD 0.12)"), "label": "c", "b": "shuffled_control"}
    beaten = {**d("task_raw", 9, "task_raw > shuffled_control"), "label": "c", "b": "shuffled_control"}
    caveat = T.task_answer([{"model": "m", "contrasts": helps + [d("task_raw", 9, "task_raw > unsteered"),
                                                                  d("task_centred", 11, "task_centred > unsteered"),
                                                                  c, beaten]}])[0]
    assert caveat.endswith("Not shown above the shuffled-label control (contrast (c), not called): centred at layer "
                           "11, so the lift is not shown to be the task's.")
    # the best swept layer outside the registered ones: said as exploratory, beside few-shot accuracy
    acc = [{"task": "pooled", "condition": "few_shot", "layer": None, "accuracy": 0.66},
           {"task": "pooled", "condition": "task_raw", "layer": 9, "accuracy": 0.5},
           {"task": "pooled", "condition": "task_raw", "layer": 21, "accuracy": 0.13},
           {"task": "pooled", "condition": "task_centred", "layer": 21, "accuracy": 0.07},
           {"task": "antonyms", "condition": "task_centred", "layer": 12, "accuracy": 0.9}]
    swept = T.task_answer([{"model": "m", "contrasts": null, "accuracy": acc}])[0]
    # raw's best (50%) is at registered layer 9, which the contrasts speak for: only centred's is said
    assert swept.endswith("Exploratory (the best swept layer, chosen after seeing it, no test): centred 7% at layer "
                          "21, against few-shot 66%.")
    # other contrasts or scopes never make the sentence
    other = [{**helps[0], "scope": "antonyms"}, {**helps[0], "label": "b", "a": "task_affine", "b": "task_centred"}]
    assert "was not measured" in T.task_answer([{"model": "m", "contrasts": other}])[0]


def test_the_contrasts_are_registered_before_the_numbers() -> None:
    names = [c.name for c in T.TASK_CONTRASTS]
    assert names[:2] == ["(a) task_centred vs task_raw", "(b) task_affine vs task_centred"]
    assert {c.b for c in T.TASK_CONTRASTS if c.label == "c"} == {"shuffled_control"}
    assert {c.a for c in T.TASK_CONTRASTS if c.label == "d"} == set(T.CONDITIONS)
    assert not any(c.equivalence for c in T.TASK_CONTRASTS)
    assert np.isclose(T.PAPER_ANCHORS[0]["centred"], 0.457) and T.PAPER_ANCHORS[1]["model"] == "Llama-2-7B"


def test_an_intervention_from_task_edit_is_one_row(tiny_llama: steerlab.Model) -> None:
    v, _ = _affine_vector(tiny_llama, 1)
    edit = T.task_edit(tiny_llama, v, 1, T.Setting("unit", 1.0))
    assert isinstance(edit, Intervention) and len(edit.adds) == 1 and edit.directions[0] is not None


# --- the findings script -----------------------------------------------------------------------------


def _script() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("tasks_findings", REPO / "scripts" / "tasks_findings.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_data_card_block_is_what_the_recorded_results_give() -> None:
    assert _script().write_card(check=True) == 0


def test_collect_keeps_the_pooled_contrasts_and_refuses_a_run_without_06(tmp_path: Path) -> None:
    script = _script()
    entry = {k: None for k in script.KEEP} | {"model": "m", "preset": "full", "contrasts": [
        {**_record(9, "task_centred > task_raw", 0.2)}, {**_record(9, "x", 0.1), "scope": "antonyms"}]}
    run = tmp_path / "20261207-120000"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps({"tasks": entry}))
    path = script.collect_tasks(run, tmp_path / "out")
    saved = json.loads(path.read_text())
    assert path.name == "m-full.json" and saved["kind"] == "tasks" and saved["run"] == run.name
    assert [c["scope"] for c in saved["contrasts"]] == ["pooled"]
    assert not list((tmp_path / "out").glob("*.tmp"))
    (run / "summary.json").write_text(json.dumps({"bias": {}}))
    with pytest.raises(SystemExit, match="has no 'tasks' results"):
        script.collect_tasks(run, tmp_path / "out")


def test_the_accuracy_figure_fits_the_page_and_names_lines_that_lie_on_another() -> None:
    """Notebook 06's figure in the suite's one style: no fixed width (a 1024 px page had a 1,000 px figure
    overflowing it); the references are legend entries; vectors stuck at the unsteered accuracy say so."""
    from steerlab.lab.tasks_view import accuracy_by_layer

    acc = [{"task": s, "condition": "unsteered", "layer": None, "accuracy": 0.0, "n": 4, "setting": None}
           for s in ("pooled", "antonyms")]
    acc += [{"task": s, "condition": "few_shot", "layer": None, "accuracy": 0.7, "n": 4, "setting": None}
            for s in ("pooled", "antonyms")]
    acc += [{"task": s, "condition": c, "layer": la, "accuracy": 0.5 if c == "task_raw" else 0.0, "n": 4,
             "setting": "x1"} for s in ("pooled", "antonyms") for c in T.CONDITIONS for la in (10, 12)]
    fig = accuracy_by_layer({"kept_tasks": ["antonyms"], "accuracy": acc})
    assert fig.layout.width is None and fig.layout.meta["caption"]
    legend = [t.name for t in fig.data if t.showlegend is not False]
    assert legend[:2] == ["unsteered zero-shot", "few-shot (no vector)"]
    assert "task_raw" in legend and "task_centred (≡ unsteered zero-shot, dashed)" in legend
    assert not [a for a in fig.layout.annotations if "≡" in (a.text or "")]  # said once, in the legend
