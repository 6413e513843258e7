"""llama.cpp control vectors: steerlab layer L <-> ``direction.{L-1}``, round trips, refusals,
and (opt-in, ``make llamacpp``) the same next-token shift from a real ``llama-server``.

The bad files are written with the ``gguf`` package directly, so each refusal is
checked on a file steerlab did not write.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
import steerlab
import torch
from steerlab.arch import blocks_of
from steerlab.llamacpp import (
    ControlVectorError,
    direction_index,
    llama_server_path,
    load_gguf,
    save_gguf,
    steerlab_layer,
)
from steerlab.vectors import SteeringVector, VectorMismatchError

# Resolved at import (collection), before conftest points STEERLAB_CACHE at a temporary
# folder for the session: the binary lives in the user's real cache.
_SERVER = llama_server_path()


def _vector(layers: dict[int, torch.Tensor], **kw: Any) -> SteeringVector:
    d = next(iter(layers.values())).shape[-1]
    fields: dict[str, Any] = {
        "model_name": "synthetic", "model_fingerprint": "0123456789abcdef", "d_model": d,
        "recipe": "mean_centred", "sources": {"target": "fantasy[16@0]", "centre": "general[16@0]"},
        "position": "all_but_first", "extra": {"note": "planted", "sizes": [1, 2]},
    }
    fields.update(kw)
    return SteeringVector(vectors=layers, **fields)


def _write_raw(path: Path, tensors: dict[str, np.ndarray], *, steerlab_keys: dict[str, Any] | None = None) -> Path:
    """A control-vector file written by the gguf package alone (as repeng does)."""
    writer = gguf.GGUFWriter(str(path), "controlvector")
    writer.add_string("controlvector.model_hint", "llama")
    writer.add_uint32("controlvector.layer_count", len(tensors))
    for key, value in (steerlab_keys or {}).items():
        if isinstance(value, list):
            writer.add_array(key, value)
        elif isinstance(value, int):
            writer.add_uint32(key, value)
        elif isinstance(value, float):
            writer.add_float64(key, value)
        else:
            writer.add_string(key, value)
    for name, data in tensors.items():
        writer.add_tensor(name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _assert_same(a: SteeringVector, b: SteeringVector) -> None:
    assert a.layers == b.layers
    for layer in a.layers:
        assert b.at(layer).dtype == torch.float32
        assert torch.equal(a.at(layer).float(), b.at(layer))
    for name in ("model_name", "model_fingerprint", "d_model", "recipe", "sources", "position", "extra"):
        assert getattr(a, name) == getattr(b, name), name


# --- the layer mapping -----------------------------------------------------------------

def test_layer_mapping_is_block_output_index() -> None:
    assert [direction_index(la) for la in (2, 11, 30)] == [1, 10, 29]
    assert [steerlab_layer(n) for n in (1, 10, 29)] == [2, 11, 30]
    for bad in (0, 1):
        with pytest.raises(ControlVectorError, match=f"steerlab layer {bad} cannot"):
            direction_index(bad)
    with pytest.raises(ControlVectorError, match="direction.0"):
        steerlab_layer(0)


def test_file_names_layer_l_direction_l_minus_1(tmp_path: Path) -> None:
    """Read back with GGUFReader, independently of load_gguf: names, values, dtype, shape, keys."""
    gen = torch.Generator().manual_seed(0)
    planted = {2: torch.randn(16, generator=gen), 7: torch.randn(16, generator=gen), 16: torch.randn(16, generator=gen)}
    path = save_gguf(_vector(planted), tmp_path / "v.gguf")
    reader = gguf.GGUFReader(path)
    tensors = {t.name: t for t in reader.tensors}
    assert set(tensors) == {"direction.1", "direction.6", "direction.15"}
    for layer, vec in planted.items():
        t = tensors[f"direction.{layer - 1}"]
        assert t.tensor_type == gguf.GGMLQuantizationType.F32
        assert [int(d) for d in t.shape] == [16]
        np.testing.assert_array_equal(np.asarray(t.data), vec.numpy())
    fields = {k: f.contents() for k, f in reader.fields.items()}
    assert fields["general.architecture"] == "controlvector"
    assert fields["controlvector.model_hint"] == "synthetic"
    assert fields["controlvector.layer_count"] == 3
    assert fields["steerlab.added_at"] == "block_input"
    assert fields["steerlab.layers"] == [2, 7, 16]
    assert fields["steerlab.steer_position"] == "all"
    assert json.loads(fields["steerlab.sources"]) == {"target": "fantasy[16@0]", "centre": "general[16@0]"}


# --- round trips -----------------------------------------------------------------------

def test_round_trip_on_tiny_llama(tiny_llama: steerlab.Model, tmp_path: Path) -> None:
    v = steerlab.mean_centred(tiny_llama, ["A dragon guarded the tower of the old wizard."],
                              ["The committee met on Tuesday to discuss the budget."], layers=[2])
    assert v.norm(2) > 0
    path = save_gguf(v, tmp_path / "tiny.gguf")
    back = load_gguf(path, tiny_llama)
    _assert_same(v, back)
    _assert_same(v, steerlab.load_vector(path, tiny_llama))  # .gguf dispatch in load_vector
    (written,) = v.save(tmp_path / "method.gguf")  # the .gguf format through SteeringVector.save
    _assert_same(v, load_gguf(written))


def test_round_trip_many_layers_and_overwrite(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(1)
    v = _vector({la: torch.randn(32, generator=gen) for la in (2, 3, 9)})
    path = tmp_path / "v.gguf"
    save_gguf(_vector({5: torch.ones(32)}), path)
    save_gguf(v, path)  # replaces the first file whole
    _assert_same(v, load_gguf(path))
    assert [p.name for p in tmp_path.iterdir()] == ["v.gguf"]  # no temporary left behind


def test_coefficient_is_multiplied_in_and_recorded(tmp_path: Path) -> None:
    v = _vector({4: torch.arange(8, dtype=torch.float32) - 3.5})
    once = load_gguf(save_gguf(v, tmp_path / "x2.gguf", coefficient=2.0))
    assert torch.equal(once.at(4), 2 * v.at(4))
    assert once.extra == {**v.extra, "gguf_coefficient": 2.0}
    twice = load_gguf(save_gguf(once, tmp_path / "x6.gguf", coefficient=3.0))
    assert torch.equal(twice.at(4), 6 * v.at(4))
    assert twice.extra["gguf_coefficient"] == 6.0
    undone = load_gguf(save_gguf(twice, tmp_path / "x1.gguf", coefficient=1 / 6))
    assert "gguf_coefficient" not in undone.extra


def test_load_checks_the_model(tiny_llama: steerlab.Model, tiny_gpt2: steerlab.Model, tmp_path: Path) -> None:
    v = steerlab.mean_centred(tiny_llama, ["one two three four"], ["five six seven eight"], layers=[2])
    path = save_gguf(v, tmp_path / "v.gguf")
    assert tiny_gpt2.d_model == tiny_llama.d_model  # same width: only the fingerprint can tell them apart
    with pytest.raises(VectorMismatchError, match="fingerprint"):
        load_gguf(path, tiny_gpt2)


# --- refusals on export ----------------------------------------------------------------

@pytest.mark.parametrize("layer", [0, 1])
def test_export_refuses_layers_0_and_1(layer: int, tmp_path: Path) -> None:
    with pytest.raises(ControlVectorError, match=f"steerlab layer {layer} cannot"):
        save_gguf(_vector({layer: torch.ones(8), 5: torch.ones(8)}), tmp_path / "v.gguf")
    assert not any(tmp_path.iterdir())


def test_export_refuses_prompt_pairs(tmp_path: Path) -> None:
    with pytest.raises(ControlVectorError, match="prompt_pair"):
        save_gguf(_vector({3: torch.ones(2, 8)}, recipe="prompt_pair", position="first"), tmp_path / "p.gguf")
    with pytest.raises(ControlVectorError, match=r"\(2, 8\)"):  # a [k, d] vector under any recipe
        save_gguf(_vector({3: torch.ones(2, 8)}, recipe="counterbalanced"), tmp_path / "p.gguf")
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("rule", ["first", "after_bos", "all_prompt", "last_prompt", "all_but_first"])
def test_export_refuses_steer_positions_other_than_all(rule: str, tmp_path: Path) -> None:
    with pytest.raises(ControlVectorError, match=f"steer_position '{rule}'"):
        save_gguf(_vector({3: torch.ones(8)}), tmp_path / "v.gguf", steer_position=rule)


def test_export_refuses_bad_coefficient_suffix_and_json(tmp_path: Path) -> None:
    v = _vector({3: torch.ones(8)})
    for c in (float("nan"), float("inf")):
        with pytest.raises(ControlVectorError, match="coefficient must be a finite"):
            save_gguf(v, tmp_path / "v.gguf", coefficient=c)
    with pytest.raises(ControlVectorError, match="not finite"):
        save_gguf(_vector({3: torch.full((8,), 3e38)}), tmp_path / "v.gguf", coefficient=10.0)
    with pytest.raises(ControlVectorError, match=r"must end in \.gguf"):
        save_gguf(v, tmp_path / "v.safetensors")
    with pytest.raises(ControlVectorError, match="sources"):
        save_gguf(_vector({3: torch.ones(8)}, sources={"stats": object()}), tmp_path / "v.gguf")
    assert not any(tmp_path.iterdir())


# --- refusals on import ----------------------------------------------------------------

def test_import_refuses_mixed_widths(tmp_path: Path) -> None:
    path = _write_raw(tmp_path / "w.gguf", {"direction.1": np.ones(8, np.float32),
                                            "direction.2": np.ones(9, np.float32)})
    with pytest.raises(ControlVectorError, match="'direction.2' is 9 wide but the tensors before it are 8"):
        load_gguf(path)


def test_import_refuses_width_other_than_the_model(tiny_llama: steerlab.Model, tmp_path: Path) -> None:
    path = _write_raw(tmp_path / "w.gguf", {"direction.1": np.ones(65, np.float32)})
    assert load_gguf(path).d_model == 65
    with pytest.raises(VectorMismatchError, match="'direction.1' is 65 wide but .* has d_model 64"):
        load_gguf(path, tiny_llama)


def test_import_refuses_non_f32(tmp_path: Path) -> None:
    path = _write_raw(tmp_path / "h.gguf", {"direction.1": np.ones(8, np.float32),
                                            "direction.3": np.ones(8, np.float16)})
    with pytest.raises(ControlVectorError, match="'direction.3' is F16; .* must be F32"):
        load_gguf(path)


def test_import_refuses_non_1d(tmp_path: Path) -> None:
    path = _write_raw(tmp_path / "m.gguf", {"direction.2": np.ones((2, 8), np.float32)})
    with pytest.raises(ControlVectorError, match=r"'direction.2' has shape \[8, 2\]; .* must be 1-D"):
        load_gguf(path)


def test_import_refuses_direction_0(tmp_path: Path) -> None:
    path = _write_raw(tmp_path / "z.gguf", {"direction.0": np.ones(8, np.float32)})
    with pytest.raises(ControlVectorError, match="'direction.0'.* refuses direction.0"):
        load_gguf(path)


@pytest.mark.parametrize("name", ["output.weight", "direction.x", "direction.3.bias", "direction", "dir.3"])
def test_import_refuses_other_names(name: str, tmp_path: Path) -> None:
    path = _write_raw(tmp_path / "n.gguf", {"direction.1": np.ones(8, np.float32), name: np.ones(8, np.float32)})
    with pytest.raises(ControlVectorError, match=f"tensor '{name}' is not named direction.N"):
        load_gguf(path)


def test_import_refuses_layers_past_the_model(tiny_llama: steerlab.Model, tmp_path: Path) -> None:
    # tiny_llama has 2 blocks: llama.cpp applies only direction.1 (steerlab layer 2).
    ok = _write_raw(tmp_path / "ok.gguf", {"direction.1": np.ones(64, np.float32)})
    assert load_gguf(ok, tiny_llama).layers == [2]
    past = _write_raw(tmp_path / "past.gguf", {"direction.2": np.ones(64, np.float32)})
    with pytest.raises(VectorMismatchError, match="'direction.2' .*past"):
        load_gguf(past, tiny_llama)


def test_import_refuses_empty_and_non_gguf(tmp_path: Path) -> None:
    with pytest.raises(ControlVectorError, match="no direction.N tensors"):
        load_gguf(_write_raw(tmp_path / "e.gguf", {}))
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf file at all")
    with pytest.raises(ControlVectorError, match="not a readable GGUF"):
        load_gguf(junk)


def test_import_refuses_steerlab_keys_that_contradict_the_tensors(tmp_path: Path) -> None:
    keys = {"steerlab.format": 1, "steerlab.model_name": "m", "steerlab.model_fingerprint": "f",
            "steerlab.d_model": 8, "steerlab.recipe": "raw", "steerlab.sources": "{}",
            "steerlab.position": "last", "steerlab.coefficient": 1.0, "steerlab.added_at": "block_input",
            "steerlab.layers": [3], "steerlab.extra": "{}"}
    good = _write_raw(tmp_path / "good.gguf", {"direction.2": np.ones(8, np.float32)}, steerlab_keys=keys)
    assert load_gguf(good).recipe == "raw"
    shifted = _write_raw(tmp_path / "shifted.gguf", {"direction.3": np.ones(8, np.float32)}, steerlab_keys=keys)
    with pytest.raises(ControlVectorError, match=r"steerlab.layers lists \[3\] but the tensors are for layers \[4\]"):
        load_gguf(shifted)
    outputs = _write_raw(tmp_path / "out.gguf", {"direction.2": np.ones(8, np.float32)},
                         steerlab_keys={**keys, "steerlab.added_at": "block_output"})
    with pytest.raises(ControlVectorError, match="added_at"):
        load_gguf(outputs)


def test_foreign_file_loads_as_imported(tiny_llama: steerlab.Model, tmp_path: Path) -> None:
    planted = np.linspace(-1, 1, 64, dtype=np.float32)
    path = _write_raw(tmp_path / "repeng.gguf", {"direction.1": planted})
    v = load_gguf(path)
    assert (v.recipe, v.layers, v.position, v.model_name) == ("imported", [2], "unknown", "unknown")
    assert v.sources == {"origin": "llama.cpp control vector", "file": "repeng.gguf", "model_hint": "llama"}
    np.testing.assert_array_equal(v.at(2).numpy(), planted)
    for_model = load_gguf(path, tiny_llama)
    assert for_model.model_fingerprint == tiny_llama.fingerprint
    for_model.check_for(tiny_llama)
    # and it exports again to the same tensor
    again = gguf.GGUFReader(save_gguf(for_model, tmp_path / "again.gguf")).tensors
    assert [t.name for t in again] == ["direction.1"]
    np.testing.assert_array_equal(np.asarray(again[0].data), planted)


def test_server_path_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEERLAB_LLAMA_SERVER", str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="STEERLAB_LLAMA_SERVER"):
        llama_server_path()
    exe = tmp_path / "llama-server"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    monkeypatch.setenv("STEERLAB_LLAMA_SERVER", str(exe))
    assert llama_server_path() == exe


# --- end to end against llama.cpp ------------------------------------------------------

_PROMPTS = ["Once upon a time, in a small village by the sea,", "The weather today is",
            "She opened the old wooden door and saw"]
_N_PROBS = 200


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _post(url: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        out: dict[str, Any] = json.loads(resp.read())
        return out


@contextmanager
def _llama_server(server: Path, model_gguf: Path, log: Path, control_vector: Path | None) -> Iterator[str]:
    """A llama-server for the length of a ``with`` block (terminated on exit, also on errors)."""
    port = _free_port()
    cmd = [str(server), "-m", str(model_gguf), "--host", "127.0.0.1", "--port", str(port),
           "-c", "512", "-t", "2", "-np", "1"]
    if control_vector is not None:
        cmd += ["--control-vector", str(control_vector)]
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 120
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"llama-server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
                try:
                    with urllib.request.urlopen(f"{url}/health", timeout=5) as resp:
                        if resp.status == 200:
                            break
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"llama-server not healthy after 120 s:\n{log.read_text()[-3000:]}")
                time.sleep(0.5)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)


def _server_logprobs(url: str, ids: list[int]) -> dict[int, float]:
    """llama.cpp's top next-token log-probs after ``ids`` (raw softmax of the logits)."""
    out = _post(f"{url}/completion", {"prompt": ids, "n_predict": 1, "n_probs": _N_PROBS, "temperature": 0,
                                      "cache_prompt": False}, timeout=60)
    assert out["tokens_evaluated"] == len(ids), "llama.cpp must see exactly steerlab's tokens (no added BOS)"
    return {int(t["id"]): float(t["logprob"]) for t in out["completion_probabilities"][0]["top_logprobs"]}


