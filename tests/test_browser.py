"""The live steering widget in a real browser: JupyterLab (started from this venv on
loopback) runs a two-cell notebook that shows :class:`steerlab.lab.widget.SteeringWidget`
on the real model, and headless Debian Chromium driven by Playwright uses it as a person
would: moves the coefficient slider (the first tokens must show before the generation
ends, the live numbers must update), types a word into the target box (one generation
for the word, not one per keystroke), types a bad genre (a message lists the known sets),
clicks the save button (the vector file loads) and narrows the page to 1024 px (no
element is clipped; a screenshot is kept under ``test-output/browser/``).

The second test reads a real run's report as a user would, at 1024 and 1400 px: the four
notebooks run with small parameters (or ``$STEERLAB_REPORT_RUN``, a finished run folder such
as ``runs/latest``, is copied and reused), then ``index.html`` must show a contents list, every
figure with nothing clipped, steered examples as text and no absolute path, and the folder
must hold one plotly.js and at most 25 MB; screenshots of the page and of notebook 03's export
at both widths go to ``test-output/browser/``.

The widget's notebook is the test's own, not notebooks/03_steer.ipynb (which another test runs
headless): this test is about the widget, and stays independent of that notebook's
experiments and parameters.

Needs ``/usr/bin/chromium`` (``apt-get install chromium``; ``make test`` installs it).
Playwright's own browser download is never used. If Chromium cannot start, the test
fails with the reason.
"""

from __future__ import annotations

import json
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
from typing import Any

import nbformat
import pytest

pytestmark = [pytest.mark.browser, pytest.mark.real]

REPO = Path(__file__).resolve().parents[1]
SHOTS = REPO / "test-output" / "browser"
CHROMIUM = "/usr/bin/chromium"
# From the project's field notes: without the background-networking flags Chromium
# keeps trying to reach the network. Playwright adds its own empty --user-data-dir.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
LAYER = 10
NEW_TOKENS = 40  # long enough that streaming is visible: the first tokens come well before the last

# Time limits (seconds).
SERVER_START = 60
PAGE_LOAD = 60
NOTEBOOK_RUN = 240  # the first run computes the set statistics (once per set)
UPDATE = 90


@dataclass
class Lab:
    url: str
    log: Path
    save_dir: Path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _jupyter() -> list[str]:
    exe = Path(sys.executable).with_name("jupyter")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "jupyter"]


def _log_tail(log: Path, n: int = 3000) -> str:
    return log.read_text(errors="replace")[-n:] if log.exists() else "(no log)"


