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
    meta: dict[str, Any] = {"tensor_sha256": store._sha256(tmp_path / "x.safetensors")}
    meta["meta_sha256"] = store._meta_sha256(meta)
    (tmp_path / "x.json").write_text(json.dumps(meta))
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

    # The JSON write failing (after the tensors were written): the old pair is still there, whole.
    def fail_text(path: Path, text: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(store, "_write_text", fail_text)
    with pytest.raises(OSError):
        save_tensors(tmp_path / "x", {"a": torch.zeros(2)}, {"recipe": "other"})
    back, back_meta = load_tensors(tmp_path / "x")
    assert torch.equal(back["a"], tensors["a"]) and back_meta["recipe"] == "raw"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json", "x.safetensors"]


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


def test_a_deleted_metadata_checksum_is_detected(tmp_path: Path) -> None:
    """Deleting ``meta_sha256`` used to skip the metadata check: an edit plus a deletion loaded."""
    save_tensors(tmp_path / "x", *_pair())
    path = tmp_path / "x.json"
    meta = json.loads(path.read_text())
    del meta["meta_sha256"]
    meta["recipe"] = "mean_centred"
    path.write_text(json.dumps(meta))
    with pytest.raises(StoreError, match="x.json has no meta_sha256 checksum.*save it again"):
        load_tensors(tmp_path / "x")


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


# --- a pair is one thing: the old pair or the new one, never a mix ---------------------

_KILLED_WRITER = """
import os, signal, sys
from pathlib import Path
import torch
from steerlab import store

real_replace = os.replace
def replace(src, dst, **kw):
    if Path(dst).name == sys.argv[2]:
        os.kill(os.getpid(), signal.SIGKILL)
    real_replace(src, dst, **kw)
os.replace = replace
store.save_tensors(Path(sys.argv[1]), {"a": torch.full((3,), 2.0)}, {"recipe": "new"})
"""


def _run_python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(store.__file__).parents[1]), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True,
                          timeout=120, check=False)


@pytest.mark.parametrize("killed_before", [".x.publish", "x.safetensors", "x.json"])
def test_a_writer_killed_at_any_rename_leaves_the_old_or_the_new_pair(tmp_path: Path, killed_before: str) -> None:
    """SIGKILL just before each rename of an overwrite. Before the journal is committed the old
    pair stays; after it, the next reader finishes the renames. (The old store renamed the
    tensors, then the JSON: a kill between the two left neither pair loadable.)"""
    save_tensors(tmp_path / "x", {"a": torch.full((3,), 1.0)}, {"recipe": "old"})
    done = _run_python(_KILLED_WRITER, str(tmp_path / "x"), killed_before)
    assert done.returncode == -9, done.stderr
    tensors, meta = load_tensors(tmp_path / "x")
    expected = {".x.publish": ("old", 1.0), "x.safetensors": ("new", 2.0), "x.json": ("new", 2.0)}[killed_before]
    assert (meta["recipe"], float(tensors["a"][0])) == expected
    assert torch.equal(tensors["a"], torch.full((3,), expected[1]))
    # The dead writer's leftovers go once stale; a pending journal's files never before it is finished.
    old = time.time() - store.STALE_SECONDS - 60
    for leftover in tmp_path.glob(".*"):
        os.utime(leftover, (old, old))
    save_tensors(tmp_path / "y", *_pair())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json", "x.safetensors", "y.json", "y.safetensors"]


def test_a_journal_left_by_a_dead_writer_is_finished_before_its_files_are_cleaned(tmp_path: Path) -> None:
    save_tensors(tmp_path / "x", {"a": torch.full((3,), 1.0)}, {"recipe": "old"})
    done = _run_python(_KILLED_WRITER, str(tmp_path / "x"), "x.safetensors")  # journal committed, nothing renamed
    assert done.returncode == -9, done.stderr
    old = time.time() - store.STALE_SECONDS - 60
    for leftover in tmp_path.glob(".*"):
        os.utime(leftover, (old, old))
    save_tensors(tmp_path / "y", *_pair())  # cleans stale files, then finishes x's journal
    assert load_tensors(tmp_path / "x")[1]["recipe"] == "new"
    assert not list(tmp_path.glob(".*"))


