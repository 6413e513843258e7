"""The live steering widget in a real browser: JupyterLab (started from this venv on
loopback) runs a small variant of notebooks/03_steer.ipynb, headless Debian Chromium
driven by Playwright moves the coefficient slider, and the page's steered completion
changes while the unsteered one stays.

Needs ``/usr/bin/chromium`` (``apt-get install chromium``; the CI script installs it).
Playwright's own browser download is never used. If Chromium cannot start, the test
fails with the reason.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
from papermill.iorw import load_notebook_node
from papermill.parameterize import parameterize_notebook

pytestmark = [pytest.mark.browser, pytest.mark.real]

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "03_steer.ipynb"
SCREENSHOT_COPY = REPO / "test-output" / "browser" / "steer_widget.png"
CHROMIUM = "/usr/bin/chromium"
# From the project's field notes: without the background-networking flags Chromium
# keeps trying to reach the network. Playwright adds its own empty --user-data-dir.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SMALL_PARAMS = {"examples": ["additional"], "sweep": [0.0, 1.0], "coefficient": 1.0,
                "positions": ["all_prompt"], "samples": 1, "max_new_tokens": 8, "sample_size": 4,
                "max_length": 32}

# Time limits (seconds); the whole test stays under 4 minutes.
SERVER_START = 60
PAGE_LOAD = 60
NOTEBOOK_RUN = 150
SLIDER_UPDATE = 60


@dataclass
class Lab:
    url: str
    log: Path
    output_dir: Path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _jupyter() -> list[str]:
    exe = Path(sys.executable).with_name("jupyter")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "jupyter"]


def _log_tail(log: Path, n: int = 3000) -> str:
    return log.read_text(errors="replace")[-n:] if log.exists() else "(no log)"


def _small_notebook(folder: Path, output_dir: Path) -> Path:
    """03_steer.ipynb with tiny parameters injected after its ``parameters`` cell."""
    nb = load_notebook_node(str(NOTEBOOK))  # papermill's loader adds the metadata it expects
    nb = parameterize_notebook(nb, {**SMALL_PARAMS, "output_dir": str(output_dir)})
    for cell in nb.cells:  # a clean notebook: no stale outputs on the page
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    path = folder / "03_steer_small.ipynb"
    nbformat.write(nb, path)
    return path


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    """JupyterLab on 127.0.0.1 with a random token, serving a tmp folder; always stopped."""
    root = tmp_path / "notebooks"
    root.mkdir()
    output_dir = tmp_path / "run-output"
    nb = _small_notebook(root, output_dir)
    port, token = _free_port(), secrets.token_hex(16)
    state = tmp_path / "jupyter-state"  # no user settings, workspaces or runtime files leak in or out
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(state / "config"),
        "JUPYTER_RUNTIME_DIR": str(state / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(state / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(state / "workspaces"),
        "PYTHONUNBUFFERED": "1",
        # The kernel's torch on one thread: beside Chromium and the server on 2 cores,
        # two OpenMP threads were seen to make generation many times slower.
        "OMP_NUM_THREADS": "1",
    }
    # No "get notified about official Jupyter news?" toast over the widget.
    labconfig = state / "config" / "labconfig"
    labconfig.mkdir(parents=True)
    (labconfig / "page_config.json").write_text(
        '{"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": true}}')
    log = tmp_path / "jupyterlab.log"
    cmd = [*_jupyter(), "lab", "--no-browser", f"--ServerApp.token={token}", "--ServerApp.ip=127.0.0.1",
           f"--port={port}", "--ServerApp.port_retries=0", f"--ServerApp.root_dir={root}", "--allow-root",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    with log.open("wb") as log_file:
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + SERVER_START
        status = f"http://127.0.0.1:{port}/api/status"
        while True:
            if proc.poll() is not None:
                pytest.fail(f"JupyterLab exited with {proc.returncode}:\n{_log_tail(log)}")
            try:
                req = urllib.request.Request(status, headers={"Authorization": f"token {token}"})
                with urllib.request.urlopen(req, timeout=5) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"JupyterLab did not answer within {SERVER_START} s:\n{_log_tail(log)}")
            time.sleep(0.5)
        yield Lab(url=f"http://127.0.0.1:{port}/lab/tree/{nb.name}?token={token}", log=log,
                  output_dir=output_dir)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # the server shuts its kernels down
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
        try:  # anything left in the group this fixture started (a stuck kernel)
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)


WIDGET_READY = """() => {
  const status = document.querySelector('.steerlab-status');
  const steered = document.querySelector('.steerlab-steered .completion');
  return !!status && !!steered && status.innerText.trim() === 'ready' && steered.textContent.trim().length > 0;
}"""

STEERED_CHANGED = """(before) => {
  const status = document.querySelector('.steerlab-status');
  const steered = document.querySelector('.steerlab-steered .completion');
  return !!status && !!steered && status.innerText.trim() === 'ready' && steered.textContent !== before;
}"""

KERNEL_IDLE = """() => {
  const ind = document.querySelector('.jp-Notebook-ExecutionIndicator');
  return !!ind && ind.getAttribute('data-status') === 'idle';
}"""


def _page_report(page) -> str:  # type: ignore[no-untyped-def]
    """What the notebook's outputs and status say, for a failure message."""
    try:
        outputs = page.locator(".jp-OutputArea-output").all_inner_texts()
        status = page.locator(".steerlab-status").all_inner_texts()
    except Exception as err:  # noqa: BLE001 - only for the message
        return f"(could not read the page: {err})"
    return f"widget status: {status}\noutputs (last 3000 chars):\n{chr(10).join(outputs)[-3000:]}"