def _notebook(folder: Path, save_dir: Path) -> Path:
    """Two cells: load the real model; show the widget (small statistics, 40 new tokens)."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_code_cell("import steerlab as sl\nfrom steerlab.lab.widget import SteeringWidget\n"
                                  "model = sl.load_model(progress=False)"),
        nbformat.v4.new_code_cell(
            f"widget = SteeringWidget(model, layer={LAYER}, coefficient=1.0, sample_size=4, max_length=32,\n"
            f"                        max_new_tokens={NEW_TOKENS}, seed=0, save_dir={str(save_dir)!r})\n"
            "display(widget.ui)"),
    ]
    path = folder / "steer_widget.ipynb"
    nbformat.write(nb, path)
    return path


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    """JupyterLab on 127.0.0.1 with a random token, serving a tmp folder; always stopped."""
    root = tmp_path / "notebooks"
    root.mkdir()
    save_dir = tmp_path / "vectors"
    nb = _notebook(root, save_dir)
    port, token = _free_port(), secrets.token_hex(16)
    state = tmp_path / "jupyter-state"  # no user settings, workspaces or runtime files leak in or out
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(state / "config"),
        "JUPYTER_RUNTIME_DIR": str(state / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(state / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(state / "workspaces"),
        "PYTHONUNBUFFERED": "1",
        # The kernel's torch on one thread (the widget's worker follows OMP_NUM_THREADS):
        # beside Chromium and the server on 2 cores, two OpenMP threads were seen to make
        # generation many times slower.
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
        yield Lab(url=f"http://127.0.0.1:{port}/lab/tree/{nb.name}?token={token}", log=log, save_dir=save_dir)
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


READY = """() => {
  const status = document.querySelector('.steerlab-status');
  const steered = document.querySelector('.steerlab-steered .completion');
  return !!status && !!steered && status.innerText.trim() === 'ready' && steered.textContent.trim().length > 0;
}"""

KERNEL_IDLE = """() => {
  const ind = document.querySelector('.jp-Notebook-ExecutionIndicator');
  return !!ind && ind.getAttribute('data-status') === 'idle';
}"""

# Records, with performance.now() times, every change the page shows: the steered pane's
# state and text, the live numbers, the status, the generation counter.
RECORDER = """() => {
  const root = document.querySelector('.steerlab-widget');
  window.__steerlab_log = [];
  const snap = () => {
    const pane = document.querySelector('.steerlab-steered .steerlab-pane');
    const completion = document.querySelector('.steerlab-steered .completion');
    const metrics = document.querySelector('.steerlab-metrics [data-generation]');
    window.__steerlab_log.push({
      t: performance.now(),
      state: pane ? pane.getAttribute('data-state') : null,
      text: completion ? completion.textContent : '',
      metrics: metrics ? metrics.innerText : '',
      generation: metrics ? Number(metrics.getAttribute('data-generation')) : -1,
      status: (document.querySelector('.steerlab-status') || {innerText: ''}).innerText.trim(),
    });
  };
  new MutationObserver(snap).observe(root, {subtree: true, childList: true, characterData: true});
  snap();
}"""

# A generation later than the given one has finished (the counter is on the live numbers).
FINISHED = """(g) => window.__steerlab_log.some(e => e.generation > g && e.state === 'done' && e.status === 'ready')"""

GENERATION = """() => {
  const m = document.querySelector('.steerlab-metrics [data-generation]');
  return m ? Number(m.getAttribute('data-generation')) : -1;
}"""

# Every visible element of the widget, with its box, the widget's box and the page width.
BOXES = """() => {
  const root = document.querySelector('.steerlab-widget');
  const area = root.closest('.jp-OutputArea-output') || root;
  const r = root.getBoundingClientRect(), a = area.getBoundingClientRect();
  const out = [];
  for (const el of root.querySelectorAll('.jupyter-widgets, .steerlab-pane, table, pre, code, input, textarea, select, button')) {
    const b = el.getBoundingClientRect();
    if (b.width === 0 || b.height === 0) continue;
    out.push({what: (el.className && el.className.toString ? el.className.toString() : el.tagName).slice(0, 80)
                    + ' ' + (el.innerText || el.value || '').slice(0, 30),
              left: b.left, right: b.right});
  }
  return {viewport: window.innerWidth, root: {left: r.left, right: r.right},
          area: {left: a.left, right: a.right}, overflow: root.scrollWidth - root.clientWidth, boxes: out};
}"""


def _page_report(page: Any) -> str:
    """What the notebook's outputs and the widget say, for a failure message."""
    try:
        outputs = page.locator(".jp-OutputArea-output").all_inner_texts()
        status = page.locator(".steerlab-status").all_inner_texts()
        message = page.locator(".steerlab-message").all_inner_texts()
    except Exception as err:  # noqa: BLE001 - only for the message
        return f"(could not read the page: {err})"
    return f"widget status: {status}\nmessage: {message}\noutputs (last 3000 chars):\n{chr(10).join(outputs)[-3000:]}"


def _wait(page: Any, script: str, what: str, timeout: float, arg: Any = None) -> None:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(script, arg=arg, timeout=timeout * 1000, polling=100)
    except PlaywrightTimeout:
        page.screenshot(path=str(SHOTS / "timeout.png"))
        pytest.fail(f"{what} within {timeout} s\n{_page_report(page)}")


def _type_into(page: Any, description: str, text: str) -> Any:
    """Type ``text`` key by key into the text box labelled ``description`` (not yet committed)."""
    box = page.locator(".widget-text, .widget-combobox").filter(
        has=page.locator(".widget-label", has_text=re.compile(f"^{description}$"))).locator("input")
    assert box.count() == 1, f"no single {description!r} box on the page"
    box.click()
    box.press("Control+a")
    box.press_sequentially(text, delay=80)
    return box


