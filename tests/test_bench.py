"""The benchmark's budget rows for notebook 04 (bench/run.py, section 6), read from recorded runs."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _bench_run() -> Any:  # bench/ is scripts, not a package: load run.py as the benchmark does
    spec = importlib.util.spec_from_file_location("bench_run", ROOT / "bench" / "run.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_each_model_gets_a_budget_row_per_preset_and_an_unrecorded_preset_is_a_skip(tmp_path: Path) -> None:
    bench = _bench_run()
    cpu = "AMD EPYC, 2 cores, avx512f avx512_bf16 (no amx_bf16)"
    for model, preset, seconds in (("m1", "default", 300.0), ("m1", "full", 2400.0), ("m2", "default", 700.0)):
        (tmp_path / f"compare-{model}-{preset}.json").write_text(json.dumps(
            {"model": model, "preset": preset, "seconds": seconds, "date": "2026-12-04", "cpu": cpu}))
    rows = {r.name: r for r in bench.compare_budget_rows(tmp_path)}
    assert sorted(rows) == ["04 default preset, m1", "04 default preset, m2", "04 full preset, m1",
                            "04 full preset, m2"]
    assert rows["04 default preset, m1"].status == "PASS" and rows["04 default preset, m1"].baseline_value == 360.0
    assert rows["04 full preset, m1"].status == "MISS" and abs(rows["04 full preset, m1"].ratio - 2400 / 1800) < 1e-9
    assert rows["04 default preset, m2"].status == "MISS" and cpu in rows["04 default preset, m2"].note
    assert rows["04 full preset, m2"].status == "SKIP" and rows["04 full preset, m2"].value is None
