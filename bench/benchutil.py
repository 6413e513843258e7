"""Shared helpers of the benchmark: interleaved timing, rows, the table, machine load.

Every ratio compares two variants measured in the same process, in the same
rounds: each round runs every variant once, in an order that rotates from
round to round, so a burst of load from elsewhere on the machine lands on all
variants alike instead of on whichever happened to run then. The median of the
rounds is reported.
"""

from __future__ import annotations

import gc
import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def log(msg: str) -> None:
    """One line of the benchmark's progress, flushed at once."""
    print(msg, flush=True)


def cpu_flags() -> list[str]:
    from steerlab.load import cpu_model_and_flags

    flags = cpu_model_and_flags()[1]
    return sorted(f for f in ("avx512_bf16", "amx_bf16", "avx512_vnni", "avx512f") if f in flags)


def has_bf16_units() -> bool:
    """Whether this CPU computes in bfloat16 natively (AVX512-BF16 or AMX). Without the units torch emulates
    bfloat16: a 2048^2 matmul ran at 0.3 GFLOP/s on a 2-core AVX2 CPU (176 GFLOP/s in float32), so the
    benchmark's bfloat16 rows would take minutes each and measure only the emulation."""
    import torch

    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def loadavg() -> list[float]:
    """The 1, 5 and 15 minute load averages (other work on the machine skews timings)."""
    try:
        with open("/proc/loadavg") as f:
            return [float(x) for x in f.read().split()[:3]]
    except OSError:
        return []


@dataclass
class Timings:
    """Seconds of each repeat of one variant, the value each repeat returned, and the last one."""

    seconds: list[float] = field(default_factory=list)
    value: Any = None
    values: list[Any] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds) if self.seconds else float("nan")

    @property
    def min(self) -> float:
        return min(self.seconds) if self.seconds else float("nan")

    def spread(self) -> str:
        if not self.seconds:
            return ""
        return f"{min(self.seconds):.2f}-{max(self.seconds):.2f} s"


def interleaved(variants: dict[str, Callable[[], Any]], repeats: int, *, warmup: bool = True,
                warmups: dict[str, Callable[[], Any]] | None = None,
                log: Callable[[str], None] | None = None, keep_values: bool = False) -> dict[str, Timings]:
    """Time every variant ``repeats`` times, one of each per round, rotating the order.

    ``warmup`` runs each variant once, untimed, first (lazy initialisation,
    allocator growth, nnsight's first compile of a trace body); ``warmups``
    gives a cheaper stand-in per variant for that untimed run. ``keep_values`` keeps every
    repeat's returned value in ``values`` (otherwise only the last, in ``value``).
    """
    names = list(variants)
    out = {name: Timings() for name in names}
    if warmup:
        for name in names:
            (warmups or {}).get(name, variants[name])()
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            gc.collect()
            started = time.perf_counter()
            value = variants[name]()
            elapsed = time.perf_counter() - started
            out[name].seconds.append(elapsed)
            out[name].value = value
            if keep_values:
                out[name].values.append(value)
            if log:
                log(f"    round {r + 1}/{repeats} {name}: {elapsed:.2f} s")
    return out


@dataclass
class Row:
    """One line of the table: a measurement, its baseline and the ratio between them.

    ``ratio`` is always oriented so that larger means "steerlab (or the row's
    subject) is better", unless ``ratio_kind`` says otherwise; ``ratio_label``
    spells it out (``x faster``, ``x time``, ``x memory``).
    """

    section: str
    name: str
    value: float | None
    unit: str
    baseline: str = ""
    baseline_value: float | None = None
    ratio: float | None = None
    ratio_label: str = ""
    target: str = ""
    status: str = ""  # PASS, MISS, SKIP, or "" for an informational row
    note: str = ""
    repeats: list[float] = field(default_factory=list)
    ratio_min: float | None = None  # the same ratio from the fastest repeat of each (a noise check)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def judge(ratio: float | None, *, at_least: float | None = None, at_most: float | None = None) -> str:
    if ratio is None or math.isnan(ratio):
        return "SKIP"
    if at_least is not None and ratio < at_least:
        return "MISS"
    if at_most is not None and ratio > at_most:
        return "MISS"
    return "PASS"


def _fmt(x: float | None, unit: str = "") -> str:
    if x is None:
        return "-"
    if unit in ("tok/s",):
        return f"{x:,.0f} {unit}"
    if unit == "MiB":
        return f"{x:,.0f} {unit}"
    return f"{x:.2f} {unit}".strip()


def render_table(rows: list[Row]) -> str:
    """A plain-text table, grouped by section."""
    header = ("what", "measured", "baseline", "ratio", "ratio(min)", "target", "")
    lines: list[list[str]] = []
    section = None
    for row in rows:
        if row.section != section:
            section = row.section
            lines.append([f"[{section}]", "", "", "", "", "", ""])
        base = "-" if not row.baseline else f"{row.baseline}: {_fmt(row.baseline_value, row.unit)}"
        ratio = "-" if row.ratio is None else f"{row.ratio:.2f}{row.ratio_label}"
        rmin = "" if row.ratio_min is None else f"{row.ratio_min:.2f}"
        lines.append([f"  {row.name}", _fmt(row.value, row.unit), base, ratio, rmin, row.target, row.status])
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()]
    out.append("  ".join("-" * w for w in widths))
    for line in lines:
        out.append("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip())
    notes = [f"  - {r.name}: {r.note}" for r in rows if r.note]
    if notes:
        out.append("")
        out.append("notes:")
        out.extend(notes)
    return "\n".join(out)


def env_summary() -> dict[str, Any]:
    import platform

    import torch

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "loadavg_start": loadavg(),
    }
    for pkg in ("transformers", "nnsight"):
        try:
            info[pkg] = __import__(pkg).__version__
        except Exception as err:  # noqa: BLE001 - informational only
            info[pkg] = f"unavailable: {err}"
    return info