@pytest.mark.timeout(600)
def test_widget_in_a_browser(lab: Lab) -> None:
    import steerlab
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium)")
    SHOTS.mkdir(parents=True, exist_ok=True)
    measured: dict[str, Any] = {}

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
            # still ask in a "Select Kernel" dialog: accept its choice. Go on once the
            # kernel is idle and no dialog has shown for 2 s.
            deadline, quiet_since = time.monotonic() + PAGE_LOAD, None
            while True:
                select = page.locator(".jp-Dialog").filter(has_text="Select Kernel").locator(
                    ".jp-Dialog-button.jp-mod-accept")
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
                    page.screenshot(path=str(SHOTS / "timeout.png"))
                    pytest.fail(f"the notebook's kernel was not idle within {PAGE_LOAD} s")
                page.wait_for_timeout(250)

            page.locator(".lm-MenuBar-itemLabel", has_text=re.compile("^Run$")).click()
            page.locator(".lm-Menu-itemLabel", has_text=re.compile("^Run All Cells$")).click()
            _wait(page, READY, "the widget did not show a ready completion", NOTEBOOK_RUN)
            page.evaluate(RECORDER)

            # 1. The slider: first tokens before the end, live numbers, the unsteered side kept.
            unsteered_before = page.locator(".steerlab-unsteered .completion").first.text_content()
            slider = page.locator(".widget-slider").filter(
                has=page.locator(".widget-label", has_text=re.compile("^coefficient$")))
            assert slider.count() == 1, "no single 'coefficient' slider on the page"
            handle = slider.locator(".noUi-handle")
            handle.scroll_into_view_if_needed()
            handle.focus()
            generation = page.evaluate(GENERATION)
            t0 = page.evaluate("() => performance.now()")
            handle.press("End")  # to the slider's maximum (a few times the measured useful range); commits on key press
            _wait(page, FINISHED, "the steered completion did not finish after moving the slider", UPDATE,
                  arg=generation)
            log = [e for e in page.evaluate("() => window.__steerlab_log") if e["generation"] > generation]
            live = [e for e in log if e["state"] == "live" and e["text"].strip()]
            done = next(e for e in log if e["state"] == "done" and e["status"] == "ready")
            assert live, f"no tokens were shown before the generation ended: {log[:5]}"
            assert live[0]["t"] < done["t"] and len(live[0]["text"]) < len(done["text"])
            measured["slider: first tokens s"] = round((live[0]["t"] - t0) / 1000, 2)
            measured["slider: completion s"] = round((done["t"] - t0) / 1000, 2)
            numbers = {e["metrics"] for e in live}
            assert len(numbers) >= 2, f"the live numbers did not change while generating: {numbers}"
            assert re.search(r"perplexity under the unsteered model\s+[\d.]+\s+[\d.]+", done["metrics"]), \
                done["metrics"]
            box = page.locator(".widget-hbox").filter(has=slider).locator(".widget-text input").first
            top = float(box.input_value())  # the box follows the slider: its end
            assert top >= 0.25, top
            assert f"{top:.2f} × centred norm" in done["metrics"]
            assert page.locator(".steerlab-unsteered .completion").first.text_content() == unsteered_before
            assert f"× +{top:.2f}" in page.locator(".steerlab-steered").inner_text()

            # 2. Typing a word: nothing until Enter, then one generation.
            generation = page.evaluate(GENERATION)
            box = _type_into(page, "target", "shakespeare")
            page.wait_for_timeout(1500)
            assert page.evaluate(GENERATION) == generation, "a keystroke started a generation"
            t0 = page.evaluate("() => performance.now()")
            box.press("Enter")
            _wait(page, FINISHED, "the typed target did not generate", UPDATE, arg=generation)
            page.wait_for_timeout(1000)
            assert page.evaluate(GENERATION) == generation + 1, "one typed word should be one generation"
            log = [e for e in page.evaluate("() => window.__steerlab_log") if e["generation"] > generation]
            first = next(e for e in log if e["state"] == "live" and e["text"].strip())
            settled = next(e for e in log if e["state"] == "done" and e["status"] == "ready")
            measured["typed word: first tokens s"] = round((first["t"] - t0) / 1000, 2)
            measured["typed word: settled s"] = round((settled["t"] - t0) / 1000, 2)
            assert "'shakespeare' vocabulary rate" in page.locator(".steerlab-metrics").inner_text()

            # 3. A bad genre: a message listing the known sets, the old text greyed.
            box = _type_into(page, "target", "fantsy")
            box.press("Enter")
            _wait(page, "() => document.querySelector('.steerlab-message').innerText.includes(\"unknown set 'fantsy'\")",
                  "no message for the bad set name", UPDATE)
            message = page.locator(".steerlab-message").inner_text()
            assert all(name in message for name in steerlab.named_sets()), message
            assert page.locator(".steerlab-steered .steerlab-pane").get_attribute("data-state") == "error"
            box = _type_into(page, "target", "fantasy")
            box.press("Enter")
            _wait(page, READY, "the widget did not recover from the bad set name", UPDATE)

            # 4. Save: a vector file that loads.
            page.locator(".steerlab-save-button").click()
            _wait(page, "() => document.querySelector('.steerlab-saved').innerText.includes('.safetensors')",
                  "the save button wrote nothing", UPDATE)
            saved = page.locator(".steerlab-saved").inner_text()
            stem = re.search(r"saved (\S+)\.safetensors", saved)
            assert stem, saved
            vector = steerlab.load_vector(stem.group(1))
            assert vector.layers == [LAYER] and vector.recipe == "counterbalanced"
            assert "sl.build('counterbalanced'" in saved and "sl.generate(" in saved

            # 5. 1024 px wide: every element inside the page, the widget and its output area.
            page.set_viewport_size({"width": 1024, "height": 1000})
            page.wait_for_timeout(1500)
            page.locator(".steerlab-widget").scroll_into_view_if_needed()
            boxes = page.evaluate(BOXES)
            page.screenshot(path=str(SHOTS / "steer_widget_1024.png"))
            page.locator(".steerlab-saved").scroll_into_view_if_needed()
            page.screenshot(path=str(SHOTS / "steer_widget_1024_bottom.png"))
            (SHOTS / "steer_widget_1024_boxes.json").write_text(json.dumps(boxes, indent=1))
            assert boxes["overflow"] <= 1, f"the widget overflows its box by {boxes['overflow']} px"
            right = min(boxes["viewport"], boxes["area"]["right"], boxes["root"]["right"]) + 1
            left = max(0, boxes["area"]["left"], boxes["root"]["left"]) - 1
            clipped = [b for b in boxes["boxes"] if b["left"] < left or b["right"] > right]
            assert not clipped, f"clipped at 1024 px (inside {left:.0f}..{right:.0f}): {clipped[:8]}"
        finally:
            browser.close()

    (SHOTS / "latencies.json").write_text(json.dumps(measured, indent=1))
    print("measured in the browser:", measured)