@pytest.mark.timeout(240)
def test_slider_changes_steered_completion(lab: Lab, tmp_path: Path) -> None:
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium)")
    shots = tmp_path / "browser"
    shots.mkdir()
    shot = shots / "steer_widget.png"

    with sync_playwright() as p:
        try:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
                                        timeout=60_000)
        except PlaywrightError as err:
            pytest.fail(f"Chromium could not start: {err}")
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1100})
            page.set_default_timeout(30_000)
            page.goto(lab.url, wait_until="domcontentloaded", timeout=PAGE_LOAD * 1000)
            page.locator(".jp-Notebook").first.wait_for(state="visible", timeout=PAGE_LOAD * 1000)

            # The kernel starts by itself (the notebook names python3), but JupyterLab may
            # still ask in a "Select Kernel" dialog: accept its choice, Python 3 (ipykernel).
            # Go on once the kernel is idle and no dialog has shown for 2 s.
            deadline, quiet_since = time.monotonic() + PAGE_LOAD, None
            while True:
                select = page.locator(".jp-Dialog").filter(has_text="Select Kernel").locator(
                    ".jp-Dialog-button.jp-mod-accept")  # labelled "Select"
                if select.count():
                    select.first.click()
                    quiet_since = None
                elif page.evaluate(KERNEL_IDLE):
                    quiet_since = quiet_since or time.monotonic()
                    if time.monotonic() - quiet_since > 2:
                        break
                else:
                    quiet_since = None
                if time.monotonic() > deadline:
                    page.screenshot(path=str(shots / "timeout.png"))
                    pytest.fail(f"the notebook's kernel was not idle within {PAGE_LOAD} s")
                page.wait_for_timeout(250)

            page.locator(".lm-MenuBar-itemLabel", has_text=re.compile("^Run$")).click()
            page.locator(".lm-Menu-itemLabel", has_text=re.compile("^Run All Cells$")).click()

            try:
                page.wait_for_function(WIDGET_READY, timeout=NOTEBOOK_RUN * 1000, polling=500)
            except PlaywrightTimeout:
                page.screenshot(path=str(shots / "timeout.png"))
                pytest.fail(f"the widget did not show a ready completion within {NOTEBOOK_RUN} s\n"
                            f"{_page_report(page)}\nserver log:\n{_log_tail(lab.log)}")

            steered_el = page.locator(".steerlab-steered .completion")
            unsteered_el = page.locator(".steerlab-unsteered .completion")
            steered_before = steered_el.text_content() or ""
            unsteered_before = unsteered_el.text_content() or ""
            assert unsteered_before.strip(), "the unsteered completion is empty"
            assert "× +1.00" in page.locator(".steerlab-steered").inner_text()

            slider = page.locator(".widget-slider").filter(
                has=page.locator(".widget-label", has_text=re.compile("^coefficient$")))
            assert slider.count() == 1, "no single 'coefficient' slider on the page"
            handle = slider.locator(".noUi-handle")
            handle.scroll_into_view_if_needed()
            handle.focus()
            handle.press("End")  # to the slider's maximum, 4.0; commits on key press
            readout = slider.locator(".widget-readout")
            assert readout.inner_text().strip() == "4.00", readout.inner_text()

            try:
                page.wait_for_function(STEERED_CHANGED, arg=steered_before, timeout=SLIDER_UPDATE * 1000,
                                       polling=250)
            except PlaywrightTimeout:
                page.screenshot(path=str(shots / "timeout.png"))
                pytest.fail(f"the steered completion did not change within {SLIDER_UPDATE} s of moving "
                            f"the slider\n{_page_report(page)}")

            steered_after = steered_el.text_content() or ""
            unsteered_after = unsteered_el.text_content() or ""
            assert steered_after != steered_before
            assert unsteered_after == unsteered_before
            assert "× +4.00" in page.locator(".steerlab-steered").inner_text()
            assert page.locator(".steerlab-lens code").count() > 0

            page.locator(".steerlab-steered").scroll_into_view_if_needed()
            page.screenshot(path=str(shot))
        finally:
            browser.close()

    assert shot.stat().st_size > 0
    SCREENSHOT_COPY.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shot, SCREENSHOT_COPY)
    # The notebook's own run wrote its summary where the injected output_dir points.
    assert (lab.output_dir / "summary.json").exists()