@torch.inference_mode()
def _hooked_logprobs(model: steerlab.Model, ids: list[int], delta: torch.Tensor | None, layer: int) -> torch.Tensor:
    """Next-token log-probs ``[vocab]`` with ``delta`` added to the input of block ``layer`` at every position.

    A plain forward pre-hook, independent of :mod:`steerlab.steer`.
    """
    def add(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        hidden = args[0] if args else kwargs["hidden_states"]  # [batch, seq, d_model]
        hidden = hidden + delta
        return ((hidden, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": hidden})

    handle = blocks_of(model.hf)[layer].register_forward_pre_hook(add, with_kwargs=True) if delta is not None else None
    try:
        logits = model.hf(input_ids=torch.tensor([ids])).logits[0, -1].float()  # [vocab]
    finally:
        if handle is not None:
            handle.remove()
    return logits.log_softmax(-1)


def _corr(a: list[float], b: list[float]) -> float:
    return float(np.corrcoef(np.asarray(a), np.asarray(b))[0, 1])


@pytest.mark.llamacpp
@pytest.mark.real
def test_llama_server_matches_steerlab(real_model: steerlab.Model, tmp_path: Path) -> None:
    """A fantasy vector at steerlab layer 11, exported as direction.10, moves llama.cpp's next-token
    log-probs as steerlab's own steering at layer 11 does (and clearly less like layers 10 or 12)."""
    if _SERVER is None:
        pytest.skip("llama-server is not built: run `make llamacpp` (12-40 minutes on 2 cores) "
                    "or set STEERLAB_LLAMA_SERVER")
    from steerlab.models import embedded_gguf_path

    model, layer = real_model, 11
    fantasy = steerlab.load_dataset("fantasy", "train").sample(16)
    general = steerlab.load_dataset("general", "train").sample(16)
    v = steerlab.mean_centred(model, fantasy, general, layers=[layer])
    scale = steerlab.unit_norm(model, layer) / v.norm(layer)  # 1x the unit (the centred norm)
    cvec = save_gguf(v, tmp_path / "fantasy.gguf", coefficient=scale)
    delta = load_gguf(cvec, model).at(layer)  # exactly what llama.cpp adds
    assert [t.name for t in gguf.GGUFReader(cvec).tensors] == [f"direction.{layer - 1}"]

    ids = [model.tokenizer(p)["input_ids"] for p in _PROMPTS]
    gguf_file = embedded_gguf_path()
    with _llama_server(_SERVER, gguf_file, tmp_path / "plain.log", None) as url:
        plain = [_server_logprobs(url, row) for row in ids]
    with _llama_server(_SERVER, gguf_file, tmp_path / "steered.log", cvec) as url:
        steered = [_server_logprobs(url, row) for row in ids]
    # llama-server only logs a control vector it refuses, then serves unsteered: look for that.
    steered_log = (tmp_path / "steered.log").read_text()
    assert "no valid control vector" not in steered_log and "invalid" not in steered_log, steered_log[-3000:]

    # steerlab's public steering scope adds the same tensor at every position as the plain hook.
    with steerlab.steering(model, delta, layer=layer, coefficient=1.0, position="all", scale="raw"):
        scoped = model.hf(input_ids=torch.tensor([ids[0]])).logits[0, -1].float().log_softmax(-1)
    torch.testing.assert_close(scoped, _hooked_logprobs(model, ids[0], delta, layer), atol=1e-4, rtol=0)

    report: dict[str, Any] = {"scale": scale, "n_shared": [], "plain_max_abs_diff": [], "top5_overlap": []}
    corr: dict[int, list[float]] = {la: [] for la in (layer - 1, layer, layer + 1)}
    for row, lp_plain, lp_steered in zip(ids, plain, steered):
        base = _hooked_logprobs(model, row, None, layer)
        shared = sorted(set(lp_plain) & set(lp_steered))
        shift_cpp = [lp_steered[t] - lp_plain[t] for t in shared]
        report["n_shared"].append(len(shared))
        report["plain_max_abs_diff"].append(max(abs(lp_plain[t] - float(base[t])) for t in lp_plain))
        for la, values in corr.items():
            ours = _hooked_logprobs(model, row, delta, la)
            values.append(_corr(shift_cpp, [float(ours[t] - base[t]) for t in shared]))
            if la == layer:
                top_cpp = sorted(lp_steered, key=lambda t: -lp_steered[t])[:5]
                top_ours = ours.topk(5).indices.tolist()
                report["top5_overlap"].append(len(set(top_cpp) & set(top_ours)))
    report["corr"] = {la: [round(c, 4) for c in cs] for la, cs in corr.items()}
    print("llama.cpp vs steerlab:", json.dumps(report))

    assert min(report["n_shared"]) >= 20, report
    assert max(report["plain_max_abs_diff"]) < 0.75, report  # same weights, llama.cpp's quantized arithmetic
    assert min(corr[layer]) > 0.9, report
    assert min(report["top5_overlap"]) >= 4, report
    for wrong in (layer - 1, layer + 1):
        assert np.mean(corr[wrong]) < np.mean(corr[layer]) - 0.05, report


# --- hostile files: a clear error naming the file, no huge allocation ------------------

_KEYS = {"steerlab.format": 1, "steerlab.model_name": "m", "steerlab.model_fingerprint": "f",
         "steerlab.d_model": 8, "steerlab.recipe": "raw", "steerlab.sources": "{}",
         "steerlab.position": "last", "steerlab.coefficient": 1.0, "steerlab.added_at": "block_input",
         "steerlab.layers": [2], "steerlab.extra": "{}"}


def _good_bytes(tmp_path: Path) -> bytes:
    return save_gguf(_vector({2: torch.arange(8.0), 3: torch.ones(8)}), tmp_path / "good.gguf").read_bytes()


def _string_length_offset(data: bytes, text: bytes) -> int:
    """Where the 8-byte length of the GGUF string ``text`` starts."""
    return data.index(len(text).to_bytes(8, "little") + text)


def _hostile(kind: str, tmp_path: Path) -> bytes:
    import struct

    data = _good_bytes(tmp_path)
    if kind.startswith("cut_"):
        return data[: int(kind.removeprefix("cut_"))]
    if kind == "tensor_count_2**62":
        return data[:8] + struct.pack("<Q", 2**62) + data[16:]
    if kind == "kv_count_2**62":
        return data[:16] + struct.pack("<Q", 2**62) + data[24:]
    if kind in ("key_length_2**62", "value_length_2**62", "tensor_name_length_2**62"):
        text = {"key_length_2**62": b"steerlab.recipe", "value_length_2**62": b"mean_centred",
                "tensor_name_length_2**62": b"direction.2"}[kind]
        at = _string_length_offset(data, text)
        return data[:at] + struct.pack("<Q", 2**62) + data[at + 8:]
    if kind == "array_count_2**62":
        key = b"steerlab.layers"
        at = _string_length_offset(data, key) + 8 + len(key) + 4 + 4  # past the key, its type, the item type
        return data[:at] + struct.pack("<Q", 2**62) + data[at + 8:]
    if kind == "duplicated_key":
        return data.replace(b"steerlab.recipe", b"steerlab.format"[:15], 1)
    if kind == "nan_values":
        values = np.ones(8, np.float32)
        values[3] = np.nan
        return _write_raw(tmp_path / "nan.gguf", {"direction.1": values}, steerlab_keys={**_KEYS}).read_bytes()
    if kind == "inf_values":
        values = np.ones(8, np.float32)
        values[0] = np.inf
        return _write_raw(tmp_path / "inf.gguf", {"direction.1": values}).read_bytes()
    if kind == "extra_not_json":
        keys = {**_KEYS, "steerlab.extra": "{not json"}
    elif kind == "sources_not_an_object":
        keys = {**_KEYS, "steerlab.sources": "[1, 2]"}
    elif kind == "no_d_model":
        keys = {k: v for k, v in _KEYS.items() if k != "steerlab.d_model"}
    elif kind == "d_model_a_string":
        keys = {**_KEYS, "steerlab.d_model": "eight"}
    elif kind == "coefficient_nan":
        keys = {**_KEYS, "steerlab.coefficient": float("nan")}
    else:
        raise AssertionError(kind)
    return _write_raw(tmp_path / "keys.gguf", {"direction.1": np.ones(8, np.float32)}, steerlab_keys=keys).read_bytes()


@pytest.mark.parametrize(("kind", "message"), [
    ("cut_0", "not a readable GGUF file"),
    ("cut_6", "cut short: 6 bytes, less than the 24-byte GGUF header"),
    ("cut_20", "cut short"),
    ("cut_40", "cannot fit"),
    ("cut_300", "cut short or damaged: .* needs 16 bytes, only 4 are left"),
    ("cut_700", "cut short"),
    ("tensor_count_2**62", "claims 4611686018427387904 tensors"),
    ("kv_count_2**62", "4611686018427387904 metadata entries"),
    ("key_length_2**62", "the key of metadata entry 7 needs 4611686018427387904 bytes"),
    ("value_length_2**62", "cut short or damaged"),
    ("tensor_name_length_2**62", "the name of tensor 1 needs 4611686018427387904 bytes"),
    ("array_count_2**62", "claims 4611686018427387904 items"),
    ("duplicated_key", "metadata key 'steerlab.format' appears twice"),
    ("nan_values", "'direction.1' holds 1 NaN or infinite values"),
    ("inf_values", "'direction.1' holds 1 NaN or infinite values"),
    ("extra_not_json", "steerlab.extra is not JSON"),
    ("sources_not_an_object", "steerlab.sources is \\[1, 2\\]; expected a JSON object"),
    ("no_d_model", "lacks steerlab.d_model"),
    ("d_model_a_string", "steerlab.d_model is 'eight'; expected an integer"),
    ("coefficient_nan", "steerlab.coefficient is nan; expected a finite number"),
])
def test_a_hostile_file_is_a_clear_error_naming_it(kind: str, message: str, tmp_path: Path) -> None:
    """Each of these gave a raw IndexError / KeyError / JSONDecodeError / ValueError without the
    file's name, or loaded NaN values; an array count of 2**62 made the gguf package allocate
    without end (seen: 22 GB). The load runs under an address-space limit, so a regression
    fails here instead of exhausting a shared machine."""
    import os
    import resource
    import tracemalloc

    path = tmp_path / f"{kind}.gguf"
    path.write_bytes(_hostile(kind, tmp_path))
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    in_use = int(Path("/proc/self/statm").read_text().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    tracemalloc.start()
    resource.setrlimit(resource.RLIMIT_AS, (in_use + (1 << 30), hard))
    try:
        with pytest.raises(ControlVectorError, match=message) as caught:
            load_gguf(path)
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert str(path) in str(caught.value)
    assert peak < 20 << 20, f"{peak} bytes allocated"


def test_gguf_files_get_the_umasks_mode_and_tilde_is_expanded(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")  # where a literal "~" folder would appear
    v = _vector({3: torch.ones(8)})
    old = os.umask(0o022)
    try:
        written = save_gguf(v, "~/out/v.gguf")
    finally:
        os.umask(old)
    assert written == tmp_path / "out" / "v.gguf"
    assert written.stat().st_mode & 0o777 == 0o644  # was 0600 (tempfile.mkstemp), whatever the umask
    assert not (tmp_path / "cwd" / "~").exists()
    assert load_gguf("~/out/v.gguf").layers == [3]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["v.gguf"]
