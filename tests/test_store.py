"""Atomic tensor files (steerlab.store): safetensors beside checksummed JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
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
    assert back_meta == meta  # the checksums stay in the file
    on_disk = json.loads((tmp_path / "x.json").read_text())
    assert len(on_disk["tensor_sha256"]) == 64 and len(on_disk["meta_sha256"]) == 64


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


def test_a_dotted_stem_keeps_its_dots(tmp_path: Path) -> None:
    """``x_c0.5`` and ``x_c0.7`` are two pairs, not both ``x_c0``."""
    save_tensors(tmp_path / "x_c0.5", {"v": torch.ones(2)}, {"c": 0.5})
    save_tensors(tmp_path / "x_c0.7", {"v": torch.zeros(2)}, {"c": 0.7})
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "x_c0.5.json", "x_c0.5.safetensors", "x_c0.7.json", "x_c0.7.safetensors"]
    assert load_tensors(tmp_path / "x_c0.5")[1] == {"c": 0.5}
    assert torch.equal(load_tensors(tmp_path / "x_c0.7")[0]["v"], torch.zeros(2))
    # A stem given with one of the two suffixes means the same pair.
    assert load_tensors(tmp_path / "x_c0.5.safetensors")[1] == {"c": 0.5}
    assert store.paths_of(tmp_path / "x_c0.5.json") == store.paths_of(tmp_path / "x_c0.5")


@pytest.mark.parametrize("edit", [
    lambda m: m.update(layers=[1, 3]),
    lambda m: m.update(recipe="mean_centred"),
    lambda m: m.update(extra_field=1),
    lambda m: m.pop("recipe"),
])
def test_an_edited_metadata_field_is_detected(tmp_path: Path, edit: Any) -> None:
    save_tensors(tmp_path / "x", *_pair())
    path = tmp_path / "x.json"
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta, indent=1))
    with pytest.raises(StoreError, match="x.json was altered"):
        load_tensors(tmp_path / "x")


def test_metadata_checksum_ignores_formatting_and_key_order(tmp_path: Path) -> None:
    save_tensors(tmp_path / "x", _pair()[0], {"b": {"2": 1, "10": 2}, "a": [1.5, None, "é"], "n": float("nan")})
    path = tmp_path / "x.json"
    path.write_text(json.dumps(dict(reversed(list(json.loads(path.read_text()).items())))))
    meta = load_tensors(tmp_path / "x")[1]
    assert meta["b"] == {"2": 1, "10": 2} and meta["a"] == [1.5, None, "é"]


def test_a_pair_written_before_metadata_checksums_still_loads(tmp_path: Path) -> None:
    save_tensors(tmp_path / "x", *_pair())
    path = tmp_path / "x.json"
    meta = json.loads(path.read_text())
    del meta["meta_sha256"]
    path.write_text(json.dumps(meta))
    assert load_tensors(tmp_path / "x")[1] == _pair()[1]


def test_reserved_metadata_keys_are_refused(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="reserved"):
        save_tensors(tmp_path / "x", _pair()[0], {"tensor_sha256": "0" * 64})


def test_nan_and_inf_save_and_load_alike(tmp_path: Path) -> None:
    """Statistics may hold NaN (one token has no pairwise cosine): what saves, loads."""
    odd = torch.tensor([float("nan"), float("inf"), -float("inf"), 1.0])
    save_tensors(tmp_path / "x", {"v": odd}, {})
    back = load_tensors(tmp_path / "x")[0]["v"]
    assert torch.equal(torch.isnan(back), torch.isnan(odd))
    assert back[1:].tolist() == odd[1:].tolist()


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_files_get_the_umasks_usual_mode(tmp_path: Path, umask: int, mode: int) -> None:
    old = os.umask(umask)
    try:
        save_tensors(tmp_path / "x", *_pair())
        atomic_write_text(tmp_path / "note.txt", "hi")
    finally:
        os.umask(old)
    for name in ("x.safetensors", "x.json", "note.txt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == mode, name


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_temporary_files_of_dead_writers_are_cleaned(tmp_path: Path) -> None:
    old = time.time() - store.STALE_SECONDS - 60
    dead, alive = _dead_pid(), os.getppid()
    files = {
        "dead_old": tmp_path / f".x.safetensors.{dead}.0badc0de.tmp",
        "mkstemp_old": tmp_path / ".x.json.k2j3h4l5.tmp",  # the name tempfile.mkstemp gave before
        "dead_recent": tmp_path / f".y.json.{dead}.0badc0de.tmp",
        "alive_old": tmp_path / f".z.json.{alive}.0badc0de.tmp",
        "not_ours": tmp_path / ".editor-swap.tmp",
    }
    for key, path in files.items():
        path.write_bytes(b"half")
        if key != "dead_recent":
            os.utime(path, (old, old))
    save_tensors(tmp_path / "w", *_pair())
    left = {key for key, path in files.items() if path.exists()}
    assert left == {"dead_recent", "alive_old", "not_ours"}
    assert {p.name for p in tmp_path.iterdir() if not p.name.startswith(".")} == {"w.json", "w.safetensors"}
