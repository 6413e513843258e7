"""``pip install .`` (not editable) gives a package that finds its corpora.

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