def test_two_writers_never_pair_one_writers_tensors_with_the_others_json(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Writer A stops right after its tensors reach their final name; writer B saves the same
    stem meanwhile. The old store let B finish, then A's JSON landed beside B's tensors (both
    writers' work lost, detected on read); now B waits for A's pair to be published."""
    import threading

    real_replace = os.replace
    a_paused, a_go = threading.Event(), threading.Event()

    def replace(src: Any, dst: Any, **kw: Any) -> None:
        real_replace(src, dst, **kw)
        if threading.current_thread().name == "A" and Path(dst).name == "x.safetensors":
            a_paused.set()
            a_go.wait(10)

    monkeypatch.setattr(os, "replace", replace)
    errors: list[BaseException] = []

    def writer(value: float) -> None:
        try:
            save_tensors(tmp_path / "x", {"a": torch.full((3,), value)}, {"value": value})
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    a = threading.Thread(target=writer, args=(1.0,), name="A")
    a.start()
    assert a_paused.wait(10)
    b = threading.Thread(target=writer, args=(2.0,), name="B")
    b.start()
    b.join(1.0)  # the old store finished B here
    read: list[Any] = []
    reader = threading.Thread(target=lambda: read.append(load_tensors(tmp_path / "x")), name="R")
    reader.start()
    a_go.set()
    for t in (a, b, reader):
        t.join(20)
    assert not errors
    tensors, meta = load_tensors(tmp_path / "x")
    assert float(tensors["a"][0]) == meta["value"] == 2.0  # B published last
    (seen_tensors, seen_meta), = read
    assert float(seen_tensors["a"][0]) == seen_meta["value"]


_BUSY_WRITER = """
import sys
from pathlib import Path
import torch
from steerlab import store
for i in range(int(sys.argv[3])):
    value = float(sys.argv[2]) + i
    store.save_tensors(Path(sys.argv[1]), {"a": torch.full((64,), value)}, {"value": value})
"""


def test_concurrent_writer_processes_and_a_reader_see_whole_pairs(tmp_path: Path) -> None:
    save_tensors(tmp_path / "x", {"a": torch.full((64,), -1.0)}, {"value": -1.0})
    env = {**os.environ, "PYTHONPATH": str(Path(store.__file__).parents[1]), "OMP_NUM_THREADS": "1"}
    writers = [subprocess.Popen([sys.executable, "-c", _BUSY_WRITER, str(tmp_path / "x"), str(start), "40"],
                                env=env, stderr=subprocess.PIPE, text=True) for start in (1000, 2000)]
    reads = 0
    while any(w.poll() is None for w in writers) or reads == 0:
        tensors, meta = load_tensors(tmp_path / "x")  # never a StoreError
        assert torch.equal(tensors["a"], torch.full((64,), meta["value"]))
        reads += 1
    for w in writers:
        assert w.wait(60) == 0, w.stderr.read() if w.stderr else ""
    assert load_tensors(tmp_path / "x")[1]["value"] in (1039.0, 2039.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json", "x.safetensors"]


# --- a failed write is an OSError, and leaves the old pair ------------------------------

def test_a_safetensors_failure_is_an_oserror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from safetensors import SafetensorError

    save_tensors(tmp_path / "x", *_pair())

    def full_disk(tensors: Any, filename: str) -> None:
        raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, "
                              "message: \"No space left on device\" }) (os error 28)")

    monkeypatch.setattr(store, "save_file", full_disk)
    with pytest.raises(OSError, match="No space left on device") as caught:
        save_tensors(tmp_path / "x", {"a": torch.zeros(2)}, {})
    assert isinstance(caught.value, store.StoreWriteError) and caught.value.errno == 28
    assert load_tensors(tmp_path / "x")[1] == _pair()[1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json", "x.safetensors"]


_SMALL_DISK = """
import resource, signal, sys
from pathlib import Path
import torch
from steerlab import store
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
try:
    store.save_tensors(Path(sys.argv[1]), {"a": torch.zeros(100_000)}, {})
except OSError as err:
    print("OSError", type(err).__name__, err)
"""


def test_a_file_too_large_for_the_disk_is_an_oserror_and_leaves_nothing(tmp_path: Path) -> None:
    """A real write failure inside safetensors (a file-size limit stands in for a full disk):
    the old store raised ``SafetensorError``, which callers catching ``OSError`` let through."""
    done = _run_python(_SMALL_DISK, str(tmp_path / "x"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("OSError StoreWriteError"), done.stdout
    assert list(tmp_path.iterdir()) == []
