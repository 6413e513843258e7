"""Atomic tensor files (steerlab.store): safetensors beside checksummed JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from steerlab import store
from steerlab.store import StoreError, atomic_write_text, load_tensors, save_tensors


def _pair() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    g = torch.Generator().manual_seed(0)
    return {"a": torch.randn(3, 4, generator=g), "b": torch.arange(5.0)}, {"recipe": "raw", "layers": [1, 2]}


def test_round_trip(tmp_path: Path) -> None:
    tensors, meta = _pair()
    save_tensors(tmp_path / "x", tensors, meta)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json", "x.safetensors"]
    back, back_meta = load_tensors(tmp_path / "x")
    assert back.keys() == tensors.keys()
    for k in tensors:
        assert torch.equal(back[k], tensors[k])
    assert {k: v for k, v in back_meta.items() if k != "tensor_sha256"} == meta
    assert len(back_meta["tensor_sha256"]) == 64


def test_saving_does_not_touch_the_callers_tensor(tmp_path: Path) -> None:
    base = torch.randn(4, 6)
    view = base[:, ::2]  # not contiguous
    before = base.clone()
    save_tensors(tmp_path / "x", {"v": view}, {})
    assert torch.equal(base, before)
    assert torch.equal(load_tensors(tmp_path / "x")[0]["v"], view)


@pytest.mark.parametrize("damage, match", [
    ("truncate", "does not match the checksum"),
    ("flip", "does not match the checksum"),
    ("no_tensors", "cannot read tensors"),
    ("no_json", "cannot read metadata"),
    ("garbage_json", "cannot read metadata"),
    ("json_list", "is not a JSON object"),
])
def test_damage_is_detected(tmp_path: Path, damage: str, match: str) -> None:
    save_tensors(tmp_path / "x", *_pair())
    tensors_file, json_file = tmp_path / "x.safetensors", tmp_path / "x.json"
    data = tensors_file.read_bytes()
    if damage == "truncate":
        tensors_file.write_bytes(data[:-7])
    elif damage == "flip":
        tensors_file.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    elif damage == "no_tensors":
        tensors_file.unlink()
    elif damage == "no_json":
        json_file.unlink()
    elif damage == "garbage_json":
        json_file.write_text("{\"tensor_sha256\": ")
    else:
        json_file.write_text("[]")
    with pytest.raises(StoreError, match=match):
        load_tensors(tmp_path / "x")


def test_a_consistent_but_unreadable_tensor_file_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "x.safetensors").write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{oops")
    digest = store._sha256(tmp_path / "x.safetensors")
    (tmp_path / "x.json").write_text(json.dumps({"tensor_sha256": digest}))
    with pytest.raises(StoreError, match="cannot read tensors"):
        load_tensors(tmp_path / "x")


def _half_write(tensors: dict[str, torch.Tensor], filename: str) -> None:
    Path(filename).write_bytes(b"\x00" * 10)
    raise OSError("disk full")


def test_failed_save_leaves_no_file_under_the_final_name(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "save_file", _half_write)
    with pytest.raises(OSError, match="disk full"):
        save_tensors(tmp_path / "x", *_pair())
    assert list(tmp_path.iterdir()) == []  # no final name, no temporary left over


def test_failed_overwrite_keeps_the_old_pair_or_is_detected(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    tensors, meta = _pair()
    save_tensors(tmp_path / "x", tensors, meta)
    monkeypatch.setattr(store, "save_file", _half_write)
    with pytest.raises(OSError):
        save_tensors(tmp_path / "x", {"a": torch.zeros(2)}, {"recipe": "other"})
    back, back_meta = load_tensors(tmp_path / "x")  # the old pair, intact
    assert torch.equal(back["a"], tensors["a"]) and back_meta["recipe"] == "raw"
    monkeypatch.undo()

    # Tensors replaced but the JSON write failing: the mismatch is caught on load.
    def fail_text(path: Path, text: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(store, "atomic_write_text", fail_text)
    with pytest.raises(OSError):
        save_tensors(tmp_path / "x", {"a": torch.zeros(2)}, {"recipe": "other"})
    with pytest.raises(StoreError, match="does not match the checksum"):
        load_tensors(tmp_path / "x")


def test_atomic_write_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "sub" / "note.txt"
    atomic_write_text(target, "first")
    assert target.read_text() == "first"

    def broken_write_text(self: Path, *args: Any, **kwargs: Any) -> None:
        Path.write_bytes(self, b"fir")
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_text", broken_write_text)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(target, "second")
    monkeypatch.undo()
    assert target.read_text() == "first"
    assert [p.name for p in target.parent.iterdir()] == ["note.txt"]
