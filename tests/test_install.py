"""``pip install .`` (not editable) gives a package that finds its corpora; and the embedded
model's provisioned cache (steerlab.embedded) is usable by others, and checked, as installed.

Builds a wheel from a copy of the source (so the shared tree gets no ``build/``),
installs it into a fresh virtual environment, and imports it from a temporary
folder. Offline and fast: the new environment sees the project environment's
packages (torch, transformers, ...) through a ``.pth`` line, which adds that
folder to ``sys.path`` without running its own ``.pth`` files, so the editable
install of steerlab there is not seen.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(cmd, check=False, cwd=cwd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def installed_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The python of a fresh venv holding steerlab installed from a wheel."""
    tmp = tmp_path_factory.mktemp("install")
    src = tmp / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "generated")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    for name in ("lib", "data"):
        shutil.copytree(REPO / name, src / name, symlinks=True, ignore=ignore)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
          ".", "-w", str(tmp / "dist")], cwd=src)
    (wheel,) = (tmp / "dist").glob("steerlab-*.whl")
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp)
    python = venv / "bin" / "python"
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp).strip())
    (site / "_project_packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(site),
          str(wheel)], cwd=tmp)
    return python


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "STEERLAB_DATA")}
    env["OMP_NUM_THREADS"] = "1"
    return env


def test_the_installed_package_finds_its_corpora(installed_python: Path, tmp_path: Path) -> None:
    code = (
        "import steerlab as sl, steerlab.data as d\n"
        "assert 'lib/steerlab' not in sl.__file__, sl.__file__\n"
        "print(sl.__file__)\n"
        "print(d.data_dir())\n"
        "print(len(sl.load_dataset('fantasy').texts), len(sl.load_dataset('mixed', 'train')))\n"
    )
    out = _run([str(installed_python), "-c", code], cwd=tmp_path, env=_clean_env()).splitlines()
    module, folder, counts = out[-3:]
    assert str(installed_python.parents[1]) in module
    assert Path(folder).is_relative_to(Path(module).parent) and not Path(folder).is_symlink()
    import steerlab as sl

    assert counts.split() == [str(len(sl.load_dataset("fantasy"))), str(len(sl.load_dataset("mixed", "train")))]


def test_the_installed_package_loads_the_embedded_model(installed_python: Path, tmp_path: Path) -> None:
    code = (
        "import steerlab as sl\n"
        "m = sl.load_model(progress=False)\n"
        "s = sl.activation_stats(m, sl.load_dataset('fantasy').sample(2), layers=[3], cache=False, progress=False)\n"
        "print(m.n_layers, m.d_model, s.count > 0)\n"
    )
    out = _run([str(installed_python), "-c", code], cwd=tmp_path, env=_clean_env()).splitlines()
    assert out[-1] == "30 576 True"


# --- the provisioned cache: modes, in-place damage, errors naming the file -----------------


@pytest.fixture
def fake_embedded(tiny_llama: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, list[str]]:
    """An embedded model whose "de-quantizing" copies the tiny Llama (weights 0600, as
    safetensors writes them), in a private cache."""
    import shutil

    from steerlab import embedded
    from steerlab.embedded import EmbeddedModel

    monkeypatch.setenv("STEERLAB_CACHE", str(tmp_path / "cache"))
    rebuilt: list[str] = []

    def dequantize(gguf: Path, out: Path, steps: object) -> None:
        rebuilt.append(str(out))
        shutil.copytree(tiny_llama.source, out)
        os.chmod(out / "model.safetensors", 0o600)
        embedded._write_marker(out, gguf.name)

    spec = EmbeddedModel("fake-tiny", (), "pip install nothing", lambda: "fake:1", lambda scratch: Path("fake.gguf"))
    monkeypatch.setattr(embedded, "_dequantize", dequantize)
    monkeypatch.setitem(embedded.EMBEDDED_MODELS, spec.name, spec)
    return spec, rebuilt


