"""The README's Python blocks run as written: pasted into the Python REPL, in order, on the embedded
model, in a fresh process and an empty folder. A block whose first line is
``# not run in the tests: <reason>`` is skipped (it needs something this machine lacks)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
SKIP = "# not run in the tests:"


def python_blocks(text: str) -> list[str]:
    """Every fenced ```python block of ``text``, in order."""
    return [m.group(1) for m in re.finditer(r"^```python\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)]


def runnable(blocks: list[str]) -> list[str]:
    out = []
    for block in blocks:
        first = block.lstrip().splitlines()[0] if block.strip() else ""
        if first.startswith(SKIP):
            assert first[len(SKIP):].strip(), f"a skipped README block must say why: {first!r}"
            continue
        out.append(block)
    return out


# Feeds the blocks to code.InteractiveConsole line by line, as a paste into the REPL does: a
# compound statement that needs a blank line before the next statement is a SyntaxError here too.
REPL = textwrap.dedent('''
    import code, sys, traceback
    blocks = __import__("json").loads(sys.stdin.read())
    console = code.InteractiveConsole()
    failed = []
    def showsyntaxerror(filename=None, **kw):
        failed.append("SyntaxError")
        code.InteractiveConsole.showsyntaxerror(console, filename)
    def showtraceback():
        failed.append("error")
        code.InteractiveConsole.showtraceback(console)
    console.showsyntaxerror = showsyntaxerror
    console.showtraceback = showtraceback
    for block in blocks:
        more = False
        for line in block.splitlines():
            more = console.push(line)
            if failed:
                sys.exit(f"README block failed at line: {line!r}")
        if more:
            console.push("")
        if failed:
            sys.exit("README block failed at its end")
    print("README OK")
''')


def test_the_blocks_are_found_and_skips_give_a_reason() -> None:
    blocks = python_blocks(README.read_text())
    assert len(blocks) >= 3 and len(runnable(blocks)) >= 3
    assert python_blocks("x\n```python\na = 1\n```\n```bash\nls\n```\n") == ["a = 1\n"]
    with pytest.raises(AssertionError, match="must say why"):
        runnable(["# not run in the tests:\nx = 1\n"])


