"""6. Orchestration overhead on an unchanged workspace: what DVC and Prefect add.

A scratch git + DVC workspace (this repository's dvc.yaml and pipeline/, the demo support
tickets, all-MiniLM-L6-v2, linear probe) is run once. Then, side by side:
- the six stage functions called directly, in-process (everything recomputed: what a run
  costs without orchestration);
- `dvc repro` with nothing changed (median of 3);
- training_flow (a Prefect task per stage, each `dvc repro --single-item`, then the gate and a
  DVC push) with nothing changed (median of 3, after one run that starts Prefect's server).
Reported: the seconds each adds on an unchanged workspace.

    .venv/bin/python -m bench.orchestration
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from bench.common import MINILM, REPO, record, timed
from flows.steps import venv_env
from pipeline.data.demo import make_text_demo


def _workspace() -> Path:
    ws = Path(tempfile.mkdtemp(prefix="graft-bench-orch-"))
    shutil.copy(REPO / "dvc.yaml", ws / "dvc.yaml")
    shutil.copytree(REPO / "pipeline", ws / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    make_text_demo(ws / "data" / "raw" / "tickets.csv")
    params = {"data": {"path": "data/raw/tickets.csv"}, "validate": {"labels": ["billing", "delivery", "login"]},
              "select": {"candidates": [{"name": MINILM[0], "weights": MINILM[1]}]},
              "train": {"max_length": 64}, "export": {"quantize": False}}
    from pipeline.core.config import parse_params

    # every section spelled out: dvc.yaml templates from them and tracks them per stage
    (ws / "params.yaml").write_text(yaml.safe_dump(parse_params(params).model_dump(by_alias=True, mode="json")))
    env = venv_env()
    (ws / ".gitignore").write_text("/outputs/\n/direct/\n/registry/\n/cache/\n")
    git = ["git", "-c", "user.email=bench@graft.invalid", "-c", "user.name=bench"]
    for cmd in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"],
                [sys.executable, "-m", "dvc", "config", "core.autostage", "true"],
                [*git, "add", "-A"], [*git, "commit", "-qm", "bench workspace"]):  # dvclive needs a commit
        subprocess.run(cmd, cwd=ws, check=True, env=env, capture_output=True)
    return ws


def run(repeats: int = 3) -> list[dict]:
    from flows.steps import run_stage
    from flows.training import training_flow
    from pipeline.core.artifacts import Workspace
    from pipeline.core.config import load_params
    from pipeline.stages import NAMES

    cwd = Path.cwd()
    ws = _workspace()
    os.chdir(ws)
    try:
        dvc = lambda: subprocess.run([sys.executable, "-m", "dvc", "repro", "-q"], check=True, env=venv_env())  # noqa: E731
        first = time.perf_counter()
        dvc()
        first = time.perf_counter() - first
        p = load_params("params.yaml")
        direct_p = p.model_copy(update={"paths": p.paths.model_copy(update={
            k: f"direct/{k}" for k in ("prepare", "validate_", "select", "train", "export", "evaluate", "gate")})})
        direct_ws = Workspace.from_params(direct_p)
        direct, _, _ = timed(lambda: [run_stage(s, direct_p, direct_ws) for s in NAMES], repeats=1)
        noop, noop_runs, _ = timed(dvc, repeats=repeats)
        start = time.perf_counter()
        training_flow(params_file="params.yaml", reason="bench")  # starts Prefect's temporary server
        flow_first = time.perf_counter() - start
        flow, flow_runs, summary = timed(lambda: training_flow(params_file="params.yaml", reason="bench"), repeats=repeats)
    finally:
        os.chdir(cwd)
    details = {"first_dvc_repro_s": first, "direct_s": direct, "noop_dvc_runs_s": noop_runs,
               "flow_first_run_s": flow_first, "flow_runs_s": flow_runs, "flow_status": summary["status"],
               "workspace": "demo support tickets (240 rows), all-MiniLM-L6-v2, linear probe"}
    return [
        record("orchestration_dvc", "6. Orchestration: `dvc repro`, nothing changed",
               baseline="the seven stage functions called directly (everything recomputed)",
               ours="dvc repro (every stage skipped)", goal="report the seconds it adds",
               baseline_value=direct, ours_value=noop, unit="s", ratio=direct / noop,
               ratio_label="x faster than recomputing", goal_met=None, details=details),
        record("orchestration_prefect", "6. Orchestration: Prefect training flow, nothing changed",
               baseline="no-op dvc repro", ours="training_flow (7 stage tasks, DVC push)",
               goal="report the seconds it adds", baseline_value=noop, ours_value=flow, unit="s",
               ratio=flow - noop, ratio_label="s added by the flow", goal_met=None, details=details),
    ]


if __name__ == "__main__":
    run()