def test_provisioned_files_get_the_umasks_mode(fake_embedded: tuple[Any, list[str]]) -> None:
    """safetensors writes 0600: another user of a shared cache could not load the model."""
    from steerlab import embedded

    spec, _ = fake_embedded
    old = os.umask(0o022)
    try:
        folder = embedded.provision(spec, progress=False)
        assert {p.name: p.stat().st_mode & 0o777 for p in folder.iterdir()} == {
            p.name: 0o644 for p in folder.iterdir()}
        assert folder.stat().st_mode & 0o777 == 0o755
        os.chmod(folder / "model.safetensors", 0o600)  # a checkpoint provisioned by an older steerlab
        assert embedded.provision(spec, progress=False) == folder
        assert (folder / "model.safetensors").stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(old)


def test_a_byte_changed_in_place_in_the_weights_is_found_before_loading(fake_embedded: tuple[Any, list[str]],
                                                                      tiny_llama: Any) -> None:
    """Same size, so the size check passed and the damaged weights loaded silently as another
    model; the file's modification time moved, so its checksum is checked now."""
    import steerlab
    from steerlab import embedded

    spec, rebuilt = fake_embedded
    folder = embedded.provision(spec, progress=False)
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0x40  # inside the last tensor's values
    weights.write_bytes(bytes(data))
    model = steerlab.load_model("fake-tiny", progress=False)
    assert len(rebuilt) == 2 and model.fingerprint == tiny_llama.fingerprint
    (aside,) = folder.parent.glob(f".{folder.name}.damaged-*")
    assert "model.safetensors has SHA-256" in (aside / "steerlab-damaged.txt").read_text()


def test_an_unchanged_checkpoint_is_not_hashed_and_old_markers_learn_the_times(
        fake_embedded: tuple[Any, list[str]], monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from steerlab import embedded

    spec, rebuilt = fake_embedded
    folder = embedded.provision(spec, progress=False)
    marker_path = folder / embedded.COMPLETE_MARKER
    marker = json.loads(marker_path.read_text())
    for info in marker["files"].values():  # as written before the times were recorded
        del info["mtime_ns"]
    marker_path.write_text(json.dumps(marker))
    hashed: list[str] = []
    real_sha256 = embedded._sha256
    monkeypatch.setattr(embedded, "_sha256", lambda path: hashed.append(path.name) or real_sha256(path))
    assert embedded.provision(spec, progress=False) == folder
    assert "model.safetensors" in hashed and len(rebuilt) == 1  # checked, not rebuilt
    assert all("mtime_ns" in info for info in json.loads(marker_path.read_text())["files"].values())
    hashed.clear()
    assert embedded.provision(spec, progress=False) == folder
    assert hashed == []  # sizes and times prove it unchanged


def test_a_damaged_gguf_is_a_load_error_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The de-quantizing step raised transformers' own error, which named no file."""
    from steerlab import embedded
    from steerlab.embedded import EmbeddedModel, ModelLoadError

    monkeypatch.setenv("STEERLAB_CACHE", str(tmp_path / "cache"))
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\x07" * 40)
    spec = EmbeddedModel("cut-gguf", (), "pip install cut", lambda: "cut:1", lambda scratch: cut)
    with pytest.raises(ModelLoadError, match=f"could not de-quantize {cut} into the cut-gguf checkpoint"):
        embedded.provision(spec, progress=False)
    assert not spec.checkpoint_dir().exists()
    assert not [p for p in spec.checkpoint_dir().parent.iterdir() if not p.name.endswith(".lock")]


def test_the_lock_is_taken_read_only_where_the_cache_is_not_writable(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from steerlab import embedded
    from steerlab.embedded import ModelLoadError

    lock = tmp_path / ".x.lock"
    real_open = os.open

    def no_write(path: Any, flags: int, *args: Any) -> int:
        if flags & (os.O_RDWR | os.O_WRONLY | os.O_CREAT):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args)

    lock.write_text("")
    monkeypatch.setattr(os, "open", no_write)
    with embedded._lock(lock):  # another user's lock file: read-only is enough for flock
        pass
    lock.unlink()
    with pytest.raises(ModelLoadError, match="cannot take the provisioning lock .* not writable by this user"), \
            embedded._lock(lock):
        pass