def _run(blocks: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    import json

    return subprocess.run([sys.executable, "-c", REPL], input=json.dumps(blocks), text=True, capture_output=True,
                          cwd=cwd, check=False, timeout=1200)


def test_the_repl_runner_catches_what_a_paste_would_break(tmp_path: Path) -> None:
    """The runner itself can fail: a `with` block followed by code without a blank line, as the old
    README had, and a name that is not defined."""
    bad_paste = "with open('f', 'w') as f:\n    f.write('x')\nprint('after')\n"
    assert _run([bad_paste], tmp_path).returncode != 0
    assert _run(["print(undefined_name)\n"], tmp_path).returncode != 0
    ok = _run(["with open('f', 'w') as f:\n    f.write('x')\n\nprint('after')\n"], tmp_path)
    assert ok.returncode == 0 and "after" in ok.stdout


@pytest.mark.real
def test_the_readme_runs_as_written(tmp_path: Path) -> None:
    blocks = runnable(python_blocks(README.read_text()))
    done = _run(blocks, tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "README OK" in done.stdout
    # What the one screen promises: a one-line repr, readable lens, the files save returned.
    assert re.search(r"^SteeringVector\(mean_centred, model=.*layers=\[15\]", done.stdout, flags=re.MULTILINE)
    assert (tmp_path / "fantasy_l15.safetensors").is_file() and (tmp_path / "fantasy_l15.gguf").is_file()
    assert "fantasy_l15.json" in done.stdout


def _findings(*args: str) -> subprocess.CompletedProcess[str]:
    script = README.parent / "scripts" / "findings.py"
    return subprocess.run([sys.executable, str(script), *args], text=True, capture_output=True, check=False,
                          timeout=120)


def test_the_readme_answer_and_the_findings_are_what_the_recorded_results_give() -> None:
    """Numbers in the README come from runs by a script: its answer block, and docs/FINDINGS.md, are exactly
    what ``scripts/findings.py render`` makes of ``docs/results/*.json`` (each collected from a run folder)."""
    done = _findings("render", "--check")
    assert done.returncode == 0, done.stderr
    findings = (README.parent / "docs" / "FINDINGS.md").read_text()
    for path in sorted((README.parent / "docs" / "results").glob("*.json")):
        assert f"`docs/results/{path.name}`" in findings  # every recorded result is shown, with its source
    text = README.read_text()
    block = text[text.index("<!-- answer:start -->"):text.index("<!-- answer:end -->")]
    assert "docs/FINDINGS.md" in block and block.count("**") >= 10
    assert len(text.splitlines()) <= 400, "the README is a guide: its tables belong in docs/FINDINGS.md"


def test_the_readme_images_are_made_by_a_script() -> None:
    """Every image the README shows is one scripts/screenshots.py makes (none is kept by hand)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("screenshots", README.parent / "scripts" / "screenshots.py")
    assert spec and spec.loader
    shots = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(shots)
    shown = set(re.findall(r"\]\(docs/images/([^)]+)\)", README.read_text()))
    assert shown and shown <= set(shots.IMAGES_MADE), shown - set(shots.IMAGES_MADE)
    for name in shown:
        assert (README.parent / "docs" / "images" / name).is_file(), name


def test_a_damaged_or_foreign_results_file_is_refused_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("findings", README.parent / "scripts" / "findings.py")
    assert spec and spec.loader
    findings = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(findings)
    for name, text, why in (("cut.json", '{"model": "m", "pre', "cannot be read"),
                            ("foreign.json", '{"hello": "world"}', "not a steerlab results file"),
                            ("list.json", "[1, 2]", "a JSON list"),
                            ("binary.json", "\udcff", "cannot be read")):
        folder = tmp_path / name.removesuffix(".json")
        folder.mkdir()
        (folder / name).write_bytes(text.encode("utf-8", "surrogateescape"))
        with pytest.raises(SystemExit, match=why) as err:
            findings.load_results(folder)
        assert name in str(err.value)


def test_the_findings_check_fails_on_a_retyped_number(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("findings", README.parent / "scripts" / "findings.py")
    assert spec and spec.loader
    findings = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(findings)
    readme = tmp_path / "README.md"
    rendered = findings.render_answer()
    monkeypatch.setattr(findings, "FINDINGS", tmp_path / "FINDINGS.md")
    (tmp_path / "FINDINGS.md").write_text(findings.render_findings(), encoding="utf-8")
    readme.write_text(f"# x\n\n{rendered}\n", encoding="utf-8")
    monkeypatch.setattr(findings, "README", readme)
    monkeypatch.setattr(sys, "argv", ["findings.py", "render", "--check"])
    assert findings.main() == 0
    retyped = rendered.replace("<!-- answer:end -->", "retyped 0.5\n<!-- answer:end -->")
    readme.write_text(f"# x\n\n{retyped}\n", encoding="utf-8")
    assert findings.main() == 1


def test_the_power_projection_gives_back_the_runs_own_mdd() -> None:
    """``findings.py collect-power`` projects each contrast's MDD to every preset from the spread a run
    measured; for the preset the run itself used, the projection must be the MDD the run reported."""
    results = README.parent / "docs" / "results"
    powers = sorted(results.glob("power-*.json"))
    assert powers, "no recorded power projection"
    for path in powers:
        power = json.loads(path.read_text())
        run = json.loads((results / f"compare-{power['model']}-{power['from_preset']}.json").read_text())
        reported = {(m, r["name"], f"L{r['layer']} {r['position']}"): r for m, rows in run["contrasts"].items()
                    for r in rows if r["status"] == "run"}
        assert power["rows"]
        for row in power["rows"]:
            own = reported[(row["measure"], row["name"], row["cell"])]
            projected = row["presets"][power["from_preset"]]
            assert projected["n"] == own["n"] and projected["family"] == own["family_size"], row["name"]
            assert projected["mdd"] == pytest.approx(own["mdd_corrected"], rel=1e-6), row["name"]


def test_a_resumed_run_counts_the_cells_it_read_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A comparison resumed from saved cells (``run_compare(cells_dir=)``): ``findings.py collect`` records
    its own time plus what the read-back cells took when measured, and the heading says so; a run that
    read nothing back keeps its own time and no such words."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("findings", README.parent / "scripts" / "findings.py")
    assert spec and spec.loader
    findings = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(findings)
    monkeypatch.setattr(findings, "RESULTS", tmp_path / "results")
    rec = json.loads((README.parent / "docs" / "results" / "compare-smollm2-135m-instruct-default.json").read_text())
    compare = {**{k: rec[k] for k in ("model", "preset", "date", "cpu", "score_dtype", "prompting_style", "config",
                                      "layers", "conclusion")},
               "judge": {"heldout_accuracy": rec["judge_accuracy"], "accuracy_by_words": rec["judge_accuracy_by_words"]},
               "contrasts": {m: {"results": rows, "best_of": rec["best_of"][m]} for m, rows in rec["contrasts"].items()}}
    for cells, seconds, words in ((None, 100.0, None),
                                  ({"dir": "c", "key": "k", "n": 6, "reused": 4, "reused_seconds": 500.0}, 600.0,
                                   "10.0 min (4 of its 6 cells measured by earlier runs")):
        run = tmp_path / f"run-{seconds:.0f}"
        run.mkdir()
        (run / "summary.json").write_text(json.dumps({"compare": {**compare, "seconds": 100, "cells": cells}}))
        out = json.loads(findings.collect(run, None).read_text())
        assert out["seconds"] == seconds
        heading = findings.render_compare(out)[0]
        assert (words in heading) if words else ("earlier runs" not in heading and "1.7 min" in heading), heading