# The notebook tests' small parameters, one set for the four notebooks (each ignores what it does not declare).
SMALL_RUN = {"sample_size": 4, "max_length": 32, "heldout_per_genre": 2, "top_k": 5,
             "examples": ["additional", "love_hate"], "sweep": [0.0, 1.0], "coefficient": 1.0, "samples": 2,
             "max_new_tokens": 12, "show_widget": False, "preset": "quick"}


@pytest.fixture(scope="module")
def report_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real run folder: a copy of ``$STEERLAB_REPORT_RUN`` if set, else the notebooks run small."""
    root = tmp_path_factory.mktemp("runs")
    given = os.environ.get("STEERLAB_REPORT_RUN")
    if given:
        source = Path(given).resolve()
        if not (source / "summary.json").exists():
            pytest.fail(f"STEERLAB_REPORT_RUN={given} is not a run folder (no summary.json)")
        return Path(shutil.copytree(source, root / source.name))
    from steerlab.lab.runner import run_notebooks

    run_dir, results = run_notebooks(runs_root=root, parameters=SMALL_RUN, progress=False)
    failed = {r.notebook: r.error[-2000:] for r in results if not r.ok}
    assert not failed, failed
    return run_dir


EXAMPLES_SHOWN = """() => [...document.querySelectorAll('.example')].map(e => ({
  name: e.getAttribute('data-example'),
  sides: [...e.querySelectorAll('.pair > div')].map(d => [...d.querySelectorAll('.completion')].map(c => c.innerText)),
}))"""


@pytest.mark.timeout(1800)
def test_report_of_a_real_run(report_run: Path) -> None:
    from test_report import check_report, render_offline

    SHOTS.mkdir(parents=True, exist_ok=True)
    rendered = check_report(report_run, widths=(1024, 1400), shots=SHOTS,
                            notebooks=len(list((Path(__file__).resolve().parents[1] / "notebooks").glob("0*.ipynb"))))
    source = (report_run / "index.html").read_text(encoding="utf-8")
    steer = json.loads((report_run / "summary.json").read_text())["steer"]
    for width, shown in rendered.items():
        assert "Contents" in shown.text and "Steered examples" in shown.text, width
        for name in steer["examples"]:
            assert f'data-example="{name}"' in source, name
        assert steer["examples"] and all(ex["prompt"] in shown.text for ex in steer["examples"].values())

    examples = re.findall(r'<div class="example" data-example="([^"]+)">(.*?)</div></div></div>', source, re.DOTALL)
    assert examples and all(body.count('class="completion"') >= 2 for _, body in examples), examples[:1]
    # Notebook 03's export, as a user opens it from the report: figures drawn from the shared plotly.js.
    export = report_run / "03_steer.html"
    for width in (1024, 1400):
        shown = render_offline(export, ".plotly-graph-div", width=width, screenshot=SHOTS / f"export_03_{width}.png")
        assert shown.figures >= 2 and shown.drawn == shown.figures and shown.requested == []
        assert shown.layout["clipped"] == [], shown.layout["clipped"]
